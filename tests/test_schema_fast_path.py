"""The compiled fast path may only say "valid" where jsonschema agrees."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.connectors import FilesystemConnector
from cas.model import Message
from cas.processors import PersonalDataProcessor, SummaryProcessor
from cas.schemas import compile_schema, fast_validator, first_error

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "cas" / "builtin_schemas"
EXAMPLES = str(ROOT / "examples" / "data")


def _outputs() -> dict[str, dict[str, Any]]:
    files = FilesystemConnector().extract({"path": EXAMPLES})
    source = Message(id="file_content", content=files)
    findings = PersonalDataProcessor().process([source], {})
    summary = SummaryProcessor().process([Message(id="findings", content=findings)], {})
    return {"file_content": files, "personal_data_findings": findings, "summary": summary}


OUTPUTS = _outputs()
JUNK = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2))


def _spots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value inside `value` (bounded, for mutation)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in list(value.items())[:6]:
            found += _spots(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value[:3]):
            found += _spots(item, (*path, position))
    return found


def _mutate(content: dict[str, Any], spot: tuple[Any, ...], how: str, junk: Any) -> Any:
    mutated = copy.deepcopy(content)
    if not spot:
        return junk
    parent = mutated
    for part in spot[:-1]:
        parent = parent[part]
    last = spot[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "extra" and isinstance(parent, dict):
        parent["unexpected"] = junk
    else:
        parent[last] = junk
    return mutated


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_builtin_schemas_take_the_fast_path(name: str) -> None:
    document = orjson.loads((SCHEMAS / name / "1.0.0.json").read_bytes())
    assert fast_validator(document) is not None
    fast_validator(document)(OUTPUTS[name])


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fast_path_never_accepts_what_jsonschema_refuses(name: str, data: st.DataObject) -> None:
    document = orjson.loads((SCHEMAS / name / "1.0.0.json").read_bytes())
    fast, slow = fast_validator(document), compile_schema(document, name)
    content = OUTPUTS[name]
    spot = data.draw(st.sampled_from(_spots(content)))
    how = data.draw(st.sampled_from(["delete", "extra", "replace"]))
    mutated = _mutate(content, spot, how, data.draw(JUNK))
    try:
        fast(mutated)
    except Exception:
        return  # refusals are always re-checked by jsonschema
    assert first_error(slow, mutated) is None


def test_schemas_outside_the_shared_keywords_get_no_fast_path() -> None:
    assert fast_validator({"type": "array", "prefixItems": [{"type": "integer"}]}) is None
    assert fast_validator({"type": "object", "unevaluatedProperties": False}) is None
    recursive = {
        "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
        "$ref": "#/$defs/n",
    }
    assert fast_validator(recursive) is None
