"""Step memoization: a step whose plugin, properties and inputs are unchanged need not run.

A step's *key* is the BLAKE3 of the canonical JSON of its plugin type and
version, its properties and its input digests (in order). After a step
completes, a small record under ``cache/ab/cdef…`` maps the key to the output
digest and the run that produced it. A hit is only taken when the output object
is present and re-hashes to its name; a damaged record is treated as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cas.digest import Digest, canonical_json, seal, unseal
from cas.errors import CasError, NotFoundError
from cas.repository import Repository

CACHE = "cache"


@dataclass(frozen=True)
class StepKey:
    """What decides a step's output, and the digest naming that."""

    plugin: str
    version: str
    properties: dict[str, Any]
    inputs: tuple[str, ...]

    @property
    def digest(self) -> Digest:
        return Digest.of(canonical_json(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "version": self.version,
            "properties": self.properties,
            "inputs": list(self.inputs),
        }


@dataclass(frozen=True)
class CacheRecord:
    """A completed step: its key's parts, output digest and the run that made it."""

    key: StepKey
    output: Digest
    run_id: str
    artifact_id: str


class StepCache:
    """Cache records in the repository's backend."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    @staticmethod
    def _key(key: StepKey) -> str:
        return f"{CACHE}/{key.digest.path}"

    def lookup(self, key: StepKey) -> CacheRecord | None:
        """The record for `key` if its output object is present and verifies."""
        record = self.record(key)
        if record is None:
            return None
        try:
            self.repo.payloads.get(record.output)
        except CasError:
            return None
        return record

    def record(self, key: StepKey) -> CacheRecord | None:
        """The stored record for `key` (unverified), or None."""
        location = self._key(key)
        try:
            data = unseal(self.repo.backend.read(location), location)
        except (NotFoundError, CasError):
            return None
        return CacheRecord(key, Digest.parse(data["output"]), data["run_id"], data["artifact_id"])

    def store(self, key: StepKey, output: Digest, run_id: str, artifact_id: str) -> None:
        """Remember that `key` produced `output` (written after the output's entry)."""
        record = {
            **key.to_dict(),
            "output": output.hex,
            "run_id": run_id,
            "artifact_id": artifact_id,
        }
        self.repo.backend.write(self._key(key), seal(record))
