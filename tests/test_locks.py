"""Repository locks (`cas.locks`, docs/design.md §10): writers exclude a sweeping gc.

Run on ``memory://`` (an object store without append, like S3) unless a test says
otherwise; the race with writer processes on a moto S3 server is in tests/test_gc.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from test_executor import CHAIN, make_plan
from typer.testing import CliRunner

from cas.cli import app
from cas.executor import Executor
from cas.gc import Policy, collect
from cas.locks import (
    EXCLUSIVE,
    STALE_AFTER,
    WRITER,
    Lock,
    LockedError,
    acquire,
    list_locks,
    locked,
    needs_locks,
)
from cas.model import ExecutionResult, Message
from cas.objects import Backend, FsspecBackend, LocalBackend
from cas.owner import current_owner
from cas.repository import Repository
from cas.sync import transfer
from cas.testing.services import S3Bucket
from cas.testing.store_helpers import memory_backend


@pytest.fixture
def backend() -> Iterator[FsspecBackend]:
    with memory_backend() as made:
        yield made


def _kinds(backend: Backend) -> list[str]:
    return sorted(info.kind for info in list_locks(backend))


def _hold(backend: Backend, kind: str, seconds: float) -> threading.Thread:
    """Take a `kind` lock now and release it after `seconds`, in a thread."""
    lock = acquire(backend, kind)

    def later() -> None:
        time.sleep(seconds)
        lock.release()

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def _plant(backend: Backend, kind: str, record: dict[str, object]) -> str:
    key = f"locks/{kind}-{'0' * 32}.json"
    backend.write(key, orjson.dumps(record))
    return key


def test_a_writer_lock_makes_gc_fail_with_a_clear_error(backend: FsspecBackend) -> None:
    with locked(backend, WRITER) as lock:
        assert lock is not None and _kinds(backend) == [WRITER]
        repo = Repository(backend, {"schema_packages": []})
        with pytest.raises(LockedError, match=r"is in use \(writer lock of pid \d+ on .*--wait"):
            collect(repo, Policy(grace=timedelta(0)))
        assert _kinds(backend) == [WRITER]  # the gc took its lock away again
    assert _kinds(backend) == []


def test_a_gc_lock_makes_a_writer_fail_or_wait(backend: FsspecBackend) -> None:
    with locked(backend, EXCLUSIVE):
        with pytest.raises(LockedError, match="locked by a garbage collection"):
            acquire(backend, WRITER, wait=0)
        assert _kinds(backend) == [EXCLUSIVE]
    holder = _hold(backend, EXCLUSIVE, 0.6)
    told: list[str] = []
    started = time.monotonic()
    with locked(backend, WRITER, wait=30, notify=told.append):
        assert time.monotonic() - started >= 0.5
        assert _kinds(backend) == [WRITER]
    holder.join()
    assert len(told) == 1 and "waiting up to" in told[0] and "gc lock of pid" in told[0]


def test_a_waiting_gc_keeps_new_writers_out_until_the_old_ones_finish(
    backend: FsspecBackend,
) -> None:
    writer = _hold(backend, WRITER, 0.8)
    got: list[Lock] = []
    gc = threading.Thread(target=lambda: got.append(acquire(backend, EXCLUSIVE, wait=30)))
    gc.start()
    time.sleep(0.3)
    assert sorted(_kinds(backend)) == [EXCLUSIVE, WRITER]  # the gc holds its lock as it waits
    with pytest.raises(LockedError):
        acquire(backend, WRITER, wait=0)  # a new writer steps back for the waiting gc
    writer.join()
    gc.join()
    assert got and _kinds(backend) == [EXCLUSIVE]
    got[0].release()
    assert _kinds(backend) == []


def test_a_gc_interrupted_while_waiting_leaves_no_lock(backend: FsspecBackend) -> None:
    def interrupt(_message: str) -> None:
        raise KeyboardInterrupt

    with locked(backend, WRITER):
        with pytest.raises(KeyboardInterrupt):
            acquire(backend, EXCLUSIVE, wait=30, notify=interrupt)
        assert _kinds(backend) == [WRITER]


def test_two_gcs_do_not_sweep_at_once(backend: FsspecBackend) -> None:
    with locked(backend, EXCLUSIVE), pytest.raises(LockedError):
        acquire(backend, EXCLUSIVE, wait=0.3)
    assert _kinds(backend) == []


def test_locks_of_dead_processes_are_stale_and_ignored(backend: FsspecBackend) -> None:
    dead = {**current_owner(), "pid": 2**22 + 17, "start": "1", "kind": WRITER}
    _plant(backend, WRITER, dead)
    _plant(backend, EXCLUSIVE, {**dead, "kind": EXCLUSIVE})
    with locked(backend, EXCLUSIVE, wait=0):  # neither the dead writer nor the dead gc counts
        pass
    with locked(backend, WRITER, wait=0):
        pass
    assert [info.stale for info in list_locks(backend)] == [True, True]


def test_locks_older_than_the_stale_time_are_ignored(tmp_path: Path) -> None:
    # A folder stands in for an object store here: only there can a lock be backdated.
    backend = LocalBackend(tmp_path, fsync=False)
    key = _plant(backend, WRITER, {"host": "elsewhere", "pid": 1})  # another host: only age
    with pytest.raises(LockedError):
        acquire(backend, EXCLUSIVE, wait=0)
    past = time.time() - STALE_AFTER - 60
    os.utime(tmp_path / key, (past, past))
    lock = acquire(backend, EXCLUSIVE, wait=0)
    lock.release()
    (stale,) = list_locks(backend)
    assert stale.stale and stale.age > STALE_AFTER


def test_a_held_lock_is_refreshed_and_a_lock_not_refreshed_stops_the_holder(
    backend: FsspecBackend,
) -> None:
    lock = acquire(backend, WRITER, refresh=0.05)
    first = json.loads(backend.read(lock.key))["refreshed"]
    before = lock.refreshed_at
    time.sleep(0.3)
    assert lock.refreshed_at > before and json.loads(backend.read(lock.key))["refreshed"] >= first
    lock.check()
    lock.release()
    lock.refreshed_at = time.time() - STALE_AFTER  # as if every refresh had failed
    with pytest.raises(LockedError, match="may be stale"):
        lock.check()


def test_local_folders_take_no_locks(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, fsync=False)
    assert not needs_locks(backend)
    with locked(backend, WRITER) as lock:
        assert lock is None
    assert not (tmp_path / "locks").exists()


def test_an_executor_run_waits_for_a_gc_and_leaves_no_lock(backend: FsspecBackend) -> None:
    repo = Repository(backend, {"schema_packages": []})
    holder = _hold(backend, EXCLUSIVE, 0.5)
    started = time.monotonic()
    report = Executor(repo, make_plan(CHAIN)).run()
    holder.join()
    assert time.monotonic() - started >= 0.4
    assert report.result.status == "completed"
    assert _kinds(backend) == []


def test_a_push_waits_for_a_gc_on_the_destination(backend: FsspecBackend, tmp_path: Path) -> None:
    source = Repository.init(str(tmp_path / "src"), fsync=False)
    source.artifacts.save("r1", "a", Message(id="a", content={"x": 1}))
    source.executions.save("r1", ExecutionResult("r1", "completed", datetime.now(UTC)))
    dest = Repository(backend, {"schema_packages": []})
    holder = _hold(backend, EXCLUSIVE, 0.5)
    started = time.monotonic()
    done = transfer(source, dest, ["r1"])
    holder.join()
    assert time.monotonic() - started >= 0.4 and done.runs_sent == ["r1"]
    assert _kinds(backend) == []


# command line ------------------------------------------------------------------------


@pytest.mark.s3
def test_cas_gc_blocked_by_a_writer_and_cas_locks(s3_bucket: S3Bucket) -> None:
    url, options = s3_bucket
    endpoint = options["client_kwargs"]["endpoint_url"]
    repo_url = f"{url}/team"
    Repository.init(repo_url, **options)
    repo = Repository.open(repo_url, **options)
    base = ["--repo", repo_url]
    env = {"AWS_ENDPOINT_URL_S3": endpoint}
    runner = CliRunner()
    dead = {**current_owner(), "pid": 2**22 + 17, "start": "1", "kind": WRITER}
    _plant(repo.backend, WRITER, dead)
    with locked(repo.backend, WRITER):
        blocked = runner.invoke(app, [*base, "gc", "--grace", "0"], env=env)
        assert blocked.exit_code == 5, blocked.output
        assert "is in use (writer lock of pid" in blocked.output
        assert "--wait DURATION" in blocked.output
        listed = runner.invoke(app, [*base, "locks", "--json"], env=env)
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert sorted((row["kind"], row["stale"]) for row in rows) == [
            (WRITER, False),
            (WRITER, True),
        ]
        removed = runner.invoke(app, [*base, "locks", "--remove-stale"], env=env)
        assert removed.exit_code == 0 and removed.stdout.startswith("removed writer-0000")
        assert _kinds(repo.backend) == [WRITER]
    done = runner.invoke(app, [*base, "gc", "--grace", "0", "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert runner.invoke(app, [*base, "locks"], env=env).stdout == "no locks\n"
