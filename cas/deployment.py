"""A SaaS deployment: one root holding every tenant's repository, plus the API tokens.

The layout follows `cas.remotes` (a remote with a tenant): tenant ``acme``'s
objects live in the repository at ``{root}/tenants/acme``, created by ``cas push``
to a remote with ``--tenant acme`` (or ``cas --repo {root}/tenants/acme init``).
With an execution store (a ``postgresql://`` DSN) the runs and manifests of every
tenant are in PostgreSQL instead, each repository opened for its tenant only.
`tokens` maps bearer secrets to tenants (``tokens.json`` at the root, or the
PostgreSQL store's tokens table).

Nothing here imports starlette: ``cas token`` uses it without the HTTP stack.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cas.errors import NotFoundError
from cas.ids import check_tenant
from cas.objects import Backend, open_backend
from cas.remotes import Location, normalise_url
from cas.tokens import BackendTokenStore, TokenStore

if TYPE_CHECKING:
    from cas.repository import Repository

CONFIG = "config.json"  # the repository marker (`cas.repository.CONFIG`)


def token_store(
    root: str,
    *,
    execution_store: str | None = None,
    options: dict[str, Any] | None = None,
    cache_seconds: float = 0.0,
) -> TokenStore:
    """Where a deployment keeps its tokens: PostgreSQL when that is the execution store,
    else ``tokens.json`` at the root."""
    if execution_store:
        from cas.pgstore import PostgresTokenStore

        store: TokenStore = PostgresTokenStore(execution_store)
        return store
    backend = open_backend(root, **(options or {}))
    return BackendTokenStore(backend, cache_seconds=cache_seconds)


@dataclass
class Deployment:
    """Where tenants' repositories are, how to reach them, and who may read them."""

    root: str
    tokens: TokenStore
    storage_options: dict[str, Any] = field(default_factory=dict)
    execution_store: str | None = None
    max_open: int = 256  # tenants' repositories kept open (least recently used dropped)
    _open: OrderedDict[str, Repository] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def configure(
        cls,
        root: str,
        *,
        storage_options: dict[str, Any] | None = None,
        execution_store: str | None = None,
        token_cache_seconds: float = 0.0,
    ) -> Deployment:
        """A deployment from the ``cas serve`` options (a local root is made absolute).

        `storage_options` are fsspec's (`cas.remotes.Location.storage_options`).
        """
        root = normalise_url(root)
        options = {**Location(root).storage_options(), **(storage_options or {})}
        tokens = token_store(
            root,
            execution_store=execution_store,
            options=options,
            cache_seconds=token_cache_seconds,
        )
        return cls(root, tokens, options, execution_store or None)

    def location(self, tenant: str) -> str:
        """The object root of `tenant`'s repository (as ``cas --tenant`` places it)."""
        return Location(self.root, tenant=check_tenant(tenant)).root

    def open_repository(self, tenant: str) -> Repository:
        """`tenant`'s repository (kept open); `NotFoundError` if the tenant has none yet."""
        with self._lock:
            repo = self._open.get(tenant)
            if repo is not None:
                self._open.move_to_end(tenant)
                return repo
        repo = self._open_new(tenant)
        with self._lock:
            self._open[tenant] = repo
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        return repo

    def _open_new(self, tenant: str) -> Repository:
        from cas.repository import Repository

        location = self.location(tenant)
        backend: Backend = open_backend(location, **self.storage_options)
        if not backend.exists(CONFIG):
            # Not cached: the tenant's first push creates it while we run.
            raise NotFoundError(f"tenant {tenant!r} has no repository")
        extra: dict[str, Any] = {}
        if self.execution_store:
            extra = {"execution_store": self.execution_store, "tenant": tenant}
        return Repository.open(location, **extra, **self.storage_options)
