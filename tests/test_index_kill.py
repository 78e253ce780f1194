"""A process killed (SIGKILL) while it saves runs and writes the index loses nothing."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.index import RunIndex
from cas.index_rows import FILES, Pointer
from cas.objects import is_temp_name
from cas.repository import Repository

WRITER = """
import sys
from datetime import UTC, datetime, timedelta
from cas.index import RunIndex
from cas.index_rows import FILES, Pointer
from cas.objects import is_temp_name
from cas.model import ArtifactOutcome, ExecutionResult, Message
from cas.repository import Repository

repo = Repository.init(sys.argv[1], fsync=False)
start = int(sys.argv[2])
for number in range(start, start + 400):
    run_id = f"run-{number:05d}"
    repo.artifacts.save(run_id, "a", Message(id="a", content={"n": number}))
    began = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=number)
    outcome = {"a": ArtifactOutcome("completed")}
    repo.executions.save(run_id, ExecutionResult(run_id, "completed", began, artifacts=outcome))
    if number % 3 == 0:
        RunIndex(repo).sync()
    if number % 50 == 0:
        RunIndex(repo).compact()
    print(number, flush=True)
"""


def _expected(repo: Repository) -> list[str]:
    results = [repo.executions.get(run_id) for run_id in repo.executions.list_runs()]
    ordered = sorted(results, key=lambda r: (r.started_at, r.run_id), reverse=True)
    return [r.run_id for r in ordered if r.is_final]


@pytest.mark.slow
def test_sigkill_during_saves_and_index_writes_loses_nothing(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    rng = random.Random(7)
    start = 0
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, location, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.4, 1.2))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        start += 1000
    repo = Repository.open(location)
    # Whatever the kills interrupted, the next listing or check makes the index whole.
    report = RunIndex(repo).check(fix=True)
    assert RunIndex(repo).check().ok, report
    assert [row.run_id for row in repo.list_runs()] == _expected(repo)
    assert len(_expected(repo)) > 0
    # Files a killed writer left unnamed are swept by the next compaction.
    RunIndex(repo).compact()
    names = set(Pointer.read(repo.backend).names)
    files = [key.rsplit("/", 1)[-1] for key in repo.backend.list(FILES)]
    left = {name.split(".", 1)[0] for name in files if not is_temp_name(name)}
    assert left == names
    assert [row.run_id for row in repo.list_runs()] == _expected(repo)
