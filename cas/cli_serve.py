"""``cas serve`` (the read-only HTTP API, `cas.api`) and ``cas token create|list|revoke``.

The global ``--repo`` names the deployment root: tenant ``T``'s repository is
``{root}/tenants/T`` and the tokens live in ``{root}/tokens.json`` (or in
PostgreSQL with ``--execution-store``). See docs/deployment.md. uvicorn and
starlette (both in `cas.api`) are imported only when ``cas serve`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from cas import cli_render as render
from cas.errors import InvalidInputError, RepositoryError

if TYPE_CHECKING:
    from cas.deployment import Deployment
    from cas.tokens import TokenInfo, TokenStore

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")]

token_app = typer.Typer(
    help="Create, list and revoke the API's bearer tokens (stored hashed).",
    no_args_is_help=True,
)


def deployment(ctx: typer.Context, *, json: bool, token_cache: float = 0.0) -> Deployment:
    """The deployment the global options name (``--repo`` is its root, ``--endpoint-url``
    and ``--execution-store`` apply); records the output mode for errors first."""
    from cas.deployment import Deployment
    from cas.repository import default_location

    state = ctx.obj  # `cas.cli._State`
    if state is not None:
        state.json = json
    if getattr(state, "tenant", None) is not None:
        raise InvalidInputError(
            "--tenant picks one tenant's repository, but this command works on the whole "
            "deployment under --repo: leave --tenant out"
        )
    root = getattr(state, "location", None) or default_location()
    if "://" not in root and not Path(root).is_dir():
        raise RepositoryError(f"no deployment root at {root!r}: expected a folder (or a URL)")
    return Deployment.configure(
        root,
        storage_options=getattr(state, "storage", None),
        execution_store=getattr(state, "execution_store", None),
        token_cache_seconds=token_cache,
    )


def _tokens(ctx: typer.Context, json: bool) -> TokenStore:
    return deployment(ctx, json=json).tokens


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` group to `app`."""
    app.command()(serve)
    app.add_typer(token_app, name="token")


def serve(
    ctx: typer.Context,
    *,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    token_cache: Annotated[
        float,
        typer.Option(
            "--token-cache",
            min=0,
            metavar="SECONDS",
            help="Reuse the token list this long (a revocation takes up to this long).",
        ),
    ] = 0.0,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
) -> None:
    """Serve the read-only HTTP API (see docs/deployment.md) until interrupted."""
    from cas.api import serve as run_server

    found = deployment(ctx, json=False, token_cache=token_cache)
    found.tokens.list()  # fail now, not on the first request, if the tokens are unreadable
    os.environ.update(environment(found, token_cache))
    plural = "s" * (workers != 1)
    typer.echo(f"serving {found.root} on http://{host}:{port} ({workers} worker{plural})", err=True)
    run_server(host, port, workers=workers, access_log=access_log)


def environment(found: Deployment, token_cache: float) -> dict[str, str]:
    """What `cas.api.app_from_environment` reads in each worker process."""
    return {
        "CAS_SERVE_ROOT": found.root,
        "CAS_SERVE_STORAGE": orjson.dumps(found.storage_options).decode(),
        "CAS_EXECUTION_STORE": found.execution_store or "",
        "CAS_TOKEN_CACHE_SECONDS": str(token_cache),
    }


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="The tenant it reads (id rule).")],
    *,
    name: Annotated[str, typer.Option("--name", help="A label, e.g. who holds it.")] = "",
    json: JsonFlag = False,
) -> None:
    """Create a token for TENANT and print its secret: the only time it is shown."""
    store = _tokens(ctx, json)
    secret, info = store.create(tenant, name)
    if json:
        render.emit_json({**info.to_dict(), "secret": secret})
        return
    typer.echo(secret)
    typer.echo(
        f"created token {info.token_id} for tenant {info.tenant}: "
        "keep the secret above, it is not shown again",
        err=True,
    )


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    json: JsonFlag = False,
) -> None:
    """List tokens (never their secrets): id, tenant, name, created, revoked."""
    found = _tokens(ctx, json).list()
    if json:
        render.emit_json([info.to_dict() for info in found])
        return
    for info in found:
        typer.echo(_token_line(info))


def _token_line(info: TokenInfo) -> str:
    revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
    return (
        f"{info.token_id}\t{info.tenant}\t{info.created_at:%Y-%m-%d %H:%M}\t{revoked}\t{info.name}"
    )


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token id (tok_...).")],
    json: JsonFlag = False,
) -> None:
    """Revoke a token: it stops authenticating (after a server's --token-cache at most)."""
    info = _tokens(ctx, json).revoke(token_id)
    if json:
        render.emit_json(info.to_dict())
        return
    typer.echo(f"revoked token {info.token_id} of tenant {info.tenant}")
