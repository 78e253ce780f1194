"""Reading the runs files of one pointer: row-group statistics (and the cache of
parsed footers), pruning, filter masks, the scan.

Split from `cas.index`; pyarrow is imported on first use, never at import.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cas.index_rows import Pointer, RunQuery

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


def arrow() -> Any:
    """pyarrow, imported on first use."""
    import pyarrow

    return pyarrow


def compute() -> Any:
    """pyarrow.compute (~55 ms to import), on first use."""
    import pyarrow.compute

    return pyarrow.compute


def prune(group: Any, schema: Any, query: RunQuery) -> tuple[bool, bool]:
    """(skip this row group, skip every later one) from its ``started_at`` statistics.

    Files are sorted newest first, so a group ending before `since` ends the scan.
    """
    if query.since is None and query.until is None:
        return False, False
    stats = group.column(schema.get_field_index("started_at")).statistics
    if stats is None or not stats.has_min_max:
        return False, False
    low, high = aware_stat(stats.min), aware_stat(stats.max)
    if query.since is not None and high < query.since:
        return True, True
    return query.until is not None and low >= query.until, False


def aware_stat(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1e6, UTC)


# Row-group statistics of open files (pyarrow objects, handled without importing it) ------

FooterKey = tuple[str, int, int]  # path, size, modification time
Bounds = list[tuple[Any, Any] | None]  # per row group, (min, max) of one column


class FooterCache:
    """Parsed Parquet footers of local index files (the most recently used few), with
    the per-row-group bounds `group_bounds` read from them, and which open file
    came from which footer."""

    size = 64

    def __init__(self) -> None:
        self._items: dict[FooterKey, tuple[Any, dict[str, Bounds]]] = {}
        self._opened: weakref.WeakKeyDictionary[Any, FooterKey] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, key: FooterKey) -> Any:
        """The footer stored under `key`, or None."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return None
            self._items[key] = item
            return item[0]

    def put(self, key: FooterKey, file: Any) -> None:
        """Remember `file`'s footer (if new) and that `file` was opened from it."""
        with self._lock:
            if key not in self._items:
                self._items[key] = (file.metadata, {})
            self._opened[file] = key
            while len(self._items) > self.size:
                del self._items[next(iter(self._items))]

    def bounds(self, file: Any) -> dict[str, Bounds] | None:
        """The bounds cache of the footer `file` was opened from, if still held."""
        with self._lock:
            key = self._opened.get(file)
            item = None if key is None else self._items.get(key)
            return None if item is None else item[1]


FOOTERS = FooterCache()


def group_bounds(file: Any, column: str) -> Bounds:
    """Each row group's (min, max) of `column` from statistics; None where unknown."""
    metadata = file.metadata
    cached = FOOTERS.bounds(file)
    if cached is not None and column in cached:
        return cached[column]
    index = file.schema_arrow.get_field_index(column)
    bounds: Bounds = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        has = stats is not None and stats.has_min_max
        bounds.append((stats.min, stats.max) if has else None)
    if cached is not None:
        cached[column] = bounds
    return bounds


def digest_groups(file: Any, query: RunQuery) -> list[int]:
    """Row groups of an artifacts file that can hold `query`'s digest (all without one).

    The file is sorted by digest, so the groups holding a prefix are one short run.
    """
    bounds = query.digest_range()
    if bounds is None:
        return list(range(file.num_row_groups))
    low, high = bounds
    return [
        group
        for group, found in enumerate(group_bounds(file, "digest"))
        if found is None or (found[0] <= high and found[1] >= low)
    ]


def micros(value: Any) -> int:
    """A ``started_at`` statistic as microseconds since the epoch."""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int((value - _UNIX) // _MICROSECOND)
    return int(value)


_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def holds_time(times: list[int] | None, bounds: tuple[Any, Any] | None) -> bool:
    """Whether a row group whose ``started_at`` spans `bounds` can hold one of `times`."""
    if times is None or bounds is None:
        return True
    low, high = micros(bounds[0]), micros(bounds[1])
    at = bisect.bisect_left(times, low)
    return at < len(times) and times[at] <= high


def current_mask(table: pa.Table, name: str, superseded: dict[str, str]) -> pa.Array | None:
    """Rows of file `name` not superseded by another file's rows for the same run."""
    stale = sorted(run_id for run_id, owner in superseded.items() if owner != name)
    if not stale:
        return None
    pa = arrow()
    pc = compute()
    return pc.invert(pc.is_in(table["run_id"], value_set=pa.array(stale, pa.string())))


def and_masks(left: pa.Array | None, right: pa.Array | None) -> pa.Array | None:
    """Both masks (None is "every row"), nulls counted as False."""
    if left is None or right is None:
        return right if left is None else left
    return compute().and_(left, right)


def filtered(table: pa.Table, mask: pa.Array | None) -> pa.Table:
    return table if mask is None else table.filter(compute().fill_null(mask, False))


def artifact_mask(table: pa.Table, query: RunQuery) -> pa.Array | None:
    pa = arrow()
    pc = compute()
    mask = None
    if query.artifact is not None:
        mask = pc.equal(table["artifact_id"], query.artifact)
    bounds = query.digest_range()
    if bounds is not None:
        low, high = (pa.scalar(bound, pa.binary(32)) for bound in bounds)
        digests = table["digest"]
        inside = pc.and_(pc.greater_equal(digests, low), pc.less_equal(digests, high))
        mask = and_masks(mask, inside)
    return mask


@dataclass(frozen=True)
class Scan:
    """One query over the runs files of one pointer."""

    pointer: Pointer
    query: RunQuery
    holding: pa.Array | None  # run ids passing the artifact/digest filter, if any
    times: list[int] | None  # their start times (µs, sorted): groups without one are skipped
    need: int | None  # rows wanted per file (offset + limit), None for all
    columns: list[str] | None  # columns wanted (filter columns are added), None for all

    def file_rows(self, file: pq.ParquetFile, name: str) -> pa.Table:
        """Matching rows of one runs file, newest first, stopping once `need` are found."""
        pa = arrow()
        wanted = self.columns
        if wanted is not None:
            wanted = sorted({*wanted, *filter_columns(self.query, self.pointer)})
        pieces, found, need = [], 0, self.need
        groups = self.groups(file)
        if need is None:  # every match: one read (threads help here)
            if groups:
                table = file.read_row_groups(groups, columns=wanted)
                pieces.append(filtered(table, self.mask(table, name)))
        else:  # newest first: the file's newest matches; small reads are faster on one thread
            for group in groups:
                table = file.read_row_group(group, columns=wanted, use_threads=False)
                table = filtered(table, self.mask(table, name)).slice(0, need - found)
                pieces.append(table)
                found += table.num_rows
                if found >= need:
                    break
        if pieces:
            return pa.concat_tables(pieces)
        schema = file.schema_arrow
        return (
            schema if wanted is None else pa.schema([schema.field(c) for c in wanted])
        ).empty_table()

    def groups(self, file: pq.ParquetFile) -> list[int]:
        """The row groups of a runs file that can hold matches, newest first.

        Pruned by ``started_at`` statistics: the query's date range, and the start
        times of the runs holding the artifact or digest asked for.
        """
        starts = None if self.times is None else group_bounds(file, "started_at")
        metadata, schema = file.metadata, file.schema_arrow
        timed = self.query.since is not None or self.query.until is not None
        groups = []
        for group in range(metadata.num_row_groups):
            skip, done = (
                prune(metadata.row_group(group), schema, self.query) if timed else (False, False)
            )
            if done:
                break
            if not skip and (starts is None or holds_time(self.times, starts[group])):
                groups.append(group)
        return groups

    def mask(self, table: pa.Table, name: str) -> pa.Array | None:
        query = self.query
        mask = current_mask(table, name, self.pointer.superseded)
        if (query.status, query.runbook, query.since, query.until, self.holding) == (None,) * 5:
            return mask  # the plain listing: no pyarrow.compute (~55 ms to import)
        pc = compute()
        if query.status is not None:
            mask = and_masks(mask, pc.equal(table["status"], query.status))
        if query.runbook is not None:
            mask = and_masks(mask, pc.equal(table["runbook"], query.runbook))
        if query.since is not None:
            mask = and_masks(mask, pc.greater_equal(table["started_at"], query.since))
        if query.until is not None:
            mask = and_masks(mask, pc.less(table["started_at"], query.until))
        if self.holding is not None:
            mask = and_masks(mask, pc.is_in(table["run_id"], value_set=self.holding))
        return mask


def filter_columns(query: RunQuery, pointer: Pointer) -> list[str]:
    columns = ["started_at"] if query.since or query.until else []
    columns += ["status"] if query.status else []
    columns += ["runbook"] if query.runbook else []
    needs_id = pointer.superseded or query.artifact is not None or query.digest is not None
    return [*columns, "run_id"] if needs_id else columns
