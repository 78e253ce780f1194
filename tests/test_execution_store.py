"""`ExecutionStoreTests` on a local folder, fsspec memory, S3 (moto) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.objects import Backend, LocalBackend
from cas.repository import Repository
from cas.testing.pg import PostgresSuite, table_rows
from cas.testing.services import S3Bucket
from cas.testing.store_tests import (
    ExecutionStoreTests,
    memory_backend,
    s3_backend,
    sample_message,
    sample_result,
)


class TestLocalExecutionStore(ExecutionStoreTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")


class TestMemoryExecutionStore(ExecutionStoreTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with memory_backend() as backend:
            yield backend


@pytest.mark.s3
class TestS3ExecutionStore(ExecutionStoreTests):
    @pytest.fixture
    def backend(self, s3_bucket: S3Bucket) -> Backend:
        url, storage_options = s3_bucket
        return s3_backend(url, storage_options)


@pytest.mark.postgres
class TestPostgresExecutionStore(PostgresSuite, ExecutionStoreTests):
    """Results in PostgreSQL (as a non-superuser, so row-level security applies)."""

    def test_manifest_is_durable_before_result(  # type: ignore[override]
        self, repo: Repository
    ) -> None:
        """I2 in PostgreSQL: each entry is committed when its save returns (another
        session sees it), so a result saved afterwards never describes a lost entry."""
        for artifact in ("a", "b"):
            repo.artifacts.save("run-1", artifact, sample_message({"a": artifact}))
            seen = [row[2] for row in table_rows(self.admin_dsn)[1]]  # another session
            assert artifact in seen
        repo.executions.save("run-1", sample_result("run-1"))
        assert [row[1] for row in table_rows(self.admin_dsn)[0]] == ["run-1"]
