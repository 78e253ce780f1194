"""Step memoization: a step whose plugin, properties and inputs are unchanged need not run.

A step's *key* is the BLAKE3 of the canonical JSON of its plugin type and
version, its properties and its input digests (in order). After a step
completes, a small record under ``cache/steps/ab/cdef…`` maps the key to the
output digest and the run that produced it. A hit is only taken when the output
object is present and re-hashes to its name; a damaged record is treated as a miss.

For item processors a second record, under ``cache/items/`` and keyed by the
plugin, version and properties alone (the step's *family*), names the newest
output and its inputs, so the next run can take the results of unchanged items
from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cas.digest import Digest, canonical_json, seal, unseal
from cas.errors import CasError
from cas.repository import Repository

STEPS = "cache/steps"
ITEMS = "cache/items"


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

    @property
    def family(self) -> Digest:
        """The key without its inputs: what item-level reuse looks up."""
        return Digest.of(canonical_json({**self.to_dict(), "inputs": None}))

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
        return f"{STEPS}/{key.digest.path}"

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
        except CasError:
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

    def parts(self, step_key: Digest) -> dict[str, Any] | None:
        """The stored record (key parts, output, run) for a step key digest, or None."""
        location = f"{STEPS}/{step_key.path}"
        try:
            return unseal(self.repo.backend.read(location), location)
        except CasError:
            return None

    def store_latest(self, key: StepKey, output: Digest) -> None:
        """Remember `output` as the newest of the step's family (item processors only)."""
        record = {**key.to_dict(), "output": output.hex}
        self.repo.backend.write(f"{ITEMS}/{key.family.path}", seal(record))

    def latest(self, key: StepKey) -> tuple[Digest, list[Digest]] | None:
        """The newest output of the step's family and the inputs it came from, or None."""
        location = f"{ITEMS}/{key.family.path}"
        try:
            record = unseal(self.repo.backend.read(location), location)
            return Digest.parse(record["output"]), [Digest.parse(d) for d in record["inputs"]]
        except (CasError, KeyError, TypeError):
            return None
