"""How the `cas` commands show what the library returns: JSON, tables and short values.

Nothing here opens a repository or decides anything; each function takes library
values and prints them. Rich styles tables on a terminal and degrades to plain
text when stdout is a pipe. Markup is off, so brackets in messages print as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, TaskID
    from rich.table import Column

    from cas.explain import Explanation
    from cas.model import ArtifactEntry, ArtifactOutcome, ExecutionResult
    from cas.repository import RunInfo
    from cas.stats import RepoStats
    from cas.verify import Problem, VerifyReport

_UNITS = ("B", "kB", "MB", "GB", "TB")
_Callback = TypeVar("_Callback")
PIPE_WIDTH = 240


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that prints text verbatim."""
    from rich.console import Console

    out = Console(stderr=stderr, markup=False, highlight=False, emoji=False)
    if not out.is_terminal:
        out.width = PIPE_WIDTH  # a pipe gets whole rows, never wrapped ids
    return out


def emit_json(value: Any) -> None:
    """Print `value` as pretty JSON with sorted keys, and nothing else."""
    typer.echo(json_text(value))


def json_text(value: Any) -> str:
    """Pretty JSON text with sorted keys."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def size(value: int | None) -> str:
    """A byte count for people: ``512 B``, ``1.2 kB``, ``3.4 MB`` (powers of 1000)."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in _UNITS:
        if amount < 1000 or unit == _UNITS[-1]:
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.0 s``, ``3m 07s``, ``1h 02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def when(value: datetime | None) -> str:
    """A timestamp to the second, ISO 8601; ``-`` when unknown."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="seconds") + "Z"
    return value.isoformat(sep=" ", timespec="seconds")


# runs -----------------------------------------------------------------------


def run_dict(info: RunInfo) -> dict[str, Any]:
    """One row of ``cas runs --json``."""
    result = info.result
    return {
        "run_id": info.run_id,
        "status": info.status,
        "runbook": result.runbook if result else None,
        "started_at": result.started_at.isoformat() if result else None,
        "ended_at": result.ended_at.isoformat() if result and result.ended_at else None,
        "duration_seconds": result.duration_seconds if result else None,
        "artifacts": info.artifact_count,
    }


def runs_table(infos: Sequence[RunInfo]) -> None:
    """The runs as a table, newest first."""
    from rich.table import Table

    run_column = _id_column("run", [info.run_id for info in infos])
    table = Table(run_column, "status", "started", "duration", "artifacts")
    for info in infos:
        result = info.result
        table.add_row(
            info.run_id,
            info.status,
            when(info.started_at),
            duration(result.duration_seconds if result else None),
            str(info.artifact_count),
        )
    console().print(table if infos else "no runs yet")


# inspect --------------------------------------------------------------------


def artifact_rows(
    result: ExecutionResult | None, entries: dict[str, ArtifactEntry]
) -> list[dict[str, Any]]:
    """One row per saved artifact, then one per artifact the result names but never saved."""
    outcomes = result.artifacts if result else {}
    rows = [_entry_row(entry, outcomes.get(entry.artifact_id)) for entry in entries.values()]
    rows += [
        _outcome_row(artifact_id, outcome)
        for artifact_id, outcome in outcomes.items()
        if artifact_id not in entries
    ]
    return rows


def _entry_row(entry: ArtifactEntry, outcome: ArtifactOutcome | None) -> dict[str, Any]:
    if entry.validated:
        validated = "yes"
    else:
        validated = "no schema" if entry.schema is None else "unregistered schema"
    return {
        "artifact": entry.artifact_id,
        "schema": None if entry.schema is None else str(entry.schema),
        "size": entry.size,
        "digest": entry.digest.hex,
        "status": outcome.status if outcome else "saved",
        "validated": validated,
        "detail": _outcome_detail(outcome),
    }


def _outcome_row(artifact_id: str, outcome: ArtifactOutcome) -> dict[str, Any]:
    return {
        "artifact": artifact_id,
        "schema": None,
        "size": None,
        "digest": None,
        "status": outcome.status,
        "validated": None,
        "detail": _outcome_detail(outcome),
    }


def _outcome_detail(outcome: ArtifactOutcome | None) -> str | None:
    if outcome is None:
        return None
    if outcome.error_type or outcome.error_message:
        parts = (outcome.error_type, outcome.error_message)
        return ": ".join(part for part in parts if part)
    if outcome.reason:
        return outcome.reason
    return f"cached from {outcome.cached_from}" if outcome.cached_from else None


def run_view(run_id: str, result: ExecutionResult | None, rows: list[dict[str, Any]]) -> None:
    """The execution result as aligned fields, then the artifacts table."""
    from rich.table import Table

    out = console()
    out.print(f"run       {run_id}")
    if result is None:
        out.print("no execution result saved")
    else:
        for label, value in _result_fields(result):
            out.print(f"{label:<9} {value}")
    if not rows:
        out.print("no artifacts")
        return
    artifact_column = _id_column("artifact", [row["artifact"] for row in rows])
    table = Table(artifact_column, "schema", "size", "digest", "status", "validated", "detail")
    for row in rows:
        digest = row["digest"][:12] if row["digest"] else "-"
        cells = (row["schema"], size(row["size"]), digest, row["status"], row["validated"])
        table.add_row(row["artifact"], *(_dash(cell) for cell in cells), row["detail"] or "")
    out.print(table)


def _result_fields(result: ExecutionResult) -> Iterable[tuple[str, str]]:
    counts = ", ".join(f"{count} {status}" for status, count in result.counts().items() if count)
    yield "status", result.status + (f" ({counts})" if counts else "")
    yield "runbook", result.runbook or "-"
    yield "started", when(result.started_at)
    yield "ended", when(result.ended_at)
    yield "duration", duration(result.duration_seconds)
    if result.error:
        yield "error", result.error


def _id_column(header: str, values: Sequence[str]) -> Column:
    """A column of ids, never wrapped or cut: people copy these."""
    from rich.table import Column

    return Column(header, no_wrap=True, min_width=max(map(len, values), default=len(header)))


def _dash(value: str | None) -> str:
    return "-" if value is None else value


# verify, stats, schemas -------------------------------------------------------


@contextmanager
def progress(
    enabled: bool,
    description: str,
    callback: Callable[[Progress, TaskID], _Callback],
    *,
    columns: Callable[[], Sequence[str | ProgressColumn]] | None = None,
    **fields: Any,
) -> Iterator[_Callback | None]:
    """A library progress callback drawing a transient bar on stderr; None when disabled.

    `callback` makes it from the bar and its one task (`description`, `fields`, no total
    yet); `columns` gives the bar's columns (rich's default ones when empty).
    """
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    shown = columns() if columns else ()
    with Progress(*shown, console=console(stderr=True), transient=True) as bar:
        yield callback(bar, bar.add_task(description, total=None, **fields))


def progress_bar(*, enabled: bool) -> AbstractContextManager[Callable[[int, int], None] | None]:
    """`progress` for ``cas verify``: objects checked of all."""
    return progress(enabled, "verifying objects", _counted)


def _counted(bar: Progress, task: TaskID) -> Callable[[int, int], None]:
    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return advance


def problem_line(problem: Problem) -> str:
    """One finding on one line: level, kind, subject, affected runs, detail."""
    level = "error" if problem.is_error else "warning"
    runs = ", ".join(problem.runs) if problem.runs else "-"
    return f"{level}: {problem.kind} {problem.subject} (runs: {runs}): {problem.detail}"


def verify_summary(report: VerifyReport) -> str:
    """``verified 2 runs, 7 objects (1.2 kB): OK`` or ``…: 3 problems``."""
    errors = sum(problem.is_error for problem in report.problems)
    warnings = len(report.problems) - errors
    verdict = "OK" if errors == 0 else f"{errors} problem{'s' * (errors != 1)}"
    if warnings:
        verdict += f", {warnings} warning{'s' * (warnings != 1)}"
    return (
        f"verified {report.runs_checked} run{'s' * (report.runs_checked != 1)}, "
        f"{report.objects_checked} object{'s' * (report.objects_checked != 1)} "
        f"({size(report.bytes_checked)}): {verdict}"
    )


def stats_table(stats: RepoStats) -> None:
    """The repository's totals, one per line."""
    from rich.table import Table

    table = Table("measure", "value")
    table.add_row("runs", str(stats.runs))
    table.add_row("artifacts", str(stats.artifacts))
    table.add_row("payloads", str(stats.payloads))
    table.add_row("objects and chunks", str(stats.objects))
    for label, value in (
        ("logical bytes", stats.logical_bytes),
        ("unique bytes", stats.unique_bytes),
        ("chunked bytes", stats.chunked_bytes),
        ("distinct chunk bytes", stats.chunk_bytes),
        ("stored bytes", stats.stored_bytes),
    ):
        table.add_row(label, f"{value} ({size(value)})")
    table.add_row("dedup ratio (logical / unique)", f"{stats.dedup_ratio:.2f}x")
    table.add_row("chunk dedup (chunked / chunks)", f"{stats.chunk_dedup_ratio:.2f}x")
    table.add_row("total (logical / stored)", f"{stats.total_ratio:.2f}x")
    console().print(table)


def schemas_table(schemas: Sequence[tuple[str, str, str]]) -> None:
    """Registered schemas: name, version and where each comes from."""
    from rich.table import Table

    table = Table("name", "version", "source")
    for row in schemas:
        table.add_row(*row)
    console().print(table if schemas else "no schemas registered")


# run, explain -----------------------------------------------------------------------

# Each step outcome's mark; a skipped step gets an en dash.
MARKS = {"done": "✓", "reused": "↺", "kept": "✓", "failed": "✗", "skipped": "\u2013"}


def run_summary(body: dict[str, Any]) -> None:
    """What ``cas run`` did: the run, each step's outcome, findings, bytes, what next."""
    out = console()
    out.print(f"run       {body['run_id']}" + (" (resumed)" if body["resumed"] else ""))
    out.print(f"status    {body['status']}" + (f": {body['error']}" if body["error"] else ""))
    width = max((len(step["artifact"]) for step in body["steps"]), default=0)
    for step in body["steps"]:
        out.print(f"  {step_line(step, width)}")
    if body["findings"] is not None:
        out.print(f"findings  {body['findings']}")
    objects, reused = body["new_objects"], len(body["reused"])
    out.print(
        f"written   {objects} new object{'s' * (objects != 1)} ({size(body['bytes_written'])}), "
        f"{reused} step{'s' * (reused != 1)} reused"
    )
    out.print(f"next      {body['next']}")


def step_line(step: dict[str, Any], width: int = 0) -> str:
    """``✓ findings  done in 0.01 s (12 findings)``, ``↺ summary  reused from run …``."""
    outcome = step["outcome"]
    texts = {
        "done": f"done in {duration(step['duration_seconds'])}",
        "kept": "kept (completed before the resume)",
        "reused": f"reused from run {step['reused_from']}",
        "failed": f"failed: {step['error']}",
        "skipped": f"skipped: {step['reason']}",
    }
    text = texts[outcome]
    if step["findings"] is not None:
        text += f" ({step['findings']} finding{'s' * (step['findings'] != 1)})"
    return f"{MARKS[outcome]} {step['artifact']:<{width}}  {text}"


def explanation(found: Explanation) -> None:
    """Why a step ran or was reused: the verdict line, then one line per change."""
    from cas.explain import describe

    out = console()
    out.print(f"{found.artifact_id} in run {found.run_id}: {found.verdict}")
    if not found.changes:
        out.print(f"  {found.reason}")
        return
    out.print(f"  changed since run {found.compared_with}:")
    for change in found.changes:
        out.print(f"  - {describe(change)}")
