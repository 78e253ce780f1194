"""Exporters: a run, read only from the stores, as JSON, a Markdown report or an HTML page.

`load_run` reads what an export may use: the execution result, the manifest
entries, the messages and the runbook the run stored (for ``output: true``).
Nothing is re-executed and no clock is read, so exporting a run twice gives the
same bytes. `document` turns that into the ``cas-export/1`` structure (see
docs/exports.md); the JSON exporter prints it and the report exporters render it,
so every format says the same thing.

An exporter is anything with a ``name``, a ``suffix`` and ``export(RunData) ->
bytes``; `EXPORTERS` maps names to them and `register` adds one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from cas.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from cas.model import ArtifactEntry, ExecutionResult, Message
    from cas.repository import Repository

FORMAT = "cas-export/1"
NO_RESULT = "no-result"
_IDENTITY = ("file", "line", "column", "category", "rule", "evidence")


@dataclass(frozen=True)
class RunData:
    """A run as stored: result, manifest entries and messages (those exported)."""

    run_id: str
    result: ExecutionResult | None
    entries: Mapping[str, ArtifactEntry]
    messages: Mapping[str, Message]
    outputs: frozenset[str] | None  # marked ``output: true``; None: no stored runbook
    outputs_only: bool = False

    def is_output(self, artifact_id: str) -> bool:
        """Whether the runbook marks the artifact as an output (all are, without a runbook)."""
        return self.outputs is None or artifact_id in self.outputs


class Exporter(Protocol):
    """Turns a run's stored data into one file."""

    name: ClassVar[str]
    suffix: ClassVar[str]  # file name suffix, e.g. ".html"

    def export(self, data: RunData) -> bytes:
        """The whole file; the same data always gives the same bytes."""
        ...


def load_run(repo: Repository, run_id: str, *, outputs_only: bool = False) -> RunData:
    """Read run `run_id` (an exact id) from the stores; every payload is verified."""
    result, entries = repo.find_run(run_id)
    if result is None and not entries:
        raise NotFoundError(f"run {run_id!r} has neither an execution result nor artifacts")
    outputs = stored_outputs(repo, run_id)
    data = RunData(run_id, result, entries, {}, outputs, outputs_only)
    chosen = [a for a in sorted(entries) if not outputs_only or data.is_output(a)]
    messages = {a: repo.artifacts.message(entries[a]) for a in chosen}
    return RunData(run_id, result, entries, messages, outputs, outputs_only)


class _Blank(Mapping[str, str]):
    """An environment where every variable is empty, so ``${X:-default}`` gives the default."""

    def __getitem__(self, key: str) -> str:
        return ""

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def stored_outputs(repo: Repository, run_id: str) -> frozenset[str] | None:
    """Artifacts the stored runbook marks ``output: true``; None when the run stored none.

    The runbook is parsed without the caller's environment, so the answer (and
    the export) never depends on who exports.
    """
    from cas.repository import RUNBOOK
    from cas.runbook import parse_runbook
    from cas.stores import run_key

    data = repo.runbook(run_id)
    if data is None:
        return None
    source = f"{repo.url}/{run_key(run_id, RUNBOOK)}"
    runbook = parse_runbook(data.decode(), source_name=source, env=_Blank())
    return frozenset(a for a, spec in runbook.artifacts.items() if spec.output)


# the cas-export/1 document ------------------------------------------------------------


def document(data: RunData) -> dict[str, Any]:
    """The ``cas-export/1`` structure of a run, as plain JSON values."""
    return {
        "format": FORMAT,
        "run": _run(data),
        "summary": _summary(data),
        "outputs": [_output(data, artifact_id) for artifact_id in sorted(data.messages)],
        "errors": _errors(data.result),
        "skipped": _skipped(data.result),
    }


def _run(data: RunData) -> dict[str, Any]:
    result = data.result
    return {
        "id": data.run_id,
        "status": result.status if result else NO_RESULT,
        "runbook": result.runbook if result else None,
        "started_at": _iso(result.started_at) if result else None,
        "ended_at": _iso(result.ended_at) if result else None,
        "duration_seconds": result.duration_seconds if result else None,
        "error": result.error if result else None,
    }


def _summary(data: RunData) -> dict[str, Any]:
    counts = data.result.counts() if data.result else {"completed": 0, "failed": 0, "skipped": 0}
    found = findings(data)
    by_category: dict[str, int] = {}
    for row in found:
        by_category[row["category"]] = by_category.get(row["category"], 0) + 1
    return {
        **counts,
        "artifacts": len(data.entries),
        "exported": len(data.messages),
        "outputs_only": data.outputs_only,
        "findings": len({_identity(row) for row in found}),
        "findings_by_category": dict(sorted(by_category.items())),
    }


def _identity(row: dict[str, Any]) -> bytes:
    return orjson.dumps({k: row[k] for k in _IDENTITY}, option=orjson.OPT_SORT_KEYS)


def _output(data: RunData, artifact_id: str) -> dict[str, Any]:
    entry, message = data.entries[artifact_id], data.messages[artifact_id]
    outcome = data.result.artifacts.get(artifact_id) if data.result else None
    return {
        "artifact": artifact_id,
        "output": data.is_output(artifact_id),
        "status": outcome.status if outcome else "saved",
        "cached_from": outcome.cached_from if outcome else None,
        "duration_seconds": outcome.duration_seconds if outcome else None,
        "schema": entry.schema.to_dict() if entry.schema else None,
        "digest": entry.digest.hex,
        "size": entry.size,
        "validated": entry.validated,
        "message": message.to_dict(),
    }


def _errors(result: ExecutionResult | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    return [
        {"artifact": a, "error_type": o.error_type, "message": o.error_message}
        for a, o in sorted(result.artifacts.items())
        if o.status == "failed"
    ]


def _skipped(result: ExecutionResult | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    return [
        {"artifact": a, "reason": o.reason}
        for a, o in sorted(result.artifacts.items())
        if o.status == "skipped"
    ]


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def display_time(value: str | None) -> str:
    """A stored ISO time as reports show it, to the second in UTC: ``2025-03-01 10:15:02Z``."""
    from datetime import datetime

    from cas.cli_render import when

    return when(None if value is None else datetime.fromisoformat(value))


def findings(data: RunData) -> list[dict[str, Any]]:
    """Every finding of every exported findings-shaped message, with its artifact id.

    Sorted by file, line, column, category, rule, evidence and artifact. A list
    item that is not a finding object is left out (it stays in the JSON export).
    """
    rows = []
    for artifact_id in sorted(data.messages):
        raw = data.messages[artifact_id].content.get("findings")
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, dict) and all(k in item for k in ("file", "category", "rule")):
                row = {k: item.get(k) for k in _IDENTITY}
                rows.append({**row, "artifact": artifact_id})
    return sorted(rows, key=_finding_order)


def _finding_order(row: dict[str, Any]) -> tuple[str, ...]:
    line, column = row["line"], row["column"]
    number = f"{line:012d}" if type(line) is int and line >= 0 else str(line)
    col = f"{column:012d}" if type(column) is int and column >= 0 else str(column)
    return (str(row["file"]), number, col, *(str(row[k]) for k in _IDENTITY[3:]), row["artifact"])


# the registry ----------------------------------------------------------------------------


class JsonExporter:
    """The ``cas-export/1`` document: pretty, keys sorted, a final newline."""

    name: ClassVar[str] = "json"
    suffix: ClassVar[str] = ".json"

    def export(self, data: RunData) -> bytes:
        """`document` as JSON bytes."""
        options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        return orjson.dumps(document(data), option=options) + b"\n"


def _builtin() -> dict[str, Exporter]:
    from cas.export_html import HtmlExporter
    from cas.export_markdown import MarkdownExporter

    found: list[Exporter] = [JsonExporter(), MarkdownExporter(), HtmlExporter()]
    return {exporter.name: exporter for exporter in found}


EXPORTERS: dict[str, Exporter] = {}


def register(exporter: Exporter) -> None:
    """Add (or replace) the exporter for ``exporter.name``."""
    exporters()[exporter.name] = exporter


def exporters() -> dict[str, Exporter]:
    """Every exporter by name, the built-in ones loaded on first use."""
    if not EXPORTERS:
        EXPORTERS.update(_builtin())
    return EXPORTERS


def exporter(name: str) -> Exporter:
    """The exporter called `name`; `InvalidInputError` naming the choices otherwise."""
    found = exporters().get(name)
    if found is None:
        choices = ", ".join(sorted(exporters()))
        raise InvalidInputError(f"unknown export format {name!r}: expected one of {choices}")
    return found


def export_run(repo: Repository, run_id: str, name: str, *, outputs_only: bool = False) -> bytes:
    """Run `run_id` exported with the exporter `name`."""
    chosen = exporter(name)
    return chosen.export(load_run(repo, run_id, outputs_only=outputs_only))
