"""The id rule: hostile ids are refused; every accepted id is one safe path segment."""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cas.errors import InvalidIdError, InvalidInputError
from cas.ids import (
    MAX_ID_LENGTH,
    check_artifact_id,
    check_id,
    check_run_id,
    check_tenant,
    is_valid_id,
)
from cas.objects import check_key
from cas.testing.store_tests import HOSTILE_IDS
from cas.testing.strategies import ids

ISSUE_HOSTILE = ["../x", "/abs", "a/../../b", "a\x00b", "x" * 10_000, ".", "", "a\\b", "C:x"]
_ROOT = Path(tempfile.gettempdir()).resolve() / "cas-id-root"


@pytest.mark.parametrize(
    "value", [*ISSUE_HOSTILE, *HOSTILE_IDS], ids=lambda value: repr(value)[:20]
)
def test_hostile_ids_refused(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidIdError) as caught:
        check_run_id(value)
    assert isinstance(caught.value, InvalidInputError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.kind == "run id"
    assert caught.value.value == value


@pytest.mark.parametrize("value", [None, 5, b"abc", ["a"], 1.5])
def test_non_strings_refused(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidIdError, match="a string"):
        check_id(value)


def test_message_is_one_line_and_short_for_long_values() -> None:
    with pytest.raises(InvalidIdError) as caught:
        check_artifact_id("x" * 10_000 + "/")
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 300
    assert message.startswith("invalid artifact id 'xxx")


def test_kinds_are_named() -> None:
    for check, kind in (
        (check_run_id, "run id"),
        (check_artifact_id, "artifact id"),
        (check_tenant, "tenant"),
    ):
        with pytest.raises(InvalidIdError, match=f"invalid {kind} '../x'"):
            check("../x")


@pytest.mark.parametrize(
    "value", ["a", "_", "0", "run-2024-05-01", "findings.removed", "A_b-c.d", "x" * MAX_ID_LENGTH]
)
def test_typical_ids_accepted(value: str) -> None:
    assert check_id(value) == value


def test_length_limit() -> None:
    assert not is_valid_id("x" * (MAX_ID_LENGTH + 1))


def _is_single_safe_segment(value: str) -> bool:
    return (
        value.isascii()
        and value.isprintable()
        and value not in (".", "..")
        and not value.startswith(".")
        and ".." not in value
        and all(sep not in value for sep in ("/", "\\", "\x00", ":"))
        and PurePosixPath(value).parts == (value,)
        and PureWindowsPath(value).parts == (value,)
        and posixpath.normpath(value) == value
        and (_ROOT / value).resolve().parent == _ROOT
    )


@given(st.text(max_size=MAX_ID_LENGTH + 5))
@example("..")
@example("a..")
@example("a\n")
@example("\u0661")  # an Arabic-Indic digit: str.isdigit() but not ASCII
@example("K")  # Kelvin sign folds to "k" under re.IGNORECASE
def test_every_accepted_id_is_one_safe_segment(value: str) -> None:
    if is_valid_id(value):
        assert _is_single_safe_segment(value)
        assert len(value) <= MAX_ID_LENGTH
        assert check_key(value) == value
        assert check_key(f"runs/{value}/manifest.jsonl")


@given(ids())
def test_generated_ids_are_accepted(value: str) -> None:
    assert check_id(value) == value
    assert _is_single_safe_segment(value)


@given(ids(), st.sampled_from(["/", "\\", "\x00", "..", ":", " ", "\n"]), st.booleans())
def test_separators_anywhere_are_refused(value: str, bad: str, at_end: bool) -> None:
    hostile = value + bad if at_end else bad + value
    assert not is_valid_id(hostile)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_rule_matches_its_description(value: str) -> None:
    described = (
        re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", value) is not None
        and len(value) <= MAX_ID_LENGTH
        and ".." not in value
        and not value.endswith(".")
    )
    assert is_valid_id(value) == described


def test_accepted_ids_never_leave_a_real_root(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for value in ("a", "_x", "a.b", "a-b"):
        assert os.path.commonpath([root, (root / check_id(value)).resolve()]) == str(root)
