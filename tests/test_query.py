"""``cas query``: the examples of docs/history.md, output shapes, errors, read-only.

Every ```sql block of docs/history.md starts with a ``-- title`` line; each is run
exactly as printed against `history` (six deterministic runs over two weeks, one
of them indexed twice) and must return the rows `expected` computes from the stores.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.index import RunIndex
from cas.index_rows import Pointer
from cas.model import ArtifactOutcome, ExecutionResult, Message, RunStatus, SchemaRef
from cas.repository import Repository

duckdb = pytest.importorskip("duckdb", reason="cas query needs the 'query' extra (duckdb)")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "history.md"
FAIL = "fail"  # a step that failed without saving anything

# run number: (start, status, {artifact: content value or FAIL}, {artifact: cached from run})
RUNS: dict[int, tuple[str, RunStatus, dict[str, Any], dict[str, int]]] = {
    1: ("2026-03-02T09:00", "completed", {"config": 0, "scan": 1, "findings": "A"}, {}),
    2: (
        "2026-03-03T09:00",
        "failed",
        {"config": 0, "scan": 1, "findings": "A", "notify": FAIL},
        {"findings": 1},
    ),
    3: ("2026-03-04T09:00", "failed", {"config": 0, "scan": 2, "findings": FAIL}, {}),
    4: (
        "2026-03-09T09:00",
        "partial",
        {"config": 0, "scan": 2, "findings": "B", "notify": FAIL},
        {},
    ),
    5: (
        "2026-03-10T09:00",
        "completed",
        {"config": 0, "scan": 2, "findings": "B"},
        {"findings": 4},
    ),
    6: ("2026-03-10T15:00", "completed", {"config": 0, "scan": 3, "findings": "C"}, {}),
}


def run_id(number: int) -> str:
    return f"run-{number:02d}"


def save_run(repo: Repository, number: int) -> None:
    start, status, contents, cached = RUNS[number]
    started = datetime.fromisoformat(start).replace(tzinfo=UTC)
    outcomes = {}
    for artifact_id, value in contents.items():
        if value == FAIL:
            outcomes[artifact_id] = ArtifactOutcome("failed", error_type="ValueError")
            continue
        message = Message(artifact_id, {"value": value}, SchemaRef("s", "1.0.0"))
        repo.artifacts.save(run_id(number), artifact_id, message)
        source = run_id(cached[artifact_id]) if artifact_id in cached else None
        outcomes[artifact_id] = ArtifactOutcome("completed", cached_from=source)
    result = ExecutionResult(run_id(number), status, started, "scan", started, 60.0, outcomes)
    repo.executions.save(run_id(number), result)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    """The six runs in `.waivern`; run 6 indexed twice (its rows live in two files)."""
    repo = Repository.init(str(tmp_path_factory.mktemp("history") / ".waivern"), fsync=False)
    for number in RUNS:
        save_run(repo, number)
    RunIndex(repo).sync()
    save_run(repo, 6)  # re-saved: indexed again, superseding its first rows
    RunIndex(repo).sync()
    assert Pointer.read(repo.backend).superseded == {"run-06": Pointer.read(repo.backend).names[1]}
    return repo


def cas(repo: Repository, sql: str, *options: str) -> Result:
    """``cas query OPTIONS -- SQL``: the ``--`` lets SQL start with a ``-- comment``."""
    return CliRunner().invoke(app, ["--repo", repo.url, "query", *options, "--", sql])


def query_json(repo: Repository, sql: str) -> list[dict[str, Any]]:
    result = cas(repo, sql, "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# expected rows of the doc examples, from the stores ------------------------------------


def digest(repo: Repository, number: int, artifact_id: str) -> str:
    return repo.artifacts.entry(run_id(number), artifact_id).digest.hex


def size(repo: Repository, number: int, artifact_id: str) -> int:
    return repo.artifacts.entry(run_id(number), artifact_id).size


def saved(repo: Repository) -> list[tuple[str, str, str, int]]:
    """(day, run, digest, size) of every saved artifact."""
    return [
        (RUNS[n][0][:10], run_id(n), digest(repo, n, a), size(repo, n, a))
        for n in RUNS
        for a, value in RUNS[n][2].items()
        if value != FAIL
    ]


def failure_rate(_repo: Repository) -> list[dict[str, Any]]:
    return [
        {"week": "2026-03-02", "runs": 3, "failed_runs": 2, "failed_pct": 66.7},
        {"week": "2026-03-09", "runs": 3, "failed_runs": 1, "failed_pct": 33.3},
    ]


def first_seen(repo: Repository) -> list[dict[str, Any]]:
    return [
        {"digest": digest(repo, 1, "findings"), "first_run": "run-01",
         "first_seen": "2026-03-02T09:00:00+00:00", "runs": 2},
        {"digest": digest(repo, 4, "findings"), "first_run": "run-04",
         "first_seen": "2026-03-09T09:00:00+00:00", "runs": 2},
        {"digest": digest(repo, 6, "findings"), "first_run": "run-06",
         "first_seen": "2026-03-10T15:00:00+00:00", "runs": 1},
    ]  # fmt: skip


def changed(repo: Repository) -> list[dict[str, Any]]:
    return [
        {
            "artifact_id": artifact_id,
            "old_digest": digest(repo, 5, artifact_id),
            "new_digest": digest(repo, 6, artifact_id),
            "old_size": size(repo, 5, artifact_id),
            "new_size": size(repo, 6, artifact_id),
        }
        for artifact_id in ("findings", "scan")  # config is the same in both
    ]


def dedup_per_day(repo: Repository) -> list[dict[str, Any]]:
    rows = []
    for day in sorted({item[0] for item in saved(repo)}):
        items = [item for item in saved(repo) if item[0] == day]
        logical = sum(item[3] for item in items)
        distinct = sum({item[2]: item[3] for item in items}.values())
        rows.append(
            {"day": day, "logical_bytes": logical, "distinct_bytes": distinct,
             "dedup_ratio": round(logical / distinct, 2)}
        )  # fmt: skip
    return rows


def dedup_to_date(repo: Repository) -> list[dict[str, Any]]:
    rows = []
    for day in sorted({item[0] for item in saved(repo)}):
        items = [item for item in saved(repo) if item[0] <= day]
        logical = sum(item[3] for item in items)
        unique = sum({item[2]: item[3] for item in items}.values())
        rows.append(
            {"day": day, "logical_bytes": logical, "unique_bytes": unique,
             "dedup_ratio": round(logical / unique, 2)}
        )  # fmt: skip
    return rows


def reuse(_repo: Repository) -> list[dict[str, Any]]:
    return [
        {"artifact_id": "findings", "runs": 6, "reused": 2, "reused_pct": 33.3},
        {"artifact_id": "config", "runs": 6, "reused": 0, "reused_pct": 0.0},
        {"artifact_id": "notify", "runs": 2, "reused": 0, "reused_pct": 0.0},
        {"artifact_id": "scan", "runs": 6, "reused": 0, "reused_pct": 0.0},
    ]


def runs_newest_first(_repo: Repository) -> list[dict[str, Any]]:
    return [{"run_id": run_id(n), "status": RUNS[n][1]} for n in sorted(RUNS, reverse=True)]


def live_artifacts(repo: Repository) -> list[dict[str, Any]]:
    """Every artifact row; a failed step's has no digest or size."""
    rows = []
    for number in sorted(RUNS):
        for artifact_id, value in sorted(RUNS[number][2].items()):
            ok = value != FAIL
            rows.append(
                {"run_id": run_id(number), "artifact_id": artifact_id,
                 "digest": digest(repo, number, artifact_id) if ok else None,
                 "size": size(repo, number, artifact_id) if ok else None}
            )  # fmt: skip
    return rows


Expected = Callable[[Repository], list[dict[str, Any]]]
VIEW_EXAMPLES: dict[str, Expected] = {
    "failure rate per week": failure_rate,
    "first run where each findings digest appeared": first_seen,
    "artifacts whose digest changed between the two newest runs": changed,
    "dedup ratio per day": dedup_per_day,
    "dedup ratio to date": dedup_to_date,
    "how often steps were reused": reuse,
}
PARQUET_EXAMPLES: dict[str, Expected] = {
    "straight from the Parquet files: DuckDB glob": runs_newest_first,
    "straight from the Parquet files: DuckDB live set": live_artifacts,
}
NOT_RUN = {"Trino, not DuckDB (not run by the tests)"}


def doc_examples() -> dict[str, str]:
    """Every ```sql block of docs/history.md by its ``-- title`` first line."""
    blocks = re.findall(r"^```sql\n(.*?)^```$", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    examples = {}
    for block in blocks:
        title, _, _ = block.partition("\n")
        assert title.startswith("-- "), f"a sql block of {DOC.name} has no title: {title}"
        examples[title[3:]] = block
    return examples


def test_every_doc_example_is_checked() -> None:
    assert set(doc_examples()) == {*VIEW_EXAMPLES, *PARQUET_EXAMPLES, *NOT_RUN}


@pytest.mark.parametrize("title", list(VIEW_EXAMPLES))
def test_doc_example_returns_the_expected_rows(history: Repository, title: str) -> None:
    rows = query_json(history, doc_examples()[title])
    assert rows == VIEW_EXAMPLES[title](history)


@pytest.mark.parametrize("title", list(PARQUET_EXAMPLES))
def test_doc_parquet_example_reads_the_files_directly(
    history: Repository, title: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(history.url).parent)  # the doc reads ./.waivern
    found = duckdb.connect().execute(doc_examples()[title])
    names = [column[0] for column in found.description]
    rows = [dict(zip(names, row, strict=True)) for row in found.fetchall()]
    expected = PARQUET_EXAMPLES[title](history)
    assert [{key: row[key] for key in expected[0]} for row in rows] == expected


# output shapes ---------------------------------------------------------------------------

SHAPES = (
    "SELECT run_id, started_at, duration_seconds, completed FROM runs "
    "WHERE run_id IN ('run-01', 'run-03') ORDER BY run_id"
)


def test_json_is_an_array_of_objects_with_iso_times(history: Repository) -> None:
    assert query_json(history, SHAPES) == [
        {"run_id": "run-01", "started_at": "2026-03-02T09:00:00+00:00",
         "duration_seconds": 60.0, "completed": 3},
        {"run_id": "run-03", "started_at": "2026-03-04T09:00:00+00:00",
         "duration_seconds": 60.0, "completed": 2},
    ]  # fmt: skip
    assert query_json(history, "SELECT * FROM runs WHERE false") == []


def test_json_keeps_repeated_column_names(history: Repository) -> None:
    assert query_json(history, "SELECT 1 AS n, 2 AS n, NULL AS x") == [
        {"n": 1, "n_2": 2, "x": None}
    ]


def test_csv_has_a_header_row_and_empty_nulls(history: Repository) -> None:
    result = cas(history, SHAPES + " ", "--csv")
    assert result.exit_code == 0
    assert result.stdout == (
        "run_id,started_at,duration_seconds,completed\n"
        "run-01,2026-03-02T09:00:00+00:00,60.0,3\n"
        "run-03,2026-03-04T09:00:00+00:00,60.0,2\n"
    )
    nulls = cas(history, "SELECT 'a,b' AS text, NULL AS nothing", "--csv")
    assert list(csv.reader(io.StringIO(nulls.stdout))) == [["text", "nothing"], ["a,b", ""]]


def test_table_shows_every_row_and_the_count(history: Repository) -> None:
    result = cas(history, "SELECT run_id, failed FROM runs ORDER BY run_id")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "run_id" in lines[1] and "failed" in lines[1]
    assert [line.split()[1] for line in lines if "run-0" in line] == [run_id(n) for n in RUNS]
    assert lines[-1] == "6 rows"


# errors and read-only --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", 'SQL: Parser Error: syntax error at or near "SELEC"'),
        ("SELECT nope FROM runs", 'SQL: Binder Error: Referenced column "nope" not found'),
        ("SELECT 1; SELECT 2", "expected one SQL statement, got 2"),
    ],
)
def test_bad_sql_is_one_line_and_exit_2(history: Repository, sql: str, message: str) -> None:
    result = cas(history, sql)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"cas: error: {message}")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE copy AS SELECT * FROM runs", "CREATE"),
        ("COPY (SELECT * FROM runs) TO 'runs.csv'", "COPY"),
        ("INSERT INTO runs SELECT * FROM runs", "INSERT"),
        ("ATTACH 'other.db'", "ATTACH"),
        ("SET enable_external_access = true", "SET"),
    ],
)
def test_write_statements_are_refused(
    history: Repository, sql: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cas(history, sql)
    assert result.exit_code == 2
    assert result.stderr == (
        "cas: error: cas query is read-only: expected a SELECT (or WITH … SELECT) "
        f"statement, got {kind}\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_files_are_out_of_reach(history: Repository) -> None:
    result = cas(history, f"SELECT * FROM read_parquet('{history.url}/index/files/*.parquet')")
    assert result.exit_code == 2
    assert "file system operations are disabled" in result.stderr


def test_errors_are_json_under_json(history: Repository) -> None:
    result = cas(history, "DROP TABLE runs", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["type"] == "InvalidInputError"


def test_missing_duckdb_names_the_extra(history: Repository, tmp_path: Path) -> None:
    (tmp_path / "duckdb.py").write_text("raise ImportError('no duckdb here')\n")
    code = "from cas.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--repo", history.url, "query", "SELECT 1"],
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "cas: error: cas query needs DuckDB: pip install 'cas[query]'\n"


def test_sql_from_stdin(history: Repository) -> None:
    args = ["--repo", history.url, "query", "--csv", "-"]
    result = CliRunner().invoke(app, args, input="-- count\nSELECT count(*) AS n FROM runs\n")
    assert result.exit_code == 0
    assert result.stdout == "n\n6\n"


def test_new_runs_are_indexed_before_the_query(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"), fsync=False)
    save_run(repo, 1)  # marked pending, not yet folded into the index
    assert query_json(repo, "SELECT count(*) AS n FROM artifacts") == [{"n": 3}]
