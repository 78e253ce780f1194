"""The two store interfaces, and their implementation on any `Backend`.

`ArtifactStore` keeps each run's manifest: artifact id → payload digest plus the
envelope. A save writes the payload object first (skipped when it exists), then
one manifest record: one appended line on a medium that appends (a local folder),
else one small segment object (S3, memory). Either way a save costs O(1) writes
however many artifacts the run has. The last record for an artifact wins.

`ExecutionStore` keeps ``runs/{run_id}/execution_result.json``; before writing
it the run's manifest is made durable, so a result never describes entries that
a crash could lose.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import orjson

from cas.digest import Digest, seal, unseal
from cas.errors import InvalidInputError, NotFoundError
from cas.ids import check_artifact_id, check_run_id, is_valid_id
from cas.model import ArtifactEntry, ExecutionResult, Message
from cas.objects import Backend, is_temp_name
from cas.payloads import PayloadStore
from cas.schemas import SchemaRegistry

RUNS = "runs"
MANIFEST = "manifest.jsonl"
SEGMENTS = "manifest.d"
RESULT = "execution_result.json"


@runtime_checkable
class ArtifactStore(Protocol):
    """Artifacts of runs, by run id and artifact id."""

    def save(self, run_id: str, artifact_id: str, message: Message) -> None:
        """Store `message` as `artifact_id` of `run_id` (payload first, then the entry)."""

    def get(self, run_id: str, artifact_id: str) -> Message:
        """The stored message, verified; `NotFoundError` if absent."""

    def list_artifacts(self, run_id: str) -> list[str]:
        """Artifact ids of `run_id`, sorted; empty if the run has none."""


@runtime_checkable
class ExecutionStore(Protocol):
    """One execution result per run."""

    def save(self, run_id: str, result: ExecutionResult) -> None:
        """Store (or replace) the result of `run_id`."""

    def get(self, run_id: str) -> ExecutionResult:
        """The stored result; `NotFoundError` if absent."""

    def list_runs(self) -> list[str]:
        """Ids of every run with a stored result, sorted."""


def run_key(run_id: str, name: str) -> str:
    """A file of a run's folder."""
    return f"{RUNS}/{check_run_id(run_id)}/{name}"


class _Clock:
    """Strictly increasing nanosecond stamps, so segment names sort in save order."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


class BackendArtifactStore:
    """`ArtifactStore` over a backend: payloads in a `PayloadStore`, manifests per run."""

    def __init__(self, backend: Backend, payloads: PayloadStore, schemas: SchemaRegistry) -> None:
        self.backend = backend
        self.payloads = payloads
        self.schemas = schemas
        self._clock = _Clock()

    def save(self, run_id: str, artifact_id: str, message: Message) -> None:
        self.save_entry(run_id, artifact_id, message)

    def save_entry(
        self, run_id: str, artifact_id: str, message: Message, *, verify_existing: bool = False
    ) -> ArtifactEntry:
        """`save`, returning the manifest entry written.

        With `verify_existing`, a payload already stored is read back and rewritten
        if it turns out damaged (a plain save trusts what is there).
        """
        check_run_id(run_id)
        check_artifact_id(artifact_id)
        if not isinstance(message, Message):
            raise InvalidInputError(
                f"invalid message: expected a Message, got {type(message).__name__}"
            )
        validated = self.schemas.validate(message.schema, message.content)
        payload = message.payload()
        digest = Digest.of(payload)
        entry = ArtifactEntry(
            artifact_id=artifact_id,
            digest=digest,
            size=len(payload),
            schema=message.schema,
            validated=validated,
            envelope=message.envelope(),
            saved_at=datetime.now(UTC).isoformat(),
        )
        # Everything is checked and serialised before the first write: bad input writes nothing.
        line = seal(entry.to_dict()) + b"\n"
        self.payloads.put(payload, digest, verify_existing=verify_existing)
        self._append(run_id, line)
        return entry

    def append_entry(self, run_id: str, entry: ArtifactEntry) -> None:
        """Write an entry exactly as given (sync copies entries between repositories).

        The caller must have stored the entry's payload first (I1); nothing is validated
        beyond the ids, so the copy keeps the envelope and ``saved_at`` byte for byte.
        """
        check_run_id(run_id)
        check_artifact_id(entry.artifact_id)
        self._append(run_id, seal(entry.to_dict()) + b"\n")

    def _append(self, run_id: str, line: bytes) -> None:
        if self.backend.supports_append:
            self.backend.append(run_key(run_id, MANIFEST), line)
        else:
            name = f"{self._clock.next():020d}-{secrets.token_hex(4)}.jsonl"
            self.backend.write(f"{run_key(run_id, SEGMENTS)}/{name}", line)

    def sync(self, run_id: str) -> None:
        """Make every record appended to the run's manifest durable."""
        if self.backend.supports_append:
            self.backend.sync(run_key(run_id, MANIFEST))

    def entries(self, run_id: str) -> dict[str, ArtifactEntry]:
        """The run's manifest: artifact id → newest entry, in the order of those newest saves."""
        entries: dict[str, ArtifactEntry] = {}
        for key in self._manifest_keys(run_id):
            for record in _records(self.backend, key):
                entry = ArtifactEntry.from_dict(record)
                entries.pop(entry.artifact_id, None)
                entries[entry.artifact_id] = entry
        return entries

    def _manifest_keys(self, run_id: str) -> list[str]:
        keys = [run_key(run_id, MANIFEST)]
        segments = self.backend.children(run_key(run_id, SEGMENTS))
        keys += [
            f"{run_key(run_id, SEGMENTS)}/{name}"
            for name in sorted(segments)
            if not is_temp_name(name)
        ]
        return keys

    def entry(self, run_id: str, artifact_id: str) -> ArtifactEntry:
        """One artifact's manifest entry; `NotFoundError` if absent."""
        check_artifact_id(artifact_id)
        entry = self.entries(run_id).get(artifact_id)
        if entry is None:
            raise NotFoundError(f"run {run_id!r} has no artifact {artifact_id!r}")
        return entry

    def get(self, run_id: str, artifact_id: str) -> Message:
        entry = self.entry(run_id, artifact_id)
        return self.message(entry)

    def message(self, entry: ArtifactEntry) -> Message:
        """The message an entry describes, its payload verified."""
        payload = orjson.loads(self.payloads.get(entry.digest, entry.size))
        return Message.from_payload(payload, entry.envelope)

    def list_artifacts(self, run_id: str) -> list[str]:
        return sorted(self.entries(run_id))


def _records(backend: Backend, key: str) -> list[dict[str, object]]:
    """Sealed records of one manifest file; a torn last line (crash mid-append) is skipped."""
    try:
        data = backend.read(key)
    except NotFoundError:
        return []
    lines = data.split(b"\n")
    # A complete file ends with "\n", so its last piece is empty; anything else is torn.
    return [unseal(line, f"{key}:{number}") for number, line in enumerate(lines[:-1], 1) if line]


class BackendExecutionStore:
    """`ExecutionStore` over a backend: ``runs/{run_id}/execution_result.json``."""

    def __init__(self, backend: Backend, before_save: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.before_save = before_save

    def save(self, run_id: str, result: ExecutionResult) -> None:
        check_run_id(run_id)
        if not isinstance(result, ExecutionResult):
            raise InvalidInputError(
                f"invalid result: expected an ExecutionResult, got {type(result).__name__}"
            )
        if result.run_id != run_id:
            raise InvalidInputError(f"result is for run {result.run_id!r}, not {run_id!r}")
        if self.before_save is not None:
            self.before_save(run_id)
        self.backend.write(run_key(run_id, RESULT), seal(result.to_dict()))

    def get(self, run_id: str) -> ExecutionResult:
        key = run_key(run_id, RESULT)
        try:
            data = self.backend.read(key)
        except NotFoundError:
            raise NotFoundError(f"no run {run_id!r}") from None
        return ExecutionResult.from_dict(unseal(data, key))

    def list_runs(self) -> list[str]:
        return sorted(
            run_id
            for run_id in self.backend.children(RUNS)
            if is_valid_id(run_id) and self.backend.exists(run_key(run_id, RESULT))
        )

    def exists(self, run_id: str) -> bool:
        """Whether `run_id` has a stored result."""
        return self.backend.exists(run_key(run_id, RESULT))
