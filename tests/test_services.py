"""Smoke tests for the real-service fixtures in cas.testing.services."""

from __future__ import annotations

import fsspec
import psycopg
import pytest

from cas.testing.services import (
    REQUIRE_SERVICES_ENV,
    MotoServer,
    PostgresServer,
    S3Bucket,
    count_s3_requests,
    skip_or_fail,
)


def test_skip_or_fail_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_SERVICES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="thing is missing"):
        skip_or_fail("thing is missing")


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_skip_or_fail_skips_unless_exactly_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(REQUIRE_SERVICES_ENV, value)
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("thing is missing")


def test_skip_or_fail_fails_when_services_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_SERVICES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="thing is missing"):
        skip_or_fail("thing is missing")


@pytest.mark.s3
def test_moto_server_is_a_separate_http_process(moto_server: MotoServer) -> None:
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
    assert moto_server.process.poll() is None


@pytest.mark.s3
def test_s3_write_read_list(s3_bucket: S3Bucket) -> None:
    url, storage_options = s3_bucket
    fs, root = fsspec.url_to_fs(url, **storage_options)
    fs.pipe(f"{root}/dir/hello.txt", b"hello moto")
    assert fs.cat_file(f"{root}/dir/hello.txt") == b"hello moto"
    assert fs.ls(f"{root}/dir", detail=False) == [f"{root}/dir/hello.txt"]
    other = s3_bucket.filesystem()  # a second client sees the object immediately
    assert other.cat_file(f"{root}/dir/hello.txt") == b"hello moto"


@pytest.mark.s3
def test_listings_are_not_stale(s3_bucket: S3Bucket) -> None:
    fs = s3_bucket.filesystem()
    writer = s3_bucket.filesystem()
    assert fs.ls(s3_bucket.name, detail=False) == []
    writer.pipe(f"{s3_bucket.name}/new.bin", b"x")
    assert fs.ls(s3_bucket.name, detail=False) == [f"{s3_bucket.name}/new.bin"]


@pytest.mark.s3
def test_buckets_are_fresh_per_test(s3_bucket: S3Bucket) -> None:
    assert s3_bucket.filesystem().ls(s3_bucket.name, detail=False) == []


@pytest.mark.s3
def test_count_s3_requests(s3_bucket: S3Bucket) -> None:
    fs = s3_bucket.filesystem()
    key = f"{s3_bucket.name}/counted.bin"
    with count_s3_requests(fs) as log:
        fs.pipe(key, b"payload")
        assert fs.cat_file(key) == b"payload"
    # s3fs's cat_file asks for the size first (HeadObject) to decide on a concurrent download.
    assert log.operations == ["PutObject", "HeadObject", "GetObject"]
    assert log.methods == ["PUT", "HEAD", "GET"]
    assert log.count == 3
    assert log.count_of("GetObject") == 1
    fs.cat_file(key)  # after the block nothing more is recorded
    assert log.count == 3


@pytest.mark.s3
def test_count_s3_requests_single_get(s3_bucket: S3Bucket) -> None:
    fs = s3_bucket.filesystem()
    key = f"{s3_bucket.name}/counted.bin"
    fs.pipe(key, b"payload")
    with count_s3_requests(fs) as log:
        assert fs.cat_file(key, max_concurrency=1) == b"payload"
        assert log.operations == ["GetObject"]
        log.clear()
        assert fs.cat_file(key, start=0, end=3) == b"pay"  # ranged reads skip the size probe
        assert log.operations == ["GetObject"]


@pytest.mark.s3
def test_count_s3_requests_sees_listings(s3_bucket: S3Bucket) -> None:
    fs = s3_bucket.filesystem()
    fs.pipe(f"{s3_bucket.name}/a", b"1")
    with count_s3_requests(fs) as log:
        fs.ls(s3_bucket.name)
        fs.ls(s3_bucket.name)  # use_listings_cache=False: each listing hits the server
    assert log.operations == ["ListObjectsV2", "ListObjectsV2"]


@pytest.mark.postgres
def test_postgres_select_version(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn) as conn:
        row = conn.execute("select version(), current_database(), current_user").fetchone()
    assert row is not None
    version, dbname, user = row
    assert version.startswith(f"PostgreSQL {postgres_server.major_version}.")
    assert postgres_server.major_version >= 15
    assert (dbname, user) == ("cas_test", "cas")


@pytest.mark.postgres
def test_postgres_is_superuser_and_writable(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
        assert row == (True,)
        conn.execute("create temporary table t (x int)")
        conn.execute("insert into t values (42)")
        assert conn.execute("select x from t").fetchone() == (42,)
