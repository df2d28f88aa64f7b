"""Error types that reach the user as one clear line and an exit code.

Exit codes: 2 = bad input / usage / unreachable store / refused (the command could not run),
1 = a check ran and failed (gates), 0 = success.

Invariants: every error promptreg raises on purpose is a :class:`PromptregError`; ``str(err)`` is the
one line shown to the user (``error: <line>`` on stderr). The *category* of an error (:func:`error_type`:
``InputError``, ``NotFoundError``, ...) is what callers branch on; finer subclasses (e.g.
:class:`AliasNotFoundError`) let Python callers tell cases apart without reading the message.

Over HTTP (``promptreg server``) each class is one JSON error ``{"error": {"code", "message"}}`` with
its ``http_status`` (a subclass answers with its category's); the remote client turns ``code`` back
into the same category (:func:`error_for_code`), so a command exits the same way in direct and in
remote mode.
"""

from __future__ import annotations

from typing import Any


class PromptregError(Exception):
    """Base class: a user-facing error. ``str(err)`` is the one line shown to the user."""

    exit_code = 2
    code = "error"
    http_status = 400


class InputError(PromptregError):
    """Malformed input: bad folder, manifest, tensor, argument."""

    code = "invalid_input"
    http_status = 400


class NotFoundError(PromptregError):
    """Unknown prompt name, version, alias, schedule, environment or artifact."""

    code = "not_found"
    http_status = 404


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

    code = "integrity"
    http_status = 422


class StoreUnavailableError(PromptregError):
    """A store (database, artifact store, MLflow) cannot be reached or refused the operation."""

    code = "store_unavailable"
    http_status = 503


class ConflictError(PromptregError):
    """A compare-and-swap lost against a concurrent writer."""

    code = "conflict"
    http_status = 409


class MirrorError(PromptregError):
    """The MLflow mirror failed; the registry database still holds the truth."""

    code = "mirror_failed"
    http_status = 502


class AuthenticationError(PromptregError):
    """A request to ``promptreg server`` carries no usable credential (HTTP 401). ``reason`` is one word:
    missing, malformed, invalid, expired, revoked."""

    code = "unauthenticated"
    http_status = 401

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


class PermissionDeniedError(PromptregError):
    """An authenticated principal may not do this (HTTP 403): the message names what is missing."""

    code = "permission_denied"
    http_status = 403


class RateLimitedError(PromptregError):
    """Too many failed authentications from this client (HTTP 429); ``retry_after`` in seconds."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: int = 60):
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLargeError(PromptregError):
    """A request body over the server's limit (HTTP 413)."""

    code = "too_large"
    http_status = 413


class RequestTimeoutError(PromptregError):
    """The server gave up on a request after its time limit (HTTP 504)."""

    code = "timeout"
    http_status = 504


class GateFailedError(PromptregError):
    """A regression gate ran and failed (promote refuses): exit 1, not 2, so CI can tell them apart.

    ``report``: the :class:`~promptreg.evaluation.results.GateReport` that failed (None if unknown)."""

    exit_code = 1
    code = "gate_failed"
    http_status = 422

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


def _subclasses(cls: type) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _subclasses(sub)]


def error_for_code(code: str) -> type[PromptregError]:
    """The error class whose ``code`` this is (PromptregError when unknown)."""
    for cls in _subclasses(PromptregError):
        if cls.__dict__.get("code") == code:
            return cls
    return PromptregError
