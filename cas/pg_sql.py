"""SQL text and row conversions of the PostgreSQL store (`cas.pgstore`).

Plain Python, no psycopg: the statements the store sends, the `RunQuery` → SQL
translation (`run_query`), and the rows → `ArtifactEntry` / `RunRow` builders.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cas.digest import Digest
from cas.index_rows import RunQuery, RunRow
from cas.model import ArtifactEntry, SchemaRef

RUN_COLUMNS = (
    "run_id, status, runbook, started_at, ended_at, duration_seconds, completed, failed, skipped"
)
ENTRY_COLUMNS = (
    "artifact_id, digest, size, schema_name, schema_version, validated, envelope, saved_at"
)
SAVE_RESULT = f"""
INSERT INTO runs (tenant, {RUN_COLUMNS}, result)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant, run_id) DO UPDATE SET
    status = EXCLUDED.status, runbook = EXCLUDED.runbook, started_at = EXCLUDED.started_at,
    ended_at = EXCLUDED.ended_at, duration_seconds = EXCLUDED.duration_seconds,
    completed = EXCLUDED.completed, failed = EXCLUDED.failed, skipped = EXCLUDED.skipped,
    result = EXCLUDED.result, updated_at = clock_timestamp()
"""
APPEND = f"""
INSERT INTO artifacts (tenant, run_id, {ENTRY_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant, run_id, artifact_id) DO UPDATE SET
    seq = nextval('artifacts_seq'), digest = EXCLUDED.digest, size = EXCLUDED.size,
    schema_name = EXCLUDED.schema_name, schema_version = EXCLUDED.schema_version,
    validated = EXCLUDED.validated, envelope = EXCLUDED.envelope,
    saved_at = EXCLUDED.saved_at, written_at = clock_timestamp()
"""
# gc's mark: the digests the entries of the given runs name, in one query (the
# run ids as one array parameter, joined by hash; DISTINCT leaves each shared digest once)
NAMED_DIGESTS = """
SELECT DISTINCT a.digest FROM artifacts a
JOIN unnest(%s::text[]) AS r(run_id) ON a.run_id = r.run_id
WHERE a.tenant = %s
"""
COUNT = "(SELECT count(*) FROM artifacts a WHERE a.tenant = r.tenant AND a.run_id = r.run_id)"


def entry_of(row: tuple[Any, ...]) -> ArtifactEntry:
    artifact_id, digest, size, schema_name, schema_version, validated, envelope, saved_at = row
    return ArtifactEntry(
        artifact_id=artifact_id,
        digest=Digest(bytes(digest).hex()),
        size=int(size),
        schema=None if schema_name is None else SchemaRef(schema_name, schema_version),
        validated=bool(validated),
        envelope=envelope,
        saved_at=saved_at,
    )


def run_query(tenant: str, query: RunQuery) -> tuple[str, list[Any]]:
    """The SQL (and parameters) of a `RunQuery` over the tenant's runs."""
    where: list[str] = ["r.tenant = %s"]
    params: list[Any] = [tenant]
    if query.status is not None:
        where.append("r.status = %s")
        params.append(query.status)
    if query.since is not None:
        where.append("r.started_at >= %s")
        params.append(query.since)
    if query.until is not None:
        where.append("r.started_at < %s")
        params.append(query.until)
    if query.runbook is not None:
        where.append("r.runbook = %s")
        params.append(query.runbook)
    holding = "SELECT 1 FROM artifacts a WHERE a.tenant = r.tenant AND a.run_id = r.run_id"
    if query.artifact is not None:
        where.append(
            f"(EXISTS ({holding} AND a.artifact_id = %s) "
            "OR json_extract_path(r.result, 'artifacts', %s) IS NOT NULL)"
        )
        params += [query.artifact, query.artifact]
    bounds = query.digest_range()
    if bounds is not None:
        where.append(f"EXISTS ({holding} AND a.digest BETWEEN %s AND %s)")
        params += list(bounds)
    sql = (
        f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS.split(', '))}, {COUNT} "
        f"FROM runs r WHERE {' AND '.join(where)} "
        "ORDER BY r.started_at DESC, r.run_id DESC"
    )
    if query.limit is not None:
        sql += " LIMIT %s"
        params.append(query.limit)
    if query.offset:
        sql += " OFFSET %s"
        params.append(query.offset)
    return sql, params


def run_row_of(row: tuple[Any, ...], tenant: str) -> RunRow:
    run_id, status, runbook, started, ended, duration, completed, failed, skipped, count = row
    return RunRow(
        run_id=run_id,
        status=status,
        runbook=runbook,
        started_at=utc(started),
        ended_at=utc(ended),
        duration_seconds=duration,
        completed=completed,
        failed=failed,
        skipped=skipped,
        artifacts=int(count),
        tenant=tenant,
    )


def utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
