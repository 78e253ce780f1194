"""The PostgreSQL store: ArtifactStore contract, tenant isolation, migrations, queries, CLI."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.errors import (
    IntegrityError,
    InvalidIdError,
    InvalidInputError,
    NotFoundError,
    RepositoryError,
)
from cas.index_rows import RunQuery
from cas.model import ArtifactEntry, ArtifactOutcome
from cas.pgstore import SCHEMA_VERSION, PostgresStore, migrate, migrations, run_sql, status
from cas.repository import Repository
from cas.testing import strategies
from cas.testing.pg import (
    PgDatabase,
    PostgresSuite,
    drop_database,
    ensure_app_login,
    fresh_database,
    table_rows,
)
from cas.testing.services import PostgresServer, S3Bucket
from cas.testing.store_helpers import between_mark_and_listing
from cas.testing.store_tests import ArtifactStoreTests, sample_message, sample_result
from cas.verify import verify

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


def test_digests_names_the_newest_entries_of_the_given_runs_of_the_tenant(pg: PgDatabase) -> None:
    alpha, beta = PostgresStore(pg.dsn, "alpha"), PostgresStore(pg.dsn, "beta")
    _fill(alpha, "a")
    _fill(beta, "b")
    alpha.append("a-0", _entry("a0-again"))  # replaces a-0's entry "a": a0 is named no more
    alpha.append("a-1", _entry("a0"))  # a digest two runs name comes back once
    named = alpha.digests(["a-0", "a-1", "b-0", "nowhere"])
    assert named == {_entry("a0-again").digest, _entry("a0").digest}
    assert alpha.digests([]) == set()
    assert beta.digests(["a-0", "a-1", "a-2"]) == set()  # row-level security
    with pytest.raises(InvalidIdError):
        alpha.digests(["a-0", "../x"])


class _Counted:
    """A cursor that records each statement it executes."""

    def __init__(self, cursor: Any, log: list[str]) -> None:
        self._cursor, self._log = cursor, log

    def execute(self, query: Any, params: Any = None) -> _Counted:
        self._log.append(str(query))
        self._cursor.execute(query, params)
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _count_statements(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Statements the repository's store executes from now on (its tenant's set_config aside)."""
    store = repo.records
    assert isinstance(store, PostgresStore)
    log: list[str] = []
    real = store.transaction

    @contextmanager
    def counted() -> Iterator[Any]:
        with real() as cursor:
            yield _Counted(cursor, log)

    monkeypatch.setattr(store, "transaction", counted)
    return log


def _age_objects(repo: Repository) -> None:
    """Move every file of the (local) object store ten days back."""
    past = time.time() - 10 * 86400
    for path in Path(repo.backend.url).rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def _save_runs(repo: Repository, count: int, prefix: str = "run") -> None:
    for index in range(count):
        run_id = f"{prefix}-{index:04d}"
        repo.artifacts.save(run_id, "findings", sample_message({"run": run_id}))
        repo.artifacts.save(run_id, "shared", sample_message({"shared": index % 2}))
        started = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
        repo.executions.save(run_id, sample_result(run_id, started_at=started))


def test_gc_marks_with_as_many_queries_for_40_runs_as_for_4(
    pg_module: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark reads every run's digests in one query, not one query per run."""
    from cas.gc import Policy, collect

    statements: dict[int, list[str]] = {}
    for count in (4, 40):
        repo = Repository.init(
            str(tmp_path / str(count)), execution_store=pg_module.dsn, tenant=f"count{count}"
        )
        _save_runs(repo, count)
        garbage = repo.objects.put(b'{"named": "by nothing"}')[0]
        _age_objects(repo)
        with monkeypatch.context() as patch:
            statements[count] = _count_statements(repo, patch)
            result = collect(repo, Policy(grace=timedelta(0)))
        assert (result.runs_kept, result.objects_removed) == (count, 1)
        assert not repo.payloads.exists(garbage)
        assert verify(repo).ok
    assert len(statements[40]) == len(statements[4]) <= 6, statements[40]
    assert sum("digest" in sql for sql in statements[40]) == 1  # the mark; no re-check needed
    assert not any("ORDER BY seq" in sql for sql in statements[40])  # no per-run entries()


def test_gc_on_postgres_sweeps_what_only_removed_runs_named(pg_store: Repository) -> None:
    from cas.gc import Policy, collect

    _save_runs(pg_store, 3)
    gone = pg_store.artifacts.entries("run-0000")["findings"].digest
    kept = {
        entry.digest
        for run_id in ("run-0001", "run-0002")
        for entry in pg_store.artifacts.entries(run_id).values()
    }
    _age_objects(pg_store)
    dry = collect(pg_store, Policy(keep_last=2, grace=timedelta(0)), dry_run=True)
    assert (dry.runs_removed, dry.objects_removed) == (["run-0000"], 1)
    assert pg_store.payloads.exists(gone)
    result = collect(pg_store, Policy(keep_last=2, grace=timedelta(0)))
    assert (result.runs_removed, result.objects_removed) == (["run-0000"], 1)
    assert not pg_store.payloads.exists(gone)
    assert all(pg_store.payloads.exists(digest) for digest in kept)
    assert verify(pg_store).ok


def test_gc_on_postgres_re_reads_runs_saved_after_the_mark(
    pg_store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer names an old object after the mark: `saved_after` brings its run back."""
    from cas.gc import Policy, collect

    _save_runs(pg_store, 2)
    late = sample_message({"late": 1})
    digest, _ = pg_store.objects.put(late.payload())
    _age_objects(pg_store)

    def late_writer() -> None:
        pg_store.artifacts.save("run-0000", "late", late)  # a dedup hit on the old object
        pg_store.artifacts.save("late-run", "a", late)  # and a run the mark did not see
        _age_objects(pg_store)

    between_mark_and_listing(monkeypatch, late_writer)
    result = collect(pg_store, Policy(grace=timedelta(0)))
    assert result.objects_removed == 0
    assert pg_store.payloads.exists(digest)
    assert verify(pg_store).ok


def test_gc_stops_before_deleting_when_the_entries_cannot_be_read(
    pg_store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cas.gc import Policy, collect

    _save_runs(pg_store, 2)
    garbage = pg_store.objects.put(b'{"named": "by nothing"}')[0]
    _age_objects(pg_store)
    store = pg_store.records
    assert isinstance(store, PostgresStore)

    def unreadable(run_ids: Any) -> Any:
        raise RepositoryError("PostgreSQL at postgresql://cas@db/cas: connection lost")

    monkeypatch.setattr(store, "digests", unreadable)
    with pytest.raises(IntegrityError) as caught:
        collect(pg_store, Policy(grace=timedelta(0)))
    assert str(caught.value) == (
        "gc stopped before deleting anything: the manifests of 2 runs cannot be read "
        "(PostgreSQL at postgresql://cas@db/cas: connection lost); run 'cas verify'"
    )
    assert pg_store.payloads.exists(garbage)


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


# --------------------------------------------------------------------------- tokens


def test_tokens_lookup_across_tenants_and_admin_revoke(pg: PgDatabase) -> None:
    from cas.pgstore import PostgresTokenStore
    from cas.tokens import TokenStore

    app, admin = PostgresTokenStore(pg.dsn), PostgresTokenStore(pg.admin_dsn)
    assert isinstance(app, TokenStore)
    secret_a, info_a = app.create("alpha", "ci")
    secret_b, info_b = app.create("beta", "")
    assert app.lookup(secret_a) == info_a
    assert app.lookup(secret_b) == info_b
    assert app.lookup(secret_a[:-1] + ("A" if secret_a[-1] != "A" else "B")) is None
    assert app.lookup("not a token") is None
    assert app.list() == []  # the application role sees no token rows at all
    hashes = run_sql(pg.admin_dsn, "SELECT hash FROM tokens ORDER BY created_at")
    assert all(secret_a.encode() not in bytes(row[0]) for row in hashes)
    with pytest.raises(NotFoundError):
        app.revoke(info_a.token_id)  # not visible to it: nothing changes
    assert [info.token_id for info in admin.list()] == [info_a.token_id, info_b.token_id]
    revoked = admin.revoke(info_a.token_id)
    assert revoked.revoked_at is not None
    assert admin.revoke(info_a.token_id) == revoked  # idempotent
    assert app.lookup(secret_a) is None
    assert app.lookup(secret_b) == info_b


# --------------------------------------------------------------------------- the CLI

ROOT = Path(__file__).resolve().parent.parent


def _cas(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_run_runs_inspect_verify_gc_on_postgres(
    pg: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(ROOT / "examples" / "data"))
    monkeypatch.setenv("CAS_REPO", str(tmp_path / "repo"))
    monkeypatch.setenv("CAS_EXECUTION_STORE", pg.dsn)
    for _ in range(2):
        done = _cas("run", str(ROOT / "examples" / "scan.yaml"), "--json")
        assert done.exit_code == 0, done.output
    runs = _cas("runs", "--json")
    assert runs.exit_code == 0, runs.output
    rows = json.loads(runs.stdout)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert {row["tenant"] for row in rows} == {"default"}
    latest = rows[0]["run_id"]
    inspect = _cas("inspect", "latest", "--json")
    assert inspect.exit_code == 0, inspect.output
    assert latest in inspect.stdout
    verify = _cas("verify", "--json")
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.stdout)["runs_checked"] == 2
    gc = _cas("gc", "--keep-last", "1", "--json")
    assert gc.exit_code == 0, gc.output
    assert json.loads(gc.stdout)["runs_removed"] == [rows[1]["run_id"]]
    left = json.loads(_cas("runs", "--json").stdout)
    assert [row["run_id"] for row in left] == [latest]
    assert _cas("verify").exit_code == 0
    # the results and entries are in PostgreSQL, not in the folder
    assert not list((tmp_path / "repo").rglob("execution_result.json"))
    assert not list((tmp_path / "repo").rglob("manifest*"))


def test_cli_db_migrate_status_and_export_index(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = fresh_database(postgres_server, migrated=False)
    try:
        behind = _cas("db", "status", database.admin_dsn)
        assert behind.exit_code == 6
        assert "pending: 0001_initial.sql" in behind.stdout
        assert "run 'cas db migrate'" in behind.stderr
        done = _cas("db", "migrate", database.admin_dsn, "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["applied"] == [name for _, name, _ in migrations()]
        assert _cas("--execution-store", database.admin_dsn, "db", "status").exit_code == 0
        ensure_app_login(database.admin_dsn)
        repo = Repository.init(str(tmp_path / "r"), execution_store=database.dsn)
        assert repo.records is not None
        _history(repo.records)  # type: ignore[arg-type]
        exported = _cas(
            "--repo", str(tmp_path / "r"), "--execution-store", database.dsn, "db", "export-index"
        )
        assert exported.exit_code == 0, exported.output
        assert "exported 12 runs" in exported.stdout
        plain = Repository.open(str(tmp_path / "r"))  # the Parquet index alone, no PostgreSQL
        assert [row.run_id for row in plain.list_runs(RunQuery(status="failed"))] == [
            row.run_id for row in repo.list_runs(RunQuery(status="failed"))
        ]
    finally:
        drop_database(postgres_server, database)


def test_cli_refuses_a_non_postgres_execution_store(tmp_path: Path) -> None:
    result = _cas("--repo", str(tmp_path), "--execution-store", "mysql://x/y", "runs")
    assert result.exit_code == 2
    assert "invalid execution store 'mysql://x/y': expected a postgresql:// URL" in result.stderr


# --------------------------------------------------------------------------- round trips


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    result=strategies.execution_results(st.just("run-h")).filter(
        lambda r: r.runbook is None or "\x00" not in r.runbook
    ),
    message=strategies.messages(),
)
def test_hypothesis_round_trip(pg_store: Repository, result: Any, message: Any) -> None:
    """Whatever result and message the models accept come back equal, order included.

    Every example saves over the same run (the fixture is shared on purpose).
    """
    pg_store.artifacts.save("run-h", "artifact", message)
    pg_store.executions.save("run-h", result)
    back = pg_store.executions.get("run-h")
    assert back == result
    assert list(back.artifacts) == list(result.artifacts)  # plan order, not jsonb's
    assert back.to_dict() == result.to_dict()  # time zones as given
    assert pg_store.artifacts.get("run-h", "artifact") == message


def test_runbook_with_nul_is_refused(pg_store: Repository) -> None:
    with pytest.raises(InvalidInputError, match="NUL"):
        pg_store.executions.save("r", sample_result("r", runbook="a\x00b"))
    assert pg_store.run_ids() == []


@pytest.fixture(scope="module")
def pg_module(postgres_server: PostgresServer) -> Iterator[PgDatabase]:
    database = fresh_database(postgres_server)
    yield database
    drop_database(postgres_server, database)


@pytest.fixture
def pg_store(pg_module: PgDatabase, tmp_path: Path) -> Iterator[Repository]:
    tenant = f"t{uuid.uuid4().hex[:12]}"  # a fresh tenant: nothing of the last test shows
    yield Repository.init(str(tmp_path / "r"), execution_store=pg_module.dsn, tenant=tenant)


# --------------------------------------------------------------------------- S3 objects


@pytest.mark.s3
def test_objects_on_s3_records_in_postgres(pg: PgDatabase, s3_bucket: S3Bucket) -> None:
    url, options = s3_bucket
    repo = Repository.init(url, execution_store=pg.dsn, tenant="alpha", **options)
    message = sample_message()
    repo.artifacts.save("run-1", "a", message)
    repo.executions.save("run-1", sample_result("run-1"))
    again = Repository.open(url, execution_store=pg.dsn, tenant="alpha", **options)
    assert again.artifacts.get("run-1", "a") == message
    assert again.resolve_run("latest") == "run-1"
    assert len(list(again.objects)) == 1  # the payload is in the bucket
    assert again.backend.children("runs") == []  # its records are not
    beta = Repository.init(f"{url}/tenants/beta", execution_store=pg.dsn, tenant="beta", **options)
    assert beta.run_ids() == []
    with pytest.raises(RepositoryError, match="holds the objects of tenant 'alpha'"):
        Repository.open(url, execution_store=pg.dsn, tenant="beta", **options)


def test_resolve_latest_in_sql_matches_the_listing(pg_store: Repository) -> None:
    for day in (3, 1, 2):
        run_id = f"run-{day}"
        pg_store.executions.save(run_id, sample_result(run_id, started_at=datetime(2024, 1, day)))
    pg_store.artifacts.save("run-0-no-result", "a", sample_message())
    order = [info.run_id for info in pg_store.runs()]
    assert order == ["run-3", "run-2", "run-1", "run-0-no-result"]
    for back, run_id in enumerate(order):
        assert pg_store.resolve_run(f"latest~{back}") == run_id
    assert pg_store.resolve_run("latest", exclude="run-3") == "run-2"
    with pytest.raises(NotFoundError, match="it holds 4 runs"):
        pg_store.resolve_run("latest~4")


def test_cli_tenants_see_only_their_own_runs(
    pg: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(ROOT / "examples" / "data"))
    monkeypatch.setenv("CAS_REPO", str(tmp_path / "repo"))
    monkeypatch.setenv("CAS_EXECUTION_STORE", pg.dsn)
    done = _cas("--tenant", "alpha", "run", str(ROOT / "examples" / "scan.yaml"), "--json")
    assert done.exit_code == 0, done.output
    alpha = json.loads(_cas("--tenant", "alpha", "runs", "--json").stdout)
    assert [row["tenant"] for row in alpha] == ["alpha"]
    for tenant in (("--tenant", "beta"), ()):  # their object stores exist too (empty)
        assert _cas(*tenant, "init").exit_code == 0
    assert json.loads(_cas("--tenant", "beta", "runs", "--json").stdout) == []
    assert json.loads(_cas("runs", "--json").stdout) == []  # the default tenant
    missing = _cas("--tenant", "beta", "inspect", alpha[0]["run_id"])
    assert missing.exit_code == 3
    assert f"no run {alpha[0]['run_id']!r}" in missing.stderr


def test_concurrent_migrations_take_turns(postgres_server: PostgresServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    database = fresh_database(postgres_server, migrated=False)
    try:
        with ThreadPoolExecutor(3) as pool:
            applied = list(pool.map(migrate, [database.admin_dsn] * 3))
        assert sorted(map(len, applied)) == [0, 0, len(migrations())]
        rows = run_sql(database.admin_dsn, "SELECT version FROM schema_migrations")
        assert sorted(row[0] for row in rows) == [version for version, _, _ in migrations()]
    finally:
        drop_database(postgres_server, database)


def test_an_object_store_belongs_to_one_tenant(pg: PgDatabase, tmp_path: Path) -> None:
    """gc marks only its tenant's entries, so two tenants must never share objects."""
    location = str(tmp_path / "r")
    Repository.init(location, execution_store=pg.dsn, tenant="alpha")
    assert Repository.open(location, execution_store=pg.dsn, tenant="alpha").records
    with pytest.raises(RepositoryError) as caught:
        Repository.open(location, execution_store=pg.dsn, tenant="beta")
    assert str(caught.value) == (
        f"{location} holds the objects of tenant 'alpha', not 'beta': each tenant needs "
        "its own object store (--tenant puts it under tenants/NAME)"
    )
    with pytest.raises(RepositoryError):
        Repository.init(location, execution_store=pg.dsn, tenant="beta")


def test_unreachable_database_is_a_repository_error_without_the_password(tmp_path: Path) -> None:
    from cas.pgstore import close_pools
    from cas.testing.services import free_port

    dsn = f"postgresql://cas:hunter2@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    try:
        with pytest.raises(RepositoryError) as caught:
            Repository.init(str(tmp_path / "r"), execution_store=dsn)
    finally:
        close_pools(dsn)
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://cas@127.0.0.1:")
    assert "hunter2" not in message
