"""Messages, execution results and manifest entries round-trip through JSON exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.digest import Digest, canonical_json
from cas.errors import InvalidContentError, InvalidIdError, InvalidInputError
from cas.model import (
    ArtifactEntry,
    ArtifactOutcome,
    ExecutionInfo,
    ExecutionResult,
    Message,
    SchemaRef,
)
from cas.testing.strategies import (
    execution_results,
    ids,
    json_objects,
    messages,
    schema_refs,
)

FAST = settings(max_examples=50)


def _through_bytes(data: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(canonical_json(data))
    return loaded


@FAST
@given(messages())
def test_message_round_trips(message: Message) -> None:
    assert Message.from_dict(message.to_dict()) == message


@FAST
@given(messages())
def test_message_round_trips_through_json_bytes(message: Message) -> None:
    again = Message.from_dict(_through_bytes(message.to_dict()))
    assert again == message
    assert again.payload() == message.payload()


@FAST
@given(messages())
def test_message_from_payload_and_envelope(message: Message) -> None:
    payload = orjson.loads(message.payload())
    envelope = _through_bytes(message.envelope())
    assert Message.from_payload(payload, envelope) == message


@FAST
@given(execution_results())
def test_execution_result_round_trips(result: ExecutionResult) -> None:
    assert ExecutionResult.from_dict(result.to_dict()) == result
    assert ExecutionResult.from_dict(_through_bytes(result.to_dict())) == result


@FAST
@given(schema_refs())
def test_schema_ref_round_trips(ref: SchemaRef) -> None:
    assert SchemaRef.from_dict(_through_bytes(ref.to_dict())) == ref
    assert str(ref) == f"{ref.name}/{ref.version}"


@FAST
@given(
    ids(30),
    st.binary(max_size=64),
    st.none() | schema_refs(),
    st.booleans(),
    json_objects(max_leaves=5),
)
def test_artifact_entry_round_trips(
    artifact: str, data: bytes, schema: SchemaRef | None, validated: bool, envelope: dict[str, Any]
) -> None:
    entry = ArtifactEntry(
        artifact,
        Digest.of(data),
        len(data),
        schema,
        validated,
        envelope,
        "2024-01-01T00:00:00+00:00",
    )
    assert ArtifactEntry.from_dict(_through_bytes(entry.to_dict())) == entry


def test_message_payload_is_content_and_schema_only() -> None:
    message = Message(
        id="m",
        content={"x": 1},
        schema=SchemaRef("s", "1"),
        source="a",
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        context={"c": 1},
    )
    assert orjson.loads(message.payload()) == {
        "content": {"x": 1},
        "schema": {"name": "s", "version": "1"},
    }


@pytest.mark.parametrize("content", [[], "text", None, 5])
def test_content_must_be_an_object(content: Any) -> None:
    with pytest.raises(InvalidInputError, match="JSON object"):
        Message(id="m", content=content)


@pytest.mark.parametrize("context", [[], "text", 5])
def test_context_must_be_an_object(context: Any) -> None:
    with pytest.raises(InvalidInputError, match="context"):
        Message(id="m", content={}, context=context)


def test_context_is_plain_json() -> None:
    with pytest.raises(InvalidContentError, match=r"at \$\.when:"):
        Message(id="m", content={}, context={"when": datetime(2024, 1, 1)})


@pytest.mark.parametrize("schema", [{"name": "../x", "version": "1"}, {"name": "a"}, "a/1"])
def test_bad_schema_refs_refused(schema: Any) -> None:
    with pytest.raises(InvalidInputError):
        Message.from_dict({"id": "m", "content": {}, "schema": schema})


def test_bad_timestamp_refused() -> None:
    with pytest.raises(InvalidInputError, match="timestamp"):
        Message.from_dict({"id": "m", "content": {}, "timestamp": "yesterday"})


def test_execution_result_checks() -> None:
    started = datetime(2024, 1, 1)
    with pytest.raises(InvalidIdError):
        ExecutionResult("../x", "completed", started)
    with pytest.raises(InvalidInputError, match="run status"):
        ExecutionResult("r", "done", started)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        ExecutionResult("r", "completed", started, artifacts={"a/b": ArtifactOutcome("completed")})
    with pytest.raises(InvalidInputError, match="artifact outcome"):
        ArtifactOutcome("maybe")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="started_at"):
        ExecutionResult.from_dict({"run_id": "r", "status": "completed"})


def test_execution_result_counts_and_finality() -> None:
    result = ExecutionResult(
        "r",
        "partial",
        datetime(2024, 1, 1),
        artifacts={
            "a": ArtifactOutcome("completed"),
            "b": ArtifactOutcome("failed"),
            "c": ArtifactOutcome("completed"),
        },
    )
    assert result.counts() == {"completed": 2, "failed": 1, "skipped": 0}
    assert result.is_final
    assert not ExecutionResult("r", "running", datetime(2024, 1, 1)).is_final


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_message_duration_refused(value: float) -> None:
    with pytest.raises(InvalidInputError):
        Message(id="m", content={}, execution=ExecutionInfo(duration_seconds=value))


def test_non_string_source_refused() -> None:
    with pytest.raises(InvalidInputError):
        Message(id="m", content={}, source=datetime(2024, 1, 1))  # type: ignore[arg-type]


def test_non_finite_result_duration_refused() -> None:
    with pytest.raises(InvalidInputError):
        ExecutionResult("r", "completed", datetime(2024, 1, 1), duration_seconds=math.inf)
