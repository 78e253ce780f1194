"""``cas serve``: a read-only HTTP API over a deployment's stores (the only starlette
and uvicorn importer).

Every endpoint but ``/v1/health`` and ``/openapi.json`` needs ``Authorization:
Bearer <token>``; the token's tenant picks the one repository the request may
read (`Deployment.open_repository`), so another tenant's run is simply absent:
it answers 404 with the same body as a run that never existed. Errors are JSON,
``{"error": {"code": ..., "message": ..., "parameter": ...}}`` (``parameter`` only
for 400). Malformed input is refused before any store is read (`cas.api_query`).

Endpoints that read stores are plain functions: starlette runs them in its thread
pool, so the blocking store calls never hold up the event loop. The OpenAPI document is
`cas.api_openapi`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cas import __version__
from cas.api_openapi import document
from cas.api_query import (
    ParameterError,
    RunsRequest,
    parse_bool,
    parse_format,
    path_id,
    single,
)
from cas.errors import (
    CasError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RepositoryError,
)

if TYPE_CHECKING:
    from cas.deployment import Deployment
    from cas.model import ArtifactEntry, ArtifactOutcome, ExecutionResult
    from cas.repository import Repository
    from cas.tokens import TokenInfo

log = logging.getLogger("cas.api")
STREAM_PIECE = 64 * 1024
MEDIA_TYPES = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
CHALLENGE = 'Bearer realm="cas"'


class Answer(Exception):
    """An error response, raised from anywhere below an endpoint."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.parameter = parameter
        self.headers = headers or {}

    def response(self) -> Response:
        body: dict[str, str] = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return json_response({"error": body}, self.status, self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def no_run(run_id: str) -> Answer:
    """The one 404 for a run: absent, or another tenant's (same body either way)."""
    return Answer(404, "not_found", f"no run {run_id!r}")


Endpoint = Callable[["Api", Request], Response]


def endpoint(handler: Endpoint) -> Endpoint:
    """Map what a handler raises to the error responses; never a bare 500 for bad input."""

    @functools.wraps(handler)
    def wrapped(api: Api, request: Request) -> Response:
        try:
            return handler(api, request)
        except Answer as answer:
            return answer.response()
        except ParameterError as error:
            return Answer(
                400, "invalid_parameter", str(error), parameter=error.parameter
            ).response()
        except (IntegrityError, NotFoundError, InvalidInputError) as error:
            # Every parameter is checked first (ParameterError), so these come from stored
            # data: a run that exists but whose bytes or records are damaged or gone.
            log.error("integrity error on %s: %s", request.url.path, error)
            message = "stored data failed verification; the operator has been told"
            return Answer(500, "integrity_error", message).response()
        except (RepositoryError, ConflictError) as error:
            log.error("store unavailable on %s: %s", request.url.path, error)
            return Answer(503, "unavailable", "the stores are unavailable; retry later").response()
        except Exception:
            log.exception("unexpected error on %s", request.url.path)
            return Answer(500, "internal_error", "unexpected server error").response()

    return wrapped


class Api:
    """The endpoints, over one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.openapi = orjson.dumps(document())

    # auth and lookups -------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        """The tenant of the request's bearer token; 401 if there is none that is valid."""
        header = request.headers.get("authorization")
        if header is None:
            raise Answer(
                401,
                "unauthorized",
                "missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        scheme, _, secret = header.partition(" ")
        info = self.lookup(secret.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            raise Answer(
                401,
                "unauthorized",
                "invalid, unknown or revoked bearer token",
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        return info.tenant

    def lookup(self, secret: str) -> TokenInfo | None:
        """The token store's answer; 503 if it cannot be read."""
        try:
            return self.deployment.tokens.lookup(secret)
        except CasError as error:
            log.error("token store unavailable: %s", error)
            raise Answer(
                503, "unavailable", "the token store is unavailable; retry later"
            ) from None

    def repository(self, tenant: str) -> Repository | None:
        """The tenant's repository; None if it has none yet (so it has no runs)."""
        try:
            return self.deployment.open_repository(tenant)
        except NotFoundError:
            return None

    def run(
        self, request: Request, tenant: str
    ) -> tuple[Repository, str, ExecutionResult | None, dict[str, ArtifactEntry]]:
        """The run named by the path, of `tenant`; 404 if it has no result and no artifacts."""
        run_id = path_id(request.path_params["run_id"], "run_id")
        repo = self.repository(tenant)
        if repo is None:
            raise no_run(run_id)
        result, entries = repo.find_run(run_id)
        if result is None and not entries:
            raise no_run(run_id)
        return repo, run_id, result, entries

    # endpoints ------------------------------------------------------------------------

    # These two touch no store: answered on the event loop, not in the thread pool.
    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def openapi_document(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    @endpoint
    def runs(self, request: Request) -> Response:
        tenant = self.tenant(request)
        wanted = RunsRequest.parse(request.query_params.multi_items())
        repo = self.repository(tenant)
        rows = [] if repo is None else repo.list_runs(wanted.store_query())
        shown, cursor = wanted.page(rows)
        return json_response({"runs": [row.to_dict() for row in shown], "next_cursor": cursor})

    @endpoint
    def run_detail(self, request: Request) -> Response:
        tenant = self.tenant(request)
        single(request.query_params.multi_items(), ())
        repo, run_id, result, entries = self.run(request, tenant)
        status = "no-result"
        if result is not None:
            status = "interrupted" if repo.is_abandoned(result) else result.status
        body = {
            "run_id": run_id,
            "status": status,
            "artifact_count": len(entries),
            "result": None if result is None else result.to_dict(),
        }
        return json_response(body)

    @endpoint
    def artifacts(self, request: Request) -> Response:
        tenant = self.tenant(request)
        single(request.query_params.multi_items(), ())
        _, run_id, result, entries = self.run(request, tenant)
        outcomes = {} if result is None else result.artifacts
        ids = sorted(set(entries) | set(outcomes))
        rows = [artifact_row(a, entries.get(a), outcomes.get(a)) for a in ids]
        return json_response({"run_id": run_id, "artifacts": rows})

    @endpoint
    def artifact(self, request: Request) -> Response:
        tenant = self.tenant(request)
        single(request.query_params.multi_items(), ())
        artifact_id = path_id(request.path_params["artifact_id"], "artifact_id")
        repo, run_id, _, entries = self.run(request, tenant)
        entry = entries.get(artifact_id)
        if entry is None:
            raise Answer(404, "not_found", f"run {run_id!r} has no artifact {artifact_id!r}")
        body = message_bytes(entry, repo.payloads.get(entry.digest, entry.size))
        headers = {"Content-Length": str(len(body)), "X-Cas-Digest": entry.digest.hex}
        return StreamingResponse(pieces(body), headers=headers, media_type="application/json")

    @endpoint
    def export(self, request: Request) -> Response:
        from cas.export import exporter, load_run

        tenant = self.tenant(request)
        found = single(request.query_params.multi_items(), ("format", "outputs_only"))
        name = parse_format(found.get("format"))
        outputs_only = parse_bool(found.get("outputs_only"), "outputs_only")
        repo, run_id, _, _ = self.run(request, tenant)
        chosen = exporter(name)
        data = chosen.export(load_run(repo, run_id, outputs_only=outputs_only))
        disposition = f'inline; filename="{run_id}{chosen.suffix}"'
        headers = {"Content-Disposition": disposition}
        return Response(data, headers=headers, media_type=MEDIA_TYPES[name])


def artifact_row(
    artifact_id: str, entry: ArtifactEntry | None, outcome: ArtifactOutcome | None
) -> dict[str, Any]:
    """One artifact as ``/artifacts`` lists it: its manifest entry (if it was saved) and
    its outcome (``saved`` for an entry the result does not mention)."""
    return {
        "artifact_id": artifact_id,
        "digest": entry.digest.hex if entry else None,
        "size": entry.size if entry else None,
        "schema": entry.schema.to_dict() if entry and entry.schema else None,
        "validated": entry.validated if entry else None,
        "saved_at": entry.saved_at if entry else None,
        "outcome": outcome.status if outcome else "saved",
    }


def message_bytes(entry: ArtifactEntry, payload: bytes) -> bytes:
    """The message as JSON (envelope, schema, content) without re-parsing the payload.

    A payload is the canonical ``{"content": …, "schema": …}`` (`Message.payload`),
    already verified against its digest; the envelope's fields go in front of them.
    """
    if not payload.startswith(b'{"content":'):
        raise IntegrityError(f"payload {entry.digest.hex} is not a message payload")
    envelope = orjson.dumps(entry.envelope)
    inner = envelope[1:-1]
    return b"{" + inner + (b"," if inner else b"") + payload[1:]


def pieces(body: bytes) -> Iterator[bytes]:
    """`body` in `STREAM_PIECE` slices (a large artifact is not one socket write)."""
    view = memoryview(body)
    for start in range(0, len(body), STREAM_PIECE):
        yield bytes(view[start : start + STREAM_PIECE])


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (not GET), in the API's error shape."""
    assert isinstance(error, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(error.status_code, "invalid_parameter")
    message = {
        404: f"no endpoint {request.url.path!r}",
        405: f"{request.method} is not allowed here: this API is read-only (GET)",
    }.get(error.status_code, str(error.detail))
    headers = dict(error.headers or {})
    return Answer(error.status_code, code, message, headers=headers).response()


def create_app(deployment: Deployment) -> Starlette:
    """The ASGI application serving `deployment`."""
    api = Api(deployment)

    endpoints = {
        "/v1/health": api.health,
        "/v1/runs": api.runs,
        "/v1/runs/{run_id}": api.run_detail,
        "/v1/runs/{run_id}/artifacts": api.artifacts,
        "/v1/runs/{run_id}/artifacts/{artifact_id}": api.artifact,
        "/v1/runs/{run_id}/export": api.export,
        "/openapi.json": api.openapi_document,
    }
    routes = [Route(path, handler, methods=["GET"]) for path, handler in endpoints.items()]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def app_from_environment() -> Starlette:
    """The application ``cas serve`` hands uvicorn (each worker rebuilds it from here):
    ``CAS_SERVE_ROOT``, ``CAS_SERVE_STORAGE`` (fsspec options as JSON),
    ``CAS_EXECUTION_STORE`` and ``CAS_TOKEN_CACHE_SECONDS``, set by `cas.cli_serve`."""
    import os

    from cas.deployment import Deployment

    deployment = Deployment.configure(
        os.environ["CAS_SERVE_ROOT"],
        storage_options=orjson.loads(os.environ.get("CAS_SERVE_STORAGE") or "{}"),
        execution_store=os.environ.get("CAS_EXECUTION_STORE") or None,
        token_cache_seconds=float(os.environ.get("CAS_TOKEN_CACHE_SECONDS") or 0),
    )
    return create_app(deployment)


class TcpConfig(uvicorn.Config):
    """uvicorn's settings, with the listening socket bound as TCP explicitly.

    For several workers uvicorn binds the socket itself, with protocol 0; asyncio sets
    ``TCP_NODELAY`` only on connections of a socket whose protocol is ``IPPROTO_TCP``,
    so every answer (headers and body are two writes) waited ~40 ms for a delayed ACK:
    ``--workers 2`` served 5x fewer requests than one worker.
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in {socket.AF_INET, socket.AF_INET6} and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, sock.detach())
            sock.set_inheritable(True)
        return sock


def serve(host: str, port: int, *, workers: int, access_log: bool) -> None:
    """Run uvicorn until interrupted: `app_from_environment` in each of `workers` processes."""
    config = TcpConfig(
        "cas.api:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
    )
    server = uvicorn.Server(config)
    if workers == 1:
        server.run()
        return
    from uvicorn.supervisors import Multiprocess

    supervisor: Any = Multiprocess  # its signature changed: older uvicorns take the target
    sockets = [config.bind_socket()]
    if "target" in inspect.signature(Multiprocess).parameters:
        supervisor(config, target=server.run, sockets=sockets).run()
    else:
        supervisor(config, sockets=sockets).run()
