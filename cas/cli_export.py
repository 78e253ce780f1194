"""The ``cas diff`` and ``cas export`` commands, and how a run diff is shown as text.

`register` adds the commands to the root app; `cas.cli` hands it its own
repository opener and run resolver, so these commands open repositories, map
errors and read ``--repo`` exactly as every other command does. Library modules
are imported inside the commands to keep ``cas --help`` fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from cas import cli_render as render

if TYPE_CHECKING:
    from cas.diff import FindingsDiff, RunDiff
    from cas.repository import Repository

_MARK = {"added": "+", "removed": "-", "changed": "~", "unchanged": "="}


class OpenRepo(Protocol):
    """`cas.cli._open`: the repository named by ``--repo``, recording the output mode."""

    def __call__(self, ctx: typer.Context, *, json: bool = False) -> Repository: ...


class ResolveRun(Protocol):
    """`cas.cli._resolve_run`: a run id from an id, a prefix or ``latest``."""

    def __call__(self, repo: Repository, text: str) -> str: ...


def register(app: typer.Typer, open_repo: OpenRepo, resolve_run: ResolveRun) -> None:
    """Add ``diff`` and ``export`` to `app`."""

    @app.command()
    def diff(
        ctx: typer.Context,
        run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The earlier run.")],
        run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The later run.")],
        json: Annotated[
            bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")
        ] = False,
    ) -> None:
        """Compare two runs: artifacts added, removed, changed, unchanged; findings too."""
        from cas.diff import diff_runs

        repo = open_repo(ctx, json=json)
        found = diff_runs(repo, resolve_run(repo, run_a), resolve_run(repo, run_b))
        if json:
            render.emit_json(found.to_dict())
        else:
            typer.echo("\n".join(diff_lines(found)))

    @app.command()
    def export(
        ctx: typer.Context,
        run: Annotated[
            str,
            typer.Argument(metavar="RUN", help="A run id, a unique prefix of one, or 'latest'."),
        ],
        format_: Annotated[
            str,
            typer.Option("--format", "-f", metavar="FORMAT", help="json, markdown or html."),
        ] = "json",
        output: Annotated[
            Path | None,
            typer.Option("--output", "-o", help="Write to this file instead of stdout."),
        ] = None,
        outputs_only: Annotated[
            bool,
            typer.Option("--outputs-only", help="Only artifacts the runbook marks output: true."),
        ] = False,
    ) -> None:
        """Export a run from the stores as JSON, a Markdown report or one HTML page."""
        from cas.export import exporter, load_run

        chosen = exporter(format_)  # an unknown format fails before anything is read
        repo = open_repo(ctx)
        run_id = resolve_run(repo, run)
        data = chosen.export(load_run(repo, run_id, outputs_only=outputs_only))
        if output is None:
            stream = typer.get_binary_stream("stdout")
            stream.write(data)
            stream.flush()
            return
        write_file(output, data)
        typer.echo(f"exported run {run_id} as {chosen.name} to {output} ({render.size(len(data))})")


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a temporary file beside it, then a rename."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def diff_lines(found: RunDiff) -> list[str]:
    """A run diff as text: a count line, one line per artifact, then findings changes."""
    counts = ", ".join(f"{n} {kind}" for kind, n in found.counts().items())
    lines = [f"diff {found.run_a} → {found.run_b}", f"artifacts  {counts}"]
    width = max((len(change.artifact_id) for change in found.artifacts), default=0)
    for change in found.artifacts:
        detail = ""
        if change.kind == "changed":
            detail = (
                f"{render.size(change.size_a)} → {render.size(change.size_b)}  "
                f"{(change.digest_a or '')[:12]} → {(change.digest_b or '')[:12]}"
            )
        elif change.kind != "unchanged":
            detail = render.size(change.size_a if change.kind == "removed" else change.size_b)
        lines.append(f"  {_MARK[change.kind]} {change.artifact_id:<{width}}  {detail}".rstrip())
    for findings in found.findings:
        lines += findings_lines(findings)
    return lines


def findings_lines(found: FindingsDiff) -> list[str]:
    """One artifact's findings changes: a count line, then ``+``, ``-`` and ``>`` lines."""
    lines = [
        f"findings in {found.artifact_id}: {len(found.added)} added, {len(found.removed)} "
        f"removed, {len(found.moved)} moved, {found.unchanged} unchanged"
    ]
    for mark, items in (("+", found.added), ("-", found.removed)):
        lines += [
            f"  {mark} {f.file}:{f.line}  {f.category}  {f.rule}  {f.evidence}" for f in items
        ]
    for moved in found.moved:
        f = moved.finding
        lines.append(
            f"  > {f.file}:{moved.line_a} → {f.line}  {f.category}  {f.rule}  {f.evidence}"
        )
    return lines
