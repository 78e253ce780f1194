"""The run index: Parquet tables of runs and artifacts, derived from the stores.

Saving a result first drops a tiny mark in ``index/pending/`` (see
`cas.index_rows.mark_pending`); the next `RunIndex.sync` (every listing calls it)
folds the marked runs whose result is final into one small immutable file pair
(``index/files/{name}.runs.parquet`` and ``.artifacts.parquet``, zstd) and names
it in ``index/current.json``. Readers read that pointer, then exactly the files it
names, so a writer that replaces the pointer atomically (compaction, rebuild)
never shows a reader half of its work; old files are removed only after the new
pointer is written, and a reader that meets a removed file re-reads the pointer
once. Runs whose result is still ``running`` keep their mark and are listed from
the stores. pyarrow is imported only here (and in `cas.index_scan`, the reading
half), and only when the index is used: a short unfiltered listing is answered from
the pointer's `head` (the newest runs rows) without it.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas.errors import NotFoundError
from cas.index_rows import (
    ARTIFACT_FIELDS,
    FILES,
    HEAD_SIZE,
    POINTER,
    CheckReport,
    IndexLock,
    Pointer,
    RunQuery,
    RunRow,
    artifact_rows,
    mark_pending,
    newest_first_key,
    pending_key,
    read_marks,
    renamed,
    run_row,
    settle_batches,
    tail,
)
from cas.index_scan import (
    FOOTERS,
    Scan,
    and_masks,
    arrow,
    artifact_mask,
    compute,
    current_mask,
    digest_groups,
    filtered,
)
from cas.model import ArtifactEntry, ExecutionResult
from cas.objects import LocalBackend, is_temp_name

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cas.repository import Repository

Entries = dict[str, ArtifactEntry]
Records = list[tuple[ExecutionResult, Entries]]
RUNS_TABLE = "runs"
ARTIFACTS_TABLE = "artifacts"
_DICTIONARY = ["status"]  # read as dictionary: counting statuses needs no strings


def runs_schema() -> pa.Schema:
    """Columns of the `runs` table."""
    pa = arrow()
    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("run_id", pa.string()),
            ("status", pa.string()),
            ("runbook", pa.string()),
            ("started_at", stamp),
            ("ended_at", stamp),
            ("duration_seconds", pa.float64()),
            ("completed", pa.int32()),
            ("failed", pa.int32()),
            ("skipped", pa.int32()),
            ("artifacts", pa.int32()),
            ("tenant", pa.string()),
        ]
    )


def artifacts_schema() -> pa.Schema:
    """Columns of the `artifacts` table (``started_at`` is the run's, for sorting)."""
    pa = arrow()
    return pa.schema(
        [
            ("run_id", pa.string()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("artifact_id", pa.string()),
            ("schema_name", pa.string()),
            ("schema_version", pa.string()),
            ("digest", pa.binary(32)),
            ("size", pa.int64()),
            ("outcome", pa.string()),
            ("error_type", pa.string()),
            ("cached_from", pa.string()),
            ("duration_seconds", pa.float64()),
        ]
    )


NEWEST_FIRST = [("started_at", "descending"), ("run_id", "descending")]


def sort_runs(table: pa.Table) -> pa.Table:
    """Newest first; ties by run id, descending."""
    return table.sort_by(NEWEST_FIRST)


def sort_artifacts(table: pa.Table) -> pa.Table:
    """By digest (row-group statistics then find a digest), newest run first within one."""
    return table.sort_by([("digest", "ascending"), *NEWEST_FIRST, ("artifact_id", "ascending")])


# The artifacts table has many small row groups (a digest lookup reads one of them), so
# its footer keeps statistics only where a reader prunes with them: the others are
# unsorted there, and their min/max would only make every open slower.
ARTIFACT_STATISTICS = ["digest", "started_at"]


def write_parquet(
    table: pa.Table, row_group_size: int, statistics: bool | list[str] = True
) -> bytes:
    """`table` as Parquet bytes: zstd, dictionaries, statistics for row-group pruning."""
    pa = arrow()
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        row_group_size=row_group_size,
        write_statistics=statistics,
    )
    return bytes(sink.getvalue())


class RunIndex:
    """The `runs` and `artifacts` tables of one repository: sync, query, compact, check."""

    compact_after = 32  # live files that trigger an automatic (tail) compaction
    runs_row_group = 8_192  # the newest 50 read one group per file
    artifacts_row_group = 16_384  # a digest lookup reads about one group per file

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.backend = repo.backend

    # writing -------------------------------------------------------------------------

    def marks(self) -> list[str]:
        """Runs marked pending (by a mark of their own or a batch mark), sorted."""
        singles, batches = read_marks(self.backend)
        return sorted(set(singles).union(*batches.values()))

    def sync(self, known: Records | None = None) -> list[str]:
        """Fold every marked run whose result is final into a new segment; their ids.

        `known` holds (result, entries) of runs the caller has in hand (a push): those
        are folded without reading the stores.
        """
        given = {result.run_id: (result, entries) for result, entries in known or ()}
        marks = self.marks()
        if not any(run_id in given or self._final(run_id) for run_id in marks):
            return []
        with IndexLock(self.backend):
            return self._fold(given)

    def _final(self, run_id: str) -> ExecutionResult | None:
        try:
            result = self.repo.executions.get(run_id)
        except NotFoundError:
            return None  # the mark is written just before the result: not there yet
        return result if result.is_final else None

    def _fold(self, given: dict[str, tuple[ExecutionResult, Entries]]) -> list[str]:
        singles, batches = read_marks(self.backend)
        marks = sorted(set(singles).union(*batches.values()))
        finals: dict[str, ExecutionResult] = {}
        for run_id in marks:
            result = given[run_id][0] if run_id in given else self._final(run_id)
            if result is not None and result.is_final:
                finals[run_id] = result
        if not finals:
            return []
        old = Pointer.read(self.backend)
        again = self._indexed(old, set(finals))
        known = {run_id: given[run_id][1] for run_id in finals if run_id in given}
        entry, rows = self._write_rows(list(finals.values()), old.generation + 1, known)
        superseded = {**old.superseded, **dict.fromkeys(again, entry["name"])}
        pointer = Pointer(old.generation + 1, [*old.files, entry], superseded)
        pointer.head = old.merged_head(rows)
        if pointer.head is None:
            pointer.head = self._head_of(pointer)
        self.backend.write(POINTER, pointer.to_bytes())
        self.backend.delete(pending_key(run_id) for run_id in finals if run_id in singles)
        settle_batches(self.backend, batches, set(finals))
        if len(pointer.files) > self.compact_after:
            self._compact(pointer, full=False)
        return sorted(finals)

    def _write_rows(
        self,
        results: list[ExecutionResult],
        generation: int,
        known: dict[str, dict[str, ArtifactEntry]] | None = None,
    ) -> tuple[dict[str, Any], list[RunRow]]:
        """One new file pair holding `results`; its pointer entry and its runs rows.

        Entries come from `known` when it holds the run (read in bulk, or in hand),
        else from the store.
        """
        pa = arrow()
        runs, artifacts = [], []
        for result in results:
            if known is not None and result.run_id in known:
                entries = known[result.run_id]
            else:
                entries = self.repo.artifacts.entries(result.run_id)
            runs.append(run_row(result, entries))
            artifacts += artifact_rows(result, entries)
        rows = [asdict(row) for row in runs]
        run_table = sort_runs(pa.Table.from_pylist(rows, schema=runs_schema()))
        art_table = sort_artifacts(pa.Table.from_pylist(artifacts, schema=artifacts_schema()))
        return self._write_file(run_table, art_table, generation), runs

    def _write_file(self, runs: pa.Table, artifacts: pa.Table, generation: int) -> dict[str, Any]:
        name = f"{generation:010d}-{secrets.token_hex(4)}"
        self.backend.write(_key(name, RUNS_TABLE), write_parquet(runs, self.runs_row_group))
        data = write_parquet(artifacts, self.artifacts_row_group, ARTIFACT_STATISTICS)
        self.backend.write(_key(name, ARTIFACTS_TABLE), data)
        return {"name": name, "runs": runs.num_rows, "artifacts": artifacts.num_rows}

    def forget(self, run_ids: Iterable[str]) -> None:
        """Runs removed from the repository (gc) leave the index: their rows, and their
        names in batch marks, also where no index file was ever written."""
        drop = set(run_ids)
        if self.backend.exists(POINTER):
            self.compact(drop=drop)  # settles the batch marks too
            return
        with IndexLock(self.backend):
            settle_batches(self.backend, read_marks(self.backend)[1], drop)

    def compact(self, *, full: bool = True, drop: Iterable[str] = ()) -> int:
        """Merge live files (all, or the small newest ones) into one; files merged."""
        self.sync()
        drop = set(drop)
        with IndexLock(self.backend):
            merged = self._compact(Pointer.read(self.backend), full=full, drop=drop)
            self._sweep()
            if drop:  # removed runs (gc) leave the batch marks naming them
                settle_batches(self.backend, read_marks(self.backend)[1], drop)
            return merged

    def _sweep(self) -> None:
        """Remove files no pointer names: left by writers killed mid-write (lock held).

        A killed writer's temporaries are left for `cas verify` to report (as it
        does everywhere in the repository); they are never read as data.
        """
        live = set(Pointer.read(self.backend).names)
        names = (key.rsplit("/", 1)[-1] for key in self.backend.list(FILES))
        self.backend.delete(
            f"{FILES}/{name}"
            for name in names
            if not is_temp_name(name) and name.split(".", 1)[0] not in live
        )

    def _compact(self, pointer: Pointer, *, full: bool, drop: set[str] | None = None) -> int:
        chosen = pointer.files if full else tail(pointer.files)
        if len(chosen) < 2 and not drop and not (full and pointer.superseded):
            if full and pointer.head is None:  # written without a head: add one
                self._write_head(pointer)
            return 0
        names = [entry["name"] for entry in chosen]
        runs = self._merged(pointer, names, RUNS_TABLE, drop or set())
        artifacts = self._merged(pointer, names, ARTIFACTS_TABLE, drop or set())
        entry = self._write_file(sort_runs(runs), sort_artifacts(artifacts), pointer.generation + 1)
        kept = [item for item in pointer.files if item["name"] not in names]
        superseded = {} if full else renamed(pointer.superseded, set(names), entry["name"])
        new = Pointer(pointer.generation + 1, [*kept, entry], superseded)
        new.head = self._head_of(new)
        self._commit(new, names)
        return len(names)

    def refresh_head(self) -> None:
        """Recompute the pointer's `head` from the live files (for a pointer without one)."""
        with IndexLock(self.backend):
            self._write_head(Pointer.read(self.backend))

    def _write_head(self, pointer: Pointer) -> None:
        head = self._head_of(pointer)
        new = Pointer(pointer.generation + 1, pointer.files, pointer.superseded, head)
        self.backend.write(POINTER, new.to_bytes())

    def _head_of(self, pointer: Pointer) -> list[RunRow]:
        """The newest `HEAD_SIZE` current runs rows of `pointer`'s files, newest first."""
        rows = self._indexed_rows(RunQuery(limit=HEAD_SIZE), HEAD_SIZE, pointer)
        return sorted(rows, key=newest_first_key, reverse=True)[:HEAD_SIZE]

    def _merged(self, pointer: Pointer, names: list[str], table: str, drop: set[str]) -> pa.Table:
        pa = arrow()
        pc = compute()
        pieces = []
        for name in names:
            data = self._parquet(name, table, plain=True).read()
            keep = current_mask(data, name, pointer.superseded)
            if drop:
                gone = pc.is_in(data["run_id"], value_set=pa.array(sorted(drop), pa.string()))
                keep = and_masks(keep, pc.invert(gone))
            pieces.append(filtered(data, keep))
        schema = runs_schema() if table == RUNS_TABLE else artifacts_schema()
        return pa.concat_tables(pieces) if pieces else schema.empty_table()

    def _commit(self, pointer: Pointer, removed: list[str]) -> None:
        """Replace the pointer, then remove the files it no longer names."""
        self.backend.write(POINTER, pointer.to_bytes())
        self.backend.delete(_key(n, t) for n in removed for t in (RUNS_TABLE, ARTIFACTS_TABLE))

    def rebuild(self, records: Records | None = None) -> int:
        """Recreate the index from the run folders; the number of runs indexed.

        With `records` ((result, entries) of every run, as `cas db export-index`
        reads them from PostgreSQL in two queries) nothing is read run by run.
        """
        with IndexLock(self.backend):
            old = Pointer.read(self.backend)
            finals: list[ExecutionResult] = []
            running: list[ExecutionResult] = []
            known = None if records is None else {r.run_id: e for r, e in records}
            pairs = records if records is not None else self._stored_results()
            for result, _entries in pairs:
                (finals if result.is_final else running).append(result)
            generation = old.generation + 1
            files, rows = self._write_rows(finals, generation, known) if finals else (None, [])
            head = sorted(rows, key=newest_first_key, reverse=True)[:HEAD_SIZE]
            new = Pointer(old.generation + 1, [files] if files else [], {}, head)
            self._commit(new, old.names)
            for result in running:
                mark_pending(self.backend, result.run_id)
            self.backend.delete(pending_key(result.run_id) for result in finals)
            return len(finals)

    def _stored_results(self) -> Iterator[tuple[ExecutionResult, None]]:
        for run_id in self.repo.run_ids():
            result = self._result(run_id)
            if result is not None:
                yield result, None

    def _result(self, run_id: str) -> ExecutionResult | None:
        try:
            return self.repo.executions.get(run_id)
        except NotFoundError:
            return None

    def check(self, *, fix: bool = False) -> CheckReport:
        """Compare the index with the run folders; with `fix`, index and drop what differs."""
        actual = {}
        for run_id in self.repo.run_ids():
            result = self._result(run_id)
            if result is not None and result.is_final:
                actual[run_id] = run_row(result, self.repo.artifacts.entries(run_id))
        indexed = {row.run_id: row for row in self._all_rows()}
        report = CheckReport(indexed=len(indexed), pending=self.marks())
        marked = set(report.pending)  # the next sync folds these: not a problem
        report.unindexed = sorted(set(actual) - set(indexed) - marked)
        changed = {i for i in set(actual) & set(indexed) if actual[i] != indexed[i]}
        report.stale = sorted(changed - marked)
        report.orphaned = sorted(set(indexed) - set(actual))
        if fix and not (report.ok and not report.pending):
            for run_id in report.unindexed + report.stale:
                mark_pending(self.backend, run_id)
            self.sync()
            if report.orphaned:
                self.compact(drop=report.orphaned)
            report.fixed = True
        return report

    # reading -------------------------------------------------------------------------

    def runs(self, query: RunQuery | None = None) -> list[RunRow]:
        """Indexed runs plus running ones (from their marks), newest first, filtered."""
        query = query or RunQuery()
        self.sync()
        need = None if query.limit is None else query.offset + query.limit
        indexed = Pointer.read(self.backend).head_answer(query)  # no Parquet, no pyarrow
        if indexed is None:
            indexed = self._indexed_rows(query, need)
        rows = [*indexed, *self._running_rows(query)]
        rows.sort(key=newest_first_key, reverse=True)
        return rows[query.offset : need]

    def count_by_status(self, query: RunQuery | None = None) -> dict[str, int]:
        """How many runs (indexed, after `query`'s filters) have each status."""
        pc = compute()
        counts: dict[str, int] = {}
        self.sync()
        for table in self._select(query or RunQuery(), None, ["status"]):
            for item in pc.value_counts(table["status"]).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
        return dict(sorted(counts.items()))

    def table(self, name: str) -> pa.Table:
        """Every current row of the `runs` or `artifacts` table (for tests and exports)."""
        self.sync()
        pointer = Pointer.read(self.backend)
        return self._merged(pointer, pointer.names, name, set())

    def _indexed_rows(
        self, query: RunQuery, need: int | None, pointer: Pointer | None = None
    ) -> list[RunRow]:
        rows = []
        for table in self._select(query, need, None, pointer):
            rows += [RunRow(**_row(item)) for item in table.to_pylist()]
        return rows

    def _all_rows(self) -> list[RunRow]:
        return self._indexed_rows(RunQuery(), None)

    def _running_rows(self, query: RunQuery) -> Iterator[RunRow]:
        for run_id in self.marks():
            result = self._result(run_id)
            if result is None or result.is_final:
                continue
            entries = self.repo.artifacts.entries(run_id)
            row = run_row(result, entries)
            if self.repo.is_abandoned(result):
                row = dataclasses.replace(row, status="interrupted")
            digests = {entry.digest.hex for entry in entries.values()}
            holds = query.artifact is None or query.artifact in entries
            if query.digest is not None:
                holds = holds and any(d.startswith(query.digest) for d in digests)
            if query.matches(row) and holds:
                yield row

    def _select(
        self,
        query: RunQuery,
        need: int | None,
        columns: list[str] | None,
        pointer: Pointer | None = None,
    ) -> list[Any]:
        """Per live file, the runs rows matching `query` (at most `need`, newest first).

        From the live pointer, or from `pointer` (a writer's, under the lock).
        """
        for attempt in (1, 2):
            live = pointer or Pointer.read(self.backend)
            try:
                holding, times = self._holding(live, query)
                scan = Scan(live, query, holding, times, need, columns)
                return [scan.file_rows(self._parquet(n, RUNS_TABLE), n) for n in live.names]
            except NotFoundError:
                if attempt == 2 or pointer is not None:
                    raise
        raise AssertionError("unreachable")

    def _holding(
        self, pointer: Pointer, query: RunQuery
    ) -> tuple[pa.Array | None, list[int] | None]:
        """Run ids holding the artifact or digest `query` asks for, and their start times.

        (None, None) without such a filter. The times (microseconds, sorted) let the
        runs scan read only the row groups whose ``started_at`` range holds one: a
        run's artifacts rows carry its start, written from the same result as its runs
        row. None when some start is unknown (then every group is read).
        """
        if query.artifact is None and query.digest is None:
            return None, None
        pa = arrow()
        pc = compute()
        columns = ["run_id", "started_at", "digest"]
        columns += ["artifact_id"] if query.artifact is not None else []
        found = []
        superseded = pointer.superseded
        for name in pointer.names:
            file = self._parquet(name, ARTIFACTS_TABLE)
            groups = digest_groups(file, query)
            if not groups:
                continue
            table = file.read_row_groups(groups, columns=columns, use_threads=len(groups) > 1)
            mask = and_masks(artifact_mask(table, query), current_mask(table, name, superseded))
            found.append(filtered(table, mask).select(["run_id", "started_at"]))
        if not found:
            return pa.array([], pa.string()), []
        both = pa.concat_tables(found)
        started = both["started_at"]
        times = None
        if started.null_count == 0:
            micros = pc.unique(started.cast(pa.int64()).combine_chunks())
            times = sorted(micros.to_pylist())
        return pc.unique(both["run_id"].combine_chunks()), times

    def _indexed(self, pointer: Pointer, run_ids: set[str]) -> set[str]:
        """Which of `run_ids` already have rows in the live files."""
        pa = arrow()
        pc = compute()
        wanted = pa.array(sorted(run_ids), pa.string())
        found: set[str] = set()
        for name in pointer.names:
            column = self._parquet(name, RUNS_TABLE).read(columns=["run_id"])["run_id"]
            found.update(column.filter(pc.is_in(column, value_set=wanted)).to_pylist())
        return found

    def _parquet(self, name: str, table: str, *, plain: bool = False) -> pq.ParquetFile:
        """One live file (a `NotFoundError` if it is gone); runs' status as a dictionary.

        A local file's footer is parsed once per process (`FOOTERS`): files are
        immutable, and the cache key holds the path, size and modification time.
        """
        import pyarrow.parquet as pq

        dictionary = None if plain or table != RUNS_TABLE else _DICTIONARY
        key = _key(name, table)
        if isinstance(self.backend, LocalBackend):
            path = f"{self.backend.url}/{key}"
            try:
                stat = Path(path).stat()
                footer_key = (path, stat.st_size, stat.st_mtime_ns)
                footer = FOOTERS.get(footer_key)
                file = pq.ParquetFile(
                    path, memory_map=True, read_dictionary=dictionary, metadata=footer
                )
            except FileNotFoundError:
                raise NotFoundError(f"index file {key} is gone") from None
            FOOTERS.put(footer_key, file)
            return file
        data = arrow().BufferReader(self.backend.read(key))
        return pq.ParquetFile(data, read_dictionary=dictionary)


def _key(name: str, table: str) -> str:
    return f"{FILES}/{name}.{table}.parquet"


def _row(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in RunRow.__slots__ if key in item}


__all__ = ["ARTIFACT_FIELDS", "RunIndex", "RunQuery", "RunRow", "mark_pending"]
