"""The DAG executor, in process: run ids, persistence order, concurrency, failures,
timeouts, memoization, reuse by reference, interruption and resume.

Test plugins live in `executor_support.plugins`; they record which steps computed
(`calls()`, keyed by each step's ``tag`` property) and when (`INTERVALS`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from executor_support.plugins import (
    CONNECTORS,
    INTERVALS,
    PROCESSORS,
    VALUE,
    VALUE_SCHEMA,
    Fail,
    Transform,
    TransformV2,
    calls,
    peak_concurrency,
    reset,
)

from cas.cache import StepKey
from cas.errors import ConflictError
from cas.executor import Executor, RunReport, new_run_id
from cas.model import ArtifactOutcome
from cas.owner import OWNER
from cas.planner import Plan, plan
from cas.plugins import Connector, Processor
from cas.repository import RUNBOOK, Repository
from cas.runbook import parse_runbook
from cas.stores import run_key
from cas.verify import verify

CHAIN = """
name: chain
artifacts:
  src:
    source: {type: fixed, properties: {value: hello, tag: src}}
  up:
    inputs: [src]
    process: {type: transform, properties: {op: upper, tag: up}}
  size:
    inputs: [up]
    process: {type: transform, properties: {op: length, tag: size}}
  other:
    inputs: [src]
    process: {type: transform, properties: {op: reverse, tag: other}}
"""
CHAIN_CONTENT = {"src": "hello", "up": "HELLO", "size": 5, "other": "olleh"}
PROCESS_STEPS = ["other", "size", "up"]


@pytest.fixture(autouse=True)
def _clean_ledgers() -> Iterator[None]:
    reset()
    yield
    reset()


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "repo"))


def make_plan(
    text: str,
    *,
    connectors: Mapping[str, type[Connector]] = CONNECTORS,
    processors: Mapping[str, type[Processor]] = PROCESSORS,
) -> Plan:
    return plan(parse_runbook(textwrap.dedent(text)), connectors, processors)


def run(repo: Repository, text: str, **options: Any) -> RunReport:
    return Executor(repo, make_plan(text), **options).run()


def outcomes(report: RunReport) -> dict[str, ArtifactOutcome]:
    return report.result.artifacts


def statuses(report: RunReport) -> dict[str, str]:
    return {a: o.status for a, o in outcomes(report).items()}


def object_path(repo: Repository, run_id: str, artifact_id: str) -> Path:
    """The file holding a small (unchunked) artifact's payload."""
    digest = repo.artifacts.entry(run_id, artifact_id).digest
    return Path(repo.url) / repo.objects.key(digest)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def owner_of_child(*, alive: bool) -> tuple[dict[str, Any], subprocess.Popen[str]]:
    """A child Python process's own `current_owner()` record; it exits now unless `alive`."""
    code = (
        "import json, sys\nfrom cas.owner import current_owner\n"
        "print(json.dumps(current_owner()), flush=True)\nsys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    record: dict[str, Any] = json.loads(child.stdout.readline())
    if not alive:
        child.stdin.close()
        child.wait(timeout=10)
    return record, child


def write_owner(repo: Repository, run_id: str, record: dict[str, Any]) -> None:
    repo.backend.write(run_key(run_id, OWNER), json.dumps(record).encode())


class Crash(Exception):
    """Raised from an on_event callback to stop an executor dead, as a crash would."""


def crash_when_starting(artifact_id: str) -> Any:
    """An on_event callback that kills the run as `artifact_id` starts (after its inputs saved).

    ("start" is reported outside the executor's error handling; an error raised on
    "done" would be taken for a failure of the step instead.)
    """

    def on_event(event: str, artifact: str, _detail: str) -> None:
        if event == "start" and artifact == artifact_id:
            raise Crash(artifact)

    return on_event


# -- run ids and persistence --------------------------------------------------


def test_run_id_is_a_uuid7_carrying_the_current_time(repo: Repository) -> None:
    before = time.time_ns() // 1_000_000
    report = run(repo, CHAIN)
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(report.run_id)
    assert str(parsed) == report.run_id
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_run_ids_of_consecutive_runs_sort_by_start_time(repo: Repository) -> None:
    ids = []
    for _ in range(3):
        ids.append(run(repo, CHAIN).run_id)
        time.sleep(0.002)  # ids are sortable to the millisecond
    assert sorted(ids) == ids
    assert len(set(ids)) == 3
    assert sorted(new_run_id() for _ in range(5))[0] > ids[-1]


def test_result_is_saved_running_at_start_and_final_at_the_end(repo: Repository) -> None:
    run_id = new_run_id()
    seen: list[tuple[str, str, bool]] = []

    def on_event(event: str, artifact: str, _detail: str) -> None:
        result = repo.executions.get(run_id)
        owned = repo.backend.exists(run_key(run_id, OWNER))
        seen.append((f"{event}:{artifact}", result.status, owned))
        assert result.ended_at is None

    report = Executor(repo, make_plan(CHAIN), on_event=on_event).run(run_id)
    assert seen[0] == ("start:src", "running", True)
    assert {status for _, status, _ in seen} == {"running"}
    stored = repo.executions.get(run_id)
    assert stored == report.result
    assert stored.status == "completed"
    assert stored.ended_at is not None and stored.duration_seconds is not None
    assert set(stored.artifacts) == set(CHAIN_CONTENT)
    assert not repo.backend.exists(run_key(run_id, OWNER))  # released at the end


def test_every_artifact_is_readable_with_its_content(repo: Repository) -> None:
    report = run(repo, CHAIN)
    assert report.result.status == "completed"
    for artifact_id, value in CHAIN_CONTENT.items():
        message = repo.artifacts.get(report.run_id, artifact_id)
        assert message.content["value"] == value
        assert message.schema == VALUE
        assert message.id == artifact_id
    assert report.new_objects == len(CHAIN_CONTENT)
    assert report.bytes_written > 0
    assert verify(repo).ok


def test_runbook_text_is_kept_with_the_run(repo: Repository) -> None:
    report = run(repo, CHAIN)
    stored = repo.backend.read(run_key(report.run_id, RUNBOOK)).decode()
    assert stored == textwrap.dedent(CHAIN)


def test_each_artifact_is_saved_when_produced_and_before_its_dependents_start(
    repo: Repository,
) -> None:
    run_id = new_run_id()
    the_plan = make_plan(CHAIN)
    checked: list[str] = []

    def on_event(event: str, artifact: str, _detail: str) -> None:
        saved = repo.artifacts.entries(run_id)
        if event == "done":  # object, then entry: readable the moment it is reported
            assert repo.artifacts.get(run_id, artifact).content["value"] == CHAIN_CONTENT[artifact]
            checked.append(artifact)
        if event == "start":
            assert all(i in saved for i in the_plan.steps[artifact].inputs)

    Executor(repo, the_plan, on_event=on_event).run(run_id)
    assert sorted(checked) == sorted(CHAIN_CONTENT)
    saved_order = list(repo.artifacts.entries(run_id))
    for artifact_id, step in the_plan.steps.items():
        assert all(saved_order.index(i) < saved_order.index(artifact_id) for i in step.inputs)


def test_signal_handlers_are_restored_after_a_run(repo: Repository) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run(repo, CHAIN)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# -- concurrency ------------------------------------------------------------------


def sleepers(count: int, seconds: float, max_concurrency: int) -> str:
    steps = "".join(
        f"  s{i}:\n    inputs: [src]\n"
        f"    process: {{type: sleep, properties: {{seconds: {seconds}, tag: s{i}}}}}\n"
        for i in range(count)
    )
    return (
        f"name: sleepers\nconfig: {{max_concurrency: {max_concurrency}}}\nartifacts:\n"
        f"  src:\n    source: {{type: fixed, properties: {{value: x}}}}\n{steps}"
    )


def test_independent_steps_run_concurrently(repo: Repository) -> None:
    started = time.monotonic()
    report = run(repo, sleepers(3, 0.25, max_concurrency=4))
    elapsed = time.monotonic() - started
    assert report.result.status == "completed"
    assert peak_concurrency(INTERVALS) == 3
    assert max(start for _, start, _ in INTERVALS) < min(end for *_, end in INTERVALS)
    assert elapsed < 3 * 0.25  # less than the three steps one after another


def test_max_concurrency_one_runs_steps_one_at_a_time(repo: Repository) -> None:
    report = run(repo, sleepers(3, 0.1, max_concurrency=1))
    assert report.result.status == "completed"
    assert peak_concurrency(INTERVALS) == 1
    ordered = sorted(INTERVALS, key=lambda interval: interval[1])
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(ordered))


def test_max_concurrency_bounds_the_steps_running_at_once(repo: Repository) -> None:
    report = run(repo, sleepers(4, 0.15, max_concurrency=2))
    assert report.result.status == "completed"
    assert len(INTERVALS) == 4
    assert peak_concurrency(INTERVALS) == 2


# -- failures ---------------------------------------------------------------------

FAILING = """
name: failing
artifacts:
  src:
    source: {type: fixed, properties: {value: hello, tag: src}}
  bad:
    inputs: [src]
    process: {type: fail, properties: {tag: bad}}
  after_bad:
    inputs: [bad]
    process: {type: transform, properties: {tag: after_bad}}
  further:
    inputs: [after_bad, good]
    process: {type: transform, properties: {tag: further}}
  good:
    inputs: [src]
    process: {type: transform, properties: {op: upper, tag: good}}
"""


def test_failing_step_records_its_error_and_its_dependents_are_skipped(
    repo: Repository,
) -> None:
    report = run(repo, FAILING)
    result = outcomes(report)
    assert result["bad"].status == "failed"
    assert result["bad"].error_type == "ValueError"
    assert result["bad"].error_message == "boom"
    for dependent in ("after_bad", "further"):
        assert result[dependent].status == "skipped"
        assert result[dependent].reason == "input 'bad' failed"
    assert statuses(report) == {
        "src": "completed",
        "bad": "failed",
        "after_bad": "skipped",
        "further": "skipped",
        "good": "completed",
    }
    assert report.result.status == "partial"
    assert "after_bad" not in calls() and "further" not in calls()
    assert sorted(repo.artifacts.list_artifacts(report.run_id)) == ["good", "src"]
    assert repo.executions.get(report.run_id).artifacts["bad"].error_message == "boom"


def test_a_run_where_nothing_completes_is_failed(repo: Repository) -> None:
    report = run(
        repo,
        """
        name: all_failed
        artifacts:
          src:
            source: {type: broken}
          after:
            inputs: [src]
            process: {type: transform}
        """,
    )
    assert statuses(report) == {"src": "failed", "after": "skipped"}
    assert outcomes(report)["src"].error_type == "ValueError"
    assert report.result.status == "failed"


def test_content_that_breaks_its_output_schema_fails_the_step(repo: Repository) -> None:
    repo.schemas.add(VALUE, VALUE_SCHEMA)
    report = run(
        repo,
        """
        name: schema
        artifacts:
          src:
            source: {type: fixed, properties: {value: hello}}
          bad:
            inputs: [src]
            process: {type: bad_shape}
          after:
            inputs: [bad]
            process: {type: transform}
        """,
    )
    assert statuses(report) == {"src": "completed", "bad": "failed", "after": "skipped"}
    assert outcomes(report)["bad"].error_type == "SchemaValidationError"
    assert repo.artifacts.entry(report.run_id, "src").validated
    assert repo.artifacts.list_artifacts(report.run_id) == ["src"]


# -- timeouts ---------------------------------------------------------------------


def test_step_timeout_fails_the_step_and_skips_its_dependents(repo: Repository) -> None:
    started = time.monotonic()
    report = run(
        repo,
        """
        name: step_timeout
        config: {step_timeout: 0.3}
        artifacts:
          src:
            source: {type: fixed, properties: {value: hello}}
          stuck:
            inputs: [src]
            process: {type: hang}
          after:
            inputs: [stuck]
            process: {type: transform}
          quick:
            inputs: [src]
            process: {type: transform}
        """,
    )
    assert time.monotonic() - started < 2
    result = outcomes(report)
    assert result["stuck"].status == "failed"
    assert result["stuck"].error_type == "TimeoutError"
    assert "0.3 s" in (result["stuck"].error_message or "")
    assert result["after"].status == "skipped"
    assert result["after"].reason == "input 'stuck' failed"
    assert result["quick"].status == "completed"
    assert report.result.status == "partial"


def test_run_timeout_skips_the_remaining_steps(repo: Repository) -> None:
    started = time.monotonic()
    report = run(
        repo,
        """
        name: run_timeout
        config: {timeout: 0.3}
        artifacts:
          src:
            source: {type: fixed, properties: {value: hello}}
          stuck:
            inputs: [src]
            process: {type: hang}
          after:
            inputs: [stuck]
            process: {type: transform}
        """,
    )
    assert time.monotonic() - started < 2
    result = outcomes(report)
    assert result["src"].status == "completed"
    for artifact_id in ("stuck", "after"):
        assert result[artifact_id].status == "skipped"
        assert result[artifact_id].reason == "run timed out after 0.3 s"
    assert report.result.status == "partial"
    assert report.result.error == "run timed out after 0.3 s"
    assert repo.executions.get(report.run_id).status != "completed"
    assert "after" not in calls()


# -- memoization ------------------------------------------------------------------


def test_an_identical_second_run_reuses_every_process_step(repo: Repository) -> None:
    first = run(repo, CHAIN)
    second = run(repo, CHAIN)
    assert calls() == {"src": 2, "up": 1, "size": 1, "other": 1}  # sources always run
    assert second.result.status == "completed"
    for artifact_id in PROCESS_STEPS:
        assert outcomes(second)[artifact_id].cached_from == first.run_id
    assert outcomes(second)["src"].cached_from is None
    assert sorted(second.reused) == PROCESS_STEPS
    assert (second.new_objects, second.bytes_written) == (0, 0)
    for artifact_id, value in CHAIN_CONTENT.items():
        assert repo.artifacts.get(second.run_id, artifact_id).content["value"] == value
        old = repo.artifacts.entry(first.run_id, artifact_id).digest
        assert repo.artifacts.entry(second.run_id, artifact_id).digest == old
    assert verify(repo).ok


def test_the_step_key_digests_plugin_version_canonical_properties_and_inputs(
    repo: Repository,
) -> None:
    first = run(repo, CHAIN)
    src_digest = repo.artifacts.entry(first.run_id, "src").digest.hex
    expected = StepKey("transform", "1", {"op": "upper", "tag": "up"}, (src_digest,))
    assert outcomes(first)["up"].step_key == expected.digest.hex
    assert outcomes(first)["src"].step_key is None  # a source that is not cacheable
    reordered = CHAIN.replace("{op: upper, tag: up}", "{tag: up, op: upper}")
    assert reordered != CHAIN
    second = run(repo, reordered)
    assert outcomes(second)["up"].cached_from == first.run_id
    assert outcomes(second)["up"].step_key == expected.digest.hex


def test_changing_a_property_reruns_exactly_the_affected_steps(repo: Repository) -> None:
    first = run(repo, CHAIN)
    changed = CHAIN.replace("{op: upper, tag: up}", "{op: upper, tag: up, suffix: '!'}")
    second = run(repo, changed)
    assert calls() == {"src": 2, "up": 2, "size": 2, "other": 1}
    assert outcomes(second)["other"].cached_from == first.run_id
    assert outcomes(second)["up"].cached_from is None
    assert outcomes(second)["size"].cached_from is None
    assert repo.artifacts.get(second.run_id, "size").content["value"] == 6


def test_changing_a_source_reruns_only_steps_whose_input_digest_changed(
    repo: Repository,
) -> None:
    first = run(repo, CHAIN)
    second = run(repo, CHAIN.replace("value: hello", "value: HeLLo"))
    # up still yields "HELLO", so size's input digest is unchanged and size is reused.
    assert calls() == {"src": 2, "up": 2, "size": 1, "other": 2}
    assert outcomes(second)["size"].cached_from == first.run_id
    assert second.reused == ["size"]
    assert repo.artifacts.get(second.run_id, "other").content["value"] == "oLLeH"


def test_a_new_plugin_version_reruns_its_steps(repo: Repository) -> None:
    run(repo, CHAIN)
    newer = make_plan(CHAIN, processors={**PROCESSORS, "transform": TransformV2})
    second = Executor(repo, newer).run()
    assert calls() == {"src": 2, "up": 2, "size": 2, "other": 2}
    assert second.reused == []


def test_use_cache_false_runs_every_step(repo: Repository) -> None:
    run(repo, CHAIN)
    second = run(repo, CHAIN, use_cache=False)
    assert calls() == {"src": 2, "up": 2, "size": 2, "other": 2}
    assert second.reused == []
    assert all(o.cached_from is None for o in outcomes(second).values())
    assert second.new_objects == 0  # same content: the objects already exist


def test_a_cacheable_source_is_reused(repo: Repository) -> None:
    cached = CHAIN.replace("type: fixed,", "type: fixed_cached,")
    first = run(repo, cached)
    second = run(repo, cached)
    assert calls() == {"src": 1, "up": 1, "size": 1, "other": 1}
    assert outcomes(second)["src"].cached_from == first.run_id
    assert sorted(second.reused) == ["other", "size", "src", "up"]


def test_failed_steps_are_not_memoized(repo: Repository) -> None:
    run(repo, FAILING)
    second = run(repo, FAILING)
    assert calls()["bad"] == 2
    assert outcomes(second)["bad"].status == "failed"


def test_a_corrupt_cached_object_is_not_reused(repo: Repository) -> None:
    first = run(repo, CHAIN)
    flip_a_byte(object_path(repo, first.run_id, "up"))
    second = run(repo, CHAIN)
    assert calls()["up"] == 2  # ran again instead of reusing the damaged object
    assert outcomes(second)["up"].cached_from is None
    assert outcomes(second)["size"].cached_from == first.run_id  # its input digest is the same
    assert second.result.status == "completed"


def test_rerunning_a_step_over_a_corrupt_cached_object_repairs_it(repo: Repository) -> None:
    first = run(repo, CHAIN)
    flip_a_byte(object_path(repo, first.run_id, "up"))
    second = run(repo, CHAIN)
    assert repo.artifacts.get(second.run_id, "up").content["value"] == "HELLO"
    assert repo.artifacts.get(first.run_id, "up").content["value"] == "HELLO"
    assert verify(repo).ok


def test_rerunning_without_the_cache_over_a_corrupt_object_repairs_it(repo: Repository) -> None:
    first = run(repo, CHAIN)
    flip_a_byte(object_path(repo, first.run_id, "up"))
    second = Executor(Repository.open(repo.url), make_plan(CHAIN), use_cache=False).run()
    assert repo.artifacts.get(second.run_id, "up").content["value"] == "HELLO"
    assert verify(repo).ok


def test_a_large_chunked_artifact_round_trips_and_is_reused(repo: Repository) -> None:
    big = CHAIN.replace("value: hello", "value: " + "hello-" * 60_000)  # ~360 KB: chunked
    first = run(repo, big)
    second = run(repo, big)
    assert repo.payloads.is_chunked(repo.artifacts.entry(first.run_id, "up").digest)
    assert repo.artifacts.get(first.run_id, "up").content["value"] == "HELLO-" * 60_000
    assert outcomes(second)["up"].cached_from == first.run_id
    assert second.new_objects == 0
    assert verify(repo).ok


# -- reuse by reference -----------------------------------------------------------


def reuse_runbook(from_run: str, artifact: str) -> str:
    return f"""
    name: reuse
    artifacts:
      copy:
        reuse: {{from_run: {from_run}, artifact: {artifact}}}
      after:
        inputs: [copy]
        process: {{type: transform, properties: {{op: reverse, tag: after}}}}
    """


def test_reuse_refers_to_the_earlier_digest_without_copying(repo: Repository) -> None:
    first = run(repo, CHAIN)
    second = run(repo, reuse_runbook(first.run_id, "up"))
    assert statuses(second) == {"copy": "completed", "after": "completed"}
    old = repo.artifacts.entry(first.run_id, "up")
    new = repo.artifacts.entry(second.run_id, "copy")
    assert new.digest == old.digest
    assert second.new_objects == 1  # only `after`'s output ("OLLEH") is new
    assert outcomes(second)["copy"].cached_from == first.run_id
    message = repo.artifacts.get(second.run_id, "copy")
    assert message.source == f"reuse:{first.run_id}/up"
    assert message.content == {"value": "HELLO"}
    assert repo.artifacts.get(second.run_id, "after").content == {"value": "OLLEH"}


def test_reuse_from_an_unknown_run_fails_that_step(repo: Repository) -> None:
    missing = new_run_id()
    report = run(repo, reuse_runbook(missing, "up"))
    copy = outcomes(report)["copy"]
    assert (copy.status, copy.error_type) == ("failed", "NotFoundError")
    assert missing in (copy.error_message or "")
    assert outcomes(report)["after"].reason == "input 'copy' failed"
    assert report.result.status == "failed"


def test_reuse_of_an_unknown_artifact_fails_that_step(repo: Repository) -> None:
    first = run(repo, CHAIN)
    report = run(repo, reuse_runbook(first.run_id, "nope"))
    copy = outcomes(report)["copy"]
    assert (copy.status, copy.error_type) == ("failed", "NotFoundError")
    assert copy.error_message == f"run {first.run_id!r} has no artifact 'nope'"


def test_reuse_from_latest_means_the_latest_earlier_run(repo: Repository) -> None:
    first = run(repo, CHAIN)
    report = run(repo, reuse_runbook("latest", "up"))
    assert outcomes(report)["copy"].status == "completed", outcomes(report)["copy"]
    assert outcomes(report)["copy"].cached_from == first.run_id


def test_reuse_of_a_corrupt_object_fails_the_step_not_the_executor(repo: Repository) -> None:
    first = run(repo, CHAIN)
    flip_a_byte(object_path(repo, first.run_id, "up"))
    report = run(repo, reuse_runbook(first.run_id, "up"))
    assert outcomes(report)["copy"].error_type == "IntegrityError"
    assert report.result.status == "failed"


# -- interruption and resume ------------------------------------------------------

FLAKY = """
name: flaky
artifacts:
  src:
    source: {type: fixed, properties: {value: hello, tag: src}}
  flaky:
    inputs: [src]
    process: {type: flaky, properties: {tag: flaky}}
  after:
    inputs: [flaky]
    process: {type: transform, properties: {op: upper, tag: after}}
  side:
    inputs: [src]
    process: {type: transform, properties: {op: reverse, tag: side}}
"""
FAILS: dict[str, type[Processor]] = {**PROCESSORS, "flaky": Fail}
WORKS: dict[str, type[Processor]] = {**PROCESSORS, "flaky": Transform}


def test_resume_reruns_only_the_failed_and_skipped_steps(repo: Repository) -> None:
    first = Executor(repo, make_plan(FLAKY, processors=FAILS)).run()
    assert statuses(first) == {
        "src": "completed",
        "flaky": "failed",
        "after": "skipped",
        "side": "completed",
    }
    resumed = Executor(repo, make_plan(FLAKY, processors=WORKS)).resume(first.run_id)
    assert resumed.run_id == first.run_id
    assert resumed.result.status == "completed"
    assert calls() == {"src": 1, "side": 1, "flaky": 2, "after": 1}
    assert outcomes(resumed)["src"] == outcomes(first)["src"]
    assert outcomes(resumed)["side"] == outcomes(first)["side"]
    assert repo.executions.get(first.run_id).status == "completed"
    assert repo.artifacts.get(first.run_id, "after").content == {"value": "HELLO"}
    assert resumed.result.started_at == first.result.started_at
    assert verify(repo).ok


def test_an_interrupt_leaves_a_readable_interrupted_run_that_resumes(repo: Repository) -> None:
    text = """
    name: interrupted
    artifacts:
      src:
        source: {type: fixed, properties: {value: hello, tag: src}}
      slow:
        inputs: [src]
        process: {type: sleep, properties: {seconds: 0.05, tag: slow}}
      after:
        inputs: [slow]
        process: {type: transform, properties: {tag: after}}
    """

    def on_event(event: str, artifact: str, _detail: str) -> None:
        if (event, artifact) == ("done", "src"):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, handled by the executor

    first = Executor(repo, make_plan(text), on_event=on_event).run()
    assert first.result.status == "interrupted"
    assert first.result.error == "interrupted by SIGINT"
    assert statuses(first) == {"src": "completed", "slow": "skipped", "after": "skipped"}
    assert outcomes(first)["slow"].reason == "interrupted by SIGINT"
    assert repo.artifacts.get(first.run_id, "src").content == {"value": "hello"}
    assert verify(repo).ok
    resumed = Executor(repo, make_plan(text)).resume(first.run_id)
    assert resumed.result.status == "completed"
    assert calls() == {"src": 1, "slow": 1, "after": 1}


def test_resuming_a_completed_run_changes_nothing(repo: Repository) -> None:
    first = run(repo, CHAIN)
    resumed = Executor(repo, make_plan(CHAIN)).resume(first.run_id)
    assert resumed.result.status == "completed"
    assert outcomes(resumed) == outcomes(first)
    assert calls() == {"src": 1, "up": 1, "size": 1, "other": 1}
    assert resumed.new_objects == 0


def test_a_run_owned_by_a_live_process_is_refused(repo: Repository) -> None:
    first = Executor(repo, make_plan(FLAKY, processors=FAILS)).run()
    record, child = owner_of_child(alive=True)
    try:
        write_owner(repo, first.run_id, record)
        executor = Executor(repo, make_plan(FLAKY, processors=WORKS))
        with pytest.raises(ConflictError, match=f"pid {record['pid']}"):
            executor.resume(first.run_id)
        with pytest.raises(ConflictError):
            executor.run(first.run_id)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    assert repo.executions.get(first.run_id) == first.result  # untouched
    assert "after" not in calls()


def test_an_executor_error_ends_the_run_failed_and_releases_it(repo: Repository) -> None:
    run_id = new_run_id()
    the_plan = make_plan(CHAIN)
    with pytest.raises(Crash):
        Executor(repo, the_plan, on_event=crash_when_starting("size")).run(run_id)
    result = repo.executions.get(run_id)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("executor failed: Crash")
    assert not repo.backend.exists(run_key(run_id, OWNER))


def test_a_run_whose_owner_died_can_be_resumed(repo: Repository) -> None:
    run_id = new_run_id()
    the_plan = make_plan(CHAIN)
    with pytest.raises(Crash):
        Executor(repo, the_plan, on_event=crash_when_starting("size")).run(run_id)
    running = repo.executions.get(run_id)
    # As a SIGKILL would leave it: the result still says running, a dead owner holds it.
    repo.executions.save(run_id, dataclasses.replace(running, status="running", error=None))
    record, _ = owner_of_child(alive=False)
    write_owner(repo, run_id, record)
    resumed = Executor(repo, the_plan).resume(run_id)
    assert resumed.result.status == "completed"
    for artifact_id, value in CHAIN_CONTENT.items():
        assert repo.artifacts.get(run_id, artifact_id).content["value"] == value
    assert not repo.backend.exists(run_key(run_id, OWNER))
    assert verify(repo).ok


def test_resume_after_a_crash_keeps_the_steps_saved_before_it(repo: Repository) -> None:
    run_id = new_run_id()
    the_plan = make_plan(CHAIN)
    with pytest.raises(Crash):
        Executor(repo, the_plan, on_event=crash_when_starting("size")).run(run_id)
    saved = set(repo.artifacts.entries(run_id))
    assert {"src", "up"} <= saved
    resumed = Executor(repo, the_plan).resume(run_id)
    assert resumed.result.status == "completed"
    assert {a: calls()[a] for a in saved} == dict.fromkeys(saved, 1)
    assert all(outcomes(resumed)[a].cached_from is None for a in saved)
