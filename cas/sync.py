"""Copy runs between repositories (``cas push`` and ``cas pull``), in a safe order.

`transfer` first plans: for each run it reads the source's result and entries and,
if the destination has the run (a folder or a pack), the destination's. A run
complete on both sides with the same result and entries is skipped; one that
differs is a `ConflictError` raised before anything is written. A run whose folder
holds only some of the source's entries and no result (an interrupted sync) is
completed. Past `FEW_RUNS` runs, those the source holds only in packs are read a
whole pack at a time.

Then it writes, in this order, so a reader of the destination never sees a run
whose payloads are missing (I1, I16 and I2 across repositories; docs/design.md §15):

1. the payloads the destination lacks, found with batched `ObjectStore.missing`
   calls (a check each for a few, else one listing of the store), copied by a
   bounded pool of threads; each read re-hashes, whole objects are written as
   stored and chunked payloads through the destination's `PayloadStore.put`
   (chunks, then the list);
2. for runs written to folders: the entries the destination lacks, in the source's
   order, byte for byte (envelope and ``saved_at`` kept), in one
   `BackendArtifactStore.merge` (on object stores one ``manifest.jsonl`` PUT), and
   ``runbook.yaml``;
3. one batch index mark, then the folder runs' results (`ExecutionStore.save`
   syncs the manifest first) and, past `FEW_RUNS` new runs, run packs holding
   the entries, result and runbook of up to 1,000 runs each (`cas.packs`);
4. past `FEW_RUNS` runs, the destination's index, folded from what is in hand.

Running again after an interruption sends only what is left: payloads already
there are found by the listing, runs already there are skipped.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from cas.digest import seal
from cas.errors import ConflictError, NotFoundError
from cas.index_rows import RunQuery, aware
from cas.locks import WRITER, locked
from cas.model import ArtifactEntry, ExecutionResult
from cas.objects import FsspecBackend, LocalBackend
from cas.packs import Mapper, RunSection, batches
from cas.payload_copy import Progress, copy_payloads, run_all
from cas.repository import RUNBOOK, Repository
from cas.stores import RUNS, run_key

T = TypeVar("T")
DEFAULT_WORKERS = 8
FEW_RUNS = 10  # up to this many runs: check each run folder, leave the index to its next sync


@dataclass
class SyncResult:
    """What a transfer did."""

    runs_sent: list[str] = field(default_factory=list)
    runs_skipped: dict[str, str] = field(default_factory=dict)  # run id -> reason
    objects_sent: int = 0  # objects and chunks written
    objects_present: int = 0  # payloads the destination already held
    bytes_sent: int = 0  # stored (compressed) bytes written for payloads
    requests: int | None = None  # S3 requests made, when either side is S3

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs_sent": self.runs_sent,
            "runs_skipped": self.runs_skipped,
            "objects_sent": self.objects_sent,
            "objects_present": self.objects_present,
            "bytes_sent": self.bytes_sent,
            "requests": self.requests,
        }


class Unread:
    """A runbook not read yet (`_Plan.runbook`)."""


UNREAD = Unread()


@dataclass
class _Plan:
    run_id: str
    result: ExecutionResult
    entries: dict[str, ArtifactEntry]
    dest_entries: dict[str, ArtifactEntry]
    fresh: bool  # the destination has no folder for the run
    runbook: bytes | Unread | None = UNREAD  # read with the run from a source pack
    lines: dict[str, bytes] = field(default_factory=dict)  # the source's sealed entry lines

    def source_runbook(self, source: Repository) -> bytes | None:
        return source.runbook(self.run_id) if isinstance(self.runbook, Unread) else self.runbook


def select_runs(repo: Repository, since: datetime | None = None) -> list[str]:
    """Every run folder of `repo`, or (with `since`) the runs started at or after it."""
    if since is None:
        return repo.run_ids()
    return sorted(row.run_id for row in repo.list_runs(RunQuery(since=aware(since))))


def transfer(
    source: Repository,
    dest: Repository,
    run_ids: Iterable[str],
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
) -> SyncResult:
    """Copy `run_ids` from `source` to `dest`: payloads, then entries, then results."""
    outcome = SyncResult()
    # The destination's writer lock spans the missing checks too: a payload found
    # present must not be swept by a gc before the entries naming it land (§10).
    with _count_requests(source, dest) as counter, locked(dest.backend, WRITER):
        plans = _plan(source, dest, run_ids, outcome, workers)
        _copy_payloads(source, dest, plans, outcome, workers=workers, progress=progress)
        _write_runs(
            source, dest, plans, workers=workers, progress=progress, stored=outcome.bytes_sent
        )
        outcome.runs_sent += [plan.run_id for plan in plans]
    outcome.requests = counter()
    return outcome


def _entry_dicts(entries: dict[str, ArtifactEntry]) -> dict[str, dict[str, Any]]:
    return {name: entry.to_dict() for name, entry in entries.items()}


@dataclass
class _Sides:
    """What the plan reads of one run: the source's result and entries, and the
    destination's where it has the run's folder."""

    run_id: str
    result: ExecutionResult | None
    entries: dict[str, ArtifactEntry] = field(default_factory=dict)
    dest_result: ExecutionResult | None = None
    dest_entries: dict[str, ArtifactEntry] = field(default_factory=dict)
    present: bool = False
    runbook: bytes | Unread | None = UNREAD
    lines: dict[str, bytes] = field(default_factory=dict)

    def take(self, sealed: dict[str, tuple[ArtifactEntry, bytes]]) -> _Sides:
        """Keep the source's entries and the sealed lines they were read from."""
        self.entries = {name: entry for name, (entry, _line) in sealed.items()}
        self.lines = {name: line for name, (_entry, line) in sealed.items()}
        return self


def _plan(
    source: Repository,
    dest: Repository,
    run_ids: Iterable[str],
    outcome: SyncResult,
    workers: int = DEFAULT_WORKERS,
) -> list[_Plan]:
    """Decide what each run needs; every conflict is found before the first write.

    The runs are read in a pool of `workers` threads (on S3 a few requests each),
    then judged in order. Where every read is local (a folder source, runs new to
    the destination), in this thread: reading is then all CPU, and threads would
    only add their switching.
    """
    wanted = list(dict.fromkeys(run_ids))
    present = _present(dest, wanted)
    local = isinstance(source.backend, LocalBackend) and not present
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        mapper: Mapper = map if local else pool.map
        packed = _read_packed(source, dest, wanted, present, mapper)
        read = list(mapper(lambda r: packed.get(r) or _read(source, dest, r, present), wanted))
    plans: list[_Plan] = []
    for sides in read:
        plan = _judge(sides, dest.url, outcome)
        if plan is not None:
            plans.append(plan)
    return plans


def _read_packed(
    source: Repository, dest: Repository, wanted: list[str], present: set[str], mapper: Mapper
) -> dict[str, _Sides]:
    """Past `FEW_RUNS` runs, those the source holds only in packs, a pack read at a
    time (`cas.packs.RunPacks.sections`) instead of a folder check and a read per run."""
    if len(wanted) <= FEW_RUNS or not source.has_packs():
        return {}
    folders = set(source.backend.children(RUNS))  # a run with a folder reads as usual
    found: dict[str, _Sides] = {}
    for run_id, section in source.packs.sections((r for r in wanted if r not in folders), mapper):
        result = section.execution_result()
        sides = _Sides(run_id, result, present=run_id in present).take(section.sealed_entries())
        sides.runbook = section.runbook
        if sides.present and result.status != "running":
            sides.dest_result, sides.dest_entries = dest.find_run(run_id)
        found[run_id] = sides
    return found


def _read(source: Repository, dest: Repository, run_id: str, present: set[str]) -> _Sides:
    try:
        result = source.executions.get(run_id)
    except NotFoundError:
        return _Sides(run_id, None)
    if result.status == "running":
        return _Sides(run_id, result)
    sides = _Sides(run_id, result, present=run_id in present)
    sides.take(source.artifacts.sealed_entries(run_id))
    if sides.present:
        sides.dest_result, sides.dest_entries = dest.find_run(run_id)
    return sides


def _judge(sides: _Sides, where: str, outcome: SyncResult) -> _Plan | None:
    """The run's plan; None (with the reason in `outcome`) if it is not sent."""
    run_id, result = sides.run_id, sides.result
    if result is None:
        outcome.runs_skipped[run_id] = "no result yet"
        return None
    if result.status == "running":
        outcome.runs_skipped[run_id] = "still running"
        return None
    if sides.present and _already_there(sides, result, where):
        outcome.runs_skipped[run_id] = "already present"
        return None
    return _Plan(
        run_id,
        result,
        sides.entries,
        sides.dest_entries,
        not sides.present,
        sides.runbook,
        sides.lines,
    )


def _already_there(sides: _Sides, result: ExecutionResult, where: str) -> bool:
    """Whether the destination holds the run whole and the same; `ConflictError` if
    it holds a different result or entry (a partial run of the same entries is not
    there yet: the transfer completes it)."""
    mine, theirs = _entry_dicts(sides.entries), _entry_dicts(sides.dest_entries)
    if sides.dest_result is not None:
        same_result = sides.dest_result.to_dict() == result.to_dict()
        if same_result and mine == theirs:
            return True
        raise ConflictError(
            f"run {sides.run_id!r} exists in {where} with a different "
            f"{'manifest' if same_result else 'result'}: refusing to overwrite it"
        )
    for name, entry in theirs.items():
        if mine.get(name) != entry:
            raise ConflictError(
                f"run {sides.run_id!r} exists in {where} with a different entry for "
                f"artifact {name!r}: refusing to overwrite it"
            )
    return False


def _present(dest: Repository, run_ids: list[str]) -> set[str]:
    """Which of `run_ids` have a folder in `dest`.

    One listing of every run (a page per 1,000 runs on S3), or, for a few runs, a
    listing of each one's own folder, which stops at its first key.
    """
    if dest.records is not None or len(run_ids) > FEW_RUNS:
        return set(dest.run_ids()).intersection(run_ids)
    folders = {run_id: iter(dest.backend.list(f"{RUNS}/{run_id}")) for run_id in run_ids}
    found = {run_id for run_id, keys in folders.items() if next(keys, None) is not None}
    return found | dest.packs.holding(run_ids)  # one listing of packs/


def _copy_payloads(
    source: Repository,
    dest: Repository,
    plans: list[_Plan],
    outcome: SyncResult,
    *,
    workers: int,
    progress: Progress | None,
) -> None:
    """Every payload the plans' entries name that `dest` lacks (`cas.payload_copy`)."""
    sizes = {entry.digest: entry.size for plan in plans for entry in plan.entries.values()}
    copied = copy_payloads(source, dest, sizes, workers=workers, progress=progress)
    outcome.objects_present, outcome.objects_sent, outcome.bytes_sent = copied


def _write_runs(
    source: Repository,
    dest: Repository,
    plans: list[_Plan],
    *,
    workers: int,
    progress: Progress | None = None,
    stored: int = 0,
) -> None:
    """Every run's entries and runbook, then its result, then the index (I1, I21).

    Past `FEW_RUNS` runs new to the destination, those are written as packs
    (`cas.packs`): entries, result and runbook of up to 1,000 runs in one write,
    committed by its index file. The rest (and every run of a smaller push) get
    their entries and runbook, then their results, each phase in the pool and ended
    before the next starts. One batch mark, written before the first pack or
    result, stands for a mark per run. Past `FEW_RUNS` runs the index is then
    folded from the results and entries in hand (about a dozen requests on S3,
    where the next listing would read each run back); fewer are left to the next
    listing.
    """
    fresh = [plan for plan in plans if plan.fresh]
    packed = fresh if dest.records is None and len(fresh) > FEW_RUNS else []
    foldered = plans if not packed else [plan for plan in plans if not plan.fresh]
    entries = _Ticker(progress, "entries", len(plans), stored)
    sections = _sections(source, packed, workers, entries)
    run_all([entries.after(partial(_write_entries, source, dest, p)) for p in foldered], workers)
    if packed:
        dest.enable_packs()
    with dest.marked_together(plan.run_id for plan in plans):
        # each save syncs the run's manifest first, as any result save does
        results = _Ticker(progress, "results", len(plans), stored)
        calls: list[Callable[[], object]] = [
            results.after(partial(dest.packs.write, batch), len(batch))
            for batch in batches(sections)
        ]
        saves = [partial(dest.executions.save, plan.run_id, plan.result) for plan in foldered]
        run_all(calls + [results.after(save) for save in saves], workers)
    if dest.records is None and len(plans) > FEW_RUNS:  # else the next listing folds them
        from cas.index import RunIndex

        RunIndex(dest).sync(known=[(plan.result, plan.entries) for plan in plans])


def _sections(
    source: Repository, plans: list[_Plan], workers: int, ticker: _Ticker
) -> list[tuple[str, RunSection]]:
    """The packed records of `plans`: result, entries (in the source's order) and
    runbook, byte for byte as their folders would hold them; runbooks read in the pool
    (a local source's in this thread)."""

    def section(plan: _Plan) -> tuple[str, RunSection]:
        lines = b"".join(
            (plan.lines.get(name) or seal(entry.to_dict())) + b"\n"
            for name, entry in plan.entries.items()
        )
        return plan.run_id, RunSection(
            seal(plan.result.to_dict()), lines, plan.source_runbook(source)
        )

    if isinstance(source.backend, LocalBackend):  # no waiting on reads: threads only cost
        return [ticker.after(section)(plan) for plan in plans]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(ticker.after(section), plans))


class _Ticker:
    """Reports one phase of the run writes: runs done of all, as each call returns."""

    def __init__(self, progress: Progress | None, phase: str, total: int, stored: int) -> None:
        self.progress, self.phase, self.total, self.stored = progress, phase, total, stored
        self.done = 0
        self.lock = threading.Lock()
        self._report()

    def after(self, call: Callable[..., T], runs: int = 1) -> Callable[..., T]:
        """`call`, then a tick of `runs` runs."""

        def ticked(*args: Any) -> T:
            value = call(*args)
            with self.lock:
                self.done += runs
                self._report()
            return value

        return ticked

    def _report(self) -> None:
        if self.progress is not None and self.total:
            self.progress(self.phase, self.done, self.total, self.stored)


def _write_entries(source: Repository, dest: Repository, plan: _Plan) -> None:
    """The entries the destination lacks (in the source's order), then the runbook."""
    missing = [
        entry
        for name, entry in plan.entries.items()
        if (have := plan.dest_entries.get(name)) is None or have.to_dict() != entry.to_dict()
    ]
    # on object stores one manifest PUT (I25), with no listing for a run new there
    dest.artifacts.merge(plan.run_id, missing, fresh=plan.fresh)
    runbook = plan.source_runbook(source)
    if runbook is not None:
        dest.backend.write(run_key(plan.run_id, RUNBOOK), runbook)


@contextlib.contextmanager
def _count_requests(*repos: Repository) -> Iterator[Callable[[], int | None]]:
    """Count the HTTP requests the S3 clients of `repos` send (botocore ``before-send``)."""
    clients: dict[int, Any] = {}
    for repo in repos:
        backend = repo.backend
        if isinstance(backend, FsspecBackend) and "s3" in _protocols(backend.fs):
            with contextlib.suppress(Exception):
                client = backend.fs.s3
                clients[id(client)] = client
    if not clients:
        yield lambda: None
        return
    count = [0]
    lock = threading.Lock()

    def on_send(**_: Any) -> None:
        with lock:
            count[0] += 1

    handler_id = f"cas-sync-{uuid.uuid4().hex}"
    for client in clients.values():
        client.meta.events.register("before-send.s3", on_send, unique_id=handler_id)
    try:
        yield lambda: count[0]
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-send.s3", unique_id=handler_id)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
