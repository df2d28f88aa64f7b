"""Error types that reach the user as one clear line and an exit code.

Exit codes: 2 = bad input / usage / unreachable store / refused (the command could not run),
1 = a check ran and failed (gates), 0 = success.

Invariants: every error promptreg raises on purpose is a :class:`PromptregError`; ``str(err)`` is the
one line shown to the user (``error: <line>`` on stderr, or ``{"error", "error_type"}`` over HTTP).
The *category* of an error (:func:`error_type`: ``InputError``, ``NotFoundError``, ...) is what
callers branch on and what the HTTP layer maps to a status; finer subclasses (e.g.
:class:`AliasNotFoundError`) let Python callers tell cases apart without reading the message.
"""

from __future__ import annotations

from typing import Any


class PromptregError(Exception):
    """Base class: a user-facing error. ``str(err)`` is the one line shown to the user."""

    exit_code = 2


class InputError(PromptregError):
    """Malformed input: bad folder, manifest, tensor, argument."""


class NotFoundError(PromptregError):
    """Unknown prompt name, version, alias, schedule, environment or artifact."""


class PromptNotFoundError(NotFoundError):
    """No prompt of that name."""


class VersionNotFoundError(NotFoundError):
    """The prompt exists but has no such version (or no version at all)."""


class AliasNotFoundError(NotFoundError):
    """The prompt exists but the alias is not set."""


class ScheduleNotFoundError(NotFoundError):
    """No schedule with that id."""


class EnvironmentNotFoundError(NotFoundError):
    """No base model recorded for that deployment environment."""


class ArtifactNotFoundError(NotFoundError):
    """The artifact store has no content at that address."""


class IntegrityError(PromptregError):
    """An artifact's bytes do not match its recorded sha256, or a fingerprint mismatch."""


class StoreUnavailableError(PromptregError):
    """A store (database, artifact store, MLflow) cannot be reached or refused the operation."""


class ConflictError(PromptregError):
    """A compare-and-swap lost against a concurrent writer."""


class MirrorError(PromptregError):
    """The MLflow mirror failed; the registry database still holds the truth."""


class GateFailedError(PromptregError):
    """A regression gate ran and failed (promote refuses): exit 1, not 2, so CI can tell them apart.

    ``report``: the :class:`~promptreg.evaluation.results.GateReport` that failed (None if unknown)."""

    exit_code = 1

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


#: The error categories callers see (CLI exit codes, HTTP statuses, ``error_type`` in serving results).
CATEGORIES: tuple[type[PromptregError], ...] = (
    InputError, NotFoundError, IntegrityError, StoreUnavailableError, ConflictError, MirrorError,
    GateFailedError, PromptregError)


def error_type(exc: BaseException) -> str:
    """The category name of a promptreg error (``AliasNotFoundError`` -> ``NotFoundError``);
    ``InternalError`` for anything else."""
    for cls in CATEGORIES:
        if isinstance(exc, cls):
            return cls.__name__
    return "InternalError"


def one_line(text: object, limit: int | None = None) -> str:
    """A message on one line: a path or value quoted in it may hold line breaks (any that
    ``str.splitlines()`` knows, e.g. '\\n', '\\r', '\\x0b', '\\u2028'); they become spaces. Longer than
    ``limit`` characters: cut, with "..." at the end."""
    line = " ".join(str(text).splitlines())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def exception_line(exc: BaseException, limit: int | None = None) -> str:
    """The one line an exception is reported as: a promptreg error as it is (its first line), any other
    prefixed by its type (``ValueError: ...``), the type alone when there is no message."""
    msg = str(exc).strip()
    first = msg.splitlines()[0].strip() if msg else ""
    if isinstance(exc, PromptregError):
        return one_line(first or type(exc).__name__, limit)
    return one_line(f"{type(exc).__name__}: {first}".rstrip(": "), limit)
