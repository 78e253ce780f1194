"""The one rule for every name a user gives `cas`: run ids, artifact ids, tenants, schema names.

An id is 1 to 128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``; it
starts with a letter, digit or ``_`` (never a dot, so it can never be ``.``, ``..``
or a hidden or temporary file), holds no ``..`` and does not end with a dot (so a
schema version never makes ``1..json``, and Windows never drops the dot). Dots
allow namespaced artifact ids such as ``findings.removed``. There are no
separators, so an id is always one path segment and nothing built from ids can
leave the repository root.
"""

from __future__ import annotations

import re

from cas.errors import InvalidIdError

MAX_ID_LENGTH = 128
ID_RULE = (
    "1-128 characters of letters, digits, '.', '_' or '-', "
    "starting with a letter, digit or '_', not ending with '.', without '..'"
)
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def is_valid_id(value: object) -> bool:
    """Whether `value` follows the id rule."""
    return (
        isinstance(value, str)
        and _ID.fullmatch(value) is not None
        and ".." not in value
        and not value.endswith(".")
    )


def check_id(value: object, kind: str = "id") -> str:
    """Return `value` if it follows the id rule, else raise `InvalidIdError` naming it."""
    if is_valid_id(value):
        assert isinstance(value, str)
        return value
    return _refuse(value, kind)


def _refuse(value: object, kind: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdError(kind, repr(value), f"a string: {ID_RULE}")
    raise InvalidIdError(kind, value, ID_RULE)


def check_run_id(value: object) -> str:
    """Validate a run id."""
    return check_id(value, "run id")


def check_artifact_id(value: object) -> str:
    """Validate an artifact id."""
    return check_id(value, "artifact id")


def check_tenant(value: object) -> str:
    """Validate a tenant name."""
    return check_id(value, "tenant")
