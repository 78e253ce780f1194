"""Ingest benchmark: `cas` against a naive JSON-per-run store and the write floor.

Run with ``python -m benchmarks.ingest`` (``--help`` for flags). The three stores are
measured in one process, interleaved per run with a rotating order so that disk-cache
drift hits all of them alike. Only ingest is timed: the workload is generated up front
and files are counted between runs, outside the timed region.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blake3 import blake3

from benchmarks.workload import Artifact, Workload, canonical_bytes, generate

IngestFn = Callable[[str, list[Any]], None]
PrepareFn = Callable[[list[Artifact]], list[Any]]
Snapshot = dict[str, tuple[int, int]]
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
OBJECTS_DIR = "objects"  # path segment that marks content objects; everything else is a manifest


def naive_store(root: Path) -> IngestFn:
    """What the current tool does: runs/{run}/{artifact}.json, indented, not atomic."""

    def ingest(run_id: str, artifacts: list[Artifact]) -> None:
        folder = root / "runs" / run_id
        folder.mkdir(parents=True)
        for a in artifacts:
            schema = {"name": a.schema_name, "version": a.schema_version}
            message = {"id": a.artifact_id, "schema": schema, "content": a.content}
            (folder / f"{a.artifact_id}.json").write_text(json.dumps(message, indent=2))

    return ingest


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def floor_store(root: Path, fsync: bool) -> IngestFn:
    """The floor: hash every payload, write only new digests, one metadata file per run."""
    written: set[str] = set()
    shards: set[str] = set()
    (root / "objects").mkdir(parents=True)
    (root / "runs").mkdir()

    def ingest(run_id: str, artifacts: list[Artifact]) -> None:
        index: dict[str, str] = {}
        for a in artifacts:
            payload = canonical_bytes(a)
            digest = blake3(payload).hexdigest()
            index[a.artifact_id] = digest
            if digest in written:
                continue
            if digest[:2] not in shards:
                (root / "objects" / digest[:2]).mkdir(exist_ok=True)
                shards.add(digest[:2])
            _write_atomic(root / "objects" / digest[:2] / digest[2:], payload, fsync)
            written.add(digest)
        _write_atomic(root / "runs" / f"{run_id}.json", json.dumps(index).encode(), fsync)

    return ingest


def cas_adapter(root: Path, fsync: bool) -> tuple[IngestFn, PrepareFn]:
    """The only place that knows the `cas` API; raises ImportError while the core is absent.

    Messages are built by `prepare`, outside the timed save: in a pipeline the step
    builds its Message (which proves its content is plain JSON) before the store
    sees it. The saves still serialise and hash every payload, as the floor does.
    """
    from cas import model, repository

    repo = repository.Repository.init(str(root / "repo"), fsync=fsync)

    def prepare(artifacts: list[Artifact]) -> list[Any]:
        return [
            (
                a.artifact_id,
                model.Message(
                    id=a.artifact_id,
                    content=a.content,
                    schema=model.SchemaRef(a.schema_name, a.schema_version),
                ),
            )
            for a in artifacts
        ]

    def ingest(run_id: str, messages: list[Any]) -> None:
        started = datetime.now(UTC)
        for artifact_id, message in messages:
            repo.artifacts.save(run_id, artifact_id, message)
        outcomes = {aid: model.ArtifactOutcome(status="completed") for aid, _ in messages}
        result = model.ExecutionResult(
            run_id=run_id,
            status="completed",
            runbook="bench",
            started_at=started,
            ended_at=datetime.now(UTC),
            artifacts=outcomes,
        )
        repo.executions.save(run_id, result)

    return ingest, prepare


def snapshot(root: Path) -> Snapshot:
    """Every file under `root` with (inode, size), to spot files written since.

    A new or renamed-over file has a new inode, an appended one a new size; a file
    whose time was only touched (a reused object, kept safe from GC) counts as unwritten.
    """
    found: Snapshot = {}
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
                    found[entry.path] = (st.st_ino, st.st_size)
    return found


@dataclass
class Store:
    """One store under test and what was measured for it."""

    name: str
    root: Path
    ingest: IngestFn
    durability: str
    prepare: PrepareFn | None = None
    times_ns: list[int] = field(default_factory=list)
    prepare_ns: list[int] = field(default_factory=list)
    files: list[int] = field(default_factory=list)
    seen: Snapshot = field(default_factory=dict)

    def run(self, run_id: str, artifacts: list[Artifact]) -> None:
        """Time one run, then (untimed) count the files it created or rewrote."""
        start = time.perf_counter_ns()
        prepared: list[Any] = self.prepare(artifacts) if self.prepare else artifacts
        self.prepare_ns.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        self.ingest(run_id, prepared)
        self.times_ns.append(time.perf_counter_ns() - start)
        now = snapshot(self.root)
        self.files.append(sum(1 for path, sig in now.items() if self.seen.get(path) != sig))
        self.seen = now

    def report(self) -> dict[str, Any]:
        """Raw numbers: per-run timings and files, bytes on disk."""
        ms = [t / 1e6 for t in self.times_ns]
        p90 = statistics.quantiles(ms, n=10)[8] if len(ms) > 1 else ms[0]
        sizes = [(p, os.lstat(p)) for p in self.seen]
        manifest = sum(st.st_size for p, st in sizes if OBJECTS_DIR not in Path(p).parts)
        return {
            "store": self.name,
            "durability": self.durability,
            "median_ms": statistics.median(ms),
            "prepare_median_ms": statistics.median(self.prepare_ns) / 1e6,
            "p90_ms": p90,
            "files_per_run_median": statistics.median(self.files),
            "files_total": len(self.seen),
            "bytes": sum(st.st_size for _, st in sizes),
            "allocated_bytes": sum(st.st_blocks * 512 for _, st in sizes),
            "manifest_bytes": manifest,
            "ms_per_run": ms,
            "files_per_run": self.files,
        }


def build_stores(base: Path, fsync: bool) -> tuple[list[Store], str | None]:
    """The naive store, the floor and (if importable) cas, each in its own folder."""
    durable = "fsync file, rename" if fsync else "rename, no fsync"
    for name in ("naive", "floor", "cas"):
        (base / name).mkdir()
    stores = [
        Store("naive", base / "naive", naive_store(base / "naive"), "plain write, no fsync"),
        Store("floor", base / "floor", floor_store(base / "floor", fsync), durable),
    ]
    try:
        ingest, prepare = cas_adapter(base / "cas", fsync)
        label = f"Repository(fsync={fsync})"
        stores.append(Store("cas", base / "cas", ingest, label, prepare=prepare))
    except ImportError as error:
        return stores, f"cas is not importable yet ({error}); measuring the baselines only"
    return stores, None


def measure(stores: list[Store], workload: Workload) -> None:
    """Ingest every run into every store, rotating which store goes first."""
    for i, artifacts in enumerate(workload.runs):
        gc.collect()
        shift = i % len(stores)
        for store in stores[shift:] + stores[:shift]:
            store.run(f"run-{i:04d}", artifacts)


def machine_info(out: Path) -> dict[str, str]:
    """What to paste next to the table in docs/benchmarks.md."""
    try:
        df = subprocess.run(["df", "-hT", str(out)], capture_output=True, text=True, check=True)
        disk = df.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError):
        disk = "unknown"
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "disk": " ".join(disk.split()),
    }


def targets(reports: dict[str, dict[str, Any]], unique_bytes: int) -> list[str]:
    """The PASS/FAIL lines for the issue's three targets."""
    if "cas" not in reports:
        return ["SKIP all targets: cas was not measured"]
    cas, floor, naive = reports["cas"], reports["floor"], reports["naive"]
    allowed = 1.05 * (unique_bytes + cas["manifest_bytes"])
    checks = [
        ("cas time <= 1.5 x floor", cas["median_ms"], 1.5 * floor["median_ms"], "ms"),
        ("cas time <= 0.5 x naive", cas["median_ms"], 0.5 * naive["median_ms"], "ms"),
        ("cas bytes <= 1.05 x (unique payload + manifests)", cas["bytes"], allowed, "B"),
    ]
    return [
        f"{'PASS' if got <= limit else 'FAIL'} {what}: {got:,.1f} {unit} (limit {limit:,.1f})"
        for what, got, limit, unit in checks
    ]


def render(reports: dict[str, dict[str, Any]], workload: Workload, info: dict[str, str]) -> str:
    """The Markdown table, the targets and the machine, ready to paste."""
    floor, naive = reports["floor"]["median_ms"], reports["naive"]["median_ms"]
    lines = [
        f"Workload: {workload.summary()}",
        "",
        "| store | durability | median ms/run | p90 ms/run | files/run | bytes on disk "
        "| allocated | time vs floor | time vs naive |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in reports.values():
        lines.append(
            f"| {r['store']} | {r['durability']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['files_per_run_median']:g} | {r['bytes'] / 1e6:,.1f} MB "
            f"| {r['allocated_bytes'] / 1e6:,.1f} MB | {r['median_ms'] / floor:.2f}x "
            f"| {r['median_ms'] / naive:.2f}x |"
        )
    if "cas" in reports:
        built = reports["cas"]["prepare_median_ms"]
        lines += [
            "",
            f"cas Message construction (untimed above, paid by the step): {built:.2f} ms/run",
        ]
    lines += ["", f"Unique payload bytes: {workload.unique_payload_bytes:,}", ""]
    lines += targets(reports, workload.unique_payload_bytes)
    lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items())]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--artifacts", type=int, default=22)
    parser.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent of the temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the stores after the run")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the workload, measure the stores, print the results."""
    args = parse_args(argv)
    print(f"generating {args.runs} runs x {args.artifacts} artifacts ...", file=sys.stderr)
    workload = generate(args.runs, args.artifacts, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.out))
    try:
        stores, warning = build_stores(base, args.fsync)
        if warning:
            print(f"NOTE: {warning}", file=sys.stderr)
        measure(stores, workload)
        reports = {s.name: s.report() for s in stores}
        info = machine_info(base)
    finally:
        if args.keep:
            print(f"stores kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base)
    if args.json:
        extra = {"unique_payload_bytes": workload.unique_payload_bytes, "fsync": args.fsync}
        print(json.dumps({"machine": info, **extra, "stores": list(reports.values())}))
    else:
        print(render(reports, workload, info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
