"""Digests, canonical JSON and its determinism, sealed records, and refusal of non-JSON."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import blake3
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.digest import (
    HEX_LENGTH,
    Digest,
    canonical_json,
    check_plain_json,
    is_digest_prefix,
    seal,
    unseal,
)
from cas.errors import IntegrityError, InvalidContentError, InvalidInputError
from cas.model import Message
from cas.repository import Repository
from cas.testing.strategies import json_objects, json_values, shuffled

FAST = settings(max_examples=50)

# (bad value, what the message must say about it)
NOT_JSON: list[tuple[Any, str]] = [
    (math.nan, "nan"),
    (math.inf, "inf"),
    (-math.inf, "inf"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    (datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
    ({1, 2}, "set"),
    (frozenset(), "frozenset"),
    ((1, 2), "tuple"),
    ((), "tuple"),
    (Decimal("1.5"), "Decimal"),
    (object(), "object"),
    (1 + 2j, "complex"),
]


# --------------------------------------------------------------------------- Digest


@FAST
@given(st.binary(max_size=256))
def test_digest_of_is_blake3(data: bytes) -> None:
    digest = Digest.of(data)
    assert digest.hex == blake3.blake3(data).hexdigest()
    assert Digest.parse(digest.hex) == digest
    assert digest.path == f"{digest.hex[:2]}/{digest.hex[2:]}"
    assert digest.short == digest.hex[:12]
    assert str(digest) == digest.hex
    assert is_digest_prefix(digest.hex[:7])


@pytest.mark.parametrize(
    "text", ["", "ab", "A" * HEX_LENGTH, "g" * HEX_LENGTH, "a" * (HEX_LENGTH + 1), "../" + "a" * 61]
)
def test_digest_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid digest"):
        Digest.parse(text)


def test_digest_prefix() -> None:
    assert not is_digest_prefix("")
    assert not is_digest_prefix("ABCD")
    assert not is_digest_prefix("a" * (HEX_LENGTH + 1))


# --------------------------------------------------------------------------- determinism


@FAST
@given(json_values(), st.data())
def test_canonical_json_ignores_key_order(value: Any, data: st.DataObject) -> None:
    assert canonical_json(shuffled(value, data)) == canonical_json(value)


@FAST
@given(json_objects(), st.data())
def test_same_content_any_order_same_payload_and_digest(
    content: dict[str, Any], data: st.DataObject
) -> None:
    one = Message(id="a", content=content)
    two = Message(id="b", content=shuffled(content, data), source="elsewhere")
    assert one.payload() == two.payload()
    assert Digest.of(one.payload()) == Digest.of(two.payload())


@FAST
@given(json_values())
def test_canonical_json_round_trips(value: Any) -> None:
    assert orjson.loads(canonical_json(value)) == value


@FAST
@given(json_values())
def test_plain_json_is_accepted_unchanged(value: Any) -> None:
    assert check_plain_json(value) == value


def test_payload_is_canonical_bytes() -> None:
    message = Message(id="m", content={"b": [1, 2.5, None], "a": "\u00e9"})
    assert message.payload() == '{"content":{"a":"\u00e9","b":[1,2.5,null]},"schema":null}'.encode()


# --------------------------------------------------------------------------- refusal with path


def _bury(bad: Any, steps: list[str | int], siblings: dict[str, Any]) -> tuple[Any, str]:
    """`bad` nested inside dicts and lists along `steps`, and the path to it."""
    value, path = bad, "$"
    for step in reversed(steps):
        value = {**siblings, step: value} if isinstance(step, str) else [*([0] * step), value]
    for step in steps:
        path += f".{step}" if isinstance(step, str) else f"[{step}]"
    return value, path


_steps = st.lists(
    st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.integers(0, 3)),
    min_size=1,
    max_size=8,
)


@FAST
@given(st.sampled_from(NOT_JSON), _steps, st.dictionaries(st.just("zz"), json_values(5)))
def test_non_json_refused_at_exact_path(
    case: tuple[Any, str], steps: list[str | int], siblings: dict[str, Any]
) -> None:
    bad, word = case
    value, path = _bury(bad, steps, siblings)
    with pytest.raises(InvalidContentError) as caught:
        check_plain_json(value)
    assert caught.value.path == path
    assert f"at {path}:" in str(caught.value)
    assert word in str(caught.value)
    if isinstance(value, dict):
        with pytest.raises(InvalidContentError, match=re.escape(f"at {path}:")):
            Message(id="m", content=value)


@pytest.mark.parametrize(
    "key",
    [
        1,
        None,
        1.5,
        True,
        (1, 2),
    ],
)
def test_non_string_key_refused_at_construction(key: Any) -> None:
    """Refused when the message is built, not later when it is stored."""
    with pytest.raises(InvalidContentError, match=r"at \$\.a\.b: key"):
        Message(id="m", content={"a": {"b": {key: "x"}}})


def test_integer_out_of_range_refused_before_any_write(tmp_path: Path) -> None:
    """Past 64 bits an integer passes the census but not serialisation: refused, path named."""
    repo = Repository.init(str(tmp_path / "repo"))
    before = sorted(repo.backend.list(""))
    message = Message(id="m", content={"a": [0, 2**64]})
    with pytest.raises(InvalidContentError, match=r"at \$\.a\[1\]: integer out of 64-bit"):
        repo.artifacts.save("run", "m", message)
    assert sorted(repo.backend.list("")) == before
    with pytest.raises(InvalidContentError, match=r"at \$\.b: integer out of 64-bit"):
        canonical_json({"b": -(2**63) - 1})


def test_lone_surrogate_refused_before_any_write(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    before = sorted(repo.backend.list(""))
    message = Message(id="m", content={"a": "\ud800"})
    with pytest.raises(InvalidContentError, match=r"at \$\.a: string holds a lone surrogate"):
        repo.artifacts.save("run", "m", message)
    assert sorted(repo.backend.list("")) == before


def test_self_containing_content_refused() -> None:
    # In a child process: the bug is an endless loop, which must not hang the suite.
    script = (
        "from cas.model import Message\n"
        "from cas.errors import InvalidContentError\n"
        "looped = []\n"
        "looped.append(looped)\n"
        "try:\n"
        "    Message(id='m', content={'a': looped})\n"
        "except InvalidContentError as error:\n"
        "    print(error.path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=1.5, check=False
    )
    assert done.stdout.strip() == "$.a[0]"


def test_64_bit_boundaries_accepted() -> None:
    assert check_plain_json({"a": [-(2**63), 2**64 - 1]}) == {"a": [-(2**63), 2**64 - 1]}


def test_dict_subclass_becomes_plain() -> None:
    from collections import OrderedDict, defaultdict

    value = {"a": OrderedDict(b=1), "c": defaultdict(list)}
    copy = check_plain_json(value)
    assert copy == {"a": {"b": 1}, "c": {}}
    assert type(copy["a"]) is dict


# --------------------------------------------------------------------------- sealed records


@FAST
@given(st.dictionaries(st.text(max_size=8), json_values(8), max_size=5))
def test_seal_round_trips(record: dict[str, Any]) -> None:
    record.pop("check", None)
    assert unseal(seal(record), "somewhere") == record


@FAST
@given(st.dictionaries(st.text(max_size=8), json_values(8), min_size=1, max_size=5), st.data())
def test_any_flipped_byte_is_detected(record: dict[str, Any], data: st.DataObject) -> None:
    record.pop("check", None)
    sealed = seal(record)
    position = data.draw(st.integers(0, len(sealed) - 1))
    damaged = sealed[:position] + bytes([sealed[position] ^ 0x01]) + sealed[position + 1 :]
    try:
        unsealed = unseal(damaged, "file:3")
    except IntegrityError as error:
        assert error.location == "file:3"
        assert "file:3" in str(error)
    else:  # a flip inside a float's exponent or in whitespace-free JSON may be harmless…
        assert unsealed == record  # …but only if it changed nothing


def test_unseal_refuses_records_without_check() -> None:
    with pytest.raises(IntegrityError, match="no check"):
        unseal(b'{"a":1}', "x")
    with pytest.raises(IntegrityError, match="no check"):
        unseal(b"[1]", "x")
