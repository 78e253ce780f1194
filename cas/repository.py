"""The repository: one root holding objects, run folders, schemas and config.

This facade opens a backend, checks the format in ``config.json`` and ties the
stores together so that writes happen in the documented order: objects, then
manifest entries, then (after the manifest is durable) the execution result.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from cas.digest import CANONICAL_VERSION, DIGEST_ALGORITHM, Digest, is_digest_prefix
from cas.errors import AmbiguousError, InvalidInputError, NotFoundError, RepositoryError
from cas.ids import check_run_id, check_tenant, is_valid_id
from cas.index_rows import RunQuery, RunRow, mark_batch, mark_pending
from cas.model import ArtifactEntry, ExecutionResult
from cas.objects import Backend, open_backend
from cas.owner import OWNER, is_alive, read_owner
from cas.packs import RunPacks
from cas.payloads import PayloadStore
from cas.schemas import SchemaRegistry
from cas.stores import (
    RUNS,
    BackendArtifactStore,
    BackendExecutionStore,
    ExecutionStore,
    ManifestStore,
    run_key,
)

DEFAULT_LOCATION = ".waivern"
FORMAT = "cas-repository/1"  # what `init` writes
PACKED_FORMAT = "cas-repository/2"  # format 1 plus run packs (`cas.packs`): a repository is
# upgraded when its first pack is written, so an older cas, blind to packed runs, never
# reads it (its gc would sweep their payloads), and readers of format 1 skip packs
READABLE_FORMATS = (FORMAT, PACKED_FORMAT)
RECHECK_FORMAT = 2.0  # seconds a format-1 config read is trusted before reading it again
RUNBOOK = "runbook.yaml"
CONFIG = "config.json"
MIN_PREFIX = 4
DEFAULT_TENANT = "default"


class RunRecords(ExecutionStore, ManifestStore, Protocol):
    """Results and manifest entries kept outside the object store (`cas.pgstore`)."""

    @property
    def url(self) -> str:
        """Where the records are (no password)."""

    @property
    def tenant(self) -> str:
        """The tenant every read and write is scoped to."""

    def query_runs(self, query: RunQuery) -> list[RunRow]:
        """The runs passing `query`, newest first (`Repository.list_runs`)."""

    def records(self) -> list[tuple[ExecutionResult, dict[str, ArtifactEntry]]]:
        """Every result with its entries, read in bulk (`cas db export-index`)."""


def open_records(execution_store: str, tenant: str | None) -> RunRecords:
    """The execution store named by a ``postgresql://`` URL, scoped to `tenant`."""
    if not execution_store.startswith(("postgresql://", "postgres://")):
        raise InvalidInputError(
            f"invalid execution store {execution_store[:80]!r}: expected a postgresql:// URL"
        )
    from cas.pgstore import PostgresStore

    return PostgresStore(execution_store, check_tenant(tenant or DEFAULT_TENANT))


def default_location() -> str:
    """``$CAS_REPO`` if set, else ``.waivern`` in the working directory."""
    return os.environ.get("CAS_REPO") or DEFAULT_LOCATION


@dataclass(frozen=True)
class RunInfo:
    """One run as listings show it: its result, or None if none was saved yet."""

    run_id: str
    result: ExecutionResult | None
    artifact_count: int
    abandoned: bool = False  # `running`, but no live executor owns it

    @property
    def status(self) -> str:
        """The result's status; a `running` run whose executor died shows `interrupted`."""
        if self.result is None:
            return "no-result"
        return "interrupted" if self.abandoned else self.result.status

    @property
    def started_at(self) -> datetime | None:
        return self.result.started_at if self.result else None


class Repository:
    """Stores, schemas and config of one repository root."""

    def __init__(
        self, backend: Backend, config: dict[str, Any], records: RunRecords | None = None
    ) -> None:
        self.backend = backend
        self.config = config
        self.payloads = PayloadStore(backend)
        self.objects = self.payloads.objects
        self.schemas = SchemaRegistry(backend, config.get("schema_packages", []))
        # With `records` (PostgreSQL), results and entries live there; objects stay here.
        owner = config.get("tenant")
        if records is not None and owner is not None and owner != records.tenant:
            # gc marks only its tenant's entries: a shared object store would lose objects
            raise RepositoryError(
                f"{backend.url} holds the objects of tenant {owner!r}, not {records.tenant!r}: "
                "each tenant needs its own object store (--tenant puts it under tenants/NAME)"
            )
        self.records = records
        self._batched: set[str] = set()  # runs a batch mark already covers (`marked_together`)
        self._batch_lock = threading.Lock()
        self._format_read = time.monotonic()
        self.packs = RunPacks(backend, self.has_packs)
        self.artifacts = BackendArtifactStore(
            backend, self.payloads, self.schemas, records, self.packs
        )
        self.executions: ExecutionStore = (
            records
            if records is not None
            else BackendExecutionStore(backend, self._before_result, self.packs)
        )

    def _before_result(self, run_id: str) -> None:
        """Make the manifest durable, then mark the run for the index (see `cas.index`).

        On object stores the segments this process wrote for the run are merged into
        ``manifest.jsonl`` first (I25), so a finished run reads with a listing and a GET.
        The mark goes before the result so a crash between the result and the index
        leaves it behind: the next `RunIndex.sync` finds the run without a scan.
        """
        self.artifacts.sync(run_id)
        self.artifacts.merge(run_id)
        with self._batch_lock:
            batched = run_id in self._batched
        if not batched:
            mark_pending(self.backend, run_id)

    @contextlib.contextmanager
    def marked_together(self, run_ids: Iterable[str]) -> Iterator[None]:
        """Mark `run_ids` for the index with one write, for results saved in the block.

        A push saves many results at once: one batch mark (`cas.index_rows.mark_batch`)
        written here, before any of them, stands for a mark per run (I21), and their
        result saves in the block skip their own. With `records` nothing is marked.
        """
        ids = sorted(set(run_ids))
        if self.records is None and ids:
            mark_batch(self.backend, ids)
        with self._batch_lock:
            self._batched.update(ids)
        try:
            yield
        finally:
            with self._batch_lock:
                self._batched.difference_update(ids)

    def enable_packs(self) -> None:
        """Ready the repository for run packs (`cas.packs`), before the first is written:
        a format-1 repository is upgraded to format 2 (one write, once)."""
        if self.records is not None:
            raise RepositoryError(f"{self.url} keeps its runs in {self.records.url}, not in packs")
        if not self.has_packs(fresh=True):
            self.config = {**self.config, "format": PACKED_FORMAT}
            self.backend.write(CONFIG, orjson.dumps(self.config, option=orjson.OPT_INDENT_2))

    def has_packs(self, *, fresh: bool = False) -> bool:
        """Whether the repository may hold run packs (format 2).

        A format-1 answer is trusted for `RECHECK_FORMAT` seconds, then ``config.json``
        is read again (another process may have written the first pack); `fresh`
        reads it now. So a repository that never had packs costs its readers nothing.
        """
        if self.records is not None:
            return False
        stale = time.monotonic() - self._format_read > RECHECK_FORMAT
        if self.config.get("format") != PACKED_FORMAT and (fresh or stale):
            with contextlib.suppress(NotFoundError):  # a scratch repository without one
                self.config = _read_config(self.backend)
            self._format_read = time.monotonic()
        return self.config.get("format") == PACKED_FORMAT

    def runbook(self, run_id: str) -> bytes | None:
        """The runbook a run stored (its folder's, else its pack's); None if it has none."""
        try:
            return self.backend.read(run_key(run_id, RUNBOOK))
        except NotFoundError:
            pass
        if self.records is not None:
            return None
        section = self.packs.read(run_id)
        return section.runbook if section is not None else None

    @property
    def url(self) -> str:
        return self.backend.url

    @classmethod
    def init(
        cls,
        location: str | None = None,
        *,
        fsync: bool = True,
        execution_store: str | None = None,
        tenant: str | None = None,
        **storage_options: Any,
    ) -> Repository:
        """Open the repository at `location`, creating it first if it does not exist.

        With `execution_store` (a ``postgresql://`` URL) results and manifest entries
        are kept in that database, scoped to `tenant` (default ``default``).
        """
        records = open_records(execution_store, tenant) if execution_store else None
        backend = open_backend(location or default_location(), fsync=fsync, **storage_options)
        try:
            return cls(backend, _read_config(backend), records)
        except NotFoundError:
            pass
        config = {
            "format": FORMAT,
            "digest": DIGEST_ALGORITHM,
            "canonical_json": CANONICAL_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "schema_packages": [],
        }
        if records is not None:
            config["tenant"] = records.tenant  # the one tenant whose objects live here
        backend.write(CONFIG, orjson.dumps(config, option=orjson.OPT_INDENT_2))
        return cls(backend, config, records)

    @classmethod
    def open(
        cls,
        location: str | None = None,
        *,
        fsync: bool = True,
        execution_store: str | None = None,
        tenant: str | None = None,
        **storage_options: Any,
    ) -> Repository:
        """Open an existing repository; `RepositoryError` if there is none (see `init`)."""
        location = location or default_location()
        records = open_records(execution_store, tenant) if execution_store else None
        backend = open_backend(location, fsync=fsync, **storage_options)
        try:
            return cls(backend, _read_config(backend), records)
        except NotFoundError:
            raise RepositoryError(
                f"no repository at {location!r}: run 'cas init' first (or set --repo / CAS_REPO)"
            ) from None

    def run_ids(self, damaged: dict[str, str] | None = None) -> list[str]:
        """Every run with a folder or in a pack (or in `records`), with or without a
        result, sorted. With `damaged`, packs whose index cannot be read are left out
        and recorded there (`cas.packs.RunPacks.refresh`) instead of raising."""
        if self.records is not None:
            return self.records.run_ids()
        folders = {name for name in self.backend.children(RUNS) if is_valid_id(name)}
        return sorted(folders | self.packs.runs(damaged))

    def find_run(self, run_id: str) -> tuple[ExecutionResult | None, dict[str, ArtifactEntry]]:
        """A run's result (None if none is saved) and manifest entries; ``(None, {})``
        when there is no such run (callers say "not found" their own way)."""
        try:
            result: ExecutionResult | None = self.executions.get(run_id)
        except NotFoundError:
            result = None
        return result, self.artifacts.entries(run_id)

    def run_info(self, run_id: str) -> RunInfo:
        """A run's result (if saved) and artifact count."""
        result, entries = self.find_run(run_id)
        abandoned = result is not None and self.is_abandoned(result)
        return RunInfo(run_id, result, len(entries), abandoned)

    def is_abandoned(self, result: ExecutionResult) -> bool:
        """Whether a `running` result's executor is gone (no owner record, or a dead one).

        The executor writes its owner record before the `running` result and removes
        it only after the final one, so a running result without a live owner was
        left by a crash: listings show it as `interrupted`, and it can be resumed.
        """
        return result.status == "running" and self._abandoned_run(result.run_id)

    def run_infos(self) -> list[RunInfo]:
        """Every run's `RunInfo`, in no order; from `records`, read in bulk."""
        if self.records is None:
            return [self.run_info(run_id) for run_id in self.run_ids()]
        pairs = self.records.records()
        infos = [RunInfo(r.run_id, r, len(e), self.is_abandoned(r)) for r, e in pairs]
        seen = {info.run_id for info in infos}
        return infos + [self.run_info(i) for i in self.run_ids() if i not in seen]

    def runs(self) -> list[RunInfo]:
        """Every run, newest first (runs without a result last)."""
        infos = self.run_infos()
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(
            infos, key=lambda info: (_aware(info.started_at) or epoch, info.run_id), reverse=True
        )

    def list_runs(self, query: RunQuery | None = None) -> list[RunRow]:
        """Runs from the run index, newest first, filtered by `query` (see `cas.index`).

        Runs still ``running`` are included (read from the stores through their
        pending marks); a run folder without any saved result is not. With `records`
        (PostgreSQL) the query is answered there, in SQL.
        """
        if self.records is not None:
            return self._records_runs(self.records, query or RunQuery())
        from cas.index import RunIndex

        return RunIndex(self).runs(query)

    def _records_runs(self, records: RunRecords, query: RunQuery) -> list[RunRow]:
        """`list_runs` from `records`; a ``running`` run without a live executor shows
        ``interrupted`` (so those two statuses are filtered after that check)."""
        wide = query.status in ("running", "interrupted")
        sql_query = replace(query, status=None, limit=None, offset=0) if wide else query
        rows = []
        for row in records.query_runs(sql_query):
            abandoned = row.status == "running" and self._abandoned_run(row.run_id)
            rows.append(replace(row, status="interrupted") if abandoned else row)
        if not wide:
            return rows
        rows = [row for row in rows if row.status == query.status]
        end = None if query.limit is None else query.offset + query.limit
        return rows[query.offset : end]

    def _abandoned_run(self, run_id: str) -> bool:
        owner = read_owner(self.backend, run_key(run_id, OWNER))
        return owner is None or not is_alive(owner)

    def resolve_run(self, text: str, exclude: str | None = None) -> str:
        """A run id from an exact id, a unique prefix, ``latest`` or ``latest~N`` (N back).

        `exclude` leaves one run out (a running run reusing "the latest" other one).
        """
        back = _steps_back(text)
        if back is not None and self.records is not None:
            # one indexed query instead of reading every run (runs without a result,
            # listed last by `runs()`, are only reached past the end of these)
            rows = self.records.query_runs(RunQuery(limit=back + 2))
            newest = [row.run_id for row in rows if row.run_id != exclude]
            if len(newest) > back:
                return newest[back]
        if back is not None:
            runs = [info for info in self.runs() if info.run_id != exclude]
            if len(runs) <= back:
                raise NotFoundError(f"no run {text!r} in {self.url}: it holds {len(runs)} runs")
            return runs[back].run_id
        check_run_id(text)
        ids = [run_id for run_id in self.run_ids() if run_id != exclude]
        if text in ids:
            return text
        matches = [run_id for run_id in ids if run_id.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(matches[:5])
            raise AmbiguousError(f"run prefix {text!r} matches {len(matches)} runs: {shown}")
        raise NotFoundError(f"no run {text!r} in {self.url}")

    def resolve_digest(self, prefix: str) -> Digest:
        """The one stored digest starting with `prefix` (at least 4 hex characters)."""
        text = prefix.lower()
        if not is_digest_prefix(text) or len(text) < MIN_PREFIX:
            raise InvalidInputError(
                f"invalid digest prefix {prefix[:80]!r}: expected {MIN_PREFIX}-64 hex characters"
            )
        matches = self.payloads.matching(text)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousError(f"digest prefix {prefix!r} matches {len(matches)} objects")
        raise NotFoundError(f"no object {prefix!r} in {self.url}")


def _steps_back(text: str) -> int | None:
    """0 for ``latest``, N for ``latest~N``, None for anything else."""
    if text == "latest":
        return 0
    head, tilde, number = text.partition("~")
    return int(number) if head == "latest" and tilde and number.isdigit() else None


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _read_config(backend: Backend) -> dict[str, Any]:
    data = backend.read(CONFIG)
    try:
        config = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise RepositoryError(f"{backend.url}/{CONFIG} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") not in READABLE_FORMATS:
        found = config.get("format") if isinstance(config, dict) else None
        raise RepositoryError(
            f"{backend.url} has repository format {found!r}: "
            f"this cas reads {' and '.join(map(repr, READABLE_FORMATS))}"
        )
    if config.get("digest") != DIGEST_ALGORITHM:
        raise RepositoryError(
            f"{backend.url} names objects with {config.get('digest')!r}: "
            f"this cas uses {DIGEST_ALGORITHM!r}"
        )
    if config.get("canonical_json") != CANONICAL_VERSION:
        raise RepositoryError(
            f"{backend.url} uses canonical JSON {config.get('canonical_json')!r}: "
            f"this cas writes {CANONICAL_VERSION!r}"
        )
    return config
