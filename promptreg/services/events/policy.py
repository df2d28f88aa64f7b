"""Pure rules of event delivery: the event types, who is subscribed, and when to try again.

No database, no network: tested on hand-built data (tests/test_events_policy.py).

* :data:`EVENT_TYPES`: every type published today (promptreg.registry.outbox.event_type maps audit
  actions to them). A webhook's ``--events`` are exact types or glob patterns (``drift.*``, ``*``).
* :func:`subscribed`: a webhook gets an event when one of its patterns matches the type, its
  ``--prompts`` glob (if any) matches the prompt's name (events without a prompt never match a
  glob), the event was committed after the webhook was added, and its owner may read the prompt.
* :func:`mirrored`: the events the MLflow mirror consumes (the ones that change what MLflow shows).
* :func:`backoff_s`: exponential backoff with jitter; :func:`next_step`: retry or park as dead.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from promptreg.errors import InputError

#: type -> what it means (docs/events.md renders the same list)
EVENT_TYPES: dict[str, str] = {
    "push": "a new version was registered",
    "alias.set": "an alias was pointed at a version through the Python API (Registry.set_alias)",
    "promote": "an alias moved to a version through promote (gate verdict in details)",
    "rollback": "an alias moved back to a previous holder",
    "drift.rollback": "a drift check moved an alias back to a previous holder",
    "gate.passed": "a regression gate passed",
    "gate.failed": "a regression gate failed",
    "eval": "a version was evaluated on a suite",
    "inspect": "a version's virtual tokens were inspected against the vocabulary (summary in details)",
    "drift": "a drift check finished (decision in details)",
    "drift.flag": "a version's status became degraded or incompatible",
    "drift.unflag": "a version's status became active again",
    "env.set_base_model": "an environment's deployed base model changed",
    "schedule.add": "a drift-check schedule was added",
    "schedule.remove": "a drift-check schedule was removed",
    "webhook.add": "a webhook was added",
    "webhook.remove": "a webhook was removed",
    "webhook.test": "a test event sent by `promptreg webhook test` (to that webhook only)",
    "alias.restore": "sync put back an MLflow alias that differed from the database (changed by hand in MLflow)",
    "token.create": "an API token of promptreg server was created",
    "token.revoke": "an API token of promptreg server was revoked",
}
#: events with a prompt that do not change anything MLflow shows
_NOT_MIRRORED_PREFIXES = ("schedule.", "webhook.", "env.", "token.")


def parse_patterns(text: str | Iterable[str]) -> list[str]:
    """``--events`` as a list: comma-separated types or glob patterns; unknown exact types refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    patterns = [p.strip() for p in items if p and p.strip()]
    if not patterns:
        raise InputError("--events needs at least one event type (or '*'), e.g. --events promote,rollback")
    for p in patterns:
        if any(ch in p for ch in "*?["):
            continue
        if p not in EVENT_TYPES:
            raise InputError(f"unknown event type {p!r}: expected one of {', '.join(EVENT_TYPES)} "
                             "or a pattern such as 'drift.*'")
    return list(dict.fromkeys(patterns))


def check_prompt_glob(glob: str | None) -> str | None:
    if glob is None or not glob.strip():
        return None
    glob = glob.strip()
    if len(glob) > 256:
        raise InputError("--prompts is longer than 256 characters")
    return glob


def may_read(owner: str, prompt_name: str | None) -> bool:
    """Whether a webhook added by ``owner`` may see events of ``prompt_name``: always. Webhooks are
    added by whoever holds the database (direct mode) or by an admin token (``promptreg server``:
    ``/api/v1/webhooks`` is admin only), and both may read every prompt. This is the one place to ask
    if prompt-scoped webhook owners are ever allowed."""
    return True


def subscribed(patterns: list[str], prompts: str | None, owner: str, type_: str, prompt_name: str | None,
               event_at: dt.datetime, webhook_created_at: dt.datetime) -> bool:
    if event_at < webhook_created_at:
        return False
    if not any(fnmatchcase(type_, p) for p in patterns):
        return False
    if prompts is not None and (prompt_name is None or not fnmatchcase(prompt_name, prompts)):
        return False
    return may_read(owner, prompt_name)


def mirrored(type_: str, prompt_id: int | None) -> bool:
    return prompt_id is not None and not type_.startswith(_NOT_MIRRORED_PREFIXES)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries per round (0: never dead); try n+1 waits :func:`backoff_s` (n)."""

    base_s: float = 5.0
    max_s: float = 3600.0
    max_attempts: int = 12


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, ...): ``base_s * 2**(attempt-1)``
    capped at ``max_s``, of which a random half (``jitter`` in [0, 1)) is dropped ("equal jitter"):
    retries of many deliveries spread out instead of hitting a recovering receiver together."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    return ceiling / 2.0 + ceiling / 2.0 * jitter


def next_step(round_attempt: int, policy: RetryPolicy, now: dt.datetime,
              rng: random.Random | None = None) -> tuple[str, dt.datetime | None]:
    """After failed try ``round_attempt`` of the current round: ("dead", None) when the round is
    used up, else ("pending", when to try again)."""
    if policy.max_attempts and round_attempt >= policy.max_attempts:
        return "dead", None
    jitter = (rng or random).random()
    return "pending", now + dt.timedelta(seconds=backoff_s(round_attempt, policy.base_s, policy.max_s, jitter))


__all__ = [
    "EVENT_TYPES",
    "RetryPolicy",
    "backoff_s",
    "check_prompt_glob",
    "may_read",
    "mirrored",
    "next_step",
    "parse_patterns",
    "subscribed",
]
