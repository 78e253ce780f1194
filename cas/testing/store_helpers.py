"""Helpers for the contract suites in `cas.testing.store_tests`.

Raw access *around* a store (`raw_get`, `raw_set`, `raw_snapshot`) reaches the medium
without the backend's own methods, so tampering and "nothing was written" checks do
not trust the code under test. `RecordingBackend` logs calls for cost and ordering
checks; `ContractTests` is the base of every suite.
"""

from __future__ import annotations

import builtins
import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import orjson
import pytest

from cas.digest import seal
from cas.errors import NotFoundError
from cas.model import ArtifactOutcome, ExecutionInfo, ExecutionResult, Message, SchemaRef
from cas.objects import Backend, FsspecBackend, LocalBackend
from cas.packs import RunSection
from cas.repository import CONFIG, Repository
from cas.stores import RESULT, RUNS, run_key

# Keys no backend may accept: traversal, absolute, hidden/temporary, NUL, Windows separators,
# empty segments.
HOSTILE_KEYS: tuple[str, ...] = (
    "../x",
    "..",
    ".",
    "/abs",
    "a/../b",
    "a/..",
    ".hidden",
    "a/.hidden",
    "a\x00b",
    "a\\b",
    "..\\x",
    "a//b",
    "a/",
    "",
)

# Ids no store may accept (the list from the issue plus a few neighbours).
HOSTILE_IDS: tuple[str, ...] = (
    "../x",
    "/abs",
    "a/../../b",
    "a/b",
    "a\x00b",
    "x" * 10_000,
    ".",
    "..",
    "",
    ".hidden",
    "a..b",
    "a\\b",
    "C:x",
    "a b",
    "caf\u00e9",
)

# --------------------------------------------------------------------------- helpers


class RecordingBackend:
    """A delegating `Backend` wrapper that records every call as ``(verb, key)``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.supports_append = inner.supports_append
        self.calls: list[tuple[str, str]] = []

    def count(self, *verbs: str) -> int:
        """How many recorded calls used one of `verbs`."""
        return sum(1 for verb, _ in self.calls if verb in verbs)

    def keys_of(self, verb: str) -> list[str]:
        """Keys of the recorded calls of `verb`, in order."""
        return [key for name, key in self.calls if name == verb]

    def write(self, key: str, data: bytes) -> None:
        self.calls.append(("write", key))
        self.inner.write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self.calls.append(("write", key))  # an exclusive write, counted with the writes
        return self.inner.create(key, data)

    def read(self, key: str) -> bytes:
        self.calls.append(("read", key))
        return self.inner.read(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        self.calls.append(("read", key))
        return self.inner.read_range(key, start, end)

    def exists(self, key: str) -> bool:
        self.calls.append(("exists", key))
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        self.calls.append(("size", key))
        return self.inner.size(key)

    def list(self, prefix: str) -> Iterator[str]:
        self.calls.append(("list", prefix))
        return self.inner.list(prefix)

    def children(self, prefix: str) -> builtins.list[str]:
        self.calls.append(("children", prefix))
        return self.inner.children(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.calls.extend(("delete", key) for key in keys)
        self.inner.delete(keys)

    def append(self, key: str, data: bytes) -> None:
        self.calls.append(("append", key))
        self.inner.append(key, data)

    def sync(self, key: str) -> None:
        self.calls.append(("sync", key))
        self.inner.sync(key)


def _unwrap(backend: Backend) -> Backend:
    while isinstance(backend, RecordingBackend):
        backend = backend.inner
    return backend


@contextlib.contextmanager
def memory_backend() -> Iterator[FsspecBackend]:
    """A `FsspecBackend` on a fresh ``memory://`` root, removed afterwards.

    fsspec's memory filesystem is one dict per process, so every test needs its own root.
    """
    backend = FsspecBackend(f"memory://cas-test-{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        with contextlib.suppress(FileNotFoundError):
            backend.fs.rm(backend.root, recursive=True)


def s3_backend(url: str, storage_options: dict[str, Any]) -> FsspecBackend:
    """A `FsspecBackend` on a test bucket, sharing one cached s3fs instance across tests.

    The fixture's options skip fsspec's instance cache, which costs a new botocore
    client (~150 ms) per test; listings stay uncached, so sharing is safe and halves
    the S3 suites' time.
    """
    return FsspecBackend(url, **{**storage_options, "skip_instance_cache": False})


def reopen(backend: Backend) -> Backend:
    """A new backend instance on the same root, as a restarted process would open it."""
    inner = _unwrap(backend)
    if isinstance(inner, LocalBackend):
        return LocalBackend(inner.root, fsync=inner.fsync)
    return inner  # FsspecBackend keeps no per-process state


def raw_get(backend: Backend, key: str) -> bytes:
    """The bytes under `key`, read from the medium without the backend's methods."""
    inner = _unwrap(backend)
    if isinstance(inner, LocalBackend):
        return (inner.root / key).read_bytes()
    if isinstance(inner, FsspecBackend):
        return bytes(inner.fs.cat_file(f"{inner.root}/{key}"))
    raise NotImplementedError(f"no raw access to {type(inner).__name__}")


def raw_set(backend: Backend, key: str, data: bytes) -> None:
    """Put `data` under `key` on the medium without the backend (no key checks)."""
    inner = _unwrap(backend)
    if isinstance(inner, LocalBackend):
        path = inner.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif isinstance(inner, FsspecBackend):
        inner.fs.pipe_file(f"{inner.root}/{key}", data)
    else:
        raise NotImplementedError(f"no raw access to {type(inner).__name__}")


def raw_snapshot(backend: Backend) -> dict[str, bytes | None]:
    """Everything around the root: the root's parent folder (folders map to None).

    For a local folder that is its parent directory; for fsspec the parent path
    (the whole memory filesystem, or the bucket when the root is a bucket).
    """
    inner = _unwrap(backend)
    if isinstance(inner, LocalBackend):
        base = inner.root.parent
        return {
            path.relative_to(base).as_posix(): path.read_bytes() if path.is_file() else None
            for path in base.rglob("*")
        }
    if isinstance(inner, FsspecBackend):
        parent = inner.root.rsplit("/", 1)[0] if "/" in inner.root else inner.root
        found = inner.fs.find(parent or inner.fs.root_marker, withdirs=True, detail=True)
        return {
            str(path): bytes(inner.fs.cat_file(path)) if info["type"] == "file" else None
            for path, info in found.items()
        }
    raise NotImplementedError(f"no raw access to {type(inner).__name__}")


def key_listing(backend: Backend) -> list[str]:
    """Every key under the root, through the backend's own listing (``""`` is the root)."""
    return sorted(backend.list(""))


def flip_byte(data: bytes, position: int | None = None) -> bytes:
    """`data` with one bit flipped (in the middle unless `position` is given)."""
    index = len(data) // 2 if position is None else position
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def make_repository(backend: Backend) -> Repository:
    """A repository on `backend`: its ``config.json`` where one was written (run packs
    write one, `pack_runs`), else a config kept in memory (the stores never read it)."""
    try:
        config = orjson.loads(backend.read(CONFIG))
    except NotFoundError:
        config = {"schema_packages": []}
    return Repository(backend, config)


def pack_runs(repo: Repository, run_ids: Iterable[str]) -> str:
    """Move the runs' folders into one run pack, as a push of many runs writes them
    (their result, newest entries and runbook), and delete the folders; its name."""
    sections = []
    for run_id in run_ids:
        result = repo.backend.read(run_key(run_id, RESULT))
        entries = repo.artifacts.entries(run_id).values()
        lines = b"".join(seal(entry.to_dict()) + b"\n" for entry in entries)
        sections.append((run_id, RunSection(result, lines, repo.runbook(run_id))))
    repo.enable_packs()
    name = repo.packs.write(sections)
    for run_id, _section in sections:
        repo.backend.delete(list(repo.backend.list(f"{RUNS}/{run_id}")))
    return name


def sample_message(content: dict[str, Any] | None = None, **fields: Any) -> Message:
    """A message with every envelope field set."""
    defaults: dict[str, Any] = {
        "id": "msg-1",
        "content": {"findings": [{"kind": "email", "count": 3}], "ok": True, "ratio": 0.25}
        if content is None
        else content,
        "schema": SchemaRef("finding", "1.0.0"),
        "source": "connector.fs",
        "timestamp": datetime(2024, 5, 1, 12, 30, 5, 123456, tzinfo=UTC),
        "context": {"host": "ci-7", "attempt": 1},
        "execution": ExecutionInfo("completed", None, 1.5),
    }
    return Message(**{**defaults, **fields})


def sample_result(run_id: str, status: str = "completed", **fields: Any) -> ExecutionResult:
    """An execution result with every field set."""
    started = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    defaults: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "started_at": started,
        "runbook": "runbooks/scan.yaml",
        "ended_at": None if status == "running" else started + timedelta(seconds=90),
        "duration_seconds": None if status == "running" else 90.0,
        "artifacts": {
            "findings": ArtifactOutcome("completed", duration_seconds=0.5),
            "report.html": ArtifactOutcome("failed", "ValueError", "bad row 7"),
        },
        "error": None,
    }
    return ExecutionResult(**{**defaults, **fields})


class ContractTests:
    """Base of the suites: the ``backend`` fixture to override, and known-bug bookkeeping.

    A subclass lists contract tests its backend is known to fail in `known_bugs`
    (test name → reason); they run as strict xfails, so a fix turns them into
    failures that ask for the entry to be removed.
    """

    known_bugs: ClassVar[dict[str, str]] = {}

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("subclasses build the backend")

    @pytest.fixture(autouse=True)
    def _known_bug(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", request.node.name)
        reason = self.known_bugs.get(name)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# --------------------------------------------------------------------------- known core bugs


def between_mark_and_listing(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run `action` inside the next gc, after its mark read the manifests and before it
    lists the objects: where a late writer's save (a dedup hit) lands."""
    import cas.gc as gc_module

    real = gc_module._cache_records

    def late(*args: Any) -> Any:
        action()
        return real(*args)

    monkeypatch.setattr(gc_module, "_cache_records", late)
