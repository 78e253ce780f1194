"""The values `cas` stores: messages, execution results and manifest entries.

Each is a frozen dataclass that round-trips through JSON exactly
(``X.from_dict(x.to_dict()) == x``). A `Message` splits in two when stored: the
*payload* ``{schema, content}`` is content-addressed and shared by every run that
produced it; the *envelope* (id, source, timestamp, context, execution info)
belongs to one run and lives in that run's manifest entry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast, get_args

from cas.digest import Digest, canonical_json, check_plain_json
from cas.errors import InvalidInputError
from cas.ids import check_artifact_id, check_id, check_run_id

RunStatus = Literal["running", "completed", "partial", "failed", "interrupted"]
OutcomeStatus = Literal["completed", "failed", "skipped"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
OUTCOME_STATUSES: tuple[str, ...] = get_args(OutcomeStatus)
FINAL_STATUSES = frozenset({"completed", "partial", "failed", "interrupted"})


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> Any:
    if value not in allowed:
        raise InvalidInputError(f"invalid {what} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"invalid {what} {value!r}: expected an ISO 8601 time") from None


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"invalid {what}: expected a JSON object, got {type(value).__name__}"
        )
    return cast(dict[str, Any], check_plain_json(value))


def _duration(value: Any, what: str) -> None:
    if value is None:
        return
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(
            f"invalid {what} {value!r}: expected a finite number of seconds ≥ 0"
        )


def _optional_str(value: Any, what: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise InvalidInputError(f"invalid {what} {value!r}: expected a string")


@dataclass(frozen=True, slots=True)
class SchemaRef:
    """A schema's name and version, e.g. ``personal_data_finding`` ``1.0.0``."""

    name: str
    version: str

    def __post_init__(self) -> None:
        check_id(self.name, "schema name")
        check_id(self.version, "schema version")

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, data: Any) -> SchemaRef:
        name = data.get("name") if isinstance(data, dict) else None
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(name, str) or not isinstance(version, str):
            raise InvalidInputError(f"invalid schema {data!r}: expected {{name, version}} strings")
        return _schema_ref(name, version)


@functools.lru_cache(maxsize=4096)
def _schema_ref(name: str, version: str) -> SchemaRef:
    """One checked `SchemaRef` per name and version (a manifest names few schemas,
    each in many entries)."""
    return SchemaRef(name, version)


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """How the step that produced a message went."""

    status: str = "completed"
    error: str | None = None
    duration_seconds: float | None = None

    def __post_init__(self) -> None:
        _duration(self.duration_seconds, "duration")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "duration_seconds": self.duration_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionInfo:
        return cls(data.get("status", "completed"), data.get("error"), data.get("duration_seconds"))


@dataclass(frozen=True)
class Message:
    """One step's output: JSON content with its schema, plus the run-specific envelope."""

    id: str
    content: dict[str, Any]
    schema: SchemaRef | None = None
    source: str | None = None
    timestamp: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)
    execution: ExecutionInfo | None = None

    def __post_init__(self) -> None:
        _optional_str(self.id, "message id", required=True)
        _optional_str(self.source, "source")
        if self.timestamp is not None and not isinstance(self.timestamp, datetime):
            raise InvalidInputError(f"invalid timestamp {self.timestamp!r}: expected a datetime")
        if self.execution is not None and not isinstance(self.execution, ExecutionInfo):
            raise InvalidInputError("invalid execution: expected an ExecutionInfo")
        if not isinstance(self.content, dict):
            raise InvalidInputError(
                f"invalid content: expected a JSON object, got {type(self.content).__name__}"
            )
        object.__setattr__(self, "content", check_plain_json(self.content))
        if self.context:
            object.__setattr__(self, "context", _json_object(self.context, "context"))
        elif not isinstance(self.context, dict):
            raise InvalidInputError("invalid context: expected a JSON object")

    def payload(self) -> bytes:
        """Canonical bytes of ``{"content": …, "schema": …}``: what the digest names.

        Serialised on each call, so content changed in place after construction
        can never be stored under a stale digest.
        """
        schema = b"null" if self.schema is None else canonical_json(self.schema.to_dict())
        return b"".join((b'{"content":', canonical_json(self.content), b',"schema":', schema, b"}"))

    def envelope(self) -> dict[str, Any]:
        """The run-specific fields, kept in the run's manifest entry."""
        return {
            "id": self.id,
            "source": self.source,
            "timestamp": _time(self.timestamp),
            "context": self.context,
            "execution": None if self.execution is None else self.execution.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        schema = None if self.schema is None else self.schema.to_dict()
        return {**self.envelope(), "schema": schema, "content": self.content}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        schema = data.get("schema")
        execution = data.get("execution")
        return cls(
            id=data["id"],
            content=data["content"],
            schema=None if schema is None else SchemaRef.from_dict(schema),
            source=data.get("source"),
            timestamp=_parse_time(data.get("timestamp"), "timestamp"),
            context=data.get("context") or {},
            execution=None if execution is None else ExecutionInfo.from_dict(execution),
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any], envelope: dict[str, Any]) -> Message:
        """Rebuild a message from a stored payload and its run's envelope."""
        return cls.from_dict({**envelope, **payload})


@dataclass(frozen=True, slots=True)
class ArtifactOutcome:
    """How one artifact of a run ended."""

    status: OutcomeStatus
    error_type: str | None = None
    error_message: str | None = None
    reason: str | None = None
    duration_seconds: float | None = None
    cached_from: str | None = None
    step_key: str | None = None

    def __post_init__(self) -> None:
        _choice(self.status, OUTCOME_STATUSES, "artifact outcome")
        _duration(self.duration_seconds, "duration")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "reason": self.reason,
            "duration_seconds": self.duration_seconds,
            "cached_from": self.cached_from,
            "step_key": self.step_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactOutcome:
        return cls(
            status=data["status"],
            error_type=data.get("error_type"),
            error_message=data.get("error_message"),
            reason=data.get("reason"),
            duration_seconds=data.get("duration_seconds"),
            cached_from=data.get("cached_from"),
            step_key=data.get("step_key"),
        )


@dataclass(frozen=True)
class ExecutionResult:
    """The record of one run: status, timing and every artifact's outcome."""

    run_id: str
    status: RunStatus
    started_at: datetime
    runbook: str | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    artifacts: dict[str, ArtifactOutcome] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        _choice(self.status, RUN_STATUSES, "run status")
        _duration(self.duration_seconds, "duration")
        for artifact_id in self.artifacts:
            check_artifact_id(artifact_id)

    @property
    def is_final(self) -> bool:
        """Whether the run has ended (any status but ``running``)."""
        return self.status in FINAL_STATUSES

    def counts(self) -> dict[str, int]:
        """Artifacts by outcome."""
        counts = dict.fromkeys(OUTCOME_STATUSES, 0)
        for outcome in self.artifacts.values():
            counts[outcome.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "runbook": self.runbook,
            "started_at": _time(self.started_at),
            "ended_at": _time(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "artifacts": {key: value.to_dict() for key, value in self.artifacts.items()},
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionResult:
        started = _parse_time(data.get("started_at"), "started_at")
        if started is None:
            raise InvalidInputError("invalid execution result: started_at is required")
        return cls(
            run_id=data["run_id"],
            status=data["status"],
            started_at=started,
            runbook=data.get("runbook"),
            ended_at=_parse_time(data.get("ended_at"), "ended_at"),
            duration_seconds=data.get("duration_seconds"),
            artifacts={
                key: ArtifactOutcome.from_dict(value)
                for key, value in (data.get("artifacts") or {}).items()
            },
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """One line of a run's manifest: artifact id → payload digest, plus the envelope."""

    artifact_id: str
    digest: Digest
    size: int
    schema: SchemaRef | None
    validated: bool
    envelope: dict[str, Any]
    saved_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact_id,
            "digest": self.digest.hex,
            "size": self.size,
            "schema": None if self.schema is None else self.schema.to_dict(),
            "validated": self.validated,
            "envelope": self.envelope,
            "saved_at": self.saved_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactEntry:
        schema = data.get("schema")
        return cls(
            artifact_id=check_artifact_id(data["artifact"]),
            digest=Digest.parse(data["digest"]),
            size=int(data["size"]),
            schema=None if schema is None else SchemaRef.from_dict(schema),
            validated=bool(data["validated"]),
            envelope=data["envelope"],
            saved_at=data["saved_at"],
        )


def newest_entries(
    records: Iterable[tuple[bytes, dict[str, Any]]],
) -> dict[str, tuple[ArtifactEntry, bytes]]:
    """Artifact id → (newest entry, the sealed line it came from), from a manifest's
    ``(line, unsealed record)`` pairs in save order: a later record for an artifact
    replaces the earlier one (I10), and the result is in the order of those saves."""
    entries: dict[str, tuple[ArtifactEntry, bytes]] = {}
    for line, record in records:
        entry = ArtifactEntry.from_dict(record)
        entries.pop(entry.artifact_id, None)
        entries[entry.artifact_id] = (entry, line)
    return entries
