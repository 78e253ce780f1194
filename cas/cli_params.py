"""Parameter coercion for ``cas`` without pydantic: ~100 ms off every command.

typer coerces each parameter through a pydantic TypeAdapter built when the
parameter is first processed, even with no value given (``--repo``, ``--help``
and the flags of every command), so every ``cas`` command imported pydantic.
Our parameters are plain ``str``, ``int`` (some with bounds) and ``bool``; for
those, `PlainParam` takes a well-formed value as is and hands anything else to
typer's own coercion, so typer still makes every error message. This leans on
typer internals (``typer._coercion``, a parameter's ``_runtime_param`` and
``type_descriptor``); `cas.cli` skips it if they are missing, and
``test_cas_runs_imports_neither_pyarrow_nor_pydantic`` notices when they change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from typer._coercion import RuntimeParam, build_runtime_param

_WHOLE_NUMBER = re.compile(r"0|-?[1-9][0-9]{0,17}")
_PLAIN = (str, int, bool)


@dataclass(frozen=True)
class PlainParam(RuntimeParam):
    """A ``str``, ``int`` or ``bool`` parameter's coercion: typer's result, no pydantic."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.annotation
        if isinstance(value, str) and kind is str:
            return value
        if isinstance(value, bool):
            if kind is bool:
                return value
        elif kind is int and isinstance(value, str | int):
            number = int(value) if isinstance(value, int) else _whole(value)
            info = self.parameter_info
            if number is not None and _within(number, info.min, info.max):
                return number
        typer_own = build_runtime_param(param.type_descriptor)
        return typer_own._coerce_value(value, param=param, ctx=ctx)


def _whole(text: str) -> int | None:
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def _within(number: int, low: float | None, high: float | None) -> bool:
    return (low is None or number >= low) and (high is None or number <= high)


def plain_coercion(command: Any, ctx: Any) -> None:
    """Give the plain parameters of `command`, its help option and its subcommands'
    a `PlainParam` (before typer builds its own on first use)."""
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        desc = getattr(param, "type_descriptor", None)
        if desc is None or getattr(param, "_runtime_param", False) is not None:
            continue
        info = desc.parameter_info
        plain = desc.annotation in _PLAIN and desc.file_annotation is None
        if plain and info.parser is None and not info.clamp and param.nargs == 1:
            param._runtime_param = PlainParam(info, desc.annotation)
    for sub in getattr(command, "commands", {}).values():
        plain_coercion(sub, ctx)
