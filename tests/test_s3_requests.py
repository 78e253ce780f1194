"""S3 on the wire (a moto server): what each path costs in requests, and the CLI's S3 options.

Baselines before `cas.s3` (s3fs calls as they were): a read was HEAD + GET, an
`exists` miss HEAD + LIST, `children` of an absent folder two LISTs, a finished
run's manifest of three entries 9 requests, and the first push of the sync test
corpus (3 runs, 171 objects) to an empty bucket 506 requests.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.digest import Digest
from cas.errors import NotFoundError
from cas.model import ArtifactOutcome, ExecutionResult, Message
from cas.objects import FsspecBackend
from cas.objectstore import ObjectStore
from cas.repository import Repository
from cas.stores import MANIFEST, SEGMENTS, run_key
from cas.sync import transfer
from cas.testing.services import S3Bucket, S3RequestLog, count_s3_requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sync import START, source_repo

pytestmark = pytest.mark.s3


@pytest.fixture
def backend(s3_bucket: S3Bucket) -> FsspecBackend:
    url, options = s3_bucket
    return FsspecBackend(f"{url}/repo", **options)


def counted(backend: FsspecBackend) -> Any:
    return count_s3_requests(backend.fs)


# one request per verb -----------------------------------------------------------------


def test_a_read_is_one_get(backend: FsspecBackend) -> None:
    backend.write("a/b", b"hello")
    with counted(backend) as log:
        assert backend.read("a/b") == b"hello"
    assert log.operations == ["GetObject"]
    with counted(backend) as log, pytest.raises(NotFoundError):
        backend.read("a/absent")
    assert log.operations == ["GetObject"]


def test_exists_and_size_are_one_head_hit_or_miss(backend: FsspecBackend) -> None:
    backend.write("a/b", b"hello")
    with counted(backend) as log:
        assert backend.exists("a/b")
        assert not backend.exists("a/absent")
        assert not backend.exists("a")  # a folder is not a key
        assert backend.size("a/b") == 5
        with pytest.raises(NotFoundError):
            backend.size("a/absent")
    assert log.operations == ["HeadObject"] * 5


def test_listings_are_one_request_even_when_empty(backend: FsspecBackend) -> None:
    backend.write("a/b", b"1")
    backend.write("a/c/d", b"2")
    with counted(backend) as log:
        assert sorted(backend.children("a")) == ["b", "c"]
        assert backend.children("absent") == []
        assert list(backend.list("a")) == ["a/b", "a/c/d"]
        assert list(backend.list("absent")) == []
    assert log.operations == ["ListObjectsV2"] * 4


def test_a_listing_pages_lazily(backend: FsspecBackend) -> None:
    backend.fs.pipe({f"{backend.root}/k/{n:03d}": b"" for n in range(25)})
    backend.listing_page = 10
    with counted(backend) as log:
        keys = backend.list("k")
        assert next(keys) == "k/000"
        assert log.count == 1
        assert len(list(keys)) == 24
    assert log.operations == ["ListObjectsV2"] * 3


def test_a_delete_is_one_batch(backend: FsspecBackend) -> None:
    backend.fs.pipe({f"{backend.root}/k/{n}": b"" for n in range(30)})
    with counted(backend) as log:
        backend.delete([f"k/{n}" for n in range(30)] + ["k/absent"])
    assert log.operations == ["DeleteObjects"]
    assert list(backend.list("k")) == []


# ObjectStore.missing ------------------------------------------------------------------


def _digests(count: int, first: str = "") -> list[Digest]:
    return [Digest(first + secrets.token_hex(32)[len(first) :]) for _ in range(count)]


def _stored(backend: FsspecBackend, count: int) -> tuple[ObjectStore, list[Digest]]:
    """An object store holding `count` (empty, listing-only) objects."""
    store = ObjectStore(backend)
    held = _digests(count)
    backend.fs.pipe({f"{backend.root}/{store.key(d)}": b"" for d in held})
    return store, held


def test_missing_of_a_few_is_a_head_each(backend: FsspecBackend) -> None:
    store, held = _stored(backend, 20)
    wanted = [*held[:2], *_digests(2)]
    with counted(backend) as log:
        assert store.missing(wanted) == set(wanted[2:])
    assert log.operations == ["HeadObject"] * 4


def test_missing_of_many_is_one_listing_not_one_per_shard(backend: FsspecBackend) -> None:
    store, held = _stored(backend, 200)
    absent = _digests(100)
    with counted(backend) as log:
        assert store.missing([*held[:100], *absent]) == set(absent)
    assert log.operations == ["ListObjectsV2"]  # 200 keys: one page (was ~140 shard listings)


def test_missing_pages_through_a_store_when_checks_would_cost_more(
    backend: FsspecBackend,
) -> None:
    store, held = _stored(backend, 200)
    backend.listing_page = 40  # 5 pages
    absent = _digests(30)
    with counted(backend) as log:
        assert store.missing([*held[::10], *absent]) == set(absent)
    assert log.operations == ["ListObjectsV2"] * 5


def test_missing_stops_listing_when_the_rest_is_cheaper_to_check(
    backend: FsspecBackend,
) -> None:
    store, held = _stored(backend, 400)
    backend.listing_page = 40  # 10 pages; the first covers about a tenth of the digests
    late = sorted(held, key=lambda d: d.hex)[-3:]
    absent = _digests(2, first="ff")
    with counted(backend) as log:
        assert store.missing([*late, *absent]) == set(absent)
    # one page, then a HEAD for each of the 5 wanted digests past it (not 10 pages)
    assert log.operations == ["ListObjectsV2"] + ["HeadObject"] * 5


# manifests ----------------------------------------------------------------------------


def _save_run(repo: Repository, run_id: str, artifacts: list[str], status: Any) -> None:
    for name in artifacts:
        message = Message(id=name, content={"name": name}, timestamp=START)
        repo.artifacts.save(run_id, name, message)
    outcomes = {name: ArtifactOutcome("completed") for name in artifacts}
    repo.executions.save(run_id, ExecutionResult(run_id, status, START, artifacts=outcomes))


@pytest.fixture
def repo(s3_bucket: S3Bucket) -> Iterator[Repository]:
    url, options = s3_bucket
    yield Repository.init(f"{url}/repo", **options)


def _log_of(repo: Repository) -> Any:
    assert isinstance(repo.backend, FsspecBackend)
    return count_s3_requests(repo.backend.fs)


def test_a_finished_run_reads_its_manifest_with_a_listing_and_one_get(repo: Repository) -> None:
    _save_run(repo, "run-1", [], "running")
    for name in ("a", "b", "c"):
        repo.artifacts.save("run-1", name, Message(id=name, content={"n": name}))
    with _log_of(repo) as log:
        running = repo.artifacts.entries("run-1")
    assert log.operations == ["ListObjectsV2"] + ["GetObject"] * 3  # three segments
    outcomes = {name: ArtifactOutcome("completed") for name in "abc"}
    with _log_of(repo) as log:
        repo.executions.save(
            "run-1", ExecutionResult("run-1", "completed", START, artifacts=outcomes)
        )
    # merge: list the run, PUT manifest.jsonl, one batch delete (segments come from memory);
    # then the index mark and the result
    assert log.operations == [
        "ListObjectsV2",
        "PutObject",
        "DeleteObjects",
        "PutObject",
        "PutObject",
    ]
    with _log_of(repo) as log:
        finished = repo.artifacts.entries("run-1")
    assert log.operations == ["ListObjectsV2", "GetObject"]
    assert list(finished) == list(running) == ["a", "b", "c"]
    assert {k: e.to_dict() for k, e in finished.items()} == {
        k: e.to_dict() for k, e in running.items()
    }
    keys = set(repo.backend.list("runs/run-1"))
    assert run_key("run-1", MANIFEST) in keys
    assert not any(f"/{SEGMENTS}/" in key for key in keys)


def test_a_result_saved_while_nothing_was_appended_costs_no_merge(repo: Repository) -> None:
    with _log_of(repo) as log:
        _save_run(repo, "run-1", [], "running")
    assert log.operations == ["PutObject", "PutObject"]  # the index mark and the result


def test_listing_runs_is_one_listing_not_a_check_per_run(repo: Repository) -> None:
    for number in range(6):
        _save_run(repo, f"run-{number}", ["a"], "completed")
    repo.artifacts.save("no-result", "a", Message(id="a", content={}, timestamp=START))
    with _log_of(repo) as log:
        listed = repo.executions.list_runs()
    assert listed == [f"run-{number}" for number in range(6)]
    assert log.operations == ["ListObjectsV2"]  # was a HEAD per run folder


# push ---------------------------------------------------------------------------------


def _push_counts(tmp_path: Path, s3_bucket: S3Bucket) -> tuple[Repository, Any, S3RequestLog]:
    url, options = s3_bucket
    source = source_repo(tmp_path / "a")
    dest = Repository.init(f"{url}/dest", **options)
    with _log_of(dest) as log:
        sent = transfer(source, dest, source.run_ids())
    return dest, sent, log


def test_first_push_of_the_corpus_to_an_empty_bucket(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    dest, sent, log = _push_counts(tmp_path, s3_bucket)
    assert sent.objects_sent == 171 and sent.requests == log.count
    puts = log.count_of("PutObject")
    # every object and chunk once and the one chunk list; per run one manifest, runbook
    # and result; one batch index mark for the three (and the writer lock)
    assert 171 + 1 + 3 * 3 + 1 <= puts <= 171 + 1 + 3 * 3 + 1 + 1
    assert log.count - puts <= 15  # listings, a few HEADs, batch deletes (was 506 in all)
    assert log.count_of("HeadObject") <= 2 * 4  # small batches only
    for run_id in dest.run_ids():
        assert not [key for key in dest.backend.list(f"runs/{run_id}") if SEGMENTS in key]


# the CLI on S3: --endpoint-url and --tenant --------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOSTILE_TENANTS = ["../x", "a/b", "..", ".hidden", "x/../y", "", "t" * 129]


def cas(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def cloud(s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The global options naming a repository in the bucket through its endpoint."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAS_EXAMPLE_DATA", str(EXAMPLES / "data"))
    for name in ("CAS_REPO", "CAS_TENANT", "CAS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(EXAMPLES / "scan.yaml", tmp_path / "scan.yaml")
    endpoint = s3_bucket.storage_options["client_kwargs"]["endpoint_url"]
    return ["--repo", f"{s3_bucket.url}/p", "--endpoint-url", endpoint]


def test_every_command_reaches_the_tenant_repository(cloud: list[str], s3_bucket: S3Bucket) -> None:
    acme = [*cloud, "--tenant", "acme"]
    created = cas(*acme, "init")
    assert created.exit_code == 0, created.output
    assert created.stdout == f"created repository at {s3_bucket.url}/p/tenants/acme\n"
    ran = cas(*acme, "run", "scan.yaml", "--json")
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.stdout)["run_id"]
    listed = cas(*acme, "runs", "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["run_id"] for row in json.loads(listed.stdout)] == [run_id]
    shown = cas(*acme, "inspect", "latest", "--json")
    assert shown.exit_code == 0, shown.output
    assert {row["artifact"] for row in json.loads(shown.stdout)["artifacts"]} >= {"findings"}
    assert cas(*acme, "verify").exit_code == 0
    keys = s3_bucket.filesystem().find(s3_bucket.name)
    assert keys and all(key.startswith(f"{s3_bucket.name}/p/tenants/acme/") for key in keys)
    # Another tenant of the same bucket is another repository.
    other = cas(*cloud, "--tenant", "globex", "runs")
    assert other.exit_code == 6 and "no repository at" in other.stderr


def test_the_options_also_come_from_the_environment(
    cloud: list[str], s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAS_REPO", cloud[1])
    monkeypatch.setenv("CAS_ENDPOINT_URL", cloud[3])
    monkeypatch.setenv("CAS_TENANT", "acme")
    assert cas("init").exit_code == 0
    assert cas("runs", "--json").stdout == "[]\n"
    assert s3_bucket.filesystem().exists(f"{s3_bucket.name}/p/tenants/acme/config.json")


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS)
def test_a_tenant_that_tries_to_leave_its_prefix_is_refused(
    cloud: list[str], s3_bucket: S3Bucket, tenant: str
) -> None:
    for command in (["init"], ["run", "scan.yaml"], ["runs"]):
        refused = cas(*cloud, "--tenant", tenant, *command)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith("cas: error: invalid tenant ")
        assert refused.stderr.count("\n") == 1
    assert s3_bucket.filesystem().find(s3_bucket.name) == []  # nothing written
