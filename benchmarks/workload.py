"""A deterministic, Waivern-like ingest workload: runs of findings artifacts.

Each run holds the same artifact ids; run N+1 keeps most artifacts byte-identical in
content to run N and regenerates the rest. Content sizes (compact JSON) are drawn from
a triangular distribution over 12-200 KB whose median is about 90 KB. Everything is
generated up front so that generation is never inside a timed region.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from blake3 import blake3

JsonDict = dict[str, Any]

MIN_BYTES = 12_000
MAX_BYTES = 200_000
# Triangular(a, b, c) with c below the midpoint has median b - sqrt((b-a)(b-c)/2):
# for a=12 KB, b=200 KB, c=71 KB that is about 90 KB.
MODE_BYTES = 71_000
SCHEMA_VERSION = "1.0.0"

KINDS = (
    "personal_data",
    "processing_purpose",
    "data_subject",
    "data_collection",
    "service_integration",
    "security_evidence",
    "crypto_quality",
    "source_code",
    "database_schema",
    "file_content",
    "gdpr_classification",
)
CATEGORIES = ("email", "phone", "name", "address", "ip_address", "health", "payment", "location")
WORDS = (
    *("user", "customer", "email", "password", "token", "session", "address", "phone"),
    *("billing", "payment", "card", "consent", "tracking", "analytics", "cookie", "profile"),
    *("account", "record", "export", "import", "query", "select", "insert", "update"),
    *("delete", "from", "where", "join", "table", "column", "value", "request", "response"),
)


class Artifact(NamedTuple):
    """One message of a run: `(artifact_id, schema_name, schema_version, content)`."""

    artifact_id: str
    schema_name: str
    schema_version: str
    content: JsonDict


@dataclass(frozen=True)
class Workload:
    """All runs, plus what the stored-bytes target is measured against."""

    runs: list[list[Artifact]]
    unique_payloads: int
    unique_payload_bytes: int
    content_sizes: list[int]

    def summary(self) -> str:
        """One line describing the generated data."""
        sizes = self.content_sizes
        return (
            f"{len(self.runs)} runs x {len(self.runs[0])} artifacts; "
            f"{self.unique_payloads} distinct payloads, "
            f"{self.unique_payload_bytes:,} unique bytes; "
            f"content KB min/median/max = {min(sizes) / 1e3:.0f}/"
            f"{statistics.median(sizes) / 1e3:.0f}/{max(sizes) / 1e3:.0f}"
        )


def canonical_bytes(artifact: Artifact) -> bytes:
    """The payload bytes a content-addressed store hashes: schema and content, sorted keys."""
    schema = {"name": artifact.schema_name, "version": artifact.schema_version}
    message = {"schema": schema, "content": artifact.content}
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def _finding(rng: random.Random, kind: str) -> JsonDict:
    folder = rng.choice(("src", "lib", "app", "services", "db"))
    return {
        "file": f"{folder}/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{rng.randrange(1000)}.py",
        "line": rng.randrange(1, 5000),
        "category": rng.choice(CATEGORIES),
        "kind": kind,
        "risk_level": rng.choice(("low", "medium", "high")),
        "evidence": " ".join(rng.choices(WORDS, k=rng.randrange(8, 30))),
    }


def make_content(rng: random.Random, kind: str, run: int, target: int) -> JsonDict:
    """Findings whose compact JSON is about `target` bytes; `run` makes it unique."""
    findings: list[JsonDict] = []
    size = 200  # the summary and the envelope
    while size < target:
        finding = _finding(rng, kind)
        findings.append(finding)
        size += len(orjson.dumps(finding)) + 1
    categories = sorted({f["category"] for f in findings})
    summary = {"total": len(findings), "categories": categories, "generated_in_run": run}
    return {"findings": findings, "summary": summary}


def _fresh(rng: random.Random, artifact_id: str, schema: str, run: int) -> Artifact:
    target = round(rng.triangular(MIN_BYTES, MAX_BYTES, MODE_BYTES))
    kind = schema.removesuffix("_finding")
    return Artifact(artifact_id, schema, SCHEMA_VERSION, make_content(rng, kind, run, target))


def generate(runs: int, artifacts: int, seed: int, change_fraction: float = 0.1) -> Workload:
    """Build `runs` runs of `artifacts` artifacts, regenerating a fixed share per run."""
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(artifacts)]
    ids = [(f"{kind}.{i:02d}", f"{kind}_finding") for i, kind in enumerate(kinds)]
    current = [_fresh(rng, aid, schema, 0) for aid, schema in ids]
    changes = max(1, round(artifacts * change_fraction))
    all_runs = [list(current)]
    for run in range(1, runs):
        for index in rng.sample(range(artifacts), changes):
            current[index] = _fresh(rng, *ids[index], run)
        all_runs.append(list(current))
    return _measured(all_runs)


def _measured(runs: list[list[Artifact]]) -> Workload:
    distinct: dict[bytes, int] = {}
    sizes: list[int] = []
    for run in runs:
        for artifact in run:
            payload = canonical_bytes(artifact)
            digest = blake3(payload).digest()
            if digest not in distinct:
                distinct[digest] = len(payload)
                sizes.append(len(orjson.dumps(artifact.content)))
    return Workload(runs, len(distinct), sum(distinct.values()), sizes)
