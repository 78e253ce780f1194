"""The run index: rows match the stores, crash recovery, compaction, filters, rebuild.

Every test of a `repo` runs on a local folder, fsspec memory and S3 (a moto server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from cas import index, index_rows
from cas.cli import app
from cas.errors import ConflictError
from cas.index import ARTIFACTS_TABLE, RUNS_TABLE, RunIndex
from cas.index_rows import (
    LOCK,
    POINTER,
    IndexLock,
    Pointer,
    RunQuery,
    RunRow,
    newest_first_key,
    pending_key,
)
from cas.model import ArtifactOutcome, ExecutionResult, Message, RunStatus, SchemaRef
from cas.objects import LocalBackend
from cas.owner import OWNER, current_owner
from cas.repository import Repository
from cas.stores import run_key
from cas.testing.services import S3Bucket
from cas.testing.store_tests import memory_backend

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def repo(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Repository]:
    if request.param == "local":
        yield Repository.init(str(tmp_path / "repo"), fsync=False)
        return
    if request.param == "s3":  # a moto bucket; the CLI finds the endpoint in the environment
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        endpoint = bucket.storage_options["client_kwargs"]["endpoint_url"]
        monkeypatch.setenv("CAS_ENDPOINT_URL", endpoint)
        yield Repository.init(f"{bucket.url}/repo", client_kwargs={"endpoint_url": endpoint})
        return
    with memory_backend() as backend:
        yield Repository.init(backend.url)


def save(
    repo: Repository,
    number: int,
    status: RunStatus = "completed",
    *,
    runbook: str = "scan",
    content: int | None = None,
    hour: int | None = None,
) -> str:
    """Run `number`: two saved artifacts (``b`` shared by all runs), outcomes, the result.

    It starts `hour` hours (default: `number`) after T0.
    """
    run_id = f"run-{number:04d}"
    started = T0 + timedelta(hours=number if hour is None else hour)
    for artifact_id, value in (("a", number if content is None else content), ("b", 0)):
        message = Message(id=artifact_id, content={"v": value}, schema=SchemaRef("s", "1.0.0"))
        repo.artifacts.save(run_id, artifact_id, message)
    outcomes = {
        "a": ArtifactOutcome("completed", duration_seconds=0.5),
        "b": ArtifactOutcome("completed", cached_from="run-0000"),
        "c": ArtifactOutcome("failed", error_type="ValueError")
        if status == "failed"
        else ArtifactOutcome("skipped", reason="r"),
    }
    ended = started + timedelta(seconds=3)
    result = ExecutionResult(run_id, status, started, runbook, ended, 3.0, outcomes)
    repo.executions.save(run_id, result)
    return run_id


def ids(rows: Any) -> list[str]:
    return [row.run_id for row in rows]


def expected_runs(repo: Repository) -> list[str]:
    """Runs with a final result, newest first, straight from the stores."""
    results = [repo.executions.get(run_id) for run_id in repo.executions.list_runs()]
    final = [r for r in results if r.is_final]
    return [r.run_id for r in sorted(final, key=lambda r: (r.started_at, r.run_id), reverse=True)]


# rows match the stores ------------------------------------------------------------------


def test_rows_match_the_stores(repo: Repository) -> None:
    for number in range(6):
        save(repo, number, "failed" if number % 3 == 0 else "completed")
    rows = repo.list_runs()
    assert ids(rows) == expected_runs(repo)
    for row in rows:
        result = repo.executions.get(row.run_id)
        assert row.status == result.status
        assert row.started_at == result.started_at
        assert row.ended_at == result.ended_at
        assert row.duration_seconds == result.duration_seconds
        assert (row.completed, row.failed, row.skipped) == tuple(result.counts().values())
        assert row.artifacts == len(repo.artifacts.entries(row.run_id))
    artifacts = RunIndex(repo).table(ARTIFACTS_TABLE).to_pylist()
    assert len(artifacts) == 6 * 3
    for item in artifacts:
        entry = repo.artifacts.entries(item["run_id"]).get(item["artifact_id"])
        outcome = repo.executions.get(item["run_id"]).artifacts[item["artifact_id"]]
        assert item["digest"] == (bytes.fromhex(entry.digest.hex) if entry else None)
        assert item["size"] == (entry.size if entry else None)
        assert item["outcome"] == outcome.status
        assert item["error_type"] == outcome.error_type
        assert item["cached_from"] == outcome.cached_from


def test_running_runs_are_listed_then_indexed_when_final(repo: Repository) -> None:
    save(repo, 1)
    running = ExecutionResult("run-0002", "running", T0 + timedelta(hours=2))
    # A live executor (this process) owns it; without one it would list as interrupted.
    repo.backend.write(run_key("run-0002", OWNER), orjson.dumps(current_owner()))
    repo.executions.save("run-0002", running)
    rows = repo.list_runs()
    assert [(r.run_id, r.status) for r in rows] == [
        ("run-0002", "running"),
        ("run-0001", "completed"),
    ]
    assert repo.backend.exists(pending_key("run-0002"))  # kept until the result is final
    save(repo, 2)
    assert (repo.list_runs()[0].run_id, repo.list_runs()[0].status) == ("run-0002", "completed")
    assert not repo.backend.exists(pending_key("run-0002"))


def test_a_resumed_run_replaces_its_rows(repo: Repository) -> None:
    save(repo, 1, "failed")
    save(repo, 2)
    repo.list_runs()
    save(repo, 1, "completed")  # resumed and finished
    assert [(r.run_id, r.status) for r in repo.list_runs()] == [
        ("run-0002", "completed"),
        ("run-0001", "completed"),
    ]
    assert RunIndex(repo).count_by_status() == {"completed": 2}
    assert len(RunIndex(repo).table(ARTIFACTS_TABLE)) == 6
    RunIndex(repo).compact()
    assert Pointer.read(repo.backend).superseded == {}
    assert RunIndex(repo).count_by_status() == {"completed": 2}


# crashes and consistency ------------------------------------------------------------------


def test_crash_between_result_and_index_is_found_by_the_next_sync(repo: Repository) -> None:
    save(repo, 1)
    # The mark is written before the result: a crash after the result leaves it behind.
    assert repo.backend.exists(pending_key("run-0001"))
    assert ids(repo.list_runs()) == ["run-0001"]


def test_crash_that_lost_the_mark_is_found_by_check_and_fixed(repo: Repository) -> None:
    save(repo, 1)
    repo.list_runs()
    save(repo, 2)
    repo.backend.delete([pending_key("run-0002")])  # as if the process died before marking
    index = RunIndex(repo)
    assert ids(repo.list_runs()) == ["run-0001"]
    report = index.check()
    assert (report.unindexed, report.ok, report.fixed) == (["run-0002"], False, False)
    assert index.check(fix=True).fixed
    assert ids(repo.list_runs()) == ["run-0002", "run-0001"]
    assert index.check().ok


def test_a_batch_mark_stands_for_a_mark_per_run(repo: Repository) -> None:
    with repo.marked_together(["run-0001", "run-0002", "run-0003"]):
        save(repo, 1)
        save(repo, 2)  # run-0003's result never comes (a push killed before it)
    assert not repo.backend.exists(pending_key("run-0001"))  # the batch stands for it
    index = RunIndex(repo)
    assert index.marks() == ["run-0001", "run-0002", "run-0003"]
    assert ids(repo.list_runs()) == ["run-0002", "run-0001"]
    assert index.marks() == ["run-0003"]  # the batch is rewritten with what is left
    save(repo, 3)  # outside the block: a mark of its own as well
    assert ids(repo.list_runs()) == ["run-0003", "run-0002", "run-0001"]
    assert index.marks() == [] and list(repo.backend.list("index/pending")) == []
    assert index.check().ok


def test_a_batch_mark_naming_removed_runs_is_settled_by_the_drop(repo: Repository) -> None:
    save(repo, 1)
    repo.list_runs()
    with repo.marked_together(["run-0002", "run-0009"]):
        save(repo, 2)
    index = RunIndex(repo)
    index.compact(drop=["run-0009"])  # gc removing a run the batch names, never saved
    assert index.marks() == []
    assert ids(repo.list_runs()) == ["run-0002", "run-0001"]


def test_runs_in_hand_are_folded_without_reading_the_stores(repo: Repository) -> None:
    with repo.marked_together(["run-0001"]):
        save(repo, 1)
    result = repo.executions.get("run-0001")
    entries = repo.artifacts.entries("run-0001")
    repo.backend.delete(["runs/run-0001/execution_result.json"])  # unread, so not missed
    assert RunIndex(repo).sync(known=[(result, entries)]) == ["run-0001"]
    assert ids(RunIndex(repo).runs()) == ["run-0001"] and RunIndex(repo).marks() == []


def test_check_finds_stale_and_orphaned_rows(repo: Repository) -> None:
    save(repo, 1)
    save(repo, 2)
    repo.list_runs()
    key = "runs/run-0002/execution_result.json"
    repo.backend.delete([key])
    result = repo.executions.get("run-0001")
    changed = ExecutionResult("run-0001", "partial", result.started_at, "scan", result.ended_at)
    repo.backend.write("runs/run-0001/execution_result.json", _sealed(changed))
    report = RunIndex(repo).check(fix=True)
    assert (report.stale, report.orphaned) == (["run-0001"], ["run-0002"])
    assert [(r.run_id, r.status) for r in repo.list_runs()] == [("run-0001", "partial")]
    assert RunIndex(repo).check().ok


def _sealed(result: ExecutionResult) -> bytes:
    from cas.digest import seal

    return seal(result.to_dict())


def test_rebuild_equals_incremental(repo: Repository) -> None:
    for number in range(8):
        save(repo, number, "failed" if number % 2 else "completed")
        if number % 3 == 0:
            repo.list_runs()
    index = RunIndex(repo)
    before = (repo.list_runs(), index.table(ARTIFACTS_TABLE).sort_by("run_id").to_pylist())
    assert index.rebuild() == 8
    after = (repo.list_runs(), index.table(ARTIFACTS_TABLE).sort_by("run_id").to_pylist())
    assert after == before
    assert len(Pointer.read(repo.backend).files) == 1


def test_a_stale_lock_of_a_dead_process_is_broken(repo: Repository) -> None:
    dead = {**current_owner(), "pid": 2**22 + 12345, "start": "0"}
    repo.backend.write(LOCK, json.dumps(dead).encode())
    save(repo, 1)
    assert ids(repo.list_runs()) == ["run-0001"]
    assert not repo.backend.exists(LOCK)


def test_a_lock_of_another_host_is_broken_once_old(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = {**current_owner(), "host": "another-host"}  # its processes are unseen
    repo.backend.write(LOCK, json.dumps(elsewhere).encode())
    save(repo, 1)
    monkeypatch.setattr(IndexLock, "timeout", 0.3)
    with pytest.raises(ConflictError, match="locked by"):
        repo.list_runs()  # fresh: it may be folding right now
    monkeypatch.setattr(IndexLock, "stale_after", 0.5)
    time.sleep(1.1)  # S3's LastModified has whole seconds
    assert ids(repo.list_runs()) == ["run-0001"]
    assert not repo.backend.exists(LOCK)


# compaction ------------------------------------------------------------------------------


def test_small_segments_are_compacted_automatically(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RunIndex, "compact_after", 4)
    for number in range(20):
        save(repo, number)
        repo.list_runs(RunQuery(limit=1))
    assert len(Pointer.read(repo.backend).files) <= 5
    assert ids(repo.list_runs()) == expected_runs(repo)
    files = list(repo.backend.list("index/files"))
    assert len(files) == 2 * len(Pointer.read(repo.backend).files)  # old files removed


def test_compaction_under_a_concurrent_reader(repo: Repository) -> None:
    for number in range(12):
        save(repo, number)
        repo.list_runs()
    expected = expected_runs(repo)
    stop = threading.Event()
    seen: list[list[str]] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(ids(RunIndex(repo).runs()))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        index = RunIndex(repo)
        for _ in range(15):
            index.rebuild()
            index.compact()
    finally:
        stop.set()
        thread.join()
    assert seen
    assert all(listing == expected for listing in seen)


# filters -------------------------------------------------------------------------------------


@pytest.fixture
def history(repo: Repository) -> Repository:
    for number in range(10):
        status: RunStatus = "failed" if number % 3 == 0 else "completed"
        save(repo, number, status, runbook="nightly" if number % 2 else "scan", content=number % 4)
    return repo


def test_every_filter_through_the_library(history: Repository) -> None:
    def listed(**filters: Any) -> list[int]:
        return [int(r.run_id[4:]) for r in history.list_runs(RunQuery(**filters))]

    assert listed() == list(range(9, -1, -1))
    assert listed(status="failed") == [9, 6, 3, 0]
    assert listed(runbook="nightly") == [9, 7, 5, 3, 1]
    assert listed(since=T0 + timedelta(hours=7)) == [9, 8, 7]
    assert listed(until=T0 + timedelta(hours=2)) == [1, 0]
    assert listed(
        status="failed", since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=7)
    ) == [6, 3]
    assert listed(limit=3) == [9, 8, 7]
    assert listed(limit=3, offset=2) == [7, 6, 5]
    assert listed(artifact="a") == list(range(9, -1, -1))
    assert listed(artifact="nope") == []
    digest = history.artifacts.entry("run-0005", "a").digest.hex  # content 1: runs 1, 5, 9
    assert listed(digest=digest[:8]) == [9, 5, 1]
    assert listed(digest=digest, status="failed") == [9]
    assert RunIndex(history).count_by_status() == {"completed": 6, "failed": 4}


def cas(repo: Repository, *args: str) -> Result:
    return CliRunner().invoke(app, ["--repo", repo.url, *args])


def test_every_filter_through_the_cli(history: Repository) -> None:
    def listed(*args: str) -> list[int]:
        result = cas(history, "runs", "--json", *args)
        assert result.exit_code == 0, result.output
        return [int(row["run_id"][4:]) for row in json.loads(result.stdout)]

    digest = history.artifacts.entry("run-0005", "a").digest.hex
    assert listed("--status", "failed") == [9, 6, 3, 0]
    assert listed("--runbook", "scan", "--limit", "2") == [8, 6]
    assert listed("--since", "2026-03-01T07:00:00") == [9, 8, 7]
    assert listed("--until", "2026-03-01T02:00:00Z") == [1, 0]
    assert listed("--until", "2026-03-01") == list(range(9, -1, -1))  # the whole day
    assert listed("--offset", "8") == [1, 0]
    assert listed("--artifact", "c") == list(range(9, -1, -1))
    assert listed("--digest", digest[:10]) == [9, 5, 1]
    lines = cas(history, "runs", "--ndjson", "-n", "2").stdout.splitlines()
    assert [json.loads(line)["run_id"] for line in lines] == ["run-0009", "run-0008"]
    table = [
        line.strip("┃│ ").split() for line in cas(history, "runs", "-n", "1").stdout.splitlines()
    ]
    assert ["run", "┃", "status", "┃", "started", "┃", "duration", "┃", "artifacts"] in table
    assert [
        "run-0009",
        "│",
        "failed",
        "│",
        "2026-03-01",
        "09:00:00Z",
        "│",
        "3.00",
        "s",
        "│",
        "2",
    ] in table


def test_cli_refuses_bad_filters(history: Repository) -> None:
    result = cas(history, "runs", "--status", "done")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: invalid status 'done'")
    assert cas(history, "runs", "--since", "yesterday").exit_code == 2
    assert cas(history, "runs", "--digest", "xyz").exit_code == 2


def test_index_commands(history: Repository) -> None:
    assert cas(history, "index", "check").stdout == "index holds 0 runs, 10 pending: OK\n"
    assert cas(history, "runs").exit_code == 0
    assert cas(history, "index", "check").stdout == "index holds 10 runs, 0 pending: OK\n"
    assert cas(history, "index", "rebuild").stdout == "indexed 10 runs\n"
    history.backend.delete([POINTER])
    result = cas(history, "index", "check", "--json")
    assert result.exit_code == 4
    assert len(json.loads(result.stdout)["unindexed"]) == 10
    assert cas(history, "index", "check", "--fix").exit_code == 0
    assert cas(history, "index", "compact").exit_code == 0
    assert cas(history, "index", "check").exit_code == 0


def test_tables_are_plain_parquet_files(history: Repository) -> None:
    if not isinstance(history.backend, LocalBackend):
        pytest.skip("reads the files from disk")
    import pyarrow.parquet as pq

    RunIndex(history).compact()
    name = Pointer.read(history.backend).names[0]
    path = Path(history.url) / "index" / "files" / f"{name}.{RUNS_TABLE}.parquet"
    assert pq.read_table(path).num_rows == 10


def test_a_running_run_whose_executor_died_lists_as_interrupted(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    started = datetime(2026, 1, 1, tzinfo=UTC)
    for run_id in ("alive", "dead"):
        repo.executions.save(run_id, ExecutionResult(run_id, "running", started))
    repo.backend.write(run_key("alive", OWNER), orjson.dumps(current_owner()))
    statuses = {row.run_id: row.status for row in repo.list_runs()}
    assert statuses == {"alive": "running", "dead": "interrupted"}
    assert {info.run_id: info.status for info in repo.runs()} == statuses


def test_small_row_groups_prune_to_the_same_answers(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Digest and artifact lookups read only some row groups: they answer as a full scan."""
    monkeypatch.setattr(RunIndex, "runs_row_group", 2)
    monkeypatch.setattr(RunIndex, "artifacts_row_group", 3)
    index = RunIndex(repo)
    for number in range(12):
        save(repo, number, "failed" if number % 5 == 0 else "completed", content=number % 3)
        if number % 4 == 3:
            index.sync()  # several files, each with many small row groups
    save(repo, 4, content=7)  # resumed: its rows in the newest file supersede the old ones
    runs = expected_runs(repo)
    held = {run_id: repo.artifacts.entries(run_id) for run_id in runs}
    digests = {entry.digest.hex for entries in held.values() for entry in entries.values()}
    prefixes = {d[:n] for d in digests for n in (1, 2, 64)} | {"0", "f", "ab"}
    for prefix in sorted(prefixes):
        want = [r for r in runs if any(e.digest.hex.startswith(prefix) for e in held[r].values())]
        assert ids(index.runs(RunQuery(digest=prefix))) == want, prefix
        failed = [r for r in want if repo.executions.get(r).status == "failed"]
        assert ids(index.runs(RunQuery(digest=prefix, status="failed"))) == failed, prefix
        assert ids(index.runs(RunQuery(digest=prefix, limit=2, offset=1))) == want[1:3], prefix
    assert ids(index.runs(RunQuery(artifact="c"))) == runs
    assert ids(index.runs(RunQuery(artifact="a", limit=3))) == runs[:3]
    assert index.count_by_status() == {"completed": 9, "failed": 3}
    index.compact()
    assert ids(index.runs(RunQuery(digest=repo.artifacts.entry("run-0004", "a").digest.hex))) == [
        "run-0004"
    ]


# the pointer's head --------------------------------------------------------------------------


def every_row(index: RunIndex) -> list[RunRow]:
    """Every current runs row, straight from the Parquet files, newest first."""
    return sorted(index._indexed_rows(RunQuery(), None), key=newest_first_key, reverse=True)


def check_head(repo: Repository, size: int, *, as_stores: bool = True) -> None:
    """The head is the newest `size` rows; listings from it equal the Parquet answer."""
    index = RunIndex(repo)
    index.sync()
    rows = every_row(index)
    pointer = Pointer.read(repo.backend)
    assert pointer.head == rows[:size]
    assert ids(rows) == expected_runs(repo) or not as_stores
    for offset, limit in [(0, 1), (0, size), (1, size - 1), (2, 2), (size - 1, 2), (size, 3)]:
        query = RunQuery(limit=limit, offset=offset)
        from_head = pointer.head_answer(query) is not None
        assert from_head == (offset + limit <= size or len(rows) <= size), (offset, limit)
        assert index.runs(query) == rows[offset : offset + limit], (offset, limit)
    assert index.runs() == rows
    assert (
        index.runs(RunQuery(status="failed", limit=2))
        == [row for row in rows if row.status == "failed"][:2]
    )


def test_the_head_answers_as_the_files_do(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 4
    monkeypatch.setattr(index_rows, "HEAD_SIZE", size)
    monkeypatch.setattr(index, "HEAD_SIZE", size)
    check_head(repo, size)  # empty
    for number in range(3):
        save(repo, number, "failed" if number % 2 else "completed")
    check_head(repo, size)  # the head holds every run
    for number in range(3, 7):
        save(repo, number)
    check_head(repo, size)  # merged into the old head
    save(repo, 5, "failed")  # resumed, same start: its new row replaces the old one
    check_head(repo, size)
    save(repo, 6, hour=-1)  # resumed with an earlier start: it leaves the head
    check_head(repo, size)
    assert Pointer.read(repo.backend).superseded
    for number in range(7, 10):
        save(repo, number, hour=number - 20)  # older than the head: it stays as it was
        check_head(repo, size)
    monkeypatch.setattr(RunIndex, "compact_after", 3)
    for number in range(10, 13):
        save(repo, number)
        check_head(repo, size)  # tail compactions
    RunIndex(repo).compact()
    check_head(repo, size)
    RunIndex(repo).compact(drop=["run-0012"])  # the newest run: the head changes
    check_head(repo, size, as_stores=False)
    RunIndex(repo).rebuild()
    check_head(repo, size)


def test_a_pointer_without_a_head_is_read_from_the_files(repo: Repository) -> None:
    for number in range(5):
        save(repo, number)
    expected = RunIndex(repo).runs()
    old = Pointer.read(repo.backend)
    repo.backend.write(POINTER, Pointer(old.generation, old.files, old.superseded).to_bytes())
    assert Pointer.read(repo.backend).head is None
    assert RunIndex(repo).runs(RunQuery(limit=2)) == expected[:2]
    assert "head" not in orjson.loads(repo.backend.read(POINTER))
    save(repo, 5)  # the next sync adds a head, from the files
    assert RunIndex(repo).runs(RunQuery(limit=3)) == [repo.list_runs()[0], *expected[:2]]
    assert Pointer.read(repo.backend).head == RunIndex(repo).runs()
    old = Pointer.read(repo.backend)
    repo.backend.write(POINTER, Pointer(old.generation, old.files, old.superseded).to_bytes())
    RunIndex(repo).refresh_head()
    assert Pointer.read(repo.backend).head == RunIndex(repo).runs()


def test_head_rows_round_trip_through_json() -> None:
    row = RunRow("r", "completed", None, T0, None, 1.25, 1, 0, 2, 3, "t")
    assert RunRow.from_dict(orjson.loads(orjson.dumps(row.to_dict()))) == row


def test_a_listing_decodes_only_the_head_rows_it_returns(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(6):
        save(repo, number)
    expected = RunIndex(repo).runs()
    decoded: list[str] = []
    from_dict = RunRow.from_dict

    def counted(data: dict[str, Any]) -> RunRow:
        decoded.append(data["run_id"])
        return from_dict(data)

    monkeypatch.setattr(RunRow, "from_dict", staticmethod(counted))
    index_rows.POINTERS.clear()
    assert RunIndex(repo).runs(RunQuery(limit=2)) == expected[:2]
    assert decoded == ids(expected[:2])
    assert RunIndex(repo).runs(RunQuery(limit=2, offset=2)) == expected[2:4]  # same bytes
    assert decoded == ids(expected[:4])  # the first two were not decoded again
    assert Pointer.read(repo.backend).head == expected
    assert decoded == ids(expected)
    assert RunIndex(repo).runs() == expected
    assert decoded == ids(expected)


def test_a_listing_reads_the_pointer_anew_every_time(repo: Repository) -> None:
    for number in range(3):
        save(repo, number)
    first = repo.list_runs(RunQuery(limit=50))
    mine = Pointer.read(repo.backend)  # the caller's own lists: changing them changes no read
    mine.files.clear()
    mine.superseded["run-0000"] = "x"
    mine.head = []
    assert Pointer.read(repo.backend).files and not Pointer.read(repo.backend).superseded
    assert Pointer.read(repo.backend).head == first
    save(repo, 3)
    assert ids(repo.list_runs(RunQuery(limit=50))) == ["run-0003", *ids(first)]
    old = Pointer.read(repo.backend)  # rewritten, same generation: other bytes, read as such
    assert old.head is not None
    repo.backend.write(POINTER, Pointer(old.generation, old.files, {}, old.head[:1]).to_bytes())
    assert Pointer.read(repo.backend).head == old.head[:1]
    assert ids(repo.list_runs(RunQuery(limit=1))) == ["run-0003"]
    assert Pointer.read(repo.backend) == Pointer(old.generation, old.files, {}, old.head[:1])


def test_threads_share_one_lazily_decoded_head(repo: Repository) -> None:
    for number in range(8):
        save(repo, number)
    expected = RunIndex(repo).runs()
    index_rows.POINTERS.clear()
    pointers = [Pointer.read(repo.backend) for _ in range(16)]
    answers: dict[int, list[RunRow] | None] = {}

    def answer(number: int) -> None:
        answers[number] = pointers[number].head_answer(RunQuery(limit=number % 9))

    threads = [threading.Thread(target=answer, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {number: expected[: number % 9] for number in range(16)}


def test_short_listings_import_neither_pyarrow_nor_pydantic(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"), fsync=False)
    for number in range(3):
        save(repo, number)
    repo.list_runs()  # fold the marks: the listing below reads only the pointer
    library = (
        "import sys; from cas.repository import Repository; from cas.index_rows import RunQuery; "
        f"rows = Repository.open({repo.url!r}).list_runs(RunQuery(limit=50)); "
        "assert [r.run_id for r in rows] == ['run-0002', 'run-0001', 'run-0000'], rows; "
        "print(sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))"
    )
    cli = (
        "import sys; from cas.cli import app; "
        f"app(['--repo', {repo.url!r}, 'runs', '--limit', '50'], standalone_mode=False); "
        "print(sorted(m for m in ('pyarrow', 'numpy', 'pydantic') if m in sys.modules))"
    )
    for code in (library, cli):
        done = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[]"
