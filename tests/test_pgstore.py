"""The PostgreSQL store: ArtifactStore contract, tenant isolation, migrations, queries, CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cas.errors import InvalidIdError, NotFoundError, RepositoryError
from cas.index_rows import RunQuery
from cas.model import ArtifactEntry, ArtifactOutcome
from cas.pgstore import SCHEMA_VERSION, PostgresStore, migrate, migrations, run_sql, status
from cas.repository import Repository
from cas.testing.pg import PgDatabase, PostgresSuite, drop_database, fresh_database, table_rows
from cas.testing.services import PostgresServer
from cas.testing.store_tests import ArtifactStoreTests, sample_message, sample_result

pytestmark = pytest.mark.postgres
NO_FILES = "entries are rows in PostgreSQL: there are no manifest files to tear or damage"


class TestPostgresArtifactStore(PostgresSuite, ArtifactStoreTests):
    """Payloads in a local folder, entries in PostgreSQL."""

    # The manifest-file tests (torn last line, damaged middle line, appends per save)
    # are about the backend's JSONL files; here the entries are rows, tested below.

    def test_torn_final_manifest_line_is_ignored(self) -> None:  # type: ignore[override]
        pytest.skip(NO_FILES)

    def test_restarted_writer_saves_after_torn_line(self) -> None:  # type: ignore[override]
        pytest.skip(NO_FILES)

    def test_damaged_middle_line_is_integrity_error(self) -> None:  # type: ignore[override]
        pytest.skip(NO_FILES)

    def test_save_costs_constant_writes(self) -> None:  # type: ignore[override]
        pytest.skip(
            "one object write and one row per save: test_save_writes_one_object_and_one_row"
        )

    def test_save_writes_one_object_and_one_row(self, repo: Repository) -> None:
        store = repo.artifacts
        for index in range(5):
            store.save("run-1", f"a{index}", sample_message({"i": index}))
        store.save("run-1", "a0", sample_message({"i": 0}, source="again"))
        rows = table_rows(self.admin_dsn)[1]
        assert [row[2] for row in rows] == ["a0", "a1", "a2", "a3", "a4"]  # one row each
        assert len(list(repo.objects)) == 5  # the payload of the re-save was stored already
        assert list(store.entries("run-1")) == ["a1", "a2", "a3", "a4", "a0"]  # save order
        assert repo.backend.children("runs") == []  # no manifest on the backend


# --------------------------------------------------------------------------- isolation


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[PgDatabase]:
    database = fresh_database(postgres_server)
    yield database
    drop_database(postgres_server, database)


def _fill(store: PostgresStore, prefix: str, count: int = 3) -> None:
    for index in range(count):
        run_id = f"{prefix}-{index}"
        store.append(run_id, _entry(f"{prefix}{index}"))
        store.save(run_id, sample_result(run_id))


def _entry(text: str) -> ArtifactEntry:
    from cas.digest import Digest
    from cas.model import ArtifactEntry as Entry

    return Entry("a", Digest.of(text.encode()), 3, None, False, {"id": text}, "2024-01-01")


def test_a_tenant_never_sees_another_tenants_runs(pg: PgDatabase) -> None:
    alpha, beta = PostgresStore(pg.dsn, "alpha"), PostgresStore(pg.dsn, "beta")
    _fill(alpha, "a")
    _fill(beta, "b")
    assert alpha.list_runs() == ["a-0", "a-1", "a-2"]
    assert beta.run_ids() == ["b-0", "b-1", "b-2"]
    assert not alpha.exists("b-0")
    with pytest.raises(NotFoundError):
        alpha.get("b-0")
    assert alpha.entries("b-0") == {}
    assert [row.run_id for row in alpha.query_runs(RunQuery())] == ["a-2", "a-1", "a-0"]
    digest = _entry("b0").digest.hex
    assert alpha.query_runs(RunQuery(digest=digest)) == []
    assert [row.run_id for row in beta.query_runs(RunQuery(digest=digest))] == ["b-0"]


def test_row_level_security_filters_queries_without_a_tenant_filter(pg: PgDatabase) -> None:
    """A query that forgets its WHERE still returns only the transaction's tenant."""
    alpha, beta = PostgresStore(pg.dsn, "alpha"), PostgresStore(pg.dsn, "beta")
    _fill(alpha, "a")
    _fill(beta, "b")
    with alpha.transaction() as cursor:
        cursor.execute("SELECT tenant, run_id FROM runs")
        runs = cursor.fetchall()
        cursor.execute("SELECT DISTINCT tenant FROM artifacts")
        artifacts = cursor.fetchall()
    assert sorted(runs) == [("alpha", "a-0"), ("alpha", "a-1"), ("alpha", "a-2")]
    assert artifacts == [("alpha",)]
    assert len(table_rows(pg.admin_dsn)[0]) == 6  # both tenants are there


def test_without_a_tenant_setting_nothing_is_visible_or_writable(pg: PgDatabase) -> None:
    _fill(PostgresStore(pg.dsn, "alpha"), "a")
    assert run_sql(pg.dsn, "SELECT count(*) FROM runs") == [(0,)]
    with pytest.raises(RepositoryError, match="row-level security"):
        run_sql(
            pg.dsn,
            "INSERT INTO runs (tenant, run_id, status, started_at, completed, failed, skipped,"
            " result) VALUES ('alpha', 'x', 'completed', now(), 0, 0, 0, '{}')",
        )


def test_a_tenant_cannot_write_rows_of_another(pg: PgDatabase) -> None:
    alpha = PostgresStore(pg.dsn, "alpha")
    with pytest.raises(RepositoryError, match="row-level security"), alpha.transaction() as cur:
        cur.execute(
            "INSERT INTO runs (tenant, run_id, status, started_at, completed, failed, skipped,"
            " result) VALUES ('beta', 'x', 'completed', now(), 0, 0, 0, '{}')"
        )
    with alpha.transaction() as cursor:  # an update or delete cannot reach them either
        cursor.execute("UPDATE runs SET status = 'failed' WHERE tenant = 'beta'")
        assert cursor.rowcount == 0


def test_gc_of_one_tenant_keeps_the_other(pg: PgDatabase, tmp_path: Path) -> None:
    from cas.gc import Policy, collect

    repos = {
        tenant: Repository.init(str(tmp_path / tenant), execution_store=pg.dsn, tenant=tenant)
        for tenant in ("alpha", "beta")
    }
    for tenant, repo in repos.items():
        for index in range(3):
            run_id = f"{tenant}-{index}"
            repo.artifacts.save(run_id, "a", sample_message({"n": index}))
            started = datetime(2024, 1, 1 + index, tzinfo=UTC)
            repo.executions.save(run_id, sample_result(run_id, started_at=started))
    result = collect(repos["alpha"], Policy(keep_last=1))
    assert result.runs_removed == ["alpha-0", "alpha-1"]
    assert repos["alpha"].run_ids() == ["alpha-2"]
    assert repos["beta"].run_ids() == ["beta-0", "beta-1", "beta-2"]


def test_superuser_store_is_refused(pg: PgDatabase) -> None:
    with pytest.raises(RepositoryError, match="superuser or has BYPASSRLS"):
        PostgresStore(pg.admin_dsn, "alpha")


def test_bad_tenant_is_refused(pg: PgDatabase) -> None:
    with pytest.raises(InvalidIdError, match="tenant"):
        PostgresStore(pg.dsn, "../other")


# --------------------------------------------------------------------------- migrations


def test_schema_behind_is_a_clear_error(postgres_server: PostgresServer) -> None:
    database = fresh_database(postgres_server, migrated=False)
    try:
        from cas.testing.pg import APP_LOGIN

        run_sql(database.admin_dsn, f"CREATE ROLE {APP_LOGIN}_bare LOGIN")  # no grants needed
        bare = database.dsn.replace(f"{APP_LOGIN}@", f"{APP_LOGIN}_bare@")
        with pytest.raises(RepositoryError) as caught:
            PostgresStore(bare, "alpha")
        assert str(caught.value) == (
            f"database schema is at version 0, this cas needs {SCHEMA_VERSION}: "
            "run 'cas db migrate'"
        )
        run_sql(database.admin_dsn, f"DROP ROLE {APP_LOGIN}_bare")
    finally:
        drop_database(postgres_server, database)


def test_schema_behind_by_one_names_both_versions(pg: PgDatabase) -> None:
    run_sql(pg.admin_dsn, f"DELETE FROM schema_migrations WHERE version = {SCHEMA_VERSION}")
    with pytest.raises(RepositoryError, match=f"at version {SCHEMA_VERSION - 1}, this cas needs"):
        PostgresStore(pg.dsn, "alpha")
    assert status(pg.admin_dsn)["pending"] == [migrations()[-1][1]]


def test_migrate_is_idempotent_and_recorded(pg: PgDatabase) -> None:
    assert migrate(pg.admin_dsn) == []
    info = status(pg.admin_dsn)
    assert info["version"] == info["required"] == SCHEMA_VERSION
    assert info["pending"] == []
    assert "@" in info["database"] and "cas_" in info["database"]


# --------------------------------------------------------------------------- queries


def _history(store: PostgresStore) -> None:
    base = datetime(2024, 3, 1, tzinfo=UTC)
    for index in range(12):
        run_id = f"run-{index:02d}"
        status_ = ("completed", "failed", "partial")[index % 3]
        store.append(run_id, _entry(f"payload-{index % 4}"))
        result = sample_result(
            run_id,
            status_,
            started_at=base + timedelta(days=index),
            runbook=f"book-{index % 2}.yaml",
            artifacts={
                "report": ArtifactOutcome("completed"),
                f"extra-{index}": ArtifactOutcome("skipped"),
            },
        )
        store.save(run_id, result)


@pytest.mark.parametrize(
    "query",
    [
        RunQuery(),
        RunQuery(limit=5),
        RunQuery(limit=3, offset=4),
        RunQuery(status="failed"),
        RunQuery(since=datetime(2024, 3, 4, tzinfo=UTC), until=datetime(2024, 3, 9, tzinfo=UTC)),
        RunQuery(status="failed", since=datetime(2024, 3, 3), limit=2),
        RunQuery(runbook="book-1.yaml"),
        RunQuery(artifact="extra-7"),
        RunQuery(artifact="a", runbook="book-0.yaml"),
        RunQuery(digest=_entry("payload-2").digest.hex[:6]),
        RunQuery(digest=_entry("payload-1").digest.hex, status="partial"),
    ],
    ids=repr,
)
def test_list_runs_matches_the_parquet_index(
    pg: PgDatabase, tmp_path: Path, query: RunQuery
) -> None:
    """The SQL answer equals the Parquet run index's answer over the same runs."""
    from cas.index import RunIndex

    repo = Repository.init(str(tmp_path / "r"), execution_store=pg.dsn, tenant="alpha")
    assert repo.records is not None
    _history(repo.records)  # type: ignore[arg-type]
    RunIndex(repo).rebuild()  # what `cas db export-index` writes
    from_index = RunIndex(repo).runs(query)
    from_sql = repo.list_runs(query)
    assert [replace(row, tenant=None) for row in from_sql] == from_index
    assert all(row.tenant == "alpha" for row in from_sql)
