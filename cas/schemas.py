"""JSON Schemas registered for (name, version), enforced before anything is written.

Schemas come from the repository's ``schemas/{name}/{version}.json``, from
Python packages named in the repository config (``schema_packages``) or in
``CAS_SCHEMA_PACKAGES``, each holding ``{name}/{version}.json`` files, and last
from ``cas.builtin_schemas`` (the built-in plugins' outputs). The repository
folder wins. A registered schema is immutable: adding a different
document under the same (name, version) is a conflict.
"""

from __future__ import annotations

import builtins
import importlib.resources
import os
from collections.abc import Iterable
from typing import Any

import orjson

from cas.digest import canonical_json
from cas.errors import ConflictError, InvalidInputError, NotFoundError, SchemaValidationError
from cas.model import SchemaRef
from cas.objects import Backend

SCHEMAS = "schemas"
BUILTIN_PACKAGE = "cas.builtin_schemas"
_ABSENT: Any = object()


class SchemaRegistry:
    """Looks schemas up (cached per process) and validates content against them."""

    def __init__(self, backend: Backend, packages: Iterable[str] = ()) -> None:
        self.backend = backend
        env = os.environ.get("CAS_SCHEMA_PACKAGES", "")
        extra = [name for name in env.split(",") if name.strip()]
        # The built-in plugins' output schemas are always known (and so always enforced).
        self.packages = [*packages, *extra, BUILTIN_PACKAGE]
        self._validators: dict[SchemaRef, Any] = {}
        self._fast: dict[SchemaRef, Any] = {}

    @staticmethod
    def key(ref: SchemaRef) -> str:
        """Where a schema lives in the repository."""
        return f"{SCHEMAS}/{ref.name}/{ref.version}.json"

    def document(self, ref: SchemaRef) -> dict[str, Any] | None:
        """The schema document for `ref`, or None if it is not registered."""
        try:
            return _parse(self.backend.read(self.key(ref)), self.key(ref))
        except NotFoundError:
            pass
        for package in self.packages:
            data = _package_file(package.strip(), ref)
            if data is not None:
                return _parse(data, f"{package}:{ref}")
        return None

    def validate(self, ref: SchemaRef | None, content: dict[str, Any]) -> bool:
        """Raise `SchemaValidationError` on invalid content; return whether a schema applied."""
        if ref is None:
            return False
        validator = self._validator(ref)
        if validator is None:
            return False
        fast = self._fast.get(ref)
        if fast is not None and _passes(fast, content):
            return True
        error = first_error(validator, content)
        if error is not None:
            path, message = error
            raise SchemaValidationError(str(ref), _json_path(path), message)
        return True

    def _validator(self, ref: SchemaRef) -> Any:
        validator = self._validators.get(ref, _ABSENT)
        if validator is _ABSENT:
            document = self.document(ref)
            validator = None if document is None else compile_schema(document, str(ref))
            self._validators[ref] = validator
            self._fast[ref] = None if document is None else fast_validator(document)
        return validator

    def add(self, ref: SchemaRef, document: dict[str, Any]) -> bool:
        """Register `document`; False if the same one is already there."""
        compile_schema(document, str(ref))
        existing = self.document(ref)
        if existing is not None:
            if canonical_json(existing) != canonical_json(document):
                raise ConflictError(f"schema {ref} is already registered with a different document")
            return False
        self.backend.write(self.key(ref), orjson.dumps(document, option=orjson.OPT_INDENT_2))
        self._validators.pop(ref, None)
        self._fast.pop(ref, None)
        return True

    def list(self) -> builtins.list[tuple[SchemaRef, str]]:
        """Every registered schema with where it comes from."""
        found: dict[SchemaRef, str] = {}
        for package in reversed(self.packages):
            found.update(dict.fromkeys(_package_refs(package.strip()), f"package {package}"))
        for name in self.backend.children(SCHEMAS):
            for file in self.backend.children(f"{SCHEMAS}/{name}"):
                if file.endswith(".json") and not file.startswith("."):
                    found[SchemaRef(name, file.removesuffix(".json"))] = "repository"
        return sorted(found.items(), key=lambda item: (item[0].name, item[0].version))


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"schema {where} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"schema {where} is not a JSON object")
    return document


def compile_schema(document: dict[str, Any], name: str) -> Any:
    """A validator for `document` (Draft 2020-12 unless it says otherwise).

    `InvalidInputError` naming `name` if the document is not a valid JSON Schema.
    """
    import jsonschema  # here, not at the top: listing runs never validates (~45 ms)

    cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(document)
    except jsonschema.exceptions.SchemaError as error:
        raise InvalidInputError(
            f"schema {name} is not a valid JSON Schema: {error.message}"
        ) from None
    return cls(document)


# Keywords that mean the same in draft 7 (what fastjsonschema knows) and 2020-12.
# A schema using anything else (prefixItems, unevaluated*, $dynamicRef, …) that
# fastjsonschema would silently ignore is validated by jsonschema alone. Local
# references to ``$defs`` are inlined first.
_SHARED_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "items",
    }
)
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_VALUES = [
    "additionalProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "items",
]
_MAX_INLINE_DEPTH = 32


def fast_validator(document: dict[str, Any]) -> Any:
    """A compiled fastjsonschema validator, or None where it might accept what jsonschema refuses.

    It is only ever trusted to say "valid": any refusal is confirmed (and
    explained) by jsonschema, so it can only make validation faster, never laxer.
    """
    defs = document.get("$defs", {})
    body = {k: v for k, v in document.items() if k not in ("$schema", "$defs")}
    inlined = _inline(body, defs if isinstance(defs, dict) else {}, 0)
    if inlined is None or not _shared_only(inlined):
        return None
    import fastjsonschema

    try:
        return fastjsonschema.compile(inlined)
    except Exception:  # a construct it cannot compile: jsonschema alone, as before
        return None


def _inline(schema: Any, defs: dict[str, Any], depth: int) -> Any:
    """`schema` with every ``{"$ref": "#/$defs/x"}`` replaced by its definition, or None."""
    if depth > _MAX_INLINE_DEPTH:
        return None  # recursive definitions: leave them to jsonschema
    if isinstance(schema, list):
        items = [_inline(item, defs, depth) for item in schema]
        return None if any(item is None for item in items) else items
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/$defs/") if isinstance(ref, str) else None
        if name is None or name == ref or name not in defs:
            return None
        target = _inline(defs[name], defs, depth + 1)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        if target is None or (rest and "allOf" in rest):
            return None
        return {"allOf": [target], **_inline(rest, defs, depth)} if rest else target
    result = {key: _inline(value, defs, depth) for key, value in schema.items()}
    if any(value is None and schema[key] is not None for key, value in result.items()):
        return None
    return result


def _shared_only(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or not set(schema) <= _SHARED_KEYWORDS:
        return False
    if isinstance(schema.get("items"), list):
        return False  # tuple form: prefixItems in 2020-12
    children = [schema[k] for k in _SCHEMA_VALUES if k in schema]
    children += [v for k in _SCHEMA_MAPS for v in schema.get(k, {}).values()]
    children += [v for k in _SCHEMA_LISTS for v in schema.get(k, [])]
    return all(_shared_only(child) for child in children)


def _passes(fast: Any, content: Any) -> bool:
    try:
        fast(content)
    except Exception:  # refused (or confused): let jsonschema decide and explain
        return False
    return True


def first_error(validator: Any, instance: Any) -> tuple[list[str | int], str] | None:
    """The most relevant validation error as (path inside `instance`, message), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    return None if error is None else (list(error.absolute_path), error.message)


def _json_path(parts: list[str | int]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _package_file(package: str, ref: SchemaRef) -> bytes | None:
    try:
        path = importlib.resources.files(package) / ref.name / f"{ref.version}.json"
        return path.read_bytes() if path.is_file() else None
    except ModuleNotFoundError:
        return None


def _package_refs(package: str) -> list[SchemaRef]:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return []
    return [
        SchemaRef(folder.name, file.name.removesuffix(".json"))
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(("_", "."))
        for file in folder.iterdir()
        if file.name.endswith(".json")
    ]
