"""The content-addressed object store: bytes named by their BLAKE3 digest.

`ObjectStore` keeps ``{prefix}/ab/cdef…`` (``objects/``, and for `cas.payloads` also
``chunks/`` and ``lists/``) on any `cas.objects.Backend`: a write is skipped when the
object exists, every read re-hashes, and "which of these are missing?" is answered
in batches (a check each for a few, else one listing).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator

from cas.digest import Digest, is_digest_prefix
from cas.errors import IntegrityError, NotFoundError
from cas.objects import Backend, LocalBackend, compress, decompress, refresh

OBJECTS = "objects"


class ObjectStore:
    """Write-once objects named by the BLAKE3 of their bytes; every read re-hashes.

    With ``compressed=True`` the stored bytes are a zstd frame of the named bytes
    (the digest is always of the uncompressed bytes, so identical content is one
    object however it is stored).
    """

    def __init__(
        self, backend: Backend, prefix: str = OBJECTS, *, compressed: bool = False
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.compressed = compressed
        self.written_objects = 0
        self.written_bytes = 0
        self._count_lock = threading.Lock()
        self._corrupt: set[Digest] = set()  # found damaged by a read: the next put rewrites

    def key(self, digest: Digest) -> str:
        """Where `digest` lives in the backend."""
        return f"{self.prefix}/{digest.path}"

    def put(self, data: bytes, digest: Digest | None = None) -> tuple[Digest, bool]:
        """Store `data`; return its digest and whether bytes were written (False if present)."""
        digest = digest or Digest.of(data)
        key = self.key(digest)
        if digest not in self._corrupt and refresh(self.backend, key):
            return digest, False  # a dedup hit (renewed for GC on a local folder)
        stored = compress(data) if self.compressed else data
        self.backend.write(key, stored)
        with self._count_lock:
            self.written_objects += 1
            self.written_bytes += len(stored)
            self._corrupt.discard(digest)
        return digest, True

    def get(self, digest: Digest) -> bytes:
        """The verified bytes of `digest`; `NotFoundError` or `IntegrityError` otherwise."""
        return self._read(digest)[1]

    def stored(self, digest: Digest) -> bytes:
        """The bytes of `digest` as stored (compressed), verified like `get` (a copy
        to another store writes them as they are, without compressing again)."""
        return self._read(digest)[0]

    def _read(self, digest: Digest) -> tuple[bytes, bytes]:
        key = self.key(digest)
        try:
            data = self.backend.read(key)
        except NotFoundError:
            raise NotFoundError(f"object {digest.hex} is missing ({key})") from None
        try:
            return data, self._verified(data, digest, key)
        except IntegrityError:
            with self._count_lock:
                self._corrupt.add(digest)
            raise

    def _verified(self, data: bytes, digest: Digest, key: str) -> bytes:
        if self.compressed:
            data = decompress(data, digest, key)
        found = Digest.of(data)
        if found != digest:
            raise IntegrityError(
                f"object {digest.hex} is corrupt: its bytes hash to {found.hex}",
                digest=digest.hex,
                location=key,
            )
        return data

    def damaged(self, digests: Iterable[Digest]) -> set[Digest]:
        """Which of `digests` a read in this process found corrupt (a put rewrites them)."""
        return self._corrupt.intersection(digests)

    def size(self, digest: Digest) -> int:
        """Stored size of an object."""
        return self.backend.size(self.key(digest))

    check_limit = 4  # up to this many wanted digests, a check each beats a listing
    check_workers = 8  # concurrent existence checks

    def missing(self, digests: Iterable[Digest]) -> set[Digest]:
        """Which of `digests` are absent: a check each for a few, else one listing.

        Locally a stat each (cheaper than any listing). Elsewhere the listing of the
        whole store walks keys in digest order, and stops once the pages it has yet
        to read (estimated from how far into the digest space it got: digests are
        uniform) would cost more requests than checking the wanted digests still
        ahead one by one. So a large set against a small store costs a page per
        1,000 stored objects, and a small set against a large one a page plus a
        check each, never one listing per shard.
        """
        wanted = set(digests)
        if isinstance(self.backend, LocalBackend):
            return {d for d in wanted if not refresh(self.backend, self.key(d))}
        if len(wanted) <= self.check_limit:
            return self._absent(wanted)
        return self._missing_by_listing(wanted)

    def _absent(self, digests: Iterable[Digest]) -> set[Digest]:
        """The digests of `digests` not stored, one existence check each (concurrent)."""
        from concurrent.futures import ThreadPoolExecutor

        ordered = builtins.list(digests)
        if len(ordered) <= 1:
            return {d for d in ordered if not self.backend.exists(self.key(d))}
        with ThreadPoolExecutor(min(self.check_workers, len(ordered))) as pool:
            there = pool.map(lambda d: self.backend.exists(self.key(d)), ordered)
            return {d for d, present in zip(ordered, there, strict=True) if not present}

    def _missing_by_listing(self, wanted: set[Digest]) -> set[Digest]:
        page = int(getattr(self.backend, "listing_page", 0))  # keys per listing request
        ahead = sorted(wanted, key=lambda d: d.hex)
        found: set[Digest] = set()
        seen = 0
        for key in self.backend.list(self.prefix):  # in key order, so in digest order
            digest = _digest_of(key)
            if digest is None:
                continue
            seen += 1
            if digest in wanted:
                found.add(digest)
            if page and seen % page == 0:
                rest = [d for d in ahead if d.hex > digest.hex]
                if len(rest) < _pages_left(seen, digest, page):
                    return (wanted.difference(rest) - found) | self._absent(rest)
        return wanted - found

    def _in_shard(self, shard: str) -> Iterator[Digest]:
        for name in self.backend.children(f"{self.prefix}/{shard}"):
            if is_digest_prefix(shard + name) and len(name) == 62:
                yield Digest(shard + name)

    def __iter__(self) -> Iterator[Digest]:
        """Every stored digest (temporaries skipped), from one listing of the store."""
        for key in self.backend.list(self.prefix):
            digest = _digest_of(key)
            if digest is not None:
                yield digest

    def matching(self, prefix: str) -> list[Digest]:
        """Stored digests starting with `prefix` (at least two hex characters)."""
        return sorted(d for d in self._in_shard(prefix[:2]) if d.hex.startswith(prefix))

    def delete(self, digests: Iterable[Digest]) -> None:
        """Remove objects (garbage collection only)."""
        self.backend.delete(self.key(d) for d in digests)


def _digest_of(key: str) -> Digest | None:
    """The digest an ``{prefix}/ab/cdef…`` key names; None for anything else."""
    shard, _, name = key.rpartition("/")
    shard = shard.rpartition("/")[2]
    if len(shard) == 2 and len(name) == 62 and is_digest_prefix(shard + name):
        return Digest(shard + name)
    return None


def _pages_left(seen: int, last: Digest, page: int) -> float:
    """Listing requests still to come, had `seen` keys brought the walk up to `last`."""
    covered = (int(last.hex[:12], 16) + 1) / 16**12
    return seen * (1 - covered) / covered / page
