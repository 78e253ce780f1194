"""Every error `cas` raises on purpose.

A handful of types, each also inheriting the builtin a caller would expect, so
``except KeyError`` still catches "not found". The CLI maps them to exit codes in
one place (`cas.cli.exit_code`); `docs/cli.md` publishes that table.
"""

from __future__ import annotations


class CasError(Exception):
    """Base of every deliberate `cas` error; its message is one line."""

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of its argument, quotes and all.
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInputError(CasError, ValueError):
    """A value from the user is malformed; nothing was written."""


class InvalidIdError(InvalidInputError):
    """A run id, artifact id, tenant or schema name breaks the id rule."""

    def __init__(self, kind: str, value: str, rule: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {kind} {shown!r}: expected {rule}")
        self.kind = kind
        self.value = value


class InvalidContentError(InvalidInputError):
    """Message content is not plain JSON; `path` says where inside it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"content is not plain JSON at {path}: {problem}")
        self.path = path


class SchemaValidationError(InvalidInputError):
    """Content does not match the JSON Schema registered for its (name, version)."""

    def __init__(self, schema: str, path: str, message: str) -> None:
        super().__init__(f"content does not match schema {schema} at {path}: {message}")
        self.schema = schema
        self.path = path


class NotFoundError(CasError, KeyError):
    """A run, artifact, object or schema does not exist."""


class AmbiguousError(InvalidInputError):
    """A prefix matched more than one digest or run."""


class IntegrityError(CasError):
    """Stored bytes do not hash to their name, or a record is damaged."""

    def __init__(self, message: str, *, digest: str | None = None, location: str = "") -> None:
        super().__init__(message)
        self.digest = digest
        self.location = location


class ConflictError(CasError):
    """The write would overwrite something different that already exists."""


class RepositoryError(CasError):
    """The repository is missing, of an unknown format, or misconfigured."""
