"""Contract suites for the repository-level stores: `ArtifactStore` and `ExecutionStore`.

Import them from `cas.testing.store_tests`; a backend's test file subclasses a suite
and overrides only the ``backend`` fixture. The stores are built on that backend
through a `Repository`, so they are wired the way users get them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from cas.digest import Digest
from cas.errors import (
    IntegrityError,
    InvalidIdError,
    InvalidInputError,
    NotFoundError,
    SchemaValidationError,
)
from cas.model import ExecutionInfo, ExecutionResult, Message, SchemaRef
from cas.objects import Backend
from cas.repository import Repository
from cas.stores import (
    MANIFEST,
    RESULT,
    SEGMENTS,
    ArtifactStore,
    BackendArtifactStore,
    BackendExecutionStore,
    ExecutionStore,
    run_key,
)
from cas.testing.store_helpers import (
    HOSTILE_IDS,
    ContractTests,
    RecordingBackend,
    flip_byte,
    key_listing,
    make_repository,
    pack_runs,
    raw_get,
    raw_set,
    reopen,
    sample_message,
    sample_result,
)

__all__ = ["ArtifactStoreTests", "ExecutionStoreTests"]


def _large_content() -> dict[str, Any]:
    """Content whose payload is above `PayloadStore.threshold`, so it is stored in chunks."""
    rows = [{"row": i, "text": f"value number {i} " * 8} for i in range(2500)]
    return {"rows": rows}


def _manifest_lines(backend: Backend, run_id: str) -> list[tuple[str, int]]:
    """(manifest file, line number) of every complete record of a run, in read order."""
    keys = [key for key in backend.list(f"runs/{run_id}") if key.endswith(".jsonl")]
    keys = sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))
    out = []
    for key in keys:
        lines = raw_get(backend, key).split(b"\n")[:-1]
        out += [(key, number) for number in range(len(lines))]
    return out


# --------------------------------------------------------------------------- ArtifactStore


class _RepositorySuite(ContractTests):
    @pytest.fixture
    def repo(self, backend: Backend) -> Repository:
        return make_repository(backend)

    def raw_state(self, repo: Repository) -> object:
        """Everything the stores keep, read around them ("nothing was written" checks).

        A subclass keeping records elsewhere (PostgreSQL) adds them to the backend's keys.
        """
        return key_listing(repo.backend)

    def reopened(self, repo: Repository) -> Repository:
        """The same repository as a restarted process would open it."""
        return make_repository(reopen(repo.backend))

    def require_packs(self, repo: Repository) -> None:
        """Skip where runs are not kept on the backend (no run packs there)."""
        if repo.records is not None:
            pytest.skip("runs are rows in PostgreSQL: there are no run packs")


class ArtifactStoreTests(_RepositorySuite):
    """The `ArtifactStore` contract (plus `BackendArtifactStore` extras). Override ``backend``."""

    # Whether to run the chunked-payload tests (hundreds of requests on a remote medium).
    large_payloads: ClassVar[bool] = True

    @pytest.fixture
    def store(self, repo: Repository) -> BackendArtifactStore:
        return repo.artifacts

    def test_is_an_artifact_store(self, store: BackendArtifactStore) -> None:
        assert isinstance(store, ArtifactStore)

    def test_save_get_round_trip(self, store: BackendArtifactStore) -> None:
        message = sample_message()
        store.save("run-1", "findings", message)
        assert store.get("run-1", "findings") == message

    def test_round_trip_of_minimal_message(self, store: BackendArtifactStore) -> None:
        message = Message(id="m", content={})
        store.save("run-1", "a", message)
        assert store.get("run-1", "a") == message

    def test_entry_describes_the_save(self, store: BackendArtifactStore) -> None:
        message = sample_message()
        entry = store.save_entry("run-1", "findings", message)
        assert entry.digest == Digest.of(message.payload())
        assert entry.size == len(message.payload())
        assert store.entry("run-1", "findings") == entry
        assert store.entries("run-1") == {"findings": entry}

    def test_list_artifacts_sorted(self, store: BackendArtifactStore) -> None:
        for artifact in ("zeta", "alpha", "m.sub", "M", "_x"):
            store.save("run-1", artifact, sample_message({"a": artifact}))
        assert store.list_artifacts("run-1") == ["M", "_x", "alpha", "m.sub", "zeta"]
        assert store.list_artifacts("other-run") == []

    def test_last_save_wins(self, store: BackendArtifactStore) -> None:
        first, second = sample_message({"v": 1}), sample_message({"v": 2}, source="again")
        store.save("run-1", "a", first)
        store.save("run-1", "b", first)
        store.save("run-1", "a", second)
        assert store.get("run-1", "a") == second
        assert store.get("run-1", "b") == first
        assert store.list_artifacts("run-1") == ["a", "b"]

    def test_same_content_in_two_runs_is_one_object(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        message = sample_message()
        store.save("run-1", "findings", message)
        store.save("run-2", "copy", message)
        assert len(list(repo.objects)) == 1
        assert store.entry("run-1", "findings").digest == store.entry("run-2", "copy").digest

    def test_envelope_is_per_run(self, store: BackendArtifactStore, repo: Repository) -> None:
        content = {"rows": [1, 2, 3]}
        one = sample_message(content, source="a", timestamp=datetime(2024, 1, 1, tzinfo=UTC))
        two = sample_message(
            content,
            id="other",
            source="b",
            timestamp=datetime(2025, 1, 1),
            context={"k": "v"},
            execution=ExecutionInfo("failed", "boom", 2.0),
        )
        store.save("run-1", "x", one)
        store.save("run-2", "x", two)
        assert len(list(repo.objects)) == 1
        assert store.get("run-1", "x") == one
        assert store.get("run-2", "x") == two

    def test_unknown_run_or_artifact_is_not_found(self, store: BackendArtifactStore) -> None:
        store.save("run-1", "a", sample_message())
        for run, artifact in (("run-2", "a"), ("run-1", "b")):
            with pytest.raises(NotFoundError) as caught:
                store.get(run, artifact)
            assert isinstance(caught.value, KeyError)
            with pytest.raises(NotFoundError):
                store.entry(run, artifact)

    def test_invalid_ids_refused_and_nothing_written(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        store.save("run-1", "a", sample_message())
        before = self.raw_state(repo)
        for bad in HOSTILE_IDS:
            with pytest.raises(InvalidIdError, match="run id"):
                store.save(bad, "a", sample_message({"new": 1}))
            with pytest.raises(InvalidIdError, match="artifact id"):
                store.save("run-1", bad, sample_message({"new": 2}))
            with pytest.raises(InvalidIdError):
                store.get(bad, "a")
            with pytest.raises(InvalidIdError):
                store.get("run-1", bad)
            with pytest.raises(InvalidIdError):
                store.list_artifacts(bad)
        assert self.raw_state(repo) == before

    def test_non_message_refused(self, store: BackendArtifactStore, repo: Repository) -> None:
        before = self.raw_state(repo)
        with pytest.raises(InvalidInputError):
            store.save("run-1", "a", {"id": "m", "content": {}})  # type: ignore[arg-type]
        assert self.raw_state(repo) == before

    def test_schema_validation_enforced(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        ref = SchemaRef("finding", "1.0.0")
        repo.schemas.add(
            ref,
            {
                "type": "object",
                "required": ["count"],
                "properties": {"count": {"type": "integer", "minimum": 0}},
            },
        )
        before = self.raw_state(repo)
        with pytest.raises(SchemaValidationError) as caught:
            store.save("run-1", "a", sample_message({"count": -1}, schema=ref))
        assert caught.value.schema == str(ref)
        assert caught.value.path == "$.count"
        assert self.raw_state(repo) == before
        assert store.save_entry("run-1", "a", sample_message({"count": 1}, schema=ref)).validated
        unregistered = sample_message({"count": -1}, schema=SchemaRef("other", "1"))
        assert not store.save_entry("run-1", "b", unregistered).validated
        assert not store.save_entry("run-1", "c", sample_message(schema=None)).validated
        assert store.entry("run-1", "a").validated

    def test_flipped_payload_byte_is_integrity_error(
        self, store: BackendArtifactStore, repo: Repository, backend: Backend
    ) -> None:
        entry = store.save_entry("run-1", "a", sample_message())
        key = repo.objects.key(entry.digest)
        raw_set(backend, key, flip_byte(raw_get(backend, key)))
        with pytest.raises(IntegrityError, match=entry.digest.hex):
            store.get("run-1", "a")

    def test_large_payload_round_trip_and_dedup(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        if not self.large_payloads:
            pytest.skip("large payloads are slow on this medium")
        message = sample_message(_large_content())
        assert len(message.payload()) > repo.payloads.threshold
        entry = store.save_entry("run-1", "big", message)
        assert repo.payloads.is_chunked(entry.digest)
        store.save("run-2", "same", message)
        assert store.get("run-1", "big") == message
        assert store.get("run-2", "same") == message
        assert store.entry("run-2", "same").digest == entry.digest

    def test_flipped_byte_in_a_chunk_is_integrity_error(
        self, store: BackendArtifactStore, repo: Repository, backend: Backend
    ) -> None:
        if not self.large_payloads:
            pytest.skip("large payloads are slow on this medium")
        entry = store.save_entry("run-1", "big", sample_message(_large_content()))
        chunk = repo.payloads.chunk_list(entry.digest)[1]
        key = repo.payloads.chunks.key(chunk)
        raw_set(backend, key, flip_byte(raw_get(backend, key)))
        with pytest.raises(IntegrityError, match=chunk.hex):
            store.get("run-1", "big")

    def test_torn_final_manifest_line_is_ignored(
        self, store: BackendArtifactStore, backend: Backend
    ) -> None:
        first, second = sample_message({"n": 1}), sample_message({"n": 2})
        store.save("run-1", "a", first)
        store.save("run-1", "b", second)
        last_file = _manifest_lines(backend, "run-1")[-1][0]
        raw_set(backend, last_file, raw_get(backend, last_file) + b'{"artifact":"c","dig')
        assert store.list_artifacts("run-1") == ["a", "b"]
        assert store.get("run-1", "b") == second

    def test_restarted_writer_saves_after_torn_line(
        self, store: BackendArtifactStore, backend: Backend
    ) -> None:
        first = sample_message({"n": 1})
        store.save("run-1", "a", first)
        store.save("run-1", "b", sample_message({"n": 2}))
        last_file = _manifest_lines(backend, "run-1")[-1][0]
        raw_set(backend, last_file, raw_get(backend, last_file) + b'{"artifact":"c","dig')
        restarted = make_repository(reopen(backend)).artifacts
        third = sample_message({"n": 3})
        restarted.save("run-1", "c", third)
        assert restarted.list_artifacts("run-1") == ["a", "b", "c"]
        assert restarted.get("run-1", "c") == third
        assert restarted.get("run-1", "a") == first

    def test_save_after_reopen(self, store: BackendArtifactStore, repo: Repository) -> None:
        first, second = sample_message({"n": 1}), sample_message({"n": 2})
        store.save("run-1", "a", first)
        restarted = self.reopened(repo).artifacts
        restarted.save("run-1", "b", second)
        assert store.get("run-1", "a") == first
        assert restarted.get("run-1", "b") == second
        assert store.list_artifacts("run-1") == ["a", "b"]

    def test_damaged_middle_line_is_integrity_error(
        self, store: BackendArtifactStore, backend: Backend
    ) -> None:
        for artifact in ("a", "b", "c"):
            store.save("run-1", artifact, sample_message({"n": artifact}))
        lines = _manifest_lines(backend, "run-1")
        assert len(lines) == 3
        key, number = lines[1]
        data = raw_get(backend, key).split(b"\n")
        data[number] = flip_byte(data[number])
        raw_set(backend, key, b"\n".join(data))
        with pytest.raises(IntegrityError):
            store.get("run-1", "a")
        with pytest.raises(IntegrityError):
            store.list_artifacts("run-1")

    def test_save_costs_constant_writes(self, backend: Backend) -> None:
        recorder = RecordingBackend(backend)
        store = make_repository(recorder).artifacts
        costs = []
        for index in range(50):
            recorder.calls.clear()
            store.save("run-1", f"artifact-{index}", sample_message({"i": index}))
            costs.append(recorder.count("write", "append"))
        assert costs[0] == costs[49] <= 2
        recorder.calls.clear()
        store.save("run-1", "artifact-50", sample_message({"i": 0}))  # payload already stored
        assert recorder.count("write", "append") == 1

    def _reads(self, store: BackendArtifactStore, run_ids: list[str]) -> object:
        return {
            run_id: (
                store.list_artifacts(run_id),
                {a: store.get(run_id, a) for a in store.list_artifacts(run_id)},
                {a: e.to_dict() for a, e in store.entries(run_id).items()},
            )
            for run_id in run_ids
        }

    def test_packed_runs_read_back_the_same(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        """Runs moved into a run pack (as a push of many runs writes them) read as before."""
        self.require_packs(repo)
        runs = ["run-1", "run-2"]
        for run in runs:
            store.save(run, "a", sample_message({"run": run}))
            store.save(run, "b", sample_message({"first": True}))
            store.save(run, "b", sample_message({"second": True}))
            repo.executions.save(run, sample_result(run))
        before = self._reads(store, runs)
        pack_runs(repo, runs)
        assert list(repo.backend.list("runs")) == []
        reopened = self.reopened(repo)
        assert self._reads(reopened.artifacts, runs) == before
        assert reopened.run_ids() == runs
        assert reopened.artifacts.list_artifacts("run-3") == []

    def test_saves_to_a_packed_run_land_on_top_of_it(
        self, store: BackendArtifactStore, repo: Repository
    ) -> None:
        self.require_packs(repo)
        first, second = sample_message({"n": 1}), sample_message({"n": 2})
        store.save("run-1", "a", first)
        store.save("run-1", "b", first)
        repo.executions.save("run-1", sample_result("run-1"))
        pack_runs(repo, ["run-1"])
        writer = self.reopened(repo).artifacts
        writer.save("run-1", "b", second)
        writer.save("run-1", "c", second)
        repo.executions.save("run-1", sample_result("run-1"))  # merges on object stores
        reader = self.reopened(repo).artifacts
        assert reader.list_artifacts("run-1") == ["a", "b", "c"]
        assert reader.get("run-1", "a") == first
        assert reader.get("run-1", "b") == second


# --------------------------------------------------------------------------- ExecutionStore


class ExecutionStoreTests(_RepositorySuite):
    """The `ExecutionStore` contract. Override the ``backend`` fixture."""

    @pytest.fixture
    def store(self, repo: Repository) -> ExecutionStore:
        return repo.executions

    def test_is_an_execution_store(self, store: BackendExecutionStore) -> None:
        assert isinstance(store, ExecutionStore)

    def test_save_get_round_trip(self, store: BackendExecutionStore) -> None:
        result = sample_result("run-1")
        store.save("run-1", result)
        assert store.get("run-1") == result
        assert store.exists("run-1")

    def test_round_trip_of_minimal_result(self, store: BackendExecutionStore) -> None:
        result = ExecutionResult("r", "running", datetime(2024, 1, 1))
        store.save("r", result)
        assert store.get("r") == result

    def test_replace_running_with_completed(self, store: BackendExecutionStore) -> None:
        store.save("run-1", sample_result("run-1", "running"))
        final = sample_result("run-1", "completed")
        store.save("run-1", final)
        assert store.get("run-1") == final
        assert store.get("run-1").is_final

    def test_list_runs_sorted_and_only_with_results(
        self, store: BackendExecutionStore, repo: Repository
    ) -> None:
        assert store.list_runs() == []
        for run in ("run-b", "run-a", "Run-c"):
            store.save(run, sample_result(run))
        repo.artifacts.save("run-0-no-result", "a", sample_message())
        assert store.list_runs() == ["Run-c", "run-a", "run-b"]
        assert not store.exists("run-0-no-result")

    def test_run_id_mismatch_refused(self, store: BackendExecutionStore, repo: Repository) -> None:
        before = self.raw_state(repo)
        with pytest.raises(InvalidInputError, match="run-2"):
            store.save("run-1", sample_result("run-2"))
        assert self.raw_state(repo) == before

    def test_non_result_refused(self, store: BackendExecutionStore, repo: Repository) -> None:
        before = self.raw_state(repo)
        with pytest.raises(InvalidInputError):
            store.save("run-1", sample_result("run-1").to_dict())  # type: ignore[arg-type]
        assert self.raw_state(repo) == before

    def test_bad_ids_refused(self, store: BackendExecutionStore, repo: Repository) -> None:
        store.save("run-1", sample_result("run-1"))
        before = self.raw_state(repo)
        for bad in HOSTILE_IDS:
            with pytest.raises(InvalidIdError, match="run id"):
                store.save(bad, sample_result("run-1"))
            with pytest.raises(InvalidIdError):
                store.get(bad)
        assert self.raw_state(repo) == before

    def test_unknown_run_is_not_found(self, store: BackendExecutionStore) -> None:
        with pytest.raises(NotFoundError, match="nope") as caught:
            store.get("nope")
        assert isinstance(caught.value, KeyError)
        assert not store.exists("nope")

    def test_packed_results_read_back_the_same(
        self, store: BackendExecutionStore, repo: Repository
    ) -> None:
        self.require_packs(repo)
        for run in ("run-1", "run-2", "run-3"):
            store.save(run, sample_result(run))
        pack_runs(repo, ["run-1", "run-2"])
        reopened = self.reopened(repo).executions
        assert reopened.list_runs() == ["run-1", "run-2", "run-3"]
        for run in ("run-1", "run-2", "run-3"):
            assert reopened.get(run) == sample_result(run)
            assert reopened.exists(run)
        assert not reopened.exists("run-4")
        with pytest.raises(NotFoundError):
            reopened.get("run-4")

    def test_a_result_saved_to_a_packed_run_replaces_the_packed_one(
        self, store: BackendExecutionStore, repo: Repository
    ) -> None:
        self.require_packs(repo)
        store.save("run-1", sample_result("run-1", "running"))
        pack_runs(repo, ["run-1"])
        final = sample_result("run-1", "completed")
        self.reopened(repo).executions.save("run-1", final)
        reopened = self.reopened(repo).executions
        assert reopened.get("run-1") == final
        assert reopened.list_runs() == ["run-1"]

    def damage_result(self, repo: Repository, run_id: str) -> None:
        """Damage the stored result of `run_id` around the store."""
        key = run_key(run_id, RESULT)
        raw_set(repo.backend, key, flip_byte(raw_get(repo.backend, key)))

    def test_damaged_result_is_integrity_error(
        self, store: BackendExecutionStore, repo: Repository
    ) -> None:
        store.save("run-1", sample_result("run-1"))
        self.damage_result(repo, "run-1")
        with pytest.raises(IntegrityError):
            store.get("run-1")

    def test_manifest_is_durable_before_result(self, backend: Backend) -> None:
        recorder = RecordingBackend(backend)
        repo = make_repository(recorder)
        for artifact in ("a", "b"):
            repo.artifacts.save("run-1", artifact, sample_message({"a": artifact}))
        repo.executions.save("run-1", sample_result("run-1"))
        result_write = recorder.calls.index(("write", run_key("run-1", RESULT)))
        before, after = recorder.calls[:result_write], recorder.calls[result_write:]
        manifest = run_key("run-1", MANIFEST)
        if backend.supports_append:
            last_append = max(i for i, call in enumerate(before) if call == ("append", manifest))
            assert ("sync", manifest) in before[last_append:]
        else:
            # Each segment is one PUT, durable when write returns.
            segments = [k for k in recorder.keys_of("write") if f"/{SEGMENTS}/" in k]
            assert len(segments) == 2
            assert all(("write", key) in before for key in segments)
        assert not any(verb in ("append", "write") for verb, _ in after[1:])
