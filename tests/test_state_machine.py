"""A Repository's artifact and execution stores driven side by side with a plain dict model."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cas.digest import Digest
from cas.errors import NotFoundError
from cas.model import ExecutionResult, Message
from cas.objects import Backend, FsspecBackend, LocalBackend
from cas.testing.store_helpers import pack_runs
from cas.testing.store_tests import make_repository, reopen
from cas.testing.strategies import execution_results, json_objects, messages, schema_refs

RUNS = st.sampled_from(["run-a", "run-b", "Run-c"])
ARTIFACTS = st.sampled_from(["findings", "report.html", "_x"])
# Few distinct contents, so saves share payload objects (dedup) often.
_FEW: list[dict[str, Any]] = [{}, {"n": 1}, {"n": [1, 2]}]
CONTENTS = st.sampled_from(_FEW) | json_objects(max_leaves=4)
SCHEMAS = st.none() | schema_refs()


class RepositoryMachine(RuleBasedStateMachine):
    """Rules change the repository and the model alike; invariants compare them."""

    def __init__(self) -> None:
        super().__init__()
        self.backend = self.make_backend()
        self.repo = make_repository(self.backend)
        self.artifacts: dict[str, dict[str, Message]] = {}
        self.results: dict[str, ExecutionResult] = {}
        self.payloads: set[Digest] = set()

    def make_backend(self) -> Backend:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        self.cleanup()

    @rule(run=RUNS, artifact=ARTIFACTS, message=messages(CONTENTS, SCHEMAS))
    def save_artifact(self, run: str, artifact: str, message: Message) -> None:
        self.repo.artifacts.save(run, artifact, message)
        self.artifacts.setdefault(run, {})[artifact] = message
        self.payloads.add(Digest.of(message.payload()))

    @rule(run=RUNS, result=execution_results())
    def save_result(self, run: str, result: ExecutionResult) -> None:
        result = dataclasses.replace(result, run_id=run)
        self.repo.executions.save(run, result)
        self.results[run] = result

    @rule(run=RUNS, artifact=ARTIFACTS)
    def get_artifact(self, run: str, artifact: str) -> None:
        expected = self.artifacts.get(run, {}).get(artifact)
        if expected is None:
            with pytest.raises(NotFoundError):
                self.repo.artifacts.get(run, artifact)
        else:
            assert self.repo.artifacts.get(run, artifact) == expected

    @rule(run=RUNS)
    def get_result(self, run: str) -> None:
        expected = self.results.get(run)
        if expected is None:
            with pytest.raises(NotFoundError):
                self.repo.executions.get(run)
        else:
            assert self.repo.executions.get(run) == expected

    @rule(run=RUNS)
    def list_artifacts(self, run: str) -> None:
        assert self.repo.artifacts.list_artifacts(run) == sorted(self.artifacts.get(run, {}))

    @rule()
    def list_runs(self) -> None:
        assert self.repo.executions.list_runs() == sorted(self.results)

    @rule(run=RUNS)
    def pack_run(self, run: str) -> None:
        """The run's folder becomes a run pack, as a push of many runs writes it; later
        saves to it land in a new folder on top (docs/design.md §7)."""
        if run in self.results and run not in self.repo.packs.runs():
            pack_runs(self.repo, [run])

    @rule()
    def restart(self) -> None:
        """A new process opens the same repository."""
        self.repo = make_repository(reopen(self.backend))

    @invariant()
    def runs_match(self) -> None:
        assert self.repo.executions.list_runs() == sorted(self.results)

    @invariant()
    def every_artifact_matches(self) -> None:
        for run, expected in self.artifacts.items():
            assert {a: self.repo.artifacts.get(run, a) for a in expected} == expected

    @invariant()
    def one_object_per_distinct_payload(self) -> None:
        assert set(self.repo.objects) == self.payloads


class MemoryMachine(RepositoryMachine):
    def make_backend(self) -> Backend:
        self._memory = FsspecBackend(f"memory://cas-machine-{uuid.uuid4().hex}")
        return self._memory

    def cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._memory.fs.rm(self._memory.root, recursive=True)


class LocalMachine(RepositoryMachine):
    def make_backend(self) -> Backend:
        self._folder = Path(tempfile.mkdtemp(prefix="cas-machine-"))
        return LocalBackend(self._folder / "repo", fsync=False)

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


MACHINE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryRepository = MemoryMachine.TestCase
TestMemoryRepository.settings = MACHINE_SETTINGS
TestLocalRepository = LocalMachine.TestCase
TestLocalRepository.settings = MACHINE_SETTINGS
