"""Copy payloads between repositories (`cas.sync`'s first phase).

Each payload is read from the source with re-hashing (I5) and written to the
destination as stored: a whole object under its key, a chunked payload as its
missing chunks (each written by one thread, awaited by the others), then its
list (I16). A pool of threads reads ahead while at most `workers` writes are in
flight (``--jobs``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial

import orjson

from cas.digest import Digest
from cas.errors import CasError
from cas.objects import compress
from cas.repository import Repository

Progress = Callable[[str, int, int, int], None]
"""Called with (phase, done, to do, payload bytes written) as a transfer goes; the
phases, in order: ``"payloads"`` copied (here), then runs whose ``"entries"`` are
written, then runs whose ``"results"`` are written (`cas.sync`)."""


def copy_payloads(
    source: Repository,
    dest: Repository,
    sizes: dict[Digest, int],
    *,
    workers: int,
    progress: Progress | None = None,
) -> tuple[int, int, int]:
    """Copy the payloads of `sizes` (digest → size) that `dest` lacks; returns
    ``(payloads already there, objects and chunks written, stored bytes written)``.

    The missing ones are found with batched `ObjectStore.missing` calls (a check
    each for a few, else one listing); at most `workers` writes are in flight.
    """
    threshold = dest.payloads.threshold
    whole = [d for d, size in sizes.items() if size < threshold]
    chunked = [d for d, size in sizes.items() if size >= threshold]
    missing_whole = dest.payloads.objects.missing(whole)
    missing_chunked = dest.payloads.lists.missing(chunked)
    present = len(sizes) - len(missing_whole) - len(missing_chunked)
    # One batched `missing` over the chunks of every list to copy, not a check per chunk.
    layouts = {d: source.payloads.chunk_sizes(d) for d in sorted(missing_chunked)}
    missing_chunks = dest.payloads.chunks.missing(c for cs in layouts.values() for c, _ in cs)
    copier = _Copier(
        source,
        dest,
        sizes=sizes,
        layouts=layouts,
        missing_chunks=missing_chunks,
        progress=progress,
        uploads=workers,
    )
    copier.total = len(missing_whole) + len(missing_chunked)
    if progress is not None:
        progress("payloads", 0, copier.total, 0)
    calls = [partial(copier.copy_whole, d) for d in sorted(missing_whole)]
    calls += [partial(copier.copy_chunked, d) for d in sorted(missing_chunked)]
    run_all(calls, workers + _read_ahead(workers))
    return present, copier.objects, copier.stored


def _read_ahead(workers: int) -> int:
    """Threads beyond `workers` for the payload copies: while `workers` writes are in
    flight (the bound `--jobs` sets), these read and re-hash the next payloads, so a
    write slot never waits on a read."""
    return max(2, workers // 2)


def run_all(calls: Sequence[Callable[[], object]], workers: int) -> None:
    """Run `calls` in a pool of `workers` threads; on the first error cancel the rest
    (calls already running finish) and raise it."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(call) for call in calls]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in finished:
            error = future.exception()
            if error is not None:
                for other in futures:
                    other.cancel()
                raise error


class _Copier:
    """The copy of one payload, run in the pool; counts what it writes."""

    def __init__(
        self,
        source: Repository,
        dest: Repository,
        *,
        sizes: dict[Digest, int],
        layouts: dict[Digest, list[tuple[Digest, int]]],
        missing_chunks: set[Digest],
        progress: Progress | None,
        uploads: int,
    ) -> None:
        self.source, self.dest = source, dest
        self.sizes, self.layouts, self.missing_chunks = sizes, layouts, missing_chunks
        self.progress = progress
        self.once = _Once()
        self.lock = threading.Lock()
        self.total = self.copied = self.objects = self.stored = 0
        self.uploads = threading.BoundedSemaphore(max(1, uploads))  # writes in flight

    def copy_whole(self, digest: Digest) -> None:
        source, dest = self.source.payloads.objects, self.dest.payloads.objects
        # re-hashed on the read; written as stored where both sides compress alike
        same = source.compressed == dest.compressed
        stored = source.stored(digest) if same else compress(source.get(digest))
        self._write(dest.key(digest), stored)
        self._finished(1, len(stored))

    def copy_chunked(self, digest: Digest) -> None:
        """The missing chunks (each written by one thread only), then the list (I16)."""
        payload = self.source.payloads.get(digest, self.sizes[digest])  # chunks, then whole
        layout = self.layouts[digest]
        pieces: list[tuple[Digest, bytes]] = []
        offset = 0
        for chunk, size in layout:
            pieces.append((chunk, payload[offset : offset + size]))
            offset += size
        written = stored = 0
        wanted = [(c, piece) for c, piece in pieces if c in self.missing_chunks]
        for chunk, piece in wanted:
            if self.once.claim(chunk):
                try:
                    data = compress(piece)
                    self._write(self.dest.payloads.chunks.key(chunk), data)
                except BaseException:
                    self.once.release(chunk, ok=False)
                    raise
                self.once.release(chunk, ok=True)
                written, stored = written + 1, stored + len(data)
        for chunk, _ in wanted:  # chunks another thread claimed must be durable first
            self.once.wait(chunk)
        record = {"size": len(payload), "chunks": [[c.hex, n] for c, n in layout]}
        listed = compress(orjson.dumps(record))
        self._write(self.dest.payloads.lists.key(digest), listed)
        self._finished(written, stored + len(listed))

    def _write(self, key: str, data: bytes) -> None:
        """One write to the destination, at most `uploads` of them at once."""
        with self.uploads:
            self.dest.backend.write(key, data)

    def _finished(self, objects: int, stored: int) -> None:
        with self.lock:
            self.copied += 1
            self.objects += objects
            self.stored += stored
            if self.progress is not None:
                self.progress("payloads", self.copied, self.total, self.stored)


class _Once:
    """Chunks shared by payloads copied in parallel: written by one thread, awaited by all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[Digest, threading.Event] = {}
        self._failed: set[Digest] = set()

    def claim(self, digest: Digest) -> bool:
        """True for the one caller that must write `digest`."""
        with self._lock:
            if digest in self._events:
                return False
            self._events[digest] = threading.Event()
            return True

    def release(self, digest: Digest, *, ok: bool) -> None:
        with self._lock:
            if not ok:
                self._failed.add(digest)
            self._events[digest].set()

    def wait(self, digest: Digest) -> None:
        """Return once `digest` is written; raise if its writer failed."""
        with self._lock:
            event = self._events[digest]
        event.wait()
        if digest in self._failed:
            raise CasError(f"chunk {digest.hex} was not written: its writer failed")
