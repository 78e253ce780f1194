"""Small connectors and processors for the executor tests, registered by passing them to plan().

Every plugin records what it did in module-level, lock-guarded ledgers so tests can
tell which steps really computed (`CALLS`, keyed by the step's ``tag`` property) and
when (`INTERVALS`). With the ``marker_dir`` property a plugin also appends a line to
``marker_dir/<tag>`` as it starts, which survives the process (subprocess tests).
`reset` clears the ledgers and releases hung steps; an autouse fixture calls it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cas.model import Message, SchemaRef
from cas.plugins import Connector, Processor

VALUE = SchemaRef("test_value", "1.0.0")
VALUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["value"],
    "properties": {"value": {}},
}
_TAGGED: dict[str, Any] = {
    "type": "object",
    "properties": {"tag": {"type": "string"}, "marker_dir": {"type": "string"}},
}

_LOCK = threading.Lock()
CALLS: Counter[str] = Counter()
INTERVALS: list[tuple[str, float, float]] = []
RELEASE = threading.Event()  # set to let every `hang` step return


def reset() -> None:
    """Forget recorded calls and intervals; let steps still hanging from a test finish."""
    RELEASE.set()
    with _LOCK:
        CALLS.clear()
        INTERVALS.clear()
    RELEASE.clear()


def calls() -> dict[str, int]:
    """A snapshot of `CALLS` (tag → times computed)."""
    with _LOCK:
        return dict(CALLS)


def peak_concurrency(intervals: Sequence[tuple[str, float, float]]) -> int:
    """The most intervals open at one instant (at a tie, an end closes before a start opens)."""
    edges = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for *_, end in intervals])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def _record(properties: dict[str, Any], default: str) -> str:
    tag = str(properties.get("tag", default))
    with _LOCK:
        CALLS[tag] += 1
    marker_dir = properties.get("marker_dir")
    if marker_dir:
        with Path(marker_dir, tag).open("a") as marker:
            marker.write(f"{os.getpid()}\n")
    return tag


def _joined(inputs: Sequence[Message]) -> str:
    return "+".join(str(message.content["value"]) for message in inputs)


class FixedSource(Connector):
    """``fixed``: content ``{"value": properties.value}``; never cached (the default)."""

    type: ClassVar[str] = "fixed"
    output_schema: ClassVar[SchemaRef] = VALUE
    properties_schema: ClassVar[dict[str, Any]] = {
        **_TAGGED,
        "required": ["value"],
        "properties": {**_TAGGED["properties"], "value": {}},
    }

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        return {"value": properties["value"]}


class CachedSource(FixedSource):
    """``fixed_cached``: `FixedSource` that declares itself cacheable."""

    type: ClassVar[str] = "fixed_cached"
    cacheable: ClassVar[bool] = True


class BrokenSource(Connector):
    """``broken``: a source that always raises ``ValueError("boom")``."""

    type: ClassVar[str] = "broken"
    output_schema: ClassVar[SchemaRef] = VALUE

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        raise ValueError("boom")


class Transform(Processor):
    """``transform``: applies ``op`` (upper, length, reverse, concat) to the joined inputs."""

    type: ClassVar[str] = "transform"
    output_schema: ClassVar[SchemaRef] = VALUE
    properties_schema: ClassVar[dict[str, Any]] = {
        **_TAGGED,
        "properties": {
            **_TAGGED["properties"],
            "op": {"enum": ["upper", "length", "reverse", "concat"]},
            "suffix": {"type": "string"},
        },
    }

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        text = _joined(inputs)
        op = properties.get("op", "concat")
        value: Any = {
            "upper": text.upper(),
            "length": len(text),
            "reverse": text[::-1],
            "concat": text,
        }[op]
        if "suffix" in properties:
            value = f"{value}{properties['suffix']}"
        return {"value": value}


class TransformV2(Transform):
    """`Transform` with a bumped version: its steps must not hit version-1 cache records."""

    version: ClassVar[str] = "2"


class Sleep(Processor):
    """``sleep``: sleeps ``seconds``, recording (tag, start, end) in `INTERVALS`."""

    type: ClassVar[str] = "sleep"
    output_schema: ClassVar[SchemaRef] = VALUE
    properties_schema: ClassVar[dict[str, Any]] = {
        **_TAGGED,
        "required": ["seconds"],
        "properties": {**_TAGGED["properties"], "seconds": {"type": "number"}},
    }

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        tag = _record(properties, self.type)
        start = time.monotonic()
        time.sleep(float(properties["seconds"]))
        end = time.monotonic()
        with _LOCK:
            INTERVALS.append((tag, start, end))
        return {"value": _joined(inputs), "slept": properties["seconds"]}


class Fail(Processor):
    """``fail``: always raises ``ValueError("boom")``."""

    type: ClassVar[str] = "fail"
    output_schema: ClassVar[SchemaRef] = VALUE

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        raise ValueError("boom")


class Hang(Processor):
    """``hang``: blocks until `RELEASE` is set (at most 10 s), for timeout tests."""

    type: ClassVar[str] = "hang"
    output_schema: ClassVar[SchemaRef] = VALUE

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        RELEASE.wait(10)
        return {"value": "released"}


class Gate(Processor):
    """``gate``: waits while the file named by ``gate`` exists (at most 30 s), then passes on."""

    type: ClassVar[str] = "gate"
    output_schema: ClassVar[SchemaRef] = VALUE
    properties_schema: ClassVar[dict[str, Any]] = {
        **_TAGGED,
        "required": ["gate"],
        "properties": {**_TAGGED["properties"], "gate": {"type": "string"}},
    }

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        deadline = time.monotonic() + 30
        while Path(properties["gate"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"value": _joined(inputs)}


class BadShape(Processor):
    """``bad_shape``: content without the ``value`` that `VALUE_SCHEMA` requires."""

    type: ClassVar[str] = "bad_shape"
    output_schema: ClassVar[SchemaRef] = VALUE

    def process(self, inputs: Sequence[Message], properties: dict[str, Any]) -> dict[str, Any]:
        _record(properties, self.type)
        return {"unexpected": 1}


CONNECTORS: dict[str, type[Connector]] = {
    plugin.type: plugin for plugin in (FixedSource, CachedSource, BrokenSource)
}
PROCESSORS: dict[str, type[Processor]] = {
    plugin.type: plugin for plugin in (Transform, Sleep, Fail, Hang, Gate, BadShape)
}
