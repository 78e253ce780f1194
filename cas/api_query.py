"""Query parameters of the HTTP API, checked, and the cursor of ``GET /v1/runs``.

Plain Python (no starlette): every parameter is parsed here into library values,
and anything malformed raises `ParameterError` naming the parameter, which the
API answers with 400.

The listing is keyset-paginated: a cursor holds the sort key of the last run a
page showed (start time in microseconds, run id) and a fingerprint of the
filters it was made for. The next page asks the store for runs that started no
later than that start (`RunQuery.until` is exclusive, so one microsecond past it)
and drops those at or above the key, so a page never repeats a run and runs
saved meanwhile (newer, so on earlier pages) never shift the walk. Runs that
share the last start time are counted in the cursor (``ties``) so the store is
asked for enough rows to skip them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from cas.errors import InvalidIdError, InvalidInputError
from cas.ids import ID_RULE, check_id
from cas.index_rows import RunQuery, RunRow

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
STATUSES = ("running", "completed", "partial", "failed", "interrupted")
RUNS_PARAMETERS = ("status", "since", "until", "runbook", "artifact", "digest", "limit", "cursor")
EXPORT_FORMATS = ("json", "markdown", "html")
CURSOR_VERSION = 1
MAX_TEXT = 200
_EPOCH = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


class ParameterError(InvalidInputError):
    """A request parameter (query or path) is malformed; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"invalid parameter {parameter!r}: {message}")
        self.parameter = parameter


def single(params: Sequence[tuple[str, str]], allowed: Sequence[str]) -> dict[str, str]:
    """Query parameters as a dict: unknown or repeated ones are refused by name."""
    found: dict[str, str] = {}
    for name, value in params:
        if name not in allowed:
            known = f"expected {', '.join(allowed)}" if allowed else "this endpoint takes none"
            raise ParameterError(name[:60], f"unknown query parameter; {known}")
        if name in found:
            raise ParameterError(name, "given more than once")
        found[name] = value
    return found


def path_id(value: str, parameter: str) -> str:
    """A run or artifact id (from the path or the query), checked against the id rule."""
    try:
        return check_id(value, parameter)
    except InvalidIdError:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ParameterError(parameter, f"{shown!r} is not an id: expected {ID_RULE}") from None


def parse_limit(text: str | None) -> int:
    """``limit``: a whole number from 1 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent."""
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MAX_LIMIT:
        raise ParameterError("limit", f"{text[:40]!r} is not a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def parse_time(text: str | None, parameter: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or time, UTC when it names no zone; a bare date with `end_of_day`
    covers its whole day. Times beyond Python's range are clamped to it."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ParameterError(
            parameter, f"{text[:40]!r} is not an ISO 8601 date or time, e.g. 2026-03-01"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
        if end_of_day and len(text) == 10:
            value += timedelta(days=1)
    except OverflowError:
        return _EPOCH if value.year == 1 else _END
    return value


def parse_text(text: str | None, parameter: str) -> str | None:
    """A free-text filter (``runbook``): 1 to 200 characters, no control characters."""
    if text is None:
        return None
    if not 1 <= len(text) <= MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ParameterError(
            parameter, f"expected 1-{MAX_TEXT} characters without control characters"
        )
    return text


def parse_digest(text: str | None) -> str | None:
    """``digest``: a prefix of 1 to 64 hex digits."""
    if text is None:
        return None
    if not 1 <= len(text) <= 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ParameterError("digest", f"{text[:80]!r} is not 1-64 hex digits")
    return text.lower()


def parse_status(text: str | None) -> str | None:
    """``status``: one of the run statuses."""
    if text is not None and text not in STATUSES:
        raise ParameterError("status", f"{text[:40]!r} is not one of {', '.join(STATUSES)}")
    return text


def parse_format(text: str | None) -> str:
    """``format`` of an export: json (the default), markdown or html."""
    if text is None:
        return "json"
    if text not in EXPORT_FORMATS:
        raise ParameterError("format", f"{text[:40]!r} is not one of {', '.join(EXPORT_FORMATS)}")
    return text


def parse_bool(text: str | None, parameter: str) -> bool:
    """``true`` or ``false`` (absent: false)."""
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise ParameterError(parameter, f"{text[:40]!r} is not true or false")


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last run's sort key, and how many runs it
    (and the pages before) showed with that same start time."""

    started: int  # microseconds since the epoch, UTC
    run_id: str
    ties: int
    filters: str  # fingerprint of the filters the cursor was made for

    def encode(self) -> str:
        body = [CURSOR_VERSION, self.started, self.run_id, self.ties, self.filters]
        return base64.urlsafe_b64encode(orjson.dumps(body)).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made; `ParameterError` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            version, started, run_id, ties, filters = orjson.loads(raw)
            valid = (
                version == CURSOR_VERSION
                and type(started) is int
                and type(ties) is int
                and 0 < ties <= MAX_LIMIT * 1000
                and isinstance(filters, str)
            )
            if valid:
                micros_to_time(started)
                return cls(started, check_id(run_id, "run id"), ties, filters)
        except (ValueError, TypeError, binascii.Error, OverflowError, InvalidInputError):
            pass
        raise ParameterError("cursor", "not a cursor this API returned (use next_cursor as is)")


def time_to_micros(value: datetime | None) -> int:
    moment = value or _EPOCH
    return (moment - _EPOCH) // _MICRO


def micros_to_time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _key(row: RunRow) -> tuple[int, str]:
    return (time_to_micros(row.started_at), row.run_id)


@dataclass(frozen=True)
class RunsRequest:
    """A checked ``GET /v1/runs``: the filters, the page size and where to resume."""

    query: RunQuery
    limit: int
    cursor: Cursor | None

    @classmethod
    def parse(cls, params: Sequence[tuple[str, str]]) -> RunsRequest:
        """From the query string's (name, value) pairs; `ParameterError` names a bad one."""
        found = single(params, RUNS_PARAMETERS)
        artifact = found.get("artifact")
        query = RunQuery(
            status=parse_status(found.get("status")),
            since=parse_time(found.get("since"), "since"),
            until=parse_time(found.get("until"), "until", end_of_day=True),
            runbook=parse_text(found.get("runbook"), "runbook"),
            artifact=None if artifact is None else path_id(artifact, "artifact"),
            digest=parse_digest(found.get("digest")),
        )
        text = found.get("cursor")
        cursor = None if text is None else Cursor.decode(text)
        if cursor is not None and cursor.filters != fingerprint(query):
            raise ParameterError("cursor", "it was made for other filters: repeat them unchanged")
        return cls(query, parse_limit(found.get("limit")), cursor)

    def store_query(self) -> RunQuery:
        """What to ask the store: one run more than a page (to know whether there is a next),
        plus the runs the cursor says to skip."""
        extra = 1 + (self.cursor.ties if self.cursor else 0)
        query = replace(self.query, limit=self.limit + extra)
        if self.cursor is None:
            return query
        if self.cursor.started >= time_to_micros(_END):
            return query
        bound = micros_to_time(self.cursor.started) + _MICRO
        until = bound if query.until is None else min(query.until, bound)
        return replace(query, until=until)

    def page(self, rows: list[RunRow]) -> tuple[list[RunRow], str | None]:
        """The page from the store's rows, and the cursor of the next (None at the end)."""
        if self.cursor is not None:
            last = (self.cursor.started, self.cursor.run_id)
            rows = [row for row in rows if _key(row) < last]
        shown, more = rows[: self.limit], len(rows) > self.limit
        if not more or not shown:
            return shown, None
        return shown, self._next(shown).encode()

    def _next(self, shown: list[RunRow]) -> Cursor:
        started, run_id = _key(shown[-1])
        ties = sum(1 for row in shown if _key(row)[0] == started)
        if self.cursor is not None and self.cursor.started == started:
            ties += self.cursor.ties
        return Cursor(started, run_id, ties, fingerprint(self.query))


def fingerprint(query: RunQuery) -> str:
    """A short digest of the filters (not limit/offset), bound into cursors."""
    filters: list[Any] = [
        query.status,
        None if query.since is None else query.since.isoformat(),
        None if query.until is None else query.until.isoformat(),
        query.runbook,
        query.artifact,
        query.digest,
    ]
    return hashlib.sha256(orjson.dumps(filters)).hexdigest()[:16]
