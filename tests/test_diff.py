"""`cas diff`: artifacts added, removed, changed and unchanged; findings added, removed, moved."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.diff import Finding, diff_findings, diff_runs, findings_of
from cas.model import ExecutionResult, Message
from cas.repository import Repository

RUN_A, RUN_B = "run-a", "run-b"


def finding(file: str, line: int, rule: str, evidence: str, column: int = 1) -> dict[str, Any]:
    category = rule.split("_", maxsplit=1)[0]
    return {"file": file, "line": line, "column": column, "category": category, "rule": rule,
            "evidence": evidence}  # fmt: skip


BEFORE = [
    finding(".env", 5, "email", "a***@e.com"),  # unchanged
    finding(".env", 6, "phone_uk", "+44 **21"),  # moves to line 8
    finding("old.txt", 2, "iban", "DE** 00"),  # removed
    finding("twice.txt", 10, "email", "t***@e.com"),  # the same value twice: stays
    finding("twice.txt", 20, "email", "t***@e.com"),  # ... and moves to line 30
]
AFTER = [
    finding(".env", 5, "email", "a***@e.com"),
    finding(".env", 8, "phone_uk", "+44 **21"),
    finding("twice.txt", 10, "email", "t***@e.com"),
    finding("twice.txt", 30, "email", "t***@e.com"),
    finding("new.txt", 1, "email", "n***@e.com"),  # added
]


def save_run(
    repo: Repository, run_id: str, contents: dict[str, dict[str, Any]], minute: int
) -> None:
    for artifact_id, content in contents.items():
        repo.artifacts.save(run_id, artifact_id, Message(id=artifact_id, content=content))
    started = datetime(2025, 3, 1, 10, minute, tzinfo=UTC)
    repo.executions.save(run_id, ExecutionResult(run_id, "completed", started))


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repo = Repository.init(str(tmp_path / "repo"))
    save_run(repo, RUN_A, {
        "kept": {"same": True}, "findings": {"findings": BEFORE}, "gone": {"x": 1},
        "notes": {"text": "v1"},
    }, minute=0)  # fmt: skip
    save_run(repo, RUN_B, {
        "kept": {"same": True}, "findings": {"findings": AFTER}, "new": {"y": 22},
        "notes": {"text": "v2, longer"},
    }, minute=5)  # fmt: skip
    return repo


def cas(repo: Repository, *args: str) -> Result:
    return CliRunner().invoke(app, ["--repo", repo.url, *args])


def test_artifacts_are_classified_by_digest(repo: Repository) -> None:
    found = diff_runs(repo, RUN_A, RUN_B)
    kinds = {change.artifact_id: change.kind for change in found.artifacts}
    assert kinds == {
        "findings": "changed", "gone": "removed", "kept": "unchanged", "new": "added",
        "notes": "changed",
    }  # fmt: skip
    assert found.counts() == {"added": 1, "removed": 1, "changed": 2, "unchanged": 1}
    notes = next(change for change in found.artifacts if change.artifact_id == "notes")
    entries_a, entries_b = repo.artifacts.entries(RUN_A), repo.artifacts.entries(RUN_B)
    assert (notes.size_a, notes.size_b) == (entries_a["notes"].size, entries_b["notes"].size)
    assert notes.digest_a == entries_a["notes"].digest.hex != notes.digest_b
    gone = next(change for change in found.artifacts if change.artifact_id == "gone")
    assert gone.digest_b is None and gone.size_b is None and gone.size_a is not None


def test_findings_added_removed_and_moved(repo: Repository) -> None:
    (found,) = diff_runs(repo, RUN_A, RUN_B).findings  # notes is not findings-shaped
    assert found.artifact_id == "findings"
    assert [(f.file, f.line) for f in found.added] == [("new.txt", 1)]
    assert [(f.file, f.line) for f in found.removed] == [("old.txt", 2)]
    assert [(m.finding.file, m.line_a, m.finding.line) for m in found.moved] == [
        (".env", 6, 8),
        ("twice.txt", 20, 30),
    ]
    assert found.unchanged == 2


def test_same_run_has_no_changes(repo: Repository) -> None:
    found = diff_runs(repo, RUN_A, RUN_A)
    assert found.counts() == {"added": 0, "removed": 0, "changed": 0, "unchanged": 4}
    assert found.findings == ()


def test_extra_copies_of_a_finding_are_added_or_removed() -> None:
    one = Finding("f", "email", "email", "x", line=1)
    found = diff_findings("a", [one], [one, Finding("f", "email", "email", "x", line=9)])
    assert [f.line for f in found.added] == [9]
    assert (found.unchanged, found.moved, found.removed) == (1, (), ())
    found = diff_findings("a", [one, Finding("f", "email", "email", "x", line=9)], [])
    assert [f.line for f in found.removed] == [1, 9]


def test_a_different_column_on_the_same_line_is_a_move() -> None:
    old = Finding("f", "email", "email", "x", line=3, column=1)
    new = Finding("f", "email", "email", "x", line=3, column=7)
    (moved,) = diff_findings("a", [old], [new]).moved
    assert (moved.line_a, moved.column_a, moved.finding.column) == (3, 1, 7)


@pytest.mark.parametrize("content", [
    {"findings": "many"},
    {"findings": [{"file": "f", "line": "3", "category": "c", "rule": "r", "evidence": "e"}]},
    {"findings": [{"file": "f", "line": 3, "category": "c", "rule": "r"}]},
    {"findings": [42]},
    {"rows": []},
])  # fmt: skip
def test_content_that_is_not_findings_shaped(content: dict[str, Any]) -> None:
    assert findings_of(content) is None


def test_findings_without_a_column_are_accepted() -> None:
    item = {"file": "f", "line": 3, "category": "c", "rule": "r", "evidence": "e"}
    assert findings_of({"findings": [item]}) == [Finding("f", "c", "r", "e", 3, None)]


def test_cli_text(repo: Repository) -> None:
    result = cas(repo, "diff", RUN_A, "latest")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "diff run-a → run-b",
        "artifacts  1 added, 1 removed, 2 changed, 1 unchanged",
    ]
    assert lines[2].startswith("  ~ findings  ")
    assert lines[3] == "  - gone      33 B"
    assert lines[4] == "  = kept"
    assert lines[5] == "  + new       34 B"
    assert lines[7:] == [
        "findings in findings: 1 added, 1 removed, 2 moved, 2 unchanged",
        "  + new.txt:1  email  email  n***@e.com",
        "  - old.txt:2  iban  iban  DE** 00",
        "  > .env:6 → 8  phone  phone_uk  +44 **21",
        "  > twice.txt:20 → 30  email  email  t***@e.com",
    ]


def test_cli_json_and_prefixes(repo: Repository) -> None:
    result = cas(repo, "diff", "run-a", "run-b", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body == diff_runs(repo, RUN_A, RUN_B).to_dict()
    assert body["counts"]["changed"] == 2
    assert body["findings"][0]["moved"][0] == {
        **finding(".env", 8, "phone_uk", "+44 **21"), "line_a": 6, "column_a": 1,
    }  # fmt: skip


def test_cli_unknown_run_exits_3(repo: Repository) -> None:
    result = cas(repo, "diff", RUN_A, "nope")
    assert result.exit_code == 3
    assert result.stderr == f"cas: error: no run 'nope' in {repo.url}\n"
    result = cas(repo, "diff", RUN_A, "nope", "--json")
    assert json.loads(result.stderr)["error"]["exit_code"] == 3


def test_cli_ambiguous_prefix_exits_2(repo: Repository) -> None:
    assert cas(repo, "diff", "run", "run-b").exit_code == 2
