"""The synthetic scan behind ``cas demo``: two runs that differ in one artifact.

Each run saves three artifacts (`file_content`, `findings`, `summary`) and records
a skipped one (`data_subjects`) in its execution result. The second run sees one
edited file, so only its `file_content` payload is new: the other payloads are
already stored and cost nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cas.model import ArtifactOutcome, ExecutionInfo, ExecutionResult, Message, SchemaRef
from cas.repository import Repository

RUNBOOK = "demo"
FINDING_SCHEMA = SchemaRef("personal_data_finding", "1.0.0")
SKIPPED = ("data_subjects", "no data subject rules in the demo runbook")

_FILES = {
    "app/models.py": "class User:\n    email: str\n    phone: str\n",
    "app/signup.py": "def signup(email, phone):\n    send_mail(email)\n",
    "README.md": "# Shop\nContact: support@example.com\n",
}
_EDITED = {"README.md": "# Shop\nContact: support@example.com\nNow with gift cards.\n"}
_FINDINGS: list[dict[str, Any]] = [
    {"category": "email", "file": "app/models.py", "line": 2, "risk_level": "medium"},
    {"category": "phone", "file": "app/models.py", "line": 3, "risk_level": "medium"},
    {"category": "email", "file": "app/signup.py", "line": 2, "risk_level": "high"},
    {"category": "email", "file": "README.md", "line": 2, "risk_level": "low"},
]


@dataclass(frozen=True)
class DemoResult:
    """What ``cas demo`` did: the two run ids and how many objects each added."""

    run_ids: tuple[str, str]
    objects_added: tuple[int, int]
    artifacts_per_run: int


def new_run_id() -> str:
    """A time-sortable run id: UTC timestamp to the microsecond plus a random suffix."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}"


def run_demo(repo: Repository) -> DemoResult:
    """Save the two demo runs into `repo`."""
    first, added_first = _counted(repo, _FILES)
    second, added_second = _counted(repo, {**_FILES, **_EDITED})
    return DemoResult((first, second), (added_first, added_second), len(_artifacts(_FILES)))


def _counted(repo: Repository, files: dict[str, str]) -> tuple[str, int]:
    before = sum(1 for _ in repo.objects)
    run_id = save_run(repo, files)
    return run_id, sum(1 for _ in repo.objects) - before


def save_run(repo: Repository, files: dict[str, str]) -> str:
    """Save one demo run over `files`, artifacts first, then its execution result."""
    run_id = new_run_id()
    started = datetime.now(UTC)
    outcomes: dict[str, ArtifactOutcome] = {}
    for artifact_id, schema, content in _artifacts(files):
        message = Message(
            id=f"{run_id}.{artifact_id}",
            content=content,
            schema=schema,
            source="demo",
            timestamp=datetime.now(UTC),
            context={"runbook": RUNBOOK},
            execution=ExecutionInfo(status="completed", duration_seconds=0.01),
        )
        repo.artifacts.save(run_id, artifact_id, message)
        outcomes[artifact_id] = ArtifactOutcome("completed", duration_seconds=0.01)
    outcomes[SKIPPED[0]] = ArtifactOutcome("skipped", reason=SKIPPED[1])
    ended = datetime.now(UTC)
    result = ExecutionResult(
        run_id=run_id,
        status="completed",
        started_at=started,
        runbook=RUNBOOK,
        ended_at=ended,
        duration_seconds=(ended - started).total_seconds(),
        artifacts=outcomes,
    )
    repo.executions.save(run_id, result)
    return run_id


def _artifacts(files: dict[str, str]) -> list[tuple[str, SchemaRef | None, dict[str, Any]]]:
    listing = [{"path": path, "content": text} for path, text in sorted(files.items())]
    by_category: dict[str, int] = {}
    for finding in _FINDINGS:
        by_category[finding["category"]] = by_category.get(finding["category"], 0) + 1
    return [
        ("file_content", SchemaRef("file_content", "1.0.0"), {"files": listing}),
        ("findings", FINDING_SCHEMA, {"findings": _FINDINGS}),
        ("summary", None, {"total_findings": len(_FINDINGS), "by_category": by_category}),
    ]
