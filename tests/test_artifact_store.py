"""`ArtifactStoreTests` on a local folder, fsspec memory and S3 (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.errors import InvalidIdError
from cas.model import SchemaRef
from cas.objects import Backend, LocalBackend
from cas.testing.services import S3Bucket
from cas.testing.store_tests import (
    ArtifactStoreTests,
    memory_backend,
    s3_backend,
)


class TestLocalArtifactStore(ArtifactStoreTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")


class TestMemoryArtifactStore(ArtifactStoreTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with memory_backend() as backend:
            yield backend


@pytest.mark.s3
class TestS3ArtifactStore(ArtifactStoreTests):
    large_payloads = False  # ~300 requests each; the chunking itself is medium-independent

    @pytest.fixture
    def backend(self, s3_bucket: S3Bucket) -> Backend:
        url, storage_options = s3_bucket
        return s3_backend(url, storage_options)


def test_schema_version_ending_in_a_dot_is_refused() -> None:
    """It would build the key 'schemas/finding/1..json'; the id rule refuses it first."""
    with pytest.raises(InvalidIdError, match=r"invalid schema version '1\.'"):
        SchemaRef("finding", "1.")
