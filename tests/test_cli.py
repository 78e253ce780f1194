"""The `cas` command line: exit codes, exact messages, JSON purity, help and docs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from cas.cli import app, exit_code
from cas.digest import Digest
from cas.errors import (
    AmbiguousError,
    CasError,
    ConflictError,
    IntegrityError,
    InvalidContentError,
    InvalidIdError,
    NotFoundError,
    RepositoryError,
    SchemaValidationError,
)
from cas.model import ArtifactOutcome, ExecutionResult, Message, SchemaRef
from cas.objects import compress, decompress
from cas.repository import Repository

ROOT = Path(__file__).resolve().parent.parent
ID_RULE_MESSAGE = (
    "expected 1-128 characters of letters, digits, '.', '_' or '-', "
    "starting with a letter, digit or '_', not ending with '.', without '..'"
)


def cas(repo: Path, *args: str) -> Result:
    """Run ``cas --repo REPO ARGS`` in-process."""
    return CliRunner().invoke(app, ["--repo", str(repo), *args])


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def saved(repo_path: Path) -> Repository:
    """A repository holding two hand-saved runs (see `save_scan`)."""
    repo = Repository.init(str(repo_path))
    save_scan(repo, FILES)
    save_scan(repo, {**FILES, "README.md": FILES["README.md"] + "Now with gift cards.\n"})
    return repo


FILES = {
    "app/models.py": "class User:\n    email: str\n    phone: str\n",
    "README.md": "# Shop\nContact: support@example.com\n",
}
FINDINGS = [
    {"category": "email", "file": "app/models.py", "line": 2},
    {"category": "phone", "file": "app/models.py", "line": 3},
]
SKIPPED_REASON = "no data subject rules in this runbook"


def save_scan(repo: Repository, files: dict[str, str]) -> str:
    """Save a scan-like run by hand: three artifacts, a skipped fourth, then the result.

    Runs that differ only in `files` share the `findings` and `summary` objects. The
    schemas are ones no package ships, so the hand-made content is stored unvalidated.
    """
    run_id = f"run-{len(repo.run_ids()) + 1}"
    listing = [{"path": path, "content": text} for path, text in sorted(files.items())]
    artifacts: list[tuple[str, SchemaRef | None, dict[str, Any]]] = [
        ("file_content", SchemaRef("file_listing", "1.0.0"), {"files": listing}),
        ("findings", SchemaRef("personal_data_finding", "1.0.0"), {"findings": FINDINGS}),
        ("summary", None, {"total_findings": len(FINDINGS)}),
    ]
    started = datetime.now(UTC)
    for artifact_id, schema, content in artifacts:
        message = Message(id=artifact_id, content=content, schema=schema, timestamp=started)
        repo.artifacts.save(run_id, artifact_id, message)
    outcomes = {artifact_id: ArtifactOutcome("completed") for artifact_id, _, _ in artifacts}
    outcomes["data_subjects"] = ArtifactOutcome("skipped", reason=SKIPPED_REASON)
    result = ExecutionResult(run_id, "completed", started, "synthetic", started, 0.01, outcomes)
    repo.executions.save(run_id, result)
    return run_id


def save_run(repo: Repository, run_id: str, artifacts: dict[str, dict[str, Any]]) -> None:
    for artifact_id, content in artifacts.items():
        repo.artifacts.save(run_id, artifact_id, Message(id=artifact_id, content=content))
    started = datetime.now(UTC)
    repo.executions.save(run_id, ExecutionResult(run_id, "completed", started))


def latest(repo: Repository) -> str:
    return repo.runs()[0].run_id


def corrupt(repo: Repository, digest: Digest) -> Digest:
    """Flip one byte of an object's content (kept a valid zstd frame); return its new hash."""
    path = Path(repo.url) / repo.objects.key(digest)
    data = bytearray(decompress(path.read_bytes(), digest, str(path)))
    data[3] ^= 0x01
    path.write_bytes(compress(bytes(data)))
    return Digest.of(bytes(data))


# exit codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidIdError("run id", "../x", "a rule"), 2),
        (InvalidContentError("$.a", "NaN"), 2),
        (SchemaValidationError("s/1", "$", "bad"), 2),
        (AmbiguousError("two"), 2),
        (NotFoundError("gone"), 3),
        (IntegrityError("bad bytes"), 4),
        (ConflictError("different"), 5),
        (RepositoryError("none"), 6),
        (CasError("other"), 1),
        (RuntimeError("bug"), 1),
    ],
)
def test_exit_code_table(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_no_repository_exits_6(repo_path: Path) -> None:
    result = cas(repo_path, "runs")
    assert result.exit_code == 6
    assert result.stdout == ""
    assert result.stderr == (
        f"cas: error: no repository at '{repo_path}': "
        "run 'cas init' first (or set --repo / CAS_REPO)\n"
    )


def test_not_found_run_exits_3(saved: Repository, repo_path: Path) -> None:
    result = cas(repo_path, "inspect", "nope")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == f"cas: error: no run 'nope' in {saved.url}\n"


def test_not_found_artifact_exits_3(saved: Repository, repo_path: Path) -> None:
    run_id = latest(saved)
    result = cas(repo_path, "inspect", run_id, "nope")
    assert result.exit_code == 3
    assert result.stderr == f"cas: error: run '{run_id}' has no artifact 'nope'\n"


def test_ambiguous_prefix_exits_2(repo_path: Path) -> None:
    repo = Repository.init(str(repo_path))
    save_run(repo, "run-a1", {"x": {"n": 1}})
    save_run(repo, "run-a2", {"x": {"n": 2}})
    result = cas(repo_path, "inspect", "run-a")
    assert result.exit_code == 2
    assert result.stderr == "cas: error: run prefix 'run-a' matches 2 runs: run-a1, run-a2\n"
    assert cas(repo_path, "inspect", "run-a2").exit_code == 0


def test_invalid_run_id_exits_2(saved: Repository, repo_path: Path) -> None:
    for command in (["inspect", "../x"], ["verify", "../x"]):
        result = cas(repo_path, *command)
        assert result.exit_code == 2
        assert result.stderr == f"cas: error: invalid run id '../x': {ID_RULE_MESSAGE}\n"


def test_invalid_digest_prefix_exits_2(saved: Repository, repo_path: Path) -> None:
    result = cas(repo_path, "cat", "zz")
    assert result.exit_code == 2
    assert result.stderr == (
        "cas: error: invalid digest prefix 'zz': expected 4-64 hex characters\n"
    )


def test_unexpected_error_is_one_line_exit_1(
    saved: Repository, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Repository, query: object = None) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Repository, "list_runs", boom)
    result = cas(repo_path, "runs")
    assert result.exit_code == 1
    assert result.stderr == (
        "cas: error: unexpected RuntimeError: boom second line (set CAS_DEBUG=1 for a traceback)\n"
    )


def test_usage_error_exits_2(repo_path: Path) -> None:
    result = cas(repo_path, "inspect")
    assert result.exit_code == 2
    assert "Missing argument 'RUN'" in result.stderr


def test_content_without_artifact_exits_2(saved: Repository, repo_path: Path) -> None:
    result = cas(repo_path, "inspect", "latest", "--content")
    assert result.exit_code == 2
    assert result.stderr == "cas: error: --content needs an ARTIFACT argument\n"


# integrity ------------------------------------------------------------------------------


def test_corrupt_object_fails_verify_and_inspect(saved: Repository, repo_path: Path) -> None:
    run_id = latest(saved)
    digest = saved.artifacts.entry(run_id, "file_content").digest
    actual = corrupt(saved, digest)
    detail = f"object {digest.hex} is corrupt: its bytes hash to {actual.hex}"

    result = cas(repo_path, "verify")
    assert result.exit_code == 4
    lines = result.stdout.splitlines()
    assert lines[0] == f"error: corrupt_object {digest.hex} (runs: {run_id}): {detail}"
    assert re.fullmatch(r"verified 2 runs, 4 objects \(\d+ B\): 1 problem", lines[1])
    assert result.stderr == "cas: error: verify found 1 problem\n"

    result = cas(repo_path, "inspect", run_id, "file_content")
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr == f"cas: error: {detail}\n"

    assert cas(repo_path, "cat", digest.hex[:10]).exit_code == 4


def test_verify_named_run_checks_only_it(saved: Repository, repo_path: Path) -> None:
    first = saved.runs()[-1].run_id
    digest = saved.artifacts.entry(latest(saved), "file_content").digest
    corrupt(saved, digest)  # only the second run uses this object
    result = cas(repo_path, "verify", first)
    assert result.exit_code == 0
    assert re.fullmatch(r"verified 1 run, 3 objects \(\d+ B\): OK\n", result.stdout)


def test_verify_stale_temporary_only_warns(saved: Repository, repo_path: Path) -> None:
    (repo_path / "objects" / ".leftover.abc.tmp").write_bytes(b"x")
    result = cas(repo_path, "verify")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].endswith(": OK, 1 warning")
    assert result.stdout.startswith("warning: stale_temp objects/.leftover.abc.tmp (runs: -): ")


# JSON output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--json"],
        ["runs", "--json", "--limit", "1"],
        ["inspect", "latest", "--json"],
        ["inspect", "latest", "findings", "--json"],
        ["inspect", "latest", "findings", "--content"],
        ["verify", "--json"],
        ["stats", "--json"],
        ["schema", "list", "--json"],
    ],
)
def test_json_output_is_only_json(saved: Repository, repo_path: Path, args: list[str]) -> None:
    result = cas(repo_path, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    json.loads(result.stdout)


def test_runs_json_lists_newest_first(saved: Repository, repo_path: Path) -> None:
    rows = json.loads(cas(repo_path, "runs", "--json").stdout)
    assert [row["run_id"] for row in rows] == [info.run_id for info in saved.runs()]
    assert rows[0]["status"] == "completed"
    assert rows[0]["artifacts"] == 3
    assert rows[0]["runbook"] == "synthetic"
    assert len(json.loads(cas(repo_path, "runs", "--json", "-n", "1").stdout)) == 1


def test_error_under_json_is_one_json_object_on_stderr(saved: Repository, repo_path: Path) -> None:
    result = cas(repo_path, "inspect", "nope", "--json")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert json.loads(result.stderr) == {
        "error": {
            "type": "NotFoundError",
            "message": f"no run 'nope' in {saved.url}",
            "exit_code": 3,
        }
    }


def test_verify_json_reports_problem_and_exits_4(saved: Repository, repo_path: Path) -> None:
    digest = saved.artifacts.entry(latest(saved), "findings").digest
    corrupt(saved, digest)
    result = cas(repo_path, "verify", "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["ok"] is False
    [problem] = report["problems"]
    assert problem["kind"] == "corrupt_object"
    assert problem["subject"] == digest.hex
    assert sorted(problem["runs"]) == sorted(info.run_id for info in saved.runs())
    assert json.loads(result.stderr)["error"]["exit_code"] == 4


def test_stats_json(saved: Repository, repo_path: Path) -> None:
    stats = json.loads(cas(repo_path, "stats", "--json").stdout)
    assert stats["runs"] == 2
    assert stats["artifacts"] == 6
    assert stats["objects"] == 4
    assert stats["logical_bytes"] > stats["stored_bytes"]
    assert stats["dedup_ratio"] > 1


# inspect, cat -------------------------------------------------------------------------


def test_inspect_run_json_lists_entries_and_skipped(saved: Repository, repo_path: Path) -> None:
    body = json.loads(cas(repo_path, "inspect", "latest", "--json").stdout)
    assert body["run_id"] == latest(saved)
    assert body["result"]["status"] == "completed"
    rows = {row["artifact"]: row for row in body["artifacts"]}
    assert list(rows) == ["file_content", "findings", "summary", "data_subjects"]
    assert rows["findings"]["schema"] == "personal_data_finding/1.0.0"
    assert rows["findings"]["validated"] == "unregistered schema"
    assert rows["summary"]["validated"] == "no schema"
    assert rows["summary"]["status"] == "completed"
    assert rows["data_subjects"]["status"] == "skipped"
    assert rows["data_subjects"]["digest"] is None
    assert rows["data_subjects"]["detail"] == SKIPPED_REASON


def test_inspect_run_table(saved: Repository, repo_path: Path) -> None:
    run_id = latest(saved)
    result = cas(repo_path, "inspect", run_id)
    assert result.exit_code == 0
    text = result.stdout
    assert f"run       {run_id}" in text
    assert "status    completed (3 completed, 1 skipped)" in text
    assert "runbook   synthetic" in text
    digest = saved.artifacts.entry(run_id, "findings").digest
    assert re.search(rf"findings .*personal_data_finding/1\.0\.0.*{digest.short}", text)
    assert re.search(r"data_subjects .*skipped.*no data subject rules", text)


def test_inspect_run_without_result(repo_path: Path) -> None:
    repo = Repository.init(str(repo_path))
    repo.artifacts.save("r1", "a", Message(id="a", content={"k": 1}))
    result = cas(repo_path, "inspect", "r1")
    assert result.exit_code == 0
    assert "no execution result saved" in result.stdout
    assert re.search(r"\ba .*saved.*no schema", result.stdout)


def test_inspect_artifact_prints_message(saved: Repository, repo_path: Path) -> None:
    run_id = latest(saved)
    message = saved.artifacts.get(run_id, "findings")
    result = cas(repo_path, "inspect", run_id, "findings")
    assert json.loads(result.stdout) == message.to_dict()
    assert result.stdout == json.dumps(message.to_dict(), indent=2, sort_keys=True) + "\n"
    content = cas(repo_path, "inspect", run_id, "findings", "--content")
    assert json.loads(content.stdout) == message.content


def test_cat_prints_exact_payload_bytes(saved: Repository, repo_path: Path) -> None:
    entry = saved.artifacts.entry(latest(saved), "summary")
    result = cas(repo_path, "cat", entry.digest.hex[:8])
    assert result.exit_code == 0
    assert result.stdout_bytes == saved.objects.get(entry.digest)
    assert Digest.of(result.stdout_bytes) == entry.digest


def test_cat_unknown_digest_exits_3(saved: Repository, repo_path: Path) -> None:
    prefix = next(p for p in ("0000", "ffff", "abcd") if cas(repo_path, "cat", p).exit_code == 3)
    result = cas(repo_path, "cat", prefix)
    assert result.stderr == f"cas: error: no object '{prefix}' in {saved.url}\n"


# init, schemas -------------------------------------------------------------------------------


def test_init_is_idempotent(repo_path: Path) -> None:
    first = cas(repo_path, "init")
    assert first.exit_code == 0
    assert first.stdout == f"created repository at {repo_path}\n"
    again = cas(repo_path, "init")
    assert again.exit_code == 0
    assert again.stdout == f"repository already exists at {repo_path}\n"


def test_default_location_is_waivern_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAS_REPO", raising=False)
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0
    assert (tmp_path / ".waivern" / "config.json").is_file()
    env = CliRunner().invoke(app, ["runs"], env={"CAS_REPO": str(tmp_path / "other")})
    assert env.exit_code == 6


def test_schema_add_list_and_conflict(saved: Repository, repo_path: Path, tmp_path: Path) -> None:
    schema = tmp_path / "finding.json"
    schema.write_text('{"type": "object", "required": ["findings"]}')
    args = ["schema", "add", str(schema), "--name", "personal_data_finding", "--version", "1.0.0"]
    added = cas(repo_path, *args)
    assert added.exit_code == 0
    assert added.stdout == f"registered schema personal_data_finding/1.0.0 from {schema}\n"
    again = cas(repo_path, *args)
    assert (
        again.stdout
        == "schema personal_data_finding/1.0.0 is already registered with this document\n"
    )
    listed = json.loads(cas(repo_path, "schema", "list", "--json").stdout)
    assert {"name": "personal_data_finding", "version": "1.0.0", "source": "repository"} in listed

    schema.write_text('{"type": "object", "required": ["other"]}')
    conflict = cas(repo_path, *args)
    assert conflict.exit_code == 5
    assert conflict.stderr == (
        "cas: error: schema personal_data_finding/1.0.0 is already registered "
        "with a different document\n"
    )


def test_schema_add_refuses_non_json(repo_path: Path, tmp_path: Path) -> None:
    cas(repo_path, "init")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = cas(repo_path, "schema", "add", str(bad), "--name", "s", "--version", "1")
    assert result.exit_code == 2
    assert result.stderr == f"cas: error: {bad} is not a JSON object\n"


def test_saves_validate_once_schema_registered(repo_path: Path, tmp_path: Path) -> None:
    cas(repo_path, "init")
    schema = tmp_path / "finding.json"
    schema.write_text('{"type": "object", "required": ["findings"]}')
    cas(
        repo_path,
        "schema",
        "add",
        str(schema),
        "--name",
        "personal_data_finding",
        "--version",
        "1.0.0",
    )
    save_scan(Repository.open(str(repo_path)), FILES)
    body = json.loads(cas(repo_path, "inspect", "latest", "--json").stdout)
    rows = {row["artifact"]: row for row in body["artifacts"]}
    assert rows["findings"]["validated"] == "yes"


# help and docs -----------------------------------------------------------------------------


def walk(command: Any, path: tuple[str, ...] = ("cas",)) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


def doc_sections() -> dict[str, str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    parts = re.split(r"^### `(cas[^`]*)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def documented_name(param: Any) -> list[str]:
    """How docs/cli.md names a parameter: its option flags, or an argument's metavar."""
    if param.param_type_name == "option":
        return [name for name in param.opts if name != "--help"]
    return [param.metavar or param.name.upper()]


def test_every_command_has_help_and_is_documented() -> None:
    sections = doc_sections()
    commands = list(walk(get_command(app)))
    assert len(commands) >= 10
    for path, command in commands:
        assert command.help, f"{path} has no help text"
        for param in command.params:
            assert getattr(param, "help", None), f"{path} {param.name} has no help text"
        if path == "cas" or hasattr(command, "commands"):
            continue  # the root option and groups are documented through their commands
        assert path in sections, f"{path} is not in docs/cli.md"
        for param in command.params:
            for name in documented_name(param):
                assert f"`{name}" in sections[path], f"{path}: {name} is not documented"


def test_exit_codes_are_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for code in (1, 2, 3, 4, 5, 6):
        assert re.search(rf"^\| {code} \|", text, flags=re.MULTILINE)


# end to end ------------------------------------------------------------------------------------


def run_cas(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in {"CAS_REPO", "CAS_DEBUG"}}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "cas.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_end_to_end_subprocess(tmp_path: Path) -> None:
    runbook = str(ROOT / "examples" / "scan.yaml")
    ran = run_cas("run", runbook, cwd=tmp_path, CAS_EXAMPLE_DATA=str(ROOT / "examples" / "data"))
    assert ran.returncode == 0, ran.stderr
    shown = run_cas("inspect", "latest", "--json", cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stderr == ""
    assert json.loads(shown.stdout)["result"]["runbook"] == "example-scan"
    missing = run_cas("inspect", "nope", cwd=tmp_path)
    assert missing.returncode == 3
    assert missing.stderr == f"cas: error: no run 'nope' in {tmp_path / '.waivern'}\n"
    assert "Traceback" not in missing.stderr


def test_help_does_not_import_heavy_modules(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from cas.cli import app\n"
        "heavy = {'cas.repository', 'jsonschema', 'pyarrow', 'fsspec'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"


def test_stats_separates_dedup_chunking_and_compression(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.payloads.threshold = 4096  # so a modest payload is chunked
    rows = [{"file": f"f{i}.txt", "text": "x" * 300 + str(i)} for i in range(60)]
    for run in ("r1", "r2"):
        repo.artifacts.save(run, "big", Message(id="big", content={"rows": rows}))
        rows = [*rows[:-1], {"file": "new.txt", "text": "changed"}]
    totals = json.loads(cas(tmp_path / "repo", "stats", "--json").stdout)
    assert totals["payloads"] == 2
    assert totals["dedup_ratio"] == 1.0  # two different payloads
    assert totals["chunk_dedup_ratio"] > 1.5  # ... that share most of their chunks
    assert totals["stored_bytes"] < totals["chunk_bytes"] < totals["chunked_bytes"]


def test_a_reader_that_goes_away_is_not_an_error(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.artifacts.save("r1", "big", Message(id="big", content={"x": ["y" * 100] * 20000}))
    digest = repo.artifacts.entry("r1", "big").digest.hex
    env = {key: value for key, value in os.environ.items() if key != "CAS_DEBUG"}
    done = subprocess.run(
        f"cas --repo {tmp_path / 'repo'} cat {digest} | head -c 5",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        executable="/bin/bash",
    )
    assert done.stdout == '{"con'
    assert done.stderr == ""


def test_latest_tilde_n_counts_back_from_the_newest_run(saved: Repository, repo_path: Path) -> None:
    newest, older = (info.run_id for info in saved.runs())
    assert saved.resolve_run("latest~0") == newest
    assert saved.resolve_run("latest~1") == older
    result = cas(repo_path, "inspect", "latest~2")
    assert result.exit_code == 3
    assert result.stderr == f"cas: error: no run 'latest~2' in {saved.url}: it holds 2 runs\n"
