"""The DAG executor: runs a plan's steps concurrently and persists every run.

Steps compute in daemon threads (up to ``max_concurrency``); the main thread
saves each artifact the moment it arrives (object, then entry, then the cache
record), so a crash loses at most the steps still running. Write order for the
run as a whole: owner record, ``runbook.yaml`` and the ``running`` result first,
artifacts as they come, the final result last, then the owner record is removed.

A step whose key (plugin, version, properties, input digests) matches a cached
record whose object verifies is not run: its output is reused by digest. A
failing step's dependents are skipped with the reason. SIGINT/SIGTERM end the
run as ``interrupted``; ``resume`` re-runs only what did not complete.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson

from cas.cache import StepCache, StepKey
from cas.digest import Digest
from cas.errors import CasError, ConflictError
from cas.locks import WRITER, locked
from cas.model import ArtifactOutcome, ExecutionInfo, ExecutionResult, Message, RunStatus
from cas.owner import OWNER, current_owner, is_alive, read_owner
from cas.planner import Plan
from cas.plugins import Connector, ItemProcessor
from cas.repository import RUNBOOK, Repository
from cas.stores import run_key

Event = Callable[[str, str, str], None]  # (event, artifact id, detail)
_TICK = 0.2


def new_run_id() -> str:
    """A time-sortable UUIDv7: 48 bits of milliseconds, then randomness."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass
class RunReport:
    """What one execution did."""

    result: ExecutionResult
    new_objects: int
    bytes_written: int
    reused: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # completed before a resume, not run again

    @property
    def run_id(self) -> str:
        return self.result.run_id


@dataclass
class _State:
    run_id: str
    started: datetime
    outcomes: dict[str, ArtifactOutcome] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    items: dict[str, tuple[int, int]] = field(default_factory=dict)  # reused, processed
    kept: set[str] = field(default_factory=set)
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    abandoned: list[threading.Thread] = field(default_factory=list)
    stop: str | None = None


class Executor:
    """Runs one plan against one repository."""

    def __init__(
        self, repo: Repository, plan: Plan, *, use_cache: bool = True, on_event: Event | None = None
    ) -> None:
        self.repo = repo
        self.plan = plan
        self.use_cache = use_cache
        self.cache = StepCache(repo)
        self.on_event = on_event or (lambda _event, _artifact, _detail: None)
        self._results: queue.Queue[tuple[str, dict[str, Any] | BaseException, float]] = (
            queue.Queue()
        )

    def run(self, run_id: str | None = None) -> RunReport:
        """Execute the plan as a new run (an existing run id is refused: resume it instead)."""
        state = _State(run_id or new_run_id(), datetime.now(UTC))
        if run_id is not None and run_id in self.repo.run_ids():
            raise ConflictError(f"run {run_id!r} already exists: resume it instead")
        with locked(self.repo.backend, WRITER):  # object stores: gc waits for this run (§10)
            self._claim(state.run_id)
            self._write_runbook(state.run_id)
            return self._execute(state)

    def resume(self, run_id: str) -> RunReport:
        """Re-run the steps of `run_id` that did not complete; keep the rest.

        A run whose every step already completed is left untouched.
        """
        previous = self.repo.executions.get(run_id)
        state = _State(run_id, previous.started_at)
        self._keep_saved(state, previous)
        if previous.status == "completed" and set(self.plan.order) <= state.kept:
            return RunReport(previous, 0, 0, kept=sorted(state.kept))
        with locked(self.repo.backend, WRITER):
            self._claim(run_id)
            self._write_runbook(run_id)  # the runbook this resume runs, should it differ
            return self._execute(state)

    def _keep_saved(self, state: _State, previous: ExecutionResult) -> None:
        """Keep every step whose artifact was saved and not marked failed or skipped since.

        A dead executor saved its entries but never its final result, so an entry
        with no outcome counts as completed; one that no longer reads back does not.
        """
        for artifact_id, entry in self.repo.artifacts.entries(state.run_id).items():
            outcome = previous.artifacts.get(artifact_id)
            if artifact_id not in self.plan.steps or (outcome and outcome.status != "completed"):
                continue
            try:
                message = self.repo.artifacts.message(entry)
            except CasError:
                continue  # damaged or missing: run the step again
            state.outcomes[artifact_id] = outcome or _outcome_from(entry.envelope)
            state.messages[artifact_id] = message
            state.digests[artifact_id] = entry.digest.hex
            state.kept.add(artifact_id)
            self.on_event("kept", artifact_id, "")

    def _claim(self, run_id: str) -> None:
        key = run_key(run_id, OWNER)
        owner = read_owner(self.repo.backend, key)
        if owner is not None and owner.get("pid") != os.getpid() and is_alive(owner):
            raise ConflictError(
                f"run {run_id!r} is being executed by pid {owner.get('pid')} on {owner.get('host')}"
            )
        self.repo.backend.write(key, orjson.dumps(current_owner()))

    def _write_runbook(self, run_id: str) -> None:
        text = self.plan.runbook.text.encode()
        self.repo.backend.write(run_key(run_id, RUNBOOK), text)

    def _execute(self, state: _State) -> RunReport:
        payloads = self.repo.payloads
        objects, written = payloads.written_objects, payloads.written_bytes
        self._save_result(state, "running")
        try:
            with _signals(state):
                self._loop(state)
        except BaseException as error:
            # Never leave a run `running` with its owner record behind.
            state.stop = state.stop or f"executor failed: {type(error).__name__}: {error}"
            self._abandon(state, state.stop)
            self._save_result(state, "failed")
            self.repo.backend.delete([run_key(state.run_id, OWNER)])
            raise
        result = self._save_result(state, _final_status(state, self.plan.order))
        self.repo.backend.delete([run_key(state.run_id, OWNER)])
        reused = [
            a
            for a, o in state.outcomes.items()
            if o.cached_from and a in self.plan.steps and a not in state.kept
        ]
        return RunReport(
            result,
            payloads.written_objects - objects,
            payloads.written_bytes - written,
            reused,
            sorted(state.kept),
        )

    def _loop(self, state: _State) -> None:
        config = self.plan.runbook.config
        deadline = None if config.timeout is None else time.monotonic() + config.timeout
        while state.stop is None:
            self._start_ready(state, config.max_concurrency)
            if not state.running:
                return
            self._collect(state)
            self._expire(state, config.step_timeout)
            if deadline is not None and time.monotonic() > deadline:
                state.stop = f"run timed out after {config.timeout} s"
        self._abandon(state, state.stop)

    def _start_ready(self, state: _State, limit: int) -> None:
        # Threads given up on (timeouts) still hold a core: they count toward the limit.
        state.abandoned = [thread for thread in state.abandoned if thread.is_alive()]
        for artifact_id in self.plan.order:
            if len(state.running) + len(state.abandoned) >= limit:
                return
            if artifact_id in state.outcomes or artifact_id in state.running:
                continue
            step = self.plan.steps[artifact_id]
            if all(state.outcomes.get(i, _PENDING).status == "completed" for i in step.inputs):
                self._start(state, artifact_id)

    def _start(self, state: _State, artifact_id: str) -> None:
        step = self.plan.steps[artifact_id]
        if step.spec.kind == "reuse":
            self._reuse(state, artifact_id)
            return
        key = self._key(state, artifact_id)
        if key is not None and self.use_cache and self._from_cache(state, artifact_id, key):
            return
        state.running[artifact_id] = time.monotonic()
        self.on_event("start", artifact_id, step.spec.type or "")
        thread = threading.Thread(
            target=self._compute, args=(state, artifact_id), daemon=True, name=f"cas-{artifact_id}"
        )
        state.threads[artifact_id] = thread
        thread.start()

    def _compute(self, state: _State, artifact_id: str) -> None:
        step = self.plan.steps[artifact_id]
        started = time.monotonic()
        try:
            plugin = step.plugin() if step.plugin is not None else None
            properties = dict(step.spec.properties)
            if isinstance(plugin, Connector):
                content: dict[str, Any] | BaseException = plugin.extract(properties)
            elif isinstance(plugin, ItemProcessor) and self.use_cache:
                content = self._by_items(state, artifact_id, plugin, properties)
            elif plugin is not None:
                inputs = [state.messages[i] for i in step.inputs]
                content = plugin.process(inputs, properties)
            else:
                raise TypeError(f"artifact {artifact_id!r} has no plugin")
        except BaseException as error:  # reported as the step's outcome, never lost
            content = error
        self._results.put((artifact_id, content, time.monotonic() - started))

    def _by_items(
        self, state: _State, artifact_id: str, plugin: ItemProcessor, properties: dict[str, Any]
    ) -> dict[str, Any]:
        """Process only the items whose input changed since the family's newest output."""
        inputs = [state.messages[i] for i in self.plan.steps[artifact_id].inputs]
        current = plugin.items(inputs)
        key = self._key(state, artifact_id)
        previous = None if key is None else self._previous_items(plugin, key)
        if previous is None:
            state.items[artifact_id] = (0, len(current))
            return plugin.process(inputs, properties)
        old_items, old_content = previous
        same = {item for item, digest in current.items() if old_items.get(item) == digest}
        results = plugin.split(old_content, same)
        results.update(plugin.process_items(inputs, set(current) - same, properties))
        state.items[artifact_id] = (len(same), len(current) - len(same))
        return plugin.combine(inputs, results, properties)

    def _previous_items(
        self, plugin: ItemProcessor, key: StepKey
    ) -> tuple[dict[str, str], dict[str, Any]] | None:
        latest = self.cache.latest(key)
        if latest is None:
            return None
        output, inputs = latest
        try:
            old_inputs = [self._stored_message(digest) for digest in inputs]
            content: dict[str, Any] = orjson.loads(self.repo.payloads.get(output))["content"]
        except CasError:
            return None  # gone or damaged: process everything
        return plugin.items(old_inputs), content

    def _stored_message(self, digest: Digest) -> Message:
        payload = orjson.loads(self.repo.payloads.get(digest))
        return Message.from_payload(payload, {"id": digest.hex})

    def _collect(self, state: _State) -> None:
        try:
            artifact_id, content, duration = self._results.get(timeout=_TICK)
        except queue.Empty:
            return
        if state.running.pop(artifact_id, None) is None:
            return  # a step given up on (timeout) finished late: its output is dropped
        if isinstance(content, BaseException):
            self._fail(state, artifact_id, content, duration)
            return
        self._save(state, artifact_id, content, duration)

    def _save(
        self, state: _State, artifact_id: str, content: dict[str, Any], duration: float
    ) -> None:
        step = self.plan.steps[artifact_id]
        assert step.plugin is not None
        items = state.items.get(artifact_id)
        context = {} if items is None else {"items": {"reused": items[0], "processed": items[1]}}
        try:  # the step's output is invalid (not JSON, against its schema): the step failed
            message = Message(
                id=artifact_id,
                content=content,
                schema=step.plugin.output_schema,
                source=f"{step.spec.kind}:{step.spec.type}",
                timestamp=datetime.now(UTC),
                context=context,
                execution=ExecutionInfo("completed", None, round(duration, 6)),
            )
            entry = self.repo.artifacts.save_entry(
                state.run_id, artifact_id, message, verify_existing=not self.use_cache
            )
        except Exception as error:
            self._fail(state, artifact_id, error, duration)
            return
        key = self._key(state, artifact_id)
        if key is not None:
            self.cache.store(key, entry.digest, state.run_id, artifact_id)
            if issubclass(step.plugin, ItemProcessor):
                self.cache.store_latest(key, entry.digest)
        self._complete(state, artifact_id, message, entry.digest.hex, duration, key=key)

    def _complete(
        self,
        state: _State,
        artifact_id: str,
        message: Message,
        digest: str,
        duration: float,
        *,
        key: StepKey | None = None,
        cached_from: str | None = None,
    ) -> None:
        state.messages[artifact_id] = message
        state.digests[artifact_id] = digest
        state.outcomes[artifact_id] = ArtifactOutcome(
            "completed",
            duration_seconds=round(duration, 6),
            cached_from=cached_from,
            step_key=None if key is None else key.digest.hex,
        )
        self.on_event("reused" if cached_from else "done", artifact_id, digest[:12])

    def _key(self, state: _State, artifact_id: str) -> StepKey | None:
        step = self.plan.steps[artifact_id]
        if step.plugin is None:
            return None
        if step.spec.kind == "source" and not getattr(step.plugin, "cacheable", False):
            return None
        inputs = tuple(state.digests[i] for i in step.inputs)
        properties = dict(step.spec.properties)
        return StepKey(step.spec.type or "", step.plugin.version, properties, inputs)

    def _from_cache(self, state: _State, artifact_id: str, key: StepKey) -> bool:
        record = self.cache.lookup(key)
        if record is None:
            return False
        try:
            payload = orjson.loads(self.repo.payloads.get(record.output))
        except CasError:
            return False  # went bad since the lookup: run the step
        envelope = {
            "id": artifact_id,
            "source": f"cache:{record.run_id}/{record.artifact_id}",
            "timestamp": datetime.now(UTC).isoformat(),
            "context": {},
            "execution": ExecutionInfo("completed", None, 0.0).to_dict(),
        }
        message = Message.from_payload(payload, envelope)
        entry = self.repo.artifacts.save_entry(state.run_id, artifact_id, message)
        self._complete(
            state, artifact_id, message, entry.digest.hex, 0.0, key=key, cached_from=record.run_id
        )
        return True

    def _reuse(self, state: _State, artifact_id: str) -> None:
        spec = self.plan.steps[artifact_id].spec
        try:
            source_run = self.repo.resolve_run(spec.reuse_run or "", exclude=state.run_id)
            entry = self.repo.artifacts.entry(source_run, spec.reuse_artifact or "")
            old = self.repo.artifacts.message(entry)
            message = Message(
                id=artifact_id,
                content=old.content,
                schema=old.schema,
                source=f"reuse:{source_run}/{entry.artifact_id}",
                timestamp=datetime.now(UTC),
                execution=ExecutionInfo("completed", None, 0.0),
            )
            saved = self.repo.artifacts.save_entry(state.run_id, artifact_id, message)
        except CasError as error:
            self._fail(state, artifact_id, error, 0.0)
            return
        self._complete(state, artifact_id, message, saved.digest.hex, 0.0, cached_from=source_run)

    def _fail(self, state: _State, artifact_id: str, error: BaseException, duration: float) -> None:
        state.outcomes[artifact_id] = ArtifactOutcome(
            "failed",
            error_type=type(error).__name__,
            error_message=str(error) or type(error).__name__,
            duration_seconds=round(duration, 6),
        )
        self.on_event("failed", artifact_id, f"{type(error).__name__}: {error}")
        for dependent in self.plan.order:
            if dependent in self.plan.dependents_closure(artifact_id):
                self._skip(state, dependent, f"input {artifact_id!r} failed")

    def _skip(self, state: _State, artifact_id: str, reason: str) -> None:
        if artifact_id not in state.outcomes:
            state.outcomes[artifact_id] = ArtifactOutcome("skipped", reason=reason)
            self.on_event("skipped", artifact_id, reason)

    def _expire(self, state: _State, step_timeout: float | None) -> None:
        if step_timeout is None:
            return
        now = time.monotonic()
        for artifact_id, started in list(state.running.items()):
            if now - started > step_timeout:
                del state.running[artifact_id]
                state.abandoned.append(state.threads[artifact_id])
                error = TimeoutError(f"step exceeded its timeout of {step_timeout} s")
                self._fail(state, artifact_id, error, now - started)

    def _abandon(self, state: _State, reason: str) -> None:
        for artifact_id in self.plan.order:
            self._skip(state, artifact_id, reason)
        state.running.clear()

    def _save_result(self, state: _State, status: RunStatus) -> ExecutionResult:
        now = datetime.now(UTC)
        final = status != "running"
        result = ExecutionResult(
            run_id=state.run_id,
            status=status,
            started_at=state.started,
            runbook=self.plan.runbook.name,
            ended_at=now if final else None,
            duration_seconds=round((now - state.started).total_seconds(), 6) if final else None,
            artifacts={a: state.outcomes[a] for a in self.plan.order if a in state.outcomes},
            error=state.stop,
        )
        self.repo.executions.save(state.run_id, result)
        return result


_PENDING = ArtifactOutcome("skipped", reason="pending")


def _outcome_from(envelope: dict[str, Any]) -> ArtifactOutcome:
    """The outcome of a saved artifact whose executor died before recording it."""
    execution = envelope.get("execution") or {}
    source = envelope.get("source") or ""
    kind, _, origin = source.partition(":")
    cached_from = origin.split("/", 1)[0] if kind in ("cache", "reuse") else None
    return ArtifactOutcome(
        "completed", duration_seconds=execution.get("duration_seconds"), cached_from=cached_from
    )


def _final_status(state: _State, order: list[str]) -> RunStatus:
    if state.stop is not None and state.stop.startswith("interrupted"):
        return "interrupted"
    statuses = {state.outcomes[a].status for a in order if a in state.outcomes}
    if statuses <= {"completed"}:
        return "completed"
    return "partial" if "completed" in statuses else "failed"


@contextmanager
def _signals(state: _State) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a clean stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        state.stop = f"interrupted by {signal.Signals(signum).name}"

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
