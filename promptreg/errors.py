"""Error types that reach the user as one clear line and an exit code.

Exit codes: 2 = bad input / usage / unreachable store / refused (the command could not run),
1 = a check ran and failed (gates, later), 0 = success.
"""

from __future__ import annotations


class PromptregError(Exception):
    """Base class: a user-facing error. ``str(err)`` is the one line shown to the user."""

    exit_code = 2


class InputError(PromptregError):
    """Malformed input: bad folder, manifest, tensor, argument."""


class NotFoundError(PromptregError):
    """Unknown prompt name, version or alias."""


class IntegrityError(PromptregError):
    """An artifact's bytes do not match its recorded sha256, or a fingerprint mismatch."""


class StoreUnavailableError(PromptregError):
    """A store (database, artifact store, MLflow) cannot be reached or refused the operation."""


class ConflictError(PromptregError):
    """A compare-and-swap lost against a concurrent writer."""


class MirrorError(PromptregError):
    """The MLflow mirror failed; the registry database still holds the truth."""


class GateFailedError(PromptregError):
    """A regression gate ran and failed (promote refuses): exit 1, not 2, so CI can tell them apart."""

    exit_code = 1
