"""Sync and GC benchmark against a moto S3 server this script starts (issue 5, point 6).

Run with ``python -m benchmarks.sync`` (``--help`` for flags). In one run, with
baselines measured in the same run:

(a) full push of ``--runs`` runs of 22 Waivern-like artifacts (benchmarks/workload.py)
    from a local folder to S3, against writing the same unique objects (the bytes
    ``cas`` stores) with raw concurrent s3fs ``pipe_file`` calls from as many threads
    as the push uses; ``--repeat`` pushes, each between two raw baselines, each
    prefix deleted once measured (moto keeps objects in memory and slows as it
    fills); each push's ratio is against the mean of the two raw runs beside it,
    and the table gives their median;
(b) incremental push of one new run (2 new objects) to a remote already holding
    ``--history-runs`` runs: S3 requests beyond the new objects;
(c) ``cas gc`` of ``--gc-objects`` unreferenced objects: objects deleted per second and
    requests (``DeleteObjects`` of 1,000 keys), against a raw s3fs ``find`` then ``rm``
    of a quarter as many keys (uploading garbage to moto is the slow part).

Requests are counted with botocore's ``before-send`` event (`count_s3_requests`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blake3 import blake3

from benchmarks.workload import Workload, generate
from cas.gc import Policy, collect
from cas.model import ArtifactOutcome, ExecutionResult, Message, SchemaRef
from cas.objects import FsspecBackend
from cas.repository import Repository
from cas.sync import DEFAULT_WORKERS, transfer
from cas.testing.services import (
    MotoServer,
    S3RequestLog,
    _aws_test_env,
    _retry_on_port_clash,
    _start_moto,
    _stop_process,
    count_s3_requests,
)

BUCKET = "bench"
Row = tuple[str, str, str, str]


@contextmanager
def moto(log_dir: Path) -> Iterator[MotoServer]:
    """A moto server process for the benchmark, stopped afterwards."""
    for name, value in _aws_test_env().items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server = _retry_on_port_clash(lambda port: _start_moto(port, log_dir))
    try:
        yield server
    finally:
        _stop_process(server.process)


def _fs(repo: Repository) -> Any:
    backend = repo.backend
    assert isinstance(backend, FsspecBackend)
    return backend.fs


@contextmanager
def counted(repo: Repository) -> Iterator[S3RequestLog]:
    """Count the S3 requests `repo`'s client sends in the block."""
    with count_s3_requests(_fs(repo)) as log:
        yield log


def _ops(log: S3RequestLog) -> str:
    names = ("PutObject", "HeadObject", "GetObject", "ListObjectsV2", "DeleteObjects")
    return ", ".join(f"{n} {log.count_of(n)}" for n in names if log.count_of(n))


def ingest(repo: Repository, workload: Workload, prefix: str = "run") -> list[str]:
    """Save every run of `workload` into `repo` (a local folder; untimed setup)."""
    ids = []
    for i, artifacts in enumerate(workload.runs):
        run_id = f"{prefix}-{i:05d}"
        for a in artifacts:
            schema = SchemaRef(a.schema_name, a.schema_version)
            repo.artifacts.save(run_id, a.artifact_id, Message(a.artifact_id, a.content, schema))
        _finish(repo, run_id, [a.artifact_id for a in artifacts])
        ids.append(run_id)
    return ids


def _finish(repo: Repository, run_id: str, artifact_ids: list[str]) -> None:
    now = datetime.now(UTC)
    outcomes = {aid: ArtifactOutcome("completed") for aid in artifact_ids}
    result = ExecutionResult(
        run_id, "completed", now, runbook="bench", ended_at=now, artifacts=outcomes
    )
    repo.executions.save(run_id, result)


def stored_objects(repo: Repository) -> dict[str, bytes]:
    """Every object file of a local repository: key -> the stored (compressed) bytes."""
    root = Path(repo.url)
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in (root / "objects").glob("*/*")
        if not path.name.startswith(".")
    }


def threaded(call: Callable[[Any], object], items: Iterable[Any], workers: int) -> float:
    """Seconds to `call` every item from `workers` threads (the raw baselines)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, items))
    return time.perf_counter() - start


def raw_pipe(fs: Any, root: str, objects: dict[str, bytes], workers: int) -> float:
    """Seconds to PUT every object with `workers` threads calling ``pipe_file``."""
    return threaded(
        lambda item: fs.pipe_file(f"{root}/{item[0]}", item[1]), objects.items(), workers
    )


# (a) ---------------------------------------------------------------------------------


def _alternating(repeat: int) -> list[str]:
    """raw-1, push-1, raw-2, …, push-N, raw-N+1: each push between two raw baselines."""
    order = ["raw-1"]
    for i in range(1, repeat + 1):
        order += [f"push-{i}", f"raw-{i + 1}"]
    return order


def full_push(server: MotoServer, base: Path, runs: int, seed: int, repeat: int = 3) -> list[Row]:
    options = server.storage_options()
    workload = generate(runs, 22, seed)
    print(f"(a) workload: {workload.summary()}", flush=True)
    source = Repository.init(str(base / "source"), fsync=False)
    ingest(source, workload)
    objects = stored_objects(source)
    size = sum(len(data) for data in objects.values())
    print(f"(a) {len(objects)} unique objects, {size:,} stored bytes", flush=True)
    probe = Repository.init(f"s3://{BUCKET}/probe", **options)
    fs = _fs(probe)
    raw_s, raw_requests = [], 0
    copied_at: list[float] = []

    def progress(phase: str, _done: int, _total: int, _stored: int) -> None:
        if phase != "payloads" and not copied_at:  # the payloads are written: runs next
            copied_at.append(time.perf_counter())

    pushes: list[tuple[float, float, str, int]] = []  # seconds, payload seconds, ops, requests
    for attempt in _alternating(repeat):
        if attempt.startswith("push"):
            dest = Repository.init(f"s3://{BUCKET}/{attempt}", **options)
            copied_at.clear()
            with counted(dest) as log:
                start = time.perf_counter()
                done = transfer(source, dest, source.run_ids(), progress=progress)
                took = time.perf_counter() - start
            pushes.append((took, copied_at[-1] - start, _ops(log), log.count))
            assert done.objects_sent == len(objects), (done.objects_sent, len(objects))
            if attempt != f"push-{repeat}":  # the last one is pulled back in (a')
                fs.rm(f"{BUCKET}/{attempt}", recursive=True)
            continue
        with count_s3_requests(fs) as log:
            raw_s.append(raw_pipe(fs, f"{BUCKET}/{attempt}", objects, DEFAULT_WORKERS))
        raw_requests = log.count
        fs.rm(f"{BUCKET}/{attempt}", recursive=True)  # moto keeps it all in memory
    raw = statistics.mean(raw_s)
    n = len(objects)
    # each push against the raw runs just before and after it (the server drifts)
    ratios = [statistics.mean(raw_s[i : i + 2]) / push[0] for i, push in enumerate(pushes)]
    ratio = statistics.median(ratios)
    push_s = statistics.median(took for took, _, _, _ in pushes)
    payload_s = statistics.median(payload for _, payload, _, _ in pushes)
    each = ", ".join(f"{r:.2f}x" for r in ratios)
    push_log, push_requests = pushes[-1][2], pushes[-1][3]
    return [
        (
            "(a) raw s3fs pipe_file, 8 threads",
            f"{n / raw:,.0f} objects/s",
            f"{raw_requests:,}",
            f"{raw:.1f} s (mean of {', '.join(f'{r:.1f}' for r in raw_s)})",
        ),
        (
            f"(a) cas push, {runs:,} runs",
            f"{n / push_s:,.0f} objects/s",
            f"{push_requests:,}",
            f"{push_s:.1f} s (median of {len(pushes)}); **{ratio:.2f}x the raw rate** (median; "
            f"each push against the raw runs beside it: {each}; target >= 0.8x); {push_log}",
        ),
        (
            "(a) of which the payload phase",
            f"{n / payload_s:,.0f} objects/s",
            "",
            f"{payload_s:.1f} s (plan, checks, copies); {raw / payload_s:.2f}x the raw rate",
        ),
        (
            "(a) a folder per run instead (pushes of 10 runs or fewer)",
            "",
            f"{n + 2 * runs:,}",
            f"objects + 2 per run (manifest, result): at most {n / (n + 2 * runs):.2f}x "
            "the raw rate where each request costs the same",
        ),
        *full_pull(fs, base, runs, objects, f"{BUCKET}/push-{repeat}"),
    ]


def raw_cat(fs: Any, root: str, keys: list[str], workers: int) -> float:
    """Seconds to GET every key with `workers` threads calling ``cat_file``."""
    return threaded(lambda key: fs.cat_file(f"{root}/{key}"), keys, workers)


def full_pull(fs: Any, base: Path, runs: int, objects: dict[str, bytes], pushed: str) -> list[Row]:
    """(a') the pushed prefix pulled back into an empty folder, against raw ``cat_file``
    of the same objects (measured before and after)."""
    options = dict(fs.storage_options)
    keys = sorted(objects)
    raw_s = [raw_cat(fs, pushed, keys, DEFAULT_WORKERS)]
    source = Repository.open(f"s3://{pushed}", **options)
    dest = Repository.init(str(base / "pulled"), fsync=False)
    with counted(source) as log:
        start = time.perf_counter()
        done = transfer(source, dest, source.run_ids())
        pull_s = time.perf_counter() - start
    assert len(done.runs_sent) == runs, done.to_dict()
    raw_s.append(raw_cat(fs, pushed, keys, DEFAULT_WORKERS))
    raw = statistics.mean(raw_s)
    n = len(keys)
    return [
        (
            "(a') raw s3fs cat_file, 8 threads",
            f"{n / raw:,.0f} objects/s",
            f"{n:,}",
            f"{raw:.1f} s (runs {raw_s[0]:.1f}, {raw_s[1]:.1f})",
        ),
        (
            f"(a') cas pull of the {runs:,} runs into an empty folder",
            f"{n / pull_s:,.0f} objects/s",
            f"{log.count:,}",
            f"{pull_s:.1f} s; {raw / pull_s:.2f}x the raw rate; {_ops(log)}",
        ),
    ]


# (b) ---------------------------------------------------------------------------------


def _tiny_history(repo: Repository, runs: int) -> None:
    """`runs` runs of the same 2 small artifacts (the history is runs, not objects)."""
    for i in range(runs):
        run_id = f"hist-{i:05d}"
        for name in ("findings", "summary"):
            repo.artifacts.save(run_id, name, Message(name, {"artifact": name, "rows": [1, 2]}))
        _finish(repo, run_id, ["findings", "summary"])


def incremental_push(server: MotoServer, base: Path, history: int) -> list[Row]:
    """(b) on two remotes holding the same `history` runs: one with a folder per run
    (copied as-is), one filled by a cas push (so the runs are in packs)."""
    options = server.storage_options()
    source = Repository.init(str(base / "history"), fsync=False)
    start = time.perf_counter()
    _tiny_history(source, history)
    dest = Repository.init(f"s3://{BUCKET}/history", **options)
    # Setup, untimed: copy the history folder to the bucket as-is (a local folder's
    # manifest.jsonl is a layout the S3 reader reads), in s3fs's concurrent batches.
    fs = _fs(dest)
    files = [p for p in Path(source.url).rglob("*") if p.is_file() and "index" not in p.parts]
    payload = {
        f"{BUCKET}/history/{p.relative_to(source.url)}": p.read_bytes()
        for p in files
        if p.name != "config.json"
    }
    fs.pipe(payload)
    packed = Repository.init(f"s3://{BUCKET}/packed-history", **options)
    transfer(source, packed, source.run_ids())  # setup, untimed: the history as run packs
    print(f"(b) {history:,} runs on two remotes in {time.perf_counter() - start:.0f} s", flush=True)
    new = "new-run"
    for name in ("findings", "summary"):
        source.artifacts.save(new, name, Message(name, {"new": name}))
    _finish(source, new, ["findings", "summary"])
    rows = []
    for prefix, layout in (("history", "a folder per run"), ("packed-history", "in run packs")):
        dest = Repository.open(f"s3://{BUCKET}/{prefix}", **options)
        with counted(dest) as log:
            start = time.perf_counter()
            done = transfer(source, dest, [new])
            took = time.perf_counter() - start
        assert done.runs_sent == [new] and done.objects_sent == 2, done.to_dict()
        beyond = log.count - done.objects_sent
        packs = len(dest.packs.listed())
        rows.append(
            (
                f"(b) incremental push, 1 run to {history:,} ({layout}: {packs} packs)",
                f"{took * 1000:.0f} ms",
                f"{log.count}",
                f"**{beyond} beyond the 2 new objects** (target <= 10); {_ops(log)}",
            )
        )
    return rows


# (c) ---------------------------------------------------------------------------------


def _garbage(count: int, seed: int) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    for i in range(count):
        data = f"garbage {seed} {i}".encode()
        digest = blake3(data).hexdigest()
        objects[f"objects/{digest[:2]}/{digest[2:]}"] = data
    return objects


def gc_sweep(server: MotoServer, count: int, seed: int) -> list[Row]:
    options = server.storage_options()
    garbage = _garbage(count, seed)
    repo = Repository.init(f"s3://{BUCKET}/gc", **options)
    fs = _fs(repo)
    start = time.perf_counter()
    # The baseline deletes a quarter as many keys: uploading is the slow part on moto.
    baseline = [f"{BUCKET}/rawrm/{key}" for key in list(garbage)[: max(1000, count // 4)]]
    fs.pipe({f"{BUCKET}/gc/{key}": data for key, data in garbage.items()})
    fs.pipe(dict.fromkeys(baseline, b"x"))
    uploaded = count + len(baseline)
    print(f"(c) {uploaded:,} objects uploaded in {time.perf_counter() - start:.0f} s", flush=True)
    time.sleep(2.1)  # older than grace 0 and the one-second margin
    with count_s3_requests(fs) as log:  # the least a sweep does: list, then batch delete
        start = time.perf_counter()
        fs.rm(list(fs.find(f"{BUCKET}/rawrm")))
        raw = len(baseline) / (time.perf_counter() - start)
    rows = [
        (
            f"(c) raw s3fs find + rm of {len(baseline):,} keys",
            f"{raw:,.0f} deletes/s",
            f"{log.count:,}",
            _ops(log),
        )
    ]
    with counted(repo) as log:
        start = time.perf_counter()
        result = collect(repo, Policy(grace=timedelta(0)))
        took = time.perf_counter() - start
    assert result.objects_removed == count, result.to_dict()
    rate = count / took
    rows.append(
        (
            f"(c) cas gc, {count:,} unreferenced objects",
            f"{rate:,.0f} deletes/s",
            f"{log.count:,}",
            f"{took:.1f} s; {rate / raw:.2f}x raw; {_ops(log)}",
        )
    )
    return rows


# report ------------------------------------------------------------------------------


def machine() -> str:
    free = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    mem = next((line.split()[1] for line in free.splitlines() if line.startswith("Mem:")), "?")
    return (
        f"nproc {os.cpu_count()}; memory {mem} GiB (free -g); python {platform.python_version()}; "
        f"{platform.platform()}; moto server (python -m moto.server) on 127.0.0.1"
    )


def render(rows: list[Row]) -> str:
    lines = ["| measurement | rate | S3 requests | detail |", "|---|--:|--:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="(a) runs to push (22 artifacts)")
    parser.add_argument("--history-runs", type=int, default=10_000, help="(b) runs on the remote")
    parser.add_argument("--gc-objects", type=int, default=100_000, help="(c) garbage to sweep")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--repeat", type=int, default=3, help="(a) pushes, each between two raw baselines"
    )
    parser.add_argument("--only", choices=("a", "b", "c"), action="append", help="a part only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or ("a", "b", "c"))
    base = Path(tempfile.mkdtemp(prefix="cas-bench-sync-"))
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[MotoServer], list[Row]]]] = [
        ("a", lambda server: full_push(server, base, args.runs, args.seed, args.repeat)),
        ("b", lambda server: incremental_push(server, base, args.history_runs)),
        ("c", lambda server: gc_sweep(server, args.gc_objects, args.seed)),
    ]
    started = time.perf_counter()
    try:
        with moto(base) as server:
            FsspecBackend(f"s3://{BUCKET}", **server.storage_options()).fs.mkdir(BUCKET)
            for name, step in steps:
                if name in parts:
                    rows += step(server)
                    print(render(rows), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(f"python -m benchmarks.sync {' '.join(sys.argv[1:])}".strip())
    print(render(rows))
    print(f"\nWall time {time.perf_counter() - started:.0f} s. Machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
