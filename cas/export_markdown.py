"""The Markdown exporter: a run report for a pull request or a ticket.

Sections: the run summary, findings by category, the findings grouped by file,
errors, skipped steps and the artifacts. Everything comes from the
``cas-export/1`` document. Stored text is never trusted as Markdown: ids, paths
and evidence go into code spans, other text is backslash-escaped, and a ``|`` is
escaped everywhere, so no value can break a table or inject HTML or links.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import Any, ClassVar

from cas.cli_render import duration, size
from cas.export import RunData, display_time, document, findings

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_TICKS = re.compile(r"`+")


class MarkdownExporter:
    """GitHub-flavoured Markdown: tables, code spans, nothing a renderer could execute."""

    name: ClassVar[str] = "markdown"
    suffix: ClassVar[str] = ".md"

    def export(self, data: RunData) -> bytes:
        """The report as UTF-8 Markdown ending in one newline."""
        body = document(data)
        rows = findings(data)
        parts = [
            _summary(body),
            _by_category(body["summary"]["findings_by_category"]),
            _findings(rows),
            _errors(body["errors"]),
            _skipped(body["skipped"]),
            _artifacts(body["outputs"], outputs_only=data.outputs_only),
        ]
        return ("\n\n".join(parts) + "\n").encode()


def text(value: Any) -> str:
    """Plain table-cell text: one line, Markdown punctuation escaped; ``-`` for None."""
    if value is None:
        return "-"
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def code(value: Any) -> str:
    """A code span holding `value` verbatim (one line), safe inside a table cell."""
    if value is None:
        return "-"
    flat = " ".join(str(value).split()).replace("|", "\\|")
    if not flat:
        return "-"
    fence = "`" * (max((len(run) for run in _TICKS.findall(flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: int = 0) -> str:
    """A pipe table; the last `right` columns are right-aligned."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _summary(body: dict[str, Any]) -> str:
    run, summary = body["run"], body["summary"]
    artifacts = (
        f"{summary['artifacts']} saved, {summary['exported']} exported; "
        f"{summary['completed']} completed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped"
    )
    rows = [
        ("status", f"**{text(run['status'])}**"),
        ("runbook", text(run["runbook"])),
        ("started", display_time(run["started_at"])),
        ("ended", display_time(run["ended_at"])),
        ("duration", duration(run["duration_seconds"])),
        ("artifacts", artifacts),
        ("findings", str(summary["findings"])),
    ]
    if run["error"]:
        rows.append(("error", text(run["error"])))
    return f"# cas run {code(run['id'])}\n\n" + table(("run", code(run["id"])), rows)


def _by_category(counts: dict[str, int]) -> str:
    if not counts:
        return "## Findings by category\n\nNo findings."
    rows = [(code(category), str(count)) for category, count in counts.items()]
    total = ("**total**", f"**{sum(counts.values())}**")
    return "## Findings by category\n\n" + table(("category", "findings"), [*rows, total], 1)


def _findings(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "## Findings\n\nNo findings."
    parts = ["## Findings"]
    for file, group in groupby(rows, key=lambda row: row["file"]):
        found = list(group)
        cells = [
            (
                text(row["line"]),
                text(row["column"]),
                code(row["category"]),
                code(row["rule"]),
                code(row["evidence"]),
                code(row["artifact"]),
            )
            for row in found
        ]
        header = ("line", "column", "category", "rule", "evidence", "artifact")
        parts.append(f"### {code(file)} ({len(found)})\n\n" + table(header, cells))
    return "\n\n".join(parts)


def _errors(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "## Errors\n\nNo step failed."
    rows = [(code(e["artifact"]), code(e["error_type"]), text(e["message"])) for e in errors]
    return "## Errors\n\n" + table(("artifact", "error", "message"), rows)


def _skipped(skipped: list[dict[str, Any]]) -> str:
    if not skipped:
        return "## Skipped\n\nNo step was skipped."
    rows = [(code(item["artifact"]), text(item["reason"])) for item in skipped]
    return "## Skipped\n\n" + table(("artifact", "reason"), rows)


def _artifacts(outputs: list[dict[str, Any]], *, outputs_only: bool) -> str:
    title = "## Outputs" if outputs_only else "## Artifacts"
    if not outputs:
        return f"{title}\n\nNone."
    header = ("artifact", "output", "status", "schema", "size", "digest", "validated")
    rows = [_artifact_row(item) for item in outputs]
    return f"{title}\n\n" + table(header, rows)


def _artifact_row(item: dict[str, Any]) -> tuple[str, ...]:
    schema = item["schema"]
    status = item["status"]
    if item["cached_from"]:
        status += f" (reused from {code(item['cached_from'])})"
    return (
        code(item["artifact"]),
        "yes" if item["output"] else "no",
        status,
        code(f"{schema['name']}/{schema['version']}") if schema else "-",
        size(item["size"]),
        code(item["digest"][:12]),
        "yes" if item["validated"] else "no",
    )
