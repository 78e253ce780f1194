"""Garbage collection: forget runs outside a retention policy, then sweep what nothing names.

`collect` works in four phases (docs/design.md §10):

1. **Retention.** Pick the runs the policy does not keep and forget each one:
   its ``execution_result.json`` first (the run leaves every listing), then its
   manifest, segments, runbook and the rest of its folder, then its pending index
   mark; finally one index compaction drops their rows.
2. **Mark.** Every digest named by a remaining run's entries (runs without a result
   included; with PostgreSQL records one query for all runs), plus the outputs of
   cache records younger than the cutoff; each chunked payload's list is read and
   its chunks marked.
3. **Candidates.** One listing with times per kind (``objects``, ``lists``,
   ``chunks``): an unmarked key whose mtime is older than the cutoff
   (``mark start - grace``) is a candidate. Then **re-check**: every run whose
   folder changed since the mark started is read again and what it names is
   dropped from the candidates.
4. **Sweep**, in reverse write order: cache records whose output is gone, then
   objects and lists, then chunks; batched (one ``DeleteObjects`` per 1,000 keys
   on S3). On a local folder each candidate is first renamed to a temporary name
   and its mtime read again: a writer's dedup hit renews the mtime with one
   atomic ``os.utime`` (`cas.objects.refresh`), so it either lands before the
   rename (GC sees it and puts the object back) or fails (the writer stores the
   object again).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cas.cache import ITEMS, STEPS
from cas.digest import Digest, is_digest_prefix, unseal
from cas.errors import CasError, IntegrityError, InvalidInputError, NotFoundError
from cas.ids import is_valid_id
from cas.index_rows import pending_key
from cas.locks import EXCLUSIVE, Lock, locked
from cas.objects import Backend, LocalBackend, is_temp_name, list_times
from cas.payloads import CHUNKS, LISTS
from cas.repository import Repository, RunInfo
from cas.stores import RESULT, RUNS, run_key

OBJECTS = "objects"
DEFAULT_GRACE = timedelta(hours=1)
DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1,000 keys
MARK_WORKERS = 8  # runs whose manifests the mark reads at once
# Keys per `backend.delete` call on an object store: s3fs splits them into 1,000-key
# DeleteObjects requests and sends those concurrently (about 4x the rate of one by one).
REMOTE_CALL = 10 * DELETE_BATCH
FAILED_LIKE = frozenset({"failed", "partial", "interrupted"})

Progress = Callable[[str, int, int], None]

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``1h30m``, ``0`` or ``90s`` as a timedelta; `InvalidInputError` else."""
    value = text.strip().lower()
    if value == "0":
        return timedelta(0)
    position, seconds = 0, 0
    for match in _DURATION.finditer(value):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise InvalidInputError(
            f"invalid duration {text[:40]!r}: expected a number with a unit s, m, h, d or w "
            "(e.g. 30d, 12h, 1h30m)"
        )
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Policy:
    """Which runs to keep. With no rule at all every run is kept (only garbage is swept).

    A run is kept if *any* rule keeps it: among the `keep_last` newest (by start
    time), started within `keep_within`, failed/partial/interrupted and started
    within `keep_failed`, pinned in `keep`; and always if it has no result yet or
    is ``running`` with a live owner.
    """

    keep_last: int | None = None
    keep_within: timedelta | None = None
    keep_failed: timedelta | None = None
    keep: frozenset[str] = frozenset()
    grace: timedelta = DEFAULT_GRACE

    def __post_init__(self) -> None:
        if self.keep_last is not None and self.keep_last < 0:
            raise InvalidInputError("--keep-last must be 0 or more")
        if self.grace < timedelta(0):
            raise InvalidInputError("the grace period cannot be negative")

    @property
    def retains_all(self) -> bool:
        """True when no retention rule is given: no run is removed."""
        return self.keep_last is None and self.keep_within is None and self.keep_failed is None


@dataclass
class GcResult:
    """What a collection removed (or, in a dry run, would remove)."""

    dry_run: bool
    runs_removed: list[str] = field(default_factory=list)
    runs_kept: int = 0
    objects_removed: int = 0
    lists_removed: int = 0
    chunks_removed: int = 0
    cache_records_removed: int = 0
    temporaries_removed: int = 0
    bytes_freed: int = 0
    kept_young: int = 0  # unreferenced but younger than the grace period
    rescued: int = 0  # candidates whose mtime a writer renewed during the sweep (local)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "runs_removed": sorted(self.runs_removed),
            "runs_kept": self.runs_kept,
            "objects_removed": self.objects_removed,
            "lists_removed": self.lists_removed,
            "chunks_removed": self.chunks_removed,
            "cache_records_removed": self.cache_records_removed,
            "temporaries_removed": self.temporaries_removed,
            "bytes_freed": self.bytes_freed,
            "kept_young": self.kept_young,
            "rescued": self.rescued,
        }


# retention ---------------------------------------------------------------------------


def select_runs(repo: Repository, policy: Policy, now: datetime | None = None) -> list[str]:
    """Runs the policy does not keep, sorted (none when the policy has no rule)."""
    if policy.retains_all:
        return []
    now = now or datetime.now(UTC)
    infos = repo.run_infos()
    with_result = [info for info in infos if info.result is not None]
    newest = sorted(with_result, key=_start_key, reverse=True)
    kept: set[str] = {info.run_id for info in infos if _always_kept(info)}
    kept |= policy.keep
    if policy.keep_last is not None:
        kept |= {info.run_id for info in newest[: policy.keep_last]}
    for info in with_result:
        age = now - _start(info)
        if policy.keep_within is not None and age <= policy.keep_within:
            kept.add(info.run_id)
        failed = info.status in FAILED_LIKE
        if policy.keep_failed is not None and failed and age <= policy.keep_failed:
            kept.add(info.run_id)
    return sorted(info.run_id for info in infos if info.run_id not in kept)


def _always_kept(info: RunInfo) -> bool:
    """No result yet (a writer may be mid-run), or ``running`` with a live owner."""
    return info.result is None or (info.result.status == "running" and not info.abandoned)


def _start(info: RunInfo) -> datetime:
    assert info.result is not None
    value = info.result.started_at
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _start_key(info: RunInfo) -> tuple[datetime, str]:
    return _start(info), info.run_id


def forget_runs(repo: Repository, run_ids: Sequence[str]) -> None:
    """Remove runs: from their packs (each rewritten without them), then each folder's
    result, then the rest of the folder, then their index rows."""
    backend = repo.backend
    if repo.records is None:
        repo.packs.remove(run_ids)  # a packed run is not listed once its old index is gone
    for run_id in run_ids:
        if repo.records is not None:  # PostgreSQL: result and entries in one transaction
            repo.records.delete_run(run_id)
        backend.delete([run_key(run_id, RESULT)])  # from here on the run is not listed
        rest = [key for key in backend.list(f"{RUNS}/{run_id}") if not key.endswith(RESULT)]
        backend.delete(rest)
        backend.delete([pending_key(run_id)])
        if isinstance(backend, LocalBackend):
            _remove_empty_folders(backend, f"{RUNS}/{run_id}")
    if run_ids:
        from cas.index import RunIndex

        RunIndex(repo).forget(run_ids)


def _remove_empty_folders(backend: LocalBackend, prefix: str) -> None:
    top = Path(backend.url) / prefix
    for folder, _dirs, _files in sorted(os.walk(top), key=lambda item: -len(str(item[0]))):
        with contextlib.suppress(OSError):
            Path(folder).rmdir()


# mark --------------------------------------------------------------------------------


def _named(repo: Repository, run_ids: Iterable[str], marked: set[Digest]) -> None:
    """Add the digests the runs' entries name; stop on a manifest that cannot be read.

    With PostgreSQL records, one query for all of them (`ManifestStore.digests`), not
    one per run; on a backend, each run's manifest files.
    """
    if repo.records is not None:
        ids = list(run_ids)
        try:
            marked.update(repo.records.digests(ids))
        except CasError as error:
            which = (
                f"manifest of run {ids[0]}" if len(ids) == 1 else f"manifests of {len(ids)} runs"
            )
            raise _unreadable(which, error) from None
        return
    with ThreadPoolExecutor(max_workers=MARK_WORKERS) as pool:  # on S3 a LIST and a GET each
        for digests in pool.map(lambda run_id: _digests_of(repo, run_id), run_ids):
            marked.update(digests)


def _digests_of(repo: Repository, run_id: str) -> list[Digest]:
    try:
        entries = repo.artifacts.entries(run_id)
    except CasError as error:
        raise _unreadable(f"manifest of run {run_id}", error) from None
    return [entry.digest for entry in entries.values()]


def _unreadable(which: str, error: CasError) -> IntegrityError:
    """gc's stop before any delete: `which` ("manifest of run X") cannot be read."""
    return IntegrityError(
        f"gc stopped before deleting anything: the {which} cannot be read ({error}); "
        "run 'cas verify'"
    )


def _cache_records(
    backend: Backend, cutoff: float
) -> tuple[list[tuple[str, Digest, int]], set[Digest]]:
    """Old cache records (key, output, size) to judge, and outputs of young ones (roots)."""
    judged: list[tuple[str, Digest, int]] = []
    roots: set[Digest] = set()
    for prefix in (STEPS, ITEMS):
        for key, mtime, size in list_times(backend, prefix):
            if is_temp_name(key.rsplit("/", 1)[-1]):
                continue
            try:
                output = Digest.parse(unseal(backend.read(key), key)["output"])
            except (CasError, KeyError, TypeError, ValueError):
                continue  # a damaged record is a miss; leave it to verify
            if mtime >= cutoff:
                roots.add(output)
            else:
                judged.append((key, output, size))
    return judged, roots


@dataclass
class _Listing:
    """Stored keys of one kind: digest → (key, mtime, size), and old temporaries."""

    keys: dict[Digest, tuple[str, float, int]] = field(default_factory=dict)
    temporaries: list[tuple[str, int]] = field(default_factory=list)


def _listing(backend: Backend, prefix: str, cutoff: float) -> _Listing:
    found = _Listing()
    for key, mtime, size in list_times(backend, prefix):
        parts = key.split("/")
        if len(parts) != 3:
            continue
        shard, name = parts[1], parts[2]
        if is_temp_name(name):
            if mtime < cutoff:
                found.temporaries.append((key, size))
        elif len(shard) == 2 and len(name) == 62 and is_digest_prefix(shard + name):
            found.keys[Digest(shard + name)] = (key, mtime, size)
    return found


def _runs_changed_since(backend: Backend, since: float, marked_runs: set[str]) -> set[str]:
    """Runs with a file written at or after `since`, or not seen by the mark."""
    changed: set[str] = set()
    for key, mtime, _size in list_times(backend, RUNS):
        run_id = key.split("/")[1] if key.count("/") >= 2 else ""
        if is_valid_id(run_id) and (mtime >= since or run_id not in marked_runs):
            changed.add(run_id)
    return changed


# collect -----------------------------------------------------------------------------


def collect(
    repo: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
    lock_wait: float = 0.0,
) -> GcResult:
    """Apply `policy`, then sweep unreferenced objects older than its grace period.

    On an object store the collection holds the exclusive ``gc`` lock throughout
    (`cas.locks`), waiting up to `lock_wait` seconds for writers to finish; a dry
    run takes no lock.
    """
    for run_id in policy.keep:
        if not is_valid_id(run_id):
            raise InvalidInputError(f"invalid run id {run_id!r}")
    if dry_run:
        return _collect(repo, policy, GcResult(dry_run=True), progress=progress, now=now, lock=None)
    with locked(repo.backend, EXCLUSIVE, wait=lock_wait) as lock:
        return _collect(
            repo, policy, GcResult(dry_run=False), progress=progress, now=now, lock=lock
        )


def _collect(
    repo: Repository,
    policy: Policy,
    result: GcResult,
    *,
    progress: Progress | None,
    now: datetime | None,
    lock: Lock | None,
) -> GcResult:
    dry_run = result.dry_run
    backend = repo.backend
    removed = select_runs(repo, policy, now)
    result.runs_removed = removed
    if not dry_run:
        forget_runs(repo, removed)

    # mark: stamps are taken a second early, so a coarse file-system clock cannot hide a write
    mark_start = time.time() - 1.0
    cutoff = mark_start - policy.grace.total_seconds()
    position = repo.records.position() if repo.records is not None else 0
    repo.has_packs(fresh=True)  # packs another process wrote are marked too
    remaining = [run_id for run_id in repo.run_ids() if run_id not in set(removed)]
    result.runs_kept = len(remaining)
    marked: set[Digest] = set()
    _named(repo, remaining, marked)
    judged, cache_roots = _cache_records(backend, cutoff)
    marked |= cache_roots

    lists = _listing(backend, LISTS, cutoff)
    objects = _listing(backend, OBJECTS, cutoff)
    chunks = _listing(backend, CHUNKS, cutoff)

    # re-check: entries written since the mark started (a dedup hit on an old object)
    if repo.records is not None:  # entries saved since the mark, and runs it did not see
        changed = repo.records.saved_after(position) | set(repo.run_ids()) - set(remaining)
    else:
        changed = _runs_changed_since(backend, mark_start, set(remaining))
        changed |= repo.packs.runs() - set(remaining)  # packs written since the mark began
    _named(repo, changed - set(removed), marked)

    dead_objects = _candidates(objects, marked, cutoff, result)
    dead_lists = _candidates(lists, marked, cutoff, result)
    dead_cache = [(key, size) for key, output, size in judged if output not in marked]
    if dry_run:
        gone = {key for key, _ in dead_lists}
        dead_chunks = _candidates(chunks, _chunks_of(repo, lists, gone), cutoff, result)
        temporaries = objects.temporaries + lists.temporaries + chunks.temporaries
        result.cache_records_removed = len(dead_cache)
        result.objects_removed, result.lists_removed = len(dead_objects), len(dead_lists)
        result.chunks_removed = len(dead_chunks)
        result.temporaries_removed = len(temporaries)
        everything = [*dead_cache, *dead_objects, *dead_lists, *dead_chunks, *temporaries]
        result.bytes_freed = sum(size for _, size in everything)
        return result

    sweeper = _Sweeper(backend, cutoff, result, progress=progress, lock=lock)
    sweeper.total = len(dead_cache) + len(dead_objects) + len(dead_lists)
    result.cache_records_removed = sweeper.delete(dead_cache, checked=False)
    result.objects_removed = sweeper.delete(dead_objects)
    result.lists_removed = sweeper.delete(dead_lists)
    # Chunks last, protected by every list still present: marked, young, or renewed by a
    # writer during the sweep (its chunks are about to be named again).
    dead_chunks = _candidates(chunks, _chunks_of(repo, lists, sweeper.deleted), cutoff, result)
    sweeper.total += len(dead_chunks)
    result.chunks_removed = sweeper.delete(dead_chunks)
    temporaries = objects.temporaries + lists.temporaries + chunks.temporaries
    result.temporaries_removed = _delete_temporaries(backend, temporaries, result)
    _delete_orphan_packs(repo, cutoff, result)
    return result


def _delete_orphan_packs(repo: Repository, cutoff: float, result: GcResult) -> None:
    """Packs older than the cutoff whose index a crash never wrote (`cas.packs`)."""
    old = repo.packs.orphans(older_than=cutoff)
    repo.backend.delete(k for k, _ in old)
    result.bytes_freed += sum(size for _, size in old)


def _delete_temporaries(backend: Backend, found: list[tuple[str, int]], result: GcResult) -> int:
    """Unlink old temporaries (only a local folder has them; their names fail `check_key`)."""
    if not isinstance(backend, LocalBackend):
        return 0
    removed = 0
    for key, size in found:
        if backend.delete_temporary(key):
            removed += 1
            result.bytes_freed += size
    return removed


def _chunks_of(repo: Repository, lists: _Listing, deleted: set[str]) -> set[Digest]:
    """Every chunk named by a chunk list that is still stored (listed and not `deleted`)."""
    chunks: set[Digest] = set()
    for digest, (key, _mtime, _size) in lists.keys.items():
        if key in deleted:
            continue
        try:
            chunks.update(repo.payloads.chunk_list(digest))
        except NotFoundError:
            continue  # removed since the listing (by another gc): names nothing now
        except CasError as error:
            raise IntegrityError(
                f"gc stopped before deleting chunks: the chunk list of {digest.hex} "
                f"cannot be read ({error}); run 'cas verify'"
            ) from None
    return chunks


def _candidates(
    listing: _Listing, marked: set[Digest], cutoff: float, result: GcResult
) -> list[tuple[str, int]]:
    dead: list[tuple[str, int]] = []
    for digest, (key, mtime, size) in listing.keys.items():
        if digest in marked:
            continue
        if mtime >= cutoff:
            result.kept_young += 1
        else:
            dead.append((key, size))
    return dead


class _Sweeper:
    """Batched deletes; on a local folder rename, re-check the mtime, then unlink."""

    def __init__(
        self,
        backend: Backend,
        cutoff: float,
        result: GcResult,
        *,
        progress: Progress | None,
        lock: Lock | None,
    ) -> None:
        self.backend = backend
        self.lock = lock
        self.cutoff = cutoff
        self.result = result
        self.progress = progress
        self.done = 0
        self.total = 0
        self.deleted: set[str] = set()

    def delete(self, items: list[tuple[str, int]], *, checked: bool = True) -> int:
        removed = 0
        step = DELETE_BATCH if isinstance(self.backend, LocalBackend) else REMOTE_CALL
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            if self.lock is not None:
                self.lock.check()  # never delete under a lock writers may take as stale
            if isinstance(self.backend, LocalBackend) and checked:
                gone = [key for key, size in batch if self._local(key, size)]
            else:
                self.backend.delete(key for key, _ in batch)
                gone = [key for key, _ in batch]
                self.result.bytes_freed += sum(size for _, size in batch)
            self.deleted.update(gone)
            removed += len(gone)
            self.done += len(batch)
            if self.progress is not None:
                self.progress("sweeping", self.done, max(self.total, self.done))
        return removed

    def _local(self, key: str, size: int) -> bool:
        """Rename away, then look at the mtime: a writer's renewal puts it back."""
        assert isinstance(self.backend, LocalBackend)
        deleted = self.backend.delete_if_older(key, self.cutoff)
        if not deleted:
            if deleted is False:  # renewed by a dedup hit in between: kept
                self.result.rescued += 1
            return False
        self.result.bytes_freed += size
        return True
