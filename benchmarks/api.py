"""API throughput: ``cas serve`` answering ``GET /v1/runs?limit=50`` under wrk.

Run with ``python -m benchmarks.api`` (``--help`` for flags; needs ``wrk`` on the
PATH, e.g. ``apt-get install wrk``). Writes under ``benchmarks/out/api/``
(git-ignored): a deployment root whose tenant ``bench`` holds ``--runs`` runs
saved through the stores (two artifacts each, one of them shared by every run,
fsync off), folded into the run index, and a token for it. Then ``cas serve``
starts as its own process on a free loopback port and wrk loads three requests
with the token, one after another:

1. ``/v1/runs?limit=50``: the newest page (the index pointer's head answers it);
2. the same with a ``cursor`` in the middle of the history (Parquet);
3. ``/v1/health``: no token and no store, the floor of the HTTP stack.

Reported: requests per second and wrk's latency percentiles (p50, p99), as JSON.
With ``--postgres`` the run records and the token are in PostgreSQL instead (a
throwaway cluster started as the tests start theirs; objects in a local folder),
and the server logs in as a role granted ``cas_app``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cas.api_query import Cursor, RunsRequest, fingerprint, time_to_micros
from cas.index import RunIndex
from cas.model import ArtifactOutcome, ExecutionResult, Message, RunStatus
from cas.objects import LocalBackend
from cas.pgstore import PostgresTokenStore
from cas.repository import Repository
from cas.testing.pg import drop_database, fresh_database
from cas.testing.services import free_port, throwaway_postgres
from cas.tokens import BackendTokenStore

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out" / "api"
TENANT = "bench"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def generate(root: Path, runs: int, **records: Any) -> Repository:
    """`runs` runs of tenant ``bench`` saved through the stores, then indexed (`records`:
    the execution store and tenant, for PostgreSQL)."""
    repo = Repository.init(str(root / "tenants" / TENANT), fsync=False, **records)
    shared = Message("config", {"rules": ["email", "phone", "iban"]})
    for number in range(runs):
        run_id = f"run-{number:06d}"
        repo.artifacts.save(run_id, "config", shared)
        repo.artifacts.save(run_id, "findings", Message("findings", {"count": number % 17}))
        status: RunStatus = "failed" if number % 20 == 0 else "completed"
        started = T0 + timedelta(minutes=number)
        outcomes = {
            "config": ArtifactOutcome("completed"),
            "findings": ArtifactOutcome("completed"),
        }
        result = ExecutionResult(run_id, status, started, "nightly", started, 1.0, outcomes)
        repo.executions.save(run_id, result)
    if not records:
        RunIndex(repo).sync()
    return repo


def middle_cursor(repo: Repository) -> str:
    """A cursor as if the client had paged halfway through the history."""
    rows = repo.list_runs()
    row = rows[len(rows) // 2]
    query = RunsRequest.parse([]).query
    return Cursor(time_to_micros(row.started_at), row.run_id, 1, fingerprint(query)).encode()


def serve(options: list[str], workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "cas.cli", *options, "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/v1/health", timeout=1):
                return server, base
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"cas serve did not start:\n{log.read_text()[-2000:]}")


def seconds(text: str) -> float:
    """wrk's ``1.23ms`` as seconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(url: str, token: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run: requests/s, latency percentiles and errors."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    command += ["--latency", url]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)[ \t]*$", text, flags=re.MULTILINE))
    rate = re.search(r"^Requests/sec:\s+([\d.]+)$", text, flags=re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", text, flags=re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if rate is None or total is None or "99" not in percentiles:
        raise SystemExit(f"unexpected wrk output:\n{text}")
    return {
        "requests_per_second": float(rate.group(1)),
        "p50_ms": seconds(percentiles["50"]) * 1000,
        "p99_ms": seconds(percentiles["99"]) * 1000,
        "requests": int(total.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def machine() -> dict[str, Any]:
    model = ""
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],  # the VM is shared: how busy it was
    }


def local_deployment(args: argparse.Namespace) -> tuple[Repository, str, list[str]]:
    """The tenant's repository in a local folder: it, a token, the ``cas`` global options."""
    root = OUT / "deploy"
    marker = OUT / f"runs-{args.runs}"
    if not (args.reuse and marker.exists()):
        shutil.rmtree(OUT, ignore_errors=True)
        timed_generate(lambda: generate(root, args.runs), args.runs)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    repo = Repository.open(str(root / "tenants" / TENANT))
    token, _ = BackendTokenStore(LocalBackend(root)).create(TENANT, "benchmark")
    return repo, token, ["--repo", str(root)]


@contextmanager
def postgres_deployment(args: argparse.Namespace) -> Iterator[tuple[Repository, str, list[str]]]:
    """Objects in a local folder, records and tokens in a throwaway PostgreSQL cluster
    (started as the tests' fixture starts it), the server logged in as the app role."""
    with throwaway_postgres() as server:
        database = fresh_database(server)
        root = OUT / "deploy-pg"
        shutil.rmtree(root, ignore_errors=True)
        records: dict[str, Any] = {"execution_store": database.dsn, "tenant": TENANT}
        timed_generate(lambda: generate(root, args.runs, **records), args.runs)
        repo = Repository.open(str(root / "tenants" / TENANT), **records)
        token, _ = PostgresTokenStore(database.dsn).create(TENANT, "benchmark")
        yield repo, token, ["--repo", str(root), "--execution-store", database.dsn]
        drop_database(server, database)


def timed_generate(make: Callable[[], object], runs: int) -> None:
    started = time.perf_counter()
    make()
    print(f"generated {runs} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def measure(
    repo: Repository, token: str, options: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """wrk on the three requests against a fresh ``cas serve``."""
    server, base = serve(options, args.workers, OUT / "serve.log")
    try:
        loads = {
            "newest 50": f"{base}/v1/runs?limit=50",
            "50 from a cursor mid-history": f"{base}/v1/runs?limit=50&cursor={middle_cursor(repo)}",
        }
        results = {name: wrk(url, token, args) for name, url in loads.items()}
        results["health (no token, no store)"] = wrk(f"{base}/v1/health", None, args)
        return results
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="Runs in the tenant.")
    parser.add_argument("--workers", type=int, default=1, help="cas serve --workers.")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t.")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c.")
    parser.add_argument("--duration", type=int, default=15, help="wrk -d, seconds.")
    parser.add_argument("--reuse", action="store_true", help="Keep the generated deployment.")
    parser.add_argument(
        "--postgres", action="store_true", help="Run records and tokens in PostgreSQL."
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on the PATH: apt-get install wrk")
    load_before = os.getloadavg()[0]
    if args.postgres:
        with postgres_deployment(args) as (repo, token, options):
            results = measure(repo, token, options, args)
    else:
        results = measure(*local_deployment(args), args)
    keys = ("runs", "workers", "threads", "connections", "duration", "postgres")
    settings = {key: getattr(args, key) for key in keys}
    report = {"machine": machine(), "settings": settings, "results": results}
    print(json.dumps({**report, "load_average_before": load_before}, indent=2))


if __name__ == "__main__":
    main()
