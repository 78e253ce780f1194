"""History benchmark: the run index on 1,000,000 synthetic runs against the directory scan.

Run with ``python -m benchmarks.history`` (``--help`` for flags). Writes under
``benchmarks/out/history/`` (git-ignored):

1. ``index-repo``: a repository whose index holds ``--runs`` synthetic runs (about
   ``--artifacts`` artifact rows each), written straight into a few large Parquet
   files through the index's own schemas, sort order and writer. Statuses, runbooks
   and timing are random; each artifact's digest changes in 10% of runs and is
   otherwise reused from an earlier run (``cached_from`` names that run), as in
   repeated scans.
2. ``scan-repo``: ``--scan-runs`` real run folders saved through the stores.

Then, in this one process, each query runs ``--repeat`` times on the index (median
reported; the first call, which opens files cold, is reported apart): newest 50
(answered from the pointer's ``head``); the 50 just past the head (from Parquet);
newest 50 failed in a date range; count by status; runs holding a digest. The same
listing through the directory scan (`Repository.runs`, one result and one manifest
read per run) is timed on the scan repo and scaled linearly. Finally
``cas runs --limit 50`` runs end to end in a subprocess, process start included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cas.index import RunIndex, artifacts_schema, runs_schema, sort_artifacts, sort_runs
from cas.index_rows import HEAD_SIZE, POINTER, Pointer, RunQuery
from cas.model import ArtifactOutcome, ExecutionResult, Message
from cas.repository import Repository

OUT = Path(__file__).resolve().parent / "out" / "history"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP_SECONDS = 30  # one run every 30 s: 1M runs span about a year
STATUSES = np.array(["completed", "failed", "partial", "interrupted"])
STATUS_P = [0.90, 0.05, 0.04, 0.01]
TARGET_QUERY = 0.050
TARGET_CLI = 0.5
TARGET_BYTES = 60.0


def run_ids(first: int, count: int) -> pa.Array:
    """UUIDv7-shaped ids from the run number (time-sortable like `new_run_id`)."""
    numbers = np.arange(first, first + count, dtype=np.int64)
    millis = (T0.timestamp() + numbers * STEP_SECONDS) * 1000
    return pa.array(
        [
            f"{m:012x}"[:8] + f"-{m:012x}"[8:] + f"-7{n % 4096:03x}-8{n % 4096:03x}-{n:012x}"
            for m, n in zip(millis.astype(np.int64).tolist(), numbers.tolist(), strict=True)
        ],
        pa.string(),
    )


def runs_chunk(first: int, count: int, artifacts: int, rng: np.random.Generator) -> pa.Table:
    ids = run_ids(first, count)
    seconds = (np.arange(first, first + count) * STEP_SECONDS).astype("timedelta64[s]")
    started = np.datetime64(T0.replace(tzinfo=None)) + seconds
    duration = np.round(rng.gamma(2.0, 30.0, count), 3)
    ended = started + (duration * 1e6).astype("timedelta64[us]")
    status = rng.choice(STATUSES, count, p=STATUS_P)
    failed = np.where(status == "failed", 1, 0).astype(np.int32)
    columns = {
        "run_id": ids,
        "status": pa.array(status, pa.string()),
        "runbook": pa.array(rng.choice([f"runbook-{i}" for i in range(10)], count)),
        "started_at": pa.array(started, pa.timestamp("us", tz="UTC")),
        "ended_at": pa.array(ended, pa.timestamp("us", tz="UTC")),
        "duration_seconds": pa.array(duration),
        "completed": pa.array(np.full(count, artifacts, np.int32) - failed),
        "failed": pa.array(failed),
        "skipped": pa.array(np.zeros(count, np.int32)),
        "artifacts": pa.array(np.full(count, artifacts, np.int32) - failed),
        "tenant": pa.nulls(count, pa.string()),
    }
    return pa.table(columns, schema=runs_schema())


class Digests:
    """Per artifact slot, the current digest and the run that first produced it."""

    def __init__(self, slots: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.current = rng.integers(0, 256, (slots, 32), dtype=np.uint8)
        self.since = np.zeros(slots, dtype=np.int64)

    def advance(self, run: int) -> tuple[np.ndarray, np.ndarray]:
        """This run's digests and cached-from run numbers (-1 where it computed anew)."""
        changed = self.rng.random(len(self.since)) < 0.10
        self.current[changed] = self.rng.integers(0, 256, (int(changed.sum()), 32), np.uint8)
        self.since[changed] = run
        cached = np.where(changed, -1, self.since)
        return self.current.copy(), cached


def artifacts_chunk(first: int, runs: pa.Table, slots: int, digests: Digests) -> pa.Table:
    count = runs.num_rows
    blocks, cached = [], []
    for run in range(first, first + count):
        block, since = digests.advance(run)
        blocks.append(block)
        cached.append(since)
    flat = np.concatenate(blocks).reshape(-1)
    since = np.concatenate(cached)
    cached_ids = run_ids(0, max(first + count, 1)).take(pa.array(np.maximum(since, 0)))
    cached_from = pa.compute.if_else(pa.array(since >= 0), cached_ids, pa.scalar(None, pa.string()))
    rng = digests.rng
    columns = {
        "run_id": runs["run_id"]
        .combine_chunks()
        .take(pa.array(np.repeat(np.arange(count), slots))),
        "started_at": runs["started_at"]
        .combine_chunks()
        .take(pa.array(np.repeat(np.arange(count), slots))),
        "artifact_id": pa.array(np.tile([f"step-{i:02d}" for i in range(slots)], count)),
        "schema_name": pa.array(np.tile([f"schema_{i % 5}" for i in range(slots)], count)),
        "schema_version": pa.array(np.full(count * slots, "1.0.0")),
        "digest": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(32), count * slots, [None, pa.py_buffer(flat.tobytes())]
        ),
        "size": pa.array(rng.integers(200, 2_000_000, count * slots)),
        "outcome": pa.array(np.full(count * slots, "completed")),
        "error_type": pa.nulls(count * slots, pa.string()),
        "cached_from": cached_from,
        "duration_seconds": pa.array(np.round(rng.gamma(1.5, 2.0, count * slots), 3)),
    }
    return pa.table(columns, schema=artifacts_schema())


def generate_index(root: Path, runs: int, slots: int, files: int) -> Repository:
    """A repository whose index holds `runs` synthetic runs in `files` large files."""
    shutil.rmtree(root, ignore_errors=True)
    repo = Repository.init(str(root), fsync=False)
    index = RunIndex(repo)
    rng = np.random.default_rng(7)
    digests = Digests(slots, rng)
    entries, per_file = [], -(-runs // files)
    for number, first in enumerate(range(0, runs, per_file), 1):
        count = min(per_file, runs - first)
        run_table = runs_chunk(first, count, slots, rng)
        art_table = artifacts_chunk(first, run_table, slots, digests)
        entries.append(index._write_file(sort_runs(run_table), sort_artifacts(art_table), number))
        print(f"  wrote file {number}/{files}: {count} runs", file=sys.stderr)
    repo.backend.write(POINTER, Pointer(len(entries), entries, {}).to_bytes())
    index.refresh_head()  # the newest rows into the pointer, as every index write keeps them
    return repo


def generate_scan(root: Path, runs: int, slots: int) -> Repository:
    """`runs` real run folders (`slots` artifacts each, shared payloads) through the stores."""
    shutil.rmtree(root, ignore_errors=True)
    repo = Repository.init(str(root), fsync=False)
    for number in range(runs):
        run_id = f"run-{number:06d}"
        for slot in range(slots):
            message = Message(id=f"step-{slot:02d}", content={"v": (number // 10) * slots + slot})
            repo.artifacts.save(run_id, f"step-{slot:02d}", message)
        started = T0 + timedelta(seconds=number * STEP_SECONDS)
        outcomes = {f"step-{s:02d}": ArtifactOutcome("completed") for s in range(slots)}
        result = ExecutionResult(run_id, "completed", started, "scan", started, 1.0, outcomes)
        repo.executions.save(run_id, result)
    return repo


def timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    start = time.perf_counter()
    call()
    cold = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"cold_s": round(cold, 4), "median_s": round(statistics.median(times), 4)}


def index_queries(repo: Repository, runs: int, repeat: int) -> dict[str, Any]:
    index = RunIndex(repo)
    middle = T0 + timedelta(seconds=runs * STEP_SECONDS // 2)
    failed = RunQuery(status="failed", since=middle - timedelta(days=7), until=middle, limit=50)
    digest = (
        index._parquet(Pointer.read(repo.backend).names[0], "artifacts")
        .read_row_group(0, columns=["digest"])["digest"][5]
        .as_py()
        .hex()
    )
    queries: dict[str, Callable[[], Any]] = {
        "newest_50": lambda: index.runs(RunQuery(limit=50)),
        "50_past_the_head": lambda: index.runs(RunQuery(limit=50, offset=HEAD_SIZE)),
        "newest_50_failed_in_week": lambda: index.runs(failed),
        "count_by_status": index.count_by_status,
        "runs_with_digest": lambda: index.runs(RunQuery(digest=digest)),
    }
    found = {name: call() for name, call in queries.items()}
    out: dict[str, Any] = {name: timed(call, repeat) for name, call in queries.items()}
    out["rows_returned"] = {k: len(v) if isinstance(v, list) else v for k, v in found.items()}
    return out


def index_bytes(root: Path) -> dict[str, Any]:
    files = list((root / "index" / "files").iterdir())
    arts = sum(f.stat().st_size for f in files if f.name.endswith(".artifacts.parquet"))
    total = sum(f.stat().st_size for f in files)
    return {"artifacts_bytes": arts, "total_bytes": total}


def cli_runs(root: Path, repeat: int) -> dict[str, float]:
    env = {**os.environ, "CAS_REPO": str(root)}
    command = [sys.executable, "-m", "cas.cli", "runs", "--limit", "50"]
    subprocess.run(command, env=env, check=True, capture_output=True)  # warm: bytecode, cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--artifacts", type=int, default=20, help="artifact rows per run")
    parser.add_argument("--files", type=int, default=4, help="index files to write")
    parser.add_argument("--scan-runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--reuse", action="store_true", help="keep generated repositories")
    args = parser.parse_args(argv)
    index_root, scan_root = OUT / "index-repo", OUT / "scan-repo"
    if not (args.reuse and (index_root / POINTER).exists()):
        started = time.perf_counter()
        generate_index(index_root, args.runs, args.artifacts, args.files)
        print(f"generated index in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    elif Pointer.read(Repository.open(str(index_root)).backend).head is None:
        RunIndex(Repository.open(str(index_root))).refresh_head()  # generated before heads
    if not (args.reuse and (scan_root / "runs").exists()):
        generate_scan(scan_root, args.scan_runs, args.artifacts)
    report = measure(args, index_root, scan_root)
    (OUT / "history.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def measure(args: argparse.Namespace, index_root: Path, scan_root: Path) -> dict[str, Any]:
    repo = Repository.open(str(index_root))
    queries = index_queries(repo, args.runs, args.repeat)
    scan_repo = Repository.open(str(scan_root))
    scan = timed(lambda: scan_repo.runs()[:50], 2)
    sizes = index_bytes(index_root)
    rows = args.runs * args.artifacts
    per_row = sizes["artifacts_bytes"] / rows
    cli = cli_runs(index_root, 5)
    worst = max(value["median_s"] for key, value in queries.items() if key != "rows_returned")
    return {
        "runs": args.runs,
        "artifact_rows": rows,
        "index_queries": queries,
        "directory_scan": {
            "runs": args.scan_runs,
            **scan,
            "scaled_to_index_runs_s": round(scan["median_s"] * args.runs / args.scan_runs, 1),
        },
        "cas_runs_limit_50": cli,
        "index_bytes": sizes,
        "artifact_bytes_per_row": round(per_row, 2),
        "total_index_bytes_per_artifact_row": round(sizes["total_bytes"] / rows, 2),
        "targets": {
            "query_le_50ms": worst <= TARGET_QUERY,
            "cli_le_0_5s": cli["median_s"] <= TARGET_CLI,
            "bytes_le_60": per_row <= TARGET_BYTES,
        },
    }


if __name__ == "__main__":
    main()
