"""Reusable contract suites for `Backend`, `ObjectStore`, `ArtifactStore` and `ExecutionStore`.

Modelled on zarr-python's ``StoreTests``: each suite is a plain class whose tests
use only the interface under test; a backend's test file subclasses it and only
overrides the ``backend`` fixture (how to build the medium). Raw bytes are read and
written *around* the store (`raw_get`, `raw_set`, `raw_snapshot` in
`cas.testing.store_helpers`, re-exported here) so tampering and "nothing was
written" checks never trust the code being tested. Backend-specific tests belong
in the subclass. The repository-level suites live in `cas.testing.repository_tests`
and are re-exported here too.

    class TestMemoryBackend(BackendTests):
        @pytest.fixture
        def backend(self) -> Iterator[Backend]:
            with memory_backend() as backend:
                yield backend
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from cas.digest import Digest
from cas.errors import IntegrityError, InvalidInputError, NotFoundError
from cas.objects import Backend, decompress
from cas.objectstore import ObjectStore
from cas.testing.repository_tests import ArtifactStoreTests, ExecutionStoreTests
from cas.testing.store_helpers import (
    HOSTILE_IDS,
    HOSTILE_KEYS,
    ContractTests,
    RecordingBackend,
    flip_byte,
    key_listing,
    make_repository,
    memory_backend,
    raw_get,
    raw_set,
    raw_snapshot,
    reopen,
    s3_backend,
    sample_message,
    sample_result,
)

__all__ = [
    "HOSTILE_IDS",
    "HOSTILE_KEYS",
    "ArtifactStoreTests",
    "BackendTests",
    "ContractTests",
    "ExecutionStoreTests",
    "ObjectStoreTests",
    "RecordingBackend",
    "flip_byte",
    "key_listing",
    "make_repository",
    "memory_backend",
    "raw_get",
    "raw_set",
    "raw_snapshot",
    "reopen",
    "s3_backend",
    "sample_message",
    "sample_result",
]


# --------------------------------------------------------------------------- Backend


class BackendTests(ContractTests):
    """The `Backend` contract. Override the ``backend`` fixture."""

    def test_write_then_raw_bytes(self, backend: Backend) -> None:
        backend.write("a/b/c", b"hello\x00\xff")
        assert raw_get(backend, "a/b/c") == b"hello\x00\xff"

    def test_read_raw_bytes(self, backend: Backend) -> None:
        raw_set(backend, "x/y", b"raw")
        assert backend.read("x/y") == b"raw"

    @pytest.mark.parametrize("data", [b"", b"1", bytes(range(256)) * 64])
    def test_round_trip(self, backend: Backend, data: bytes) -> None:
        backend.write("k", data)
        assert backend.read("k") == data

    def test_overwrite_replaces(self, backend: Backend) -> None:
        backend.write("k", b"a long first value")
        backend.write("k", b"short")
        assert backend.read("k") == b"short"

    def test_create_writes_only_where_nothing_is(self, backend: Backend) -> None:
        assert backend.create("locks/one", b"first")
        assert not backend.create("locks/one", b"second")
        assert backend.read("locks/one") == b"first"
        backend.delete(["locks/one"])
        assert backend.create("locks/one", b"third")
        assert backend.read("locks/one") == b"third"

    def test_one_of_many_concurrent_creates_wins(self, backend: Backend) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            won = list(pool.map(lambda n: backend.create("lock", str(n).encode()), range(16)))
        assert won.count(True) == 1
        assert backend.read("lock") == str(won.index(True)).encode()

    def test_read_missing_is_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFoundError, match="nope") as caught:
            backend.read("nope/at/all")
        assert isinstance(caught.value, KeyError)

    def test_read_folder_is_not_found(self, backend: Backend) -> None:
        backend.write("folder/file", b"1")
        with pytest.raises(NotFoundError):
            backend.read("folder")

    def test_exists(self, backend: Backend) -> None:
        assert not backend.exists("a/b")
        backend.write("a/b", b"1")
        assert backend.exists("a/b")
        assert not backend.exists("a")  # a folder holds no bytes

    def test_size(self, backend: Backend) -> None:
        backend.write("a/b", b"12345")
        assert backend.size("a/b") == 5
        with pytest.raises(NotFoundError):
            backend.size("a/c")

    def test_size_of_folder_is_not_found(self, backend: Backend) -> None:
        backend.write("a/b", b"12345")
        with pytest.raises(NotFoundError):
            backend.size("a")

    def test_list_is_recursive_and_relative(self, backend: Backend) -> None:
        for key in ("a/x", "a/b/y", "a/b/c/z", "ab/w", "other/v"):
            backend.write(key, b"1")
        assert sorted(backend.list("a")) == ["a/b/c/z", "a/b/y", "a/x"]
        assert sorted(backend.list("a/b")) == ["a/b/c/z", "a/b/y"]

    def test_list_and_children_of_the_root(self, backend: Backend) -> None:
        for key in ("a/x", "a/b/y", "top"):
            backend.write(key, b"1")
        assert sorted(backend.list("")) == ["a/b/y", "a/x", "top"]
        assert sorted(backend.children("")) == ["a", "top"]

    def test_list_missing_prefix_is_empty(self, backend: Backend) -> None:
        assert list(backend.list("nothing/here")) == []

    def test_children(self, backend: Backend) -> None:
        for key in ("a/x", "a/b/y", "a/b/c/z", "ab/w"):
            backend.write(key, b"1")
        assert sorted(backend.children("a")) == ["b", "x"]
        assert sorted(backend.children("a/b")) == ["c", "y"]
        assert backend.children("missing") == []

    def test_delete(self, backend: Backend) -> None:
        backend.write("a/x", b"1")
        backend.write("a/y", b"2")
        backend.delete(["a/x"])
        assert not backend.exists("a/x")
        assert backend.read("a/y") == b"2"

    def test_delete_absent_is_ignored(self, backend: Backend) -> None:
        backend.delete([])
        backend.delete(["never/written"])

    def test_delete_mixed_present_and_absent(self, backend: Backend) -> None:
        backend.write("a", b"1")
        backend.write("m", b"2")
        backend.delete(["a", "b-absent", "m", "zz-absent"])
        assert not backend.exists("a")
        assert not backend.exists("m")

    def test_append(self, backend: Backend) -> None:
        if not backend.supports_append:
            with pytest.raises(NotImplementedError):
                backend.append("log/lines", b"one\n")
            assert not backend.exists("log/lines")
            return
        backend.append("log/lines", b"one\n")
        backend.append("log/lines", b"two\n")
        backend.sync("log/lines")
        assert backend.read("log/lines") == b"one\ntwo\n"

    def test_append_after_reopen(self, backend: Backend) -> None:
        if not backend.supports_append:
            pytest.skip("no append on this medium")
        backend.append("log/lines", b"one\n")
        reopen(backend).append("log/lines", b"two\n")
        assert backend.read("log/lines") == b"one\ntwo\n"

    def test_sync_of_missing_key_is_harmless(self, backend: Backend) -> None:
        backend.sync("never/written")

    def test_hostile_keys_refused_and_nothing_written(self, backend: Backend) -> None:
        backend.write("inside", b"1")  # make sure the root exists
        before = raw_snapshot(backend)
        for key in HOSTILE_KEYS:
            self._refuse_everywhere(backend, key)
        assert raw_snapshot(backend) == before

    @staticmethod
    def _refuse_everywhere(backend: Backend, key: str) -> None:
        calls: list[Callable[[], object]] = [
            lambda: backend.write(key, b"evil"),
            lambda: backend.read(key),
            lambda: backend.exists(key),
            lambda: backend.size(key),
            lambda: backend.delete([key]),
        ]
        if key:  # "" names the root folder, a valid prefix
            calls += [lambda: list(backend.list(key)), lambda: backend.children(key)]
        if backend.supports_append:  # elsewhere sync is a no-op and append always refuses
            calls += [lambda: backend.append(key, b"evil\n"), lambda: backend.sync(key)]
        for number, call in enumerate(calls):
            with pytest.raises(InvalidInputError):
                call()
                pytest.fail(f"call #{number} accepted key {key!r}")


# --------------------------------------------------------------------------- ObjectStore


class ObjectStoreTests(ContractTests):
    """The `ObjectStore` contract on some backend. Override the ``backend`` fixture."""

    @pytest.fixture
    def recorder(self, backend: Backend) -> RecordingBackend:
        return RecordingBackend(backend)

    # Where the store keeps its objects and whether it zstd-compresses them.
    prefix: ClassVar[str] = "objects"
    compressed: ClassVar[bool] = False

    @pytest.fixture
    def objects(self, recorder: RecordingBackend) -> ObjectStore:
        return ObjectStore(recorder, self.prefix, compressed=self.compressed)

    def test_put_returns_digest_and_true(self, objects: ObjectStore) -> None:
        digest, written = objects.put(b"payload")
        assert digest == Digest.of(b"payload")
        assert written is True
        assert objects.get(digest) == b"payload"

    def test_put_is_stored_under_sharded_key(self, objects: ObjectStore, backend: Backend) -> None:
        digest, _ = objects.put(b"payload")
        key = f"{self.prefix}/{digest.hex[:2]}/{digest.hex[2:]}"
        assert objects.key(digest) == key
        stored = raw_get(backend, key)
        assert (decompress(stored, digest, key) if self.compressed else stored) == b"payload"

    def test_second_put_writes_nothing(
        self, objects: ObjectStore, recorder: RecordingBackend
    ) -> None:
        first = objects.put(b"same")
        recorder.calls.clear()
        assert objects.put(b"same") == (first[0], False)
        assert recorder.count("write", "append") == 0

    def test_flipped_byte_is_integrity_error(self, objects: ObjectStore, backend: Backend) -> None:
        digest, _ = objects.put(b"precious bytes")
        key = objects.key(digest)
        raw_set(backend, key, flip_byte(raw_get(backend, key)))
        with pytest.raises(IntegrityError, match=digest.hex) as caught:
            objects.get(digest)
        assert caught.value.digest == digest.hex
        assert caught.value.location == key

    def test_truncated_object_is_integrity_error(
        self, objects: ObjectStore, backend: Backend
    ) -> None:
        digest, _ = objects.put(b"precious bytes")
        key = objects.key(digest)
        raw_set(backend, key, raw_get(backend, key)[:-3])
        with pytest.raises(IntegrityError, match=digest.hex):
            objects.get(digest)

    def test_missing_object_is_not_found(self, objects: ObjectStore) -> None:
        digest = Digest.of(b"never stored")
        with pytest.raises(NotFoundError, match=digest.hex) as caught:
            objects.get(digest)
        assert isinstance(caught.value, KeyError)

    def test_size_is_the_stored_size(self, objects: ObjectStore, backend: Backend) -> None:
        digest, _ = objects.put(b"12345")
        assert objects.size(digest) == len(raw_get(backend, objects.key(digest)))
        if not self.compressed:
            assert objects.size(digest) == 5

    def test_missing_small_batch(self, objects: ObjectStore) -> None:
        present = [objects.put(f"p{i}".encode())[0] for i in range(3)]
        absent = {Digest.of(f"a{i}".encode()) for i in range(2)}
        assert objects.missing([*present, *absent]) == absent
        assert objects.missing([]) == set()
        assert objects.missing(present) == set()

    def test_missing_large_batch_uses_listing(self, objects: ObjectStore) -> None:
        present = [objects.put(f"p{i}".encode())[0] for i in range(20)]
        absent = {Digest.of(f"a{i}".encode()) for i in range(50)}
        assert len(absent | set(present)) > 64  # above ObjectStore's listing threshold
        assert objects.missing([*present, *absent]) == absent
        assert objects.missing(iter(absent)) == absent

    def test_missing_ignores_temporaries(self, objects: ObjectStore, backend: Backend) -> None:
        wanted = {Digest.of(f"t{i}".encode()) for i in range(70)}
        for digest in list(wanted)[:5]:
            raw_set(backend, f"{self.prefix}/{digest.hex[:2]}/.{digest.hex[2:]}.abc1.tmp", b"x")
        assert objects.missing(wanted) == wanted

    def test_iteration_lists_every_digest(self, objects: ObjectStore, backend: Backend) -> None:
        assert list(objects) == []
        stored = {objects.put(f"o{i}".encode())[0] for i in range(20)}
        raw_set(backend, f"{self.prefix}/ab/.cdef.0123.tmp", b"temporary")
        assert set(objects) == stored
        assert len(list(objects)) == len(stored)

    def test_delete(self, objects: ObjectStore) -> None:
        keep, _ = objects.put(b"keep")
        drop, _ = objects.put(b"drop")
        objects.delete([drop, Digest.of(b"absent")])
        with pytest.raises(NotFoundError):
            objects.get(drop)
        assert objects.get(keep) == b"keep"
        assert set(objects) == {keep}
