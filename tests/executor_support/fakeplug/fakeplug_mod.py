"""The module behind the fake ``fakeplug`` distribution's ``shout`` entry point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from cas.model import Message, SchemaRef
from cas.plugins import Processor


class Shout(Processor):
    """Upper-cases the ``value`` of every input and joins them with spaces."""

    type: ClassVar[str] = "shout"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[SchemaRef] = SchemaRef("test_value", "1.0.0")

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        return {"value": " ".join(str(m.content["value"]).upper() for m in inputs) + "!"}
