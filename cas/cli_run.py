"""What ``cas run`` does between parsing its options and printing: load, plan, execute.

`execute` loads and plans the runbook *before* touching the repository, so a
runbook error writes nothing; then it creates the repository if needed and runs
(or resumes) the plan with a live step display on stderr. `summary` turns the
executor's `RunReport` into the plain values both the text and the JSON output
show. The executor and planner are imported here, never by ``cas --help``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cas.cli_render import MARKS

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import RenderableType
    from rich.spinner import Spinner

    from cas.executor import RunReport
    from cas.model import ArtifactOutcome
    from cas.planner import Plan
    from cas.repository import Repository
    from cas.runbook import Runbook

EXIT_STATUS = {"completed": 0, "partial": 1, "failed": 1, "interrupted": 130}


@dataclass(frozen=True)
class Executed:
    """A finished execution: the repository, the plan it ran and the executor's report."""

    repo: Repository
    plan: Plan
    report: RunReport
    resumed: bool
    kept: frozenset[str]  # steps a resume kept from before


def execute(
    location: str | None,
    runbook_path: Path | None,
    *,
    use_cache: bool,
    resume: str | None,
    progress: bool,
    options: dict[str, Any] | None = None,
) -> Executed:
    """Run `runbook_path` as a new run, or resume run `resume` (its stored runbook by default)."""
    from cas.executor import Executor

    if resume is None:
        assert runbook_path is not None, "the command checks that a runbook is given"
        repo, steps = _prepare_new(location, runbook_path, options or {})
        run_id = None
    else:
        repo, steps, run_id = _prepare_resume(location, runbook_path, resume, options or {})
    with StepDisplay(steps, enabled=progress) as display:  # a resume reports "kept" steps
        executor = Executor(repo, steps, use_cache=use_cache, on_event=display.event)
        report = executor.run() if run_id is None else executor.resume(run_id)
    return Executed(repo, steps, report, resumed=run_id is not None, kept=frozenset(report.kept))


def _prepare_new(
    location: str | None, path: Path, options: dict[str, Any]
) -> tuple[Repository, Plan]:
    from cas.planner import plan
    from cas.repository import Repository
    from cas.runbook import load_runbook

    steps = plan(load_runbook(path))  # before any write: a bad runbook leaves no trace
    return Repository.init(location, **options), steps


def _prepare_resume(
    location: str | None, path: Path | None, resume: str, options: dict[str, Any]
) -> tuple[Repository, Plan, str]:
    from cas.planner import plan
    from cas.repository import Repository
    from cas.runbook import load_runbook

    repo = Repository.open(location, **options)
    run_id = repo.resolve_run(resume)
    steps = plan(stored_runbook(repo, run_id) if path is None else load_runbook(path))
    return repo, steps, run_id


def stored_runbook(repo: Repository, run_id: str) -> Runbook:
    """The runbook a run stored when it started (its folder's, else its pack's)."""
    from cas.errors import NotFoundError
    from cas.repository import RUNBOOK
    from cas.runbook import parse_runbook
    from cas.stores import run_key

    data = repo.runbook(run_id)
    if data is None:
        raise NotFoundError(f"run {run_id!r} stored no runbook: give the runbook file")
    source = f"{repo.url}/{run_key(run_id, RUNBOOK)}"
    return parse_runbook(data.decode(), source_name=source)


# summary ----------------------------------------------------------------------------


def summary(done: Executed) -> dict[str, Any]:
    """Everything ``cas run`` reports, as plain JSON values."""
    result = done.report.result
    steps = [
        _step(done, artifact_id, result.artifacts.get(artifact_id))
        for artifact_id in done.plan.order
    ]
    counts = [step["findings"] for step in steps if step["findings"] is not None]
    return {
        "run_id": result.run_id,
        "status": result.status,
        "runbook": result.runbook,
        "resumed": done.resumed,
        "duration_seconds": result.duration_seconds,
        "error": result.error,
        "steps": steps,
        "findings": counts[0] if counts else None,
        "new_objects": done.report.new_objects,
        "bytes_written": done.report.bytes_written,
        "reused": [a for a in done.report.reused if a not in done.kept],
        "next": f"cas inspect {result.run_id}",
    }


def _step(done: Executed, artifact_id: str, outcome: ArtifactOutcome | None) -> dict[str, Any]:
    status = "skipped" if outcome is None else _outcome(outcome, artifact_id in done.kept)
    output = done.plan.steps[artifact_id].spec.output
    return {
        "artifact": artifact_id,
        "outcome": status,
        "output": output,
        "reused_from": outcome.cached_from if outcome else None,
        "error": _error(outcome),
        "reason": outcome.reason if outcome else "not reached",
        "duration_seconds": outcome.duration_seconds if outcome else None,
        "findings": _findings(done, artifact_id) if output and status != "failed" else None,
    }


def _outcome(outcome: ArtifactOutcome, kept: bool) -> str:
    if outcome.status != "completed":
        return outcome.status
    if kept:
        return "kept"
    return "reused" if outcome.cached_from else "done"


def _error(outcome: ArtifactOutcome | None) -> str | None:
    if outcome is None or outcome.status != "failed":
        return None
    return ": ".join(part for part in (outcome.error_type, outcome.error_message) if part)


def _findings(done: Executed, artifact_id: str) -> int | None:
    from cas.errors import NotFoundError

    try:
        content = done.repo.artifacts.get(done.report.run_id, artifact_id).content
    except NotFoundError:
        return None
    return findings_count(content)


def findings_count(content: dict[str, Any]) -> int | None:
    """``summary.findings``, else the length of a ``findings`` list (or a ``findings`` count)."""
    nested = content.get("summary")
    if isinstance(nested, dict) and (count := _count(nested.get("findings"))) is not None:
        return count
    findings = content.get("findings")
    return len(findings) if isinstance(findings, list) else _count(findings)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# live display -------------------------------------------------------------------------


class StepDisplay:
    """One line per step on stderr: a spinner while it runs, then its mark.

    The executor calls `event` from its main loop thread while rich's refresh
    thread renders, so both go through one lock. Disabled, it does nothing.
    """

    def __init__(self, plan: Plan, *, enabled: bool) -> None:
        self.enabled = enabled
        self.order = plan.order
        self.kinds = {a: step.spec.type or step.spec.kind for a, step in plan.steps.items()}
        self.state: dict[str, tuple[str, str]] = {}
        self.spinners: dict[str, Spinner] = {}
        self.lock = threading.Lock()
        self.live: Any = None

    def __enter__(self) -> StepDisplay:
        if self.enabled:
            from rich.live import Live

            from cas.cli_render import console

            self.live = Live(self, console=console(stderr=True), transient=True)
            self.live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def event(self, event: str, artifact_id: str, detail: str) -> None:
        """The executor's ``on_event`` callback."""
        if not self.enabled:
            return
        with self.lock:
            self.state[artifact_id] = (event, detail)
            if event == "start":
                from rich.spinner import Spinner

                self.spinners[artifact_id] = Spinner("dots")

    def __rich__(self) -> RenderableType:
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        with self.lock:
            for artifact_id in self.order:
                event, detail = self.state.get(artifact_id, ("waiting", ""))
                mark: RenderableType = MARKS.get(event, " ")
                if event == "start":
                    mark = self.spinners[artifact_id]
                table.add_row(
                    mark, artifact_id, self.kinds[artifact_id], _event_text(event, detail)
                )
        return table


def _event_text(event: str, detail: str) -> str:
    texts = {"start": "running", "done": f"done {detail}", "reused": f"reused {detail}"}
    return texts.get(event, f"{event}: {detail}" if detail else event)
