"""The ``cas gc`` command: retention, then a sweep of unreferenced objects (`cas.gc`).

`register` adds the command to the root app with `cas.cli`'s repository opener and
run resolver, so ``--repo``, ``--json`` and error handling are those of every
other command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cas import cli_render as render

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")]

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from cas.cli_export import OpenRepo, ResolveRun
    from cas.gc import GcResult


def register(app: typer.Typer, open_repo: OpenRepo, resolve_run: ResolveRun) -> None:
    """Add ``gc`` to `app`."""

    @app.command()
    def gc(
        ctx: typer.Context,
        *,
        keep_last: Annotated[
            int | None,
            typer.Option("--keep-last", min=0, metavar="N", help="Keep the N newest runs."),
        ] = None,
        keep_within: Annotated[
            str | None,
            typer.Option(
                "--keep-within", metavar="DURATION", help="Keep runs started within, e.g. 30d."
            ),
        ] = None,
        keep_failed: Annotated[
            str | None,
            typer.Option(
                "--keep-failed",
                metavar="DURATION",
                help="Keep failed, partial and interrupted runs started within DURATION.",
            ),
        ] = None,
        keep: Annotated[
            list[str] | None,
            typer.Option("--keep", metavar="RUN", help="Never remove this run (repeatable)."),
        ] = None,
        grace: Annotated[
            str,
            typer.Option(
                "--grace",
                metavar="DURATION",
                help="Never delete an object younger than this (default 1h).",
            ),
        ] = "1h",
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Report what would be removed; delete nothing.")
        ] = False,
        wait: Annotated[
            str,
            typer.Option(
                "--wait",
                metavar="DURATION",
                help="On an object store, wait this long for writers' locks (default 0: fail).",
            ),
        ] = "0",
        json: JsonFlag = False,
    ) -> None:
        """Remove runs outside the retention policy, then objects no run references."""
        from cas.gc import Policy, collect, parse_duration

        repo = open_repo(ctx, json=json)
        policy = Policy(
            keep_last=keep_last,
            keep_within=parse_duration(keep_within) if keep_within is not None else None,
            keep_failed=parse_duration(keep_failed) if keep_failed is not None else None,
            keep=frozenset(resolve_run(repo, run) for run in keep or ()),
            grace=parse_duration(grace),
        )
        lock_wait = parse_duration(wait).total_seconds()  # refused before anything is read
        interactive = not json and sys.stderr.isatty()
        with render.progress(interactive, "collecting garbage", _phases) as progress:
            result = collect(repo, policy, dry_run=dry_run, progress=progress, lock_wait=lock_wait)
        if json:
            render.emit_json(result.to_dict())
        else:
            typer.echo(summary(result))

    @app.command()
    def locks(
        ctx: typer.Context,
        *,
        remove_stale: Annotated[
            bool, typer.Option("--remove-stale", help="Remove stale locks (crashed processes).")
        ] = False,
        remove_all: Annotated[
            bool,
            typer.Option(
                "--remove-all",
                help="Remove every lock, fresh ones too (only when no cas runs).",
            ),
        ] = False,
        json: JsonFlag = False,
    ) -> None:
        """List the repository's locks (object stores), or remove stale ones."""
        from cas.locks import list_locks, remove_locks

        backend = open_repo(ctx, json=json).backend
        if remove_stale or remove_all:
            found = remove_locks(backend, stale_only=not remove_all)
        else:
            found = list_locks(backend)
        if json:
            render.emit_json([info.to_dict() for info in found])
            return
        verb = "removed " if remove_stale or remove_all else ""
        for info in found:
            state = "stale" if info.stale else "fresh"
            typer.echo(f"{verb}{info.lock_id}  {state}  {info.describe()}")
        if not found:
            typer.echo("no stale locks" if remove_stale and not remove_all else "no locks")


def summary(result: GcResult) -> str:
    """``removed 2 runs, 5 objects, 3 chunks (12.3 kB freed)`` (``would remove`` if dry)."""
    verb = "would remove" if result.dry_run else "removed"
    runs = f"{len(result.runs_removed)} run{'s' * (len(result.runs_removed) != 1)}"
    parts = [
        runs,
        f"{result.objects_removed} objects",
        f"{result.lists_removed} chunk lists",
        f"{result.chunks_removed} chunks",
        f"{result.cache_records_removed} cache records",
    ]
    if result.temporaries_removed:
        parts.append(f"{result.temporaries_removed} temporaries")
    freed = "would free" if result.dry_run else "freed"
    text = f"{verb} {', '.join(parts)} ({freed} {render.size(result.bytes_freed)})"
    if result.kept_young:
        text += f"; kept {result.kept_young} unreferenced younger than the grace period"
    remain = "run remains" if result.runs_kept == 1 else "runs remain"
    return f"{text}; {result.runs_kept} {remain}"


def _phases(bar: Progress, task: TaskID) -> Callable[[str, int, int], None]:
    def advance(phase: str, done: int, total: int) -> None:
        bar.update(task, description=phase, completed=done, total=total)

    return advance
