"""What the run index holds, in plain Python: rows, queries, the pointer and the lock.

Nothing here imports pyarrow (`cas.index` does), so the save path can mark runs
pending and a reader can build a query without paying for it. A run's rows come
from its execution result (status, timing, outcomes) and its manifest (digests,
sizes, schemas): one `runs` row and one `artifacts` row per artifact id that
either mentions.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from cas.errors import ConflictError, InvalidInputError, NotFoundError
from cas.ids import MAX_ID_LENGTH, check_run_id, is_valid_id
from cas.model import ArtifactEntry, ExecutionResult
from cas.objects import Backend, LocalBackend, is_temp_name, modified_at
from cas.owner import current_owner, is_alive, read_owner

INDEX = "index"
POINTER = f"{INDEX}/current.json"
PENDING = f"{INDEX}/pending"
# A mark naming many runs (a push), see `mark_batch`: "batch-" and 128 hex digits, longer
# than any id (MAX_ID_LENGTH), so never the mark of a run, yet a safe storage key.
BATCH = "batch-"
FILES = f"{INDEX}/files"
LOCK = f"{INDEX}/lock"
FORMAT = "cas-index/1"
HEAD_SIZE = 200  # newest runs rows kept in the pointer: short listings read no Parquet


def pending_key(run_id: str) -> str:
    """The mark saying "this run's result changed; fold it into the index"."""
    return f"{PENDING}/{check_run_id(run_id)}"


def mark_pending(backend: Backend, run_id: str) -> None:
    """Record that `run_id` needs indexing: one tiny write, no pyarrow.

    A mark is a hint, not a record: on a local folder it is created without fsync
    (a temp file, fsync and rename would cost a run about a millisecond), since a
    mark lost in a power cut only means `cas index check` finds the run instead.
    """
    if isinstance(backend, LocalBackend):
        backend.touch(pending_key(run_id))
    else:
        backend.write(pending_key(run_id), b"")


def mark_batch(backend: Backend, run_ids: list[str]) -> str:
    """Mark many runs with one write (a push's runs): a file naming them; its key.

    It stands for one `mark_pending` per run: `RunIndex.sync` folds the runs it
    names and rewrites it without them (deletes it once none is left).
    """
    body = "".join(f"{check_run_id(run_id)}\n" for run_id in run_ids)
    key = f"{PENDING}/{BATCH}{secrets.token_hex(MAX_ID_LENGTH // 2)}"
    backend.write(key, body.encode())
    return key


def read_marks(backend: Backend) -> tuple[list[str], dict[str, list[str]]]:
    """One listing of ``index/pending``: the runs marked one by one, and every batch
    mark (its key -> the run ids it names; lines that are not ids are skipped)."""
    singles: list[str] = []
    batches: dict[str, list[str]] = {}
    for name in sorted(backend.children(PENDING)):
        if is_valid_id(name):
            singles.append(name)
        if len(name) <= MAX_ID_LENGTH or not name.startswith(BATCH) or is_temp_name(name):
            continue
        key = f"{PENDING}/{name}"
        try:
            text = backend.read(key).decode("utf-8", "replace")
        except NotFoundError:
            continue  # settled by another sync meanwhile
        batches[key] = [line for line in text.splitlines() if is_valid_id(line)]
    return singles, batches


def settle_batches(backend: Backend, batches: dict[str, list[str]], done: set[str]) -> None:
    """Rewrite each batch mark without the runs in `done`; delete the ones left empty."""
    emptied = []
    for key, run_ids in batches.items():
        rest = [run_id for run_id in run_ids if run_id not in done]
        if not rest:
            emptied.append(key)
        elif len(rest) < len(run_ids):
            backend.write(key, "".join(f"{run_id}\n" for run_id in rest).encode())
    backend.delete(emptied)


def aware(value: datetime | None) -> datetime | None:
    """`value` with UTC assumed when it carries no zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of the `runs` table: a run as listings show it."""

    run_id: str
    status: str
    runbook: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    completed: int
    failed: int
    skipped: int
    artifacts: int
    tenant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as ``cas runs --json`` prints it."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "runbook": self.runbook,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "duration_seconds": self.duration_seconds,
            "artifacts": self.artifacts,
            "completed": self.completed,
            "failed": self.failed,
            "skipped": self.skipped,
            "tenant": self.tenant,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRow:
        """The row `to_dict` gave (as the pointer's ``head`` stores it)."""
        started, ended = data["started_at"], data["ended_at"]
        return cls(
            run_id=data["run_id"],
            status=data["status"],
            runbook=data["runbook"],
            started_at=None if started is None else datetime.fromisoformat(started),
            ended_at=None if ended is None else datetime.fromisoformat(ended),
            duration_seconds=data["duration_seconds"],
            completed=data["completed"],
            failed=data["failed"],
            skipped=data["skipped"],
            artifacts=data["artifacts"],
            tenant=data.get("tenant"),
        )


_EPOCH = datetime.min.replace(tzinfo=UTC)


def newest_first_key(row: RunRow) -> tuple[datetime, str]:
    """Sort key of listings (with ``reverse=True``): newest start first, then run id."""
    return (row.started_at or _EPOCH, row.run_id)


RUN_FIELDS: tuple[str, ...] = tuple(RunRow.__slots__)
ARTIFACT_FIELDS: tuple[str, ...] = (
    "run_id",
    "started_at",
    "artifact_id",
    "schema_name",
    "schema_version",
    "digest",
    "size",
    "outcome",
    "error_type",
    "cached_from",
    "duration_seconds",
)


def run_row(result: ExecutionResult, entries: dict[str, ArtifactEntry]) -> RunRow:
    """The `runs` row of a run (`artifacts` counts manifest entries, as listings always did)."""
    counts = result.counts()
    return RunRow(
        run_id=result.run_id,
        status=result.status,
        runbook=result.runbook,
        started_at=aware(result.started_at),
        ended_at=aware(result.ended_at),
        duration_seconds=result.duration_seconds,
        completed=counts["completed"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        artifacts=len(entries),
    )


def artifact_rows(
    result: ExecutionResult, entries: dict[str, ArtifactEntry]
) -> list[dict[str, Any]]:
    """The `artifacts` rows of a run: every id the manifest or the result names.

    ``outcome`` is the result's outcome, or ``saved`` for an entry the result does
    not mention; ``digest`` is the 32 raw bytes, None for an artifact never saved.
    """
    rows = []
    for artifact_id in sorted(set(entries) | set(result.artifacts)):
        entry = entries.get(artifact_id)
        outcome = result.artifacts.get(artifact_id)
        schema = entry.schema if entry else None
        rows.append(
            {
                "run_id": result.run_id,
                "started_at": aware(result.started_at),
                "artifact_id": artifact_id,
                "schema_name": schema.name if schema else None,
                "schema_version": schema.version if schema else None,
                "digest": bytes.fromhex(entry.digest.hex) if entry else None,
                "size": entry.size if entry else None,
                "outcome": outcome.status if outcome else "saved",
                "error_type": outcome.error_type if outcome else None,
                "cached_from": outcome.cached_from if outcome else None,
                "duration_seconds": outcome.duration_seconds if outcome else None,
            }
        )
    return rows


@dataclass(frozen=True)
class RunQuery:
    """Filters of `Repository.list_runs`; every one given must hold. Newest first."""

    status: str | None = None
    since: datetime | None = None  # started at or after
    until: datetime | None = None  # started before
    runbook: str | None = None
    artifact: str | None = None  # runs holding this artifact id
    digest: str | None = None  # runs holding an artifact whose digest starts with this
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", aware(self.since))
        object.__setattr__(self, "until", aware(self.until))
        if self.digest is not None:
            text = self.digest.lower()
            if not 1 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
                raise InvalidInputError(
                    f"invalid digest prefix {self.digest[:80]!r}: expected 1-64 hex characters"
                )
            object.__setattr__(self, "digest", text)
        if self.offset < 0 or (self.limit is not None and self.limit < 0):
            raise InvalidInputError("invalid --limit/--offset: expected numbers ≥ 0")

    def digest_range(self) -> tuple[bytes, bytes] | None:
        """Lowest and highest 32-byte digest with the prefix, or None without one."""
        if self.digest is None:
            return None
        return bytes.fromhex(self.digest.ljust(64, "0")), bytes.fromhex(self.digest.ljust(64, "f"))

    @property
    def unfiltered(self) -> bool:
        """Whether only `limit` and `offset` are set (a plain newest-first listing)."""
        filters = (self.status, self.since, self.until, self.runbook, self.artifact, self.digest)
        return filters == (None,) * 6

    def matches(self, row: RunRow) -> bool:
        """Whether `row` passes the run-level filters (artifact and digest aside)."""
        started = row.started_at
        return (
            (self.status is None or row.status == self.status)
            and (self.runbook is None or row.runbook == self.runbook)
            and (self.since is None or (started is not None and started >= self.since))
            and (self.until is None or (started is not None and started < self.until))
        )


class Head:
    """A pointer's `head` rows, each decoded from the pointer's JSON when first asked for.

    A listing of the newest 50 decodes 50 of the 200 (`RunRow.from_dict`, two
    timestamps parsed); later asks reuse them. Readers of the same pointer bytes
    share one (`PointerCache`): rows are frozen and decoding holds a lock.
    """

    __slots__ = ("_items", "_lock", "_rows")

    def __init__(self, rows: list[RunRow], items: list[dict[str, Any]] | None = None) -> None:
        self._rows = rows  # decoded, newest first: the first len(rows) of items
        self._items = items  # the JSON rows (dropped once every one is decoded)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        items = self._items
        return len(self._rows) if items is None else len(items)

    def rows(self, end: int | None = None) -> list[RunRow]:
        """The newest `end` rows (all without it), as a new list."""
        if self._items is not None and (end is None or end > len(self._rows)):
            self._decode(end)
        return self._rows[:end]

    def _decode(self, end: int | None) -> None:
        with self._lock:
            items = self._items
            if items is None:
                return
            done = len(self._rows)
            stop = len(items) if end is None else min(end, len(items))
            if stop > done:
                self._rows.extend([RunRow.from_dict(item) for item in items[done:stop]])
            if len(self._rows) == len(items):
                self._items = None


class Pointer:
    """``index/current.json``: the live files, oldest first, and which rows they supersede.

    `superseded` maps a run id indexed more than once (a resumed run) to the file
    whose rows are current; readers drop that run's rows from every other file.
    `head` holds the newest `HEAD_SIZE` current runs rows (all, if fewer), newest
    first, written with the files they come from; None in a pointer written
    without one (readers then go to the files). A pointer `read` decodes its head
    rows only as they are asked for (`head_answer` decodes the ones it returns).
    """

    __slots__ = ("_head", "files", "generation", "superseded")

    def __init__(
        self,
        generation: int = 0,
        files: list[dict[str, Any]] | None = None,  # {name, runs, artifacts}
        superseded: dict[str, str] | None = None,
        head: list[RunRow] | None = None,
    ) -> None:
        self.generation = generation
        self.files = [] if files is None else files
        self.superseded = {} if superseded is None else superseded
        self._head = None if head is None else Head(list(head))

    @property
    def head(self) -> list[RunRow] | None:
        """Every head row (decoding the ones not decoded yet), a new list; or None."""
        return None if self._head is None else self._head.rows()

    @head.setter
    def head(self, rows: list[RunRow] | None) -> None:
        self._head = None if rows is None else Head(list(rows))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pointer):
            return NotImplemented
        mine = (self.generation, self.files, self.superseded, self.head)
        return mine == (other.generation, other.files, other.superseded, other.head)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Pointer(generation={self.generation!r}, files={self.files!r}, "
            f"superseded={self.superseded!r}, head={self.head!r})"
        )

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "format": FORMAT,
            "generation": self.generation,
            "files": self.files,
            "superseded": self.superseded,
        }
        if self._head is not None:
            body["head"] = [row.to_dict() for row in self._head.rows()]
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)

    @classmethod
    def read(cls, backend: Backend) -> Pointer:
        """The live pointer; an empty one when the index was never written.

        Read anew every call; decoded once per distinct bytes (see `PointerCache`).
        """
        try:
            data = backend.read(POINTER)
        except NotFoundError:
            return cls(head=[])
        return POINTERS.decoded(backend.url, data)

    @classmethod
    def decode(cls, data: bytes) -> Pointer:
        """The pointer `to_bytes` gave, its head rows left undecoded."""
        body = orjson.loads(data)
        if body.get("format") != FORMAT:
            raise InvalidInputError(f"{POINTER} has format {body.get('format')!r}, not {FORMAT}")
        pointer = cls(body["generation"], body["files"], body.get("superseded", {}))
        items = body.get("head")
        pointer._head = None if items is None else Head([], items)
        return pointer

    def copy(self) -> Pointer:
        """A pointer with its own `files` list and `superseded` map, sharing the head."""
        pointer = Pointer(self.generation, list(self.files), dict(self.superseded))
        pointer._head = self._head
        return pointer

    @property
    def names(self) -> list[str]:
        return [entry["name"] for entry in self.files]

    @property
    def head_is_whole(self) -> bool:
        """Whether `head` holds every indexed run (exact unless runs are superseded)."""
        head = self._head
        return head is not None and len(head) >= sum(f["runs"] for f in self.files)

    def head_answer(self, query: RunQuery) -> list[RunRow] | None:
        """The indexed rows `query` can need, from `head`; None if it cannot answer.

        Only the rows it returns are decoded: the newest offset + limit (the head is
        sorted as listings are, so the rows past those cannot be listed).
        """
        head = self._head
        if head is None or not query.unfiltered:
            return None
        need = None if query.limit is None else query.offset + query.limit
        if self.head_is_whole:
            return head.rows(need)
        if need is None or need > len(head):
            return None
        return head.rows(need)

    def merged_head(self, rows: list[RunRow]) -> list[RunRow] | None:
        """`head` after `rows` are indexed (a run's new row replacing its old one).

        None when that is not known without the files: no head yet, or re-indexed
        runs left the head and too few known rows remain above its oldest row.
        """
        head = self.head
        if head is None:
            return None
        new = {row.run_id for row in rows}
        kept = [row for row in head if row.run_id not in new]
        merged = sorted([*kept, *rows], key=newest_first_key, reverse=True)
        if self.head_is_whole:
            return merged[:HEAD_SIZE]
        if not head:
            return None
        # Every current row newer than the old head's oldest is in the old head or is new.
        oldest = newest_first_key(head[-1])
        known = [row for row in merged if newest_first_key(row) >= oldest]
        return known[:HEAD_SIZE] if len(known) >= HEAD_SIZE else None


class PointerCache:
    """The pointer decoded last in each of the most recently read repositories (by
    backend URL), with the bytes it was decoded from.

    A reader still reads ``index/current.json`` every time; only when the bytes are
    the very bytes cached is their decoding (JSON, and the head rows decoded so far)
    reused, so a listing is never older than the pointer it read.
    """

    size = 16

    def __init__(self) -> None:
        self._items: dict[str, tuple[bytes, Pointer]] = {}
        self._lock = threading.Lock()

    def decoded(self, url: str, data: bytes) -> Pointer:
        """The pointer `data` holds (a copy: its `files` and `superseded` are the caller's)."""
        with self._lock:
            item = self._items.pop(url, None)
        if item is None or item[0] != data:
            item = (data, Pointer.decode(data))
        with self._lock:
            self._items[url] = item
            while len(self._items) > self.size:
                del self._items[next(iter(self._items))]
        return item[1].copy()

    def clear(self) -> None:
        """Forget every decoded pointer (benchmarks time the first read of new bytes)."""
        with self._lock:
            self._items.clear()


POINTERS = PointerCache()


class IndexLock:
    """One index writer at a time: ``index/lock``, created exclusively, holding an owner record.

    A lock whose owner process is dead (see `cas.owner`), or older than `stale_after`
    (a holder on another host that died), is broken. The lock is made
    with `Backend.create`: O_EXCL on a local folder, a conditional PUT
    (``If-None-Match: *``) on S3, so two processes never fold at once there either.
    """

    timeout = 30.0
    poll = 0.02
    stale_after = 1800.0  # as `cas.locks.STALE_AFTER`

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __enter__(self) -> IndexLock:
        deadline = time.monotonic() + self.timeout
        while not self._try_create():
            owner = read_owner(self.backend, LOCK)
            if (owner is not None and not is_alive(owner)) or self._abandoned():
                self.backend.delete([LOCK])
                continue
            if time.monotonic() > deadline:
                raise ConflictError(f"the index of {self.backend.url} is locked by {owner}")
            time.sleep(self.poll)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.backend.delete([LOCK])

    def _abandoned(self) -> bool:
        """A lock older than `stale_after`: its holder (maybe on another host, whose
        processes this one cannot see) died mid-fold; folds take seconds."""
        written = modified_at(self.backend, LOCK)
        return written is not None and time.time() - written > self.stale_after

    def _try_create(self) -> bool:
        record = orjson.dumps({**current_owner(), "thread": _thread_id()})
        with _PROCESS_LOCK:  # threads of this process, whatever the backend offers
            return self.backend.create(LOCK, record)


def _thread_id() -> int:
    return threading.get_ident()


_PROCESS_LOCK = threading.Lock()


@dataclass
class CheckReport:
    """What `RunIndex.check` found, and whether it fixed it."""

    unindexed: list[str] = field(default_factory=list)  # final result, no rows
    stale: list[str] = field(default_factory=list)  # rows differ from the result
    orphaned: list[str] = field(default_factory=list)  # rows, but no final result any more
    pending: list[str] = field(default_factory=list)  # marked, not yet folded
    indexed: int = 0
    fixed: bool = False

    @property
    def ok(self) -> bool:
        return not (self.unindexed or self.stale or self.orphaned)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "indexed": self.indexed,
            "unindexed": self.unindexed,
            "stale": self.stale,
            "orphaned": self.orphaned,
            "pending": self.pending,
            "fixed": self.fixed,
        }


def tail(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest files to merge: each older one joins while it is no bigger than the rest.

    Like a binary counter, a row is rewritten O(log n) times over the life of the index.
    """
    chosen = files[-1:]
    total = sum(entry["runs"] for entry in chosen)
    for entry in reversed(files[:-1]):
        if entry["runs"] > total:
            break
        chosen.insert(0, entry)
        total += entry["runs"]
    return chosen


def renamed(superseded: dict[str, str], merged: set[str], name: str) -> dict[str, str]:
    return {run_id: name if owner in merged else owner for run_id, owner in superseded.items()}
