"""Fresh, migrated PostgreSQL databases for tests, reached as a non-superuser role.

The `postgres_server` fixture connects as the cluster's superuser, which row-level
security never applies to; `fresh_database` migrates a new database as that
superuser and hands out a DSN for ``cas_tester``, a login role granted ``cas_app``,
so the policies really apply to what the tests do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cas.objects import Backend, LocalBackend
from cas.pgstore import APP_ROLE, PostgresStore, close_pools, migrate, run_sql
from cas.repository import Repository
from cas.testing.services import PostgresServer
from cas.testing.store_helpers import key_listing, reopen

APP_LOGIN = "cas_tester"


@dataclass(frozen=True)
class PgDatabase:
    """A migrated database: `admin_dsn` (superuser) and `dsn` (the application role)."""

    name: str
    admin_dsn: str
    dsn: str


def fresh_database(server: PostgresServer, *, migrated: bool = True) -> PgDatabase:
    """Create (and by default migrate) a uniquely named database."""
    name = f"cas_{uuid.uuid4().hex[:16]}"
    run_sql(server.dsn, f'CREATE DATABASE "{name}"')
    admin = server.dsn_for(name)
    if migrated:
        migrate(admin)
        ensure_app_login(admin)
    dsn = f"postgresql://{APP_LOGIN}@{server.host}:{server.port}/{name}"
    return PgDatabase(name, admin, dsn)


def ensure_app_login(admin_dsn: str) -> None:
    """Create the ``cas_tester`` login role (once per cluster) and grant it ``cas_app``."""
    run_sql(
        admin_dsn,
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN
                CREATE ROLE {APP_LOGIN} LOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        END $$""",
        f"GRANT {APP_ROLE} TO {APP_LOGIN}",
    )


def drop_database(server: PostgresServer, database: PgDatabase) -> None:
    """Close the process's pools on it, then drop it."""
    close_pools(database.dsn)
    close_pools(database.admin_dsn)
    run_sql(server.dsn, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


class PostgresSuite:
    """Mixin for the repository contract suites: records in a fresh PostgreSQL database.

    Objects stay in a local folder (the ``backend``); results and entries go to the
    database, reached as ``cas_tester`` and scoped to `tenant`. Each test gets its own
    database, dropped afterwards.
    """

    tenant = "acme"
    admin_dsn = ""

    @pytest.fixture
    def pg(self, postgres_server: PostgresServer) -> Iterator[PgDatabase]:
        database = fresh_database(postgres_server)
        self.admin_dsn = database.admin_dsn
        try:
            yield database
        finally:
            drop_database(postgres_server, database)

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")

    @pytest.fixture
    def repo(self, backend: Backend, pg: PgDatabase) -> Repository:
        return Repository(backend, {"schema_packages": []}, PostgresStore(pg.dsn, self.tenant))

    def reopened(self, repo: Repository) -> Repository:
        assert isinstance(repo.records, PostgresStore)
        store = PostgresStore(repo.records.dsn, self.tenant)
        return Repository(reopen(repo.backend), {"schema_packages": []}, store)

    def raw_state(self, repo: Repository) -> object:
        return key_listing(repo.backend), table_rows(self.admin_dsn)

    def damage_result(self, repo: Repository, run_id: str) -> None:
        run_sql(
            self.admin_dsn,
            'UPDATE runs SET result = \'{"run_id": "x", "status": "bogus"}\' WHERE run_id = %s',
            params=(run_id,),
        )


def table_rows(admin_dsn: str) -> list[list[tuple[Any, ...]]]:
    """Every row of ``runs`` and ``artifacts``, all tenants (read as the superuser)."""
    return [
        run_sql(admin_dsn, "SELECT tenant, run_id, status, result::text FROM runs ORDER BY 1, 2"),
        run_sql(
            admin_dsn,
            "SELECT tenant, run_id, artifact_id, seq, digest, envelope::text FROM artifacts "
            "ORDER BY 1, 2, 3",
        ),
    ]
