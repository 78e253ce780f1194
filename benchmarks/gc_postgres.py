"""gc's mark on PostgreSQL: the one-query mark against a per-run read (the baseline).

Run: ``python -m benchmarks.gc_postgres [--runs 20000] [--artifacts 3] [--repeat 3]``.
Starts a throwaway cluster as benchmarks/postgres.py does, COPY-loads the runs of one
tenant, opens a local repository whose records are there (as the application role),
and times `cas.gc._named` over every run against reading each run's entries one query
at a time (what the mark did before commit bfdb50e), both in the same run, and a whole
``collect(Policy(), dry_run=True)``. Prints JSON, with the query's plan.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.postgres import (
    ARTIFACT_COLUMNS,
    RUN_COLUMNS,
    artifact_rows,
    digest_pool,
    run_rows,
    tenant_of,
)
from cas import gc
from cas.pgstore import copy_rows, run_sql
from cas.repository import Repository
from cas.testing.pg import drop_database, fresh_database
from cas.testing.services import throwaway_postgres


def per_run_mark(repo: Repository, ids: list[str]) -> set[Any]:
    """The baseline: every run's entries read on their own (one query per run)."""
    marked: set[Any] = set()
    for run_id in ids:
        marked.update(entry.digest for entry in repo.artifacts.entries(run_id).values())
    return marked


def timed(call: Any, repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--artifacts", type=int, default=3)
    parser.add_argument("--pool", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    report: dict[str, Any] = {"runs": args.runs, "artifact_rows_per_run": args.artifacts}
    with throwaway_postgres() as server:
        database = fresh_database(server)
        pool = digest_pool(args.pool, 1)
        copy_rows(database.admin_dsn, "runs", RUN_COLUMNS, run_rows(args.runs, 1, 1))
        rows = artifact_rows(args.runs, 1, args.artifacts, pool, 1)
        report["artifact_rows"] = copy_rows(database.admin_dsn, "artifacts", ARTIFACT_COLUMNS, rows)
        run_sql(database.admin_dsn, "VACUUM ANALYZE runs", "VACUUM ANALYZE artifacts")
        repo = Repository.init(
            str(folder / "r"), execution_store=database.dsn, tenant=tenant_of(0, 1)
        )
        ids = repo.run_ids()
        assert len(ids) == args.runs

        def mark() -> set[Any]:
            marked: set[Any] = set()
            gc._named(repo, ids, marked)
            return marked

        mark()  # warm-up
        report["per_run_mark_s"], old = timed(lambda: per_run_mark(repo, ids), args.repeat)
        report["one_query_mark_s"], new = timed(mark, args.repeat)
        assert old == new
        report["digests_marked"] = len(new)
        report["collect_dry_run_s"], _ = timed(
            lambda: gc.collect(repo, gc.Policy(), dry_run=True), args.repeat
        )
        from cas.pg_sql import NAMED_DIGESTS

        store = repo.records
        with store.transaction() as cursor:  # type: ignore[union-attr]
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {NAMED_DIGESTS}", [ids, store.tenant])  # type: ignore[union-attr]
            report["plan"] = [row[0] for row in cursor.fetchall()]
        report["speedup_mark"] = round(report["per_run_mark_s"] / report["one_query_mark_s"], 1)
        drop_database(server, database)
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
