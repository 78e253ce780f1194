"""`cas run` and `cas explain`: summaries, exit codes, caching, resume, runbook errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from cas import plugins
from cas.cli import app
from cas.cli_run import StepDisplay, findings_count
from cas.connectors import FilesystemConnector
from cas.planner import plan
from cas.repository import Repository
from cas.runbook import parse_runbook

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "scan.yaml"
DATA = ROOT / "examples" / "data"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a copy of the example runbook, data from examples/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(DATA))
    monkeypatch.delenv("CAS_REPO", raising=False)
    shutil.copy(EXAMPLE, tmp_path / "scan.yaml")
    return tmp_path


def cas(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def run_json(*args: str, code: int = 0) -> dict[str, Any]:
    result = cas("run", *args, "--json")
    assert result.exit_code == code, result.output
    assert result.stderr == ""
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def outcomes(body: dict[str, Any]) -> dict[str, str]:
    return {step["artifact"]: step["outcome"] for step in body["steps"]}


def edit_runbook(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# run ------------------------------------------------------------------------------------


def test_second_run_reuses_processors_and_writes_nothing(work: Path) -> None:
    first = run_json("scan.yaml")
    assert first["status"] == "completed"
    assert outcomes(first) == {"file_content": "done", "findings": "done", "summary": "done"}
    assert first["new_objects"] == 3
    assert first["bytes_written"] > 0
    assert first["findings"] > 0

    second = run_json("scan.yaml")
    assert second["run_id"] != first["run_id"]
    assert outcomes(second) == {"file_content": "done", "findings": "reused", "summary": "reused"}
    assert second["reused"] == ["findings", "summary"]
    assert (second["new_objects"], second["bytes_written"]) == (0, 0)
    assert second["findings"] == first["findings"]
    assert {s["reused_from"] for s in second["steps"] if s["outcome"] == "reused"} == {
        first["run_id"]
    }
    assert second["next"] == f"cas inspect {second['run_id']}"


def test_text_summary(work: Path) -> None:
    first = run_json("scan.yaml")
    result = cas("run", "scan.yaml")
    assert result.exit_code == 0
    assert result.stderr == ""  # no progress display when stderr is not a terminal
    lines = result.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert lines[1] == "status    completed"
    assert lines[2].startswith("  ✓ file_content  done in ")
    reused = f"reused from run {first['run_id']} ({first['findings']} findings)"
    assert lines[3] == f"  ↺ findings      {reused}"
    assert lines[4] == f"  ↺ summary       {reused}"
    assert lines[5:] == [
        f"findings  {first['findings']}",
        "written   0 new objects (0 B), 2 steps reused",
        f"next      cas inspect {run_id}",
    ]


def test_no_cache_runs_every_step(work: Path) -> None:
    run_json("scan.yaml")
    again = run_json("scan.yaml", "--no-cache")
    assert set(outcomes(again).values()) == {"done"}
    assert again["reused"] == []
    assert again["new_objects"] == 0  # same outputs: stored once


def test_runbook_error_is_one_line_and_writes_nothing(work: Path) -> None:
    edit_runbook(work / "scan.yaml", "inputs: [file_content]", "inputs: [file_contnet]")
    result = cas("run", "scan.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "cas: error: scan.yaml: artifacts.findings.inputs: unknown artifact 'file_contnet' "
        "(did you mean 'file_content'?)\n"
    )
    assert not (work / ".waivern").exists()


def test_runbook_error_under_json_is_json_on_stderr(work: Path) -> None:
    result = cas("run", "missing.yaml", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"] == {
        "type": "RunbookError",
        "message": "missing.yaml: runbook file not found",
        "exit_code": 2,
    }


def test_run_needs_a_runbook_or_resume(work: Path) -> None:
    result = cas("run")
    assert result.exit_code == 2
    assert result.stderr == "cas: error: give a RUNBOOK, or --resume RUN to continue a run\n"


def test_failed_step_exits_1_and_resume_finishes_the_run(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = work / "later"
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(data))
    failed = run_json("scan.yaml", code=1)
    assert failed["status"] == "failed"
    assert outcomes(failed) == {
        "file_content": "failed",
        "findings": "skipped",
        "summary": "skipped",
    }
    assert failed["steps"][0]["error"] == f"InvalidInputError: path not found: {data}"
    assert failed["steps"][1]["reason"] == "input 'file_content' failed"
    text = cas("run", "scan.yaml")
    assert text.exit_code == 1
    assert f"  ✗ file_content  failed: InvalidInputError: path not found: {data}" in text.stdout
    assert "  \u2013 findings      skipped: input 'file_content' failed" in text.stdout

    shutil.copytree(DATA, data)
    resumed = run_json("--resume", failed["run_id"])  # the stored runbook, no RUNBOOK argument
    assert resumed["run_id"] == failed["run_id"]
    assert resumed["resumed"] is True
    assert resumed["status"] == "completed"
    assert set(outcomes(resumed).values()) == {"done"}


def test_resume_of_completed_run_keeps_it_completed(work: Path) -> None:
    first = run_json("scan.yaml")
    resumed = run_json("--resume", "latest")
    assert resumed["run_id"] == first["run_id"]
    assert resumed["status"] == "completed"
    assert set(outcomes(resumed).values()) == {"kept"}
    assert resumed["new_objects"] == 0
    repo = Repository.open(".waivern")
    assert repo.run_ids() == [first["run_id"]]
    assert repo.executions.get(first["run_id"]).status == "completed"
    assert cas("run", "scan.yaml", "--resume", first["run_id"][:8]).exit_code == 0


def test_resume_unknown_run_exits_3(work: Path) -> None:
    run_json("scan.yaml")
    result = cas("run", "--resume", "nope")
    assert result.exit_code == 3
    assert result.stderr.startswith("cas: error: no run 'nope' in ")


class SelfInterrupting(FilesystemConnector):
    """A source that sends the process SIGINT, as Ctrl-C would, then takes its time."""

    type: ClassVar[str] = "interrupting"

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        return super().extract(properties)


def test_interrupted_run_exits_130(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"filesystem": FilesystemConnector, "interrupting": SelfInterrupting}
    monkeypatch.setattr(plugins, "connectors", lambda: installed)
    edit_runbook(work / "scan.yaml", "type: filesystem", "type: interrupting")
    body = run_json("scan.yaml", code=130)
    assert body["status"] == "interrupted"
    assert body["error"] == "interrupted by SIGINT"
    assert set(outcomes(body).values()) == {"skipped"}


def test_findings_count() -> None:
    assert findings_count({"summary": {"findings": 4}, "findings": [1]}) == 4
    assert findings_count({"findings": [1, 2]}) == 2
    assert findings_count({"findings": 3}) == 3
    assert findings_count({"findings": True}) is None
    assert findings_count({"files": []}) is None


def test_step_display_renders_one_line_per_step() -> None:
    runbook = parse_runbook(EXAMPLE.read_text(), env={"CAS_EXAMPLE_DATA": str(DATA)})
    display = StepDisplay(plan(runbook), enabled=True)
    display.event("start", "file_content", "filesystem")
    display.event("done", "file_content", "0ff82be7f40a")
    display.event("start", "findings", "personal_data")
    out = Console(file=io.StringIO(), width=100, color_system=None)
    out.print(display)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].split() == ["✓", "file_content", "filesystem", "done", "0ff82be7f40a"]
    assert lines[1].split()[1:] == ["findings", "personal_data", "running"]
    assert lines[2].split() == ["summary", "summary", "waiting"]
    display.event("reused", "findings", "55ac7058d874")
    display.event("failed", "summary", "ValueError: bad")
    out.print(display)
    lines = out.file.getvalue().splitlines()[3:]  # type: ignore[attr-defined]
    assert lines[1].split() == ["↺", "findings", "personal_data", "reused", "55ac7058d874"]
    assert lines[2].split() == ["✗", "summary", "summary", "failed:", "ValueError:", "bad"]


# explain --------------------------------------------------------------------------------


def explain_json(*args: str) -> dict[str, Any]:
    result = cas("explain", *args, "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_explain_first_run_sources_and_reuse(work: Path) -> None:
    first = run_json("scan.yaml")
    assert explain_json("latest", "findings")["reason"] == (
        "first run of this step: no earlier run has it"
    )
    source = explain_json("latest", "file_content")
    assert source["verdict"] == "ran"
    assert source["reason"] == "sources always run (the connector is not cacheable)"
    run_json("scan.yaml")
    reused = explain_json("latest", "summary")
    assert reused["verdict"] == "reused"
    assert reused["reused_from"] == first["run_id"]
    assert reused["reason"] == (
        f"reused output of run {first['run_id']} (same plugin, version, properties and inputs)"
    )


def test_explain_no_cache_run(work: Path) -> None:
    first = run_json("scan.yaml")
    run_json("scan.yaml", "--no-cache")
    body = explain_json("latest", "findings")
    assert body["verdict"] == "ran"
    assert body["compared_with"] == first["run_id"]
    assert "--no-cache" in body["reason"]


def test_explain_names_the_changed_property_and_input(work: Path) -> None:
    runbook = work / "scan.yaml"
    edit_runbook(runbook, "type: personal_data", "type: personal_data\n      properties: {}")
    edit_runbook(runbook, "properties: {}", "properties: {categories: [email, phone]}")
    first = run_json("scan.yaml")
    edit_runbook(runbook, "[email, phone]", "[email]")
    run_json("scan.yaml")

    result = cas("explain", "latest", "findings")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1:] == [
        f"  changed since run {first['run_id']}:",
        '  - property \'categories\' changed: ["email","phone"] → ["email"]',
    ]
    [change] = explain_json("latest", "findings")["changes"]
    assert change == {
        "kind": "property",
        "name": "categories",
        "change": "changed",
        "old": ["email", "phone"],
        "new": ["email"],
    }
    [upstream] = explain_json("latest", "summary")["changes"]
    assert (upstream["kind"], upstream["name"], upstream["change"]) == (
        "input",
        "findings",
        "changed",
    )
    assert upstream["old"] != upstream["new"]


def test_explain_failed_and_skipped(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(work / "nowhere"))
    run_json("scan.yaml", code=1)
    failed = explain_json("latest", "file_content")
    assert failed["verdict"] == "failed"
    assert failed["reason"] == f"failed: InvalidInputError: path not found: {work / 'nowhere'}"
    skipped = explain_json("latest", "summary")
    assert skipped["verdict"] == "skipped"
    assert skipped["reason"] == "skipped: input 'file_content' failed"


def test_explain_unknown_step_exits_3(work: Path) -> None:
    first = run_json("scan.yaml")
    result = cas("explain", "latest", "nope")
    assert result.exit_code == 3
    assert result.stderr == f"cas: error: run '{first['run_id']}' has no step 'nope'\n"


# end to end: the installed console script ---------------------------------------------------


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("cas")
    if script is None:
        pytest.skip("the cas console script is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if k not in {"CAS_REPO", "CAS_DEBUG"}}
    env["CAS_EXAMPLE_DATA"] = str(DATA)
    return subprocess.run(
        [script, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.slow
def test_console_script_runs_twice_and_explains(tmp_path: Path) -> None:
    runbook = str(EXAMPLE)
    first = run_script("run", runbook, "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_script("run", runbook, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "written   0 new objects (0 B), 2 steps reused" in second.stdout
    run_id = json.loads(first.stdout)["run_id"]
    why = run_script("explain", "latest", "findings", cwd=tmp_path)
    assert why.returncode == 0
    assert f"reused output of run {run_id}" in why.stdout
    shown = run_script("inspect", "latest", "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["result"]["status"] == "completed"


@pytest.mark.slow
def test_console_script_runbook_error(tmp_path: Path) -> None:
    (tmp_path / "scan.yaml").write_text(
        EXAMPLE.read_text().replace("inputs: [file_content]", "inputs: [file_contnet]")
    )
    result = run_script("run", "scan.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "cas: error: scan.yaml: artifacts.findings.inputs: unknown artifact 'file_contnet' "
        "(did you mean 'file_content'?)\n"
    )
    assert not (tmp_path / ".waivern").exists()
