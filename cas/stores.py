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
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import orjson

from cas.digest import Digest, seal, unseal
from cas.errors import InvalidInputError, NotFoundError
from cas.ids import check_artifact_id, check_run_id, is_valid_id
from cas.model import ArtifactEntry, ExecutionResult, Message, newest_entries
from cas.objects import Backend, LocalBackend, is_temp_name
from cas.packs import RunPacks
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

    def exists(self, run_id: str) -> bool:
        """Whether `run_id` has a stored result."""


@runtime_checkable
class ManifestStore(Protocol):
    """Run manifests kept outside the object backend (`cas.pgstore.PostgresStore`).

    `BackendArtifactStore` delegates its entries to one when given: payloads stay in
    the object store, entries go here. An `append` is durable when it returns.
    """

    def append(self, run_id: str, entry: ArtifactEntry) -> None:
        """Record `entry` for `run_id`; it replaces an older entry of the same artifact id."""

    def entries(self, run_id: str) -> dict[str, ArtifactEntry]:
        """Artifact id → newest entry, in the order of those newest saves."""

    def sync(self, run_id: str) -> None:
        """Make every entry appended for `run_id` durable."""

    def run_ids(self) -> list[str]:
        """Every run with an entry or a result, sorted."""

    def delete_run(self, run_id: str) -> None:
        """Forget the run's entries (and result)."""

    def position(self) -> int:
        """A mark of the saves so far (for `saved_after`)."""

    def saved_after(self, position: int) -> set[str]:
        """Runs with an entry saved after `position`."""

    def digests(self, run_ids: Iterable[str]) -> set[Digest]:
        """Every digest the entries of `run_ids` name, read in bulk (gc's mark)."""


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

    def __init__(
        self,
        backend: Backend,
        payloads: PayloadStore,
        schemas: SchemaRegistry,
        manifests: ManifestStore | None = None,
        packs: RunPacks | None = None,
    ) -> None:
        self.backend = backend
        self.payloads = payloads
        self.schemas = schemas
        self.manifests = manifests  # entries kept elsewhere (PostgreSQL); None: on the backend
        self.packs = packs or RunPacks(backend)
        self._journals: set[str] = set()  # runs whose journal this store knows exists
        self._clock = _Clock()
        self._unmerged: dict[str, dict[str, bytes]] = {}  # run id -> segments written, unmerged
        self._merge_lock = threading.Lock()

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
        if self.manifests is not None:
            self.manifests.append(run_id, entry)
        else:
            self._append(run_id, line)
        return entry

    def append_entry(self, run_id: str, entry: ArtifactEntry) -> None:
        """Write an entry exactly as given (sync copies entries between repositories).

        The caller must have stored the entry's payload first (I1); nothing is validated
        beyond the ids, so the copy keeps the envelope and ``saved_at`` byte for byte.
        """
        check_run_id(run_id)
        check_artifact_id(entry.artifact_id)
        if self.manifests is not None:
            self.manifests.append(run_id, entry)
            return
        self._append(run_id, seal(entry.to_dict()) + b"\n")

    def _append(self, run_id: str, line: bytes) -> None:
        if self.backend.supports_append:
            self.backend.append(run_key(run_id, MANIFEST), self._base(run_id) + line)
            return
        name = f"{self._clock.next():020d}-{secrets.token_hex(4)}.jsonl"
        key = f"{run_key(run_id, SEGMENTS)}/{name}"
        self.backend.write(key, line)
        with self._merge_lock:  # kept for `merge`, which then need not read it back
            self._unmerged.setdefault(run_id, {})[key] = line

    def merge(
        self, run_id: str, entries: Iterable[ArtifactEntry] = (), *, fresh: bool = False
    ) -> None:
        """Add `entries` to the run's manifest and fold its segments into ``manifest.jsonl``.

        Without append (S3, memory): one listing of the run's folder, then one PUT of
        ``manifest.jsonl`` holding the old one, every segment in order and `entries`,
        and only then one batch delete of those segments. Segments that a crash (or
        a delete that did not finish) leaves behind repeat lines the journal holds,
        which readers and the next merge skip (I25). Without `entries` this does
        nothing unless this store wrote segments of the run since its last merge (a
        result save calls it, so a finished run reads with one listing and one GET).
        Where the backend appends, or entries live elsewhere, `entries` are appended.
        Assumes one writer per run (the executor's owner record; push copies whole runs).
        `fresh` says the caller knows the run has no manifest files yet and is in no
        pack (push found neither), which saves the listing and the pack lookup.
        """
        entries = list(entries)
        if self.manifests is not None or self.backend.supports_append:
            for entry in entries:
                self.append_entry(run_id, entry)
            return
        check_run_id(run_id)
        for entry in entries:
            check_artifact_id(entry.artifact_id)
        lines = [seal(entry.to_dict()) + b"\n" for entry in entries]  # all checked first (I9)
        with self._merge_lock:
            written = self._unmerged.pop(run_id, {})
        if not lines and not written:
            return
        manifest = run_key(run_id, MANIFEST)
        keys = [] if fresh and not written else self._manifest_keys(run_id)
        segments = [key for key in keys if key != manifest]
        if not lines and not segments:
            return
        if not fresh:  # a fresh run is in no pack either: nothing to stand in
            keys, known = self._with_base(run_id, keys, written)
        else:
            known = written
        kept = [line + b"\n" for _key, _number, line in _lines(self.backend, keys, known)]
        self.backend.write(manifest, b"".join(kept + lines))
        self.backend.delete(segments)

    def _base(self, run_id: str) -> bytes:
        """Before the first line of a journal: the run's packed manifest, if any.

        A packed run's journal starts with its packed lines, so a folder journal,
        which readers take over the packed manifest, never hides them.
        """
        if run_id in self._journals:
            return b""
        base = b""
        if self.packs.enabled() and not self.backend.exists(run_key(run_id, MANIFEST)):
            base = self._packed_manifest(run_id) or b""
        self._journals.add(run_id)
        return base

    def _packed_manifest(self, run_id: str) -> bytes | None:
        """The manifest lines of the run's pack; None if no pack holds it."""
        section = self.packs.read(run_id)
        return section.manifest if section is not None else None

    def sync(self, run_id: str) -> None:
        """Make every record appended to the run's manifest durable."""
        if self.manifests is not None:
            self.manifests.sync(run_id)
        elif self.backend.supports_append:
            self.backend.sync(run_key(run_id, MANIFEST))

    def entries(self, run_id: str) -> dict[str, ArtifactEntry]:
        """The run's manifest: artifact id → newest entry, in the order of those newest saves."""
        if self.manifests is not None:
            return self.manifests.entries(run_id)
        return {name: entry for name, (entry, _line) in self.sealed_entries(run_id).items()}

    def sealed_entries(self, run_id: str) -> dict[str, tuple[ArtifactEntry, bytes]]:
        """`entries`, each with the sealed line it was read from (a copy writes those
        bytes as they are). Entries kept elsewhere are sealed again."""
        if self.manifests is not None:
            found = self.manifests.entries(run_id)
            return {name: (entry, seal(entry.to_dict())) for name, entry in found.items()}
        keys, known = self._with_base(run_id, self._manifest_keys(run_id))
        return newest_entries(_records(self.backend, keys, known))

    def _with_base(
        self, run_id: str, keys: list[str], known: dict[str, bytes] | None = None
    ) -> tuple[list[str], dict[str, bytes]]:
        """`keys` and the bytes in hand, with the packed manifest standing in for the
        journal when the run's folder has none (its segments still apply on top)."""
        manifest = run_key(run_id, MANIFEST)
        known = dict(known or {})
        if not self.packs.enabled():  # a repository without packs: no journal check
            return keys, known
        has_journal = (
            self.backend.exists(manifest) if self.backend.supports_append else manifest in keys
        )
        packed = None if has_journal else self._packed_manifest(run_id)
        if packed is not None:
            known[manifest] = packed
            keys = [manifest, *(key for key in keys if key != manifest)]
        return keys, known

    def _manifest_keys(self, run_id: str) -> list[str]:
        """``manifest.jsonl``, then the segments in save order (temporaries skipped).

        Where the backend appends, the journal (absent reads as empty) and the listed
        segments folder. Elsewhere one listing of the run's folder finds both, so a
        merged run reads with that listing and one GET, and no GET of an absent key.
        """
        manifest, folder = run_key(run_id, MANIFEST), run_key(run_id, SEGMENTS)
        if self.backend.supports_append:
            names = self.backend.children(folder)
            return [manifest, *(f"{folder}/{n}" for n in sorted(names) if not is_temp_name(n))]
        found = set(self.backend.list(f"{RUNS}/{check_run_id(run_id)}"))
        segments = sorted(
            key
            for key in found
            if key.startswith(f"{folder}/")
            and key.count("/") == 3
            and not is_temp_name(key.rsplit("/", 1)[1])
        )
        return ([manifest] if manifest in found else []) + segments

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


def _read(backend: Backend, key: str) -> bytes:
    """The bytes under `key`; empty if it is gone (a segment merged meanwhile)."""
    try:
        return backend.read(key)
    except NotFoundError:
        return b""


def _lines(
    backend: Backend, keys: list[str], known: dict[str, bytes] | None = None
) -> Iterator[tuple[str, int, bytes]]:
    """``(key, line number, line)`` of every whole line of the manifest files `keys`.

    A complete file ends with "\\n", so its last piece is empty; anything else is a
    torn line (a crash mid-append) and is skipped. A segment line that the journal
    (``manifest.jsonl``, listed first) already holds was merged into it by a merge
    whose deletes did not all happen, and is skipped too (I25). `known` holds bytes
    already in hand (segments this process wrote), read instead of the backend.
    """
    journal: set[bytes] = set()
    for key in keys:
        data = known[key] if known and key in known else _read(backend, key)
        is_journal = key.endswith(f"/{MANIFEST}")
        for number, line in enumerate(data.split(b"\n")[:-1], 1):
            if is_journal:
                journal.add(line)
            if line and (is_journal or line not in journal):
                yield key, number, line


def _records(
    backend: Backend, keys: list[str], known: dict[str, bytes] | None = None
) -> Iterator[tuple[bytes, dict[str, object]]]:
    """Each sealed line of a run's manifest files, in order (see `_lines`), with its
    record unsealed."""
    for key, number, line in _lines(backend, keys, known):
        yield line, unseal(line, f"{key}:{number}")


def check_result(run_id: str, result: ExecutionResult) -> None:
    """Refuse a bad run id, a value that is not an `ExecutionResult`, or another run's result."""
    check_run_id(run_id)
    if not isinstance(result, ExecutionResult):
        raise InvalidInputError(
            f"invalid result: expected an ExecutionResult, got {type(result).__name__}"
        )
    if result.run_id != run_id:
        raise InvalidInputError(f"result is for run {result.run_id!r}, not {run_id!r}")


class BackendExecutionStore:
    """`ExecutionStore` over a backend: ``runs/{run_id}/execution_result.json``."""

    def __init__(
        self,
        backend: Backend,
        before_save: Callable[[str], None] | None = None,
        packs: RunPacks | None = None,
    ) -> None:
        self.backend = backend
        self.before_save = before_save
        self.packs = packs or RunPacks(backend)

    def save(self, run_id: str, result: ExecutionResult) -> None:
        check_result(run_id, result)
        if self.before_save is not None:
            self.before_save(run_id)
        self.backend.write(run_key(run_id, RESULT), seal(result.to_dict()))

    def get(self, run_id: str) -> ExecutionResult:
        key = run_key(run_id, RESULT)
        try:
            data = self.backend.read(key)
        except NotFoundError:
            section = self.packs.read(run_id)
            if section is None:
                raise NotFoundError(f"no run {run_id!r}") from None
            return section.execution_result()
        return ExecutionResult.from_dict(unseal(data, key))

    def list_runs(self) -> list[str]:
        """One recursive listing of ``runs/`` where the backend lists by pages (S3:
        a request per 1,000 keys), not a HEAD per run; a folder walk on a local disk."""
        if isinstance(self.backend, LocalBackend):
            folders = {
                run_id
                for run_id in self.backend.children(RUNS)
                if is_valid_id(run_id) and self.backend.exists(run_key(run_id, RESULT))
            }
        else:
            suffix = f"/{RESULT}"
            folders = {
                run_id
                for key in self.backend.list(RUNS)
                if key.endswith(suffix) and is_valid_id(run_id := key[len(RUNS) + 1 : -len(suffix)])
            }
        return sorted(folders | self.packs.runs())

    def exists(self, run_id: str) -> bool:
        """Whether `run_id` has a stored result (in its folder or a pack)."""
        if self.backend.exists(run_key(run_id, RESULT)):
            return True
        return self.packs.find(run_id) is not None
