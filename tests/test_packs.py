"""Run packs (`cas.packs`): a push of many runs writes their records as packs.

Each test runs on a local folder, ``memory://`` and the moto S3 server, and
checks what a reader of the destination sees: the same runs as the source, the
folder of a run taking precedence file by file, gc rewriting packs without the
runs it removes, and damage reported loudly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sync import RUNBOOK_TEXT, assert_clean, assert_same_runs, make_run, source_repo

from cas import repository as repository_module
from cas.digest import seal
from cas.errors import ConflictError, IntegrityError
from cas.gc import Policy, collect
from cas.model import ArtifactOutcome, ExecutionResult, Message
from cas.packs import PACKS, PackedRun, RunSection, _parse_index, build, index_key, pack_key
from cas.repository import CONFIG, FORMAT, PACKED_FORMAT, RUNBOOK, Repository
from cas.stores import MANIFEST, RESULT, run_key
from cas.sync import FEW_RUNS, transfer
from cas.testing.services import S3Bucket
from cas.testing.store_helpers import RecordingBackend
from cas.verify import verify

RUNS = FEW_RUNS + 2  # a push past FEW_RUNS new runs writes packs


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def dest_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "dest")
    elif request.param == "memory":
        yield f"memory://packs-{uuid.uuid4().hex}"
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        request.node.storage_options = bucket.storage_options
        yield f"{bucket.url}/team"


def _open(request: pytest.FixtureRequest, url: str) -> Repository:
    options = getattr(request.node, "storage_options", {})
    return Repository.init(url, fsync=False, **options)


def _pushed(
    request: pytest.FixtureRequest, tmp_path: Path, url: str
) -> tuple[Repository, Repository]:
    source = source_repo(tmp_path / "source", runs=RUNS)
    dest = _open(request, url)
    assert dest.config["format"] == FORMAT
    transfer(source, dest, source.run_ids())
    return source, _open(request, url)  # a fresh reader: nothing cached from the push


def test_a_push_of_many_runs_writes_packs_that_read_back(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, dest = _pushed(request, tmp_path, dest_url)
    assert dest.config["format"] == PACKED_FORMAT
    assert len(dest.packs.listed()) == 1
    assert not [key for key in dest.backend.list("runs") if key.endswith(RESULT)]
    assert dest.run_ids() == source.run_ids() == dest.executions.list_runs()
    assert_same_runs(source, dest, source.run_ids())
    for run_id in source.run_ids():
        assert dest.executions.exists(run_id)
        assert dest.runbook(run_id) == RUNBOOK_TEXT
    assert [row.run_id for row in dest.list_runs()] == [row.run_id for row in source.list_runs()]
    assert_clean(dest)
    again = transfer(source, dest, source.run_ids())
    assert again.runs_sent == [] and set(again.runs_skipped.values()) == {"already present"}


def test_pulling_packed_runs_back_gives_the_same_runs(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, remote = _pushed(request, tmp_path, dest_url)
    few = Repository.init(str(tmp_path / "few"), fsync=False)
    transfer(remote, few, source.run_ids()[:3])  # few runs: folders
    assert few.packs.listed() == [] and few.config["format"] == FORMAT
    assert_same_runs(source, few, source.run_ids()[:3])
    assert few.runbook(source.run_ids()[0]) == RUNBOOK_TEXT
    every = Repository.init(str(tmp_path / "every"), fsync=False)
    transfer(remote, every, remote.run_ids())
    assert_same_runs(source, every, source.run_ids())
    assert_clean(every)


def test_a_packed_run_that_differs_from_the_source_is_refused(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    _source, dest = _pushed(request, tmp_path, dest_url)
    other = Repository.init(str(tmp_path / "other"), fsync=False)

    make_run(other, "run-4", seed=99, day=4)
    before = sorted(dest.backend.list(""))
    with pytest.raises(ConflictError, match="run-4"):
        transfer(other, dest, ["run-4"])
    assert sorted(dest.backend.list("")) == before


def test_writes_to_a_packed_run_go_to_its_folder_on_top_of_the_pack(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, dest = _pushed(request, tmp_path, dest_url)
    run_id = source.run_ids()[1]
    packed = dest.artifacts.entries(run_id)
    extra = Message(id="extra", content={"late": True}, source="test")
    dest.artifacts.save(run_id, "extra", extra)
    result = dest.executions.get(run_id)
    outcomes = {**result.artifacts, "extra": ArtifactOutcome("completed", duration_seconds=0.1)}
    newer = ExecutionResult(run_id, "partial", result.started_at, artifacts=outcomes)
    dest.executions.save(run_id, newer)
    dest.backend.write(run_key(run_id, RUNBOOK), b"name: changed\n")

    reader = _open(request, dest_url)
    entries = reader.artifacts.entries(run_id)
    assert list(entries) == [*packed, "extra"]
    assert {k: e.to_dict() for k, e in entries.items() if k != "extra"} == {
        k: e.to_dict() for k, e in packed.items()
    }
    assert reader.artifacts.get(run_id, "extra").content == {"late": True}
    assert reader.executions.get(run_id) == newer
    assert reader.runbook(run_id) == b"name: changed\n"
    assert_same_runs(source, reader, [r for r in source.run_ids() if r != run_id])
    assert_clean(reader)


def test_gc_removes_packed_runs_by_rewriting_their_pack(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, dest = _pushed(request, tmp_path, dest_url)
    [old_pack] = dest.packs.listed()
    time.sleep(1.1)  # gc's clock starts a second early (a coarse mtime cannot hide a write)
    done = collect(dest, Policy(keep_last=5, grace=timedelta(0)))
    kept = sorted(f"run-{day}" for day in range(RUNS - 5, RUNS))  # the 5 newest
    assert sorted(done.runs_removed) == sorted(set(source.run_ids()) - set(kept))
    assert done.objects_removed > 0  # each run's own payload

    reader = _open(request, dest_url)
    [new_pack] = reader.packs.listed()
    assert new_pack != old_pack
    assert not [key for key in reader.backend.list(PACKS) if old_pack in key]
    assert reader.run_ids() == kept == reader.executions.list_runs()
    newest_first = [f"run-{day}" for day in range(RUNS - 1, RUNS - 6, -1)]
    assert [row.run_id for row in reader.list_runs()] == newest_first
    assert_same_runs(source, reader, kept)
    assert_clean(reader)
    collect(reader, Policy(keep_last=0, grace=timedelta(0)))
    assert _open(request, dest_url).run_ids() == []
    assert list(reader.backend.list(PACKS)) == []


def test_a_pack_without_its_index_is_invisible_and_collected_after_the_grace(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, dest = _pushed(request, tmp_path, dest_url)
    section = RunSection(b'{"not":"read"}', b"", None)
    name, data, _index = build([("ghost", section)])
    dest.backend.write(pack_key(name), data)  # a crash before its index
    assert "ghost" not in dest.run_ids()
    assert verify(dest).ok
    collect(dest, Policy(keep_last=100))  # younger than the grace period: kept
    assert dest.backend.exists(pack_key(name))
    time.sleep(1.1)  # gc's clock starts a second early (a coarse mtime cannot hide a write)
    collect(dest, Policy(keep_last=100, grace=timedelta(0)))
    assert not dest.backend.exists(pack_key(name))
    assert dest.run_ids() == source.run_ids()


def test_a_damaged_pack_is_reported_and_its_runs_fail_loudly(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    source, dest = _pushed(request, tmp_path, dest_url)
    [name] = dest.packs.listed()
    data = bytearray(dest.backend.read(pack_key(name)))
    data[40] ^= 0x01  # inside the first run's sealed result
    dest.backend.write(pack_key(name), bytes(data))
    reader = _open(request, dest_url)
    first = source.run_ids()[0]
    with pytest.raises(IntegrityError):
        reader.executions.get(first)
    kinds = {(p.kind, p.subject) for p in verify(reader).problems}
    assert ("corrupt_pack", pack_key(name)) in kinds
    assert ("damaged_record", first) in kinds
    with pytest.raises(IntegrityError):  # before anything is deleted
        collect(reader, Policy(keep_last=100, grace=timedelta(0)))


def test_a_damaged_index_is_reported_by_verify_and_stops_listings(
    request: pytest.FixtureRequest, tmp_path: Path, dest_url: str
) -> None:
    _source, dest = _pushed(request, tmp_path, dest_url)
    [name] = dest.packs.listed()
    dest.backend.write(
        index_key(name), dest.backend.read(index_key(name)).replace(b"run-", b"run_")
    )
    reader = _open(request, dest_url)
    with pytest.raises(IntegrityError):
        reader.run_ids()
    problems = verify(reader).problems
    assert [(p.kind, p.subject) for p in problems] == [("corrupt_pack", index_key(name))]


def test_a_format_1_repository_never_lists_packs(tmp_path: Path) -> None:
    Repository.init(str(tmp_path / "r"), fsync=False)
    plain = Repository.open(str(tmp_path / "r"), fsync=False)
    recorder = RecordingBackend(plain.backend)
    repo = Repository(recorder, plain.config)
    source = source_repo(tmp_path / "source", runs=2)
    transfer(source, repo, source.run_ids())
    repo.artifacts.entries("missing"), repo.run_ids(), repo.executions.list_runs()
    assert PACKS not in recorder.keys_of("children")
    assert repo.config["format"] == FORMAT


def test_a_reader_opened_before_the_first_pack_sees_it_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "dest")
    early = Repository.init(url, fsync=False)
    source = source_repo(tmp_path / "source", runs=RUNS)
    transfer(source, Repository.open(url, fsync=False), source.run_ids())
    assert orjson.loads((tmp_path / "dest" / CONFIG).read_bytes())["format"] == PACKED_FORMAT
    monkeypatch.setattr(repository_module, "RECHECK_FORMAT", 0.0)
    assert early.run_ids() == source.run_ids()


def test_a_packed_run_resumes_its_journal_from_the_pack_on_a_local_folder(
    tmp_path: Path,
) -> None:
    source = source_repo(tmp_path / "source", runs=RUNS)
    dest = Repository.init(str(tmp_path / "dest"), fsync=False)
    transfer(source, dest, source.run_ids())
    run_id = source.run_ids()[0]
    dest.artifacts.save(run_id, "extra", Message(id="extra", content={}, source="t"))
    journal = (tmp_path / "dest" / run_key(run_id, MANIFEST)).read_bytes()
    assert journal.count(b"\n") == len(source.artifacts.entries(run_id)) + 1


sections = st.lists(
    st.tuples(
        st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
        st.builds(
            RunSection,
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
            st.binary(max_size=200),
            st.none() | st.binary(max_size=60),
        ),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda item: item[0],
)


@given(sections)
def test_every_section_cuts_back_out_of_its_pack(items: list[tuple[str, RunSection]]) -> None:
    name, data, index = build(items)
    record = orjson.loads(index)
    assert record["pack"] == name and record["size"] == len(data)
    for (run_id, section), place in zip(items, record["runs"], strict=True):
        packed = PackedRun(run_id, name, *place[1:])
        cut = packed.cut(data[packed.start : packed.end])
        assert (cut.result, cut.manifest, cut.runbook) == (
            section.result,
            section.manifest,
            section.runbook,
        )


def test_a_result_saved_now_is_kept_over_an_older_packed_one(tmp_path: Path) -> None:
    """The contract's "save replaces" holds for packed runs (the folder wins)."""
    source = source_repo(tmp_path / "source", runs=RUNS)
    dest = Repository.init(str(tmp_path / "dest"), fsync=False)
    transfer(source, dest, source.run_ids())
    run_id = source.run_ids()[2]
    now = datetime.now(UTC)
    dest.executions.save(run_id, ExecutionResult(run_id, "failed", now))
    assert dest.executions.get(run_id).status == "failed"
    assert dest.executions.list_runs() == source.run_ids()


@pytest.mark.s3
def test_a_pull_of_packed_runs_reads_a_pack_at_a_time(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    source = source_repo(tmp_path / "source", runs=3 * RUNS)
    remote_url = f"{s3_bucket.url}/team"
    transfer(source, Repository.init(remote_url, **s3_bucket.storage_options), source.run_ids())
    remote = Repository.open(remote_url, **s3_bucket.storage_options)
    local = Repository.init(str(tmp_path / "pulled"), fsync=False)
    pulled = transfer(remote, local, remote.run_ids())
    assert pulled.requests is not None
    # the payloads, plus a few listings and one read per pack and index: nothing per run
    assert pulled.requests - pulled.objects_sent < 10, pulled.to_dict()
    assert_same_runs(source, local, source.run_ids())
    assert [local.runbook(r) for r in source.run_ids()] == [RUNBOOK_TEXT] * 3 * RUNS


def test_a_lookup_reads_only_the_indexes_whose_range_may_hold_the_run(tmp_path: Path) -> None:
    source = source_repo(tmp_path / "source", runs=2 * RUNS)
    url = str(tmp_path / "dest")
    transfer(source, Repository.init(url, fsync=False), source.run_ids()[:RUNS])
    transfer(source, Repository.open(url, fsync=False), source.run_ids()[RUNS:])
    plain = Repository.open(url, fsync=False)
    assert len(plain.packs.listed()) == 2
    recorder = RecordingBackend(plain.backend)
    repo = Repository(recorder, plain.config)

    def indexes_read() -> int:
        return sum(1 for key in recorder.keys_of("read") if key.endswith(".idx"))

    assert not repo.executions.exists("zz-a-new-run")  # after every range: no index read
    assert not repo.executions.exists("a-new-run")  # before every range
    assert indexes_read() == 0
    assert repo.executions.exists(source.run_ids()[-1])
    assert indexes_read() == 1
    assert repo.run_ids() == source.run_ids()  # a listing reads them all
    assert indexes_read() == 2


NAME = f"{'0' * 32}-{'f' * 32}-{'a' * 64}"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=6),
        max_leaves=12,
    )
)
def test_a_malformed_index_is_an_integrity_error(runs: object) -> None:
    """Whatever a sealed index holds, reading it either works or raises IntegrityError."""
    data = seal({"format": "cas-pack/1", "pack": NAME, "runs": runs})
    try:
        places = _parse_index(NAME, data)
    except IntegrityError:
        return
    assert all(isinstance(place, PackedRun) for place in places)
