"""Compare two runs: which artifacts were added, removed, changed or kept, and findings.

Artifacts are compared by payload digest, read from the two manifests only. A
changed artifact whose content is findings-shaped in both runs (a ``findings``
list of objects with ``file``, ``line``, ``category``, ``rule`` and ``evidence``)
is read and its findings compared too. A finding's identity is (file, category,
rule, evidence); its position (line, column) is not, so a finding that only
moved is reported as moved, not as removed and added again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cas.model import ArtifactEntry
    from cas.repository import Repository

ChangeKind = Literal["added", "removed", "changed", "unchanged"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("added", "removed", "changed", "unchanged")
FindingKey = tuple[str, str, str, str]  # file, category, rule, evidence
Position = tuple[int, int | None]  # line, column
_IDENTITY = ("file", "category", "rule", "evidence")


@dataclass(frozen=True, slots=True)
class ArtifactChange:
    """One artifact id of either run: how it differs, with digests and sizes on each side."""

    artifact_id: str
    kind: ChangeKind
    digest_a: str | None = None
    digest_b: str | None = None
    size_a: int | None = None
    size_b: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact_id,
            "change": self.kind,
            "digest_a": self.digest_a,
            "digest_b": self.digest_b,
            "size_a": self.size_a,
            "size_b": self.size_b,
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """A finding as the diff sees it: identity plus position."""

    file: str
    category: str
    rule: str
    evidence: str
    line: int
    column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "category": self.category,
            "rule": self.rule,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class MovedFinding:
    """A finding present in both runs at a different position."""

    finding: Finding  # as in run B
    line_a: int
    column_a: int | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "line_a": self.line_a, "column_a": self.column_a}


@dataclass(frozen=True, slots=True)
class FindingsDiff:
    """The findings of one changed, findings-shaped artifact, compared."""

    artifact_id: str
    added: tuple[Finding, ...]
    removed: tuple[Finding, ...]
    moved: tuple[MovedFinding, ...]
    unchanged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact_id,
            "added": [finding.to_dict() for finding in self.added],
            "removed": [finding.to_dict() for finding in self.removed],
            "moved": [moved.to_dict() for moved in self.moved],
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True, slots=True)
class RunDiff:
    """Everything `diff_runs` found, artifacts sorted by id."""

    run_a: str
    run_b: str
    artifacts: tuple[ArtifactChange, ...]
    findings: tuple[FindingsDiff, ...]

    def of_kind(self, kind: ChangeKind) -> list[ArtifactChange]:
        """The artifacts with one kind of change."""
        return [change for change in self.artifacts if change.kind == kind]

    def counts(self) -> dict[str, int]:
        """Artifacts per kind of change, every kind present."""
        return {kind: len(self.of_kind(kind)) for kind in CHANGE_KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "counts": self.counts(),
            "artifacts": [change.to_dict() for change in self.artifacts],
            "findings": [found.to_dict() for found in self.findings],
        }


def diff_runs(repo: Repository, a: str, b: str) -> RunDiff:
    """Compare run `a` with run `b` (exact ids; see `Repository.resolve_run`)."""
    entries_a, entries_b = repo.artifacts.entries(a), repo.artifacts.entries(b)
    changes = compare_entries(entries_a, entries_b)
    findings = []
    for change in changes:
        if change.kind == "changed":
            old = repo.artifacts.message(entries_a[change.artifact_id]).content
            new = repo.artifacts.message(entries_b[change.artifact_id]).content
            found = diff_contents(change.artifact_id, old, new)
            if found is not None:
                findings.append(found)
    return RunDiff(a, b, changes, tuple(findings))


def compare_entries(
    a: Mapping[str, ArtifactEntry], b: Mapping[str, ArtifactEntry]
) -> tuple[ArtifactChange, ...]:
    """Every artifact id of either manifest, classified by digest, sorted by id."""
    changes = []
    for artifact_id in sorted(a.keys() | b.keys()):
        old, new = a.get(artifact_id), b.get(artifact_id)
        if old is None:
            kind: ChangeKind = "added"
        elif new is None:
            kind = "removed"
        else:
            kind = "unchanged" if old.digest == new.digest else "changed"
        changes.append(
            ArtifactChange(
                artifact_id,
                kind,
                digest_a=old.digest.hex if old else None,
                digest_b=new.digest.hex if new else None,
                size_a=old.size if old else None,
                size_b=new.size if new else None,
            )
        )
    return tuple(changes)


def diff_contents(
    artifact_id: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> FindingsDiff | None:
    """Compare two contents' findings; None unless both are findings-shaped."""
    before, after = findings_of(old), findings_of(new)
    if before is None or after is None:
        return None
    return diff_findings(artifact_id, before, after)


def findings_of(content: Mapping[str, Any]) -> list[Finding] | None:
    """The content's ``findings`` as `Finding` values; None if it is not findings-shaped."""
    raw = content.get("findings")
    if not isinstance(raw, list):
        return None
    found = [_finding(item) for item in raw]
    return None if any(finding is None for finding in found) else [f for f in found if f]


def _finding(item: Any) -> Finding | None:
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in _IDENTITY):
        return None
    line, column = item.get("line"), item.get("column")
    if type(line) is not int or not (column is None or type(column) is int):
        return None
    return Finding(item["file"], item["category"], item["rule"], item["evidence"], line, column)


def diff_findings(
    artifact_id: str, before: Iterable[Finding], after: Iterable[Finding]
) -> FindingsDiff:
    """Match findings by identity: same position → unchanged, else moved, the rest added/removed.

    Findings sharing an identity (the same masked value twice in a file) are
    matched position by position, in order, after exact positions are taken out.
    """
    old, new = _by_identity(before), _by_identity(after)
    added: list[Finding] = []
    removed: list[Finding] = []
    moved: list[MovedFinding] = []
    unchanged = 0
    for key in sorted(old.keys() | new.keys()):
        left, right = old.get(key, []), new.get(key, [])
        unchanged += _take_same(left, right)
        moved += [MovedFinding(_at(key, b), *a) for a, b in zip(left, right, strict=False)]
        removed += [_at(key, position) for position in left[len(right) :]]
        added += [_at(key, position) for position in right[len(left) :]]
    moved.sort(key=lambda item: _order(item.finding))
    added.sort(key=_order)
    removed.sort(key=_order)
    return FindingsDiff(artifact_id, tuple(added), tuple(removed), tuple(moved), unchanged)


def _take_same(left: list[Position], right: list[Position]) -> int:
    """Remove the positions both lists hold from both; how many there were."""
    same = [position for position in left if position in right]
    for position in same:
        left.remove(position)
        right.remove(position)
    return len(same)


def _by_identity(findings: Iterable[Finding]) -> dict[FindingKey, list[Position]]:
    grouped: dict[FindingKey, list[Position]] = defaultdict(list)
    for finding in findings:
        key = (finding.file, finding.category, finding.rule, finding.evidence)
        grouped[key].append((finding.line, finding.column))
    for positions in grouped.values():
        positions.sort(key=lambda position: (position[0], position[1] or 0))
    return grouped


def _at(key: FindingKey, position: Position) -> Finding:
    return Finding(*key, line=position[0], column=position[1])


def _order(finding: Finding) -> tuple[str, int, int, str, str, str]:
    return (
        finding.file,
        finding.line,
        finding.column or 0,
        finding.category,
        finding.rule,
        finding.evidence,
    )
