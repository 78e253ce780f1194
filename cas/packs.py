"""Run packs: the records of many finished runs in one object (a push of many runs).

A folder per run costs a write per file (``manifest.jsonl``, the result, the
runbook), and on S3 each is a request whose price is the same whatever its
size. A push of many runs writes them instead as **packs**:

* ``packs/{name}.pack``: one section per run, back to back. A section is the run's
  sealed result (one line), its sealed manifest lines, then its runbook's bytes;
  every byte is what the run's folder would hold.
* ``packs/{name}.idx``: a sealed JSON record naming the pack's runs with the offset
  and lengths of each section. ``name`` is ``{low}-{high}-{digest}``: the range of
  run ids inside (`bound`) and the BLAKE3 of the pack's bytes.

The index file is the commit point: it is written after its pack, and readers
only see packs that have one, so a crash between the two leaves an unreferenced
pack (garbage for gc), never a run with missing records. Both are write-once.
A reader lists ``packs/`` (one request), reads each index it has not seen whose
range may hold the run it wants (cached: an index never changes under its name)
and reads one run with one ranged read of its section. Its records are sealed
like any others (I6), and a whole read (`RunPacks.load`) re-hashes the pack
against its name.

A run's folder, when it has one, takes precedence file by file (`cas.stores`):
its result over the packed result, its journal over the packed manifest (its
segments apply on top of either), its runbook over the packed one. So a packed
run stays writable like any other, and removing a run (gc) rewrites each pack
that holds it without it: the new pack and index first, then the old index.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cas.digest import Digest, seal, unseal
from cas.errors import IntegrityError, NotFoundError
from cas.ids import is_valid_id
from cas.model import ArtifactEntry, ExecutionResult, newest_entries
from cas.objects import Backend, list_times

Mapper = Callable[[Callable[[str], Any], Iterable[str]], Iterable[Any]]  # `map`, a pool's map
PACKS = "packs"
PACK_FORMAT = "cas-pack/1"
BOUND_BYTES = 16  # bytes of a run id that a pack's name bounds (`bound`)
_NAME = re.compile(r"[0-9a-f]{32}-[0-9a-f]{32}-[0-9a-f]{64}")
MAX_PACK_RUNS = 1000  # runs per pack a push writes; bounds a gc rewrite and a full check
MAX_PACK_BYTES = 32 * 1024 * 1024
_SECTIONS_KEPT = 256  # sections held after a read (a result, entries and runbook read)


@dataclass(frozen=True)
class RunSection:
    """One run's records as a pack holds them (the bytes its folder would hold)."""

    result: bytes  # the sealed result, as in execution_result.json
    manifest: bytes  # sealed entry lines, each ending in "\n", as in manifest.jsonl
    runbook: bytes | None  # runbook.yaml, if the run has one
    where: str = ""  # "packs/{name}.pack:{run id}", for error messages

    def size(self) -> int:
        return len(self.result) + 1 + len(self.manifest) + len(self.runbook or b"")

    def execution_result(self) -> ExecutionResult:
        """The packed result, its seal checked (I6)."""
        return ExecutionResult.from_dict(unseal(self.result, self.where))

    def entries(self) -> dict[str, ArtifactEntry]:
        """The packed manifest: artifact id → newest entry, seals checked (I6)."""
        return {name: entry for name, (entry, _line) in self.sealed_entries().items()}

    def sealed_entries(self) -> dict[str, tuple[ArtifactEntry, bytes]]:
        """`entries`, each with the sealed line it was read from."""
        lines = enumerate(self.manifest.split(b"\n")[:-1], 1)
        return newest_entries((line, unseal(line, f"{self.where}:{n}")) for n, line in lines)


@dataclass(frozen=True)
class PackedRun:
    """Where one run's section is: pack, offset and the lengths of its three parts."""

    run_id: str
    pack: str  # the pack's hex name
    start: int
    result: int
    manifest: int
    runbook: int  # -1: no runbook

    @property
    def end(self) -> int:
        return self.start + self.result + 1 + self.manifest + max(self.runbook, 0)

    def to_list(self) -> list[Any]:
        return [self.run_id, self.start, self.result, self.manifest, self.runbook]

    def cut(self, data: bytes) -> RunSection:
        """The section's parts from its bytes (``data`` = pack[start:end])."""
        if len(data) != self.end - self.start or data[self.result : self.result + 1] != b"\n":
            raise IntegrityError(f"pack {self.pack}: run {self.run_id!r} is cut short or damaged")
        body = self.result + 1
        runbook = data[body + self.manifest :] if self.runbook >= 0 else None
        where = f"{pack_key(self.pack)}:{self.run_id}"
        return RunSection(data[: self.result], data[body : body + self.manifest], runbook, where)


def pack_key(name: str) -> str:
    return f"{PACKS}/{name}.pack"


def index_key(name: str) -> str:
    return f"{PACKS}/{name}.idx"


def bound(run_id: str) -> str:
    """The hex of the run id's first `BOUND_BYTES` bytes, padded with zeros: it sorts
    as the ids do (a shorter id first), so a pack name can bound the ids inside."""
    return run_id.encode()[:BOUND_BYTES].ljust(BOUND_BYTES, b"\0").hex()


def covers(name: str, run_id: str) -> bool:
    """Whether pack `name` may hold `run_id` (its name's range contains the id's bound)."""
    low, high, _digest = name.split("-")
    return low <= bound(run_id) <= high


def build(sections: Sequence[tuple[str, RunSection]]) -> tuple[str, bytes, bytes]:
    """``(name, pack bytes, index bytes)`` for `sections`, in their order.

    The name is ``{low}-{high}-{digest}``: the least and greatest `bound` of its run
    ids, then the BLAKE3 of the pack. A lookup of one run reads only the indexes
    whose range contains it: with time-ordered ids (``cas run`` makes UUIDv7s) a
    new run falls in none, so checking that a remote lacks it costs one listing.
    """
    parts: list[bytes] = []
    places: list[list[Any]] = []
    offset = 0
    for run_id, section in sections:
        runbook = -1 if section.runbook is None else len(section.runbook)
        places.append([run_id, offset, len(section.result), len(section.manifest), runbook])
        parts += [section.result, b"\n", section.manifest, section.runbook or b""]
        offset += section.size()
    data = b"".join(parts)
    bounds = [bound(run_id) for run_id, _ in sections]
    name = f"{min(bounds)}-{max(bounds)}-{Digest.of(data).hex}"
    index = seal({"format": PACK_FORMAT, "pack": name, "size": len(data), "runs": places})
    return name, data, index


def batches(sections: Sequence[tuple[str, RunSection]]) -> list[list[tuple[str, RunSection]]]:
    """`sections` cut into packs of at most `MAX_PACK_RUNS` runs and `MAX_PACK_BYTES`."""
    out: list[list[tuple[str, RunSection]]] = []
    size = 0
    for item in sections:
        if not out or len(out[-1]) >= MAX_PACK_RUNS or size + item[1].size() > MAX_PACK_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += item[1].size()
    return out


def _parse_index(name: str, data: bytes) -> list[PackedRun]:
    record = unseal(data, index_key(name))
    if record.get("format") != PACK_FORMAT or record.get("pack") != name:
        raise IntegrityError(f"{index_key(name)} is not a {PACK_FORMAT} index of pack {name}")
    runs: list[PackedRun] = []
    places = record.get("runs")
    if not isinstance(places, list):
        raise IntegrityError(f"{index_key(name)} has no list of runs")
    for place in places:
        if not _is_place(place):
            raise IntegrityError(f"{index_key(name)} holds a malformed run place {place!r}")
        run_id, start, result, manifest, runbook = place
        if not is_valid_id(run_id) or not covers(name, run_id):
            raise IntegrityError(f"{index_key(name)} names a run id it cannot hold: {run_id!r}")
        runs.append(PackedRun(run_id, name, start, result, manifest, runbook))
    return runs


def _is_place(place: object) -> bool:
    """``[run id, offset ≥ 0, result ≥ 0, manifest ≥ 0, runbook ≥ -1]``."""
    if not isinstance(place, list) or len(place) != 5 or not isinstance(place[0], str):
        return False
    numbers = place[1:]
    return all(type(n) is int for n in numbers) and min(numbers[:3]) >= 0 and numbers[3] >= -1


class RunPacks:
    """The packs of one backend: writes them, finds runs in them, reads their sections.

    Thread-safe. The catalog (run id → place) is built from a listing of ``packs/``
    and the indexes not read before; a lookup of a run it lacks lists again, so a
    pack written by another process is seen by the next lookup that needs it.
    `enabled` says whether the repository may hold packs at all (its format); when
    it says no, nothing is listed or read.
    """

    def __init__(self, backend: Backend, enabled: Callable[[], bool] = lambda: True) -> None:
        self.backend = backend
        self.enabled = enabled
        self._lock = threading.Lock()
        self._indexes: dict[str, list[PackedRun]] = {}  # pack name -> its runs
        self._where: dict[str, PackedRun] = {}
        self._sections: OrderedDict[tuple[str, str], RunSection] = OrderedDict()

    def write(self, sections: Sequence[tuple[str, RunSection]]) -> str:
        """Write one pack of `sections`, then its index (the commit point); its name."""
        name, data, index = build(sections)
        self.backend.write(pack_key(name), data)
        self.backend.write(index_key(name), index)
        with self._lock:
            self._indexes[name] = _parse_index(name, index)
            self._rebuild()
        return name

    def refresh(
        self, damaged: dict[str, str] | None = None, *, only: Iterable[str] | None = None
    ) -> dict[str, PackedRun]:
        """List ``packs/`` and read the indexes not seen before; run id → place.

        With `only`, just the indexes whose name may hold one of those run ids (the
        catalog returned is then partial). An index that cannot be read raises
        `IntegrityError`, unless `damaged` is given: then it is left out and its
        error recorded there (pack name → error).
        """
        if not self.enabled():
            return {}
        names = self.listed()
        targets = None if only is None else set(only)
        with self._lock:
            unseen = [
                name
                for name in names
                if name not in self._indexes
                and (targets is None or any(covers(name, run_id) for run_id in targets))
            ]
        read: dict[str, list[PackedRun]] = {}
        for name in unseen:
            try:
                read[name] = _parse_index(name, self.backend.read(index_key(name)))
            except NotFoundError:
                continue  # replaced by a gc since the listing: its runs are in the new pack
            except IntegrityError as error:
                if damaged is None:
                    raise
                damaged[name] = str(error)
        with self._lock:
            self._indexes = {
                name: self._indexes.get(name) or read[name]
                for name in names
                if name in self._indexes or name in read
            }
            self._rebuild()
            return dict(self._where)

    def _rebuild(self) -> None:
        """Each run's place: in the pack whose name sorts first (copies are equal)."""
        where: dict[str, PackedRun] = {}
        for name in sorted(self._indexes):
            for place in self._indexes[name]:
                where.setdefault(place.run_id, place)
        self._where = where

    def listed(self) -> list[str]:
        """The names of the packs that have an index, listed now (nothing read)."""
        if not self.enabled():
            return []
        return sorted(
            entry[: -len(".idx")]
            for entry in self.backend.children(PACKS)
            if entry.endswith(".idx") and _NAME.fullmatch(entry[: -len(".idx")])
        )

    def holding(self, run_ids: Iterable[str]) -> set[str]:
        """Which of `run_ids` a pack holds: one listing, and only the indexes whose
        range may hold one of them are read."""
        wanted = set(run_ids)
        return wanted.intersection(self.refresh(only=wanted)) if wanted else set()

    def runs(self, damaged: dict[str, str] | None = None) -> set[str]:
        """Every packed run, listed now (see `refresh` for `damaged`)."""
        return set(self.refresh(damaged))

    def find(self, run_id: str) -> PackedRun | None:
        """The run's place, from the catalog in hand or, if it lacks the run, a new listing."""
        with self._lock:
            place = self._where.get(run_id)
        return place if place is not None else self.refresh(only=[run_id]).get(run_id)

    def read(self, run_id: str) -> RunSection | None:
        """The run's packed records; None if no pack holds it.

        A pack that a gc replaced since the catalog was built is looked up again.
        """
        for attempt in (1, 2):
            place = self.find(run_id) if attempt == 1 else self.refresh(only=[run_id]).get(run_id)
            if place is None:
                return None
            with self._lock:
                kept = self._sections.get((place.pack, run_id))
            if kept is not None:
                return kept
            try:
                data = self.backend.read_range(pack_key(place.pack), place.start, place.end)
            except NotFoundError:
                if attempt == 2:
                    raise IntegrityError(
                        f"{index_key(place.pack)} names run {run_id!r}, "
                        f"but {pack_key(place.pack)} is missing"
                    ) from None
                continue
            return self._keep(place, place.cut(data))
        return None  # pragma: no cover - the loop returns

    def _keep(self, place: PackedRun, section: RunSection) -> RunSection:
        with self._lock:
            self._sections[(place.pack, place.run_id)] = section
            while len(self._sections) > _SECTIONS_KEPT:
                self._sections.popitem(last=False)
        return section

    def load(self, name: str) -> dict[str, RunSection]:
        """Every run of pack `name`, read whole and re-hashed against its name."""
        with self._lock:
            places = self._indexes.get(name)
        if places is None:
            places = _parse_index(name, self.backend.read(index_key(name)))
        data = self.backend.read(pack_key(name))
        if Digest.of(data).hex != name.rsplit("-", 1)[1]:
            raise IntegrityError(f"{pack_key(name)} does not hash to its name")
        return {p.run_id: p.cut(data[p.start : p.end]) for p in places}

    def sections(
        self, run_ids: Iterable[str], mapper: Mapper = map
    ) -> Iterator[tuple[str, RunSection]]:
        """The packed sections of `run_ids` (those no pack holds are left out), read
        a whole pack at a time and re-hashed: a pull of many runs costs a read per
        pack, not per run. `mapper` (a pool's ``map``) reads packs concurrently."""
        catalog = self.refresh()
        wanted: dict[str, set[str]] = {}
        for run_id in run_ids:
            if run_id in catalog:
                wanted.setdefault(catalog[run_id].pack, set()).add(run_id)

        def read(name: str) -> list[tuple[str, RunSection]]:
            return [(r, s) for r, s in self.load(name).items() if r in wanted[name]]

        for found in mapper(read, sorted(wanted)):
            yield from found

    def remove(self, run_ids: Iterable[str]) -> list[str]:
        """Rewrite every pack holding one of `run_ids` without them: the new pack and
        index first, then the old index (from here on the runs are not listed), then
        the old pack. The names of the packs replaced."""
        gone = set(run_ids)
        self.refresh()
        with self._lock:
            hit = [n for n, places in self._indexes.items() if gone & {p.run_id for p in places}]
        for name in sorted(hit):
            sections = self.load(name)
            kept = [(run_id, s) for run_id, s in sections.items() if run_id not in gone]
            if kept:
                self.write(kept)
            self.backend.delete([index_key(name)])
            self.backend.delete([pack_key(name)])
            with self._lock:
                self._indexes.pop(name, None)
                self._rebuild()
        return sorted(hit)

    def orphans(self, older_than: float) -> list[tuple[str, int]]:
        """``(key, size)`` of the packs that no index commits (their index a crash
        never wrote) written before `older_than` (seconds since the epoch): garbage,
        found with one listing of ``packs/``."""
        if not self.enabled():  # a pack is only written into a format-2 repository
            return []
        listed = [(key, mtime, size) for key, mtime, size in list_times(self.backend, PACKS)]
        indexed = {key[: -len(".idx")] for key, _, _ in listed if key.endswith(".idx")}
        return [
            (key, size)
            for key, mtime, size in listed
            if key.endswith(".pack") and key[: -len(".pack")] not in indexed and mtime < older_than
        ]
