"""Connectors and processors: the steps a runbook names, found through entry points.

A *connector* (a runbook ``source``) reads the outside world into one message's
content; a *processor* turns its input messages into new content. Both declare
a type name, a version (part of the memoization key: bump it when output
changes), their output schema and a JSON Schema for their properties. A
processor may declare the input schemas it accepts, which the planner checks.

User packages add plugins through the entry-point groups ``cas.connectors`` and
``cas.processors`` (name → ``module:Class``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence, Set
from importlib.metadata import entry_points
from typing import Any, ClassVar

from cas.errors import InvalidInputError
from cas.model import Message, SchemaRef

CONNECTOR_GROUP = "cas.connectors"
PROCESSOR_GROUP = "cas.processors"


class Connector(ABC):
    """Reads data from outside into one message's content."""

    type: ClassVar[str]
    version: ClassVar[str] = "1"
    output_schema: ClassVar[SchemaRef]
    properties_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    cacheable: ClassVar[bool] = False  # sources always run unless they say otherwise

    @abstractmethod
    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        """Produce the content (a JSON object) of the source's message."""


class Processor(ABC):
    """Turns input messages into one new message's content."""

    type: ClassVar[str]
    version: ClassVar[str] = "1"
    output_schema: ClassVar[SchemaRef]
    properties_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    input_schemas: ClassVar[tuple[SchemaRef, ...]] = ()  # empty: accepts any input

    @abstractmethod
    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        """Produce the content (a JSON object) from the inputs, in the runbook's order."""


class ItemProcessor(Processor):
    """A processor whose output combines independent results, one per input item.

    Its result for an item may depend only on that item (named by its digest in
    `items`) and the properties, so the executor can take the results of unchanged
    items from the previous output of the same plugin, version and properties, and
    process only the items that changed. `combine` of the same results must give
    the same content a full `process` gives.
    """

    @abstractmethod
    def items(self, inputs: Sequence[Message]) -> dict[str, str]:
        """Item key → digest of that item's input (e.g. file path → content digest)."""

    @abstractmethod
    def process_items(
        self, inputs: Sequence[Message], keys: Set[str], properties: dict[str, Any]
    ) -> dict[str, Any]:
        """Results (JSON values) for the items named by `keys`."""

    @abstractmethod
    def split(self, content: dict[str, Any], keys: Set[str]) -> dict[str, Any]:
        """The results of the items named by `keys`, recovered from an earlier output."""

    @abstractmethod
    def combine(
        self, inputs: Sequence[Message], results: dict[str, Any], properties: dict[str, Any]
    ) -> dict[str, Any]:
        """The output content from every item's result."""

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        """All items processed afresh."""
        keys = set(self.items(inputs))
        return self.combine(inputs, self.process_items(inputs, keys, properties), properties)


PluginClass = type[Connector] | type[Processor]


def load_plugins(group: str) -> dict[str, Any]:
    """Every plugin class registered in an entry-point group, by type name."""
    found: dict[str, Any] = {}
    for point in entry_points(group=group):
        try:
            plugin = point.load()
        except Exception as error:  # a broken user package must not hide the others
            raise InvalidInputError(
                f"plugin {point.name!r} ({point.value}) failed to load: {error}"
            ) from error
        found[point.name] = plugin
    return found


def connectors() -> dict[str, type[Connector]]:
    """Installed connectors by type name."""
    return load_plugins(CONNECTOR_GROUP)


def processors() -> dict[str, type[Processor]]:
    """Installed processors by type name."""
    return load_plugins(PROCESSOR_GROUP)
