"""`verify` over chunked payloads: a damaged or missing chunk is found and named."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.model import Message
from cas.objects import compress, decompress
from cas.repository import Repository
from cas.verify import verify


def _chunked(tmp_path: Path) -> tuple[Repository, Message]:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.payloads.threshold = 4096
    rows = [{"file": f"f{i}.txt", "text": "y" * 400 + str(i)} for i in range(40)]
    message = Message(id="big", content={"rows": rows})
    repo.artifacts.save("r1", "big", message)
    repo.artifacts.save("r2", "big", message)
    return repo, message


def test_chunked_payloads_verify_clean(tmp_path: Path) -> None:
    repo, _ = _chunked(tmp_path)
    report = verify(repo)
    assert report.ok
    assert report.objects_checked == 1


def test_a_corrupt_chunk_fails_verify_naming_chunk_and_runs(tmp_path: Path) -> None:
    repo, message = _chunked(tmp_path)
    digest = repo.artifacts.entry("r1", "big").digest
    chunk = repo.payloads.chunk_list(digest)[2]
    path = Path(repo.url) / repo.payloads.chunks.key(chunk)
    data = bytearray(decompress(path.read_bytes(), chunk, str(path)))
    data[5] ^= 0x01
    path.write_bytes(compress(bytes(data)))
    report = verify(repo)
    assert not report.ok
    [problem] = report.problems
    assert (problem.kind, problem.subject, problem.runs) == (
        "corrupt_object",
        digest.hex,
        ("r1", "r2"),
    )
    assert chunk.hex in problem.detail
    # Saving the same content again repairs the chunk the read found damaged.
    repo.artifacts.save("r3", "big", message)
    assert verify(repo).ok


@pytest.mark.parametrize("store", ["chunks", "lists"])
def test_a_missing_chunk_or_list_fails_verify(tmp_path: Path, store: str) -> None:
    repo, _ = _chunked(tmp_path)
    digest = repo.artifacts.entry("r1", "big").digest
    target = repo.payloads.chunk_list(digest)[0] if store == "chunks" else digest
    (Path(repo.url) / getattr(repo.payloads, store).key(target)).unlink()
    [problem] = verify(repo).problems
    assert problem.kind == "missing_object"
    assert problem.runs == ("r1", "r2")


def test_a_missing_chunk_is_restored_by_the_next_save_after_a_read(tmp_path: Path) -> None:
    repo, message = _chunked(tmp_path)
    digest = repo.artifacts.entry("r1", "big").digest
    chunk = repo.payloads.chunk_list(digest)[0]
    (Path(repo.url) / repo.payloads.chunks.key(chunk)).unlink()
    assert not verify(repo).ok  # the read finds the chunk missing...
    repo.artifacts.save("r3", "big", message)  # ...so this save writes it again
    assert verify(repo).ok


def test_a_no_cache_save_restores_a_missing_chunk_in_a_fresh_process(tmp_path: Path) -> None:
    repo, message = _chunked(tmp_path)
    digest = repo.artifacts.entry("r1", "big").digest
    chunk = repo.payloads.chunk_list(digest)[0]
    (Path(repo.url) / repo.payloads.chunks.key(chunk)).unlink()
    fresh = Repository.open(repo.url)
    fresh.payloads.threshold = 4096
    fresh.artifacts.save_entry("r3", "big", message, verify_existing=True)
    assert verify(fresh).ok
