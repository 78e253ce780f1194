"""The ``cas remote``, ``cas push`` and ``cas pull`` commands.

`register` adds them to the root app; `cas.cli` hands it its repository opener
(``--repo`` must exist) and initialiser (``--repo`` is created if needed, for
``pull``), so errors, ``--repo`` and ``--json`` work as for every other command.
Library modules are imported inside the commands to keep ``cas --help`` fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cas import cli_render as render
from cas.errors import InvalidInputError, RepositoryError

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, TaskID

    from cas.cli_export import OpenRepo
    from cas.remotes import Remote
    from cas.repository import Repository
    from cas.sync import SyncResult


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout and nothing else; errors as JSON.")
]
RemoteArgument = Annotated[
    str,
    typer.Argument(metavar="REMOTE", help="A remote's name, or a folder path (with a '/') or URL."),
]
RunsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="RUN", help="Runs to send (ids, prefixes or 'latest'); default all."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every run (the default).")]
JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs", "-j", min=1, max=256, metavar="N",
        help="Writes in flight at once (reads run a little ahead); more helps on slow links.",
    ),
]  # fmt: skip

DEFAULT_JOBS = 8  # cas.sync.DEFAULT_WORKERS (not imported: `cas --help` stays fast)

remote_app = typer.Typer(
    help="Name other repositories (folders, s3://bucket/prefix) to push to and pull from.",
    no_args_is_help=True,
)


def register(app: typer.Typer, open_repo: OpenRepo, init_repo: OpenRepo) -> None:
    """Add ``remote add/list/remove``, ``push`` and ``pull`` to `app`."""
    app.add_typer(remote_app, name="remote")

    @remote_app.command("add")
    def remote_add(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar="NAME", help="The remote's name (id rule).")],
        url: Annotated[
            str,
            typer.Argument(metavar="URL", help="A folder path or fsspec URL (s3://bucket/prefix)."),
        ],
        endpoint_url: Annotated[
            str | None,
            typer.Option("--endpoint-url", metavar="URL", help="S3 endpoint (MinIO, R2, ...)."),
        ] = None,
        tenant: Annotated[
            str | None,
            typer.Option("--tenant", metavar="NAME", help="Use URL/tenants/NAME (id rule)."),
        ] = None,
    ) -> None:
        """Record a remote repository under NAME; nothing is written to it yet."""
        from cas import remotes

        repo = open_repo(ctx)
        remote = remotes.add(repo.backend, name, url, endpoint_url=endpoint_url, tenant=tenant)
        typer.echo(f"added remote {remote.name}: {remote.location}")

    @remote_app.command("list")
    def remote_list(ctx: typer.Context, json: JsonOption = False) -> None:
        """List the remotes: name, location, endpoint and tenant."""
        from cas import remotes

        found = remotes.load(open_repo(ctx, json=json).backend)
        if json:
            render.emit_json(
                [{"name": r.name, "location": r.location, **r.to_dict()} for r in found.values()]
            )
            return
        for remote in found.values():
            extra = f" (endpoint {remote.endpoint_url})" if remote.endpoint_url else ""
            typer.echo(f"{remote.name}\t{remote.location}{extra}")

    @remote_app.command("remove")
    def remote_remove(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar="NAME", help="The remote to forget.")],
    ) -> None:
        """Forget a remote; its repository is not touched."""
        from cas import remotes

        remote = remotes.remove(open_repo(ctx).backend, name)
        typer.echo(f"removed remote {remote.name} ({remote.location})")

    @app.command()
    def push(
        ctx: typer.Context,
        remote: RemoteArgument,
        runs: RunsArgument = None,
        *,
        all_: AllOption = False,
        since: Annotated[
            str | None,
            typer.Option("--since", metavar="DATE", help="Runs started at or after DATE."),
        ] = None,
        jobs: JobsOption = DEFAULT_JOBS,
        json: JsonOption = False,
    ) -> None:
        """Send runs to a remote (created if needed): only the objects it lacks."""
        source = open_repo(ctx, json=json)
        target = _remote(source, remote)
        _check_selection(runs, all_=all_, since=since)
        run_ids = _selected(source, runs, since)
        dest = _open_remote(target, create=True)
        _transfer(source, dest, run_ids, verb="pushed", as_json=json, jobs=jobs)

    @app.command()
    def pull(
        ctx: typer.Context,
        remote: RemoteArgument,
        runs: RunsArgument = None,
        *,
        all_: AllOption = False,
        jobs: JobsOption = DEFAULT_JOBS,
        json: JsonOption = False,
    ) -> None:
        """Fetch runs from a remote into this repository (created if needed)."""
        try:
            existing: Repository | None = open_repo(ctx, json=json)
        except RepositoryError:
            existing = None  # created below, once the remote is known to exist
        target = _remote(existing, remote)
        _check_selection(runs, all_=all_, since=None)
        source = _open_remote(target, create=False)
        dest = existing or init_repo(ctx, json=json)
        run_ids = _selected(source, runs, None)
        _transfer(source, dest, run_ids, verb="pulled", as_json=json, jobs=jobs)


def _check_selection(runs: list[str] | None, *, all_: bool, since: str | None) -> None:
    if runs and (all_ or since):
        raise InvalidInputError("give RUN ids, or --all, or --since, not several")
    if all_ and since:
        raise InvalidInputError("give --all or --since, not both")


def _selected(source: Repository, runs: list[str] | None, since: str | None) -> list[str]:
    """The RUN arguments resolved in `source` (in order, once each), else every run of
    `source` (started at or after `since`, if given)."""
    from cas.cli_index import parse_when
    from cas.sync import select_runs

    if runs:
        return list(dict.fromkeys(source.resolve_run(run) for run in runs))
    return select_runs(source, parse_when(since))


def _remote(repo: Repository | None, text: str) -> Remote:
    from cas.remotes import resolve

    return resolve(repo.backend if repo is not None else None, text)


def _open_remote(remote: Remote, *, create: bool) -> Repository:
    from cas.repository import Repository

    opener = Repository.init if create else Repository.open
    return opener(remote.location, **remote.storage_options())


def _transfer(
    source: Repository,
    dest: Repository,
    run_ids: list[str],
    *,
    verb: str,
    as_json: bool,
    jobs: int,
) -> None:
    from cas.sync import transfer

    if source.url == dest.url:
        raise InvalidInputError(f"the remote is this repository ({source.url})")
    interactive = not as_json and sys.stderr.isatty()
    fields = {"stored": "", "rate": ""}
    with render.progress(interactive, "copy", _copying, columns=_columns, **fields) as progress:
        done = transfer(source, dest, run_ids, workers=jobs, progress=progress)
    if as_json:
        render.emit_json({"source": source.url, "destination": dest.url, **done.to_dict()})
    else:
        typer.echo(summary(done, verb, dest.url if verb == "pushed" else source.url))


def summary(done: SyncResult, verb: str, where: str) -> str:
    """``pushed 3 runs to …: 12 objects sent, 4 already present, 1.2 kB (skipped …)``."""
    preposition = "to" if verb == "pushed" else "from"
    runs = len(done.runs_sent)
    line = (
        f"{verb} {runs} run{'s' * (runs != 1)} {preposition} {where}: "
        f"{done.objects_sent} objects sent, {done.objects_present} already present, "
        f"{render.size(done.bytes_sent)}"
    )
    if done.requests is not None:
        line += f", {done.requests} S3 requests"
    reasons: dict[str, int] = {}
    for reason in done.runs_skipped.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        line += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return line


def _columns() -> tuple[ProgressColumn, ...]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stored]} {task.fields[rate]}"),
        TimeElapsedColumn(),
    )


PHASES = {
    "payloads": "copying payloads",
    "entries": "writing entries",
    "results": "writing results",
}


def _copying(bar: Progress, task: TaskID) -> Callable[[str, int, int, int], None]:
    shown = [""]

    def advance(phase: str, done: int, total: int, stored: int) -> None:
        if phase != shown[0]:  # a new phase starts its own count (and rate)
            shown[0] = phase
            bar.reset(task, total=total, description=PHASES.get(phase, phase))
        speed = bar.tasks[0].speed
        rate = f"{speed:.0f}/s" if speed else ""
        bar.update(task, completed=done, total=total, stored=render.size(stored), rate=rate)

    return advance
