"""Named remotes: other repositories this one pushes to and pulls from.

A remote is a name (id rule), a URL (a local folder or any fsspec URL), an
optional ``endpoint_url`` (MinIO, R2, a local test server: passed to s3fs as
``client_kwargs``) and an optional tenant, which places the remote repository
under ``tenants/{tenant}/`` of the URL. They live in ``remotes.json`` beside
``config.json``, rewritten whole (atomically) on every change. Credentials are
never stored: s3fs takes them from the standard AWS environment and files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cas.errors import ConflictError, InvalidInputError, NotFoundError
from cas.ids import check_id, check_tenant
from cas.objects import Backend

REMOTES = "remotes.json"
TENANTS = "tenants"


@dataclass(frozen=True)
class Location:
    """Where a repository is: a folder or fsspec URL, an endpoint, a tenant.

    ``cas --repo URL --endpoint-url E --tenant T`` and every remote are one of these,
    so a tenant means the same place, checked by the same rule, everywhere.
    """

    url: str
    endpoint_url: str | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.tenant is not None:
            check_tenant(self.tenant)

    @property
    def root(self) -> str:
        """The repository's root: the URL, under ``tenants/{tenant}`` if a tenant is set."""
        base = self.url.rstrip("/")
        return f"{base}/{TENANTS}/{self.tenant}" if self.tenant else base

    def storage_options(self) -> dict[str, Any]:
        """fsspec options: the endpoint, and no stale listings on S3.

        Credentials and region are not options: s3fs (botocore) reads them from the
        standard AWS environment variables and files.
        """
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        if self.url.startswith(("s3://", "s3a://")):
            options["use_listings_cache"] = False
        return options


@dataclass(frozen=True)
class Remote:
    """One remote repository: a name, and where it is (`Location`)."""

    name: str
    url: str
    endpoint_url: str | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        check_id(self.name, "remote name")
        if self.tenant is not None:
            check_tenant(self.tenant)
        if not is_location(self.url):
            raise InvalidInputError(
                f"invalid remote URL {self.url[:120]!r}: expected a folder path "
                "(with a '/') or a URL such as s3://bucket/prefix"
            )

    @property
    def where(self) -> Location:
        """The remote's `Location`."""
        return Location(self.url, self.endpoint_url, self.tenant)

    @property
    def location(self) -> str:
        """The remote repository's root (`Location.root`)."""
        return self.where.root

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for the remote (`Location.storage_options`)."""
        return self.where.storage_options()

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "endpoint_url": self.endpoint_url, "tenant": self.tenant}


def is_location(text: str) -> bool:
    """Whether `text` names a place (a URL or a path with a separator), not a bare word."""
    return bool(text) and ("://" in text or "/" in text or text.startswith("."))


def normalise_url(url: str) -> str:
    """A local path made absolute (a remote must not depend on the working directory)."""
    if "://" in url and not url.startswith("file://"):
        return url
    return str(Path(url.removeprefix("file://")).expanduser().absolute())


def load(backend: Backend) -> dict[str, Remote]:
    """The remotes of the repository on `backend`, by name."""
    try:
        data = orjson.loads(backend.read(REMOTES))
    except NotFoundError:
        return {}
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{backend.url}/{REMOTES} is not valid JSON: {error}") from None
    remotes = data.get("remotes", {}) if isinstance(data, dict) else {}
    return {
        name: Remote(name, str(body["url"]), body.get("endpoint_url"), body.get("tenant"))
        for name, body in sorted(remotes.items())
    }


def _save(backend: Backend, remotes: dict[str, Remote]) -> None:
    body = {"remotes": {name: remote.to_dict() for name, remote in sorted(remotes.items())}}
    backend.write(REMOTES, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def add(
    backend: Backend,
    name: str,
    url: str,
    *,
    endpoint_url: str | None = None,
    tenant: str | None = None,
) -> Remote:
    """Record a remote; every check happens before the one write. A taken name conflicts."""
    remote = Remote(name, normalise_url(url) if is_location(url) else url, endpoint_url, tenant)
    remotes = load(backend)
    existing = remotes.get(name)
    if existing == remote:
        return remote
    if existing is not None:
        raise ConflictError(
            f"remote {name!r} already exists ({existing.location}): remove it first"
        )
    remotes[name] = remote
    _save(backend, remotes)
    return remote


def remove(backend: Backend, name: str) -> Remote:
    """Forget a remote (its repository is left untouched); `NotFoundError` if unknown."""
    remotes = load(backend)
    remote = remotes.pop(check_id(name, "remote name"), None)
    if remote is None:
        raise NotFoundError(f"no remote {name!r}")
    _save(backend, remotes)
    return remote


def resolve(backend: Backend | None, text: str) -> Remote:
    """A remote by name, or an ad-hoc one for a URL or path; a bare unknown word is an error."""
    if is_location(text):
        return Remote("url", normalise_url(text))
    remotes = load(backend) if backend is not None else {}
    remote = remotes.get(check_id(text, "remote name"))
    if remote is None:
        known = ", ".join(remotes) or "none"
        raise NotFoundError(
            f"no remote {text!r} (known: {known}); add one with 'cas remote add NAME URL', "
            "or give a path containing '/' or a URL"
        )
    return remote
