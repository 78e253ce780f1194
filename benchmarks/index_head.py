"""Short listings from the index pointer's ``head``: what one costs, and where it goes.

Run with ``python -m benchmarks.index_head`` (``--help`` for flags). Writes under
``benchmarks/out/index_head/`` (git-ignored) a deployment root whose tenant ``bench``
holds ``--runs`` runs saved through the stores (fsync off) and folded into the run
index, so the pointer ``index/current.json`` carries its full ``head`` (the newest
200 runs rows), and a token for it.

Then, in this one process, each measure is the median of ``--repeat`` calls after
one warm-up: ``Repository.list_runs(RunQuery(limit=50))`` (what ``cas runs`` and
``GET /v1/runs?limit=50`` do: a sync check, the pointer, the running runs), its
parts (``Pointer.read``, the head's answer for 50 rows, the listing of pending
marks), the listing with ``--limit 200`` (the whole head), and the HTTP API's
handler of ``GET /v1/runs?limit=50`` (`cas.api.Api.runs`) called in process with a
built request (token lookup, listing, rendering; no HTTP stack). The pointer is read
anew by every call; the ``_new`` measures also forget the process's decoded
pointers (`cas.index_rows.POINTERS`) first, as when a sync has just rewritten it.
Prints JSON. Run against an older cas (``PYTHONPATH``), it times that one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from benchmarks.api import TENANT
from benchmarks.api import generate as runs_of_api_benchmark
from cas import index_rows
from cas.api import Api
from cas.deployment import Deployment
from cas.index_rows import HEAD_SIZE, Pointer, RunQuery, read_marks
from cas.objects import LocalBackend
from cas.repository import Repository
from cas.tokens import BackendTokenStore

OUT = Path(__file__).resolve().parent / "out" / "index_head"


def generate(root: Path, runs: int) -> None:
    """`runs` runs of tenant ``bench`` as `benchmarks.api` makes them (two artifacts
    each, saved through the stores, then indexed); a token for it in ``token.txt``."""
    runs_of_api_benchmark(root, runs)
    token, _ = BackendTokenStore(LocalBackend(str(root))).create(TENANT, "benchmark")
    (root / "token.txt").write_text(token)


def api_listing(root: Path) -> Callable[[], object]:
    """`Api.runs` answering ``GET /v1/runs?limit=50`` with the tenant's token."""
    api = Api(Deployment.configure(str(root)))
    authorization = f"Bearer {(root / 'token.txt').read_text()}".encode()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/runs",
        "query_string": b"limit=50",
        "headers": [(b"authorization", authorization)],
        "path_params": {},
    }
    response = api.runs(Request(scope))
    assert response.status_code == 200, response.body
    return lambda: api.runs(Request(scope))


def timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median and minimum of `repeat` calls after one warm-up, in microseconds."""
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return {"median_us": round(statistics.median(samples), 1), "min_us": round(min(samples), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000, help="Runs in the repository.")
    parser.add_argument("--repeat", type=int, default=2_000, help="Timed calls per measure.")
    parser.add_argument("--reuse", action="store_true", help="Keep an existing repository.")
    args = parser.parse_args()
    root = OUT / f"runs-{args.runs}"
    if not (args.reuse and root.exists()):
        shutil.rmtree(root, ignore_errors=True)
        generate(root, args.runs)
    repo = Repository.open(str(root / "tenants" / TENANT))
    backend = repo.backend
    pointer = Pointer.read(backend)
    assert pointer.head is not None and len(pointer.head) == min(HEAD_SIZE, args.runs)
    fifty = RunQuery(limit=50)
    cache = getattr(index_rows, "POINTERS", None)  # absent before the pointer cache
    forget = cache.clear if cache is not None else lambda: None
    measures: dict[str, Callable[[], object]] = {
        "list_runs_limit_50": lambda: repo.list_runs(fifty),
        "list_runs_limit_50_new_pointer": lambda: (forget(), repo.list_runs(fifty)),
        "list_runs_limit_200": lambda: repo.list_runs(RunQuery(limit=HEAD_SIZE)),
        "list_runs_limit_200_new_pointer": lambda: (
            forget(),
            repo.list_runs(RunQuery(limit=HEAD_SIZE)),
        ),
        "pointer_read": lambda: Pointer.read(backend),
        "pointer_read_new": lambda: (forget(), Pointer.read(backend)),
        "pointer_read_and_answer_50_new": lambda: (
            forget(),
            Pointer.read(backend).head_answer(fifty),
        ),
        "read_marks": lambda: read_marks(backend),
        "api_runs_handler_limit_50": api_listing(root),
    }
    report: dict[str, Any] = {
        "runs": args.runs,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    for name, call in measures.items():
        report[name] = timed(call, args.repeat)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
