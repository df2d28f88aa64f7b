"""``promptreg events list/show/retry``: reading the outbox and giving dead deliveries another round."""

from __future__ import annotations

from promptreg.errors import InputError, NotFoundError
from promptreg.services.events.views import DeliveryView, EventView, iso


def _event(s, key: str):
    from promptreg.registry import delivery_queue as dq

    key = str(key).strip()
    if not key or not (key.isdigit() or key.startswith("evt_")):
        raise InputError(f"expected an event number or an evt_… id, got {key!r}")
    ev = dq.event_by_key(s, key)
    if ev is None:
        raise NotFoundError(f"no event {key}")
    return ev


def _views(s, events, with_payload: bool = False, with_log: bool = False) -> list[EventView]:
    from promptreg.registry import delivery_queue as dq

    rows = dq.deliveries(s, event_row_ids=[e.id for e in events], limit=100_000, newest_first=False) if events else []
    log = dq.attempts(s, [d.id for d, _e in rows]) if with_log else {}
    by_event: dict[int, list[DeliveryView]] = {}
    for d, e in rows:
        by_event.setdefault(e.id, []).append(DeliveryView.of(d, e, log.get(d.id, ())))
    return [EventView(e.id, e.event_id, e.type, e.prompt_name, iso(e.created_at), e.fanned_out_at is not None,
                      by_event.get(e.id, []), dict(e.payload) if with_payload else None) for e in events]


def list_events(registry, *, prompt: str | None = None, type_: str | None = None, limit: int = 50) -> list[EventView]:
    """The newest events (of one prompt / one type), with the state of each delivery."""
    from promptreg.registry import delivery_queue as dq
    from promptreg.registry import queries as q

    with registry.session() as s:
        prompt_id = q.get_prompt(s, prompt).id if prompt else None
        return _views(s, dq.events(s, prompt_id=prompt_id, type_=type_, limit=limit))


def list_deliveries(registry, status: str, *, prompt: str | None = None, limit: int = 100) -> list[DeliveryView]:
    """Deliveries in one state (``dead``: parked after too many tries; ``pending``), newest first."""
    from promptreg.registry import delivery_queue as dq
    from promptreg.registry import queries as q

    with registry.session() as s:
        prompt_id = q.get_prompt(s, prompt).id if prompt else None
        return [DeliveryView.of(d, e) for d, e in dq.deliveries(s, status=status, prompt_id=prompt_id, limit=limit)]


def show_event(registry, key: str) -> EventView:
    """One event with its payload, its deliveries and every try."""
    with registry.session() as s:
        return _views(s, [_event(s, key)], with_payload=True, with_log=True)[0]


def retry(registry, keys: list[str] | None = None, *, target: str | None = None) -> list[DeliveryView]:
    """Give the dead deliveries of these events (all dead ones when ``keys`` is None) a new round of
    tries, due now; the deliveries that were revived."""
    from promptreg.registry import delivery_queue as dq
    from promptreg.registry.models import utcnow

    with registry.session() as s:
        row_ids = None
        if keys is not None:
            row_ids = [_event(s, k).id for k in keys]
        ids = dq.retry(s, utcnow(), event_row_ids=row_ids, target=target)
        if not ids and keys is not None:
            raise InputError(f"nothing to retry: no dead delivery for {', '.join(keys)}"
                             + (f" to {target}" if target else ""))
        revived = set(ids)
        return [DeliveryView.of(d, e) for d, e in dq.deliveries(s, event_row_ids=row_ids, limit=100_000)
                if d.id in revived]


def counts(registry) -> dict[str, int]:
    from promptreg.registry import delivery_queue as dq

    with registry.session() as s:
        return dq.counts(s)


__all__ = ["counts", "list_deliveries", "list_events", "retry", "show_event"]
