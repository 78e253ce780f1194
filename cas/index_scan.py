"""Reading the runs files of one pointer: row-group pruning, filter masks, the scan.

Split from `cas.index`; pyarrow is imported on first use, never at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cas.index_rows import Pointer, RunQuery, group_bounds, holds_time, prune

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
