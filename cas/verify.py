"""Re-hash everything reachable and report every problem, not just the first.

For each run checked: its execution result and manifest must parse and pass their
checks; every artifact the result marks completed must have an entry; every
object an entry names must exist and hash to its name. A full check (no runs
named) also reports temporaries a crashed writer left behind. Each finding names
the runs it affects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cas.digest import Digest
from cas.errors import CasError, IntegrityError, NotFoundError
from cas.objects import is_temp_name
from cas.packs import index_key, pack_key
from cas.repository import Repository

Progress = Callable[[int, int], None]
WARNINGS = frozenset({"stale_temp"})


@dataclass(frozen=True)
class Problem:
    """One finding of `verify`."""

    kind: str
    subject: str
    runs: tuple[str, ...]
    detail: str

    @property
    def is_error(self) -> bool:
        """Whether this finding fails verification (temporaries only warn)."""
        return self.kind not in WARNINGS

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "runs": list(self.runs),
            "detail": self.detail,
            "error": self.is_error,
        }


@dataclass
class VerifyReport:
    """What `verify` checked and found."""

    runs_checked: int = 0
    objects_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no error-level problem was found."""
        return not any(problem.is_error for problem in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs_checked": self.runs_checked,
            "objects_checked": self.objects_checked,
            "bytes_checked": self.bytes_checked,
            "problems": [problem.to_dict() for problem in self.problems],
        }


def verify(
    repo: Repository, run_ids: Sequence[str] | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Check the named runs (every run if None) and the objects they reference."""
    report = VerifyReport()
    damaged: dict[str, str] = {}
    known = repo.run_ids(damaged)
    for name, error in sorted(damaged.items()):
        report.problems.append(Problem("corrupt_pack", index_key(name), (), error))
    runs = list(run_ids) if run_ids is not None else known
    unknown = sorted(set(runs) - set(known))
    if unknown:
        raise NotFoundError(f"no run {unknown[0]!r} in {repo.url}")
    users: dict[Digest, list[str]] = defaultdict(list)
    sizes: dict[Digest, int] = {}
    for run_id in runs:
        _check_run(repo, run_id, users, sizes, report)
        report.runs_checked += 1
    for done, (digest, owners) in enumerate(sorted(users.items()), 1):
        _check_object(repo, digest, sizes[digest], tuple(owners), report)
        if progress is not None:
            progress(done, len(users))
    if run_ids is None:
        report.problems += _check_packs(repo, set(damaged))
        report.problems += _stale_temporaries(repo)
    return report


def _check_packs(repo: Repository, damaged: set[str]) -> list[Problem]:
    """Each run pack read whole and re-hashed against its name (`cas.packs`)."""
    problems = []
    for name in repo.packs.listed():
        if name in damaged:
            continue
        try:
            repo.packs.load(name)
        except (IntegrityError, NotFoundError) as error:
            problems.append(Problem("corrupt_pack", pack_key(name), (), str(error)))
    return problems


def _check_run(
    repo: Repository,
    run_id: str,
    users: dict[Digest, list[str]],
    sizes: dict[Digest, int],
    report: VerifyReport,
) -> None:
    try:
        entries = repo.artifacts.entries(run_id)
    except CasError as error:
        report.problems.append(Problem("damaged_record", run_id, (run_id,), str(error)))
        entries = {}
    for entry in entries.values():
        users[entry.digest].append(run_id)
        sizes[entry.digest] = entry.size
    try:
        result = repo.executions.get(run_id)
    except NotFoundError:
        return
    except CasError as error:
        report.problems.append(Problem("damaged_record", run_id, (run_id,), str(error)))
        return
    for artifact_id, outcome in result.artifacts.items():
        if outcome.status == "completed" and artifact_id not in entries:
            detail = f"the result marks {artifact_id!r} completed but the run has no entry for it"
            report.problems.append(Problem("missing_entry", artifact_id, (run_id,), detail))


def _check_object(
    repo: Repository, digest: Digest, size: int, runs: tuple[str, ...], report: VerifyReport
) -> None:
    report.objects_checked += 1
    try:
        report.bytes_checked += len(repo.payloads.get(digest, size))
    except NotFoundError as error:
        report.problems.append(Problem("missing_object", digest.hex, runs, str(error)))
    except IntegrityError as error:
        report.problems.append(Problem("corrupt_object", digest.hex, runs, str(error)))


def _stale_temporaries(repo: Repository) -> list[Problem]:
    return [
        Problem("stale_temp", key, (), "temporary file left by an interrupted write")
        for key in repo.backend.list("")
        if is_temp_name(key.rsplit("/", 1)[-1])
    ]
