"""Built-in connectors: read the outside world into one message's content.

`FilesystemConnector` lists and reads the text files under a folder. Its output
is deterministic: paths are relative to the scanned root and '/'-separated,
files and skipped entries are sorted, and nothing depends on the clock, the
machine or the order the operating system lists a folder in. Scanning unchanged
data twice therefore yields byte-identical content, which deduplicates.
"""

from __future__ import annotations

import codecs
import copy
import os
import re
import stat
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, ClassVar

from cas.digest import Digest
from cas.errors import InvalidInputError
from cas.model import SchemaRef
from cas.plugins import Connector

MIB = 1024 * 1024
FILE_CONTENT = SchemaRef("file_content", "1.0.0")


def resolve_properties(
    plugin: str, schema: dict[str, Any], properties: dict[str, Any]
) -> dict[str, Any]:
    """Validate `properties` against a plugin's JSON Schema and fill in its defaults.

    Raises `InvalidInputError` with a one-line message naming the property. Top-level
    defaults come from ``schema["properties"][name]["default"]`` (deep-copied, so a
    caller can never change the schema by changing its properties).
    """
    import jsonschema  # lazily: only runs that use built-in plugins pay for it

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(properties))
    if error is not None:
        where = error.json_path.removeprefix("$.").removeprefix("$") or "properties"
        raise InvalidInputError(f"invalid properties for {plugin!r} at {where}: {error.message}")
    resolved = {
        name: copy.deepcopy(spec["default"])
        for name, spec in schema.get("properties", {}).items()
        if "default" in spec
    }
    resolved.update(properties)
    return resolved


@lru_cache(maxsize=256)
def glob_pattern(glob: str) -> re.Pattern[str]:
    """Compile a '/'-separated glob: ``**`` spans folders, ``*`` and ``?`` stay inside one.

    ``**/`` also matches no folder at all, so ``**/*.bin`` matches ``a.bin`` too.
    """
    parts: list[str] = []
    index = 0
    while index < len(glob):
        if glob.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif glob.startswith("**", index):
            parts.append(".*")
            index += 2
        else:
            parts.append(_glob_char(glob, index))
            index += len(_glob_token(glob, index))
    return re.compile("".join(parts), re.DOTALL)


def _glob_token(glob: str, index: int) -> str:
    if glob[index] == "[":
        end = glob.find("]", index + 2)
        if end != -1:
            return glob[index : end + 1]
    return glob[index]


def _glob_char(glob: str, index: int) -> str:
    token = _glob_token(glob, index)
    if token == "*":
        return "[^/]*"
    if token == "?":
        return "[^/]"
    if len(token) > 1:  # a character class: [abc] or [!abc]
        body = token[1:-1]
        negate = body.startswith("!")
        body = re.sub(r"([\\\]^])", r"\\\1", body[1:] if negate else body)
        return f"[^/{body}]" if negate else f"[{body}]"
    return re.escape(token)


def matches_any(path: str, globs: list[str]) -> bool:
    """Whether the relative '/'-separated `path` matches one of `globs`."""
    return any(glob_pattern(glob).fullmatch(path) for glob in globs)


class FilesystemConnector(Connector):
    """Reads the text files under a folder (or one file) into ``file_content``."""

    type: ClassVar[str] = "filesystem"
    version: ClassVar[str] = "1.0.0"
    output_schema: ClassVar[SchemaRef] = FILE_CONTENT
    properties_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "Folder (or single file) to read; reported as given.",
            },
            "include": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "default": ["**/*"],
                "description": "Globs of relative paths to read ('**' spans folders).",
            },
            "exclude": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "default": [],
                "description": "Globs of relative paths to leave out entirely.",
            },
            "max_file_size": {
                "type": "integer",
                "minimum": 0,
                "default": MIB,
                "description": "Larger files are listed as skipped (bytes; default 1 MiB).",
            },
            "encoding": {
                "type": "string",
                "minLength": 1,
                "default": "utf-8",
                "description": "Text encoding; undecodable files are listed as skipped.",
            },
        },
    }

    def extract(self, properties: dict[str, Any]) -> dict[str, Any]:
        """Read every included file under ``path``; see the class docstring for the shape."""
        options = resolve_properties(self.type, self.properties_schema, properties)
        root: str = options["path"]
        _check_encoding(options["encoding"])
        files: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for relative, full in _selected(root, options["include"], options["exclude"]):
            entry = _read(full, options["max_file_size"], options["encoding"])
            if isinstance(entry, str):
                skipped.append({"path": relative, "reason": entry})
            else:
                files.append({"path": relative, **entry})
        return {"root": root, "files": files, "skipped": skipped}


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidInputError(f"unknown encoding {encoding!r}") from None


def _selected(root: str, include: list[str], exclude: list[str]) -> Iterator[tuple[str, str]]:
    """(relative path, full path) of every candidate file, sorted by relative path."""
    for relative, full in sorted(_walk(root)):
        if matches_any(relative, include) and not matches_any(relative, exclude):
            yield relative, full


def _walk(root: str) -> Iterator[tuple[str, str]]:
    try:
        mode = os.stat(root).st_mode  # noqa: PTH116 - plain os calls on the hot path
    except FileNotFoundError:
        raise InvalidInputError(f"path not found: {root}") from None
    except OSError as error:
        raise InvalidInputError(f"cannot read path {root}: {error.strerror}") from None
    if not stat.S_ISDIR(mode):
        yield os.path.basename(os.path.normpath(root)), root  # noqa: PTH119
        return
    # Symlinked folders are not followed (no loops, nothing outside the root): they are
    # yielded like files, so `_read` lists them as skipped.
    for folder, dirs, names in os.walk(root):
        base = os.path.relpath(folder, root)
        links = [name for name in dirs if os.path.islink(os.path.join(folder, name))]  # noqa: PTH114, PTH118
        for name in [*names, *links]:
            relative = name if base == "." else f"{base}/{name}"
            yield relative.replace(os.sep, "/"), os.path.join(folder, name)  # noqa: PTH118


def _read(full: str, max_size: int, encoding: str) -> dict[str, Any] | str:
    """``{size, digest, content}`` of a readable text file, else the reason it is skipped."""
    try:
        info = os.lstat(full)
        if stat.S_ISLNK(info.st_mode):
            return "symbolic link"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size > max_size:
            return f"larger than max_file_size ({info.st_size} > {max_size} bytes)"
        with open(full, "rb") as handle:  # noqa: PTH123
            data = handle.read(max_size + 1)
    except OSError as error:
        return f"unreadable: {error.strerror or type(error).__name__}"
    if len(data) > max_size:  # grew since the stat
        return f"larger than max_file_size ({len(data)} > {max_size} bytes)"
    if b"\x00" in data:
        return "binary (contains NUL bytes)"
    try:
        content = data.decode(encoding)
    except UnicodeDecodeError as error:
        return f"not decodable as {encoding} (byte {error.start})"
    return {"size": len(data), "digest": Digest.of(data).hex, "content": content}
