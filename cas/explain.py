"""Why a step of a run ran, was reused, failed or was skipped.

A step's outcome records its *step key* (the digest of a `cas.cache.StepKey`:
plugin type and version, properties, input digests) and, when its output came
from the cache, the run that made it. For a step that ran, `explain` finds the
same artifact in the most recent earlier run (by start time) that recorded a
step key, reads both keys' parts from their cache records and lists what
changed. Nothing here writes to the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cas.digest import Digest
from cas.errors import CasError, NotFoundError
from cas.model import ArtifactOutcome
from cas.repository import Repository

Verdict = Literal["ran", "reused", "failed", "skipped"]
ChangeKind = Literal["plugin", "version", "property", "input"]
_MISSING: Any = object()


@dataclass(frozen=True)
class Change:
    """One difference between two step keys; `old`/`new` are None when added/removed."""

    kind: ChangeKind
    name: str
    change: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "change": self.change,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True)
class Explanation:
    """Why `artifact_id` of `run_id` ended as it did: a verdict, a reason, the changes."""

    run_id: str
    artifact_id: str
    verdict: Verdict
    reason: str
    step_key: str | None = None
    compared_with: str | None = None
    reused_from: str | None = None
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "artifact": self.artifact_id,
            "verdict": self.verdict,
            "reason": self.reason,
            "step_key": self.step_key,
            "compared_with": self.compared_with,
            "reused_from": self.reused_from,
            "changes": [change.to_dict() for change in self.changes],
        }


def explain(repo: Repository, run_id: str, artifact_id: str) -> Explanation:
    """Explain the outcome of `artifact_id` in `run_id` (`NotFoundError` if the run lacks it)."""
    result = repo.executions.get(run_id)
    outcome = result.artifacts.get(artifact_id)
    if outcome is None:
        raise NotFoundError(f"run {run_id!r} has no step {artifact_id!r}")
    done = _Explainer(repo, run_id, artifact_id, outcome)
    if outcome.status == "failed":
        error = ": ".join(p for p in (outcome.error_type, outcome.error_message) if p)
        return done.verdict("failed", f"failed: {error or 'no error recorded'}")
    if outcome.status == "skipped":
        return done.verdict("skipped", f"skipped: {outcome.reason or 'no reason recorded'}")
    if outcome.cached_from is not None:
        return done.reused(outcome.cached_from)
    if outcome.step_key is None:
        return done.verdict("ran", _keyless_reason(done.source()))
    return done.compare()


def _keyless_reason(source: str) -> str:
    if source.startswith("source:"):
        return "sources always run (the connector is not cacheable)"
    return "ran without a step key, so it could not be looked up in the cache"


class _Explainer:
    """One artifact's outcome and the repository reads that explain it."""

    def __init__(self, repo: Repository, run_id: str, artifact_id: str, outcome: ArtifactOutcome):
        self.repo = repo
        self.run_id = run_id
        self.artifact_id = artifact_id
        self.outcome = outcome

    def verdict(self, verdict: Verdict, reason: str, **extra: Any) -> Explanation:
        return Explanation(
            self.run_id, self.artifact_id, verdict, reason, self.outcome.step_key, **extra
        )

    def source(self) -> str:
        """The envelope's ``source`` (``kind:type``), or an empty string."""
        try:
            entry = self.repo.artifacts.entry(self.run_id, self.artifact_id)
        except NotFoundError:
            return ""
        return str(entry.envelope.get("source") or "")

    def reused(self, from_run: str) -> Explanation:
        if self.outcome.step_key is None:  # a runbook `reuse` step copies, it has no key
            reason = f"copied from run {from_run} (a reuse step in the runbook)"
        else:
            reason = (
                f"reused output of run {from_run} (same plugin, version, properties and inputs)"
            )
        return self.verdict("reused", reason, reused_from=from_run)

    def compare(self) -> Explanation:
        previous = self.previous_key()
        if previous is None:
            return self.verdict("ran", "first run of this step: no earlier run has it")
        earlier_run, earlier_key = previous
        if earlier_key == self.outcome.step_key:
            reason = (
                f"same step key as run {earlier_run}, but it ran anyway: the run was made "
                "with --no-cache, or the cached output could not be read"
            )
            return self.verdict("ran", reason, compared_with=earlier_run)
        changes = self.changes(earlier_key, self.outcome.step_key or "")
        if changes is None:
            reason = f"its step key differs from run {earlier_run} (a cache record is missing)"
            return self.verdict("ran", reason, compared_with=earlier_run)
        reason = f"changed since run {earlier_run}: " + "; ".join(map(describe, changes))
        return self.verdict("ran", reason, compared_with=earlier_run, changes=tuple(changes))

    def previous_key(self) -> tuple[str, str] | None:
        """(run id, step key) of this artifact in the most recent earlier run that has one."""
        runs = self.repo.runs()  # newest first
        position = [info.run_id for info in runs].index(self.run_id)
        for info in runs[position + 1 :]:
            outcome = info.result.artifacts.get(self.artifact_id) if info.result else None
            if outcome is not None and outcome.step_key is not None:
                return info.run_id, outcome.step_key
        return None

    def changes(self, old_key: str, new_key: str) -> list[Change] | None:
        old, new = read_key(self.repo, old_key), read_key(self.repo, new_key)
        if old is None or new is None:
            return None
        return diff_keys(old, new, self.input_names(len(new["inputs"])))

    def input_names(self, count: int) -> list[str]:
        """The step's input ids from the run's stored runbook, else ``input 1``, ``input 2``…"""
        from cas.runbook import parse_runbook

        try:
            data = self.repo.runbook(self.run_id)
            runbook = parse_runbook(data.decode()) if data is not None else None
            inputs = list(runbook.artifacts[self.artifact_id].inputs) if runbook else []
        except (CasError, KeyError, UnicodeDecodeError):
            inputs = []
        if len(inputs) != count:
            return [f"input {n}" for n in range(1, count + 1)]
        return inputs


def read_key(repo: Repository, step_key: str) -> dict[str, Any] | None:
    """The parts of a step key from its cache record, or None if absent or damaged."""
    from cas.cache import StepCache

    return StepCache(repo).parts(Digest.parse(step_key))


def diff_keys(old: dict[str, Any], new: dict[str, Any], input_names: list[str]) -> list[Change]:
    """What differs between two step keys' parts, in the order plugin, version, properties,
    inputs. `input_names` names the new key's inputs by position."""
    changes: list[Change] = []
    parts: tuple[ChangeKind, ...] = ("plugin", "version")
    for part in parts:
        if old.get(part) != new.get(part):
            changes.append(_change(part, part, old.get(part), new.get(part)))
    changes += _mapping_changes("property", old.get("properties", {}), new.get("properties", {}))
    old_inputs, new_inputs = old.get("inputs", []), new.get("inputs", [])
    for position in range(max(len(old_inputs), len(new_inputs))):
        name = input_names[position] if position < len(input_names) else f"input {position + 1}"
        before = old_inputs[position] if position < len(old_inputs) else _MISSING
        after = new_inputs[position] if position < len(new_inputs) else _MISSING
        if before != after:
            changes.append(_change("input", name, before, after))
    return changes


def _mapping_changes(kind: ChangeKind, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    keys = list(dict.fromkeys([*old, *new]))
    return [
        _change(kind, key, old.get(key, _MISSING), new.get(key, _MISSING))
        for key in keys
        if old.get(key, _MISSING) != new.get(key, _MISSING)
    ]


def _change(kind: ChangeKind, name: str, old: Any, new: Any) -> Change:
    if old is _MISSING:
        return Change(kind, name, "added", None, new)
    if new is _MISSING:
        return Change(kind, name, "removed", old, None)
    return Change(kind, name, "changed", old, new)


def describe(change: Change) -> str:
    """One change for people: ``property 'categories' changed: ['email'] → ['phone']``."""
    labels = {"plugin": "plugin type", "version": "plugin version"}
    label = labels.get(change.kind) or f"{change.kind} {change.name!r}"
    if change.kind == "input":
        old, new = _short(change.old), _short(change.new)
    else:
        old, new = _value(change.old), _value(change.new)
    if change.change == "added":
        return f"{label} added: {new}"
    if change.change == "removed":
        return f"{label} removed (was {old})"
    return f"{label} changed: {old} → {new}"


def _short(digest: Any) -> str:
    return str(digest)[:12]


def _value(value: Any) -> str:
    from cas.digest import canonical_json

    text = value if isinstance(value, str) else canonical_json(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."
