"""BLAKE3 digests, the canonical JSON form they are taken over, and sealed records.

Canonical JSON (version ``CANONICAL_VERSION``) is orjson's output with sorted
keys: compact separators, UTF-8 (no ASCII escaping), shortest round-trip floats.
Content must already be plain JSON (`check_plain_json`): NaN, bytes, datetimes,
sets, tuples and other Python values are refused with the path where they sit,
never turned into strings.
"""

from __future__ import annotations

import gc
import math
import operator
from dataclasses import dataclass
from itertools import chain, compress, repeat
from typing import Any

import blake3
import orjson

from cas.errors import IntegrityError, InvalidContentError, InvalidInputError

CANONICAL_VERSION = "cas-json-1"
DIGEST_ALGORITHM = "blake3"
HEX_LENGTH = 64
SHORT_LENGTH = 12
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A BLAKE3-256 digest, held as 64 lowercase hex characters."""

    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Validate `text` (64 lowercase hex characters) and wrap it."""
        if len(text) != HEX_LENGTH or not _HEX.issuperset(text):
            raise InvalidInputError(
                f"invalid digest {text[:80]!r}: expected {HEX_LENGTH} lowercase hex characters"
            )
        return cls(text)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of `data`."""
        return cls(blake3.blake3(data).hexdigest())

    @property
    def short(self) -> str:
        """The first 12 hex characters, for display."""
        return self.hex[:SHORT_LENGTH]

    @property
    def path(self) -> str:
        """The sharded relative path: ``ab/cdef…``."""
        return f"{self.hex[:2]}/{self.hex[2:]}"

    def __str__(self) -> str:
        return self.hex


def is_digest_prefix(text: str) -> bool:
    """Whether `text` could be the start of a digest."""
    return 0 < len(text) <= HEX_LENGTH and _HEX.issuperset(text)


def check_plain_json(value: Any) -> Any:
    """Return `value` if it is plain JSON (or a plain copy of it), else `InvalidContentError`.

    The fast path is a type census level by level at C speed (`gc.get_referents`
    lists what containers hold): it accepts trees made only of dict (with str
    keys), list, str, int, finite float, bool and None. Integers beyond 64 bits
    and strings that are not UTF-8 (lone surrogates) pass the census but are
    refused, with their path, when the content is serialised, before any write.
    Anything else (a defaultdict, say) gets one round trip through orjson and an
    exact comparison, which yields a plain copy; what fails both is walked in
    Python to name the exact path.
    """
    if _census(value):
        return value
    try:
        copy = orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        copy = _MISMATCH
    if copy is not _MISMATCH and _same(copy, value):
        return copy
    _walk(value, "$")
    raise InvalidContentError("$", "value does not survive a JSON round trip")


_STRICT = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def canonical_json(value: Any) -> bytes:
    """Canonical bytes of plain-JSON `value`; anything else raises `InvalidContentError`.

    orjson is told to hand every datetime, dataclass, subclass, set or bytes to a
    default that refuses it, so nothing is quietly turned into a string; the walk
    then names the offending path. (Content is checked once, when its `Message` is
    built; this catches what was changed in place since.)
    """
    try:
        return orjson.dumps(value, default=_refuse, option=_STRICT)
    except (TypeError, orjson.JSONEncodeError) as error:
        _walk(value, "$")
        raise InvalidContentError("$", str(error)) from None


_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})
_MISMATCH: Any = object()


MAX_DEPTH = 250  # orjson refuses deeper nesting; a container holding itself never ends


def _census(value: Any) -> bool:
    level = [value]
    for _ in range(MAX_DEPTH):
        types = list(map(type, level))
        kinds = set(types)
        if not kinds <= _PLAIN:
            return False
        if float in kinds and not _finite(_pick(level, types, float)):
            return False
        if dict in kinds and not _good_keys(_pick(level, types, dict)):
            return False
        level = gc.get_referents(*level)
        if not level:
            return True
    return False


def _pick(level: list[Any], types: list[type], kind: type) -> list[Any]:
    """The members of `level` whose type is exactly `kind`, picked at C speed."""
    return list(compress(level, map(operator.is_, types, repeat(kind))))


def _good_keys(dicts: list[dict[Any, Any]]) -> bool:
    return set(map(type, chain.from_iterable(dicts))) <= {str}


def _encodable(strings: list[str]) -> bool:
    # A lone surrogate is a str but not UTF-8: one join and encode finds it.
    try:
        "".join(strings).encode()
    except UnicodeEncodeError:
        return False
    return True


def _finite(floats: list[float]) -> bool:
    # One C-speed sum finds NaN or infinity; huge finite floats may overflow it, so
    # look one by one before refusing.
    try:
        if math.isfinite(math.fsum(floats)):
            return True
    except OverflowError:
        pass
    return all(math.isfinite(x) for x in floats)


def _same(copy: Any, value: Any) -> bool:
    # `==` treats 1 == 1.0 == True and NaN != NaN; the walk settles the doubtful cases.
    return bool(copy == value) and type(copy) is type(value)


def _walk(value: Any, path: str, ancestors: tuple[int, ...] = ()) -> None:
    kind = type(value)
    if kind is dict or kind is list:
        _walk_container(value, path, ancestors)
    elif kind is float:
        if not math.isfinite(value):
            raise InvalidContentError(path, f"{value!r} is not a JSON number")
    elif kind is int:
        if not -(2**63) <= value < 2**64:
            raise InvalidContentError(path, "integer out of 64-bit range")
    elif kind is str:
        _check_text(value, path)
    elif kind is not bool and value is not None:
        raise InvalidContentError(path, f"{kind.__name__} is not a JSON type")


def _walk_container(value: Any, path: str, ancestors: tuple[int, ...]) -> None:
    if id(value) in ancestors:
        raise InvalidContentError(path, "the value contains itself")
    if len(ancestors) >= MAX_DEPTH:
        raise InvalidContentError(path, f"nested deeper than {MAX_DEPTH} levels")
    inner = (*ancestors, id(value))
    if type(value) is list:
        for position, item in enumerate(value):
            _walk(item, f"{path}[{position}]", inner)
        return
    for key, item in value.items():
        if type(key) is not str:
            raise InvalidContentError(path, f"key {key!r} is {type(key).__name__}, not str")
        _check_text(key, path)
        _walk(item, f"{path}.{key}", inner)


def _check_text(text: str, path: str) -> None:
    if not _encodable([text]):
        raise InvalidContentError(path, "string holds a lone surrogate (not UTF-8)")


def seal(record: dict[str, Any]) -> bytes:
    """Canonical bytes of `record` with a ``check`` field: a short BLAKE3 of the rest.

    Raises `InvalidContentError` (naming the path) if the record is not plain JSON.
    """
    body = canonical_json(record)
    check = blake3.blake3(body).hexdigest()[:32]
    return canonical_json({**record, "check": check})


def unseal(data: bytes, location: str) -> dict[str, Any]:
    """Parse a sealed record and verify its check, raising `IntegrityError` if damaged."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise IntegrityError(f"damaged record at {location}: {error}", location=location) from None
    if not isinstance(record, dict) or "check" not in record:
        raise IntegrityError(f"damaged record at {location}: no check field", location=location)
    check = record.pop("check")
    if blake3.blake3(canonical_json(record)).hexdigest()[:32] != check:
        raise IntegrityError(f"damaged record at {location}: check mismatch", location=location)
    return record
