"""Pytest fixtures that start real services (moto S3 server, PostgreSQL) for tests.

Load them with ``pytest_plugins = ["cas.testing.services"]`` in a ``conftest.py``.

Fixtures:

* ``moto_server`` (session): a ``python -m moto.server`` process on 127.0.0.1
  -> :class:`MotoServer`.
* ``s3_admin_fs`` (session): the s3fs filesystem used to create and drop buckets.
* ``s3_bucket`` (function): a fresh bucket on that server -> :class:`S3Bucket`
  (unpacks as ``url, storage_options``).
* ``postgres_server`` (session): a throwaway PostgreSQL cluster -> :class:`PostgresServer`.

Helpers: :func:`count_s3_requests` records the S3 operations an s3fs filesystem sends;
:func:`skip_or_fail` is the single place where "service missing" turns into a skip
(default) or a failure (when ``CAS_REQUIRE_SERVICES=1``).

Each pytest-xdist worker is its own process, so it gets its own servers on its own ports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar

import pytest

REQUIRE_SERVICES_ENV = "CAS_REQUIRE_SERVICES"
AWS_TEST_KEY = "testing"
AWS_TEST_SECRET = "testing"
AWS_TEST_REGION = "us-east-1"
PG_USER = "cas"
PG_DBNAME = "cas_test"
PG_SYSTEM_USER = "postgres"
PG_PREFERRED_BINDIR = Path("/usr/lib/postgresql/15/bin")
PG_REQUIRED_BINARIES = ("initdb", "pg_ctl", "createdb")
START_ATTEMPTS = 3
STARTUP_TIMEOUT_S = 30.0

_T = TypeVar("_T")


# --------------------------------------------------------------------------- policy


def services_required() -> bool:
    """Return True when ``CAS_REQUIRE_SERVICES=1``: missing services must fail, not skip."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip() == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the requesting test because a service is missing, or fail if services are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- generic helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _retry_on_port_clash(start: Callable[[int], _T], attempts: int = START_ATTEMPTS) -> _T:
    """Call ``start(port)`` with fresh free ports until it succeeds (ports can race)."""
    errors: list[str] = []
    for _ in range(attempts):
        try:
            return start(free_port())
        except ServiceStartError as exc:
            errors.append(str(exc))
    raise ServiceStartError("\n---\n".join(errors))


def _tail(path: Path, max_chars: int = 3000) -> str:
    """Return the end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-max_chars:]
    except OSError:
        return "<no log>"


class ServiceStartError(RuntimeError):
    """A test service could not be started."""


# --------------------------------------------------------------------------- moto / S3


@dataclass(frozen=True)
class MotoServer:
    """A running ``moto.server`` process reachable over HTTP."""

    endpoint_url: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path

    def storage_options(self) -> dict[str, Any]:
        """Return fsspec/s3fs keyword arguments for this server (explicit creds, no caching)."""
        return {
            "key": AWS_TEST_KEY,
            "secret": AWS_TEST_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
            # region in botocore's Config, not client_kwargs: s3fs.mkdir would otherwise send
            # LocationConstraint=us-east-1, which S3 (and moto) reject.
            "config_kwargs": {"region_name": AWS_TEST_REGION},
            "skip_instance_cache": True,
            "use_listings_cache": False,
        }


class S3Bucket(NamedTuple):
    """A fresh bucket; unpacks as ``url, storage_options``."""

    url: str
    storage_options: dict[str, Any]

    @property
    def name(self) -> str:
        """The bare bucket name."""
        return self.url.removeprefix("s3://")

    def filesystem(self) -> Any:
        """Return a new, uncached ``s3fs.S3FileSystem`` for this bucket's server."""
        import fsspec

        return fsspec.filesystem("s3", **self.storage_options)


def _missing_moto_reason() -> str | None:
    """Return why the moto server cannot run here, or None if it can."""
    for module in ("moto", "flask", "flask_cors", "s3fs"):
        if importlib.util.find_spec(module) is None:
            return (
                f"Python module {module!r} is missing, needed for the moto S3 server tests; "
                "install with: pip install 'moto[server]' s3fs  (or pip install -e '.[test]')"
            )
    return None


def _aws_test_env() -> dict[str, str | None]:
    """Environment values that keep botocore away from the user's real AWS config."""
    return {
        "AWS_ACCESS_KEY_ID": AWS_TEST_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_TEST_SECRET,
        "AWS_DEFAULT_REGION": AWS_TEST_REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "AWS_ENDPOINT_URL": None,
        "AWS_ENDPOINT_URL_S3": None,
    }


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``url`` until any HTTP answer arrives; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True  # the server answered, even if with an error status
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return False


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a child process, killing it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _start_moto(port: int, log_dir: Path) -> MotoServer:
    """Start ``python -m moto.server`` on ``port`` and wait until it answers HTTP."""
    log_path = log_dir / f"moto-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in _aws_test_env().items() if v is not None})
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    if not _wait_for_http(f"{endpoint}/moto-api/", process, STARTUP_TIMEOUT_S):
        _stop_process(process)
        raise ServiceStartError(f"moto server on port {port} did not start:\n{_tail(log_path)}")
    return MotoServer(endpoint_url=endpoint, port=port, process=process, log_path=log_path)


@pytest.fixture(scope="session")
def aws_test_credentials() -> Iterator[None]:
    """Set dummy AWS credentials in ``os.environ`` for the session; restore them afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _aws_test_env().items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_server(aws_test_credentials: None) -> Iterator[MotoServer]:
    """Start moto in server mode (separate process, HTTP on 127.0.0.1) for the session.

    Yields a :class:`MotoServer`; use ``moto_server.endpoint_url`` or
    ``moto_server.storage_options()``. Skips (or fails with ``CAS_REQUIRE_SERVICES=1``)
    when moto's server extra is not installed.
    """
    reason = _missing_moto_reason()
    if reason is not None:
        skip_or_fail(reason)
    log_dir = Path(tempfile.mkdtemp(prefix="cas-moto-"))
    try:
        server = _retry_on_port_clash(lambda port: _start_moto(port, log_dir))
        try:
            yield server
        finally:
            _stop_process(server.process)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def _delete_bucket(fs: Any, bucket: str) -> None:
    """Best-effort removal of a bucket and everything in it."""
    with contextlib.suppress(Exception):
        keys = fs.find(bucket)
        if keys:
            fs.rm(keys)
    with contextlib.suppress(Exception):
        fs.rmdir(bucket)


@pytest.fixture(scope="session")
def s3_admin_fs(moto_server: MotoServer) -> Any:
    """One session-wide ``s3fs.S3FileSystem`` on the moto server, used to create/drop buckets."""
    import s3fs

    return s3fs.S3FileSystem(**moto_server.storage_options())


@pytest.fixture
def s3_bucket(moto_server: MotoServer, s3_admin_fs: Any) -> Iterator[S3Bucket]:
    """Create a fresh, uniquely named bucket on the moto server; delete it afterwards.

    Yields an :class:`S3Bucket` that unpacks as ``(url, storage_options)``, e.g.
    ``fs, path = fsspec.url_to_fs(url, **storage_options)``. The options carry explicit
    dummy credentials and disable s3fs instance and listings caches.
    """
    bucket = f"cas-test-{uuid.uuid4().hex[:20]}"
    s3_admin_fs.mkdir(bucket)
    try:
        yield S3Bucket(url=f"s3://{bucket}", storage_options=moto_server.storage_options())
    finally:
        _delete_bucket(s3_admin_fs, bucket)


@dataclass
class S3RequestLog:
    """Requests recorded by :func:`count_s3_requests`, in the order they were sent."""

    operations: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Total number of HTTP requests sent (retries included)."""
        return len(self.operations)

    def count_of(self, operation: str) -> int:
        """Number of requests for one operation name, e.g. ``"GetObject"``."""
        return self.operations.count(operation)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.operations.clear()
        self.methods.clear()

    def _on_before_send(self, event_name: str = "", request: Any = None, **_: Any) -> None:
        """botocore ``before-send`` handler; must return None so the request really goes out."""
        self.operations.append(event_name.rsplit(".", 1)[-1])
        self.methods.append(str(getattr(request, "method", "")))


@contextlib.contextmanager
def count_s3_requests(fs: Any) -> Iterator[S3RequestLog]:
    """Record every HTTP request the s3fs filesystem ``fs`` sends while the block runs.

    Uses botocore's public event system (``before-send.s3``) on the filesystem's client;
    nothing is monkeypatched. ``fs`` is connected first if needed.
    """
    client = fs.s3  # connects (set_session) on first access
    log = S3RequestLog()
    handler_id = f"cas-count-s3-requests-{uuid.uuid4().hex}"
    client.meta.events.register("before-send.s3", log._on_before_send, unique_id=handler_id)
    try:
        yield log
    finally:
        client.meta.events.unregister("before-send.s3", unique_id=handler_id)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL cluster."""

    host: str
    port: int
    user: str
    dbname: str
    base_dir: Path
    bindir: Path
    major_version: int

    @property
    def dsn(self) -> str:
        """libpq URI for the ``cas_test`` database as the superuser."""
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        """libpq URI for another database in the same cluster."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.base_dir / "data"


def _pg_bindir_candidates() -> list[Path]:
    """Directories that may hold the PostgreSQL server binaries, best first."""
    candidates = [PG_PREFERRED_BINDIR]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return candidates


def find_pg_bindir() -> Path | None:
    """Return the first directory holding initdb, pg_ctl and createdb, or None."""
    for bindir in _pg_bindir_candidates():
        if all((bindir / name).is_file() for name in PG_REQUIRED_BINARIES):
            return bindir
    return None


def _is_root() -> bool:
    """True when running as uid 0 (initdb refuses to run as root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Wrap ``cmd`` to run as the ``postgres`` system user when we are root."""
    if not _is_root():
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", PG_SYSTEM_USER, "--", *cmd]
    import shlex

    return ["su", PG_SYSTEM_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _missing_postgres_reason() -> str | None:
    """Return why a PostgreSQL cluster cannot be started here, or None if it can."""
    if find_pg_bindir() is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl, createdb) not found in "
            f"{PG_PREFERRED_BINDIR}, `pg_config --bindir` or PATH; install them with: "
            "apt-get install postgresql-15 (or your platform's PostgreSQL 15 server package)"
        )
    if _is_root():
        import pwd

        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            return (
                f"running as root but there is no {PG_SYSTEM_USER!r} system user to run initdb "
                "as; install the postgresql package (it creates the user) or run tests as non-root"
            )
        if not (shutil.which("runuser") or shutil.which("su")):
            return "running as root but neither runuser nor su is available to drop privileges"
    return None


def _run_pg(cmd: list[str], cwd: Path, what: str, log_path: Path | None = None) -> None:
    """Run a PostgreSQL tool (as the postgres user if root); raise ServiceStartError on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    result = subprocess.run(
        _as_pg_user(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        log = f"\nserver log:\n{_tail(log_path)}" if log_path else ""
        raise ServiceStartError(
            f"{what} failed (exit {result.returncode}): {result.stdout}{result.stderr}{log}"
        )


def _make_base_dir() -> Path:
    """Create the temp folder for the cluster, owned by the postgres user when root."""
    base = Path(tempfile.mkdtemp(prefix="cas-pg-"))
    if _is_root():
        shutil.chown(base, user=PG_SYSTEM_USER, group=None)
    return base


_PG_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 50
max_wal_senders = 0
wal_level = minimal
logging_collector = off
"""

# Trust only on the private unix socket dir and 127.0.0.1 (the only listen address).
_PG_HBA = """
local all all trust
host  all all 127.0.0.1/32 trust
"""


def _initdb(bindir: Path, base: Path) -> None:
    """Create the cluster in ``base/data`` with superuser ``cas`` and fast, trusting config."""
    data = base / "data"
    cmd = [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust"]
    _run_pg([*cmd, "-E", "UTF8", "--locale=C", "--no-sync"], base, "initdb")


def _configure(base: Path, port: int) -> None:
    """Write port, socket dir, speed settings and pg_hba.conf into the data directory."""
    data = base / "data"
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(_PG_CONF.format(port=port, socket_dir=base))
    (data / "pg_hba.conf").write_text(_PG_HBA)


def _pg_ctl(bindir: Path, base: Path, *args: str) -> None:
    """Run ``pg_ctl`` against the cluster in ``base/data``."""
    log_path = base / "server.log"
    cmd = [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(log_path), *args]
    _run_pg(cmd, base, f"pg_ctl {' '.join(args)}", log_path)


def _major_version(bindir: Path) -> int:
    """Return the major version of the server binaries in ``bindir``."""
    out = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def _start_postgres(bindir: Path, base: Path, port: int) -> PostgresServer:
    """Configure ``port``, start the cluster, create the test database."""
    _configure(base, port)
    _pg_ctl(bindir, base, "start", "-w", "-t", str(int(STARTUP_TIMEOUT_S)))
    server = PostgresServer(
        host="127.0.0.1",
        port=port,
        user=PG_USER,
        dbname=PG_DBNAME,
        base_dir=base,
        bindir=bindir,
        major_version=_major_version(bindir),
    )
    try:
        createdb = [str(bindir / "createdb"), "-h", server.host, "-p", str(port)]
        _run_pg([*createdb, "-U", PG_USER, PG_DBNAME], base, "createdb")
    except ServiceStartError:
        _stop_postgres(server)
        raise
    return server


def _stop_postgres(server: PostgresServer) -> None:
    """Stop the cluster immediately (its data is thrown away anyway)."""
    with contextlib.suppress(ServiceStartError, subprocess.SubprocessError):
        _pg_ctl(server.bindir, server.base_dir, "stop", "-m", "immediate", "-w")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1 for the session.

    Yields a :class:`PostgresServer`; connect with ``psycopg.connect(postgres_server.dsn)``
    (database ``cas_test``, superuser ``cas``, trust auth). Runs the binaries as the
    ``postgres`` user when tests run as root. Skips (or fails with
    ``CAS_REQUIRE_SERVICES=1``) when the PostgreSQL binaries are missing.
    """
    reason = _missing_postgres_reason()
    if reason is not None:
        skip_or_fail(reason)
    with throwaway_postgres() as server:
        yield server


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A cluster made by initdb in a temporary folder and started by pg_ctl on a free
    loopback port (as the ``postgres`` user when run as root), stopped and removed on
    exit; what `postgres_server` and the benchmarks use. `SystemExit` without binaries."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql-15)")
    base = _make_base_dir()
    try:
        _initdb(bindir, base)
        server = _retry_on_port_clash(lambda port: _start_postgres(bindir, base, port))
        try:
            yield server
        finally:
            _stop_postgres(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)
