"""One test (or a few) per invariant of `docs/design.md`, named after it.

Ordering is observed with `RecordingBackend`, a delegating wrapper that logs every
call that changes or syncs the medium; local durability is observed by also logging
``os.fsync`` / ``os.replace`` with the path behind each descriptor. Crashes are
simulated with `CrashingBackend`, which raises before its k-th mutating call, after
which a fresh `Repository` over the raw backend must verify clean.

Every test runs against a real local folder; the ones that hold for every medium
also run against fsspec's memory filesystem, which stands in for S3 (no append,
one PUT per write).
"""

from __future__ import annotations

import builtins
import concurrent.futures
import errno
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cas.objects
from cas.digest import Digest, canonical_json
from cas.errors import (
    IntegrityError,
    InvalidIdError,
    InvalidInputError,
    RepositoryError,
    SchemaValidationError,
)
from cas.executor import Executor
from cas.ids import is_valid_id
from cas.model import ArtifactOutcome, ExecutionResult, Message, RunStatus, SchemaRef
from cas.objects import Backend, FsspecBackend, LocalBackend, check_key, decompress, is_temp_name
from cas.owner import OWNER
from cas.payloads import PayloadStore
from cas.planner import plan
from cas.plugins import connectors, processors
from cas.repository import CONFIG, RUNBOOK, Repository
from cas.runbook import load_runbook
from cas.stores import MANIFEST, RESULT, SEGMENTS, run_key
from cas.verify import verify

RUN = "run-1"
SCHEMA = SchemaRef("finding", "1.0.0")
SCHEMA_DOC: dict[str, Any] = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer"}},
}
Event = tuple[str, str]

# --------------------------------------------------------------------------- helpers


class Crash(Exception):
    """The simulated process death."""


class RecordingBackend:
    """Delegates to `inner` and logs every mutating or syncing call as (verb, key)."""

    def __init__(self, inner: Backend, events: list[Event] | None = None) -> None:
        self.inner = inner
        self.events: list[Event] = [] if events is None else events
        self.url = inner.url
        self.supports_append = inner.supports_append

    def _log(self, verb: str, key: str) -> None:
        self.events.append((verb, key))

    def write(self, key: str, data: bytes) -> None:
        self._log("write", key)
        self.inner.write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self._log("write", key)  # an exclusive write (the index lock), ordered as writes are
        return self.inner.create(key, data)

    def append(self, key: str, data: bytes) -> None:
        self._log("append", key)
        self.inner.append(key, data)

    def sync(self, key: str) -> None:
        self._log("sync", key)
        self.inner.sync(key)

    def delete(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            self._log("delete", key)
            self.inner.delete([key])

    def read(self, key: str) -> bytes:
        return self.inner.read(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self.inner.read_range(key, start, end)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def children(self, prefix: str) -> builtins.list[str]:
        return self.inner.children(prefix)


class CrashingBackend(RecordingBackend):
    """A `RecordingBackend` that raises `Crash` instead of its `crash_at`-th mutating call."""

    def __init__(self, inner: Backend, crash_at: int) -> None:
        super().__init__(inner)
        self.crash_at = crash_at

    def _log(self, verb: str, key: str) -> None:
        if len(self.events) + 1 == self.crash_at:
            raise Crash(f"crash before {verb} {key}")
        super()._log(verb, key)


def _memory_backend() -> FsspecBackend:
    # fsspec's memory filesystem is one global store: a fresh root per test.
    return FsspecBackend(f"memory://cas-test-{uuid.uuid4().hex}")


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A raw backend of each kind, holding nothing yet."""
    if request.param == "local":
        return LocalBackend(tmp_path / "repo")
    return _memory_backend()


def _repo(backend: Backend) -> Repository:
    """A repository over `backend` (config.json written, or read if present)."""
    return Repository(backend, Repository.init(backend.url).config)


def _recorded(backend: Backend) -> tuple[Repository, RecordingBackend]:
    """A repository whose every mutating call after init is recorded."""
    recorder = RecordingBackend(backend)
    return Repository(recorder, _repo(backend).config), recorder


def _message(n: int, **envelope: Any) -> Message:
    return Message(id=f"m{n}", content={"n": n}, schema=SCHEMA, **envelope)


def _result(
    run_id: str, artifacts: Iterable[str], status: RunStatus = "completed"
) -> ExecutionResult:
    return ExecutionResult(
        run_id=run_id,
        status=status,
        started_at=datetime(2025, 3, 1, tzinfo=UTC),
        artifacts={a: ArtifactOutcome("completed") for a in artifacts},
    )


def _scenario(repo: Repository) -> None:
    """What an executor does: result 'running', three artifacts (two share bytes), result."""
    repo.executions.save(RUN, _result(RUN, [], status="running"))
    repo.artifacts.save(RUN, "a1", _message(1))
    repo.artifacts.save(RUN, "a2", _message(1))
    repo.artifacts.save(RUN, "a3", _message(3))
    repo.executions.save(RUN, _result(RUN, ["a1", "a2", "a3"]))


def _lines(backend: Backend, key: str) -> list[bytes]:
    """The non-empty lines of `key` (none if it is absent)."""
    return [line for line in backend.read(key).split(b"\n") if line] if backend.exists(key) else []


def _all_keys(backend: Backend) -> set[str]:
    return set(backend.list(""))


def _entry_digest(key: str, backend: Backend) -> str:
    """The digest the newest record in a manifest file names."""
    last = backend.read(key).rstrip(b"\n").rsplit(b"\n", 1)[-1]
    digest: str = orjson.loads(last)["digest"]
    return digest


def _object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


def _fd_path(fd: int) -> str:
    return str(Path(f"/proc/self/fd/{fd}").readlink())


@pytest.fixture
def os_calls(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Log ``os.fsync`` (with the path of its descriptor) and ``os.replace`` as they happen."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    calls: list[Event] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def _spy_backend(calls: list[Event], inner: LocalBackend) -> RecordingBackend:
    """A recorder that writes its events into the same list as `os_calls`."""
    return RecordingBackend(inner, events=calls)


def _assert_consistent(repo: Repository) -> None:
    """Verify passes and no entry names a missing object."""
    report = verify(repo)
    assert report.ok, report.to_dict()
    for run_id in repo.run_ids():
        for entry in repo.artifacts.entries(run_id).values():
            assert repo.objects.backend.exists(repo.objects.key(entry.digest))


# --------------------------------------------------------------------------- I1


def test_invariant_1_object_before_entry(backend: Backend) -> None:
    """Every manifest record is written after the object it names (or that object existed)."""
    repo, recorder = _recorded(backend)
    _scenario(repo)
    written: set[str] = set()
    appended: dict[str, int] = {}
    # Segments are merged into manifest.jsonl at the result (I25): the n-th is its n-th line.
    merged = _lines(backend, run_key(RUN, MANIFEST)) if not backend.supports_append else []
    segments = 0
    for verb, key in recorder.events:
        if verb == "write" and key.startswith("objects/"):
            written.add(key)
        elif verb == "append" and key.endswith(MANIFEST):
            appended[key] = appended.get(key, 0) + 1
            line = backend.read(key).split(b"\n")[appended[key] - 1]
            assert _object_key(orjson.loads(line)["digest"]) in written, key
        elif verb == "write" and f"/{SEGMENTS}/" in key:
            data = backend.read(key) if backend.exists(key) else merged[segments]
            segments += 1
            assert _object_key(orjson.loads(data)["digest"]) in written, key
    assert len(written) == 2  # three saves, two distinct payloads


def test_invariant_1_object_is_durable_before_entry(tmp_path: Path, os_calls: list[Event]) -> None:
    """Locally the object file and its folder are fsynced before the entry is appended."""
    Repository.init(str(tmp_path / "repo"))
    spy = _spy_backend(os_calls, LocalBackend(tmp_path / "repo"))
    repo = Repository(spy, Repository.open(str(tmp_path / "repo")).config)
    os_calls.clear()
    repo.artifacts.save(RUN, "a1", _message(1))
    append = os_calls.index(("append", run_key(RUN, MANIFEST)))
    obj = tmp_path / "repo" / _object_key(_entry_digest(run_key(RUN, MANIFEST), spy))
    assert os_calls.index(("fsync", _temp_of(os_calls, obj))) < append
    assert os_calls.index(("fsync", str(obj.parent))) < append


def _temp_of(calls: list[Event], final: Path) -> str:
    """The temporary path that was renamed onto `final`."""
    for verb, detail in calls:
        if verb == "replace" and detail.endswith(f" -> {final}"):
            return detail.split(" -> ")[0]
    raise AssertionError(f"{final} was never renamed into place")


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_invariant_1_crash_at_any_write_leaves_a_consistent_repository(
    kind: str, tmp_path: Path
) -> None:
    """Dying before any single write, append or sync never leaves an entry without its object."""
    repo, recorder = _recorded(_fresh(kind, tmp_path, "count"))
    _scenario(repo)
    total = len(recorder.events)
    assert total >= 7  # 2 objects, 3 records, 2 results (+ 2 syncs where appending)
    for crash_at in range(1, total + 1):
        raw = _fresh(kind, tmp_path, f"crash{crash_at}")
        config = _repo(raw).config
        with pytest.raises(Crash):
            _scenario(Repository(CrashingBackend(raw, crash_at), config))
        _assert_consistent(Repository(raw, config))


def _fresh(kind: str, tmp_path: Path, name: str) -> Backend:
    return LocalBackend(tmp_path / name) if kind == "local" else _memory_backend()


# --------------------------------------------------------------------------- I2


def test_invariant_2_manifest_synced_before_execution_result(backend: Backend) -> None:
    """The run's manifest is synced after its last record and before the result is written."""
    repo, recorder = _recorded(backend)
    _scenario(repo)
    events = recorder.events
    result_writes = [i for i, e in enumerate(events) if e == ("write", run_key(RUN, RESULT))]
    assert len(result_writes) == 2
    final = result_writes[-1]
    records = [i for i, (_, key) in enumerate(events) if key.endswith(MANIFEST) or SEGMENTS in key]
    assert records and max(records) < final
    if backend.supports_append:
        assert ("sync", run_key(RUN, MANIFEST)) in events[max(records) : final]


def test_invariant_2_manifest_is_fsynced_before_execution_result(
    tmp_path: Path, os_calls: list[Event]
) -> None:
    """Locally: fsync(manifest.jsonl) happens before the result's temporary file is even made."""
    Repository.init(str(tmp_path / "repo"))
    spy = _spy_backend(os_calls, LocalBackend(tmp_path / "repo"))
    repo = Repository(spy, Repository.open(str(tmp_path / "repo")).config)
    repo.artifacts.save(RUN, "a1", _message(1))
    os_calls.clear()
    repo.executions.save(RUN, _result(RUN, ["a1"]))
    manifest = str(tmp_path / "repo" / run_key(RUN, MANIFEST))
    assert os_calls.index(("fsync", manifest)) < os_calls.index(("write", run_key(RUN, RESULT)))


# --------------------------------------------------------------------------- I3


def test_invariant_3_every_write_is_atomic(tmp_path: Path, os_calls: list[Event]) -> None:
    """Local write: hidden temp in its folder, fsync, rename, fsync the folder; no leftovers."""
    backend = LocalBackend(tmp_path / "repo")
    backend.write("runs/r/x.json", b"first")
    os_calls.clear()
    backend.write("runs/r/x.json", b"second")
    folder = tmp_path / "repo" / "runs" / "r"
    temp = _temp_of(os_calls, folder / "x.json")
    assert Path(temp).parent == folder and is_temp_name(Path(temp).name)
    assert os_calls == [
        ("fsync", temp),
        ("replace", f"{temp} -> {folder / 'x.json'}"),
        ("fsync", str(folder)),
    ]
    assert backend.read("runs/r/x.json") == b"second"
    assert not [k for k in backend.list("") if is_temp_name(k.rsplit("/", 1)[-1])]


def test_invariant_3_crash_before_rename_keeps_old_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that dies before its rename leaves the old bytes and only a flagged temporary."""
    repo = Repository.init(str(tmp_path / "repo"))
    _scenario(repo)
    key = run_key(RUN, RESULT)
    before = repo.backend.read(key)

    def die(src: str, dst: str) -> None:
        raise Crash(f"crash before rename {src}")

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(Crash):
        repo.executions.save(RUN, _result(RUN, ["a1"]))
    monkeypatch.undo()
    assert repo.backend.read(key) == before
    report = verify(Repository.open(str(tmp_path / "repo")))
    assert report.ok
    assert [p.kind for p in report.problems] == ["stale_temp"]


def test_invariant_3_one_put_per_write_on_object_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there is no rename (S3, memory), a write is exactly one whole-object PUT."""
    backend = _memory_backend()
    repo = _repo(backend)
    puts: list[str] = []
    real = backend.fs.pipe_file

    def pipe_file(path: str, data: bytes, **kwargs: Any) -> None:
        puts.append(path)
        real(path, data, **kwargs)

    monkeypatch.setattr(backend.fs, "pipe_file", pipe_file)
    recorder = RecordingBackend(backend)
    _scenario(Repository(recorder, repo.config))
    assert [v for v, _ in recorder.events if v == "append"] == []
    writes = [k for v, k in recorder.events if v == "write"]
    assert puts == [f"{backend.root}/{k}" for k in writes]


def test_invariant_3_new_folders_are_synced_into_their_parent(
    tmp_path: Path, os_calls: list[Event]
) -> None:
    """Every folder a save creates is fsynced into its parent before the save returns."""
    root = tmp_path / "repo"
    repo = Repository.init(str(root))
    before = {p for p in root.rglob("*") if p.is_dir()}
    os_calls.clear()
    _scenario(repo)
    created = {p for p in root.rglob("*") if p.is_dir()} - before
    assert created  # objects/, objects/xx/, runs/, runs/run-1/
    synced = {detail for verb, detail in os_calls if verb == "fsync"}
    assert {str(p.parent) for p in created} <= synced


# --------------------------------------------------------------------------- I4


def test_invariant_4_objects_are_write_once(backend: Backend) -> None:
    """Saving bytes that already exist writes no object; the stored one is left untouched."""
    repo, recorder = _recorded(backend)
    repo.artifacts.save(RUN, "a1", _message(1))
    entry = repo.artifacts.entry(RUN, "a1")
    key = repo.objects.key(entry.digest)
    stamp = (Path(backend.url) / key).stat() if isinstance(backend, LocalBackend) else None
    recorder.events.clear()
    repo.artifacts.save(RUN, "a2", _message(1, source="elsewhere"))
    repo.artifacts.save("run-2", "a1", _message(1))
    assert [k for v, k in recorder.events if k.startswith("objects/")] == []
    assert repo.objects.put(repo.objects.get(entry.digest)) == (entry.digest, False)
    if stamp is not None:
        again = (Path(backend.url) / key).stat()
        assert (again.st_ino, again.st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)


# --------------------------------------------------------------------------- I5


def test_invariant_5_every_read_rehashes(backend: Backend) -> None:
    """Damaged object bytes raise IntegrityError naming digest and location; verify reports it."""
    repo = _repo(backend)
    _scenario(repo)
    entry = repo.artifacts.entry(RUN, "a3")
    key = repo.objects.key(entry.digest)
    data = bytearray(backend.read(key))
    data[-3] ^= 0x01  # same length, still plausible JSON
    backend.write(key, bytes(data))
    with pytest.raises(IntegrityError) as caught:
        repo.artifacts.get(RUN, "a3")
    assert caught.value.digest == entry.digest.hex
    assert caught.value.location == key
    problems = verify(repo).problems
    assert [(p.kind, p.subject, p.runs) for p in problems] == [
        ("corrupt_object", entry.digest.hex, (RUN,))
    ]


# --------------------------------------------------------------------------- I6


@pytest.mark.parametrize(("old", "new"), [(b'"size":', b'"size":1'), (b'"a3"', b'"a4"')])
def test_invariant_6_sealed_manifest_records(backend: Backend, old: bytes, new: bytes) -> None:
    """A manifest record edited after sealing fails its check; verify reports damaged_record."""
    repo = _repo(backend)
    _scenario(repo)
    key = _manifest_files(repo)[-1]
    data = backend.read(key)
    assert old in data
    backend.write(key, data.replace(old, new, 1))
    with pytest.raises(IntegrityError, match="check mismatch"):
        repo.artifacts.entries(RUN)
    # The run's manifest is unreadable as a whole, so every completed artifact lacks an entry.
    kinds = [p.kind for p in verify(repo).problems]
    assert kinds == ["damaged_record", "missing_entry", "missing_entry", "missing_entry"]


def test_invariant_6_sealed_execution_result(backend: Backend) -> None:
    """An execution result edited after sealing fails its check; verify reports damaged_record."""
    repo = _repo(backend)
    _scenario(repo)
    key = run_key(RUN, RESULT)
    backend.write(key, backend.read(key).replace(b'"completed"', b'"failed"   ', 1))
    with pytest.raises(IntegrityError, match="check mismatch"):
        repo.executions.get(RUN)
    assert [p.kind for p in verify(repo).problems] == ["damaged_record"]


def _manifest_files(repo: Repository) -> list[str]:
    return [
        k for k in sorted(repo.backend.list(f"runs/{RUN}")) if k.endswith(".jsonl")
    ] or pytest.fail("no manifest")


# --------------------------------------------------------------------------- I7


def _torn(root: Path) -> bytes:
    """A repository whose manifest ends in half a record, as a crash mid-append leaves it."""
    _scenario(Repository.init(str(root)))
    manifest = root / run_key(RUN, MANIFEST)
    whole = manifest.read_bytes()
    with manifest.open("ab") as file:
        file.write(whole.split(b"\n")[0][:57])
    return whole


def test_invariant_7_torn_tail_is_ignored_by_readers(tmp_path: Path) -> None:
    """A half-written last line is skipped: every whole record still reads, verify passes."""
    _torn(tmp_path / "repo")
    reader = Repository.open(str(tmp_path / "repo"))
    assert reader.artifacts.list_artifacts(RUN) == ["a1", "a2", "a3"]
    _assert_consistent(reader)


def test_invariant_7_torn_tail_is_cut_by_the_next_appender(tmp_path: Path) -> None:
    """The next process to append cuts the torn bytes first, so its record starts a line."""
    root = tmp_path / "repo"
    whole = _torn(root)
    Repository.open(str(root)).artifacts.save(RUN, "a4", _message(4))
    data = (root / run_key(RUN, MANIFEST)).read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    assert data.count(b"\n") == whole.count(b"\n") + 1
    assert Repository.open(str(root)).artifacts.list_artifacts(RUN) == ["a1", "a2", "a3", "a4"]


def test_invariant_7_next_appender_continues_a_whole_manifest(tmp_path: Path) -> None:
    """A second process (or Repository) appends to a run another one started."""
    root = tmp_path / "repo"
    Repository.init(str(root)).artifacts.save(RUN, "a1", _message(1))
    Repository.open(str(root)).artifacts.save(RUN, "a2", _message(2))
    assert Repository.open(str(root)).artifacts.list_artifacts(RUN) == ["a1", "a2"]


def test_invariant_7_failed_append_is_cut_by_the_same_appender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that fails half-way (ENOSPC, EIO, KeyboardInterrupt) loses only its own record."""
    repo = Repository.init(str(tmp_path / "repo"))
    repo.artifacts.save(RUN, "a1", _message(1))
    real = cas.objects._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        if _fd_path(fd).endswith(MANIFEST):
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(cas.objects, "_write_all", half_then_full)
    with pytest.raises(OSError, match="No space"):
        repo.artifacts.save(RUN, "a2", _message(2))
    monkeypatch.setattr(cas.objects, "_write_all", real)
    repo.artifacts.save(RUN, "a3", _message(3))
    assert Repository.open(str(tmp_path / "repo")).artifacts.list_artifacts(RUN) == ["a1", "a3"]


# --------------------------------------------------------------------------- I8

BAD_KEYS = ["../x", "a/../../x", "/etc/x", ".hidden", "a/.x.tmp", "a//b", "", "a/", "a\\b", ".."]
BAD_IDS = ["..", ".", "../evil", "a/b", "/abs", ".hidden", "a..b", "", "x" * 129, "a b", "é"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invariant_8_backend_refuses_keys_outside_root(backend: Backend, key: str) -> None:
    """The backend re-checks every key, whatever layer above built it."""
    calls: list[Callable[[], object]] = [
        lambda: backend.write(key, b"x"),
        lambda: backend.read(key),
        lambda: backend.exists(key),
        lambda: backend.delete([key]),
    ]
    if backend.supports_append:
        calls.append(lambda: backend.append(key, b"x\n"))
    for call in calls:
        with pytest.raises(InvalidInputError, match="invalid storage key"):
            call()


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invariant_8_nothing_written_outside_root(tmp_path: Path, bad: str) -> None:
    """Bad run or artifact ids are refused by the store before any path is built."""
    root = tmp_path / "repo"
    repo = Repository.init(str(root))
    outside = set(tmp_path.rglob("*"))
    with pytest.raises(InvalidIdError):
        repo.artifacts.save(bad, "a1", _message(1))
    with pytest.raises(InvalidIdError):
        repo.artifacts.save(RUN, bad, _message(1))
    with pytest.raises((InvalidIdError, InvalidInputError)):
        repo.executions.save(bad, _result(RUN, []))
    assert set(tmp_path.rglob("*")) == outside


# --------------------------------------------------------------------------- I9


def _content_mutated_to_hold_a_set() -> Message:
    message = _message(1)
    message.content["tags"] = {"a"}
    return message


def _message_with_int_key() -> Message:
    # Built past the census hole tested below; the store must still refuse it.
    return Message(id="m", content={"outer": {1: "value"}})


BAD_SAVES: dict[str, Callable[[Repository], object]] = {
    "run id": lambda r: r.artifacts.save("../x", "a", _message(1)),
    "artifact id": lambda r: r.artifacts.save(RUN, ".a", _message(1)),
    "not a message": lambda r: r.artifacts.save(RUN, "a", {"id": "m"}),  # type: ignore[arg-type]
    "content changed in place": lambda r: r.artifacts.save(
        RUN, "a", _content_mutated_to_hold_a_set()
    ),
    "non-string key": lambda r: r.artifacts.save(RUN, "a", _message_with_int_key()),
    "schema violation": lambda r: r.artifacts.save(
        RUN, "a", Message(id="m", content={"n": "one"}, schema=SCHEMA)
    ),
    "result for another run": lambda r: r.executions.save(RUN, _result("run-2", [])),
    "result not a result": lambda r: r.executions.save(RUN, {"run_id": RUN}),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_SAVES))
def test_invariant_9_bad_input_writes_nothing(backend: Backend, case: str) -> None:
    """Every refusal is an InvalidInputError raised before the first write."""
    repo = _repo(backend)
    repo.schemas.add(SCHEMA, SCHEMA_DOC)
    before = _all_keys(backend)
    with pytest.raises(InvalidInputError) as caught:
        BAD_SAVES[case](repo)
    if case == "schema violation":
        assert isinstance(caught.value, SchemaValidationError)
    assert _all_keys(backend) == before


def test_invariant_9_invalid_content_is_refused_at_construction() -> None:
    """Non-JSON content never becomes a Message, so it cannot reach a store."""
    for content in ({"x": float("nan")}, {"x": b"raw"}, {"x": {1, 2}}, {"x": (1,)}):
        with pytest.raises(InvalidInputError):
            Message(id="m", content=content)


@pytest.mark.parametrize("key", [1, 1.5, True, None])
def test_invariant_9_non_string_keys_are_refused_at_construction(key: object) -> None:
    """JSON object keys are strings; anything else is refused when the Message is built."""
    with pytest.raises(InvalidInputError):
        Message(id="m", content={"outer": {key: "value"}})


def test_invariant_9_bad_envelope_writes_nothing(backend: Backend) -> None:
    """Envelope fields (context changed in place, a non-JSON source) are checked before writing."""
    repo = _repo(backend)
    before = _all_keys(backend)
    message = Message(id="m", content={"n": 1}, context={"path": "a.py"})
    message.context["seen"] = {"a.py"}
    with pytest.raises(InvalidInputError):
        repo.artifacts.save(RUN, "a1", message)
    assert _all_keys(backend) == before


# --------------------------------------------------------------------------- I10


def test_invariant_10_last_entry_wins(backend: Backend) -> None:
    """Saving an artifact id again replaces it for readers; the old object stays."""
    repo = _repo(backend)
    repo.artifacts.save(RUN, "a1", _message(1))
    repo.artifacts.save(RUN, "a2", _message(2))
    repo.artifacts.save(RUN, "a1", _message(3))
    assert repo.artifacts.get(RUN, "a1").content == {"n": 3}
    assert list(repo.artifacts.entries(RUN)) == ["a2", "a1"]
    assert len(list(repo.objects)) == 3


def test_invariant_10_segments_sort_in_save_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segment names increase strictly within a process even when the wall clock stalls."""
    backend = _memory_backend()
    repo = _repo(backend)
    monkeypatch.setattr("cas.stores.time.time_ns", lambda: 1_700_000_000_000_000_000)
    for n in range(20):
        repo.artifacts.save(RUN, "a1", _message(n))
    segments = backend.children(run_key(RUN, SEGMENTS))
    assert len(segments) == 20
    assert repo.artifacts.get(RUN, "a1").content == {"n": 19}


# --------------------------------------------------------------------------- I11

ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True).filter(is_valid_id)


@given(ids)
def test_invariant_11_ids_are_one_segment_and_never_temporaries(value: str) -> None:
    """Every valid id is a safe key segment and never looks like a temporary or hidden file."""
    assert check_key(value) == value
    assert "/" not in value and not value.startswith(".")
    assert not is_temp_name(value)
    assert check_key(run_key(value, MANIFEST))


def test_invariant_11_temporaries_are_never_read_as_data(backend: Backend) -> None:
    """Leftover temporaries are skipped by listings and readers; verify only warns."""
    repo = _repo(backend)
    _scenario(repo)
    entry = repo.artifacts.entry(RUN, "a1")
    shard, name = entry.digest.path.split("/")
    temps = [
        f"objects/{shard}/.{name}.0123456789ab.tmp",
        f"{run_key(RUN, SEGMENTS)}/.00000000000000000001-0000.jsonl.0123456789ab.tmp",
        f"runs/.{RUN}.0123456789ab.tmp",
    ]
    for temp in temps:  # write them below the key check, as a crashed writer would leave them
        _raw_write(backend, temp, b"garbage")
    assert sorted(repo.objects) == sorted({e.digest for e in repo.artifacts.entries(RUN).values()})
    assert repo.artifacts.list_artifacts(RUN) == ["a1", "a2", "a3"]
    assert repo.run_ids() == [RUN]
    report = verify(repo)
    assert report.ok
    assert sorted(p.subject for p in report.problems) == sorted(temps)
    assert {p.kind for p in report.problems} == {"stale_temp"}


def _raw_write(backend: Backend, key: str, data: bytes) -> None:
    if isinstance(backend, LocalBackend):
        path = backend.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        assert isinstance(backend, FsspecBackend)
        backend.fs.pipe_file(f"{backend.root}/{key}", data)


# --------------------------------------------------------------------------- I12


def test_invariant_12_digest_is_blake3_of_canonical_payload(backend: Backend) -> None:
    """The object is canonical {content, schema}; its name is its BLAKE3; the envelope stays out."""
    repo = _repo(backend)
    first = Message(
        id="m1", content={"b": [1, 2.5, "é"], "a": {"y": None, "x": True}}, schema=SCHEMA
    )
    second = Message(
        id="other",
        content={"a": {"x": True, "y": None}, "b": [1, 2.5, "é"]},
        schema=SCHEMA,
        source="elsewhere",
        timestamp=datetime(2025, 1, 1, tzinfo=UTC),
        context={"k": 1},
    )
    repo.artifacts.save(RUN, "a1", first)
    repo.artifacts.save("run-2", "a1", second)
    one, two = repo.artifacts.entry(RUN, "a1"), repo.artifacts.entry("run-2", "a1")
    assert one.digest == two.digest
    key = repo.objects.key(one.digest)
    data = decompress(backend.read(key), one.digest, key)  # objects are zstd frames
    expected = canonical_json({"schema": SCHEMA.to_dict(), "content": first.content})
    assert data == expected == first.payload()
    assert blake3.blake3(data).hexdigest() == one.digest.hex  # `zstd -dc KEY | b3sum`
    assert one.size == len(data)
    assert b"other" not in data and one.envelope != two.envelope


# --------------------------------------------------------------------------- I13


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("format", "cas-repository/3"), ("canonical_json", "cas-json-2"), ("format", None)],
)
def test_invariant_13_unknown_format_is_refused(
    tmp_path: Path, field_name: str, value: str | None
) -> None:
    """A repository of an unknown format or canonical form is neither read nor written."""
    root = tmp_path / "repo"
    config = Repository.init(str(root)).config
    (root / CONFIG).write_bytes(orjson.dumps({**config, field_name: value}))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for opener in (Repository.open, Repository.init):
        with pytest.raises(RepositoryError):
            opener(str(root))
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- I14


def test_invariant_14_writers_of_different_runs_do_not_interfere(backend: Backend) -> None:
    """Threads sharing a repository, and separate repositories, may write different runs at once."""
    shared = _repo(backend)

    def run(n: int) -> None:
        repo = shared if n % 2 else _repo(backend)  # odd: shared object, even: own instance
        run_id = f"run-{n}"
        for a in range(10):
            repo.artifacts.save(run_id, f"a{a}", _message(a % 4))  # payloads shared across runs
        repo.executions.save(run_id, _result(run_id, [f"a{a}" for a in range(10)]))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, range(16)))
    repo = _repo(backend)
    assert repo.run_ids() == sorted(f"run-{n}" for n in range(16))
    assert len(list(repo.objects)) == 4
    _assert_consistent(repo)
    assert verify(repo).problems == []


# --------------------------------------------------------------------------- I15


def test_invariant_15_result_marks_completed_only_saved_artifacts(backend: Backend) -> None:
    """The store does not enforce it; verify reports a completed artifact without an entry."""
    repo = _repo(backend)
    repo.artifacts.save(RUN, "a1", _message(1))
    repo.executions.save(RUN, _result(RUN, ["a1", "ghost"]))
    problems = verify(repo).problems
    assert [(p.kind, p.subject, p.runs) for p in problems] == [("missing_entry", "ghost", (RUN,))]
    assert not verify(repo).ok


# --------------------------------------------------------------------------- I16


def _chunky(rows: int) -> Message:
    """A message whose payload has many ``},{`` boundaries (about 220 bytes a row)."""
    return Message(id="big", content={"rows": [{"n": n, "text": "x" * 200} for n in range(rows)]})


def test_invariant_16_chunk_list_is_written_after_its_chunks(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks, then the list naming them, then the entry; a read checks each chunk and the whole."""
    monkeypatch.setattr(PayloadStore, "threshold", 4 * 1024)
    repo, recorder = _recorded(backend)
    repo.artifacts.save(RUN, "big", _chunky(200))
    keys = [key for _, key in recorder.events]
    chunks = [i for i, key in enumerate(keys) if key.startswith("chunks/")]
    lists = [i for i, key in enumerate(keys) if key.startswith("lists/")]
    entry_at = next(i for i, key in enumerate(keys) if key.startswith(f"runs/{RUN}/"))
    assert len(chunks) > 1 and len(lists) == 1
    assert max(chunks) < lists[0] < entry_at
    entry = repo.artifacts.entry(RUN, "big")
    list_key = keys[lists[0]]
    assert list_key == f"lists/{entry.digest.path}"
    assert not backend.exists(repo.objects.key(entry.digest))  # chunked, not whole
    record = orjson.loads(decompress(backend.read(list_key), entry.digest, list_key))
    assert record["size"] == entry.size == sum(size for _, size in record["chunks"])
    assert blake3.blake3(repo.payloads.get(entry.digest)).hexdigest() == entry.digest.hex
    first = record["chunks"][0][0]
    chunk_key = f"chunks/{first[:2]}/{first[2:]}"
    damaged = bytearray(decompress(backend.read(chunk_key), entry.digest, chunk_key))
    damaged[-2] ^= 0x01
    backend.write(chunk_key, cas.objects.compress(bytes(damaged)))
    with pytest.raises(IntegrityError) as caught:
        repo.artifacts.get(RUN, "big")
    assert caught.value.location == chunk_key  # the damaged chunk is named


def test_invariant_16_crash_at_any_write_of_a_chunked_save_is_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However a chunked save dies, no list names a missing chunk and no entry a missing list."""
    monkeypatch.setattr(PayloadStore, "threshold", 4 * 1024)
    crash_at = 1
    while True:
        inner = LocalBackend(tmp_path / f"repo-{crash_at}", fsync=False)
        config = _repo(inner).config
        crashing = CrashingBackend(inner, crash_at)
        try:
            Repository(crashing, config).artifacts.save(RUN, "big", _chunky(60))
        except Crash:
            _assert_consistent(Repository(inner, config))
            for key in inner.list("lists"):
                digest = Digest("".join(key.split("/")[1:]))
                assert Repository(inner, config).payloads.get(digest)  # every chunk present
            crash_at += 1
            continue
        break
    assert crash_at > 3  # the loop really crashed before chunks, list and entry


# --------------------------------------------------------------------------- I17

SCAN = Path(__file__).resolve().parent.parent / "examples" / "scan.yaml"


class _TaggingBackend(RecordingBackend):
    """Logs what each write means: (owner|runbook|result:<status>|payload|entry:<id>|…, key)."""

    def _tag(self, key: str, data: bytes) -> str:
        name = key.rsplit("/", 1)[-1]
        if key.startswith(("objects/", "chunks/", "lists/")):
            return key.split("/", 1)[0]
        if name in (OWNER, RUNBOOK):
            return name
        if key.startswith("index/"):
            return "index"
        if name == RESULT:
            return f"result:{orjson.loads(data)['status']}"
        if key.startswith("cache/"):
            record = orjson.loads(data)
            return f"{key.split('/')[1]}:{record.get('artifact_id', record['output'])}"
        return f"entry:{orjson.loads(data)['artifact']}"

    def create(self, key: str, data: bytes) -> bool:
        self._log(self._tag(key, data), key)
        return self.inner.create(key, data)

    def write(self, key: str, data: bytes) -> None:
        self._log(self._tag(key, data), key)
        self.inner.write(key, data)

    def append(self, key: str, data: bytes) -> None:
        self._log(self._tag(key, data), key)
        self.inner.append(key, data)


def test_invariant_17_a_run_writes_in_order(tmp_path: Path) -> None:
    """Owner, runbook, `running` result; per step payload, entry, cache; final result; release."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("mail me at jane.doe@example.com\n")
    (data / "b.txt").write_text("nothing here\n")
    inner = LocalBackend(tmp_path / "repo")
    recorder = _TaggingBackend(inner)
    repo = Repository(recorder, _repo(inner).config)
    runbook = load_runbook(SCAN, env={"CAS_EXAMPLE_DATA": str(data)})
    report = Executor(repo, plan(runbook, connectors(), processors())).run()
    assert report.result.status == "completed"
    tags = [tag for tag, _ in recorder.events]
    shown = [t for t in tags if t not in ("sync", "index")]
    assert shown[:3] == ["owner.json", "runbook.yaml", "result:running"]
    # I2, the index's pending mark, the final result, then the owner released
    assert tags[-4:] == ["sync", "index", "result:completed", "delete"]
    assert recorder.events[-1][1] == run_key(report.run_id, OWNER)
    entries = repo.artifacts.entries(report.run_id)
    for artifact_id, entry in entries.items():
        at = tags.index(f"entry:{artifact_id}")
        payload_key = repo.objects.key(entry.digest)
        assert recorder.events.index(("objects", payload_key)) < at  # object, then entry
        if report.result.artifacts[artifact_id].step_key is not None:  # cacheable step
            assert at < tags.index(f"steps:{artifact_id}")  # entry, then its cache record
    assert tags.index("entry:findings") < tags.index(f"items:{entries['findings'].digest.hex}")


# --------------------------------------------------------------------------- I25


def test_invariant_25_segments_are_merged_before_they_are_deleted() -> None:
    """At the result, segments fold into manifest.jsonl (one write) before any is deleted."""
    backend = _memory_backend()
    repo, recorder = _recorded(backend)
    _scenario(repo)
    manifest = run_key(RUN, MANIFEST)
    events = recorder.events
    merge = events.index(("write", manifest))
    deleted = [i for i, (verb, key) in enumerate(events) if verb == "delete" and SEGMENTS in key]
    assert len(deleted) == 3 and merge < min(deleted)
    assert max(deleted) < events.index(("write", run_key(RUN, RESULT)), merge)
    assert backend.children(run_key(RUN, SEGMENTS)) == []
    assert len(_lines(backend, manifest)) == 3
    assert repo.artifacts.list_artifacts(RUN) == ["a1", "a2", "a3"]


@pytest.mark.parametrize("survivors", [0, 1, 3])
def test_invariant_25_a_crash_between_merge_and_delete_reads_the_same(survivors: int) -> None:
    """Records read twice (merged and still in a segment) give the same entries, in order."""
    backend = _memory_backend()
    repo = _repo(backend)
    for n, artifact in enumerate(["a1", "a2", "a1", "a3"]):
        repo.artifacts.save(RUN, artifact, _message(n))
    folder = run_key(RUN, SEGMENTS)
    before = repo.artifacts.entries(RUN)
    segments = {key: backend.read(key) for key in sorted(backend.list(folder))}
    repo.artifacts.merge(RUN)
    for key in list(segments)[:survivors]:  # as if the batch delete never ran for these
        _raw_write(backend, key, segments[key])
    after = repo.artifacts.entries(RUN)
    assert list(after) == list(before) == ["a2", "a1", "a3"]
    assert {k: e.to_dict() for k, e in after.items()} == {k: e.to_dict() for k, e in before.items()}
    _assert_consistent(repo)
