"""``cas query``: read-only SQL (DuckDB) over the run index's `runs` and `artifacts` tables.

The index is synced first, then both tables are read from one live set of files
(`cas.index.RunIndex.table`) and registered as views in a private in-memory
DuckDB database. In the `artifacts` view ``digest`` is lowercase hex, as every
other command prints it (the Parquet files hold the 32 raw bytes). Only one
SELECT (``WITH …``, ``FROM …``, ``VALUES``, ``DESCRIBE``) statement is accepted, and
file, network and extension access is switched off and locked before it runs.
DuckDB is an optional dependency (the ``query`` extra), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cas.errors import CasError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import duckdb

    from cas.repository import Repository

INSTALL_HINT = "cas query needs DuckDB: pip install 'cas[query]'"
_LOCKDOWN = (
    "SET TimeZone = 'UTC'",  # timestamps, ::DATE and date_trunc in UTC, whatever the host
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET enable_external_access = false",  # no files, no network, no ATTACH
    "SET lock_configuration = true",  # ... and no SET turning it back on
)
_ARTIFACTS_VIEW = "CREATE VIEW artifacts AS SELECT * REPLACE (lower(hex(digest)) AS digest) FROM "


class MissingDependencyError(CasError):
    """An optional extra is not installed (exit 1, one line naming the pip command)."""


@dataclass(frozen=True)
class QueryResult:
    """Column names (unique: repeats get ``_2``, ``_3``…) and rows of Python values."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """Rows as objects keyed by column name, in column order."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def run_query(repo: Repository, sql: str) -> QueryResult:
    """Run one read-only SELECT over the index's `runs` and `artifacts` views."""
    duckdb = _duckdb()
    connection = duckdb.connect(":memory:")
    try:
        check_read_only(connection, sql)
        _register(connection, *_tables(repo))
        for setting in _LOCKDOWN:
            connection.execute(setting)
        cursor = _execute(connection, sql)
        return QueryResult(unique_names(d[0] for d in cursor.description), cursor.fetchall())
    finally:
        connection.close()


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return duckdb


def check_read_only(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but exactly one SELECT statement, before reading the index."""
    duckdb = _duckdb()
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as error:
        raise InvalidInputError(sql_error(error)) from None
    if len(statements) != 1:
        raise InvalidInputError(f"expected one SQL statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InvalidInputError(
            f"cas query is read-only: expected a SELECT (or WITH … SELECT) statement, "
            f"got {kind.name}"
        )


def _tables(repo: Repository) -> tuple[Any, Any]:
    """Both tables from the same live set of files (retried if compaction swaps it)."""
    from cas.index import ARTIFACTS_TABLE, RUNS_TABLE, RunIndex
    from cas.index_rows import Pointer

    index = RunIndex(repo)
    index.sync()
    for attempt in (1, 2, 3):
        before = Pointer.read(repo.backend).generation
        try:
            tables = index.table(RUNS_TABLE), index.table(ARTIFACTS_TABLE)
        except NotFoundError:
            if attempt == 3:
                raise
            continue
        if Pointer.read(repo.backend).generation == before or attempt == 3:
            return tables
    raise AssertionError("unreachable")


def _register(connection: duckdb.DuckDBPyConnection, runs: Any, artifacts: Any) -> None:
    connection.register("runs", runs)
    connection.register("artifacts_rows", artifacts)
    connection.execute(_ARTIFACTS_VIEW + "artifacts_rows")


def _execute(connection: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    duckdb = _duckdb()
    try:
        return connection.execute(sql)
    except duckdb.Error as error:
        raise InvalidInputError(sql_error(error)) from None


def sql_error(error: Exception) -> str:
    """DuckDB's message without its multi-line caret drawing: ``SQL: Binder Error: …``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith("LINE ") and set(line) != {"^"}]
    return "SQL: " + " ".join(kept[:2] or [type(error).__name__])


def unique_names(names: Any) -> list[str]:
    """`names` with repeats renamed ``name_2``, ``name_3``… so JSON objects keep every column."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result
