"""`ExecutionStoreTests` on a local folder, fsspec memory and S3 (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.objects import Backend, LocalBackend
from cas.testing.services import S3Bucket
from cas.testing.store_tests import ExecutionStoreTests, memory_backend, s3_backend


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
