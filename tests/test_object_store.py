"""`ObjectStoreTests` on a local folder, fsspec memory and S3 (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.objects import Backend, LocalBackend
from cas.testing.services import S3Bucket
from cas.testing.store_tests import ObjectStoreTests, memory_backend, s3_backend


class TestLocalObjectStore(ObjectStoreTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")


class TestMemoryObjectStore(ObjectStoreTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with memory_backend() as backend:
            yield backend


@pytest.mark.s3
class TestS3ObjectStore(ObjectStoreTests):
    @pytest.fixture
    def backend(self, s3_bucket: S3Bucket) -> Backend:
        url, storage_options = s3_bucket
        return s3_backend(url, storage_options)


class TestLocalCompressedObjectStore(ObjectStoreTests):
    """The same contract for compressed stores under another prefix (chunks, lists)."""

    prefix = "chunks"
    compressed = True

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")


class TestMemoryCompressedObjectStore(ObjectStoreTests):
    prefix = "chunks"
    compressed = True

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with memory_backend() as backend:
            yield backend
