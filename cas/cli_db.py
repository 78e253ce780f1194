"""The ``cas db`` commands: migrate, status and export-index of a PostgreSQL execution store.

Each takes the database from its argument or, by default, from ``--execution-store``
(``CAS_EXECUTION_STORE``). `cas.pgstore` (and psycopg) is imported inside the
commands, so ``cas --help`` never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cas import cli_render as render
from cas.errors import InvalidInputError, RepositoryError

if TYPE_CHECKING:
    from cas.repository import Repository

db_app = typer.Typer(
    help="Manage the PostgreSQL execution store: migrate its schema, show its version, "
    "export its tables to the Parquet run index.",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout and nothing else; errors as JSON.")
]
DsnArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="POSTGRESQL_URL",
        help="The database (default: --execution-store / CAS_EXECUTION_STORE). Migrate as "
        "the role that owns the tables, not as the application role.",
    ),
]


def _dsn(ctx: typer.Context, given: str | None, *, json: bool) -> str:
    from cas.cli import _State

    state = ctx.ensure_object(_State)
    state.json = json
    dsn = given or state.execution_store
    if not dsn:
        raise InvalidInputError(
            "no database: give POSTGRESQL_URL, --execution-store or CAS_EXECUTION_STORE"
        )
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise InvalidInputError(f"invalid database {dsn[:80]!r}: expected a postgresql:// URL")
    return dsn


@db_app.command("migrate")
def migrate(ctx: typer.Context, dsn: DsnArgument = None, json: JsonOption = False) -> None:
    """Apply pending schema migrations (each in a transaction, under an advisory lock)."""
    from cas.pgstore import migrate as apply
    from cas.pgstore import status

    database = _dsn(ctx, dsn, json=json)
    applied = apply(database)
    info = status(database)
    if json:
        render.emit_json({**info, "applied": applied})
        return
    for name in applied:
        typer.echo(f"applied {name}")
    typer.echo(f"{info['database']} is at schema version {info['version']}")


@db_app.command("status")
def db_status(ctx: typer.Context, dsn: DsnArgument = None, json: JsonOption = False) -> None:
    """Show the database's schema version and pending migrations; exit 6 if it is behind."""
    from cas.pgstore import status

    info = status(_dsn(ctx, dsn, json=json))
    if json:
        render.emit_json(info)
    else:
        typer.echo(f"{info['database']}: schema version {info['version']}")
        typer.echo(f"this cas needs version {info['required']}")
        for name in info["pending"]:
            typer.echo(f"pending: {name}")
    if info["pending"]:
        raise RepositoryError(
            f"database schema is at version {info['version']}, this cas needs "
            f"{info['required']}: run 'cas db migrate'"
        )


@db_app.command("export-index")
def export_index(ctx: typer.Context, json: JsonOption = False) -> None:
    """Write the tenant's runs and artifacts tables into --repo's Parquet run index."""
    from cas.cli import _open
    from cas.index import RunIndex

    repo: Repository = _open(ctx, json=json)
    if repo.records is None:
        raise InvalidInputError("export-index needs --execution-store (or CAS_EXECUTION_STORE)")
    count = RunIndex(repo).rebuild(repo.records.records())
    if json:
        render.emit_json({"runs": count, "index": f"{repo.url}/index"})
    else:
        typer.echo(f"exported {count} run{'s' * (count != 1)} to {repo.url}/index")
