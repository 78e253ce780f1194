"""The planner: order, graph queries and every plan-time error, against fake plugins."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cas import plugins
from cas.errors import NotFoundError
from cas.model import Message, SchemaRef
from cas.planner import Plan, PlanError, plan
from cas.plugins import Connector, Processor
from cas.runbook import ArtifactSpec, Runbook, RunbookError, RunConfig, parse_runbook

RAW = SchemaRef("raw_file", "1.0.0")
FINDING = SchemaRef("finding", "1.0.0")
SUMMARY = SchemaRef("summary", "1.0.0")


class FakeFiles(Connector):
    type = "filesystem"
    output_schema = RAW
    properties_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": False,
    }

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        return {}


class FakeFinder(Processor):
    type = "personal_data"
    output_schema = FINDING
    input_schemas = (RAW,)
    properties_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "threshold": {"type": "number"},
            "categories": {"type": "array", "items": {"enum": ["email", "phone"]}},
        },
    }

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        return {}


class FakeSummary(Processor):
    type = "summary"
    output_schema = SUMMARY
    input_schemas = (FINDING, SUMMARY)

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        return {}


class FakeMerge(Processor):
    type = "merge"
    output_schema = FINDING  # input_schemas left empty: accepts anything

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        return {}


class Undeclared(Connector):
    """A connector that declares no output schema: its consumers cannot be checked."""

    type = "undeclared"

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        return {}


CONNECTORS: dict[str, type[Connector]] = {"filesystem": FakeFiles, "undeclared": Undeclared}
PROCESSORS: dict[str, type[Processor]] = {
    "personal_data": FakeFinder,
    "summary": FakeSummary,
    "merge": FakeMerge,
}

EXAMPLE = """\
name: example-scan
artifacts:
  file_content:
    source: {type: filesystem, properties: {path: examples/data}}
  findings:
    inputs: [file_content]
    process: {type: personal_data, properties: {threshold: 0.5}}
    output: true
  old_findings:
    reuse: {from_run: 0193b2c4, artifact: findings}
  all_findings:
    inputs: [findings, old_findings]
    process: {type: merge}
  report:
    inputs: [all_findings]
    process: {type: summary}
    output: true
"""


def runbook_of(artifacts: str) -> Runbook:
    """A runbook named scan.yaml whose ``artifacts:`` section is `artifacts` (dedented)."""
    body = textwrap.indent(textwrap.dedent(artifacts), "  ")
    return parse_runbook(f"name: scan\nartifacts:\n{body}", "scan.yaml", env={})


def plan_of(artifacts: str) -> Plan:
    return plan(runbook_of(artifacts), CONNECTORS, PROCESSORS)


def error_of(artifacts: str) -> str:
    with pytest.raises(PlanError) as caught:
        plan_of(artifacts)
    return str(caught.value)


# -- the plan ----------------------------------------------------------------


def test_example_plans() -> None:
    result = plan(parse_runbook(EXAMPLE, "scan.yaml", env={}), CONNECTORS, PROCESSORS)
    assert result.order == ["file_content", "findings", "old_findings", "all_findings", "report"]
    steps = result.steps
    assert steps["file_content"].plugin is FakeFiles
    assert steps["findings"].plugin is FakeFinder
    assert steps["old_findings"].plugin is None
    assert steps["all_findings"].inputs == ("findings", "old_findings")
    assert steps["file_content"].dependents == ("findings",)
    assert steps["findings"].dependents == ("all_findings",)
    assert {a: s.level for a, s in steps.items()} == {
        "file_content": 0,
        "findings": 1,
        "old_findings": 0,
        "all_findings": 2,
        "report": 3,
    }
    assert steps["report"].id == "report"
    assert steps["report"].spec.type == "summary"
    assert result.outputs == ["findings", "report"]
    assert result.runbook.config == RunConfig()


def test_order_is_kahn_with_ties_broken_by_file_order() -> None:
    result = plan_of("""\
        report: {inputs: [x, y], process: {type: merge}}
        y: {source: {type: filesystem, properties: {path: y}}}
        x: {source: {type: filesystem, properties: {path: x}}}
        z: {inputs: [y], process: {type: merge}}
        """)
    # y and x are ready first (y earlier in the file); then report (earliest) beats z.
    assert result.order == ["y", "x", "report", "z"]
    assert result.steps["y"].dependents == ("report", "z")


def test_order_is_the_same_every_time() -> None:
    text = """\
        d: {inputs: [b, c], process: {type: merge}}
        c: {inputs: [a], process: {type: merge}}
        b: {inputs: [a], process: {type: merge}}
        a: {source: {type: filesystem, properties: {path: p}}}
        """
    orders = {tuple(plan_of(text).order) for _ in range(5)}
    assert orders == {("a", "c", "b", "d")}


DIAMOND = """\
    a: {source: {type: filesystem, properties: {path: p}}}
    b: {inputs: [a], process: {type: merge}}
    c: {inputs: [a], process: {type: merge}}
    d: {inputs: [b, c], process: {type: merge}}
    e: {inputs: [d], process: {type: merge}}
    lone: {source: {type: filesystem, properties: {path: q}}}
    """


def test_dependents_closure() -> None:
    result = plan_of(DIAMOND)
    assert result.dependents_closure("a") == {"b", "c", "d", "e"}
    assert result.dependents_closure("b") == {"d", "e"}
    assert result.dependents_closure("e") == set()
    assert result.dependents_closure("lone") == set()
    result.dependents_closure("a").add("x")  # a copy: the plan is unchanged
    assert result.dependents_closure("a") == {"b", "c", "d", "e"}


def test_dependents_closure_of_an_unknown_artifact() -> None:
    with pytest.raises(NotFoundError) as caught:
        plan_of(DIAMOND).dependents_closure("nope")
    assert str(caught.value) == "no artifact 'nope' in the plan"


def test_ready() -> None:
    result = plan_of(DIAMOND)
    assert result.ready(set()) == ["a", "lone"]
    assert result.ready({"a"}) == ["b", "c", "lone"]
    assert result.ready({"a", "b"}) == ["c", "lone"]
    assert result.ready({"a", "b", "c", "lone"}) == ["d"]
    assert result.ready(set(result.order)) == []


# -- cycles ------------------------------------------------------------------


def test_self_loop() -> None:
    assert error_of("a: {inputs: [a], process: {type: merge}}") == (
        "scan.yaml: artifacts: cycle a → a"
    )


def test_two_cycle() -> None:
    text = """\
        a: {inputs: [b], process: {type: merge}}
        b: {inputs: [a], process: {type: merge}}
        """
    assert error_of(text) == "scan.yaml: artifacts: cycle a → b → a"


def test_three_cycle_named_in_data_flow_order() -> None:
    text = """\
        a: {inputs: [c], process: {type: merge}}
        b: {inputs: [a], process: {type: merge}}
        c: {inputs: [b], process: {type: merge}}
        """
    assert error_of(text) == "scan.yaml: artifacts: cycle a → b → c → a"


def test_cycle_behind_a_downstream_artifact_starts_at_its_earliest_member() -> None:
    text = """\
        out: {inputs: [z, src], process: {type: merge}}
        src: {source: {type: filesystem, properties: {path: p}}}
        z: {inputs: [y, src], process: {type: merge}}
        x: {inputs: [z], process: {type: merge}}
        y: {inputs: [x], process: {type: merge}}
        """
    assert error_of(text) == "scan.yaml: artifacts: cycle z → x → y → z"


# -- plugins and properties --------------------------------------------------


def test_unknown_connector_with_did_you_mean() -> None:
    assert error_of("a: {source: {type: filesytem}}") == (
        "scan.yaml: artifacts.a.source.type: unknown connector 'filesytem' "
        "(did you mean 'filesystem'?)"
    )


def test_unknown_processor_lists_the_installed_ones() -> None:
    text = """\
        a: {source: {type: filesystem, properties: {path: p}}}
        b: {inputs: [a], process: {type: ocr}}
        """
    assert error_of(text) == (
        "scan.yaml: artifacts.b.process.type: unknown processor 'ocr' "
        "(installed: merge, personal_data, summary)"
    )


def test_unknown_processor_when_none_are_installed() -> None:
    runbook = runbook_of("""\
        a: {source: {type: filesystem, properties: {path: p}}}
        b: {inputs: [a], process: {type: merge}}
        """)
    with pytest.raises(PlanError) as caught:
        plan(runbook, CONNECTORS, {})
    assert str(caught.value) == (
        "scan.yaml: artifacts.b.process.type: unknown processor 'merge' (no processors installed)"
    )


def test_a_plugin_of_the_wrong_kind_is_refused() -> None:
    runbook = runbook_of("a: {source: {type: merge}}")
    with pytest.raises(PlanError) as caught:
        plan(runbook, {"merge": FakeMerge}, PROCESSORS)  # type: ignore[dict-item]
    assert str(caught.value) == (
        "scan.yaml: artifacts.a.source.type: 'merge' is registered as a connector "
        f"but {FakeMerge!r} is not a connector class"
    )


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ("{}", "artifacts.a.source.properties: 'path' is a required property"),
        ("{path: 3}", "artifacts.a.source.properties.path: 3 is not of type 'string'"),
        (
            "{path: p, deep: true}",
            "artifacts.a.source.properties: Additional properties are not allowed "
            "('deep' was unexpected)",
        ),
    ],
)
def test_connector_properties_must_match_the_schema(properties: str, message: str) -> None:
    assert error_of(f"a: {{source: {{type: filesystem, properties: {properties}}}}}") == (
        f"scan.yaml: {message}"
    )


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (
            "{threshold: high}",
            "artifacts.b.process.properties.threshold: 'high' is not of type 'number'",
        ),
        (
            "{categories: [email, fax]}",
            "artifacts.b.process.properties.categories[1]: 'fax' is not one of ['email', 'phone']",
        ),
    ],
)
def test_processor_properties_must_match_the_schema(properties: str, message: str) -> None:
    text = f"""\
        a: {{source: {{type: filesystem, properties: {{path: p}}}}}}
        b: {{inputs: [a], process: {{type: personal_data, properties: {properties}}}}}
        """
    assert error_of(text) == f"scan.yaml: {message}"


def test_an_invalid_properties_schema_is_blamed_on_the_plugin() -> None:
    class Broken(Connector):
        type = "broken"
        output_schema = RAW
        properties_schema: ClassVar[dict[str, Any]] = {"type": "no-such-type"}

        def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
            return {}

    with pytest.raises(PlanError) as caught:
        plan(runbook_of("a: {source: {type: broken}}"), {"broken": Broken}, {})
    assert str(caught.value).startswith(
        "scan.yaml: artifacts.a.source.type: 'broken' has an invalid properties_schema: "
    )


# -- input schemas -----------------------------------------------------------


def test_input_schema_mismatch_names_both_sides() -> None:
    text = """\
        file_content: {source: {type: filesystem, properties: {path: p}}}
        report: {inputs: [file_content], process: {type: summary}}
        """
    assert error_of(text) == (
        "scan.yaml: artifacts.report.inputs: input 'file_content' produces raw_file/1.0.0 "
        "(source 'filesystem'), but processor 'summary' accepts finding/1.0.0, summary/1.0.0"
    )


def test_input_schema_mismatch_between_processors() -> None:
    text = """\
        a: {source: {type: filesystem, properties: {path: p}}}
        b: {inputs: [a], process: {type: personal_data}}
        c: {inputs: [b], process: {type: summary}}
        d: {inputs: [c], process: {type: personal_data}}
        """
    assert error_of(text) == (
        "scan.yaml: artifacts.d.inputs: input 'c' produces summary/1.0.0 "
        "(process 'summary'), but processor 'personal_data' accepts raw_file/1.0.0"
    )


def test_unknown_schemas_are_not_checked() -> None:
    result = plan_of("""\
        old: {reuse: {from_run: latest, artifact: findings}}
        raw: {source: {type: undeclared}}
        a: {inputs: [old], process: {type: summary}}
        b: {inputs: [raw], process: {type: personal_data}}
        c: {inputs: [old, raw], process: {type: merge}}
        """)
    assert result.order == ["old", "raw", "a", "b", "c"]


# -- loading plugins and defensive checks ------------------------------------


def test_plugins_load_from_entry_points_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "connectors", lambda: CONNECTORS)
    monkeypatch.setattr(plugins, "processors", lambda: PROCESSORS)
    result = plan(parse_runbook(EXAMPLE, "scan.yaml", env={}))
    assert result.steps["report"].plugin is FakeSummary


def test_plugins_are_loaded_only_for_kinds_the_runbook_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> dict[str, Any]:
        raise AssertionError("no plugins should be loaded")

    monkeypatch.setattr(plugins, "connectors", refuse)
    monkeypatch.setattr(plugins, "processors", refuse)
    result = plan(runbook_of("a: {reuse: {from_run: latest, artifact: x}}"))
    assert result.order == ["a"]


def test_a_hand_built_runbook_with_an_unknown_input_is_refused() -> None:
    specs = {"b": ArtifactSpec("b", "process", "merge", {}, ("a",))}
    runbook = Runbook("scan", None, RunConfig(), specs, source_name="scan.yaml")
    with pytest.raises(PlanError) as caught:
        plan(runbook, CONNECTORS, PROCESSORS)
    assert str(caught.value) == "scan.yaml: artifacts.b.inputs: unknown artifact 'a'"


def test_plan_error_is_a_runbook_error() -> None:
    assert issubclass(PlanError, RunbookError)


# -- property: random DAGs ---------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """Ids in file order and each id's inputs; acyclic as inputs only name earlier-made ids."""
    count = draw(st.integers(min_value=1, max_value=14))
    made = [f"n{i}" for i in range(count)]
    edges = {
        name: draw(st.lists(st.sampled_from(made[:i]), unique=True, max_size=4)) if i else []
        for i, name in enumerate(made)
    }
    file_order = draw(st.permutations(made))
    return list(file_order), edges


def _runbook_text(file_order: list[str], edges: dict[str, list[str]]) -> str:
    artifacts: dict[str, Any] = {}
    for name in file_order:
        if edges[name]:
            artifacts[name] = {"inputs": edges[name], "process": {"type": "merge"}}
        else:
            artifacts[name] = {"source": {"type": "filesystem", "properties": {"path": name}}}
    return yaml.safe_dump({"name": "random", "artifacts": artifacts}, sort_keys=False)


def _downstream(edges: dict[str, list[str]], start: str) -> set[str]:
    found: set[str] = set()
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for name, inputs in edges.items():
            if node in inputs and name not in found:
                found.add(name)
                frontier.append(name)
    return found


@settings(max_examples=200, deadline=None)
@given(dags())
def test_random_dags_always_plan_and_respect_every_edge(
    dag: tuple[list[str], dict[str, list[str]]],
) -> None:
    file_order, edges = dag
    text = _runbook_text(file_order, edges)
    result = plan(parse_runbook(text, env={}), CONNECTORS, PROCESSORS)
    position = {name: i for i, name in enumerate(result.order)}
    assert sorted(result.order) == sorted(file_order)
    for name, inputs in edges.items():
        step = result.steps[name]
        assert all(position[i] < position[name] for i in inputs)
        assert step.level == 1 + max((result.steps[i].level for i in inputs), default=-1)
        assert result.dependents_closure(name) == _downstream(edges, name)
    assert result.ready(set()) == [n for n in result.order if not edges[n]]
    assert plan(parse_runbook(text, env={}), CONNECTORS, PROCESSORS).order == result.order
