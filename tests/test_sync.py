"""Remotes, push and pull: round trips, idempotence, interruption, conflicts, tenants."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.digest import seal
from cas.errors import ConflictError, InvalidIdError, InvalidInputError, RepositoryError
from cas.index import RunIndex
from cas.model import ArtifactEntry, ArtifactOutcome, ExecutionResult, Message
from cas.objects import Backend
from cas.packs import PACKS, PackedRun, pack_key
from cas.remotes import Remote
from cas.repository import RUNBOOK, Repository
from cas.stores import RESULT, run_key
from cas.sync import FEW_RUNS, transfer
from cas.testing.services import S3Bucket
from cas.verify import verify

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUNBOOK_TEXT = b"""name: demo
artifacts:
  shared:
    source: {type: filesystem, properties: {path: data}}
  own:
    source: {type: filesystem, properties: {path: data}}
  big:
    source: {type: filesystem, properties: {path: data}}
"""
HOSTILE_TENANTS = ["../escape", "a/b", ".hidden", "x..y", "", "t" * 129, "bad\\name", "end."]


def make_run(
    repo: Repository, run_id: str, *, seed: int = 0, large: bool = False, day: int = 0
) -> str:
    """A completed run: two small artifacts (one shared by every run), and a chunked one."""
    at = START + timedelta(days=day)
    contents: dict[str, dict[str, Any]] = {
        "shared": {"value": "the same in every run"},
        "own": {"run": run_id, "seed": seed},
    }
    if large:
        rows = [{"n": i, "text": f"row {i} of run {seed} " + "x" * 200} for i in range(1500)]
        contents["big"] = {"rows": rows}
    for name, content in contents.items():
        message = Message(id=name, content=content, source=f"source:{name}", timestamp=at)
        repo.artifacts.save(run_id, name, message)
    repo.backend.write(run_key(run_id, RUNBOOK), RUNBOOK_TEXT)
    outcomes = {name: ArtifactOutcome("completed", duration_seconds=0.1) for name in contents}
    result = ExecutionResult(
        run_id, "completed", at, runbook="demo", ended_at=at + timedelta(seconds=2),
        duration_seconds=2.0, artifacts=outcomes,
    )  # fmt: skip
    repo.executions.save(run_id, result)
    return run_id


def source_repo(path: Path, runs: int = 3) -> Repository:
    repo = Repository.init(str(path), fsync=False)
    for index in range(runs):
        make_run(repo, f"run-{index}", seed=index, large=index == 0, day=index)
    return repo


def assert_same_runs(source: Repository, dest: Repository, run_ids: Iterable[str]) -> None:
    for run_id in run_ids:
        assert dest.executions.get(run_id) == source.executions.get(run_id)
        mine = {k: e.to_dict() for k, e in source.artifacts.entries(run_id).items()}
        theirs = {k: e.to_dict() for k, e in dest.artifacts.entries(run_id).items()}
        assert list(mine.items()) == list(theirs.items())
        for name in mine:
            assert dest.artifacts.get(run_id, name) == source.artifacts.get(run_id, name)


def assert_clean(repo: Repository) -> None:
    problems = [p for p in verify(repo).problems if p.is_error]
    assert problems == []


def cas(repo: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--repo", repo, *args])


# round trips ---------------------------------------------------------------------------


def test_push_local_to_memory_then_pull_to_another_folder(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a")
    memory = Repository.init(f"memory://sync-{uuid.uuid4().hex}")
    sent = transfer(source, memory, source.run_ids())
    assert sent.runs_sent == ["run-0", "run-1", "run-2"]
    assert sent.objects_sent > 5 and sent.bytes_sent > 0 and sent.requests is None
    assert_same_runs(source, memory, source.run_ids())
    assert_clean(memory)

    back = Repository.init(str(tmp_path / "b"), fsync=False)
    pulled = transfer(memory, back, memory.run_ids())
    assert pulled.runs_sent == ["run-0", "run-1", "run-2"]
    assert_same_runs(source, back, source.run_ids())
    assert_clean(back)
    assert back.backend.read(run_key("run-1", RUNBOOK)) == RUNBOOK_TEXT
    assert [row.run_id for row in back.list_runs()] == ["run-2", "run-1", "run-0"]

    shown = cas(back.url, "inspect", "run-0", "--json")
    assert shown.exit_code == 0, shown.output
    assert {row["artifact"] for row in json.loads(shown.output)["artifacts"]} == {
        "shared", "own", "big",
    }  # fmt: skip
    exported = cas(back.url, "export", "run-0")
    assert exported.exit_code == 0, exported.output
    assert "row 1499 of run 0" in exported.output


def test_cli_push_and_pull_between_folders(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a")
    dest = tmp_path / "b"
    pushed = cas(source.url, "push", str(dest), "--json")
    assert pushed.exit_code == 0, pushed.output
    body = json.loads(pushed.output)
    assert body["runs_sent"] == ["run-0", "run-1", "run-2"] and body["objects_present"] == 0
    assert cas(str(dest), "verify").exit_code == 0

    again = cas(source.url, "push", str(dest))
    assert again.exit_code == 0, again.output
    assert "pushed 0 runs" in again.output and "0 objects sent" in again.output
    assert "skipped 3 already present" in again.output

    third = tmp_path / "c"
    refused = cas(str(third), "pull", str(dest), "--jobs", "0")
    assert refused.exit_code == 2 and "--jobs" in refused.output and not third.exists()
    pulled = cas(str(third), "pull", str(dest), "run-1", "-j", "2")
    assert pulled.exit_code == 0, pulled.output
    assert Repository.open(str(third)).run_ids() == ["run-1"]
    assert cas(str(third), "verify").exit_code == 0


def test_a_second_push_sends_nothing_and_a_new_run_sends_only_its_objects(
    tmp_path: Path,
) -> None:
    source = source_repo(tmp_path / "a")
    dest = Repository.init(str(tmp_path / "b"), fsync=False)
    transfer(source, dest, source.run_ids())
    again = transfer(source, dest, source.run_ids())
    assert again.runs_sent == [] and again.objects_sent == 0 and again.bytes_sent == 0
    assert set(again.runs_skipped.values()) == {"already present"}
    make_run(source, "run-3", seed=3, day=3)
    new = transfer(source, dest, source.run_ids())
    assert new.runs_sent == ["run-3"]
    assert new.objects_sent == 1 and new.objects_present == 1  # "own" new, "shared" there
    assert_clean(dest)


@pytest.mark.s3
def test_push_to_s3_and_pull_to_another_folder(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    source = source_repo(tmp_path / "a")
    endpoint = s3_bucket.storage_options["client_kwargs"]["endpoint_url"]
    url = f"{s3_bucket.url}/team"
    added = cas(source.url, "remote", "add", "origin", url, "--endpoint-url", endpoint)
    assert added.exit_code == 0, added.output
    pushed = cas(source.url, "push", "origin", "--json")
    assert pushed.exit_code == 0, pushed.output
    first = json.loads(pushed.output)
    assert first["runs_sent"] == ["run-0", "run-1", "run-2"] and first["requests"] > 0

    remote = Repository.open(url, **s3_bucket.storage_options)
    assert_same_runs(source, remote, source.run_ids())
    assert_clean(remote)

    again = json.loads(cas(source.url, "push", "origin", "--json").output)
    assert again["runs_sent"] == [] and again["objects_sent"] == 0
    assert again["requests"] < first["requests"]

    make_run(source, "run-3", seed=3, day=3)
    incremental = json.loads(cas(source.url, "push", "origin", "run-3", "--json").output)
    assert incremental["runs_sent"] == ["run-3"] and incremental["objects_sent"] == 1
    # 1 object + 3 entries + runbook + result + index mark, the listings and the reads:
    assert incremental["requests"] <= 12

    other = tmp_path / "other"
    assert cas(str(other), "init").exit_code == 0
    assert (
        cas(str(other), "remote", "add", "origin", url, "--endpoint-url", endpoint).exit_code == 0
    )
    pulled = cas(str(other), "pull", "origin", "--json")
    assert pulled.exit_code == 0, pulled.output
    local = Repository.open(str(other))
    assert_same_runs(source, local, source.run_ids())
    assert_clean(local)
    exported = cas(str(other), "export", "run-0", "--format", "markdown")
    assert exported.exit_code == 0, exported.output
    assert cas(str(other), "inspect", "run-3").exit_code == 0

    # garbage collection on both sides: the newest run stays whole on each
    for place, extra in ((url, ["--endpoint-url", endpoint]), (str(other), [])):
        swept = CliRunner().invoke(
            app, ["--repo", place, *extra, "gc", "--keep-last", "1", "--grace", "0s", "--json"]
        )
        assert swept.exit_code == 0, swept.output
        assert sorted(json.loads(swept.output)["runs_removed"]) == ["run-0", "run-1", "run-2"]
        checked = CliRunner().invoke(app, ["--repo", place, *extra, "verify"])
        assert checked.exit_code == 0, checked.output
    for repo in (Repository.open(url, **s3_bucket.storage_options), Repository.open(str(other))):
        assert repo.run_ids() == ["run-3"]
        assert_same_runs(source, repo, ["run-3"])


@pytest.mark.s3
def test_push_to_an_s3_tenant_stays_under_its_prefix(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    remote = Remote("cloud", s3_bucket.url, tenant="acme")
    dest = Repository.init(remote.location, **s3_bucket.storage_options)
    transfer(source, dest, source.run_ids())
    fs = s3_bucket.filesystem()
    keys = fs.find(s3_bucket.name)
    assert keys and all(key.startswith(f"{s3_bucket.name}/tenants/acme/") for key in keys)


def test_chunks_shared_by_payloads_copied_in_parallel_are_written_once(tmp_path: Path) -> None:
    source = Repository.init(str(tmp_path / "a"), fsync=False)
    rows = [{"n": i, "text": "y" * 300} for i in range(2000)]
    for index in range(4):
        edited = [*rows[:-1], {"n": -1, "text": f"edit {index}"}]
        source.artifacts.save("run-0", f"big{index}", Message(id="big", content={"rows": edited}))
    source.executions.save("run-0", ExecutionResult("run-0", "completed", START))
    chunks = set()
    for entry in source.artifacts.entries("run-0").values():
        chunks.update(source.payloads.chunk_list(entry.digest))
    dest = Repository.init(str(tmp_path / "b"), fsync=False)
    done = transfer(source, dest, ["run-0"], workers=4)
    assert done.objects_sent == len(chunks) == len(list(dest.payloads.chunks))
    assert_same_runs(source, dest, ["run-0"])
    assert_clean(dest)


# interruption ----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


class FailingBackend:
    """A backend that raises after `limit` writes and checks the ordering on each write."""

    def __init__(self, inner: Backend, limit: int, source: Repository) -> None:
        self.inner = inner
        self.limit = limit
        self.writes = 0
        self.index_checks = 0
        self.source = source
        self.url = inner.url
        self.supports_append = inner.supports_append

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self) -> None:
        self.writes += 1
        if self.writes > self.limit:
            raise Interrupted(f"write {self.writes}")

    def create(self, key: str, data: bytes) -> bool:
        self._count()
        return bool(self.inner.create(key, data))

    def write(self, key: str, data: bytes) -> None:
        self._count()
        if key.endswith(RESULT):
            self._check_before_result(key.split("/")[1])
        if key.startswith(f"{PACKS}/") and key.endswith(".idx"):
            self._check_before_index(key.split("/")[1][: -len(".idx")], data)
        self.inner.write(key, data)

    def append(self, key: str, data: bytes) -> None:
        self._count()
        self.inner.append(key, data)

    def _check_before_index(self, name: str, index: bytes) -> None:
        """A pack's index (its commit) is written after the pack and every payload."""
        dest = Repository(self.inner, {})
        for place in orjson.loads(index)["runs"]:
            packed = PackedRun(place[0], name, *place[1:])
            section = packed.cut(self.inner.read_range(pack_key(name), packed.start, packed.end))
            assert section.result == seal(self.source.executions.get(packed.run_id).to_dict())
            for line in section.manifest.splitlines():
                entry = ArtifactEntry.from_dict(orjson.loads(line))
                dest.payloads.get(entry.digest, entry.size)
        self.index_checks += 1

    def _check_before_result(self, run_id: str) -> None:
        """A result is written only once every payload and entry of its run is there."""
        dest = Repository(self.inner, {})
        entries = dest.artifacts.entries(run_id)
        assert list(entries) == list(self.source.artifacts.entries(run_id))
        for entry in entries.values():
            dest.payloads.get(entry.digest, entry.size)


@pytest.mark.parametrize("runs", [3, 12])  # 12: past FEW_RUNS, the push folds the index
def test_an_interrupted_push_resumes_and_sends_only_what_is_left(tmp_path: Path, runs: int) -> None:
    source = source_repo(tmp_path / "a", runs=runs)
    full = transfer(source, Repository.init(str(tmp_path / "full"), fsync=False), source.run_ids())
    limit = index_checks = 0
    while True:
        dest_path = tmp_path / f"d{limit}"
        Repository.init(str(dest_path), fsync=False)
        plain = Repository.open(str(dest_path), fsync=False)
        failing = FailingBackend(plain.backend, limit, source)
        broken = Repository(failing, plain.config)
        try:
            transfer(source, broken, source.run_ids(), workers=2)
        except Interrupted:
            pass
        else:
            break
        finally:
            index_checks += failing.index_checks
        # Whatever is visible is whole: every run with a result reads back in full.
        reopened = Repository.open(str(dest_path), fsync=False)
        assert_clean(reopened)
        for run_id in reopened.executions.list_runs():
            assert_same_runs(source, reopened, [run_id])
        resumed = transfer(source, reopened, source.run_ids())
        assert resumed.objects_sent + failing.writes - 1 >= 0
        assert resumed.objects_sent <= full.objects_sent
        assert_same_runs(source, reopened, source.run_ids())
        assert_clean(reopened)
        assert {row.run_id for row in reopened.list_runs()} == set(source.run_ids())
        assert RunIndex(reopened).check().ok and RunIndex(reopened).marks() == []
        limit += 1 if limit < 30 else 7
    assert limit > 10  # the loop really went through many interruption points
    assert (index_checks > 0) == (runs > FEW_RUNS)  # past FEW_RUNS new runs: packs


def test_a_push_of_many_runs_leaves_the_index_current(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=12)
    dest = Repository.init(f"memory://sync-{uuid.uuid4().hex}")
    transfer(source, dest, source.run_ids())
    index = RunIndex(dest)
    assert index.marks() == [] and list(dest.backend.list("index/pending")) == []
    for run_id in source.run_ids():  # listed from the index alone: the stores are not read
        dest.backend.delete([run_key(run_id, RESULT)])
    assert [row.run_id for row in dest.list_runs()] == [row.run_id for row in source.list_runs()]


@pytest.mark.slow
def test_a_push_killed_at_random_points_completes_on_the_next_push(tmp_path: Path) -> None:
    dest = tmp_path / "b"
    source = _kill_then_finish(tmp_path, str(dest), (dest / "config.json").exists)
    reopened = Repository.open(str(dest))
    assert_same_runs(source, reopened, source.run_ids())
    assert {row.run_id for row in reopened.list_runs()} == set(source.run_ids())
    assert cas(str(dest), "verify").exit_code == 0


@pytest.mark.slow
@pytest.mark.s3
def test_a_push_to_s3_killed_at_random_points_completes_on_the_next_push(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    url = f"{s3_bucket.url}/team"
    endpoint = s3_bucket.storage_options["client_kwargs"]["endpoint_url"]

    def verify_remote() -> None:
        checked = cas(url, "--endpoint-url", endpoint, "verify")
        assert checked.exit_code == 0, checked.output

    def remote_exists() -> bool:
        try:
            Repository.open(url, **s3_bucket.storage_options)
        except RepositoryError:  # not created yet
            return False
        return True

    source = _kill_then_finish(tmp_path, url, remote_exists, endpoint=endpoint, check=verify_remote)
    verify_remote()
    remote = Repository.open(url, **s3_bucket.storage_options)
    assert_same_runs(source, remote, source.run_ids())
    assert {row.run_id for row in remote.list_runs()} == set(source.run_ids())
    assert RunIndex(remote).check().ok


def _kill_then_finish(
    tmp_path: Path,
    dest: str,
    exists: Any,
    *,
    endpoint: str | None = None,
    check: Any = None,
) -> Repository:
    """Push 12 runs to `dest`, SIGKILLed at random points four times, each time
    checking what is visible there (`check`, else `cas verify`), then once more to
    the end; the source, whose runs the caller compares."""
    source = source_repo(tmp_path / "a", runs=12)
    if endpoint is not None:
        assert (
            cas(source.url, "remote", "add", "to", dest, "--endpoint-url", endpoint).exit_code == 0
        )
    target = "to" if endpoint is not None else dest
    command = [sys.executable, "-m", "cas.cli", "--repo", source.url, "push", target]
    env = {k: v for k, v in os.environ.items() if k not in {"CAS_REPO", "CAS_DEBUG"}}
    rng = random.Random(5)
    for _ in range(4):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if exists():
            if check is not None:
                check()
            else:
                assert cas(dest, "verify").exit_code == 0
    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    return source


# conflicts and selection ---------------------------------------------------------------


def test_a_run_that_differs_on_the_destination_is_refused(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=2)
    dest = Repository.init(str(tmp_path / "b"), fsync=False)
    make_run(dest, "run-1", seed=99, day=1)
    before = sorted(dest.backend.list(""))
    with pytest.raises(ConflictError, match="run-1"):
        transfer(source, dest, source.run_ids())
    assert sorted(dest.backend.list("")) == before  # refused before the first write
    refused = cas(source.url, "push", dest.url)
    assert refused.exit_code == 5 and "run-1" in refused.output


def test_a_partial_run_with_other_entries_is_refused(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    dest = Repository.init(str(tmp_path / "b"), fsync=False)
    dest.artifacts.save("run-0", "own", Message(id="own", content={"other": True}))
    with pytest.raises(ConflictError, match="'own'"):
        transfer(source, dest, ["run-0"])


def test_push_since_sends_only_later_runs(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=3)  # started 1, 2 and 3 March
    dest = tmp_path / "b"
    pushed = cas(source.url, "push", str(dest), "--since", "2026-03-02", "--json")
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["runs_sent"] == ["run-1", "run-2"]
    both = cas(source.url, "push", str(dest), "run-0", "--all")
    assert both.exit_code == 2


def test_running_runs_are_not_sent(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    source.executions.save("run-9", ExecutionResult("run-9", "running", START))
    done = transfer(source, Repository.init(str(tmp_path / "b")), source.run_ids())
    assert done.runs_sent == ["run-0"] and done.runs_skipped == {"run-9": "still running"}


# remotes ---------------------------------------------------------------------------------


def test_remotes_add_list_remove(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    target = tmp_path / "backup"
    assert cas(source.url, "remote", "add", "backup", str(target)).exit_code == 0
    added = cas(source.url, "remote", "add", "cloud", "s3://bucket/p", "--tenant", "acme")
    assert added.exit_code == 0, added.output
    listed = json.loads(cas(source.url, "remote", "list", "--json").output)
    assert [(r["name"], r["location"]) for r in listed] == [
        ("backup", str(target)), ("cloud", "s3://bucket/p/tenants/acme"),
    ]  # fmt: skip
    assert cas(source.url, "remote", "add", "backup", "/elsewhere").exit_code == 5
    assert "backup" in cas(source.url, "remote", "list").output

    pushed = cas(source.url, "push", "backup")
    assert pushed.exit_code == 0, pushed.output
    assert Repository.open(str(target)).run_ids() == ["run-0"]

    assert cas(source.url, "remote", "remove", "backup").exit_code == 0
    assert cas(source.url, "remote", "remove", "backup").exit_code == 3
    assert [r["name"] for r in json.loads(cas(source.url, "remote", "list", "--json").output)] == [
        "cloud"
    ]


def test_a_bare_word_that_names_no_remote_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    monkeypatch.chdir(tmp_path)
    refused = cas(source.url, "push", "origin")
    assert refused.exit_code == 3 and "no remote 'origin'" in refused.output
    assert not (tmp_path / "origin").exists()
    assert cas(source.url, "push", "../up").exit_code == 0  # a path with a '/' is a place
    fresh = tmp_path / "fresh"
    assert cas(str(fresh), "pull", "origin").exit_code == 3
    assert not fresh.exists()  # pull creates its repository only once the remote is found
    assert cas(str(fresh), "pull", str(tmp_path / "missing")).exit_code == 6
    assert not fresh.exists() and not (tmp_path / "missing").exists()


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS)
def test_hostile_tenant_names_are_refused_before_any_write(tmp_path: Path, tenant: str) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    before = sorted(source.backend.list(""))
    target = tmp_path / "remote"
    refused = cas(source.url, "remote", "add", "evil", str(target), "--tenant", tenant)
    assert refused.exit_code == 2, refused.output
    assert sorted(source.backend.list("")) == before
    with pytest.raises(InvalidIdError):
        Remote("evil", str(target), tenant=tenant)
    assert not target.exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".x", ""])
def test_hostile_remote_names_are_refused(tmp_path: Path, name: str) -> None:
    source = source_repo(tmp_path / "a", runs=1)
    assert cas(source.url, "remote", "add", name, str(tmp_path / "r")).exit_code == 2
    with pytest.raises(InvalidInputError):
        Remote(name, str(tmp_path / "r"))


def test_the_cli_default_jobs_is_the_library_default() -> None:
    from cas.cli_sync import DEFAULT_JOBS
    from cas.sync import DEFAULT_WORKERS

    assert DEFAULT_JOBS == DEFAULT_WORKERS


def test_progress_reports_payloads_then_entries_then_results(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a")
    seen: list[tuple[str, int, int, int]] = []
    sent = transfer(
        source,
        Repository.init(str(tmp_path / "b"), fsync=False),
        source.run_ids(),
        progress=lambda *call: seen.append(call),
    )
    phases = list(dict.fromkeys(phase for phase, *_ in seen))
    assert phases == ["payloads", "entries", "results"]
    for phase in phases:
        calls = [call for call in seen if call[0] == phase]
        assert [done for _, done, _, _ in calls] == list(range(len(calls)))  # 0, 1, ... in order
        assert calls[-1][1] == calls[-1][2]  # ends done
    assert seen[-1] == ("results", 3, 3, sent.bytes_sent)


class _InFlight:
    """A backend that counts the writes in progress at once (each takes a moment)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.supports_append = inner.supports_append
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, key: str, data: bytes) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.01)
        self.inner.write(key, data)
        with self.lock:
            self.now -= 1


def test_jobs_bounds_the_payload_writes_in_flight(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "a", runs=3)
    plain = Repository.init(f"memory://sync-{uuid.uuid4().hex}")
    counting = _InFlight(plain.backend)
    done = transfer(source, Repository(counting, plain.config), source.run_ids(), workers=2)
    assert done.objects_sent > 20
    assert counting.most == 2  # reads run ahead in more threads; writes stay within --jobs
