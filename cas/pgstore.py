"""Run records in PostgreSQL: results, manifests and tokens, scoped by tenant.

`PostgresStore` is an `ExecutionStore` and a `ManifestStore` (see `cas.stores`)
for one tenant: payload objects stay in the object store, results and manifest
entries live in the ``runs`` and ``artifacts`` tables. Every transaction starts
with ``set_config('cas.tenant', tenant, true)``; the tables' row-level security
policies compare each row's tenant with it, so even a query without a tenant
filter sees only its own tenant's rows. Superusers and BYPASSRLS roles skip those
policies, so the store refuses to open as one.

This is the only module that imports psycopg. Connections come from one
`psycopg_pool.ConnectionPool` per DSN, shared by every store in the process.
"""

from __future__ import annotations

import builtins
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool, PoolTimeout

from cas.digest import Digest
from cas.errors import CasError, IntegrityError, InvalidInputError, NotFoundError, RepositoryError
from cas.ids import check_artifact_id, check_run_id, check_tenant
from cas.index_rows import RunQuery, RunRow, aware
from cas.model import ArtifactEntry, ExecutionResult
from cas.pg_sql import (
    APPEND,
    ENTRY_COLUMNS,
    NAMED_DIGESTS,
    SAVE_RESULT,
    entry_of,
    run_query,
    run_row_of,
    utc,
)
from cas.stores import check_result
from cas.tokens import (
    TokenInfo,
    check_name,
    check_token_id,
    hash_secret,
    is_well_formed,
    new_secret,
    new_token_id,
)

DEFAULT_TENANT = "default"
APP_ROLE = "cas_app"
MIGRATION_LOCK = 0x636173  # pg_advisory_lock key held while migrating ("cas")
CONNECT_TIMEOUT_S = 10.0
POOL_MAX = 4

_POOLS: dict[str, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()
_CHECKED: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()  # role and schema checked


# --------------------------------------------------------------------------- connections


def is_postgres_url(text: str) -> bool:
    """Whether `text` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return text.startswith(("postgresql://", "postgres://"))


def describe(dsn: str) -> str:
    """`dsn` without its password, for messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


def pool_for(dsn: str) -> ConnectionPool:
    """The process's pool for `dsn` (created on first use)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(dsn)
        if pool is None or pool.closed:
            pool = ConnectionPool(
                dsn,
                min_size=1,
                max_size=POOL_MAX,
                max_idle=60.0,
                timeout=CONNECT_TIMEOUT_S,
                configure=_configure,
                name=describe(dsn),
                open=True,
            )
            _POOLS[dsn] = pool
        return pool


def close_pools(dsn: str | None = None) -> None:
    """Close the pool of `dsn` (every pool if None): tests dropping a database call it."""
    with _POOLS_LOCK:
        names = [dsn] if dsn is not None else list(_POOLS)
        pools = [_POOLS.pop(name) for name in names if name in _POOLS]
    for pool in pools:
        _CHECKED.discard(pool)
        pool.close()


@contextmanager
def _errors(dsn: str) -> Iterator[None]:
    """PostgreSQL failures as `RepositoryError` naming the database (never its password)."""
    try:
        yield
    except CasError:
        raise
    except PoolTimeout as error:
        raise RepositoryError(f"cannot connect to PostgreSQL at {describe(dsn)}: {error}") from None
    except psycopg.Error as error:
        text = " ".join(str(error).split())
        raise RepositoryError(f"PostgreSQL at {describe(dsn)}: {text}") from None


# --------------------------------------------------------------------------- migrations


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped in ``cas/migrations``, in order."""
    found = []
    for item in resources.files("cas").joinpath("migrations").iterdir():
        if item.name.endswith(".sql") and item.name[:4].isdigit():
            found.append((int(item.name[:4]), item.name, item.read_text()))
    return sorted(found)


SCHEMA_VERSION = max(version for version, _, _ in migrations())

_CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The newest migration applied to the database behind `conn` (0: none)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations, one transaction each, under an advisory lock; their names.

    Run it as the role that owns (or will own) the tables, not as the application role.
    """
    with _errors(dsn), psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            conn.execute(_CREATE_MIGRATIONS)
            current = schema_version(conn)
            applied = []
            for version, name, sql in migrations():
                if version <= current:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # no parameters: several statements are fine
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        [version, name],
                    )
                applied.append(name)
            return applied
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


def status(dsn: str) -> dict[str, Any]:
    """The database's schema version, this cas's, and the migrations still pending."""
    with _errors(dsn), psycopg.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
        current = schema_version(conn)
    pending = [name for version, name, _ in migrations() if version > current]
    return {
        "database": describe(dsn),
        "version": current,
        "required": SCHEMA_VERSION,
        "pending": pending,
    }


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """`RepositoryError` unless the schema is exactly the version this cas needs."""
    current = schema_version(conn)
    if current < SCHEMA_VERSION:
        raise RepositoryError(
            f"database schema is at version {current}, this cas needs {SCHEMA_VERSION}: "
            "run 'cas db migrate'"
        )
    if current > SCHEMA_VERSION:
        raise RepositoryError(
            f"database schema is at version {current}, newer than this cas knows "
            f"({SCHEMA_VERSION}): upgrade cas"
        )


def check_role(conn: psycopg.Connection[Any]) -> None:
    """`RepositoryError` if the session's role would skip row-level security."""
    row = conn.execute(
        "SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row and row[1]:
        raise RepositoryError(
            f"PostgreSQL role {row[0]!r} is a superuser or has BYPASSRLS, so row-level "
            f"security would not isolate tenants: connect as a role granted {APP_ROLE!r}"
        )


# --------------------------------------------------------------------------- the store


class PostgresStore:
    """`ExecutionStore` and `ManifestStore` of one tenant in a PostgreSQL database."""

    def __init__(self, dsn: str, tenant: str = DEFAULT_TENANT, pool: Any = None) -> None:
        self.dsn = dsn
        self.tenant = check_tenant(tenant)
        self.pool: ConnectionPool = pool if pool is not None else pool_for(dsn)
        if self.pool in _CHECKED:  # once per pool: a server opens a store per request
            return
        with self._errors(), self.pool.connection() as conn:
            check_role(conn)
            check_schema(conn)
        _CHECKED.add(self.pool)

    @property
    def url(self) -> str:
        """The database, without its password."""
        return describe(self.dsn)

    def _errors(self) -> Any:
        return _errors(self.dsn)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in a transaction scoped to this store's tenant (committed on success)."""
        with self._errors(), self.pool.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT set_config('cas.tenant', %s, true)", [self.tenant])
            yield cursor

    # ExecutionStore ------------------------------------------------------------------

    def save(self, run_id: str, result: ExecutionResult) -> None:
        """Store (or replace) the result of `run_id`."""
        check_result(run_id, result)
        if result.runbook is not None and "\x00" in result.runbook:
            raise InvalidInputError(
                f"invalid runbook name {result.runbook[:80]!r}: PostgreSQL text cannot hold NUL"
            )
        counts = result.counts()
        values = [
            self.tenant,
            run_id,
            result.status,
            result.runbook,
            aware(result.started_at),
            aware(result.ended_at),
            result.duration_seconds,
            counts["completed"],
            counts["failed"],
            counts["skipped"],
            Json(result.to_dict()),
        ]
        with self.transaction() as cursor:
            cursor.execute(SAVE_RESULT, values)

    def get(self, run_id: str) -> ExecutionResult:
        """The stored result; `NotFoundError` if absent (or another tenant's)."""
        check_run_id(run_id)
        with self.transaction() as cursor:
            cursor.execute(
                "SELECT result FROM runs WHERE tenant = %s AND run_id = %s", [self.tenant, run_id]
            )
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}")
        return self._result(run_id, row[0])

    def _result(self, run_id: str, record: Any) -> ExecutionResult:
        try:
            result = ExecutionResult.from_dict(record)
        except (CasError, KeyError, TypeError, ValueError) as error:
            raise IntegrityError(
                f"the result of run {run_id!r} in {self.url} is damaged: {error}"
            ) from None
        if result.run_id != run_id:
            raise IntegrityError(f"the result of run {run_id!r} in {self.url} names another run")
        return result

    def records(self) -> list[tuple[ExecutionResult, dict[str, ArtifactEntry]]]:
        """Every result of the tenant with its entries, in two queries (for exports)."""
        entries: dict[str, dict[str, ArtifactEntry]] = {}
        with self.transaction() as cursor:
            cursor.execute(
                f"SELECT run_id, {ENTRY_COLUMNS} FROM artifacts WHERE tenant = %s "
                "ORDER BY run_id, seq",
                [self.tenant],
            )
            for row in cursor:
                entries.setdefault(row[0], {})[row[1]] = entry_of(row[1:])
            cursor.execute(
                "SELECT run_id, result FROM runs WHERE tenant = %s ORDER BY run_id", [self.tenant]
            )
            results = [self._result(run_id, record) for run_id, record in cursor]
        return [(result, entries.get(result.run_id, {})) for result in results]

    def list_runs(self) -> list[str]:
        """Ids of every run of the tenant with a stored result, sorted."""
        return self._ids("SELECT run_id FROM runs WHERE tenant = %s ORDER BY run_id")

    def exists(self, run_id: str) -> bool:
        """Whether `run_id` has a stored result."""
        check_run_id(run_id)
        with self.transaction() as cursor:
            cursor.execute(
                "SELECT 1 FROM runs WHERE tenant = %s AND run_id = %s", [self.tenant, run_id]
            )
            return cursor.fetchone() is not None

    def _ids(self, sql: str, *params: object) -> list[str]:
        with self.transaction() as cursor:
            cursor.execute(sql, [self.tenant, *params])
            return [row[0] for row in cursor.fetchall()]

    # ManifestStore -------------------------------------------------------------------

    def append(self, run_id: str, entry: ArtifactEntry) -> None:
        """Record `entry` for `run_id` (committed when this returns); it replaces an older one."""
        check_run_id(run_id)
        check_artifact_id(entry.artifact_id)
        schema = entry.schema
        values = [
            self.tenant,
            run_id,
            entry.artifact_id,
            bytes.fromhex(entry.digest.hex),
            entry.size,
            schema.name if schema else None,
            schema.version if schema else None,
            entry.validated,
            Json(entry.envelope),
            entry.saved_at,
        ]
        with self.transaction() as cursor:
            cursor.execute(APPEND, values)

    def entries(self, run_id: str) -> dict[str, ArtifactEntry]:
        """The run's manifest: artifact id → newest entry, in the order of those saves."""
        check_run_id(run_id)
        with self.transaction() as cursor:
            cursor.execute(
                f"SELECT {ENTRY_COLUMNS} FROM artifacts WHERE tenant = %s AND run_id = %s "
                "ORDER BY seq",
                [self.tenant, run_id],
            )
            rows = cursor.fetchall()
        return {row[0]: entry_of(row) for row in rows}

    def sync(self, run_id: str) -> None:
        """Nothing to do: every `append` commits before it returns."""
        check_run_id(run_id)

    def run_ids(self) -> list[str]:
        """Every run of the tenant with a result or an entry, sorted."""
        return self._ids(
            "SELECT run_id FROM runs WHERE tenant = %s "
            "UNION SELECT run_id FROM artifacts WHERE tenant = %s ORDER BY run_id",
            self.tenant,
        )

    def delete_run(self, run_id: str) -> None:
        """Remove the run's result and entries in one transaction."""
        check_run_id(run_id)
        with self.transaction() as cursor:
            for table in ("runs", "artifacts"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE tenant = %s AND run_id = %s",
                    [self.tenant, run_id],
                )

    def position(self) -> int:
        """A mark of the saves so far: `saved_after` names the runs saved since."""
        with self.transaction() as cursor:
            cursor.execute(
                "SELECT coalesce(max(seq), 0) FROM artifacts WHERE tenant = %s", [self.tenant]
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def saved_after(self, position: int) -> set[str]:
        """Runs with an entry saved after `position` (a `position()` taken earlier)."""
        return set(
            self._ids(
                "SELECT DISTINCT run_id FROM artifacts WHERE tenant = %s AND seq > %s", position
            )
        )

    def digests(self, run_ids: Iterable[str]) -> set[Digest]:
        """Every digest the entries of `run_ids` name: one query however many runs."""
        ids = [check_run_id(run_id) for run_id in run_ids]
        if not ids:
            return set()
        with self.transaction() as cursor:
            cursor.execute(NAMED_DIGESTS, [ids, self.tenant])
            return {Digest(bytes(row[0]).hex()) for row in cursor}

    # queries -------------------------------------------------------------------------

    def query_runs(self, query: RunQuery) -> list[RunRow]:
        """`Repository.list_runs` in SQL: the runs passing `query`, newest first."""
        sql, params = run_query(self.tenant, query)
        with self.transaction() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return [run_row_of(row, self.tenant) for row in rows]


# --------------------------------------------------------------------------- tokens

_TOKEN_COLUMNS = "token_id, tenant, name, created_at, revoked_at"


class PostgresTokenStore:
    """`cas.tokens.TokenStore` in the ``tokens`` table (only SHA-256 hashes are kept).

    `lookup` runs as anyone granted ``cas_app``: it calls ``cas_token_lookup``, a
    SECURITY DEFINER function that finds the one unrevoked token with the hash (the
    tenant is not known until then). `create` sets the new token's tenant for its
    transaction, as every write does. `revoke` and `list` see every tenant's tokens
    only as the role owning the table (the one that ran ``cas db migrate``): for the
    application role, row-level security hides them all.
    """

    def __init__(self, dsn: str, pool: Any = None) -> None:
        self.dsn = dsn
        self.pool: ConnectionPool = pool if pool is not None else pool_for(dsn)
        with _errors(dsn), self.pool.connection() as conn:
            check_schema(conn)

    @contextmanager
    def _cursor(self, tenant: str | None = None) -> Iterator[psycopg.Cursor[Any]]:
        with _errors(self.dsn), self.pool.connection() as conn, conn.cursor() as cursor:
            if tenant is not None:
                cursor.execute("SELECT set_config('cas.tenant', %s, true)", [tenant])
            yield cursor

    def create(self, tenant: str, name: str = "") -> tuple[str, TokenInfo]:
        """A new token for `tenant`: its secret (shown once) and record."""
        check_tenant(tenant)
        check_name(name)
        secret = new_secret()
        with self._cursor(tenant) as cursor:
            cursor.execute(
                "INSERT INTO tokens (token_id, tenant, name, hash) VALUES (%s, %s, %s, %s) "
                f"RETURNING {_TOKEN_COLUMNS}",
                [new_token_id(), tenant, name, bytes.fromhex(hash_secret(secret))],
            )
            row = cursor.fetchone()
        assert row is not None
        return secret, _token(row)

    def lookup(self, secret: str) -> TokenInfo | None:
        """The active token with `secret`'s hash, of any tenant; None if none."""
        if not isinstance(secret, str) or not is_well_formed(secret):
            return None
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT token_id, tenant, name, created_at FROM cas_token_lookup(%s)",
                [bytes.fromhex(hash_secret(secret))],
            )
            row = cursor.fetchone()
        return None if row is None else _token((*row, None))

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (idempotent); `NotFoundError` if there is no such id."""
        check_token_id(token_id)
        with self._cursor() as cursor:
            cursor.execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) "
                f"WHERE token_id = %s RETURNING {_TOKEN_COLUMNS}",
                [token_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no token {token_id!r}")
        return _token(row)

    def list(self) -> builtins.list[TokenInfo]:
        """Every token the role may see, revoked ones included, oldest first."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at, token_id")
            return [_token(row) for row in cursor.fetchall()]


def _token(row: tuple[Any, ...]) -> TokenInfo:
    token_id, tenant, name, created_at, revoked_at = row
    return TokenInfo(token_id, tenant, name, utc(created_at) or created_at, utc(revoked_at))


# --------------------------------------------------------------------------- administration


def run_sql(dsn: str, *statements: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run `statements` in autocommit mode (CREATE DATABASE, roles); rows of the last.

    For `cas db`, tests and benchmarks: the one place outside the store that talks SQL.
    """
    rows: list[tuple[Any, ...]] = []
    with _errors(dsn), psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement.encode(), params or None)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def copy_rows(dsn: str, table: str, columns: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> int:
    """Bulk-load `rows` into `table` with COPY (benchmarks, imports); the row count.

    `table` and `columns` come from code, never from user input.
    """
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with (
        _errors(dsn),
        psycopg.connect(dsn) as conn,
        conn.cursor() as cursor,
        cursor.copy(statement.encode()) as copy,
    ):
        for row in rows:
            copy.write_row(row)
            count += 1
    return count
