"""What the events and webhook verbs return (plain dataclasses; ``to_dict`` for ``--json``).
A webhook's secret is never part of any of them."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


def iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


@dataclass
class AttemptView:
    number: int
    worker: str
    started_at: str | None
    finished_at: str | None
    outcome: str
    status_code: int | None
    error: str | None

    @classmethod
    def of(cls, a) -> AttemptView:
        return cls(a.number, a.worker, iso(a.started_at), iso(a.finished_at), a.outcome, a.status_code, a.error)


@dataclass
class DeliveryView:
    id: int
    event: int
    event_id: str
    type: str
    prompt: str | None
    target: str
    status: str
    attempts: int
    round_attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_status_code: int | None
    last_error: str | None
    log: list[AttemptView] = field(default_factory=list)

    @classmethod
    def of(cls, d, e, log=()) -> DeliveryView:
        return cls(d.id, e.id, e.event_id, e.type, e.prompt_name, d.target, d.status, d.attempts,
                   d.attempts - d.retry_base, iso(d.next_attempt_at) if d.status == "pending" else None,
                   iso(d.delivered_at), d.last_status_code, d.last_error, [AttemptView.of(a) for a in log])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EventView:
    id: int
    event_id: str
    type: str
    prompt: str | None
    created_at: str | None
    fanned_out: bool
    deliveries: list[DeliveryView] = field(default_factory=list)
    payload: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        """One word for the event: ``new`` before fan-out, else the worst of its deliveries."""
        if not self.fanned_out:
            return "new"
        if not self.deliveries:
            return "no targets"
        for st in ("dead", "pending", "cancelled"):
            if any(d.status == st for d in self.deliveries):
                return st
        return "delivered"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass
class WebhookView:
    id: int
    url: str
    events: list[str]
    prompts: str | None
    description: str | None
    created_by: str
    created_at: str | None
    removed_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)   # deliveries by status

    @classmethod
    def of(cls, h, counts: dict[str, int] | None = None) -> WebhookView:
        return cls(h.id, h.url, list(h.events or []), h.prompts, h.description, h.created_by, iso(h.created_at),
                   iso(h.removed_at), dict(counts or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["AttemptView", "DeliveryView", "EventView", "WebhookView", "iso"]
