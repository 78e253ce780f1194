"""The bundled JSON Schemas, for tests that check plugin output against them."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema


def schema_of(name: str) -> dict[str, Any]:
    """A bundled JSON Schema document."""
    text = (files("cas") / "builtin_schemas" / name / "1.0.0.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def assert_valid(name: str, content: dict[str, Any]) -> None:
    """Validate `content` against the bundled schema `name`."""
    jsonschema.Draft202012Validator(schema_of(name)).validate(content)
