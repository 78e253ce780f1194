"""`cas gc`: retention keeps what it promises, the sweep removes only unreferenced old data.

The race test runs writers in other processes while the parent collects in a loop
with no grace period; every run they wrote must verify afterwards (docs/design.md §10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cas.cache import StepCache, StepKey
from cas.cli import app
from cas.digest import Digest
from cas.errors import IntegrityError
from cas.gc import GcResult, Policy, collect, parse_duration, select_runs
from cas.model import ArtifactOutcome, ExecutionResult, Message
from cas.objects import LocalBackend, list_times
from cas.owner import OWNER, current_owner
from cas.repository import Repository
from cas.stores import run_key
from cas.testing.services import S3Bucket
from cas.testing.store_helpers import between_mark_and_listing, memory_backend, s3_backend
from cas.verify import verify

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = 10 * 24 * 3600.0  # seconds: how far back `_age` moves files


def _save_run(
    repo: Repository,
    run_id: str,
    contents: dict[str, dict[str, Any]],
    *,
    status: str = "completed",
    started: datetime = NOW,
) -> None:
    for artifact_id, content in contents.items():
        repo.artifacts.save(run_id, artifact_id, Message(id=artifact_id, content=content))
    outcomes = {artifact_id: ArtifactOutcome("completed") for artifact_id in contents}
    final = status != "running"
    result = ExecutionResult(
        run_id=run_id,
        status=status,  # type: ignore[arg-type]
        started_at=started,
        ended_at=started + timedelta(seconds=1) if final else None,
        artifacts=outcomes,
    )
    repo.executions.save(run_id, result)


def _age(repo: Repository, seconds: float = OLD) -> None:
    """Move every stored file's mtime back (a local repository only)."""
    assert isinstance(repo.backend, LocalBackend)
    past = time.time() - seconds
    for folder, _dirs, files in os.walk(repo.backend.root):
        for name in files:
            os.utime(Path(folder) / name, (past, past))


def _stored(repo: Repository) -> set[str]:
    return {
        key
        for key, _mtime, _size in list_times(repo.backend, "")
        if key.split("/", 1)[0] in {"objects", "chunks", "lists"}
    }


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repository = Repository.init(str(tmp_path / "repo"), fsync=False)
    repository.payloads.threshold = 4096
    return repository


# retention ---------------------------------------------------------------------------

# Runs: (id, status, days since start). The newest first: r5, r4, r3, r2, r1.
RUNS = [
    ("r1", "completed", 40),
    ("r2", "failed", 20),
    ("r3", "completed", 10),
    ("r4", "partial", 2),
    ("r5", "completed", 1),
]


@pytest.mark.parametrize(
    ("policy", "removed"),
    [
        (Policy(), []),  # no rule: every run stays
        (Policy(keep_last=0), ["r1", "r2", "r3", "r4", "r5"]),
        (Policy(keep_last=2), ["r1", "r2", "r3"]),
        (Policy(keep_last=10), []),
        (Policy(keep_within=timedelta(days=15)), ["r1", "r2"]),
        (Policy(keep_within=timedelta(hours=12)), ["r1", "r2", "r3", "r4", "r5"]),
        (Policy(keep_failed=timedelta(days=30)), ["r1", "r3", "r5"]),
        (Policy(keep_failed=timedelta(days=3)), ["r1", "r2", "r3", "r5"]),
        (Policy(keep_last=1, keep_failed=timedelta(days=30)), ["r1", "r3"]),
        (Policy(keep_last=1, keep=frozenset({"r1"})), ["r2", "r3", "r4"]),
        (Policy(keep_within=timedelta(days=5), keep=frozenset({"r3"})), ["r1", "r2"]),
    ],
)
def test_retention_policies_keep_exactly_what_they_promise(
    repo: Repository, policy: Policy, removed: list[str]
) -> None:
    for run_id, status, days in RUNS:
        _save_run(
            repo, run_id, {"a": {"run": run_id}}, status=status, started=NOW - timedelta(days=days)
        )
    assert select_runs(repo, policy, now=NOW) == removed
    result = collect(repo, policy, now=NOW)
    assert sorted(result.runs_removed) == removed
    assert sorted(repo.run_ids()) == sorted({r for r, _, _ in RUNS} - set(removed))
    assert verify(repo).ok


def test_removed_runs_leave_the_batch_marks_that_name_them(repo: Repository) -> None:
    from cas.index import RunIndex

    with repo.marked_together(["old", "new"]):  # as a push of two runs leaves them
        _save_run(repo, "old", {"a": {"x": 1}}, started=NOW - timedelta(days=10))
        _save_run(repo, "new", {"a": {"x": 2}}, started=NOW)
    assert RunIndex(repo).marks() == ["new", "old"]
    assert collect(repo, Policy(keep_last=1), now=NOW).runs_removed == ["old"]
    assert RunIndex(repo).marks() == ["new"]  # whether or not an index was written yet
    assert [row.run_id for row in repo.list_runs()] == ["new"]
    assert RunIndex(repo).marks() == []


def test_running_runs_with_a_live_owner_and_runs_without_result_are_never_removed(
    repo: Repository,
) -> None:
    old = NOW - timedelta(days=100)
    _save_run(repo, "live", {"a": {"x": 1}}, status="running", started=old)
    repo.backend.write(run_key("live", OWNER), json.dumps(current_owner()).encode())
    _save_run(repo, "dead", {"a": {"x": 2}}, status="running", started=old)  # no owner
    repo.artifacts.save("noresult", "a", Message(id="a", content={"x": 3}))
    removed = collect(repo, Policy(keep_last=0), now=NOW).runs_removed
    assert removed == ["dead"]
    assert sorted(repo.run_ids()) == ["live", "noresult"]


def test_removed_runs_leave_no_files_no_index_rows_and_no_cache_records(repo: Repository) -> None:
    _save_run(repo, "old", {"a": {"v": "old"}}, started=NOW - timedelta(days=9))
    _save_run(repo, "new", {"a": {"v": "new"}}, started=NOW)
    key = StepKey("p", "1", {}, ())
    old_digest = repo.artifacts.entry("old", "a").digest
    StepCache(repo).store(key, old_digest, "old", "a")
    assert {row.run_id for row in repo.list_runs()} == {"old", "new"}
    _age(repo)
    result = collect(repo, Policy(keep_last=1), now=NOW)
    assert result.runs_removed == ["old"]
    assert result.objects_removed == 1
    assert result.cache_records_removed == 1
    assert not list(repo.backend.list("runs/old"))
    assert {row.run_id for row in repo.list_runs()} == {"new"}
    assert StepCache(repo).record(key) is None
    assert verify(repo).ok


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("0") == timedelta(0)
    for bad in ("", "10", "1y", "h", "-1h", "1h 2m"):
        with pytest.raises(Exception, match="invalid duration"):
            parse_duration(bad)


# sweep -------------------------------------------------------------------------------


def _orphans(repo: Repository) -> tuple[Digest, Digest]:
    """Two unreferenced payloads: one small object and one chunked (list + chunks)."""
    small = repo.payloads.put(b'{"orphan":1}')
    rows = [{"file": f"f{i}", "text": "z" * 300 + str(i)} for i in range(60)]
    large = repo.payloads.put(json.dumps({"rows": rows}).encode())
    return small, large


def test_unreferenced_objects_older_than_the_grace_are_removed_and_younger_kept(
    repo: Repository,
) -> None:
    rows = [{"file": f"k{i}", "text": "k" * 300 + str(i)} for i in range(40)]
    _save_run(repo, "keep", {"small": {"a": 1}, "big": {"rows": rows}})
    old_small, old_large = _orphans(repo)
    _age(repo)
    young = repo.payloads.put(b'{"young":1}')
    before = _stored(repo)
    result = collect(repo, Policy())
    assert result.runs_removed == []
    assert result.objects_removed == 1 and result.lists_removed == 1
    assert result.chunks_removed > 0 and result.bytes_freed > 0
    assert result.kept_young == 1
    assert not repo.payloads.exists(old_small) and not repo.payloads.exists(old_large)
    assert repo.payloads.exists(young)
    assert len(before) - len(_stored(repo)) == 2 + result.chunks_removed
    # the referenced chunked payload keeps its chunks and reads back
    assert repo.artifacts.get("keep", "big").content == {"rows": rows}
    assert verify(repo).ok


def test_chunks_shared_with_an_unreferenced_payload_are_kept(repo: Repository) -> None:
    rows = [{"file": f"s{i}", "text": "s" * 300 + str(i)} for i in range(40)]
    _save_run(repo, "keep", {"big": {"rows": rows}})
    # an orphan sharing most chunks with the kept payload
    repo.payloads.put(json.dumps({"rows": [*rows, {"file": "extra"}]}).encode())
    _age(repo)
    result = collect(repo, Policy(grace=timedelta(0)))
    assert result.lists_removed == 1
    assert repo.artifacts.get("keep", "big").content == {"rows": rows}
    assert verify(repo).ok


def test_old_temporaries_are_removed(repo: Repository) -> None:
    _save_run(repo, "keep", {"a": {"a": 1}})
    digest = repo.artifacts.entry("keep", "a").digest
    folder = Path(repo.backend.url) / "objects" / digest.hex[:2]
    (folder / ".stale.abc.tmp").write_bytes(b"x")
    _age(repo)
    assert collect(repo, Policy()).temporaries_removed == 1
    assert verify(repo).problems == []


def test_after_gc_verify_is_clean_and_every_remaining_run_reads(repo: Repository) -> None:
    shared = {"shared": True}
    for n in range(6):
        rows = [{"n": n, "i": i, "t": "q" * 200} for i in range(30)]
        contents: dict[str, dict[str, Any]] = {"s": shared, "u": {"n": n}, "big": {"rows": rows}}
        _save_run(repo, f"run{n}", contents, started=NOW - timedelta(days=6 - n))
    _orphans(repo)
    _age(repo)
    result = collect(repo, Policy(keep_last=3), now=NOW)
    assert sorted(result.runs_removed) == ["run0", "run1", "run2"]
    assert verify(repo).ok
    for run_id in repo.run_ids():
        for artifact_id in repo.artifacts.list_artifacts(run_id):
            repo.artifacts.get(run_id, artifact_id)


def test_dry_run_deletes_nothing_and_reports_the_same_numbers(tmp_path: Path) -> None:
    results: list[GcResult] = []
    snapshots = []
    for dry in (True, False):
        repo = Repository.init(str(tmp_path / f"repo-{dry}"), fsync=False)
        repo.payloads.threshold = 4096
        for n in range(4):
            _save_run(repo, f"run{n}", {"u": {"n": n}}, started=NOW - timedelta(days=4 - n))
        _orphans(repo)
        _age(repo)
        before = _stored(repo)
        results.append(collect(repo, Policy(keep_last=2), dry_run=dry, now=NOW))
        snapshots.append((before, _stored(repo), repo.run_ids()))
    dry_result, real = results
    assert snapshots[0][0] == snapshots[0][1]  # nothing deleted
    assert len(snapshots[0][2]) == 4
    assert snapshots[1][1] < snapshots[1][0]
    assert dry_result.dry_run and not real.dry_run
    assert {**dry_result.to_dict(), "dry_run": False} == real.to_dict()


def test_a_manifest_that_cannot_be_read_stops_gc_before_any_delete(repo: Repository) -> None:
    _save_run(repo, "r1", {"a": {"n": 1}, "b": {"n": 2}})
    garbage, _ = repo.objects.put(b'{"named": "by nothing"}')
    manifest = Path(repo.url) / run_key("r1", "manifest.jsonl")
    lines = manifest.read_bytes().split(b"\n")
    manifest.write_bytes(b"\n".join([lines[0][:-5] + b"xxxxx", *lines[1:]]))  # damaged middle
    _age(repo)
    with pytest.raises(
        IntegrityError,
        match=(
            r"^gc stopped before deleting anything: the manifest of run r1 cannot be read "
            r"\(.*\); run 'cas verify'$"
        ),
    ):
        collect(repo, Policy(grace=timedelta(0)))
    assert repo.payloads.exists(garbage)


def test_a_dedup_hit_renews_an_old_object_so_the_sweep_keeps_it(repo: Repository) -> None:
    digest, written = repo.objects.put(b'{"old":1}')
    assert written
    _age(repo)
    assert isinstance(repo.backend, LocalBackend)
    path = repo.backend.root / repo.objects.key(digest)
    assert time.time() - path.stat().st_mtime > OLD / 2
    _saved, written = repo.objects.put(b'{"old":1}')  # a writer's dedup hit
    assert not written
    assert time.time() - path.stat().st_mtime < 60
    assert collect(repo, Policy()).objects_removed == 0


def test_an_entry_written_after_the_mark_is_seen_by_the_re_check(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer names an old object after the mark read the manifests: the re-check sees it."""
    digest, _ = repo.objects.put(Message(id="a", content={"late": 1}).payload())
    _age(repo)

    def late_writer() -> None:
        _save_run(repo, "late", {"a": {"late": 1}})
        _age(repo)  # as if the dedup hit could not renew the mtime (object stores)

    between_mark_and_listing(monkeypatch, late_writer)
    result = collect(repo, Policy(grace=timedelta(0)))
    assert result.objects_removed == 0
    assert repo.payloads.exists(digest)
    assert verify(repo).ok


# concurrency -------------------------------------------------------------------------

POOL = 2000  # shared small payloads the old runs hold
OLD_RUNS = 40
WRITER = textwrap.dedent(
    """
    import sys, random, time
    from datetime import UTC, datetime
    from cas.model import ArtifactOutcome, ExecutionResult, Message
    from cas.repository import Repository

    root, name, count, pool, old = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    repo = Repository.open(root, fsync=False)
    repo.payloads.threshold = 4096
    rng = random.Random(name)
    for n in range(count):
        run_id = f"{name}-{n:03d}"
        contents = {f"s{k}": {"shared": k} for k in rng.sample(range(pool), 10)}
        contents["u"] = {"unique": run_id}
        size = 30 + rng.randrange(old)
        contents["big"] = {"rows": [{"i": i, "t": "b" * 200} for i in range(size)]}
        for artifact_id, content in contents.items():
            repo.artifacts.save(run_id, artifact_id, Message(id=artifact_id, content=content))
        outcomes = {a: ArtifactOutcome("completed") for a in contents}
        repo.executions.save(
            run_id, ExecutionResult(run_id, "completed", datetime.now(UTC), artifacts=outcomes)
        )
        print(run_id, flush=True)
        time.sleep(0.02)
    """
)


def test_gc_racing_with_writers_in_other_processes_loses_nothing(repo: Repository) -> None:
    # Old runs hold the content the writers dedup against. Each pass un-pins one more old
    # run, so its (old, now unreferenced) content is swept while writers name it again.
    per_run = POOL // OLD_RUNS
    old_runs = [f"old{k:02d}" for k in range(OLD_RUNS)]
    for k, run_id in enumerate(old_runs):
        contents: dict[str, dict[str, Any]] = {
            f"s{j}": {"shared": k * per_run + j} for j in range(per_run)
        }
        contents["big"] = {"rows": [{"i": i, "t": "b" * 200} for i in range(30 + k)]}
        _save_run(repo, run_id, contents, started=NOW - timedelta(days=400))
    _age(repo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    args = ["60", str(POOL), str(OLD_RUNS)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, repo.url, f"w{w}", *args],
            stdout=subprocess.PIPE,
            env=env,
        )
        for w in range(4)
    ]
    written: list[str] = []
    for writer in writers:  # every writer has begun before the first pass
        assert writer.stdout is not None
        written.append(writer.stdout.readline().decode().strip())
    passes = swept = 0
    deadline = time.monotonic() + 60
    while any(writer.poll() is None for writer in writers) and time.monotonic() < deadline:
        pinned = frozenset(old_runs[passes + 1 :])
        policy = Policy(keep_within=timedelta(days=1), keep=pinned, grace=timedelta(0))
        result = collect(repo, policy)
        passes += 1
        swept += result.objects_removed + result.lists_removed + result.chunks_removed
    for writer in writers:
        assert writer.stdout is not None
        written += writer.stdout.read().decode().split()  # not communicate(): keeps the buffer
        assert writer.wait(timeout=30) == 0
    collect(repo, Policy(keep_within=timedelta(days=1), grace=timedelta(0)))
    assert passes >= 2
    assert swept > 0  # the loop really deleted while they wrote
    assert len(written) == 240
    assert set(written) <= set(repo.run_ids())
    assert not [run_id for run_id in repo.run_ids() if run_id.startswith("old")]
    report = verify(repo, written)
    assert report.ok, [problem.to_dict() for problem in report.problems[:5]]


S3_WRITER = textwrap.dedent(
    """
    import json, sys, random, time
    from datetime import UTC, datetime
    from pathlib import Path
    from cas.locks import WRITER, locked
    from cas.model import ArtifactOutcome, ExecutionResult, Message
    from cas.repository import Repository

    url, options, name, generation, stop = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6]
    small = int(sys.argv[6])
    repo = Repository.open(url, **options)
    repo.payloads.threshold = 4096
    rng = random.Random(name)
    n = 0
    while not Path(stop).exists() and n < 30:  # until the parent's passes are done
        n += 1
        run_id = f"{name}-{n:03d}"
        g = int(Path(generation).read_text())
        contents = {f"s{k}": {"shared": k, "gen": g} for k in rng.sample(range(small), 3)}
        contents["u"] = {"unique": run_id}
        rows = [{"gen": g, "i": i, "t": "b" * 2100} for i in sorted(rng.sample(range(60), 5))]
        contents["big"] = {"rows": [*rows, {"run": run_id}]}  # decoy chunks under a new list
        with locked(repo.backend, WRITER, wait=120):  # what an executor run or a push holds
            for artifact_id, content in contents.items():
                repo.artifacts.save(run_id, artifact_id, Message(id=artifact_id, content=content))
            outcomes = {a: ArtifactOutcome("completed") for a in contents}
            result = ExecutionResult(run_id, "completed", datetime.now(UTC), artifacts=outcomes)
            repo.executions.save(run_id, result)
        print(run_id, flush=True)
        time.sleep(0.2)  # a bounded number of runs, however fast the writes
    """
)
S3_SMALL, S3_WRITERS, S3_PASSES = 12, 3, 6


def _decoy(generation: int) -> dict[str, dict[str, Any]]:
    """A generation's content: the small objects and chunks the writers will reuse."""
    contents: dict[str, dict[str, Any]] = {
        f"s{k}": {"shared": k, "gen": generation} for k in range(S3_SMALL)
    }
    # Rows over 2 KiB: each is one chunk, the same bytes in any payload that holds it.
    contents["big"] = {"rows": [{"gen": generation, "i": i, "t": "b" * 2100} for i in range(60)]}
    return contents


@pytest.mark.s3
def test_gc_on_s3_with_no_grace_racing_with_locking_writers_loses_nothing(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """Object stores cannot renew an object on a dedup hit: the writer locks protect it.

    Each pass the parent saves a run of new content that starts 400 days ago, tells
    the writer processes to reuse that content, waits past the one-second margin and
    collects with ``grace=0``, removing that run: its objects and chunks are old and
    unreferenced but for the writers' runs. The writers save runs (each under a writer
    lock, as an executor or a push holds one) that reuse them: small objects by dedup
    hit, and a random few of its 60 chunks under a new chunk list (a chunk is
    protected only by the lists the sweep listed). Every run written verifies
    afterwards. With `needs_locks` returning False this loses chunks (design §10).
    """
    url, options = s3_bucket
    url = f"{url}/race"
    repo = Repository.init(url, **options)
    repo.payloads.threshold = 4096
    generation = tmp_path / "generation"
    _save_run(repo, "decoy000", _decoy(0), started=NOW - timedelta(days=400))
    generation.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    stop = tmp_path / "stop"
    args = [str(generation), str(stop), str(S3_SMALL)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", S3_WRITER, url, json.dumps(options), f"w{w}", *args],
            stdout=subprocess.PIPE,
            env=env,
        )
        for w in range(S3_WRITERS)
    ]
    swept = 0
    for passes in range(1, S3_PASSES + 1):
        _save_run(repo, f"decoy{passes:03d}", _decoy(passes), started=NOW - timedelta(days=400))
        generation.write_text(str(passes))
        time.sleep(1.2)  # the decoy's objects are now older than the mark's margin
        policy = Policy(keep_within=timedelta(days=1), grace=timedelta(0))
        result = collect(repo, policy, lock_wait=120)
        swept += result.objects_removed + result.lists_removed + result.chunks_removed
    stop.touch()
    written: list[str] = []
    for writer in writers:
        assert writer.stdout is not None
        written += writer.stdout.read().decode().split()
        assert writer.wait(timeout=60) == 0
    assert swept > 0  # the loop really deleted while they wrote
    assert len(written) >= S3_PASSES
    assert set(written) <= set(repo.run_ids())
    report = verify(repo, written)
    assert report.ok, [problem.to_dict() for problem in report.problems[:5]]
    assert not list(repo.backend.list("locks"))


# other backends ----------------------------------------------------------------------


@pytest.fixture
def memory_repo() -> Iterator[Repository]:
    with memory_backend() as backend:
        repository = Repository(backend, {"schema_packages": []})
        repository.payloads.threshold = 4096
        yield repository


def _basic_sweep(repo: Repository) -> None:
    rows = [{"file": f"m{i}", "text": "m" * 300 + str(i)} for i in range(40)]
    _save_run(repo, "gone", {"a": {"gone": 1}}, started=NOW - timedelta(days=9))
    _save_run(repo, "keep", {"a": {"keep": 1}, "big": {"rows": rows}}, started=NOW)
    _orphans(repo)
    time.sleep(2.1)  # object stores cannot backdate: wait past grace 0 and the 1 s margin
    dry = collect(repo, Policy(keep_last=1, grace=timedelta(0)), dry_run=True, now=NOW)
    result = collect(repo, Policy(keep_last=1, grace=timedelta(0)), now=NOW)
    assert {**dry.to_dict(), "dry_run": False} == result.to_dict()
    assert result.runs_removed == ["gone"]
    assert result.objects_removed == 2 and result.lists_removed == 1
    assert result.chunks_removed > 0
    assert repo.run_ids() == ["keep"]
    assert repo.artifacts.get("keep", "big").content == {"rows": rows}
    assert verify(repo).ok
    young = repo.payloads.put(b'{"young":1}')
    assert collect(repo, Policy(grace=timedelta(hours=1))).objects_removed == 0
    assert repo.payloads.exists(young)


def test_gc_on_memory(memory_repo: Repository) -> None:
    _basic_sweep(memory_repo)


@pytest.mark.s3
def test_gc_on_s3(s3_bucket: S3Bucket) -> None:
    url, options = s3_bucket
    repository = Repository(s3_backend(url, options), {"schema_packages": []})
    repository.payloads.threshold = 4096
    _basic_sweep(repository)


# command line ------------------------------------------------------------------------


def test_cas_gc_command(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(str(root), fsync=False)
    for n in range(3):
        _save_run(repo, f"run{n}", {"u": {"n": n}}, started=NOW - timedelta(days=3 - n))
    _age(repo)
    runner = CliRunner()
    base = ["--repo", str(root), "gc", "--keep-last", "1", "--keep", "run0"]
    dry = runner.invoke(app, [*base, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    body = json.loads(dry.stdout)
    assert body["dry_run"] and body["runs_removed"] == ["run1"] and body["objects_removed"] == 1
    done = runner.invoke(app, base)
    assert done.exit_code == 0, done.output
    assert "removed 1 run, 1 objects" in done.stdout
    assert sorted(repo.run_ids()) == ["run0", "run2"]
    bad = runner.invoke(app, ["--repo", str(root), "gc", "--grace", "soon"])
    assert bad.exit_code == 2
