"""``cas runs`` rendering and the ``cas index`` commands (compact, rebuild, check).

Thin as the rest of the CLI: parse flags into a `RunQuery`, call `cas.index`, print.
pyarrow is imported only when a command touches the index, never by ``cas --help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from cas import cli_render as render
from cas.errors import InvalidInputError

if TYPE_CHECKING:
    from cas.index import RunIndex
    from cas.index_rows import CheckReport, RunRow

index_app = typer.Typer(
    help="Maintain the run index (index/): compact, rebuild or check it.", no_args_is_help=True
)
_STATUSES = ("running", "completed", "partial", "failed", "interrupted")


def parse_when(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or time (UTC without a zone); with `end_of_day` a bare date ends its day.

    So ``--since 2026-03-01 --until 2026-03-31`` covers both days whole.
    """
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"invalid date {text!r}: expected ISO 8601, e.g. 2026-03-01"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:
        value += timedelta(days=1)
    return value


def check_status(status: str | None) -> str | None:
    """`status` if it is a run status; `InvalidInputError` otherwise."""
    if status is not None and status not in _STATUSES:
        raise InvalidInputError(
            f"invalid status {status!r}: expected one of {', '.join(_STATUSES)}"
        )
    return status


def emit_runs(rows: Sequence[RunRow], *, as_json: bool, ndjson: bool) -> None:
    """Rows as a JSON array, one JSON object a line, or the familiar table."""
    if ndjson:
        for row in rows:
            typer.echo(orjson.dumps(row.to_dict(), option=orjson.OPT_SORT_KEYS).decode())
    elif as_json:
        render.emit_json([row.to_dict() for row in rows])
    else:
        runs_table(rows)


def runs_table(rows: Sequence[RunRow]) -> None:
    """Columns as ``cas runs`` always showed: run, status, started, duration, artifacts."""
    from rich.table import Column, Table

    width = max((len(row.run_id) for row in rows), default=3)
    table = Table(
        Column("run", no_wrap=True, min_width=width), "status", "started", "duration", "artifacts"
    )
    for row in rows:
        table.add_row(
            row.run_id,
            row.status,
            render.when(row.started_at),
            render.duration(row.duration_seconds),
            str(row.artifacts),
        )
    render.console().print(table if rows else "no runs yet")


def _open(ctx: typer.Context, *, json: bool = False) -> RunIndex:
    from cas.cli import _open as open_repo
    from cas.index import RunIndex

    return RunIndex(open_repo(ctx, json=json))


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout and nothing else; errors as JSON.")
]


@index_app.command("compact")
def compact(ctx: typer.Context) -> None:
    """Merge every index file into one, sorted newest first (atomic for readers)."""
    merged = _open(ctx).compact(full=True)
    typer.echo(f"merged {merged} index files" if merged else "index already compact")


@index_app.command("rebuild")
def rebuild(ctx: typer.Context) -> None:
    """Recreate the index from the run folders (one read per run)."""
    count = _open(ctx).rebuild()
    typer.echo(f"indexed {count} run{'s' * (count != 1)}")


@index_app.command("check")
def check(
    ctx: typer.Context,
    fix: Annotated[
        bool, typer.Option("--fix", help="Index missing runs, replace stale rows.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Compare the index with the run folders; exit 4 if it differs (unless --fix mended it)."""
    from cas.errors import IntegrityError

    report = _open(ctx, json=json).check(fix=fix)
    if json:
        render.emit_json(report.to_dict())
    else:
        _check_lines(report)
    if not report.ok and not report.fixed:
        raise IntegrityError("the index differs from the run folders: run 'cas index check --fix'")


def _check_lines(report: CheckReport) -> None:
    for kind in ("unindexed", "stale", "orphaned"):
        for run_id in getattr(report, kind):
            typer.echo(f"{kind}: {run_id}")
    state = "OK" if report.ok else ("fixed" if report.fixed else "differs")
    typer.echo(f"index holds {report.indexed} runs, {len(report.pending)} pending: {state}")
