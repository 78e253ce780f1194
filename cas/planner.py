"""The planner: turns a parsed runbook into a checked DAG of steps in a fixed order.

Checks, in this order, each failing with a `PlanError` (a `RunbookError`, so the
message is ``file: field: problem``): every input names an artifact of the
runbook; the inputs form no cycle (the cycle is named in data-flow order); every
source and process names an installed plugin of the right kind; properties
match the plugin's ``properties_schema``; an input's producer declares an output
schema the consuming processor accepts (reused artifacts have no schema until
run time and are not checked). The planner never touches a repository.

The order is Kahn's algorithm with ties broken by runbook file order, so the
same runbook always plans to the same order.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from cas import plugins as registry
from cas.errors import InvalidInputError, NotFoundError
from cas.model import SchemaRef
from cas.plugins import Connector, PluginClass, Processor
from cas.runbook import ArtifactSpec, Runbook, RunbookError, join, suggest

_MAX_MESSAGE = 200


class PlanError(RunbookError):
    """A well-formed runbook cannot run: a cycle, an unknown plugin, bad properties."""


@dataclass(frozen=True)
class Step:
    """One artifact's step: its spec, plugin class (None for reuse) and graph position."""

    spec: ArtifactSpec
    plugin: PluginClass | None
    inputs: tuple[str, ...]
    dependents: tuple[str, ...]
    level: int

    @property
    def id(self) -> str:
        """The artifact id this step produces."""
        return self.spec.id


@dataclass(frozen=True)
class Plan:
    """A runbook's steps in topological order, with the graph queries the executor needs.

    `steps` must be in topological order (as `plan` builds it).
    """

    runbook: Runbook
    steps: dict[str, Step]
    _closures: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        closures: dict[str, frozenset[str]] = {}
        for artifact_id in reversed(self.steps):  # dependents come later, so are done first
            below: set[str] = set()
            for dependent in self.steps[artifact_id].dependents:
                below.add(dependent)
                below |= closures[dependent]
            closures[artifact_id] = frozenset(below)
        object.__setattr__(self, "_closures", closures)

    @property
    def order(self) -> list[str]:
        """Artifact ids in execution order."""
        return list(self.steps)

    @property
    def outputs(self) -> list[str]:
        """Artifact ids marked ``output: true``, in execution order."""
        return [a for a, step in self.steps.items() if step.spec.output]

    def dependents_closure(self, artifact_id: str) -> set[str]:
        """Every artifact downstream of `artifact_id` (not itself): what a failure skips."""
        try:
            return set(self._closures[artifact_id])
        except KeyError:
            raise NotFoundError(f"no artifact {artifact_id!r} in the plan") from None

    def ready(self, done: Set[str]) -> list[str]:
        """Steps not in `done` whose inputs all are, in execution order."""
        return [
            artifact_id
            for artifact_id, step in self.steps.items()
            if artifact_id not in done and all(i in done for i in step.inputs)
        ]


def plan(
    runbook: Runbook,
    connectors: Mapping[str, type[Connector]] | None = None,
    processors: Mapping[str, type[Processor]] | None = None,
) -> Plan:
    """Check `runbook` against the plugins and order its steps.

    `connectors` / `processors` map type names to plugin classes; None loads the
    installed ones from entry points (only when the runbook needs that kind).
    """
    _check_references(runbook)
    order = _topological_order(runbook)
    found = _resolve_plugins(runbook, connectors, processors)
    for spec in runbook.artifacts.values():
        _check_properties(runbook, spec, found[spec.id])
    _check_input_schemas(runbook, found)
    return _build(runbook, order, found)


def _fail(runbook: Runbook, path: str, problem: str) -> PlanError:
    return PlanError(runbook.source_name, path, problem)


def _check_references(runbook: Runbook) -> None:
    """Inputs name artifacts of the runbook (the parser checks too; a Runbook may be built)."""
    for spec in runbook.artifacts.values():
        for input_id in spec.inputs:
            if input_id not in runbook.artifacts:
                hint = suggest(input_id, runbook.artifacts)
                problem = f"unknown artifact {input_id!r}{hint}"
                raise _fail(runbook, f"artifacts.{spec.id}.inputs", problem)


def _dependents(runbook: Runbook) -> dict[str, list[str]]:
    """Each artifact's direct consumers, in file order."""
    dependents: dict[str, list[str]] = {artifact_id: [] for artifact_id in runbook.artifacts}
    for spec in runbook.artifacts.values():
        for input_id in dict.fromkeys(spec.inputs):
            dependents[input_id].append(spec.id)
    return dependents


def _topological_order(runbook: Runbook) -> list[str]:
    """Kahn's algorithm; among ready artifacts the earliest in the file goes first."""
    position = {artifact_id: i for i, artifact_id in enumerate(runbook.artifacts)}
    waiting = {a: len(set(spec.inputs)) for a, spec in runbook.artifacts.items()}
    dependents = _dependents(runbook)
    heap = [(position[a], a) for a, count in waiting.items() if count == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, artifact_id = heapq.heappop(heap)
        order.append(artifact_id)
        for dependent in dependents[artifact_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(heap, (position[dependent], dependent))
    if len(order) < len(runbook.artifacts):
        cycle = _find_cycle(runbook, set(runbook.artifacts) - set(order))
        raise _fail(runbook, "artifacts", f"cycle {' → '.join([*cycle, cycle[0]])}")
    return order


def _find_cycle(runbook: Runbook, stuck: set[str]) -> list[str]:
    """One cycle among `stuck`, in data-flow order, starting at its earliest artifact.

    Every stuck artifact has a stuck input, so walking inputs from any of them
    must revisit one; the revisited stretch is a cycle (in reverse flow order).
    """
    position = {artifact_id: i for i, artifact_id in enumerate(runbook.artifacts)}
    node = min(stuck, key=position.__getitem__)
    walked: dict[str, int] = {}
    while node not in walked:
        walked[node] = len(walked)
        node = next(i for i in runbook.artifacts[node].inputs if i in stuck)
    cycle = [a for a, step in walked.items() if step >= walked[node]][::-1]
    first = cycle.index(min(cycle, key=position.__getitem__))
    return cycle[first:] + cycle[:first]


def _resolve_plugins(
    runbook: Runbook,
    connectors: Mapping[str, type[Connector]] | None,
    processors: Mapping[str, type[Processor]] | None,
) -> dict[str, PluginClass | None]:
    """Each artifact's plugin class (None for reuse), loading installed ones if not given."""
    kinds = {spec.kind for spec in runbook.artifacts.values()}
    if connectors is None and "source" in kinds:
        connectors = registry.connectors()
    if processors is None and "process" in kinds:
        processors = registry.processors()
    found: dict[str, PluginClass | None] = {}
    for spec in runbook.artifacts.values():
        if spec.kind == "source":
            found[spec.id] = _lookup(runbook, spec, connectors or {}, Connector, "connector")
        elif spec.kind == "process":
            found[spec.id] = _lookup(runbook, spec, processors or {}, Processor, "processor")
        else:
            found[spec.id] = None
    return found


def _lookup(
    runbook: Runbook,
    spec: ArtifactSpec,
    installed: Mapping[str, Any],
    base: type[Connector] | type[Processor],
    what: str,
) -> Any:
    """The plugin class `spec.type` names among `installed`, which must subclass `base`."""
    path = f"artifacts.{spec.id}.{spec.kind}.type"
    plugin = installed.get(spec.type or "")
    if plugin is None:
        hint = suggest(spec.type, installed)
        if not hint:
            names = ", ".join(sorted(installed))
            hint = f" (installed: {names})" if names else f" (no {what}s installed)"
        raise _fail(runbook, path, f"unknown {what} {spec.type!r}{hint}")
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        problem = f"{spec.type!r} is registered as a {what} but {plugin!r} is not a {what} class"
        raise _fail(runbook, path, problem)
    return plugin


def _check_properties(runbook: Runbook, spec: ArtifactSpec, plugin: PluginClass | None) -> None:
    """The spec's properties match the plugin's ``properties_schema`` (JSON Schema)."""
    if plugin is None:
        return
    from cas.schemas import first_error  # imported here so `cas --help` stays fast

    path = f"artifacts.{spec.id}.{spec.kind}"
    try:
        validator = _validator(plugin)
    except InvalidInputError as error:
        message = str(error).split(": ", 1)[-1]
        problem = f"{spec.type!r} has an invalid properties_schema: {_short(message)}"
        raise _fail(runbook, f"{path}.type", problem) from None
    found = first_error(validator, spec.properties)
    if found is not None:
        where = f"{path}.properties"
        for part in found[0]:
            where = f"{where}[{part}]" if isinstance(part, int) else join(where, part)
        raise _fail(runbook, where, _short(found[1]))


@functools.lru_cache(maxsize=256)
def _validator(plugin: PluginClass) -> Any:
    """A checked validator for the plugin's properties_schema (checking the schema is slow)."""
    from cas.schemas import compile_schema

    return compile_schema(plugin.properties_schema, f"{plugin.type} properties")


def _check_input_schemas(runbook: Runbook, found: Mapping[str, PluginClass | None]) -> None:
    """Every input's declared output schema is one its consuming processor accepts."""
    for spec in runbook.artifacts.values():
        plugin = found[spec.id]
        accepted: tuple[SchemaRef, ...] = getattr(plugin, "input_schemas", ())
        if not accepted:
            continue
        for input_id in spec.inputs:
            producer = found[input_id]
            produced = getattr(producer, "output_schema", None)
            if producer is None or produced is None or produced in accepted:
                continue  # reuse (schema known only at run time) or undeclared: not checkable
            producer_spec = runbook.artifacts[input_id]
            problem = (
                f"input {input_id!r} produces {produced} "
                f"({producer_spec.kind} {producer_spec.type!r}), but processor {spec.type!r} "
                f"accepts {', '.join(str(ref) for ref in accepted)}"
            )
            raise _fail(runbook, f"artifacts.{spec.id}.inputs", problem)


def _build(runbook: Runbook, order: list[str], found: Mapping[str, PluginClass | None]) -> Plan:
    """The Plan: steps in `order`, each with its dependents (in order) and level."""
    position = {artifact_id: i for i, artifact_id in enumerate(order)}
    dependents = _dependents(runbook)
    levels: dict[str, int] = {}
    steps: dict[str, Step] = {}
    for artifact_id in order:
        spec = runbook.artifacts[artifact_id]
        levels[artifact_id] = 1 + max((levels[i] for i in spec.inputs), default=-1)
        steps[artifact_id] = Step(
            spec=spec,
            plugin=found[artifact_id],
            inputs=spec.inputs,
            dependents=tuple(sorted(dependents[artifact_id], key=position.__getitem__)),
            level=levels[artifact_id],
        )
    return Plan(runbook, steps)


def _short(text: str) -> str:
    """`text` on one line, cut to a readable length (jsonschema quotes whole instances)."""
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."
