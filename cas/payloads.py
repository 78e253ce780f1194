"""Payloads: whole objects when small, content-defined chunks when large.

A payload (the canonical JSON of ``{schema, content}``) is always named by the
BLAKE3 of its whole bytes. Under `PayloadStore.threshold` it is one object in
``objects/`` (a zstd frame of the payload). Above it, it is cut at JSON element
boundaries (so one changed element changes one or two chunks, not the rest);
the chunks go to ``chunks/`` zstd-compressed, each named by the BLAKE3 of its
uncompressed bytes, and then a chunk list goes to ``lists/`` under the payload's
digest. A read fetches the chunks, checks each and then the whole.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from dataclasses import dataclass
from itertools import pairwise

import orjson

from cas.digest import Digest
from cas.errors import CasError, IntegrityError, NotFoundError
from cas.objects import Backend, compress, decompress, refresh
from cas.objectstore import ObjectStore

CHUNKS = "chunks"
LISTS = "lists"


@dataclass(frozen=True)
class Chunker:
    """Content-defined cuts at JSON element boundaries (``},{`` and ``],[``)."""

    # Measured on the scan benchmark's corpus (2,000 files, 2% edited per run): cutting
    # at every element boundary past 2 KiB stores the least per run. Coarser chunks
    # (mask 0x1: every other boundary) rewrite more unchanged neighbours (2.1x the
    # bytes); finer ones make the chunk list, rewritten whole, the larger cost.
    min_size: int = 2 * 1024
    max_size: int = 64 * 1024
    window: int = 48
    mask: int = 0x0  # of the candidates past min_size, cut where crc32(window) & mask == 0

    _boundary = re.compile(rb"\},\{|\],\[")

    def cut(self, data: bytes) -> list[bytes]:
        """`data` in chunks whose boundaries depend only on nearby bytes."""
        cuts: list[int] = []
        start = 0
        for match in self._boundary.finditer(data):
            position = match.start() + 1
            length = position - start
            if length < self.min_size:
                continue
            if length >= self.max_size or self._chosen(data, position):
                cuts += self._fixed(start, position)
                start = position
        cuts += self._fixed(start, len(data))
        edges = [0, *cuts]
        return [data[a:b] for a, b in pairwise(edges) if b > a]

    def _chosen(self, data: bytes, position: int) -> bool:
        return zlib.crc32(data[position - self.window : position]) & self.mask == 0

    def _fixed(self, start: int, end: int) -> list[int]:
        """Cut points for the stretch ending at `end`, split at max_size if it has no boundary."""
        return [*range(start + self.max_size, end, self.max_size), end]


class PayloadStore:
    """Stores and verifies payloads, chunking the large ones."""

    threshold = 256 * 1024

    def __init__(self, backend: Backend, chunker: Chunker | None = None) -> None:
        self.backend = backend
        self.objects = ObjectStore(backend, compressed=True)
        self.chunks = ObjectStore(backend, CHUNKS, compressed=True)
        # Lists are named by the payload they rebuild, not by their own bytes.
        self.lists = ObjectStore(backend, LISTS, compressed=True)
        self.list_bytes = 0
        self.chunker = chunker or Chunker()
        self._corrupt: set[Digest] = set()  # chunked payloads a read found damaged

    @property
    def written_objects(self) -> int:
        """Objects and chunks this process wrote (lists not counted)."""
        return self.objects.written_objects + self.chunks.written_objects

    @property
    def written_bytes(self) -> int:
        """Stored bytes this process wrote for objects, chunks and chunk lists."""
        return self.objects.written_bytes + self.chunks.written_bytes + self.list_bytes

    def put(
        self, payload: bytes, digest: Digest | None = None, *, verify_existing: bool = False
    ) -> Digest:
        """Store `payload` (chunks first, then their list); a stored digest is a no-op.

        With `verify_existing` a stored copy is read back first, so a damaged one is
        rewritten rather than trusted.
        """
        digest = digest or Digest.of(payload)
        if verify_existing:
            with contextlib.suppress(CasError):
                self.get(digest, len(payload))  # marks what it finds damaged for rewriting
        if len(payload) < self.threshold:
            self.objects.put(payload, digest)
            return digest
        if digest not in self._corrupt and refresh(self.backend, self.lists.key(digest)):
            return digest
        pieces = self.chunker.cut(payload)
        named = [(Digest.of(piece), piece) for piece in pieces]
        absent = self.chunks.missing(d for d, _ in named) | self.chunks.damaged(d for d, _ in named)
        for chunk_digest, piece in named:
            if chunk_digest in absent:
                self.chunks.put(piece, chunk_digest)
                absent.discard(chunk_digest)
        record = {"size": len(payload), "chunks": [[d.hex, len(p)] for d, p in named]}
        stored = compress(orjson.dumps(record))
        self.backend.write(self.lists.key(digest), stored)
        self.list_bytes += len(stored)
        self._corrupt.discard(digest)
        return digest

    def get(self, digest: Digest, size: int | None = None) -> bytes:
        """The verified payload; `NotFoundError` or `IntegrityError` (naming the chunk) if not."""
        if size is None or size < self.threshold:
            try:
                return self.objects.get(digest)
            except NotFoundError:
                if size is not None:
                    raise
        chunks = self.chunk_list(digest)
        try:
            data = b"".join(self.chunks.get(chunk) for chunk in chunks)
        except (IntegrityError, NotFoundError):
            self._corrupt.add(digest)  # the next put of this payload restores its chunks
            raise
        if Digest.of(data) != digest:
            self._corrupt.add(digest)
            raise IntegrityError(
                f"payload {digest.hex} is corrupt: its chunks join to {Digest.of(data).hex}",
                digest=digest.hex,
                location=self.lists.key(digest),
            )
        return data

    def chunk_list(self, digest: Digest) -> list[Digest]:
        """The chunks of a chunked payload, in order."""
        return [chunk for chunk, _ in self.chunk_sizes(digest)]

    def chunk_sizes(self, digest: Digest) -> list[tuple[Digest, int]]:
        """The chunks of a chunked payload with their uncompressed sizes, in order."""
        key = self.lists.key(digest)
        try:
            data = self.backend.read(key)
        except NotFoundError:
            raise NotFoundError(f"object {digest.hex} is missing") from None
        try:
            record = orjson.loads(decompress(data, digest, key))
            return [(Digest.parse(hex_), int(size)) for hex_, size in record["chunks"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise IntegrityError(
                f"chunk list of {digest.hex} is damaged", digest=digest.hex, location=key
            ) from None

    def is_chunked(self, digest: Digest) -> bool:
        """Whether `digest` is stored as chunks."""
        return self.backend.exists(self.lists.key(digest))

    def exists(self, digest: Digest) -> bool:
        """Whether a payload is stored, whole or chunked."""
        return self.backend.exists(self.objects.key(digest)) or self.is_chunked(digest)

    def matching(self, prefix: str) -> list[Digest]:
        """Stored payload digests (whole or chunked) starting with `prefix`."""
        return sorted({*self.objects.matching(prefix), *self.lists.matching(prefix)})
