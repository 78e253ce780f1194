"""The OpenAPI 3 document of ``cas serve``, written by hand next to the code it describes.

`tests/test_api.py` runs schemathesis over it against a live server: every
parameter's schema here is exactly what `cas.api_query` accepts (so generated
valid requests are accepted) and every response schema is what `cas.api` sends.
"""

from __future__ import annotations

from typing import Any

from cas import __version__
from cas.api_query import DEFAULT_LIMIT, EXPORT_FORMATS, MAX_LIMIT, MAX_TEXT, STATUSES
from cas.ids import MAX_ID_LENGTH
from cas.model import OUTCOME_STATUSES, RUN_STATUSES

# The id rule (`cas.ids`) without look-arounds: dot-separated parts, none empty.
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
ERROR_CODES = (
    "invalid_parameter",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "integrity_error",
    "unavailable",
    "internal_error",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


def _object(properties: dict[str, Any], *, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": extra,
    }


_COUNT = {"type": "integer", "minimum": 0}
_SCHEMA_REF = _object({"name": {"type": "string"}, "version": {"type": "string"}})

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": list(ERROR_CODES)},
                    "message": {"type": "string"},
                    "parameter": {"type": "string", "description": "The parameter at fault."},
                },
                "additionalProperties": False,
            }
        }
    ),
    "Run": _object(
        {
            "run_id": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "runbook": _nullable("string"),
            "started_at": _nullable("string", format="date-time"),
            "ended_at": _nullable("string", format="date-time"),
            "duration_seconds": _nullable("number"),
            "artifacts": _COUNT,
            "completed": _COUNT,
            "failed": _COUNT,
            "skipped": _COUNT,
            "tenant": _nullable("string"),
        }
    ),
    "RunPage": _object(
        {
            "runs": {"type": "array", "items": _ref("Run")},
            "next_cursor": _nullable(
                "string", description="Pass as `cursor` for the next page; null on the last."
            ),
        }
    ),
    "Outcome": _object(
        {
            "status": {"type": "string", "enum": list(OUTCOME_STATUSES)},
            "error_type": _nullable("string"),
            "error_message": _nullable("string"),
            "reason": _nullable("string"),
            "duration_seconds": _nullable("number"),
            "cached_from": _nullable("string"),
            "step_key": _nullable("string"),
        }
    ),
    "ExecutionResult": {
        **_object(
            {
                "run_id": {"type": "string"},
                "status": {"type": "string", "enum": list(RUN_STATUSES)},
                "runbook": _nullable("string"),
                "started_at": {"type": "string", "description": "ISO 8601"},
                "ended_at": _nullable("string", description="ISO 8601"),
                "duration_seconds": _nullable("number"),
                "artifacts": {"type": "object", "additionalProperties": _ref("Outcome")},
                "error": _nullable("string"),
            }
        ),
        "nullable": True,
    },
    "RunDetail": _object(
        {
            "run_id": {"type": "string"},
            "status": {"type": "string", "enum": [*STATUSES, "no-result"]},
            "artifact_count": _COUNT,
            "result": _ref("ExecutionResult"),
        }
    ),
    "Artifact": _object(
        {
            "artifact_id": {"type": "string"},
            "digest": _nullable("string", pattern="^[0-9a-f]{64}$"),
            "size": _nullable("integer", minimum=0),
            "schema": {**_SCHEMA_REF, "nullable": True},
            "validated": _nullable("boolean"),
            "saved_at": _nullable("string"),
            "outcome": {"type": "string", "enum": [*OUTCOME_STATUSES, "saved"]},
        }
    ),
    "ArtifactList": _object(
        {"run_id": {"type": "string"}, "artifacts": {"type": "array", "items": _ref("Artifact")}}
    ),
    "Message": _object(
        {
            "id": {"type": "string"},
            "source": _nullable("string"),
            "timestamp": _nullable("string"),
            "context": {"type": "object"},
            "execution": _nullable("object"),
            "schema": {**_SCHEMA_REF, "nullable": True},
            "content": {"type": "object"},
        }
    ),
    "Health": _object(
        {"status": {"type": "string", "enum": ["ok"]}, "version": {"type": "string"}}
    ),
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


UNAUTHORIZED = {
    **_error("Missing, malformed, unknown or revoked bearer token."),
    "headers": {
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Always `Bearer …`."}
    },
}
ERRORS: dict[str, Any] = {
    "400": _error("A malformed parameter; `error.parameter` names it."),
    "401": UNAUTHORIZED,
    "404": _error("No such run or artifact for this token's tenant (another tenant's alike)."),
    "500": _error("Stored data failed verification, or a bug."),
    "503": _error("The stores cannot be reached or are misconfigured."),
}


def _id_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_WHEN = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
RUN_ID = _id_param("run_id", "An exact run id.")
ARTIFACT_ID = _id_param("artifact_id", "An artifact id of the run.")
RUNS_PARAMETERS = [
    _query("status", "Only runs with this status.", {"type": "string", "enum": list(STATUSES)}),
    _query("since", "Started at or after (ISO 8601 date or time; UTC without a zone).", _WHEN),
    _query("until", "Started before (a bare date: its whole day).", _WHEN),
    _query(
        "runbook",
        "Only runs of this runbook.",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT,
            "pattern": r"^[^\x00-\x1f\x7f]+$",
        },
    ),
    _query(
        "artifact",
        "Only runs holding this artifact id.",
        {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN},
    ),
    _query(
        "digest",
        "Only runs holding a payload whose digest starts with this.",
        {"type": "string", "pattern": "^[0-9a-fA-F]{1,64}$"},
    ),
    _query(
        "limit",
        "Runs per page.",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    ),
    _query(
        "cursor",
        "`next_cursor` of the previous page, with the same filters.",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    ),
]


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": responses, **extra}}


def _auth(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    return {"200": ok, **{code: ERRORS[code] for code in ("400", "401", *codes, "500", "503")}}


EXPORT_TYPES = {
    "application/json": {"schema": {"type": "object"}},
    "text/markdown": {"schema": {"type": "string"}},
    "text/html": {"schema": {"type": "string"}},
}
PATHS: dict[str, Any] = {
    "/v1/health": _get(
        "Liveness: the server answers (no token needed).",
        {"200": _ok("The server is up.", "Health")},
        security=[],
    ),
    "/v1/runs": _get(
        "The tenant's runs, newest first, filtered like `cas runs`, one page at a time.",
        _auth(_ok("One page of runs.", "RunPage")),
        parameters=RUNS_PARAMETERS,
    ),
    "/v1/runs/{run_id}": _get(
        "One run: its status, artifact count and execution result.",
        _auth(_ok("The run.", "RunDetail"), "404"),
        parameters=[RUN_ID],
    ),
    "/v1/runs/{run_id}/artifacts": _get(
        "The run's artifacts: manifest entries and outcomes.",
        _auth(_ok("The artifacts.", "ArtifactList"), "404"),
        parameters=[RUN_ID],
    ),
    "/v1/runs/{run_id}/artifacts/{artifact_id}": _get(
        "One artifact's message (envelope, schema, content), verified before it is sent.",
        _auth(
            {
                **_ok("The message.", "Message"),
                "headers": {
                    "X-Cas-Digest": {
                        "description": "BLAKE3 of the payload ({content, schema}), hex.",
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    }
                },
            },
            "404",
        ),
        parameters=[RUN_ID, ARTIFACT_ID],
    ),
    "/v1/runs/{run_id}/export": _get(
        "The run through an exporter (see docs/exports.md).",
        _auth(
            {
                "description": "The exported file.",
                "content": EXPORT_TYPES,
                "headers": {
                    "Content-Disposition": {
                        "description": 'inline; filename="{run_id}.{json,md,html}"',
                        "schema": {"type": "string"},
                    }
                },
            },
            "404",
        ),
        parameters=[
            RUN_ID,
            _query(
                "format",
                "The exporter.",
                {"type": "string", "enum": list(EXPORT_FORMATS), "default": "json"},
            ),
            _query(
                "outputs_only",
                "Only artifacts the runbook marks `output: true`.",
                {"type": "boolean", "default": False},
            ),
        ],
    ),
    "/openapi.json": _get(
        "This document.",
        {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {}}}},
        security=[],
    ),
}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cas run history API",
            "version": __version__,
            "description": "Read-only access to one tenant's runs; see docs/deployment.md.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
