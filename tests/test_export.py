"""Exporters: golden files for each format, determinism, --outputs-only, errors, hostile text.

The run is saved by hand with fixed ids, times and contents, so every export of
it is byte-for-byte predictable. Set ``CAS_UPDATE_GOLDEN=1`` to rewrite the
golden files in ``tests/fixtures/export/`` after an intended format change (and
read the diff before committing it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.errors import InvalidInputError
from cas.export import FORMAT, document, export_run, exporter, exporters, load_run
from cas.export_markdown import code, text
from cas.model import ArtifactOutcome, ExecutionInfo, ExecutionResult, Message, SchemaRef
from cas.repository import RUNBOOK, Repository
from cas.stores import run_key
from cas.testing.services import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
)  # fmt: skip
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "export"
RUN_ID = "20250301T101502Z-golden"
START = datetime(2025, 3, 1, 10, 15, 2, tzinfo=UTC)
HOSTILE_FILE = 'uploads/a"><img src=x onerror=alert(1)>.txt'
HOSTILE_EVIDENCE = "<script>alert('x')</script> | `tick`"
FINDINGS = [
    {"file": "src/app.py", "line": 12, "column": 5, "category": "email", "rule": "email",
     "evidence": "a***@e******.com"},
    {"file": "src/app.py", "line": 3, "column": 1, "category": "phone", "rule": "phone_uk",
     "evidence": "+44 ** **** **21"},
    {"file": HOSTILE_FILE, "line": 1, "column": 1, "category": "email", "rule": "email",
     "evidence": HOSTILE_EVIDENCE},
    {"file": "data/customers.csv", "line": 7, "column": 22, "category": "iban", "rule": "iban",
     "evidence": "DE** **** **** **** **30 00"},
]  # fmt: skip
RUNBOOK_TEXT = """\
name: golden
artifacts:
  files:
    source:
      type: filesystem
      properties:
        path: ${CAS_GOLDEN_DATA:-data}
  findings:
    inputs: [files]
    process:
      type: personal_data
    output: true
  broken:
    inputs: [files]
    process:
      type: summary
    output: true
  report:
    inputs: [broken]
    process:
      type: summary
"""


def save_golden_run(repo: Repository, *, runbook: bool = True) -> str:
    """A finished `partial` run: two saved artifacts, one failed, one skipped."""
    at = START.replace(microsecond=250000)
    repo.artifacts.save(RUN_ID, "files", Message(
        id="files", content={"files": [{"path": "src/app.py", "content": "x"}]},
        schema=SchemaRef("golden_files", "1.0.0"), source="filesystem", timestamp=at,
        execution=ExecutionInfo(duration_seconds=0.5),
    ))  # fmt: skip
    repo.artifacts.save(RUN_ID, "findings", Message(
        id="findings", content={"findings": FINDINGS, "summary": {"findings": 4}},
        schema=SchemaRef("golden_findings", "1.0.0"), source="personal_data", timestamp=at,
        context={"tenant": "<b>acme</b>"}, execution=ExecutionInfo(duration_seconds=1.25),
    ))  # fmt: skip
    if runbook:
        repo.backend.write(run_key(RUN_ID, RUNBOOK), RUNBOOK_TEXT.encode())
    outcomes = {
        "files": ArtifactOutcome("completed", duration_seconds=0.5),
        "findings": ArtifactOutcome("completed", duration_seconds=1.25, cached_from="run-0"),
        "broken": ArtifactOutcome(
            "failed", error_type="ValueError", error_message="bad <input> | here"
        ),
        "report": ArtifactOutcome("skipped", reason="input 'broken' failed"),
    }
    result = ExecutionResult(
        RUN_ID, "partial", START, runbook="golden", ended_at=START.replace(second=5),
        duration_seconds=3.0, artifacts=outcomes, error=None,
    )  # fmt: skip
    repo.executions.save(RUN_ID, result)
    return RUN_ID


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repo = Repository.init(str(tmp_path / "repo"))
    save_golden_run(repo)
    return repo


def cas(repo: Repository, *args: str) -> Result:
    return CliRunner().invoke(app, ["--repo", repo.url, *args])


def check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("CAS_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data.decode() == path.read_text(encoding="utf-8"), f"{name} differs from its golden"


@pytest.mark.parametrize(("name", "golden"), [
    ("json", "run.json"), ("markdown", "run.md"), ("html", "run.html"),
])  # fmt: skip
def test_export_matches_golden_file(repo: Repository, name: str, golden: str) -> None:
    check_golden(golden, export_run(repo, RUN_ID, name))


@pytest.mark.parametrize("name", ["json", "markdown", "html"])
def test_exporting_twice_gives_the_same_bytes(repo: Repository, name: str) -> None:
    first = cas(repo, "export", RUN_ID, "--format", name)
    second = cas(repo, "export", "latest", "--format", name)
    assert first.exit_code == 0, first.output
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stdout_bytes == export_run(repo, RUN_ID, name)


def test_json_document_shape(repo: Repository) -> None:
    body = json.loads(export_run(repo, RUN_ID, "json"))
    assert body["format"] == FORMAT == "cas-export/1"
    assert set(body) == {"format", "run", "summary", "outputs", "errors", "skipped"}
    assert body["run"]["status"] == "partial"
    assert body["summary"] == {
        "artifacts": 2, "exported": 2, "outputs_only": False, "completed": 2, "failed": 1,
        "skipped": 1, "findings": 4, "findings_by_category": {"email": 2, "iban": 1, "phone": 1},
    }  # fmt: skip
    assert [o["artifact"] for o in body["outputs"]] == ["files", "findings"]
    assert [o["output"] for o in body["outputs"]] == [False, True]
    assert body["outputs"][1]["message"]["content"]["findings"] == FINDINGS
    assert body["errors"] == [
        {"artifact": "broken", "error_type": "ValueError", "message": "bad <input> | here"}
    ]
    assert body["skipped"] == [{"artifact": "report", "reason": "input 'broken' failed"}]


def test_outputs_only_keeps_artifacts_the_runbook_marks(repo: Repository) -> None:
    result = cas(repo, "export", RUN_ID, "--outputs-only")
    body = json.loads(result.stdout)
    assert [o["artifact"] for o in body["outputs"]] == ["findings"]
    assert body["summary"]["exported"] == 1
    assert body["summary"]["outputs_only"] is True
    markdown = export_run(repo, RUN_ID, "markdown", outputs_only=True).decode()
    assert "## Outputs" in markdown
    assert "`files`" not in markdown


def test_without_a_stored_runbook_every_artifact_is_an_output(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    save_golden_run(repo, runbook=False)
    data = load_run(repo, RUN_ID, outputs_only=True)
    assert data.outputs is None
    assert sorted(data.messages) == ["files", "findings"]


def test_the_runbook_is_read_without_the_callers_environment(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = export_run(repo, RUN_ID, "json")
    monkeypatch.setenv("CAS_GOLDEN_DATA", "/elsewhere")
    assert export_run(repo, RUN_ID, "json") == before


def test_output_file_is_written_and_stdout_says_where(repo: Repository, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = cas(repo, "export", RUN_ID[:8], "-f", "html", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported run {RUN_ID} as html to {target} (")
    assert target.read_bytes() == export_run(repo, RUN_ID, "html")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_unknown_format_exits_2_with_one_line_naming_the_choices(repo: Repository) -> None:
    result = cas(repo, "export", RUN_ID, "--format", "xml")
    assert result.exit_code == 2
    assert result.stderr == (
        "cas: error: unknown export format 'xml': expected one of html, json, markdown\n"
    )
    assert result.stdout == ""


def test_unknown_format_is_refused_before_the_run_is_looked_up(repo: Repository) -> None:
    assert cas(repo, "export", "no-such-run", "--format", "pdf").exit_code == 2


def test_unknown_run_exits_3(repo: Repository) -> None:
    result = cas(repo, "export", "no-such-run", "--format", "html")
    assert result.exit_code == 3
    assert result.stderr == f"cas: error: no run 'no-such-run' in {repo.url}\n"


def test_registry_names_and_errors() -> None:
    assert sorted(exporters()) == ["html", "json", "markdown"]
    assert exporter("html").suffix == ".html"
    with pytest.raises(InvalidInputError, match="unknown export format 'csv'"):
        exporter("csv")


def test_html_escapes_hostile_content(repo: Repository) -> None:
    page = export_run(repo, RUN_ID, "html").decode()
    assert page.count("<script") == 1  # only the page's own script
    assert "<img" not in page
    assert "<b>acme" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.txt" in page
    assert "http://" not in page and "https://" not in page  # no external asset


def test_markdown_keeps_hostile_content_in_code_spans(repo: Repository) -> None:
    report = export_run(repo, RUN_ID, "markdown").decode()
    row = next(line for line in report.splitlines() if "script" in line)
    assert "| `` <script>alert('x')</script> \\| `tick` `` |" in row
    assert row.count(" | ") == 5  # six cells: the evidence's own | is escaped
    assert "bad \\<input\\> \\| here" in report


def test_markdown_cell_helpers() -> None:
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"
    assert code("a|b\nc") == "`a\\|b c`"
    assert text("*x* [y](z) <i>") == "\\*x\\* \\[y\\](z) \\<i\\>"
    assert text(None) == code(None) == "-"


def test_document_of_a_run_without_a_result(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.artifacts.save("bare", "notes", Message(id="notes", content={"n": 1}))
    body = document(load_run(repo, "bare"))
    assert body["run"]["status"] == "no-result"
    assert body["summary"]["completed"] == 0
    assert body["errors"] == body["skipped"] == []
    assert b"No findings." in export_run(repo, "bare", "html")


# a real browser -------------------------------------------------------------------------


def chromium() -> str:
    """The Chromium binary, or a skip (a failure under CAS_REQUIRE_SERVICES=1) naming the fix."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if found is None:
        skip_or_fail(
            f"Chromium not found ({CHROMIUM} or 'chromium' on PATH): the HTML export is checked "
            "in a real browser; install it with: apt-get install chromium"
        )
    return found


def browse(page: Path, profile: Path, *action: str, fragment: str = "") -> str:
    """Load `page` in headless Chromium with `action` (``--dump-dom``, ``--screenshot=…``)."""
    url = page.as_uri() + (f"#{urllib.parse.urlencode(fragment_of(fragment))}" if fragment else "")
    done = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def fragment_of(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split("&"))


def visible_rows(dom: str) -> list[list[str]]:
    """Cells of the findings rows the script left visible, in page order."""
    body = dom.split('<table id="findings-table">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr ([^>]*)>(.*?)</tr>", body, flags=re.DOTALL)
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", cells) for attrs, cells in rows if "hidden" not in attrs
    ]


@pytest.fixture
def page(repo: Repository, tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_bytes(export_run(repo, RUN_ID, "html"))
    return path


def test_html_report_renders_in_chromium(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile", f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1280, 900)
    assert len(png) > 20_000  # a blank page compresses to a few kB


def test_html_script_runs_and_nothing_hostile_becomes_markup(page: Path, tmp_path: Path) -> None:
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert re.search(r'<html[^>]* data-shown="4"', dom)
    assert 'data-ready="1"' in dom  # the script ran: the CSP hash matches it
    assert "<img" not in dom
    assert dom.count("<script") == 1
    assert len(visible_rows(dom)) == 4
    assert visible_rows(dom)[0][0] == "data/customers.csv"


def test_html_sorts_and_filters_from_the_fragment(page: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    dom = browse(page, profile, "--dump-dom", fragment="category=email&sort=line&order=desc")
    rows = visible_rows(dom)
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("src/app.py", "12", "email"),
        ('uploads/a"&gt;&lt;img src=x onerror=alert(1)&gt;.txt', "1", "email"),
    ]
    assert 'aria-sort="descending"><button type="button">line' in dom
    dom = browse(page, profile, "--dump-dom", fragment="q=<SCRIPT>&sort=file")
    assert [row[5] for row in visible_rows(dom)] == [
        "&lt;script&gt;alert('x')&lt;/script&gt; | `tick`"
    ]
