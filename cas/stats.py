"""How much the repository holds, and how much deduplication and compression save."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cas.digest import Digest
from cas.errors import CasError
from cas.repository import Repository


@dataclass(frozen=True)
class RepoStats:
    """Counts and sizes, from what the runs hold down to what the disk keeps.

    logical: the payload bytes of every artifact of every run; unique: of each
    distinct payload once; chunked and chunk bytes: distinct chunked payloads and
    the distinct chunks they share; stored: objects, chunks and lists on disk
    (compressed).
    """

    runs: int
    artifacts: int
    payloads: int
    objects: int
    logical_bytes: int
    unique_bytes: int
    chunked_bytes: int
    chunk_bytes: int
    stored_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical over unique bytes: what storing each payload once saves."""
        return _ratio(self.logical_bytes, self.unique_bytes)

    @property
    def chunk_dedup_ratio(self) -> float:
        """Chunked payload bytes over the distinct chunks' bytes."""
        return _ratio(self.chunked_bytes, self.chunk_bytes)

    @property
    def total_ratio(self) -> float:
        """Logical over stored bytes: dedup, chunk sharing and compression together."""
        return _ratio(self.logical_bytes, self.stored_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "artifacts": self.artifacts,
            "payloads": self.payloads,
            "objects": self.objects,
            "logical_bytes": self.logical_bytes,
            "unique_bytes": self.unique_bytes,
            "chunked_bytes": self.chunked_bytes,
            "chunk_bytes": self.chunk_bytes,
            "stored_bytes": self.stored_bytes,
            "dedup_ratio": round(self.dedup_ratio, 3),
            "chunk_dedup_ratio": round(self.chunk_dedup_ratio, 3),
            "total_ratio": round(self.total_ratio, 3),
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def collect_stats(repo: Repository) -> RepoStats:
    """Read every manifest and chunk list, and size every stored file once."""
    runs = repo.run_ids()
    entries = [entry for run_id in runs for entry in repo.artifacts.entries(run_id).values()]
    sizes = {entry.digest: entry.size for entry in entries}
    payloads = repo.payloads
    chunks: dict[Digest, int] = {}
    chunked = 0
    for digest in payloads.lists:
        try:
            chunks.update(payloads.chunk_sizes(digest))
        except CasError:
            continue  # `cas verify` reports damaged lists
        chunked += sizes.get(digest, 0)
    stores = (payloads.objects, payloads.chunks, payloads.lists)
    stored = [(store, digest) for store in stores for digest in store]
    return RepoStats(
        runs=len(runs),
        artifacts=len(entries),
        payloads=len(sizes),
        objects=sum(1 for store, _ in stored if store is not payloads.lists),
        logical_bytes=sum(entry.size for entry in entries),
        unique_bytes=sum(sizes.values()),
        chunked_bytes=chunked,
        chunk_bytes=sum(chunks.values()),
        stored_bytes=sum(store.size(digest) for store, digest in stored),
    )
