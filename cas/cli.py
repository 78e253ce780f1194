"""The ``cas`` command line: thin commands over the library, errors mapped once.

Each command opens the repository, calls the library and hands the result to
`cas.cli_render`. Every error a command raises reaches `_Group.invoke`, which
prints one line (``cas: error: …``, or a JSON object under ``--json``) on stderr
and exits with `exit_code(error)`; `docs/cli.md` publishes that table. The
repository modules are imported inside the commands so ``cas --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from typer.core import TyperGroup

from cas import cli_export, cli_gc, cli_query, cli_serve, cli_sync
from cas import cli_render as render
from cas.cli_db import db_app
from cas.cli_index import check_status, emit_runs, index_app, parse_when
from cas.errors import (
    CasError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RepositoryError,
)
from cas.ids import check_run_id

if TYPE_CHECKING:
    from cas.repository import Repository

# Checked in order; the first match wins (AmbiguousError is an InvalidInputError).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidInputError, 2),
    (NotFoundError, 3),
    (IntegrityError, 4),
    (ConflictError, 5),
    (RepositoryError, 6),
)
UNEXPECTED = 1


def exit_code(error: BaseException) -> int:
    """The process exit code for `error`: the table in docs/cli.md, 1 for anything else."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return UNEXPECTED


def error_message(error: BaseException) -> str:
    """`error` as one line; unexpected errors also name their type."""
    text = " ".join(str(error).split())
    if isinstance(error, CasError):
        return text
    return f"unexpected {type(error).__name__}: {text} (set CAS_DEBUG=1 for a traceback)"


@dataclass
class _State:
    """What the app callback hands the commands: where the repository is, output mode."""

    location: str | None = None  # the repository root (under tenants/{tenant} with --tenant)
    json: bool = False
    execution_store: str | None = None  # --execution-store: results and entries in PostgreSQL
    tenant: str | None = None  # --tenant: the prefix in --repo, and the scope in PostgreSQL
    storage: dict[str, Any] = field(default_factory=dict)  # fsspec options (--endpoint-url)

    def repo_options(self) -> dict[str, Any]:
        """Keyword arguments of `Repository.open`/`init` beyond the location."""
        if self.execution_store is None:
            return dict(self.storage)
        return {**self.storage, "execution_store": self.execution_store, "tenant": self.tenant}


class _Group(TyperGroup):
    """The root command group: the one place errors become output and exit codes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _plain_coercion(self, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own signals: --help, usage errors, Ctrl-C
        except BrokenPipeError:
            # The reader went away (`cas export … | head`): stop quietly, as `cat` does.
            _silence_stdout()
            raise typer.Exit(0) from None
        except Exception as error:
            if os.environ.get("CAS_DEBUG"):
                raise
            state = ctx.obj if isinstance(ctx.obj, _State) else _State()
            _report(error, as_json=state.json)
            raise typer.Exit(exit_code(error)) from None


def _plain_coercion(command: Any, ctx: Any) -> None:
    """Spare the plain parameters typer's pydantic coercion (see `cas.cli_params`)."""
    try:
        from cas.cli_params import plain_coercion
    except ImportError:  # a typer without these internals: its own coercion throughout
        return
    plain_coercion(command, ctx)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit and would complain about the closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _report(error: BaseException, *, as_json: bool) -> None:
    message = error_message(error)
    if as_json:
        body = {"type": type(error).__name__, "message": message, "exit_code": exit_code(error)}
        typer.echo(orjson.dumps({"error": body}).decode(), err=True)
    else:
        typer.echo(f"cas: error: {message}", err=True)


app = typer.Typer(
    cls=_Group,
    name="cas",
    help="Content-addressed artifact repository for pipeline runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(
    help="Register and list the JSON Schemas artifacts are validated against.",
    no_args_is_help=True,
)
app.add_typer(schema_app, name="schema")
app.add_typer(index_app, name="index")
app.add_typer(db_app, name="db")

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout and nothing else; errors as JSON.")
]
RunArgument = Annotated[
    str, typer.Argument(metavar="RUN", help="A run id, a unique prefix of one, or 'latest'.")
]


@app.callback()
def _root(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            envvar="CAS_REPO",
            metavar="PATH_OR_URL",
            help="Repository folder or fsspec URL (s3://bucket/prefix). "
            "Default: .waivern in the working directory.",
        ),
    ] = None,
    execution_store: Annotated[
        str | None,
        typer.Option(
            "--execution-store",
            envvar="CAS_EXECUTION_STORE",
            metavar="POSTGRESQL_URL",
            help="Keep run results and manifest entries in this PostgreSQL database "
            "(postgresql://user@host/db; objects stay in --repo). Default: in --repo.",
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url",
            envvar="CAS_ENDPOINT_URL",
            metavar="URL",
            help="S3-compatible endpoint of --repo (MinIO, R2, a test server). Credentials "
            "and region come from the standard AWS environment and config files.",
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            envvar="CAS_TENANT",
            metavar="NAME",
            help="Keep the repository under tenants/NAME of --repo (NAME follows the id rule).",
        ),
    ] = None,
) -> None:
    """Content-addressed artifact repository for pipeline runs."""
    from cas.remotes import Location

    state = _State(location=repo, execution_store=execution_store or None, tenant=tenant)
    ctx.obj = state
    if endpoint_url or tenant is not None:  # checked here, before any command writes
        if repo is None:
            from cas.repository import default_location

            repo = default_location()
        where = Location(repo, endpoint_url or None, tenant)
        state.location, state.storage = where.root, where.storage_options()


def _open(ctx: typer.Context, *, json: bool = False) -> Repository:
    """The existing repository named by ``--repo``; records the output mode first."""
    from cas.repository import Repository

    state = ctx.ensure_object(_State)
    state.json = json
    return Repository.open(state.location, **state.repo_options())


def _resolve_run(repo: Repository, text: str) -> str:
    """`Repository.resolve_run`: an id, a unique prefix, ``latest`` or ``latest~N``."""
    return repo.resolve_run(text)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the repository (nothing changes if it exists) and print where it is."""
    from cas.repository import Repository

    state = ctx.ensure_object(_State)
    location = state.location
    try:
        repo = Repository.open(location, **state.repo_options())
        typer.echo(f"repository already exists at {repo.url}")
    except RepositoryError:
        repo = Repository.init(location, **state.repo_options())
        typer.echo(f"created repository at {repo.url}")


@app.command()
def runs(  # every flag is keyword-only: typer passes them by name
    ctx: typer.Context,
    *,
    json: JsonOption = False,
    ndjson: Annotated[bool, typer.Option("--ndjson", help="One JSON object a line.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show only the newest N runs.")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip the newest N.")] = 0,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with it.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Started at or after (ISO date or time).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Started before (a bare date: its whole day).")
    ] = None,
    runbook: Annotated[str | None, typer.Option("--runbook", help="Only this runbook.")] = None,
    artifact: Annotated[
        str | None, typer.Option("--artifact", metavar="ID", help="Runs holding artifact ID.")
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option("--digest", metavar="PREFIX", help="Runs holding a payload with it."),
    ] = None,
) -> None:
    """List runs from the index, newest first: id, status, start, duration, artifact count."""
    from cas.index_rows import RunQuery

    repo = _open(ctx, json=json or ndjson)
    query = RunQuery(
        check_status(status),
        parse_when(since),
        parse_when(until, end_of_day=True),
        runbook,
        artifact,
        digest,
        limit,
        offset,
    )
    emit_runs(repo.list_runs(query), as_json=json, ndjson=ndjson)


@app.command("inspect")
def inspect_(
    ctx: typer.Context,
    run: RunArgument,
    artifact: Annotated[
        str | None,
        typer.Argument(
            metavar="ARTIFACT",
            help="An artifact id of the run: print that message instead of the run.",
        ),
    ] = None,
    content: Annotated[
        bool, typer.Option("--content", help="With ARTIFACT: print only the message content.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Show a run's execution result and artifacts, or one artifact's message as JSON."""
    repo = _open(ctx, json=json)
    run_id = _resolve_run(repo, run)
    if artifact is None:
        if content:
            raise InvalidInputError("--content needs an ARTIFACT argument")
        _show_run(repo, run_id, as_json=json)
        return
    message = repo.artifacts.get(run_id, artifact)
    render.emit_json(message.content if content else message.to_dict())


def _show_run(repo: Repository, run_id: str, *, as_json: bool) -> None:
    try:
        result = repo.executions.get(run_id)
    except NotFoundError:
        result = None
    rows = render.artifact_rows(result, repo.artifacts.entries(run_id))
    if as_json:
        body = {"run_id": run_id, "result": result.to_dict() if result else None}
        render.emit_json({**body, "artifacts": rows})
    else:
        render.run_view(run_id, result, rows)


@app.command()
def cat(
    ctx: typer.Context,
    digest: Annotated[
        str,
        typer.Argument(metavar="DIGEST_PREFIX", help="A digest or a unique prefix (4+ hex)."),
    ],
) -> None:
    """Write an object's payload bytes, verified, to stdout and nothing else."""
    repo = _open(ctx)
    data = repo.payloads.get(repo.resolve_digest(digest))
    stream = typer.get_binary_stream("stdout")
    stream.write(data)
    stream.flush()


@app.command()
def verify(
    ctx: typer.Context,
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="RUN", help="Runs to check (ids, prefixes or 'latest'); default all."
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Re-hash every object the runs reference and check their records; exit 4 on damage."""
    from cas.verify import verify as check

    repo = _open(ctx, json=json)
    run_ids = list(dict.fromkeys(_resolve_run(repo, run) for run in runs)) if runs else None
    with render.progress_bar(enabled=not json and sys.stderr.isatty()) as progress:
        report = check(repo, run_ids, progress)
    if json:
        render.emit_json(report.to_dict())
    else:
        for problem in report.problems:
            typer.echo(render.problem_line(problem))
        typer.echo(render.verify_summary(report))
    errors = sum(problem.is_error for problem in report.problems)
    if errors:
        raise IntegrityError(f"verify found {errors} problem{'s' * (errors != 1)}")


@app.command()
def stats(ctx: typer.Context, json: JsonOption = False) -> None:
    """Count runs, artifacts and objects; logical, unique and stored bytes and the ratios."""
    from cas.stats import collect_stats

    totals = collect_stats(_open(ctx, json=json))
    if json:
        render.emit_json(totals.to_dict())
    else:
        render.stats_table(totals)


@schema_app.command("add")
def schema_add(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="The JSON Schema document (a file)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Schema name, e.g. personal_data_finding.")],
    version: Annotated[str, typer.Option("--version", help="Schema version, e.g. 1.0.0.")],
) -> None:
    """Register a JSON Schema for (name, version); a different document there is a conflict."""
    from cas.model import SchemaRef

    repo = _open(ctx)
    ref = SchemaRef(name, version)
    if repo.schemas.add(ref, _read_json_object(file)):
        typer.echo(f"registered schema {ref} from {file}")
    else:
        typer.echo(f"schema {ref} is already registered with this document")


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{file} is not a JSON object")
    return document


@schema_app.command("list")
def schema_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """List registered schemas: name, version and where each comes from."""
    found = _open(ctx, json=json).schemas.list()
    rows = [(ref.name, ref.version, source) for ref, source in found]
    if json:
        render.emit_json([{"name": n, "version": v, "source": s} for n, v, s in rows])
    else:
        render.schemas_table(rows)


@app.command("run")
def run_(
    ctx: typer.Context,
    runbook: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUNBOOK",
            help="The runbook YAML file (optional with --resume: the run's stored runbook).",
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step, even those cached before.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", metavar="RUN", help="Re-run only the steps of RUN that did not complete."
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Run a runbook (creating the repository if needed); exit 1 if a step failed."""
    from cas.cli_run import EXIT_STATUS, execute, summary

    state = ctx.ensure_object(_State)
    state.json = json
    if runbook is None and resume is None:
        raise InvalidInputError("give a RUNBOOK, or --resume RUN to continue a run")
    if resume is not None and resume != "latest":
        check_run_id(resume)
    progress = not json and sys.stderr.isatty()
    done = execute(
        state.location,
        runbook,
        use_cache=not no_cache,
        resume=resume,
        progress=progress,
        options=state.repo_options(),
    )
    body = summary(done)
    if json:
        render.emit_json(body)
    else:
        render.run_summary(body)
    raise typer.Exit(EXIT_STATUS.get(body["status"], UNEXPECTED))


@app.command()
def explain(
    ctx: typer.Context,
    run: RunArgument,
    artifact: Annotated[
        str, typer.Argument(metavar="ARTIFACT", help="The artifact id of the step to explain.")
    ],
    json: JsonOption = False,
) -> None:
    """Say why a step of a run ran, was reused, failed or was skipped."""
    from cas.explain import explain as why

    repo = _open(ctx, json=json)
    found = why(repo, _resolve_run(repo, run), artifact)
    if json:
        render.emit_json(found.to_dict())
    else:
        render.explanation(found)


def _init(ctx: typer.Context, *, json: bool = False) -> Repository:
    """The repository named by ``--repo``, created if it does not exist (``cas pull``)."""
    from cas.repository import Repository

    state = ctx.ensure_object(_State)
    state.json = json
    return Repository.init(state.location, **state.repo_options())


cli_export.register(app, _open, _resolve_run)  # cas diff, cas export
cli_sync.register(app, _open, _init)  # cas remote add/list/remove, cas push, cas pull
cli_query.register(app, _open)  # cas query
cli_gc.register(app, _open, _resolve_run)  # cas gc
cli_serve.register(app)  # cas serve, cas token create/list/revoke


def main() -> None:
    """Console-script entry point (``cas``)."""
    app(prog_name="cas")


if __name__ == "__main__":
    main()
