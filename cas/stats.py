"""How much the repository holds, and how much deduplication saves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cas.repository import Repository


@dataclass(frozen=True)
class RepoStats:
    """Counts and sizes: logical bytes are what the runs hold, stored bytes what disk keeps."""

    runs: int
    artifacts: int
    objects: int
    logical_bytes: int
    stored_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical over stored bytes (1.0 for an empty repository)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "artifacts": self.artifacts,
            "objects": self.objects,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "dedup_ratio": round(self.dedup_ratio, 3),
        }


def collect_stats(repo: Repository) -> RepoStats:
    """Read every manifest and size every stored object, chunk and chunk list once."""
    runs = repo.run_ids()
    entries = [entry for run_id in runs for entry in repo.artifacts.entries(run_id).values()]
    payloads = repo.payloads
    stores = (payloads.objects, payloads.chunks, payloads.lists)
    stored = [(store, digest) for store in stores for digest in store]
    return RepoStats(
        runs=len(runs),
        artifacts=len(entries),
        objects=sum(1 for store, _ in stored if store is not payloads.lists),
        logical_bytes=sum(entry.size for entry in entries),
        stored_bytes=sum(store.size(digest) for store, digest in stored),
    )
