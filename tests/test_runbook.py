"""Runbook parsing: shape, ids, config, substitution, and every error message exactly."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from cas.errors import InvalidInputError
from cas.ids import ID_RULE
from cas.runbook import (
    ArtifactSpec,
    RunbookError,
    RunConfig,
    expand,
    load_runbook,
    parse_runbook,
)

EXAMPLE = """\
name: example-scan
description: Scan the example data for personal data
config:
  max_concurrency: 4
artifacts:
  file_content:
    source: {type: filesystem, properties: {path: "${CAS_EXAMPLE_DATA:-examples/data}"}}
  findings:
    inputs: [file_content]
    process: {type: personal_data, properties: {categories: [email, phone]}}
    output: true
  old_findings:
    reuse: {from_run: 0193b2c4-7d1e-7000-8000-000000000000, artifact: findings}
"""

MINIMAL = "name: scan\nartifacts:\n  a:\n    source: {type: fs}\n"


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    """The message `parse_runbook` raises for `text` (dedented), as if read from scan.yaml."""
    with pytest.raises(RunbookError) as caught:
        parse_runbook(textwrap.dedent(text), "scan.yaml", env or {})
    return str(caught.value)


def artifacts_error(body: str, env: dict[str, str] | None = None) -> str:
    """The message for a runbook whose ``artifacts:`` section is `body` (dedented)."""
    indented = textwrap.indent(textwrap.dedent(body), "  ")
    return error_of(f"name: scan\nartifacts:\n{indented}", env)


# -- the happy path ----------------------------------------------------------


def test_example_runbook_parses_into_frozen_dataclasses() -> None:
    runbook = parse_runbook(EXAMPLE, "scan.yaml", env={})
    assert runbook.name == "example-scan"
    assert runbook.description == "Scan the example data for personal data"
    assert runbook.config == RunConfig(max_concurrency=4, timeout=None, step_timeout=None)
    assert list(runbook.artifacts) == ["file_content", "findings", "old_findings"]
    assert runbook.artifacts["file_content"] == ArtifactSpec(
        "file_content", "source", "filesystem", {"path": "examples/data"}
    )
    assert runbook.artifacts["findings"] == ArtifactSpec(
        id="findings",
        kind="process",
        type="personal_data",
        properties={"categories": ["email", "phone"]},
        inputs=("file_content",),
        output=True,
    )
    assert runbook.artifacts["old_findings"] == ArtifactSpec(
        "old_findings",
        "reuse",
        reuse_run="0193b2c4-7d1e-7000-8000-000000000000",
        reuse_artifact="findings",
    )
    assert runbook.text == EXAMPLE
    assert runbook.path is None
    assert runbook.source_name == "scan.yaml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        runbook.name = "other"  # type: ignore[misc]


def test_defaults() -> None:
    runbook = parse_runbook(MINIMAL, env={})
    assert runbook.description is None
    assert runbook.config == RunConfig(4, None, None)
    assert runbook.artifacts["a"] == ArtifactSpec("a", "source", "fs", {}, (), False, None, None)
    assert runbook.source_name == "<string>"


def test_config_values() -> None:
    runbook = parse_runbook(
        "name: s\nconfig: {max_concurrency: 2, timeout: 90, step_timeout: 1.5}\n"
        "artifacts: {a: {source: {type: fs}}}\n",
        env={},
    )
    assert runbook.config == RunConfig(2, 90.0, 1.5)


def test_inputs_may_point_forward_in_the_file() -> None:
    runbook = parse_runbook(
        "name: s\nartifacts:\n  b: {inputs: [a], process: {type: p}}\n  a: {source: {type: fs}}\n",
        env={},
    )
    assert runbook.artifacts["b"].inputs == ("a",)


def test_load_runbook_keeps_path_and_text(tmp_path: Path) -> None:
    path = tmp_path / "scan.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    runbook = load_runbook(path, env={"CAS_EXAMPLE_DATA": "/data"})
    assert runbook.path == str(path)
    assert runbook.source_name == str(path)
    assert runbook.text == EXAMPLE
    assert runbook.artifacts["file_content"].properties == {"path": "/data"}


def test_runbook_error_is_an_invalid_input_error() -> None:
    assert issubclass(RunbookError, InvalidInputError)
    assert issubclass(RunbookError, ValueError)


# -- ${VAR} substitution -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A}", {"A": ""}, ""),
        ("${A:-}", {}, ""),
        ("${A:-a/b:c-d}", {}, "a/b:c-d"),
        ("$$", {}, "$"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost $5 and $HOME", {}, "cost $5 and $HOME"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A}", {"A": "${B}"}, "${B}"),
    ],
)
def test_expand(text: str, env: dict[str, str], expected: str) -> None:
    assert expand(text, env) == expected


def test_substitution_applies_to_every_string_value_but_not_keys() -> None:
    runbook = parse_runbook(
        """\
name: scan-${ENV}
description: ${DESC:-none}
config: {max_concurrency: "${N}", timeout: "${T:-2.5}"}
artifacts:
  a:
    source:
      type: ${KIND}
      properties:
        ${KEY}: [x, "${ITEM}", 3, {deep: "${ITEM}"}]
""",
        "scan.yaml",
        env={"ENV": "prod", "N": "8", "KIND": "fs", "ITEM": "val", "KEY": "nope"},
    )
    assert runbook.name == "scan-prod"
    assert runbook.description == "none"
    assert runbook.config == RunConfig(8, 2.5, None)
    assert runbook.artifacts["a"].type == "fs"
    assert runbook.artifacts["a"].properties == {"${KEY}": ["x", "val", 3, {"deep": "val"}]}


def test_substitution_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAS_EXAMPLE_DATA", "/from/env")
    runbook = parse_runbook(EXAMPLE)
    assert runbook.artifacts["file_content"].properties == {"path": "/from/env"}


def test_unset_variable_without_default_is_named() -> None:
    text = "name: s\nartifacts:\n  a: {source: {type: fs, properties: {path: '${CAS_DATA}'}}}\n"
    assert error_of(text) == (
        "scan.yaml: artifacts.a.source.properties.path: "
        "environment variable 'CAS_DATA' is not set and has no default"
    )


def test_unset_variable_inside_a_list_names_the_index() -> None:
    text = "name: s\nartifacts:\n  a: {source: {type: fs, properties: {paths: [x, '${P}']}}}\n"
    assert error_of(text) == (
        "scan.yaml: artifacts.a.source.properties.paths[1]: "
        "environment variable 'P' is not set and has no default"
    )


def test_unterminated_substitution() -> None:
    assert error_of("name: '${NAME'\nartifacts: {}\n") == (
        "scan.yaml: name: unterminated '${NAME' (write $$ for a literal $)"
    )


def test_invalid_substitution() -> None:
    assert error_of("name: '${1X}'\nartifacts: {}\n") == (
        "scan.yaml: name: invalid substitution '${1X}': expected ${NAME} or ${NAME:-default}"
    )


# -- file and YAML errors ----------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RunbookError) as caught:
        load_runbook(path)
    assert str(caught.value) == f"{path}: runbook file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(RunbookError) as caught:
        load_runbook(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a runbook file"


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "scan.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(RunbookError) as caught:
        load_runbook(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 0xff at offset 6)"


def test_invalid_yaml_names_the_line() -> None:
    assert error_of("name: scan\nartifacts:\n  a: [b\n") == (
        "scan.yaml: line 4: invalid YAML: while parsing a flow sequence: "
        "expected ',' or ']', but got '<stream end>'"
    )


def test_unquoted_substitution_in_a_flow_mapping_gets_a_hint() -> None:
    text = "name: s\nartifacts:\n  a: {source: {type: fs, properties: {path: ${X:-y}}}}\n"
    assert error_of(text) == (
        "scan.yaml: line 3: invalid YAML: while parsing a flow mapping: "
        "expected ',' or '}', but got '{' (quote values that use ${...} inside {...})"
    )


def test_duplicate_keys_are_refused() -> None:
    text = "name: s\nartifacts:\n  a: {source: {type: fs}}\n  a: {source: {type: fs}}\n"
    assert error_of(text) == "scan.yaml: line 4: invalid YAML: duplicate key 'a'"


def test_merge_keys_may_be_overridden() -> None:
    text = (
        "name: s\nartifacts:\n  a: {source: &src {type: fs, properties: {x: 1}}}\n"
        "  b: {source: {<<: *src, type: other}}\n"
    )
    runbook = parse_runbook(text, env={})
    assert runbook.artifacts["b"].type == "other"
    assert runbook.artifacts["b"].properties == {"x": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "scan.yaml: expected the runbook to be a mapping, got nothing"),
        ("- a\n", "scan.yaml: expected the runbook to be a mapping, got a list"),
        ("just text\n", "scan.yaml: expected the runbook to be a mapping, got 'just text'"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, message: str) -> None:
    assert error_of(text) == message


# -- top level and config ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("artifacts: {}\n", "scan.yaml: missing required key 'name'"),
        ("name: s\n", "scan.yaml: missing required key 'artifacts'"),
        (
            "nmae: s\nartifacts: {}\n",
            "scan.yaml: nmae: unknown key (did you mean 'name'?)",
        ),
        (
            "name: s\nversion: 2\nartifacts: {}\n",
            "scan.yaml: version: unknown key "
            "(expected one of: name, description, config, artifacts)",
        ),
        (
            "name: my scan\nartifacts: {}\n",
            f"scan.yaml: name: invalid runbook name 'my scan': expected {ID_RULE}",
        ),
        (
            "name: 2024\nartifacts: {}\n",
            ("scan.yaml: name: expected runbook name as text, got the number 2024 (quote it)"),
        ),
        (
            "name: s\ndescription: [a]\nartifacts: {}\n",
            "scan.yaml: description: expected text, got a list",
        ),
    ],
)
def test_top_level_errors(text: str, message: str) -> None:
    assert error_of(text) == message


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("max_concurrency: four", "config.max_concurrency: expected an integer ≥ 1, got 'four'"),
        ("max_concurrency: 0", "config.max_concurrency: expected an integer ≥ 1, got 0"),
        ("max_concurrency: true", "config.max_concurrency: expected an integer ≥ 1, got true"),
        ("max_concurrency: 1.5", "config.max_concurrency: expected an integer ≥ 1, got 1.5"),
        ("timeout: -1", "config.timeout: expected a number of seconds > 0, got -1"),
        ("timeout: soon", "config.timeout: expected a number of seconds > 0, got 'soon'"),
        ("step_timeout: .inf", "config.step_timeout: expected a number of seconds > 0, got inf"),
        (
            "max_concurency: 2",
            "config.max_concurency: unknown key (did you mean 'max_concurrency'?)",
        ),
    ],
)
def test_config_errors(config: str, message: str) -> None:
    text = f"name: s\nconfig: {{{config}}}\nartifacts: {{a: {{source: {{type: fs}}}}}}\n"
    assert error_of(text) == f"scan.yaml: {message}"


def test_config_must_be_a_mapping() -> None:
    assert error_of("name: s\nconfig: 4\nartifacts: {}\n") == (
        "scan.yaml: config: expected a mapping, got 4"
    )


# -- artifacts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{}", "artifacts: expected at least one artifact"),
        ("[a, b]", "artifacts: expected a mapping, got a list"),
    ],
)
def test_artifacts_section_errors(body: str, message: str) -> None:
    assert error_of(f"name: s\nartifacts: {body}\n") == f"scan.yaml: {message}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "bad id: {source: {type: fs}}",
            f"artifacts: invalid artifact id 'bad id': expected {ID_RULE}",
        ),
        ("a:", "artifacts.a: expected a mapping, got nothing"),
        (
            "a: {output: true}",
            "artifacts.a: give exactly one of source, process (with inputs) or reuse",
        ),
        (
            "a: {source: {type: fs}, reuse: {from_run: r, artifact: x}}",
            "artifacts.a: give exactly one of source, process (with inputs) or reuse",
        ),
        (
            "a: {inputs: [a]}",
            "artifacts.a: give exactly one of source, process (with inputs) or reuse",
        ),
        (
            "a: {source: {type: fs}, proces: {type: p}}",
            "artifacts.a.proces: unknown key (did you mean 'process'?)",
        ),
        (
            "a: {source: {type: fs}, output: yes please}",
            "artifacts.a.output: expected true or false, got 'yes please'",
        ),
        (
            "a: {source: {type: fs}, inputs: [a]}",
            "artifacts.a.inputs: only a process takes inputs, not a source",
        ),
        (
            "a: {reuse: {from_run: r, artifact: x}, inputs: [a]}",
            "artifacts.a.inputs: only a process takes inputs, not a reuse",
        ),
        (
            "a: {process: {type: p}}",
            "artifacts.a: missing required key 'inputs' (a process reads artifacts)",
        ),
        (
            "a: {inputs: a, process: {type: p}}",
            "artifacts.a.inputs: expected a list of artifact ids, got 'a'",
        ),
        (
            "a: {inputs: [], process: {type: p}}",
            "artifacts.a.inputs: expected a list of artifact ids, got an empty list",
        ),
        (
            "a: {inputs: [a, a], process: {type: p}}",
            "artifacts.a.inputs: 'a' is listed twice",
        ),
        (
            "a: {inputs: [a, 'x/y'], process: {type: p}}",
            f"artifacts.a.inputs[1]: invalid artifact id 'x/y': expected {ID_RULE}",
        ),
        ("a: {source: {}}", "artifacts.a.source: missing required key 'type'"),
        ("a: {source: fs}", "artifacts.a.source: expected a mapping, got 'fs'"),
        (
            "a: {source: {type: fs, propertes: {}}}",
            "artifacts.a.source.propertes: unknown key (did you mean 'properties'?)",
        ),
        (
            "a: {source: {type: 'file system'}}",
            f"artifacts.a.source.type: invalid plugin type 'file system': expected {ID_RULE}",
        ),
        (
            "a: {source: {type: fs, properties: [x]}}",
            "artifacts.a.source.properties: expected a mapping, got a list",
        ),
        (
            "a: {source: {type: fs, properties: {since: 2024-01-01}}}",
            "artifacts.a.source.properties.since: expected JSON data, got a date "
            "(quote it to keep text)",
        ),
        (
            "a: {source: {type: fs, properties: {limits: {1: x}}}}",
            "artifacts.a.source.properties.limits: keys must be text, got 1",
        ),
        (
            "a: {source: {type: fs, properties: {xs: [1, .nan]}}}",
            "artifacts.a.source.properties.xs[1]: expected a finite number, got nan",
        ),
        ("a: {reuse: {artifact: x}}", "artifacts.a.reuse: missing required key 'from_run'"),
        (
            "a: {reuse: {from_run: 0123, artifact: x}}",
            "artifacts.a.reuse.from_run: expected run id as text, got the number 83 (quote it)",
        ),
        (
            "a: {reuse: {from_run: r, artifact: x, run: y}}",
            "artifacts.a.reuse.run: unknown key (expected one of: from_run, artifact)",
        ),
    ],
)
def test_artifact_errors(body: str, message: str) -> None:
    assert artifacts_error(body) == f"scan.yaml: {message}"


def test_unknown_input_with_did_you_mean() -> None:
    body = """\
    file_content: {source: {type: filesystem}}
    findings: {inputs: [file_contnet], process: {type: personal_data}}
    """
    assert artifacts_error(body) == (
        "scan.yaml: artifacts.findings.inputs: unknown artifact 'file_contnet' "
        "(did you mean 'file_content'?)"
    )


def test_unknown_input_without_a_close_match() -> None:
    body = "a: {source: {type: fs}}\nb: {inputs: [a, zzz], process: {type: p}}\n"
    assert artifacts_error(body) == "scan.yaml: artifacts.b.inputs: unknown artifact 'zzz'"


def test_self_reference_is_left_to_the_planner() -> None:
    runbook = parse_runbook("name: s\nartifacts: {a: {inputs: [a], process: {type: p}}}\n")
    assert runbook.artifacts["a"].inputs == ("a",)


def test_error_attributes() -> None:
    with pytest.raises(RunbookError) as caught:
        parse_runbook("name: s\nconfig: {timeout: 0}\nartifacts: {}\n", "scan.yaml", {})
    assert caught.value.source_name == "scan.yaml"
    assert caught.value.field_path == "config.timeout"
    assert caught.value.problem == "expected a number of seconds > 0, got 0"
