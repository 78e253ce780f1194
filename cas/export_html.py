"""The HTML exporter: one self-contained page with the run, its findings and its artifacts.

The page has no external asset: CSS and JavaScript are inline, and a Content
Security Policy allows exactly those two blocks (by SHA-256) and nothing else,
so even a value that slipped past escaping could not run or load anything.
Every stored value is HTML-escaped; the script reads the table from the DOM as
text and never builds markup. The findings table is complete without
JavaScript; the script adds sorting (click a header) and filtering (a text box
and a category select). A fragment such as ``#q=alice&category=email&sort=line&order=desc``
presets them, which makes a view shareable and lets tests drive the page.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, ClassVar

import orjson

from cas.cli_render import duration, size
from cas.export import RunData, display_time, document, findings
from cas.export_assets import SCRIPT, STYLE

FINDING_COLUMNS = (
    ("file", "text"),
    ("line", "number"),
    ("column", "number"),
    ("category", "text"),
    ("rule", "text"),
    ("evidence", "text"),
    ("artifact", "text"),
)


class HtmlExporter:
    """A single HTML5 file: inline CSS and JS, everything escaped."""

    name: ClassVar[str] = "html"
    suffix: ClassVar[str] = ".html"

    def export(self, data: RunData) -> bytes:
        """The page as UTF-8 bytes."""
        body = document(data)
        sections = [
            _header(body["run"]),
            _summary(body),
            _findings(findings(data), body["summary"]["findings_by_category"]),
            _errors(body["errors"]),
            _skipped(body["skipped"]),
            _artifacts(body["outputs"], outputs_only=data.outputs_only),
        ]
        return _page(f"cas run {body['run']['id']}", "\n".join(sections)).encode()


def e(value: Any) -> str:
    """`value` as escaped HTML text (quotes too, so it is safe in attributes); ``-`` for None."""
    return "-" if value is None else escape(str(value), quote=True)


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def _page(title: str, main: str) -> str:
    policy = (
        f"default-src 'none'; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{e(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="cas">\n<title>{e(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{main}\n</main>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], attrs: str = "", head: str = ""
) -> str:
    """A table of already-escaped cells; `head` replaces the plain header row when given."""
    head = head or "<tr>" + "".join(f"<th>{e(name)}</th>" for name in header) + "</tr>"
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table{attrs}>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _header(run: dict[str, Any]) -> str:
    status = run["status"]
    return (
        f"<header><h1>cas run <code>{e(run['id'])}</code></h1>"
        f'<span class="status status-{e(status)}">{e(status)}</span></header>'
    )


def _summary(body: dict[str, Any]) -> str:
    run, summary = body["run"], body["summary"]
    items = [
        ("runbook", e(run["runbook"])),
        ("started", e(display_time(run["started_at"]))),
        ("ended", e(display_time(run["ended_at"]))),
        ("duration", e(duration(run["duration_seconds"]))),
        ("artifacts", f"{summary['artifacts']} saved, {summary['exported']} exported"),
        (
            "steps",
            f"{summary['completed']} completed, {summary['failed']} failed, "
            f"{summary['skipped']} skipped",
        ),
        ("findings", str(summary["findings"])),
    ]
    if run["error"]:
        items.append(("error", e(run["error"])))
    cells = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in items)
    chips = "".join(
        f'<li><span class="cat">{e(category)}</span> <b>{count}</b></li>'
        for category, count in summary["findings_by_category"].items()
    )
    chips_list = f'<ul class="chips">{chips}</ul>' if chips else ""
    return f'<section id="summary"><dl class="summary">{cells}</dl>{chips_list}</section>'


def _findings(rows: list[dict[str, Any]], by_category: dict[str, int]) -> str:
    title = f'<h2>Findings <small><span id="shown">{len(rows)}</span> of {len(rows)}</small></h2>'
    if not rows:
        return f'<section id="findings">{title}<p class="none">No findings.</p></section>'
    options = "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in by_category)
    controls = (
        '<div class="controls"><input id="filter" type="search" '
        'placeholder="Filter findings (file, rule, evidence…)" aria-label="Filter findings">'
        '<select id="category" aria-label="Category">'
        f'<option value="">All categories</option>{options}</select></div>'
    )
    heads = (
        f'<th data-type="{kind}" aria-sort="none"><button type="button">{name}</button></th>'
        for name, kind in FINDING_COLUMNS
    )
    head = "<tr>" + "".join(heads) + "</tr>"
    body = "\n".join(_finding_row(row) for row in rows)
    table = (
        f'<table id="findings-table">\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>'
    )
    return f'<section id="findings">{title}{controls}{table}</section>'


def _finding_row(row: dict[str, Any]) -> str:
    cells = "".join(f'<td class="c-{name}">{e(row[name])}</td>' for name, _ in FINDING_COLUMNS)
    return f'<tr data-category="{e(row["category"])}">{cells}</tr>'


def _none(section: str, title: str, text: str) -> str:
    return f'<section id="{section}"><h2>{title}</h2><p class="none">{text}</p></section>'


def _errors(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return _none("errors", "Errors", "No step failed.")
    rows = [
        (f"<code>{e(i['artifact'])}</code>", f"<code>{e(i['error_type'])}</code>", e(i["message"]))
        for i in errors
    ]
    table = _table(("artifact", "error", "message"), rows, ' class="errors"')
    return f'<section id="errors"><h2>Errors</h2>{table}</section>'


def _skipped(skipped: list[dict[str, Any]]) -> str:
    if not skipped:
        return _none("skipped", "Skipped", "No step was skipped.")
    rows = [(f"<code>{e(i['artifact'])}</code>", e(i["reason"])) for i in skipped]
    return f'<section id="skipped"><h2>Skipped</h2>{_table(("artifact", "reason"), rows)}</section>'


def _artifacts(outputs: list[dict[str, Any]], *, outputs_only: bool) -> str:
    title = "Outputs" if outputs_only else "Artifacts"
    if not outputs:
        return f'<section id="artifacts"><h2>{title}</h2><p class="none">None.</p></section>'
    header = ("artifact", "output", "status", "schema", "size", "digest", "validated", "message")
    table = _table(header, [_artifact_row(item) for item in outputs], ' class="artifacts"')
    return f'<section id="artifacts"><h2>{title}</h2>{table}</section>'


def _artifact_row(item: dict[str, Any]) -> tuple[str, ...]:
    schema = item["schema"]
    status = e(item["status"])
    if item["cached_from"]:
        status += f" <small>reused from <code>{e(item['cached_from'])}</code></small>"
    return (
        f"<code>{e(item['artifact'])}</code>",
        "yes" if item["output"] else "no",
        status,
        f"<code>{e(schema['name'])}/{e(schema['version'])}</code>" if schema else "-",
        e(size(item["size"])),
        f'<code class="digest" title="{e(item["digest"])}">{e(item["digest"][:12])}</code>',
        "yes" if item["validated"] else "no",
        _envelope(item["message"]),
    )


def _envelope(message: dict[str, Any]) -> str:
    """The message's run-specific fields (not its content) as a small definition list."""
    execution = message.get("execution") or {}
    fields = [
        ("source", message.get("source")),
        ("timestamp", message.get("timestamp")),
        ("duration", duration(execution.get("duration_seconds")) if execution else None),
        ("error", execution.get("error")),
    ]
    items = [f"<dt>{name}</dt><dd>{e(value)}</dd>" for name, value in fields if value]
    if message.get("context"):
        context = orjson.dumps(message["context"], option=orjson.OPT_SORT_KEYS).decode()
        items.append(f"<dt>context</dt><dd><code>{e(context)}</code></dd>")
    return f'<dl class="envelope">{"".join(items)}</dl>' if items else "-"
