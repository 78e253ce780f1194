"""API tokens: bearer secrets that map to a tenant, stored only as SHA-256 hashes.

A secret is ``cas_`` followed by 32 random bytes (URL-safe base64); `TokenStore.create`
returns it exactly once. A store keeps the secret's hash, the tenant, a name and
the creation and revocation times, so a leaked store reveals no usable token.
`lookup` hashes the presented secret and compares hashes in constant time;
revoked tokens never match.

`BackendTokenStore` keeps the records in ``tokens.json`` at the deployment root
of a `Backend` (a folder or an S3 prefix), rewritten whole (atomically) on every
change; `cas.pgstore` has a PostgreSQL implementation of the same protocol.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import orjson

from cas.errors import InvalidInputError, NotFoundError
from cas.ids import check_id, check_tenant
from cas.objects import Backend

TOKENS = "tokens.json"
FORMAT = "cas-tokens/1"
PREFIX = "cas_"
SECRET_BYTES = 32
# ``cas_`` + 43 URL-safe base64 characters (32 bytes, unpadded): anything else is refused unhashed.
SECRET_LENGTH = len(PREFIX) + 43
ID_PREFIX = "tok_"


def new_secret() -> str:
    """A fresh secret: ``cas_`` + 32 random bytes, URL-safe base64 without padding."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=")
    return PREFIX + raw.decode()


def new_token_id() -> str:
    """A public token id (safe to log and show): ``tok_`` + 12 hex characters."""
    return ID_PREFIX + secrets.token_hex(6)


def hash_secret(secret: str) -> str:
    """The SHA-256 of a secret, hex: what stores keep instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


_SECRET = re.compile(rf"{PREFIX}[A-Za-z0-9_-]{{{SECRET_LENGTH - len(PREFIX)}}}")


def is_well_formed(secret: str) -> bool:
    """Whether `secret` looks like one `new_secret` made (cheap check before hashing)."""
    return _SECRET.fullmatch(secret) is not None


@dataclass(frozen=True)
class TokenInfo:
    """What a store knows about one token (never the secret)."""

    token_id: str
    tenant: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the token still authenticates."""
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """The token as ``cas token list --json`` prints it."""
        return {
            "token_id": self.token_id,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


@runtime_checkable
class TokenStore(Protocol):
    """Where tokens live: created, looked up by secret, revoked, listed."""

    def create(self, tenant: str, name: str) -> tuple[str, TokenInfo]:
        """A new token for `tenant`: the secret (returned only here) and its record."""

    def lookup(self, secret: str) -> TokenInfo | None:
        """The active token whose hash matches `secret`'s; None if none (or revoked)."""

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (idempotent); `NotFoundError` if there is no such id."""

    def list(self) -> builtins.list[TokenInfo]:
        """Every token, revoked ones included, oldest first."""


def check_name(name: str) -> str:
    """A token's free-text label: one line of at most 200 characters."""
    if not isinstance(name, str) or len(name) > 200 or any(c in name for c in "\r\n\x00"):
        raise InvalidInputError(
            f"invalid token name {str(name)[:80]!r}: expected one line of at most 200 characters"
        )
    return name


def check_token_id(token_id: str) -> str:
    """A token id as `new_token_id` makes them (the id rule, starting ``tok_``)."""
    check_id(token_id, "token id")
    if not token_id.startswith(ID_PREFIX):
        raise InvalidInputError(f"invalid token id {token_id!r}: expected tok_ and 12 hex digits")
    return token_id


@dataclass(frozen=True)
class _Record:
    info: TokenInfo
    digest: str  # hex SHA-256 of the secret


class BackendTokenStore:
    """`TokenStore` in ``tokens.json`` on a backend, rewritten whole on each change.

    Changes are serialised within one process; two processes creating tokens at the
    same instant could lose one of the writes (token management is an admin task,
    run from one place). Lookups re-read the file, or at most every `cache_seconds`.
    """

    def __init__(self, backend: Backend, *, cache_seconds: float = 0.0) -> None:
        self.backend = backend
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, builtins.list[_Record]] | None = None

    def create(self, tenant: str, name: str = "") -> tuple[str, TokenInfo]:
        check_tenant(tenant)
        check_name(name)
        secret = new_secret()
        info = TokenInfo(new_token_id(), tenant, name, datetime.now(UTC))
        with self._lock:
            records = self._read()
            records.append(_Record(info, hash_secret(secret)))
            self._write(records)
        return secret, info

    def lookup(self, secret: str) -> TokenInfo | None:
        if not isinstance(secret, str) or not is_well_formed(secret):
            return None
        wanted = hash_secret(secret)
        found = None
        for record in self._records():
            # Compare every record, in constant time each: no early exit to time.
            if hmac.compare_digest(record.digest, wanted) and record.info.active:
                found = record.info
        return found

    def revoke(self, token_id: str) -> TokenInfo:
        check_token_id(token_id)
        with self._lock:
            records = self._read()
            for number, record in enumerate(records):
                if record.info.token_id == token_id:
                    if record.info.active:
                        info = replace(record.info, revoked_at=datetime.now(UTC))
                        records[number] = _Record(info, record.digest)
                        self._write(records)
                    return records[number].info
        raise NotFoundError(f"no token {token_id!r}")

    def list(self) -> builtins.list[TokenInfo]:
        return [record.info for record in self._read()]

    def _records(self) -> builtins.list[_Record]:
        if self.cache_seconds <= 0:
            return self._read()
        now = time.monotonic()
        cached = self._cached
        if cached is None or now - cached[0] > self.cache_seconds:
            cached = (now, self._read())
            self._cached = cached
        return cached[1]

    def _read(self) -> builtins.list[_Record]:
        try:
            data = orjson.loads(self.backend.read(TOKENS))
        except NotFoundError:
            return []
        except orjson.JSONDecodeError as error:
            raise InvalidInputError(
                f"{self.backend.url}/{TOKENS} is not valid JSON: {error}"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidInputError(f"{self.backend.url}/{TOKENS} is not a {FORMAT} file")
        return [_record(item) for item in data.get("tokens", [])]

    def _write(self, records: builtins.list[_Record]) -> None:
        body = {"format": FORMAT, "tokens": [_dump(record) for record in records]}
        self.backend.write(TOKENS, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        self._cached = None


def _dump(record: _Record) -> dict[str, Any]:
    return {**record.info.to_dict(), "sha256": record.digest}


def _record(item: dict[str, Any]) -> _Record:
    revoked = item.get("revoked_at")
    info = TokenInfo(
        token_id=str(item["token_id"]),
        tenant=check_tenant(item["tenant"]),
        name=str(item.get("name", "")),
        created_at=datetime.fromisoformat(item["created_at"]),
        revoked_at=None if revoked is None else datetime.fromisoformat(revoked),
    )
    return _Record(info, str(item["sha256"]))
