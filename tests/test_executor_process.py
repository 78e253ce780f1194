"""The executor in its own process: SIGTERM, SIGKILL then resume, and entry-point plugins.

Each test runs ``executor_support/run_plan.py`` with `sys.executable`; the test
plugins are registered by passing them to `plan` (``tests/`` goes on
``PYTHONPATH``), so nothing is installed. Plugins append to ``markers/<tag>`` as
they start, which tells which steps ran in which process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from executor_support.plugins import CONNECTORS, PROCESSORS, reset

from cas import plugins as registry
from cas.executor import Executor, new_run_id
from cas.owner import OWNER
from cas.planner import plan
from cas.repository import Repository
from cas.runbook import load_runbook
from cas.stores import run_key
from cas.verify import verify

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SUPPORT = TESTS / "executor_support"
SCRIPT = SUPPORT / "run_plan.py"
FAKEPLUG = SUPPORT / "fakeplug"
CONTENT = {"src": "hello", "up": "HELLO", "side": 5, "held": "HELLO", "after": "OLLEH"}
SAVED_BEFORE_SIGNAL = {"src", "up", "side"}


@pytest.fixture(autouse=True)
def _clean_ledgers() -> Iterator[None]:
    reset()
    yield
    reset()


class Scene:
    """A repository, a runbook whose ``held`` step waits on a gate file, and its markers."""

    def __init__(self, root: Path) -> None:
        self.repo_path = root / "repo"
        self.repo = Repository.init(str(self.repo_path))
        self.markers = root / "markers"
        self.markers.mkdir()
        self.gate = root / "gate"
        self.gate.touch()
        self.runbook = root / "runbook.yaml"
        self.runbook.write_text(self._text())
        self.run_id = new_run_id()

    def _text(self) -> str:
        mark = f"marker_dir: {json.dumps(str(self.markers))}"
        return f"""name: killable
artifacts:
  src:
    source: {{type: fixed, properties: {{value: hello, tag: src, {mark}}}}}
  up:
    inputs: [src]
    process: {{type: transform, properties: {{op: upper, tag: up, {mark}}}}}
  side:
    inputs: [src]
    process: {{type: transform, properties: {{op: length, tag: side, {mark}}}}}
  held:
    inputs: [up]
    process: {{type: gate, properties: {{gate: {json.dumps(str(self.gate))}, tag: held, {mark}}}}}
  after:
    inputs: [held]
    process: {{type: transform, properties: {{op: reverse, tag: after, {mark}}}}}
"""

    def ran(self, tag: str) -> list[int]:
        """Pids of the processes in which step `tag` started, in order."""
        path = self.markers / tag
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def start(self) -> subprocess.Popen[str]:
        return spawn([str(self.repo_path), str(self.runbook), self.run_id])

    def wait_until_held(self, child: subprocess.Popen[str]) -> None:
        """Until src, up and side are saved and `held` is running (blocked on the gate)."""

        def ready() -> bool:
            saved = set(self.repo.artifacts.entries(self.run_id))
            return saved >= SAVED_BEFORE_SIGNAL and bool(self.ran("held"))

        wait_for(ready, child)

    def resume(self) -> str:
        """Open the gate and resume the run in this process; its final status."""
        self.gate.unlink()
        steps = plan(load_runbook(self.runbook), CONNECTORS, PROCESSORS)
        return Executor(self.repo, steps).resume(self.run_id).result.status


def spawn(args: Sequence[str], extra_path: Sequence[Path] = ()) -> subprocess.Popen[str]:
    paths = [*map(str, extra_path), str(TESTS), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(
    ready: Callable[[], bool], child: subprocess.Popen[str], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            _, errors = child.communicate()
            pytest.fail(f"the run ended early with code {child.returncode}: {errors}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the run did not get far enough in time")
        time.sleep(0.02)


def finish(child: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for `child`; its exit code and stdout (stderr shown on failure)."""
    try:
        output, errors = child.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the run did not exit")
    assert child.returncode == 0 or child.returncode < 0, errors
    return child.returncode, output


def test_sigterm_leaves_an_interrupted_run_with_readable_artifacts(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    child = scene.start()
    scene.wait_until_held(child)
    child.send_signal(signal.SIGTERM)
    code, output = finish(child)
    assert code == 0
    assert output.split()[-1] == "interrupted"
    result = scene.repo.executions.get(scene.run_id)
    assert result.status == "interrupted"
    assert result.error == "interrupted by SIGTERM"
    assert {a for a, o in result.artifacts.items() if o.status == "completed"} == (
        SAVED_BEFORE_SIGNAL
    )
    for artifact_id in ("held", "after"):
        assert result.artifacts[artifact_id].status == "skipped"
        assert result.artifacts[artifact_id].reason == "interrupted by SIGTERM"
    for artifact_id in SAVED_BEFORE_SIGNAL:
        message = scene.repo.artifacts.get(scene.run_id, artifact_id)
        assert message.content["value"] == CONTENT[artifact_id]
    assert not scene.repo.backend.exists(run_key(scene.run_id, OWNER))
    assert verify(scene.repo).ok


def kill_while_held(scene: Scene) -> int:
    """Start the run, SIGKILL it while `held` runs; the dead executor's pid."""
    child = scene.start()
    scene.wait_until_held(child)
    child.kill()
    code, _ = finish(child)
    assert code == -signal.SIGKILL
    assert scene.repo.executions.get(scene.run_id).status == "running"
    assert scene.repo.backend.exists(run_key(scene.run_id, OWNER))  # a stale owner record
    return child.pid


def test_resume_after_sigkill_runs_the_unfinished_steps(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    dead = kill_while_held(scene)
    assert scene.resume() == "completed"
    assert scene.ran("held") == [dead, os.getpid()]  # cut short, then run again
    assert scene.ran("after") == [os.getpid()]
    assert scene.ran("up") == [dead]  # a process step saved before the kill is not recomputed
    assert scene.ran("side") == [dead]
    result = scene.repo.executions.get(scene.run_id)
    assert result.status == "completed"
    for artifact_id, value in CONTENT.items():
        assert scene.repo.artifacts.get(scene.run_id, artifact_id).content["value"] == value
    assert not scene.repo.backend.exists(run_key(scene.run_id, OWNER))
    assert verify(scene.repo).ok


def test_resume_after_sigkill_does_not_rerun_saved_sources(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    dead = kill_while_held(scene)
    assert scene.resume() == "completed"
    assert scene.ran("src") == [dead]


def test_a_processor_from_an_entry_point_is_found_and_runs(tmp_path: Path) -> None:
    assert "shout" not in registry.processors()  # only the child sees the fake distribution
    repo = Repository.init(str(tmp_path / "repo"))
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text(
        "name: entry_point\nartifacts:\n"
        "  src:\n    source: {type: fixed, properties: {value: hello}}\n"
        "  loud:\n    inputs: [src]\n    process: {type: shout}\n"
    )
    run_id = new_run_id()
    child = spawn([str(repo.url), str(runbook), run_id, "--installed"], extra_path=[FAKEPLUG])
    code, output = finish(child)
    assert code == 0
    lines = output.splitlines()
    assert "shout" in lines[0].split()
    assert lines[-1] == "completed"
    assert repo.artifacts.get(run_id, "loud").content == {"value": "HELLO!"}
    assert verify(repo).ok
