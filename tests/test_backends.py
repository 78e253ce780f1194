"""`BackendTests` on a local folder, fsspec memory and S3 (moto), plus local-only behaviour."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cas.objects
from cas.errors import InvalidInputError
from cas.objects import Backend, FsspecBackend, LocalBackend
from cas.testing.services import S3Bucket
from cas.testing.store_tests import (
    BackendTests,
    memory_backend,
    raw_snapshot,
    s3_backend,
)


class TestLocalBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return LocalBackend(tmp_path / "repo")

    def test_hostile_keys_leave_parent_folder_unchanged(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        (tmp_path / "sibling.txt").write_bytes(b"keep")
        before = raw_snapshot(backend)
        for key in ("../x", "../sibling.txt", "a/../../x", "/abs"):
            with pytest.raises(InvalidInputError):
                backend.write(key, b"evil")
            with pytest.raises(InvalidInputError):
                backend.append(key, b"evil\n")
            with pytest.raises(InvalidInputError):
                backend.delete([key])
        assert raw_snapshot(backend) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sibling.txt"]

    def test_write_leaves_no_temporary(self, backend: LocalBackend) -> None:
        backend.write("a/b", b"1")
        backend.write("a/b", b"2")
        assert backend.children("a") == ["b"]

    def test_torn_last_line_repaired_on_next_append(self, backend: LocalBackend) -> None:
        backend.root.mkdir(parents=True)
        (backend.root / "log").write_bytes(b"one\ntwo\nthr")  # a crash mid-append
        LocalBackend(backend.root).append("log", b"four\n")
        assert backend.read("log") == b"one\ntwo\nfour\n"

    def test_torn_only_line_repaired(self, backend: LocalBackend) -> None:
        backend.root.mkdir(parents=True)
        (backend.root / "log").write_bytes(b"half a li")
        LocalBackend(backend.root).append("log", b"whole\n")
        assert backend.read("log") == b"whole\n"

    def test_torn_line_longer_than_a_mebibyte_repaired(self, backend: LocalBackend) -> None:
        backend.root.mkdir(parents=True)
        (backend.root / "log").write_bytes(b"ok\n" + b"x" * ((1 << 20) + 10))
        LocalBackend(backend.root).append("log", b"next\n")
        assert backend.read("log") == b"ok\nnext\n"

    def test_failed_append_is_repaired_by_the_next_append(
        self, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        backend.append("log", b"first\n")

        def half_then_fail(fd: int, data: bytes) -> None:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(cas.objects, "_write_all", half_then_fail)
        with pytest.raises(OSError):
            backend.append("log", b"second line\n")
        monkeypatch.undo()
        backend.append("log", b"third\n")
        assert backend.read("log") == b"first\nthird\n"

    def test_fsync_off_still_round_trips(self, tmp_path: Path) -> None:
        backend = LocalBackend(tmp_path / "fast", fsync=False)
        backend.append("log", b"a\n")
        backend.sync("log")
        backend.write("k", b"v")
        assert backend.read("k") == b"v"


class TestMemoryBackend(BackendTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with memory_backend() as backend:
            yield backend

    def test_roots_are_isolated(self, backend: FsspecBackend) -> None:
        backend.write("k", b"1")
        with memory_backend() as other:
            assert not other.exists("k")


@pytest.mark.s3
class TestS3Backend(BackendTests):
    @pytest.fixture
    def backend(self, s3_bucket: S3Bucket) -> Backend:
        url, storage_options = s3_bucket
        return s3_backend(url, storage_options)


# exclusive create across processes (the index lock rests on it) -----------------------

CREATE_SCRIPT = """
import sys, time
from cas.objects import open_backend
url, endpoint, name, start = sys.argv[1:5]
options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
backend = open_backend(url, **options)
time.sleep(max(0.0, float(start) - time.time()))  # all at once, imports done
print(backend.create("index/lock", name.encode()))
"""


def _race_creates(url: str, endpoint: str = "", processes: int = 6) -> list[bool]:
    start = str(time.time() + 3)
    command = [sys.executable, "-c", CREATE_SCRIPT, url, endpoint]
    running = [
        subprocess.Popen([*command, f"p{n}", start], stdout=subprocess.PIPE, text=True)
        for n in range(processes)
    ]
    outputs = [process.communicate(timeout=60)[0].strip() for process in running]
    assert all(process.returncode == 0 for process in running)
    return [output == "True" for output in outputs]


def test_processes_creating_one_local_key_at_once_have_one_winner(tmp_path: Path) -> None:
    won = _race_creates(str(tmp_path / "repo"))
    assert won.count(True) == 1
    assert (tmp_path / "repo" / "index" / "lock").read_text() == f"p{won.index(True)}"


@pytest.mark.s3
def test_processes_creating_one_s3_key_at_once_have_one_winner(s3_bucket: S3Bucket) -> None:
    endpoint = s3_bucket.storage_options["client_kwargs"]["endpoint_url"]
    url = f"{s3_bucket.url}/repo"
    won = _race_creates(url, endpoint)
    assert won.count(True) == 1  # a conditional PUT (If-None-Match: *), not HEAD then PUT
    backend = s3_backend(url, s3_bucket.storage_options)
    assert backend.read("index/lock") == f"p{won.index(True)}".encode()


@pytest.mark.parametrize(
    ("code", "lost"),
    [("PreconditionFailed", True), ("ConditionalRequestConflict", True), ("AccessDenied", False)],
)
def test_a_refused_conditional_put_is_told_from_other_errors(code: str, lost: bool) -> None:
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from cas.s3 import lost_race

    answer = {"Error": {"Code": code, "Message": "refused"}}  # 412 without its Condition
    error = translate_boto_error(ClientError(answer, "PutObject"))
    assert isinstance(error, OSError) and not isinstance(error, FileExistsError)
    assert lost_race(error) is lost
