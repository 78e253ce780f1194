"""Hypothesis strategies for `cas` values: ids, plain JSON, schemas, messages, results."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from hypothesis import strategies as st

from cas.ids import MAX_ID_LENGTH, is_valid_id
from cas.model import (
    OUTCOME_STATUSES,
    RUN_STATUSES,
    ArtifactOutcome,
    ExecutionInfo,
    ExecutionResult,
    Message,
    SchemaRef,
)

__all__ = [
    "artifact_outcomes",
    "datetimes",
    "execution_infos",
    "execution_results",
    "ids",
    "json_objects",
    "json_values",
    "messages",
    "schema_refs",
    "shuffled",
]

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


def ids(max_size: int = MAX_ID_LENGTH) -> st.SearchStrategy[str]:
    """Strings that follow the id rule (up to `max_size` characters)."""
    pattern = rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{max_size - 1}}}"
    return st.from_regex(pattern, fullmatch=True).filter(is_valid_id)


def json_scalars() -> st.SearchStrategy[Any]:
    """None, booleans, 64-bit integers, finite floats and strings."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(INT64_MIN, UINT64_MAX),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any plain JSON value built from dicts with str keys and lists."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 20) -> st.SearchStrategy[dict[str, Any]]:
    """Plain JSON objects (message content, context)."""
    return st.dictionaries(st.text(max_size=10), json_values(max_leaves), max_size=5)


def shuffled(value: Any, data: st.DataObject) -> Any:
    """A deep copy of a JSON value whose dicts have their keys in another insertion order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {key: shuffled(value[key], data) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, data) for item in value]
    return value


def schema_refs() -> st.SearchStrategy[SchemaRef]:
    """Valid schema references."""
    return st.builds(SchemaRef, ids(30), ids(12))


def _timezones() -> st.SearchStrategy[tzinfo | None]:
    offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
    return st.one_of(st.none(), st.just(UTC), offsets)


def datetimes() -> st.SearchStrategy[datetime]:
    """Naive or fixed-offset datetimes (what ISO 8601 round-trips exactly)."""
    return st.datetimes(timezones=_timezones())


def _finite_floats() -> st.SearchStrategy[float]:
    return st.floats(min_value=0, max_value=1e9).filter(math.isfinite)


def execution_infos() -> st.SearchStrategy[ExecutionInfo]:
    """How a step went."""
    return st.builds(
        ExecutionInfo,
        st.sampled_from(["completed", "failed", "skipped"]),
        st.none() | st.text(max_size=30),
        st.none() | _finite_floats(),
    )


def messages(
    content: st.SearchStrategy[dict[str, Any]] | None = None,
    schema: st.SearchStrategy[SchemaRef | None] | None = None,
) -> st.SearchStrategy[Message]:
    """Messages with every envelope field drawn."""
    return st.builds(
        Message,
        id=ids(40),
        content=json_objects() if content is None else content,
        schema=st.none() | schema_refs() if schema is None else schema,
        source=st.none() | st.text(max_size=30),
        timestamp=st.none() | datetimes(),
        context=json_objects(max_leaves=5),
        execution=st.none() | execution_infos(),
    )


def artifact_outcomes() -> st.SearchStrategy[ArtifactOutcome]:
    """How one artifact of a run ended."""
    optional_text = st.none() | st.text(max_size=20)
    return st.builds(
        ArtifactOutcome,
        status=st.sampled_from(OUTCOME_STATUSES),
        error_type=optional_text,
        error_message=optional_text,
        reason=optional_text,
        duration_seconds=st.none() | _finite_floats(),
        cached_from=st.none() | ids(20),
    )


def execution_results(
    run_id: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[ExecutionResult]:
    """Execution results with drawn outcomes."""
    return st.builds(
        ExecutionResult,
        run_id=ids(40) if run_id is None else run_id,
        status=st.sampled_from(RUN_STATUSES),
        started_at=datetimes(),
        runbook=st.none() | st.text(max_size=30),
        ended_at=st.none() | datetimes(),
        duration_seconds=st.none() | _finite_floats(),
        artifacts=st.dictionaries(ids(20), artifact_outcomes(), max_size=4),
        error=st.none() | st.text(max_size=30),
    )
