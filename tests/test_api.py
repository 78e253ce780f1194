"""``cas serve`` over real HTTP: a uvicorn server process over a deployment in moto S3.

Every test runs twice: objects and run records in S3, and objects in S3 with run
records and tokens in PostgreSQL (row-level security, the server logged in as a
role granted ``cas_app``). The server is the real command (``python -m cas.cli
--repo s3://… [--execution-store postgresql://…] serve``) started once per backend;
requests go through httpx. Tenants: ``acme`` (the runs most tests read),
``globex`` (whose runs acme must never see), ``busy`` (gets a run mid-walk),
``damaged`` (a run with a corrupted payload) and ``nobody`` (a token, no repository).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from typer.testing import CliRunner

from cas.api import TcpConfig
from cas.cli import app
from cas.deployment import Deployment
from cas.errors import InvalidIdError, NotFoundError
from cas.index_rows import RunQuery
from cas.model import ArtifactOutcome, ExecutionResult, Message, RunStatus, SchemaRef
from cas.objects import open_backend
from cas.pgstore import PostgresStore, PostgresTokenStore
from cas.repository import Repository
from cas.testing.pg import PgDatabase, drop_database, fresh_database
from cas.testing.services import MotoServer, free_port
from cas.tokens import BackendTokenStore, TokenStore

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TIED = range(10, 15)  # these runs all start at T0 + 10 h: pages must split the tie cleanly
BIG_ROWS = [{"file": f"f{i}.txt", "text": "y" * 200 + str(i)} for i in range(2000)]


@dataclass
class Api:
    """The running server and what the tests need to know about the deployment."""

    base: str
    root: str
    options: dict[str, Any]
    endpoint_url: str
    pg: PgDatabase | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def get(self, path: str, tenant: str | None = "acme", **params: Any) -> httpx.Response:
        headers = {} if tenant is None else {"Authorization": f"Bearer {self.tokens[tenant]}"}
        return self.client.get(path, params=params, headers=headers)

    def repo(self, tenant: str, *, create: bool = False) -> Repository:
        records: dict[str, Any] = {}
        if self.pg is not None:
            records = {"execution_store": self.pg.dsn, "tenant": tenant}
        opener = Repository.init if create else Repository.open
        return opener(f"{self.root}/tenants/{tenant}", **records, **self.options)

    def global_options(self, *, admin: bool = False) -> list[str]:
        """``cas`` options naming the deployment (the table owner's DSN with `admin`)."""
        found = ["--repo", self.root, "--endpoint-url", self.endpoint_url]
        if self.pg is not None:
            found += ["--execution-store", self.pg.admin_dsn if admin else self.pg.dsn]
        return found

    def token_store(self) -> TokenStore:
        """The deployment's tokens, as their administrator (every tenant's tokens)."""
        if self.pg is not None:
            return PostgresTokenStore(self.pg.admin_dsn)
        return BackendTokenStore(open_backend(self.root, **self.options))

    def walk(self, tenant: str = "acme", limit: int = 3, **filters: Any) -> list[str]:
        """Every run id of every page, in order."""
        seen: list[str] = []
        cursor = None
        while True:
            extra: dict[str, str] = {} if cursor is None else {"cursor": cursor}
            page = self.get("/v1/runs", tenant, limit=limit, **filters, **extra)
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["runs"]) <= limit
            seen += [row["run_id"] for row in body["runs"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return seen


def save_run(
    repo: Repository,
    run_id: str,
    started: datetime,
    status: RunStatus = "completed",
    *,
    runbook: str = "scan",
    content: dict[str, Any] | None = None,
) -> None:
    schema = SchemaRef("report", "1.0.0")
    repo.artifacts.save(run_id, "report", Message("report", content or {"run": run_id}, schema))
    repo.artifacts.save(run_id, "shared", Message("shared", {"x": 0}))
    outcomes = {
        "report": ArtifactOutcome("completed", duration_seconds=0.5),
        "shared": ArtifactOutcome("completed"),
        "lint": ArtifactOutcome("failed", error_type="ValueError", error_message="bad")
        if status == "failed"
        else ArtifactOutcome("skipped", reason="not asked"),
    }
    ended = started + timedelta(seconds=2)
    repo.executions.save(
        run_id, ExecutionResult(run_id, status, started, runbook, ended, 2.0, outcomes)
    )


def populate(api: Api) -> None:
    acme = api.repo("acme", create=True)
    for number in range(20):
        hours = 10 if number in TIED else number
        status: RunStatus = "failed" if number % 4 == 0 else "completed"
        runbook = "nightly" if number % 2 else "scan"
        save_run(acme, f"run-{number:02d}", T0 + timedelta(hours=hours), status, runbook=runbook)
    save_run(acme, "shared-id", T0 - timedelta(days=2), content={"acme": True})
    big = Message("big", {"rows": BIG_ROWS})
    acme.artifacts.save("run-big", "big", big)
    acme.executions.save("run-big", ExecutionResult("run-big", "completed", T0 - timedelta(days=1)))
    globex = api.repo("globex", create=True)
    save_run(globex, "g-01", T0 + timedelta(hours=30), content={"globex": "secret"})
    save_run(globex, "shared-id", T0, content={"globex": True})
    busy = api.repo("busy", create=True)
    for number in range(12):
        runbook = "scan" if number % 2 else "nightly"
        save_run(busy, f"b-{number:02d}", T0 + timedelta(minutes=number % 5), runbook=runbook)
    damaged = api.repo("damaged", create=True)
    save_run(damaged, "bad", T0)
    entry = damaged.artifacts.entry("bad", "report")
    damaged.backend.write(damaged.objects.key(entry.digest), b"not what was stored")


def create_tokens(api: Api) -> None:
    """acme's token through the CLI (``cas token create --json``), the rest directly."""
    args = ["token", "create", "acme", "--name", "tests", "--json"]
    done = CliRunner().invoke(app, [*api.global_options(), *args])
    assert done.exit_code == 0, done.output
    api.tokens["acme"] = orjson.loads(done.stdout)["secret"]
    store = api.token_store()
    for tenant in ("globex", "busy", "damaged", "nobody", "revoked"):
        api.tokens[tenant], info = store.create(tenant, "")
        if tenant == "revoked":
            store.revoke(info.token_id)


def start_server(api: Api, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    for _ in range(5):
        port = free_port()
        command = [sys.executable, "-m", "cas.cli", *api.global_options()]
        command += ["serve", "--port", str(port), "--no-access-log"]
        with log.open("wb") as out:
            server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        if wait_until_up(base, server):
            return server, base
        server.terminate()
        server.wait(10)
    raise AssertionError(f"cas serve did not start:\n{log.read_text()[-3000:]}")


def wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            return httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="module", params=["s3", "s3+postgres"])
def api(
    request: pytest.FixtureRequest,
    moto_server: MotoServer,
    s3_admin_fs: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    server = pg = None
    if request.param == "s3+postgres":
        server = request.getfixturevalue("postgres_server")
        pg = fresh_database(server)
    bucket = f"cas-api-{uuid.uuid4().hex[:16]}"
    s3_admin_fs.mkdir(bucket)
    options = moto_server.storage_options()
    deployed = Api("", f"s3://{bucket}/deploy", options, moto_server.endpoint_url, pg)
    try:
        populate(deployed)
        create_tokens(deployed)
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        process, deployed.base = start_server(deployed, log)
        deployed.client = httpx.Client(base_url=deployed.base, timeout=30)
        try:
            yield deployed
        finally:
            deployed.client.close()
            process.terminate()
            process.wait(10)
    finally:
        s3_admin_fs.rm(bucket, recursive=True)
        if server is not None and pg is not None:
            drop_database(server, pg)


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response's error object, after checking status, content type and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "parameter"}
    assert body["error"]["code"] == code
    found: dict[str, Any] = body["error"]
    return found


def test_deployment_opens_each_tenant_under_the_root(tmp_path: Path) -> None:
    Repository.init(str(tmp_path / "tenants" / "acme"), fsync=False)
    Repository.init(str(tmp_path / "tenants" / "globex"), fsync=False)
    deployment = Deployment.configure(str(tmp_path))
    assert deployment.location("acme") == f"{tmp_path}/tenants/acme"
    acme = deployment.open_repository("acme")
    assert acme.url == str(tmp_path / "tenants" / "acme")
    assert deployment.open_repository("acme") is acme  # kept open
    with pytest.raises(NotFoundError, match="tenant 'nobody' has no repository"):
        deployment.open_repository("nobody")
    with pytest.raises(InvalidIdError):
        deployment.open_repository("../acme")
    deployment.max_open = 1
    deployment.open_repository("globex")
    assert deployment.open_repository("acme") is not acme  # dropped, then reopened


def test_workers_listen_on_a_tcp_socket_so_answers_are_not_delayed() -> None:
    """uvicorn binds its workers' socket with protocol 0, and asyncio then never sets
    TCP_NODELAY on connections: each answer waited for a delayed ACK (~40 ms)."""
    config = TcpConfig("cas.api:app_from_environment", host="127.0.0.1", port=0, workers=2)
    with config.bind_socket() as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.get_inheritable()


# the happy paths -------------------------------------------------------------------------


def test_health_and_openapi_need_no_token(api: Api) -> None:
    assert api.get("/v1/health", None).json() == {"status": "ok", "version": "0.1.0"}
    document = api.get("/openapi.json", None).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {"/v1/runs", "/v1/runs/{run_id}/export"}


def test_runs_are_newest_first_as_the_library_lists_them(api: Api) -> None:
    rows = api.get("/v1/runs", limit=1000).json()
    expected = api.repo("acme").list_runs()
    assert [row["run_id"] for row in rows["runs"]] == [row.run_id for row in expected]
    assert rows["runs"][0] == expected[0].to_dict()
    assert rows["next_cursor"] is None
    assert len(api.get("/v1/runs").json()["runs"]) == 22  # the default limit is 50


def test_pagination_walks_every_run_exactly_once(api: Api) -> None:
    everything = [row.run_id for row in api.repo("acme").list_runs()]
    for limit in (1, 2, 3, 7, 22, 50):
        assert api.walk(limit=limit) == everything


def test_pagination_with_filters_and_new_runs_meanwhile(api: Api) -> None:
    busy = api.repo("busy")
    expected = [r.run_id for r in busy.list_runs(RunQuery(runbook="scan"))]
    assert len(expected) == 6
    first = api.get("/v1/runs", "busy", limit=4, runbook="scan").json()
    seen = [row["run_id"] for row in first["runs"]]
    save_run(busy, "run-newer", T0 + timedelta(days=30), runbook="scan")  # lands on page 1
    cursor = first["next_cursor"]
    while cursor:
        page = api.get("/v1/runs", "busy", limit=4, runbook="scan", cursor=cursor).json()
        seen += [row["run_id"] for row in page["runs"]]
        cursor = page["next_cursor"]
    assert seen == expected
    assert api.walk("busy", runbook="scan")[0] == "run-newer"


def test_filters_match_the_library(api: Api) -> None:
    repo = api.repo("acme")
    digest = repo.artifacts.entry("run-03", "report").digest.hex
    cases: list[tuple[dict[str, str], RunQuery]] = [
        ({"status": "failed"}, RunQuery(status="failed")),
        ({"runbook": "nightly"}, RunQuery(runbook="nightly")),
        ({"since": "2026-03-01T05:00:00"}, RunQuery(since=T0 + timedelta(hours=5))),
        ({"until": "2026-03-01"}, RunQuery(until=T0 + timedelta(days=1))),
        ({"since": "2026-02-28", "until": "2026-02-28"}, RunQuery(since=T0 - DAY, until=T0)),
        ({"artifact": "big"}, RunQuery(artifact="big")),
        ({"digest": digest[:10].upper()}, RunQuery(digest=digest[:10])),
        ({"status": "failed", "runbook": "scan"}, RunQuery(status="failed", runbook="scan")),
    ]
    for params, query in cases:
        want = [row.run_id for row in repo.list_runs(query)]
        assert api.walk(limit=2, **params) == want, params
    assert api.walk(digest=digest) == ["run-03"]
    assert api.walk(since="2026-02-28", until="2026-02-28") == ["run-big"]


def test_run_detail(api: Api) -> None:
    body = api.get("/v1/runs/run-04").json()
    assert body["run_id"] == "run-04"
    assert body["status"] == "failed"
    assert body["artifact_count"] == 2
    assert body["result"] == api.repo("acme").executions.get("run-04").to_dict()


def test_artifact_list(api: Api) -> None:
    body = api.get("/v1/runs/run-04/artifacts").json()
    rows = {row["artifact_id"]: row for row in body["artifacts"]}
    assert list(rows) == ["lint", "report", "shared"]
    entry = api.repo("acme").artifacts.entry("run-04", "report")
    assert rows["report"]["digest"] == entry.digest.hex
    assert rows["report"]["schema"] == {"name": "report", "version": "1.0.0"}
    assert rows["lint"] == {
        "artifact_id": "lint",
        "digest": None,
        "size": None,
        "schema": None,
        "validated": None,
        "saved_at": None,
        "outcome": "failed",
    }


def test_artifact_is_streamed_whole_and_verified(api: Api) -> None:
    repo = api.repo("acme")
    assert repo.payloads.is_chunked(repo.artifacts.entry("run-big", "big").digest)
    with api.client.stream(
        "GET",
        "/v1/runs/run-big/artifacts/big",
        headers={"Authorization": f"Bearer {api.tokens['acme']}"},
    ) as response:
        assert response.status_code == 200
        pieces = list(response.iter_raw())
    body = b"".join(pieces)
    assert int(response.headers["content-length"]) == len(body) > 400_000
    assert orjson.loads(body) == repo.artifacts.get("run-big", "big").to_dict()
    assert orjson.loads(body)["content"]["rows"] == BIG_ROWS
    assert response.headers["x-cas-digest"] == repo.artifacts.entry("run-big", "big").digest.hex
    small = api.get("/v1/runs/run-01/artifacts/report")
    assert small.json() == repo.artifacts.get("run-01", "report").to_dict()


def test_a_damaged_payload_is_an_error_not_bytes(api: Api) -> None:
    found = error(api.get("/v1/runs/bad/artifacts/report", "damaged"), 500, "integrity_error")
    assert "s3://" not in found["message"] and "deploy" not in found["message"]
    assert api.get("/v1/runs/bad/artifacts/shared", "damaged").status_code == 200


def test_exports(api: Api) -> None:
    as_json = api.get("/v1/runs/run-04/export", format="json")
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["format"] == "cas-export/1"
    assert as_json.json()["run"]["id"] == "run-04"
    assert api.get("/v1/runs/run-04/export").content == as_json.content  # json by default
    markdown = api.get("/v1/runs/run-04/export", format="markdown")
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.startswith("# cas run `run-04`")
    html = api.get("/v1/runs/run-04/export", format="html")
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<html" in html.text and "run-04" in html.text
    assert 'filename="run-04.html"' in html.headers["content-disposition"]


# tenants ---------------------------------------------------------------------------------


def test_another_tenants_run_is_exactly_a_missing_run(api: Api) -> None:
    for path in ("", "/artifacts", "/artifacts/report", "/export"):
        theirs = api.get(f"/v1/runs/g-01{path}", "acme")
        nobody = api.get(f"/v1/runs/g-01{path}", "nobody")  # a tenant without any repository
        error(theirs, 404, "not_found")
        assert theirs.content == nobody.content
        assert theirs.headers["content-length"] == nobody.headers["content-length"]
        assert api.get(f"/v1/runs/g-01{path}", "globex").status_code == 200
    assert error(api.get("/v1/runs/g-01"), 404, "not_found")["message"] == "no run 'g-01'"


def test_a_shared_run_id_shows_each_tenant_its_own_run(api: Api) -> None:
    mine = api.get("/v1/runs/shared-id/artifacts/report", "acme").json()["content"]
    theirs = api.get("/v1/runs/shared-id/artifacts/report", "globex").json()["content"]
    assert (mine, theirs) == ({"acme": True}, {"globex": True})


def test_listings_never_show_another_tenants_runs(api: Api) -> None:
    acme = api.walk(limit=5)
    assert not {"g-01"} & set(acme)
    assert api.walk("globex") == ["g-01", "shared-id"]
    assert api.walk("nobody") == []
    globex_digest = api.repo("globex").artifacts.entry("g-01", "report").digest.hex
    assert api.walk(digest=globex_digest) == []


def test_direct_store_calls_are_scoped_too(api: Api) -> None:
    """Below the API: acme's repository cannot reach globex's run either."""
    acme = api.repo("acme")
    with pytest.raises(NotFoundError):
        acme.executions.get("g-01")
    assert acme.artifacts.entries("g-01") == {}
    assert "g-01" not in acme.run_ids()
    if api.pg is not None:
        store = PostgresStore(api.pg.dsn, "acme")
        assert "g-01" not in store.list_runs()
        with store.transaction() as cursor:  # no tenant filter: row-level security filters
            cursor.execute("SELECT DISTINCT tenant FROM runs")
            assert cursor.fetchall() == [("acme",)]


def test_reads_write_nothing_to_the_bucket(api: Api, s3_admin_fs: Any) -> None:
    """GET is read-only: with PostgreSQL nothing is written at all; without it, only a
    listing folds finished runs into the tenant's run index (as ``cas runs`` does)."""

    def snapshot() -> dict[str, tuple[int, str]]:
        s3_admin_fs.invalidate_cache()
        found = s3_admin_fs.find(api.root.removeprefix("s3://"), detail=True)
        return {path: (info["size"], str(info.get("ETag"))) for path, info in found.items()}

    before = snapshot()
    for tenant in ("acme", "globex", "busy", "damaged", "nobody"):
        assert api.get("/v1/runs", tenant).status_code == 200
    settled = snapshot()
    if api.pg is not None:
        assert settled == before
    for path in (
        "/v1/runs?limit=3&status=failed",
        "/v1/runs/run-04",
        "/v1/runs/run-04/artifacts",
        "/v1/runs/run-04/artifacts/report",
        "/v1/runs/run-big/artifacts/big",
        "/v1/runs/run-04/export?format=html",
        "/v1/runs/g-01",
    ):
        assert api.get(path).status_code in {200, 404}
    assert api.get("/v1/runs/bad/artifacts/report", "damaged").status_code == 500
    assert snapshot() == settled


# 401, 400, 404, 405 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer x y",
        "Basic dXNlcjpwYXNz",
        "Bearer cas_" + "A" * 43,
        "Bearer not-a-token",
        "bearer\tcas_x",
    ],
)
def test_missing_or_bad_tokens_get_401(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in ("/v1/runs", "/v1/runs/run-01", "/v1/runs/nope/export"):
        response = api.client.get(path, headers=headers)
        error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_token_gets_401_and_a_token_is_case_exact(api: Api) -> None:
    error(api.get("/v1/runs", "revoked"), 401, "unauthorized")
    scheme = {"Authorization": f"bEaReR {api.tokens['acme']}"}
    assert api.client.get("/v1/runs", headers=scheme).status_code == 200
    swapped = {"Authorization": f"Bearer {api.tokens['acme'].swapcase()}"}
    error(api.client.get("/v1/runs", headers=swapped), 401, "unauthorized")


def test_a_token_revoked_through_the_cli_stops_working(api: Api) -> None:
    secret, info = api.token_store().create("acme", "short-lived")
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/v1/runs", headers=headers).status_code == 200
    done = CliRunner().invoke(
        app, [*api.global_options(admin=True), "token", "revoke", info.token_id]
    )
    assert done.exit_code == 0, done.output
    assert done.stdout == f"revoked token {info.token_id} of tenant acme\n"
    error(api.client.get("/v1/runs", headers=headers), 401, "unauthorized")


def _foreign_cursor(api: Api) -> str:
    return str(api.get("/v1/runs", limit=1, status="failed").json()["next_cursor"])


def _forged_cursor() -> str:
    return base64.urlsafe_b64encode(b'[1,0,"../x",1,"0"]').decode().rstrip("=")


BAD_PARAMETERS: list[tuple[dict[str, str], str, str]] = [
    ({"limit": "0"}, "limit", "from 1 to 1000"),
    ({"limit": "1001"}, "limit", "from 1 to 1000"),
    ({"limit": "-1"}, "limit", "from 1 to 1000"),
    ({"limit": "ten"}, "limit", "'ten'"),
    ({"limit": "1e3"}, "limit", "whole number"),
    ({"limit": "٣"}, "limit", "whole number"),  # a non-ASCII digit
    ({"cursor": "garbage"}, "cursor", "next_cursor"),
    ({"cursor": "!!"}, "cursor", "next_cursor"),
    ({"since": "yesterday"}, "since", "ISO 8601"),
    ({"until": "2026-13-01"}, "until", "ISO 8601"),
    ({"since": "2026-02-30"}, "since", "ISO 8601"),
    ({"status": "done"}, "status", "completed"),
    ({"digest": "xyz"}, "digest", "hex"),
    ({"digest": "a" * 65}, "digest", "hex"),
    ({"artifact": "../etc"}, "artifact", "not an id"),
    ({"runbook": "a\x00b"}, "runbook", "control"),
    ({"runbook": "r" * 201}, "runbook", "200"),
    ({"stauts": "failed"}, "stauts", "unknown query parameter"),
]


@pytest.mark.parametrize(("params", "parameter", "says"), BAD_PARAMETERS)
def test_bad_query_parameters_get_400_naming_them(
    api: Api, params: dict[str, str], parameter: str, says: str
) -> None:
    found = error(api.get("/v1/runs", **params), 400, "invalid_parameter")
    assert found["parameter"] == parameter
    assert f"'{parameter}'" in found["message"] and says in found["message"]


def test_bad_cursors_get_400(api: Api) -> None:
    for cursor in (_forged_cursor(), _foreign_cursor(api)):
        found = error(api.get("/v1/runs", cursor=cursor), 400, "invalid_parameter")
        assert found["parameter"] == "cursor"
    repeated = api.client.get(
        "/v1/runs?limit=1&limit=2", headers={"Authorization": f"Bearer {api.tokens['acme']}"}
    )
    assert error(repeated, 400, "invalid_parameter")["message"].endswith("given more than once")


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/runs/a..b", "run_id"),
        ("/v1/runs/-x", "run_id"),
        ("/v1/runs/x.", "run_id"),
        (f"/v1/runs/{'r' * 129}", "run_id"),
        ("/v1/runs/%C3%A9", "run_id"),
        ("/v1/runs/r%20x/artifacts", "run_id"),
        ("/v1/runs/run-01/artifacts/.hidden", "artifact_id"),
        ("/v1/runs/run-01/artifacts/a..b", "artifact_id"),
    ],
)
def test_bad_ids_get_400(api: Api, path: str, parameter: str) -> None:
    found = error(api.get(path), 400, "invalid_parameter")
    assert found["parameter"] == parameter
    assert "is not an id" in found["message"]


def test_bad_export_parameters(api: Api) -> None:
    found = error(api.get("/v1/runs/run-01/export", format="pdf"), 400, "invalid_parameter")
    assert found["parameter"] == "format" and "json, markdown, html" in found["message"]
    found = error(api.get("/v1/runs/run-01/export", outputs_only="yes"), 400, "invalid_parameter")
    assert found["parameter"] == "outputs_only"
    found = error(api.get("/v1/runs/run-01", format="json"), 400, "invalid_parameter")
    assert found["parameter"] == "format"
    assert found["message"].endswith("unknown query parameter; this endpoint takes none")


def test_missing_things_get_404(api: Api) -> None:
    assert error(api.get("/v1/runs/nope"), 404, "not_found")["message"] == "no run 'nope'"
    found = error(api.get("/v1/runs/run-01/artifacts/nope"), 404, "not_found")
    assert found["message"] == "run 'run-01' has no artifact 'nope'"
    error(api.get("/v1/nothing-here", None), 404, "not_found")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_other_methods_get_405(api: Api, method: str) -> None:
    headers = {"Authorization": f"Bearer {api.tokens['acme']}"}
    for path in ("/v1/runs", "/v1/runs/run-01", "/v1/runs/run-01/artifacts/report"):
        response = api.client.request(method, path, headers=headers)
        error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["allow"]


# the OpenAPI document, property-based ------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(api: Api) -> Any:
    return schemathesis.openapi.from_url(f"{api.base}/openapi.json")


def test_openapi_document_holds(api: Api, api_schema: Any) -> None:
    """Generated requests for every operation of the served document (valid ones, with
    acme's token) get no 5xx and only documented, schema-valid answers; the checks
    include ignored auth and unsupported methods.

    Each operation's cases come from its own Hypothesis strategy, driven here rather
    than through schemathesis's pytest plugin, which reaches into pytest internals
    that newer pytest releases change.
    """
    operations = [_operation(result) for result in api_schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:
        _generated_requests_hold(operation, api.tokens["acme"])


def _operation(result: Any) -> Any:
    """The operation a schema listing holds; the document failing to load fails the test."""
    from schemathesis.core.result import Ok

    assert isinstance(result, Ok), result
    return result.ok()


def _generated_requests_hold(operation: Any, token: str) -> None:
    @settings(
        max_examples=int(os.environ.get("CAS_API_EXAMPLES", "30")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        note(f"{operation.method.upper()} {operation.path}")
        excluded = []
        if case.query and "cursor" in case.query:
            # A random string matching the cursor pattern is well formed but not a cursor
            # we issued: 400 is right, so "valid data should be accepted" does not apply.
            from schemathesis.specs.openapi.checks import positive_data_acceptance

            excluded.append(positive_data_acceptance)
        headers = {"Authorization": f"Bearer {token}"}
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()


@pytest.mark.parametrize(
    ("path", "ids", "query"),
    [
        ("/v1/runs/{run_id}", {"run_id": "run-04"}, {}),
        ("/v1/runs/{run_id}", {"run_id": "run-big"}, {}),
        ("/v1/runs/{run_id}/artifacts", {"run_id": "run-04"}, {}),
        (
            "/v1/runs/{run_id}/artifacts/{artifact_id}",
            {"run_id": "run-04", "artifact_id": "report"},
            {},
        ),
        (
            "/v1/runs/{run_id}/artifacts/{artifact_id}",
            {"run_id": "run-big", "artifact_id": "big"},
            {},
        ),
        ("/v1/runs/{run_id}/export", {"run_id": "run-04"}, {"format": "markdown"}),
        (
            "/v1/runs/{run_id}/export",
            {"run_id": "run-04"},
            {"format": "html", "outputs_only": "true"},
        ),
        ("/v1/runs", {}, {"limit": 2, "status": "failed"}),
    ],
)
def test_real_answers_match_the_document(
    api: Api, api_schema: Any, path: str, ids: dict[str, str], query: dict[str, Any]
) -> None:
    """The 200 answers for runs that exist (random ids rarely hit one) fit the schemas too."""
    case = api_schema[path]["GET"].Case(path_parameters=ids, query=query)
    response = case.call_and_validate(headers={"Authorization": f"Bearer {api.tokens['acme']}"})
    assert response.status_code == 200
