"""The ``cas query`` command and its three outputs: a table, a JSON array, CSV.

`register` adds the command to the root app with `cas.cli`'s repository opener,
so ``--repo`` and error handling are those of every other command. DuckDB is
imported by `cas.query` only when a query runs, never by ``cas --help``.
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from cas import cli_render as render
from cas.errors import InvalidInputError

if TYPE_CHECKING:
    from cas.cli_export import OpenRepo
    from cas.query import QueryResult


def register(app: typer.Typer, open_repo: OpenRepo) -> None:
    """Add ``query`` to `app`."""

    @app.command()
    def query(
        ctx: typer.Context,
        sql: Annotated[
            str,
            typer.Argument(
                metavar="SQL", help="One SELECT over the runs and artifacts views; - reads stdin."
            ),
        ],
        json: Annotated[
            bool, typer.Option("--json", help="A JSON array of objects; errors as JSON.")
        ] = False,
        as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    ) -> None:
        """Run read-only SQL (DuckDB) over the run index; see docs/history.md."""
        from cas.query import run_query

        if json and as_csv:
            raise InvalidInputError("give --json or --csv, not both")
        found = run_query(open_repo(ctx, json=json), sys.stdin.read() if sql == "-" else sql)
        if json:
            typer.echo(json_text(found))
        elif as_csv:
            write_csv(found)
        else:
            print_table(found)


def plain(value: Any) -> Any:
    """A value JSON and CSV can hold: ISO text for times, hex for bytes, seconds for spans."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # UUID and the rest


def json_text(found: QueryResult) -> str:
    """The rows as a pretty JSON array of objects, keys in column order."""
    rows = [{key: plain(value) for key, value in row.items()} for row in found.records()]
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()


def write_csv(found: QueryResult) -> None:
    """A header row, then one line per row; NULL is an empty field."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(found.columns)
    for row in found.rows:
        writer.writerow([_cell(value, null="") for value in row])


def _cell(value: Any, *, null: str) -> str:
    if value is None:
        return null
    value = plain(value)
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def print_table(found: QueryResult) -> None:
    """The rows as a table (numbers right-aligned); the row count below it."""
    from rich.table import Column, Table

    numeric = [_numeric(found, index) for index in range(len(found.columns))]
    columns = [
        Column(name, justify="right" if is_number else "left")
        for name, is_number in zip(found.columns, numeric, strict=True)
    ]
    table = Table(*columns)
    for row in found.rows:
        table.add_row(*(_cell(value, null="NULL") for value in row))
    out = render.console()
    out.print(table)
    out.print(f"{len(found.rows)} row{'s' * (len(found.rows) != 1)}")


def _numeric(found: QueryResult, index: int) -> bool:
    values = [row[index] for row in found.rows if row[index] is not None]
    kinds = int | float | Decimal
    return bool(values) and all(isinstance(v, kinds) and not isinstance(v, bool) for v in values)
