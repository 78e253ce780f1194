"""Repository locks on object stores, restic style: shared writer locks, an exclusive gc lock.

A lock is one small object, ``locks/{kind}-{uuid}.json``, holding who took it
(host, boot id, pid, process start, as an owner record) and when it was created
and last refreshed. ``kind`` is ``writer`` (an executor run, a push or pull into
the repository; many at once) or ``gc`` (a sweeping collection; alone). The kind
is in the name so a writer learns from one listing whether a gc holds the
repository, without reading the other writers' locks.

Both sides **create their lock, then list** ``locks/`` (docs/design.md §10):

* a writer that finds a fresh ``gc`` lock removes its own and waits (bounded,
  `WRITER_WAIT` by default, with one logged message) or raises `LockedError`;
* a gc that finds any other fresh lock keeps its own (so no new writer starts),
  waits for them to finish within its bound and otherwise removes its lock and
  raises `LockedError`; two gcs that meet both back off.

S3 lists what was written before (read-after-write consistency), so of two
processes that lock at the same time at least one sees the other.

A lock is refreshed (rewritten) every `REFRESH_INTERVAL` seconds by a daemon
thread and removed at the end. One whose object was not rewritten for
`STALE_AFTER` seconds, judged by the storage's own clock (the listing's mtime
against the mtime of the lock just written), or that names a dead process on
this host, is stale: ignored, and removed by ``cas locks --remove-stale``.

Local folders take no locks: there a dedup hit renews the object's mtime with
one atomic `os.utime` and the sweep renames before it deletes (I23), which is
race-free without them, and costs no extra file per run.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from cas.errors import ConflictError, NotFoundError
from cas.objects import Backend, LocalBackend, list_times
from cas.owner import current_owner, is_alive

LOCKS = "locks"
WRITER = "writer"
EXCLUSIVE = "gc"
KINDS = (WRITER, EXCLUSIVE)
REFRESH_INTERVAL = 300.0  # seconds between rewrites of a held lock
STALE_AFTER = 1800.0  # a lock not rewritten for this long is ignored
WRITER_WAIT = 600.0  # how long a writer waits for a gc by default
FIRST_POLL, MAX_POLL = 0.1, 2.0  # seconds between attempts, doubling

log = logging.getLogger(__name__)
Notify = Callable[[str], None]


class LockedError(ConflictError):
    """The repository is locked by another process in a way that excludes this one."""


def needs_locks(backend: Backend) -> bool:
    """Whether writers and gc lock `backend`: every backend but a local folder (see above).

    A wrapper (the tests' recording backends) is judged by the backend it wraps.
    """
    inner = getattr(backend, "inner", None)
    if inner is not None and inner is not backend:
        return needs_locks(inner)
    return not isinstance(backend, LocalBackend)


@dataclass(frozen=True)
class LockInfo:
    """A lock as a listing shows it; `record` is read only where needed (empty otherwise)."""

    key: str
    kind: str
    mtime: float
    age: float  # seconds since its last rewrite, on the storage's clock
    stale: bool
    record: dict[str, Any]

    @property
    def lock_id(self) -> str:
        return self.key.rsplit("/", 1)[-1].removesuffix(".json")

    def describe(self) -> str:
        """``gc lock of pid 12 on host-a, refreshed 4s ago``."""
        who = f"pid {self.record.get('pid', '?')} on {self.record.get('host', '?')}"
        return f"{self.kind} lock of {who}, refreshed {self.age:.0f}s ago"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.lock_id,
            "kind": self.kind,
            "host": self.record.get("host"),
            "pid": self.record.get("pid"),
            "created": self.record.get("created"),
            "refreshed": self.record.get("refreshed"),
            "age_seconds": round(self.age, 1),
            "stale": self.stale,
        }


def _kind_of(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    kind = name.split("-", 1)[0]
    return kind if kind in KINDS and name.endswith(".json") and key.count("/") == 1 else None


def _read(backend: Backend, key: str) -> dict[str, Any]:
    try:
        record = orjson.loads(backend.read(key))
    except (NotFoundError, orjson.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def list_locks(
    backend: Backend, *, now: float | None = None, read: Callable[[str], bool] | None = None
) -> list[LockInfo]:
    """Every lock below ``locks/``, oldest first: one listing, plus a read per lock `read` wants.

    Age is measured against `now` (default: this host's clock; `acquire` uses the
    storage's). A lock is stale when older than `STALE_AFTER` or when its record (if
    read) names a process on this host that is gone.
    """
    listed = sorted(
        ((key, mtime) for key, mtime, _size in list_times(backend, LOCKS) if _kind_of(key)),
        key=lambda item: item[1],
    )
    return _judged(backend, listed, now, read)


def _judged(
    backend: Backend,
    listed: list[tuple[str, float]],
    now: float | None,
    read: Callable[[str], bool] | None,
) -> list[LockInfo]:
    now = time.time() if now is None else now
    found: list[LockInfo] = []
    for key, mtime in listed:
        age = max(0.0, now - mtime)
        record = _read(backend, key) if read is None or read(key) else {}
        stale = age > STALE_AFTER or (bool(record) and not is_alive(record))
        found.append(LockInfo(key, _kind_of(key) or "", mtime, age, stale, record))
    return found


class Lock:
    """One held lock: written on `create`, rewritten by a timer, removed on `release`."""

    def __init__(self, backend: Backend, kind: str, *, refresh: float = REFRESH_INTERVAL) -> None:
        self.backend = backend
        self.kind = kind
        self.key = f"{LOCKS}/{kind}-{secrets.token_hex(16)}.json"
        self.interval = refresh
        self.created = _stamp()
        self.refreshed_at = 0.0  # this host's clock at the last successful write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self) -> None:
        """Write the lock object (and, after a successful `start`, keep rewriting it)."""
        record = {**current_owner(), "kind": self.kind, "created": self.created}
        self.backend.write(self.key, orjson.dumps({**record, "refreshed": _stamp()}))
        self.refreshed_at = time.time()

    def start(self) -> None:
        """Rewrite the lock every `interval` seconds from a daemon thread."""
        self._thread = threading.Thread(target=self._refresh_loop, name="cas-lock", daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.create()
            except Exception as error:  # keep trying: `check` reports a lock gone stale
                log.warning("cas: could not refresh the %s lock %s: %s", self.kind, self.key, error)

    def check(self) -> None:
        """Raise `LockedError` if the lock may have gone stale (not refreshed in time)."""
        if time.time() - self.refreshed_at > STALE_AFTER - self.interval:
            raise LockedError(
                f"the {self.kind} lock {self.key} was not refreshed for "
                f"{time.time() - self.refreshed_at:.0f}s and may be stale: stopping"
            )

    def release(self) -> None:
        """Stop refreshing and remove the lock object."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete([self.key])


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _blockers(backend: Backend, mine: Lock) -> list[LockInfo]:
    """Fresh locks that exclude `mine`; a writer reads only gc locks, a gc every other lock.

    Ages are taken against the mtime of `mine`, just written: the storage's clock, so
    clock skew between hosts does not make a fresh lock look stale.
    """

    def excludes(key: str) -> bool:
        return key != mine.key and (mine.kind == EXCLUSIVE or _kind_of(key) == EXCLUSIVE)

    listed = [(k, m) for k, m, _size in list_times(backend, LOCKS) if _kind_of(k)]
    own = [mtime for key, mtime in listed if key == mine.key]
    wanted = [(key, mtime) for key, mtime in listed if excludes(key)]
    judged = _judged(backend, wanted, own[0] if own else time.time(), None)
    return [info for info in judged if not info.stale]


def acquire(
    backend: Backend,
    kind: str,
    *,
    wait: float = 0.0,
    notify: Notify | None = None,
    refresh: float = REFRESH_INTERVAL,
) -> Lock:
    """Take a `kind` lock on `backend`, waiting up to `wait` seconds; `LockedError` if not."""
    lock = Lock(backend, kind, refresh=refresh)
    try:
        _wait_for(lock, time.monotonic() + wait, notify)
    except BaseException:  # refused, interrupted while waiting, or a failed request
        backend.delete([lock.key])
        raise
    lock.start()
    return lock


def _wait_for(lock: Lock, deadline: float, notify: Notify | None) -> None:
    """Return once `lock` is written and nothing excludes it; raise at `deadline`."""
    poll, told = FIRST_POLL, False
    while True:
        if time.time() - lock.refreshed_at > lock.interval:
            lock.create()  # the first time, after stepping back, or when waiting long
        blockers = _blockers(lock.backend, lock)
        if not blockers:
            return
        # A writer, or a gc meeting another gc, steps back; a gc meeting writers holds on
        # to its lock so no new writer starts while the current ones finish.
        if lock.kind == WRITER or any(info.kind == EXCLUSIVE for info in blockers):
            lock.backend.delete([lock.key])
            lock.refreshed_at = 0.0
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockedError(_refusal(lock.backend, lock.kind, blockers))
        if not told:
            (notify or log.warning)(f"cas: waiting up to {left:.0f}s: {blockers[0].describe()}")
            told = True
        time.sleep(min(left, poll * (0.5 + secrets.randbelow(1000) / 1000)))
        poll = min(poll * 2, MAX_POLL)


def _refusal(backend: Backend, kind: str, blockers: list[LockInfo]) -> str:
    held = "; ".join(info.describe() for info in blockers[:3])
    if kind == WRITER:
        return (
            f"repository {backend.url} is locked by a garbage collection ({held}): "
            "try again when it has finished"
        )
    return (
        f"repository {backend.url} is in use ({held}): gc sweeps only when no writer holds a "
        "lock; wait with --wait DURATION, or remove stale locks with 'cas locks --remove-stale'"
    )


@contextlib.contextmanager
def locked(
    backend: Backend, kind: str, *, wait: float | None = None, notify: Notify | None = None
) -> Iterator[Lock | None]:
    """Hold a `kind` lock on `backend` for the block (None, and no lock, on a local folder).

    `wait` defaults to `WRITER_WAIT` for writers and 0 for gc.
    """
    if not needs_locks(backend):
        yield None
        return
    if wait is None:
        wait = WRITER_WAIT if kind == WRITER else 0.0
    lock = acquire(backend, kind, wait=wait, notify=notify)
    try:
        yield lock
    finally:
        lock.release()


def remove_locks(backend: Backend, *, stale_only: bool = True) -> list[LockInfo]:
    """Remove stale locks (or, with ``stale_only=False``, every lock); return those removed."""
    found = [info for info in list_locks(backend) if info.stale or not stale_only]
    backend.delete(info.key for info in found)
    return found
