"""Runbooks: the YAML file that names a run's artifacts and how each is produced.

A runbook is parsed into frozen dataclasses and checked for everything that can
be judged from the file alone: its shape, ids, config values and references
between its own artifacts. What needs the installed plugins (types, property
schemas, cycles, schema compatibility) is `cas.planner`'s job.

Every string value may use ``${VAR}`` or ``${VAR:-default}`` (the default also
applies when the variable is empty, as in the shell); ``$$`` is a literal ``$``
and any other ``$`` is kept as it is. Substitution happens after YAML parsing,
so a variable's value is always text and can never inject YAML structure.

Errors are `RunbookError`, one line: ``file: dotted.field.path: problem``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from cas.errors import InvalidIdError, InvalidInputError
from cas.ids import check_id

ArtifactKind = Literal["source", "process", "reuse"]
KINDS: tuple[ArtifactKind, ...] = ("source", "process", "reuse")
DEFAULT_MAX_CONCURRENCY = 4

_TOP_KEYS = ("name", "description", "config", "artifacts")
_CONFIG_KEYS = ("max_concurrency", "timeout", "step_timeout")
_ARTIFACT_KEYS = ("source", "inputs", "process", "reuse", "output")
_PLUGIN_KEYS = ("type", "properties")
_REUSE_KEYS = ("from_run", "artifact")
_EXACTLY_ONE = "give exactly one of source, process (with inputs) or reuse"

_SUBSTITUTION = re.compile(r"\$\$|\$\{([^}]*)(\})?")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_DIGITS = re.compile(r"\s*[0-9]+\s*")


class RunbookError(InvalidInputError):
    """A runbook is unreadable or invalid; the message names the file, field and problem."""

    def __init__(self, source_name: str, field_path: str, problem: str) -> None:
        where = f"{source_name}: {field_path}: " if field_path else f"{source_name}: "
        super().__init__(" ".join((where + problem).split()))
        self.source_name = source_name
        self.field_path = field_path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How a run executes: step concurrency and optional time limits in seconds."""

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout: float | None = None
    step_timeout: float | None = None


@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact as the runbook declares it; `kind` says which producer fields are set."""

    id: str
    kind: ArtifactKind
    type: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    output: bool = False
    reuse_run: str | None = None
    reuse_artifact: str | None = None


@dataclass(frozen=True)
class Runbook:
    """A parsed runbook; `artifacts` keeps file order and `text` the file as written."""

    name: str
    description: str | None
    config: RunConfig
    artifacts: dict[str, ArtifactSpec]
    path: str | None = None
    text: str = ""
    source_name: str = "<string>"


def load_runbook(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Runbook:
    """Read and parse the runbook file at `path` (errors name `path` as given)."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunbookError(name, "", "runbook file not found") from None
    except IsADirectoryError:
        raise RunbookError(name, "", "is a directory, not a runbook file") from None
    except UnicodeDecodeError as error:
        problem = f"not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        raise RunbookError(name, "", problem) from None
    except OSError as error:
        raise RunbookError(name, "", f"cannot read: {error.strerror or error}") from None
    return _Parser(name, env).parse(text, name)


def parse_runbook(
    text: str, source_name: str = "<string>", env: Mapping[str, str] | None = None
) -> Runbook:
    """Parse runbook `text`; `source_name` prefixes error messages, `env` defaults to os.environ."""
    return _Parser(source_name, env).parse(text, None)


def suggest(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``${VAR}``, ``${VAR:-default}`` and ``$$`` in `text`; ValueError names a fault."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        body, closed = match.group(1), match.group(2)
        if closed is None:
            raise ValueError(f"unterminated '${{{body}' (write $$ for a literal $)")
        variable = _VARIABLE.fullmatch(body)
        if variable is None:
            raise ValueError(
                f"invalid substitution '${{{body}}}': expected ${{NAME}} or ${{NAME:-default}}"
            )
        name, default = variable.group(1), variable.group(2)
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise ValueError(f"environment variable {name!r} is not set and has no default")
        return value

    return _SUBSTITUTION.sub(replace, text)


def describe(value: object) -> str:
    """A short rendering of a YAML value for error messages."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        shown = repr(value)
        return shown if len(shown) <= 60 else shown[:57] + "..."
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def join(path: str, key: object) -> str:
    """The dotted path of `key` under `path`."""
    return f"{path}.{key}" if path else str(key)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Parser:
    """Parses one runbook text; holds what every error message needs."""

    def __init__(self, source_name: str, env: Mapping[str, str] | None) -> None:
        self.source = source_name
        self.env: Mapping[str, str] = os.environ if env is None else env

    def fail(self, path: str, problem: str) -> NoReturn:
        raise RunbookError(self.source, path, problem)

    def parse(self, text: str, path: str | None) -> Runbook:
        data = self.mapping(self.substitute(self.load(text), ""), "", "the runbook")
        self.keys(data, "", _TOP_KEYS, required=("name", "artifacts"))
        return Runbook(
            name=self.identifier(data["name"], "name", "runbook name"),
            description=self.text(data.get("description"), "description"),
            config=self.config(data.get("config")),
            artifacts=self.artifacts(data["artifacts"]),
            path=path,
            text=text,
            source_name=self.source,
        )

    def load(self, text: str) -> Any:
        try:
            return yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = "" if mark is None else f"line {mark.line + 1}"
            problem = ": ".join(p for p in (error.context, error.problem) if p)
            self.fail(where, f"invalid YAML: {problem}{_yaml_hint(text, mark, problem)}")
        except yaml.YAMLError as error:
            self.fail("", f"invalid YAML: {error}")

    def substitute(self, value: Any, path: str) -> Any:
        """`value` with environment variables expanded in every string (not in keys)."""
        if isinstance(value, str):
            try:
                return expand(value, self.env)
            except ValueError as error:
                self.fail(path, str(error))
        if isinstance(value, dict):
            return {key: self.substitute(item, join(path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.substitute(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    # -- shape helpers ------------------------------------------------------

    def mapping(self, value: Any, path: str, what: str = "a mapping") -> dict[Any, Any]:
        if not isinstance(value, dict):
            expected = "a mapping" if what == "a mapping" else f"{what} to be a mapping"
            self.fail(path, f"expected {expected}, got {describe(value)}")
        return value

    def keys(
        self,
        data: dict[Any, Any],
        path: str,
        allowed: tuple[str, ...],
        required: Iterable[str] = (),
    ) -> None:
        for key in data:
            if key not in allowed:
                hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.fail(join(path, key), f"unknown key{hint}")
        for key in required:
            if key not in data:
                self.fail(path, f"missing required key {key!r}")

    def identifier(self, value: Any, path: str, kind: str) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.fail(path, f"expected {kind} as text, got the number {value!r} (quote it)")
        try:
            return check_id(value, kind)
        except InvalidIdError as error:
            self.fail(path, str(error))

    def text(self, value: Any, path: str) -> str | None:
        if value is not None and not isinstance(value, str):
            self.fail(path, f"expected text, got {describe(value)}")
        return value

    # -- config -------------------------------------------------------------

    def config(self, value: Any) -> RunConfig:
        if value is None:
            return RunConfig()
        data = self.mapping(value, "config")
        self.keys(data, "config", _CONFIG_KEYS)
        return RunConfig(
            max_concurrency=self.positive_int(
                data.get("max_concurrency"), "config.max_concurrency"
            ),
            timeout=self.seconds(data.get("timeout"), "config.timeout"),
            step_timeout=self.seconds(data.get("step_timeout"), "config.step_timeout"),
        )

    def positive_int(self, value: Any, path: str) -> int:
        if value is None:
            return DEFAULT_MAX_CONCURRENCY
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)  # from ${VAR} substitution, which always yields text
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(path, f"expected an integer ≥ 1, got {describe(value)}")
        return value

    def seconds(self, value: Any, path: str) -> float | None:
        if value is None:
            return None
        number = _number(value)
        if number is None or not math.isfinite(number) or number <= 0:
            self.fail(path, f"expected a number of seconds > 0, got {describe(value)}")
        return number

    # -- artifacts ----------------------------------------------------------

    def artifacts(self, value: Any) -> dict[str, ArtifactSpec]:
        data = self.mapping(value, "artifacts")
        if not data:
            self.fail("artifacts", "expected at least one artifact")
        specs: dict[str, ArtifactSpec] = {}
        for key, item in data.items():
            artifact_id = self.identifier(key, "artifacts", "artifact id")
            specs[artifact_id] = self.artifact(artifact_id, item)
        for spec in specs.values():
            for input_id in spec.inputs:
                if input_id not in specs:
                    hint = suggest(input_id, specs)
                    self.fail(f"artifacts.{spec.id}.inputs", f"unknown artifact {input_id!r}{hint}")
        return specs

    def artifact(self, artifact_id: str, value: Any) -> ArtifactSpec:
        path = f"artifacts.{artifact_id}"
        data = self.mapping(value, path)
        self.keys(data, path, _ARTIFACT_KEYS)
        kinds = [kind for kind in KINDS if kind in data]
        if len(kinds) != 1:
            self.fail(path, _EXACTLY_ONE)
        kind = kinds[0]
        output = data.get("output", False)
        if not isinstance(output, bool):
            self.fail(f"{path}.output", f"expected true or false, got {describe(output)}")
        inputs = self.inputs(data, path, kind)
        if kind == "reuse":
            run, artifact = self.reuse(data["reuse"], f"{path}.reuse")
            return ArtifactSpec(
                artifact_id, kind, output=output, reuse_run=run, reuse_artifact=artifact
            )
        plugin_type, properties = self.plugin(data[kind], f"{path}.{kind}")
        return ArtifactSpec(artifact_id, kind, plugin_type, properties, inputs, output)

    def plugin(self, value: Any, path: str) -> tuple[str, dict[str, Any]]:
        data = self.mapping(value, path)
        self.keys(data, path, _PLUGIN_KEYS, required=("type",))
        plugin_type = self.identifier(data["type"], f"{path}.type", "plugin type")
        properties = data.get("properties")
        if properties is None:
            return plugin_type, {}
        self.mapping(properties, f"{path}.properties")
        self.plain(properties, f"{path}.properties")
        return plugin_type, properties

    def plain(self, value: Any, path: str) -> None:
        """Refuse what JSON cannot hold: dates, sets, binary, non-string keys, NaN."""
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.fail(path, f"keys must be text, got {describe(key)}")
                self.plain(item, join(path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.plain(item, f"{path}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            self.fail(path, f"expected a finite number, got {describe(value)}")
        elif value is not None and not isinstance(value, str | int | float):
            self.fail(path, f"expected JSON data, got {describe(value)} (quote it to keep text)")

    def inputs(self, data: dict[Any, Any], path: str, kind: str) -> tuple[str, ...]:
        if kind != "process":
            if "inputs" in data:
                self.fail(f"{path}.inputs", f"only a process takes inputs, not a {kind}")
            return ()
        if "inputs" not in data:
            self.fail(path, "missing required key 'inputs' (a process reads artifacts)")
        value = data["inputs"]
        if not isinstance(value, list) or not value:
            self.fail(f"{path}.inputs", f"expected a list of artifact ids, got {describe(value)}")
        ids: list[str] = []
        for i, item in enumerate(value):
            input_id = self.identifier(item, f"{path}.inputs[{i}]", "artifact id")
            if input_id in ids:
                self.fail(f"{path}.inputs", f"{input_id!r} is listed twice")
            ids.append(input_id)
        return tuple(ids)

    def reuse(self, value: Any, path: str) -> tuple[str, str]:
        data = self.mapping(value, path)
        self.keys(data, path, _REUSE_KEYS, required=_REUSE_KEYS)
        run = self.identifier(data["from_run"], f"{path}.from_run", "run id")
        artifact = self.identifier(data["artifact"], f"{path}.artifact", "artifact id")
        return run, artifact


def _number(value: Any) -> float | None:
    """`value` as a float if it is a number or numeric text (from substitution), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _yaml_hint(text: str, mark: yaml.Mark | None, problem: str) -> str:
    """Why an unquoted ``${VAR}`` inside a ``{...}`` flow mapping breaks YAML, if it did."""
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or "'{'" not in problem:
        return ""
    if "${" not in lines[mark.line]:
        return ""
    return " (quote values that use ${...} inside {...})"
