"""PostgreSQL benchmark: the execution store's three history queries on 1,000,000 runs.

Run with ``python -m benchmarks.postgres`` (``--help`` for flags). Starts a
throwaway cluster exactly as the ``postgres_server`` test fixture does (initdb and
pg_ctl from `cas.testing.services`, fsync off, shared_buffers 16MB), migrates a
database, bulk-loads ``--runs`` runs spread over ``--tenants`` tenants with COPY
(``--artifacts`` artifact rows each; 90% of artifact digests are drawn from a
shared pool of ``--pool`` digests, so one digest is held by many runs), ANALYZEs,
then times, through `PostgresStore.query_runs` as the non-superuser application
role (so row-level security applies, and every query pays its ``set_config``):

1. the newest 50 runs of one tenant;
2. the newest 50 failed runs of one tenant in a 30-day range;
3. the newest 50 runs of one tenant holding a given digest.

Each query runs ``--repeat`` times over different tenants after one warm-up
round; median and p95 are reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from cas.index_rows import RunQuery
from cas.pg_sql import run_query
from cas.pgstore import PostgresStore, copy_rows, run_sql
from cas.testing.pg import drop_database, fresh_database
from cas.testing.services import throwaway_postgres

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=30)  # 1M runs span about a year
STATUSES = ("completed", "failed", "partial", "interrupted")
STATUS_WEIGHTS = (0.90, 0.05, 0.04, 0.01)
TARGET_S = 0.020
RUN_COLUMNS = (
    "tenant",
    "run_id",
    "status",
    "runbook",
    "started_at",
    "ended_at",
    "duration_seconds",
    "completed",
    "failed",
    "skipped",
    "result",
)
ARTIFACT_COLUMNS = (
    "tenant",
    "run_id",
    "artifact_id",
    "digest",
    "size",
    "schema_name",
    "schema_version",
    "validated",
    "envelope",
    "saved_at",
)


def tenant_of(number: int, tenants: int) -> str:
    return f"tenant-{number % tenants:03d}"


def run_id_of(number: int) -> str:
    return f"run-{number:08d}"


def run_rows(runs: int, tenants: int, seed: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    for number in range(runs):
        run_id = run_id_of(number)
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        started = T0 + STEP * number
        duration = rng.uniform(5, 300)
        failed = 1 if status in ("failed", "partial") else 0
        result = {
            "run_id": run_id,
            "status": status,
            "runbook": f"runbooks/scan-{number % 7}.yaml",
            "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=duration)).isoformat(),
            "duration_seconds": duration,
            "artifacts": {"file_content": {"status": "completed"}},
            "error": None,
        }
        yield (
            tenant_of(number, tenants),
            run_id,
            status,
            result["runbook"],
            started,
            started + timedelta(seconds=duration),
            duration,
            3 - failed,
            failed,
            0,
            orjson.dumps(result).decode(),
        )


def digest_pool(size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(size)]


def artifact_rows(
    runs: int, tenants: int, per_run: int, pool: list[bytes], seed: int
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed + 1)
    envelope = orjson.dumps({"id": "m", "source": "connector.fs"}).decode()
    for number in range(runs):
        tenant, run_id = tenant_of(number, tenants), run_id_of(number)
        for index in range(per_run):
            digest = rng.choice(pool) if rng.random() < 0.9 else rng.randbytes(32)
            yield (
                tenant,
                run_id,
                f"artifact-{index}",
                digest,
                rng.randint(100, 100_000),
                "finding",
                "1.0.0",
                True,
                envelope,
                "2024-01-01T00:00:00+00:00",
            )


def timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1] * 1000, 2),
        "max_ms": round(times[-1] * 1000, 2),
    }


def measure(dsn: str, args: argparse.Namespace, pool: list[bytes]) -> dict[str, Any]:
    stores = [PostgresStore(dsn, tenant_of(n, args.tenants)) for n in range(args.tenants)]
    rng = random.Random(7)
    middle = T0 + STEP * (args.runs // 2)

    def newest() -> Any:
        return rng.choice(stores).query_runs(RunQuery(limit=50))

    def failed_range() -> Any:
        since = middle - timedelta(days=rng.randint(0, 60))
        query = RunQuery(status="failed", since=since, until=since + timedelta(days=30), limit=50)
        return rng.choice(stores).query_runs(query)

    def holding() -> Any:
        query = RunQuery(digest=rng.choice(pool).hex(), limit=50)
        return rng.choice(stores).query_runs(query)

    plans = {
        "newest": plan(stores[0], RunQuery(limit=50)),
        "failed_in_range": plan(
            stores[0],
            RunQuery(status="failed", since=middle, until=middle + timedelta(days=30), limit=50),
        ),
        "holding_digest": plan(stores[0], RunQuery(digest=pool[0].hex(), limit=50)),
    }
    sizes = {
        "newest": len(newest()),
        "failed_in_range": len(failed_range()),
        "holding_digest": len(holding()),
    }
    results = {
        "newest_50_of_a_tenant": timed(newest, args.repeat),
        "newest_failed_in_30_days": timed(failed_range, args.repeat),
        "runs_holding_a_digest": timed(holding, args.repeat),
    }
    for item in results.values():
        item["meets_20ms"] = item["median_ms"] <= TARGET_S * 1000
    return {"rows_returned_once": sizes, "queries": results, "plans": plans}


def plan(store: PostgresStore, query: RunQuery) -> list[str]:
    """The query's plan as PostgreSQL ran it (as the application role, RLS applied)."""
    sql, params = run_query(store.tenant, query)
    with store.transaction() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}".encode(), params)
        return [row[0] for row in cursor.fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--artifacts", type=int, default=3, help="artifact rows per run")
    parser.add_argument("--pool", type=int, default=2_000, help="shared digests")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report: dict[str, Any] = {"runs": args.runs, "tenants": args.tenants}
    with throwaway_postgres() as server:
        database = fresh_database(server)
        pool = digest_pool(args.pool, args.seed)
        start = time.perf_counter()
        copy_rows(
            database.admin_dsn, "runs", RUN_COLUMNS, run_rows(args.runs, args.tenants, args.seed)
        )
        report["load_runs_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        rows = artifact_rows(args.runs, args.tenants, args.artifacts, pool, args.seed)
        report["artifact_rows"] = copy_rows(database.admin_dsn, "artifacts", ARTIFACT_COLUMNS, rows)
        report["load_artifacts_s"] = round(time.perf_counter() - start, 1)
        run_sql(database.admin_dsn, "VACUUM ANALYZE runs", "VACUUM ANALYZE artifacts")
        size = run_sql(
            database.admin_dsn, "SELECT pg_size_pretty(pg_database_size(current_database()))"
        )
        report["database_size"] = size[0][0]
        report.update(measure(database.dsn, args, pool))
        drop_database(server, database)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
