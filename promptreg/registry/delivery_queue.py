"""The delivery queue over the outbox: fan-out, claims with a lease, outcomes, retries, reads.

Every function takes an open session ``s`` and runs inside the caller's ONE transaction.

Invariants
----------
* Fan-out: an event's delivery rows are created once, in the transaction that flips its
  ``fanned_out_at`` from NULL (a compare-and-swap), and UNIQUE (event, target) forbids a second row
  for the same target: each event reaches each target at most through one delivery row.
* Claim (the pattern of promptreg.services.schedule): ``UPDATE outbox_delivery SET lease_owner=me,
  lease_until=now+lease, attempts=attempts+1 WHERE id=? AND status='pending' AND (lease_until IS
  NULL OR lease_until < now)``; 0 rows: another worker has it. On PostgreSQL the row lock makes a
  concurrent claimer wait and re-check the lease; on SQLite every transaction is BEGIN IMMEDIATE. The
  attempt row (number = the new ``attempts``) is inserted in the same transaction: UNIQUE (delivery,
  number) means two workers can never both record the same try. A try left ``running`` by a worker
  that died is marked ``lost`` when the delivery is claimed again.
* MLflow deliveries are claimed as a GROUP per prompt, in id order: the prompt's lowest pending row
  (its head) is claimed first by the same compare-and-swap, and only if it is due; then every due
  pending row of that prompt. While one worker holds the head no other can claim any row of the
  prompt, so the mirror of one registered model is written by one worker at a time, oldest event
  first.
* Outcome: the attempt row is finished and the delivery updated only while the lease is still the
  claimer's (``lease_owner`` and ``attempts`` unchanged): a worker whose lease expired and was taken
  over records its try but changes nothing else.
* ``retry`` turns ``dead`` back into ``pending`` and starts a new round (``retry_base = attempts``):
  the attempt log keeps counting, so old tries are never overwritten.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from promptreg.errors import NotFoundError
from promptreg.registry.outbox import MLFLOW_TARGET, OutboxAttempt, OutboxDelivery, OutboxEvent, Webhook

D = OutboxDelivery.__table__.c
E = OutboxEvent.__table__.c
A = OutboxAttempt.__table__.c


def _free(now: dt.datetime):
    return sa.or_(D.lease_until.is_(None), D.lease_until < now)


@dataclass
class Claimed:
    """One claimed delivery: what the worker needs to deliver it and to record the outcome."""

    delivery_id: int
    attempt: int            # this try's number (the delivery's ``attempts`` after the claim)
    round_attempt: int      # tries in the current round (``attempts - retry_base``), for backoff/dead
    owner: str
    target: str
    webhook_id: int | None
    prompt_id: int | None
    prompt_name: str | None
    event_row_id: int
    event_id: str
    type: str
    payload: dict[str, Any]
    created_at: dt.datetime


# ----------------------------------------------------------------------------------------- fan-out


def unfanned_events(s, limit: int = 200) -> list[OutboxEvent]:
    return list(s.execute(sa.select(OutboxEvent).where(OutboxEvent.fanned_out_at.is_(None))
                          .order_by(OutboxEvent.id).limit(limit)).scalars())


def live_webhooks(s) -> list[Webhook]:
    return list(s.execute(sa.select(Webhook).where(Webhook.removed_at.is_(None)).order_by(Webhook.id)).scalars())


def fan_out(s, event_row_id: int, targets: list[tuple[str, int | None, dt.datetime]], prompt_id: int | None,
            now: dt.datetime) -> bool:
    """Create the delivery rows (target, webhook id, first due time) of one event; False (nothing
    written) if another worker fanned it out first."""
    got = s.execute(sa.update(OutboxEvent.__table__).where(E.id == event_row_id, E.fanned_out_at.is_(None))
                    .values(fanned_out_at=now))
    if got.rowcount != 1:
        return False
    if targets:
        s.execute(sa.insert(OutboxDelivery.__table__), [
            {"outbox_event_id": event_row_id, "target": target, "webhook_id": webhook_id, "prompt_id": prompt_id,
             "status": "pending", "attempts": 0, "retry_base": 0, "next_attempt_at": due, "created_at": now}
            for target, webhook_id, due in targets])
    return True


# ----------------------------------------------------------------------------------------- claims


def _take(s, delivery_id: int, owner: str, now: dt.datetime, until: dt.datetime,
          due_by: dt.datetime | None) -> Claimed | None:
    cond = [D.id == delivery_id, D.status == "pending", _free(now)]
    if due_by is not None:
        cond.append(D.next_attempt_at <= due_by)
    got = s.execute(sa.update(OutboxDelivery.__table__).where(*cond)
                    .values(lease_owner=owner, lease_until=until, attempts=D.attempts + 1))
    if got.rowcount != 1:
        return None
    row = s.execute(sa.select(D.attempts, D.retry_base, D.target, D.webhook_id, D.prompt_id, E.id, E.event_id,
                              E.type, E.payload, E.prompt_name, E.created_at)
                    .join_from(OutboxDelivery.__table__, OutboxEvent.__table__, E.id == D.outbox_event_id)
                    .where(D.id == delivery_id)).one()
    attempts, base, target, webhook_id, prompt_id, ev_id, event_id, type_, payload, prompt_name, created = row
    s.execute(sa.update(OutboxAttempt.__table__).where(A.delivery_id == delivery_id, A.outcome == "running")
              .values(outcome="lost", finished_at=now, error="the worker stopped before recording the outcome"))
    s.execute(sa.insert(OutboxAttempt.__table__).values(delivery_id=delivery_id, number=attempts, worker=owner,
                                                        started_at=now, outcome="running"))
    created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
    return Claimed(delivery_id, attempts, attempts - base, owner, target, webhook_id, prompt_id, prompt_name, ev_id,
                   event_id, type_, dict(payload), created)


def claim_webhook_deliveries(s, owner: str, now: dt.datetime, lease_s: float, limit: int,
                             due_by: dt.datetime | None = None) -> list[Claimed]:
    """Claim up to ``limit`` deliveries to webhooks due by ``due_by`` (default ``now``), oldest first."""
    until, due_by = now + dt.timedelta(seconds=lease_s), due_by or now
    ids = list(s.execute(sa.select(D.id).where(D.status == "pending", D.target != MLFLOW_TARGET,
                                               D.next_attempt_at <= due_by, _free(now))
                         .order_by(D.id).limit(limit)).scalars())
    return [c for c in (_take(s, i, owner, now, until, due_by) for i in ids) if c is not None]


def mlflow_heads(s, now: dt.datetime, due_by: dt.datetime | None = None, limit: int = 50) -> list[int]:
    """The head (lowest pending MLflow delivery) of every prompt whose head is due and free."""
    heads = (sa.select(sa.func.min(D.id).label("id")).where(D.target == MLFLOW_TARGET, D.status == "pending")
             .group_by(D.prompt_id).subquery())
    return list(s.execute(sa.select(D.id).join(heads, heads.c.id == D.id)
                          .where(D.next_attempt_at <= (due_by or now), _free(now)).order_by(D.id).limit(limit))
                .scalars())


def claim_mlflow_group(s, head_id: int, owner: str, now: dt.datetime, lease_s: float,
                       due_by: dt.datetime | None = None) -> list[Claimed]:
    """Claim the head and then every due, free, pending MLflow delivery of its prompt (oldest first);
    [] if the head was taken (or is no longer the head)."""
    until, due_by = now + dt.timedelta(seconds=lease_s), due_by or now
    prompt_id = s.execute(sa.select(D.prompt_id).where(D.id == head_id)).scalar()
    lower = s.execute(sa.select(D.id).where(D.target == MLFLOW_TARGET, D.prompt_id == prompt_id,
                                            D.status == "pending", D.id < head_id).limit(1)).scalar()
    if lower is not None:  # an older event of this prompt committed meanwhile: it goes first
        return []
    head = _take(s, head_id, owner, now, until, due_by)
    if head is None:
        return []
    rest = list(s.execute(sa.select(D.id).where(D.target == MLFLOW_TARGET, D.prompt_id == prompt_id,
                                                D.status == "pending", D.id > head_id, D.next_attempt_at <= due_by,
                                                _free(now)).order_by(D.id)).scalars())
    return [head] + [c for c in (_take(s, i, owner, now, until, due_by) for i in rest) if c is not None]


def claim_delivery(s, delivery_id: int, owner: str, now: dt.datetime, lease_s: float) -> Claimed | None:
    """Claim one pending delivery whether due or not (``webhook test`` delivers its event at once)."""
    return _take(s, delivery_id, owner, now, now + dt.timedelta(seconds=lease_s), None)


def renew(s, owner: str, now: dt.datetime, lease_s: float) -> int:
    """Extend every lease ``owner`` holds; the number of deliveries still held."""
    got = s.execute(sa.update(OutboxDelivery.__table__).where(D.lease_owner == owner, D.status == "pending")
                    .values(lease_until=now + dt.timedelta(seconds=lease_s)))
    return got.rowcount


# ----------------------------------------------------------------------------------------- outcomes


def finish(s, c: Claimed, *, now: dt.datetime, ok: bool, status: str, status_code: int | None = None,
           error: str | None = None, next_attempt_at: dt.datetime | None = None) -> bool:
    """Record the try and move the delivery to ``status`` (delivered, pending with ``next_attempt_at``,
    dead or cancelled). False: the lease was lost meanwhile, only the try is recorded."""
    s.execute(sa.update(OutboxAttempt.__table__)
              .where(A.delivery_id == c.delivery_id, A.number == c.attempt, A.outcome == "running")
              .values(outcome="ok" if ok else "failed", finished_at=now, status_code=status_code,
                      error=None if ok else error))
    values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_until": None,
                              "last_status_code": status_code, "last_error": None if ok else error}
    if ok:
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    got = s.execute(sa.update(OutboxDelivery.__table__)
                    .where(D.id == c.delivery_id, D.lease_owner == c.owner, D.attempts == c.attempt,
                           D.status == "pending").values(**values))
    return got.rowcount == 1


def release(s, owner: str, now: dt.datetime, reason: str) -> int:
    """Give back every delivery ``owner`` holds (a clean stop): due again at once, tries marked lost."""
    held = list(s.execute(sa.select(D.id, D.attempts).where(D.lease_owner == owner, D.status == "pending")))
    for delivery_id, number in held:
        s.execute(sa.update(OutboxAttempt.__table__)
                  .where(A.delivery_id == delivery_id, A.number == number, A.outcome == "running")
                  .values(outcome="lost", finished_at=now, error=reason))
    s.execute(sa.update(OutboxDelivery.__table__).where(D.lease_owner == owner, D.status == "pending")
              .values(lease_owner=None, lease_until=None))
    return len(held)


# ----------------------------------------------------------------------------------------- webhooks


def get_webhook(s, webhook_id: int, *, live: bool = True) -> Webhook:
    """One webhook (``live``: not removed); NotFoundError otherwise."""
    hook = s.get(Webhook, webhook_id)
    if hook is None or (live and hook.removed_at is not None):
        raise NotFoundError(f"no webhook {webhook_id}" + (" (it was removed)" if hook is not None else ""))
    return hook


def add_webhook(s, **fields: Any) -> Webhook:
    hook = Webhook(**fields)
    s.add(hook)
    s.flush()
    return hook


def webhooks(s, *, include_removed: bool = False) -> list[Webhook]:
    q = sa.select(Webhook).order_by(Webhook.id)
    if not include_removed:
        q = q.where(Webhook.removed_at.is_(None))
    return list(s.execute(q).scalars())


def delivery_counts_by_webhook(s) -> dict[int, dict[str, int]]:
    """webhook id -> {delivery status: count}."""
    counts: dict[int, dict[str, int]] = {}
    for hid, status, n in s.execute(sa.select(D.webhook_id, D.status, sa.func.count())
                                    .where(D.webhook_id.is_not(None)).group_by(D.webhook_id, D.status)):
        counts.setdefault(hid, {})[status] = int(n)
    return counts


def mark_removed(s, hook: Webhook, user: str, now: dt.datetime) -> None:
    hook.removed_at, hook.removed_by = now, user
    s.add(hook)


def add_test_delivery(s, hook: Webhook, event_id: str, payload: dict[str, Any], now: dt.datetime) -> int:
    """A ``webhook.test`` event for this webhook only, with its delivery row (already fanned out): its id."""
    target = f"webhook:{hook.id}"
    ev = OutboxEvent(event_id=event_id, type="webhook.test", payload=payload, target=target, created_at=now,
                     fanned_out_at=now)
    s.add(ev)
    s.flush()
    delivery = OutboxDelivery(outbox_event_id=ev.id, target=target, webhook_id=hook.id, status="pending",
                              next_attempt_at=now, created_at=now)
    s.add(delivery)
    s.flush()
    return int(delivery.id)


def cancel_webhook_deliveries(s, webhook_id: int, now: dt.datetime) -> int:
    got = s.execute(sa.update(OutboxDelivery.__table__)
                    .where(D.webhook_id == webhook_id, D.status.in_(("pending", "dead")))
                    .values(status="cancelled", last_error="the webhook was removed", lease_owner=None,
                            lease_until=None))
    return got.rowcount


def retry(s, now: dt.datetime, *, event_row_ids: list[int] | None = None, delivery_ids: list[int] | None = None,
          target: str | None = None) -> list[int]:
    """Dead deliveries (of these events / these deliveries / this target; all dead ones when no filter)
    back to pending, due now, in a new round. Returns the delivery ids."""
    cond = [D.status == "dead"]
    if event_row_ids is not None:
        cond.append(D.outbox_event_id.in_(event_row_ids))
    if delivery_ids is not None:
        cond.append(D.id.in_(delivery_ids))
    if target is not None:
        cond.append(D.target == target)
    ids = list(s.execute(sa.select(D.id).where(*cond).order_by(D.id)).scalars())
    if ids:
        s.execute(sa.update(OutboxDelivery.__table__).where(D.id.in_(ids), D.status == "dead")
                  .values(status="pending", retry_base=D.attempts, next_attempt_at=now, lease_owner=None,
                          lease_until=None))
    return ids


# ----------------------------------------------------------------------------------------- reads


def event_by_key(s, key: str) -> OutboxEvent | None:
    """An event by its ``evt_…`` id or its row number."""
    q = sa.select(OutboxEvent)
    q = q.where(OutboxEvent.id == int(key)) if key.isdigit() else q.where(OutboxEvent.event_id == key)
    return s.execute(q).scalars().first()


def deliveries(s, *, event_row_ids: list[int] | None = None, webhook_id: int | None = None,
               status: str | None = None, prompt_id: int | None = None, limit: int = 100,
               newest_first: bool = True) -> list[tuple[OutboxDelivery, OutboxEvent]]:
    q = sa.select(OutboxDelivery, OutboxEvent).join(OutboxEvent, OutboxEvent.id == OutboxDelivery.outbox_event_id)
    if event_row_ids is not None:
        q = q.where(OutboxDelivery.outbox_event_id.in_(event_row_ids))
    if webhook_id is not None:
        q = q.where(OutboxDelivery.webhook_id == webhook_id)
    if status is not None:
        q = q.where(OutboxDelivery.status == status)
    if prompt_id is not None:
        q = q.where(OutboxDelivery.prompt_id == prompt_id)
    q = q.order_by(OutboxDelivery.id.desc() if newest_first else OutboxDelivery.id).limit(limit)
    return [(d, e) for d, e in s.execute(q).all()]


def events(s, *, prompt_id: int | None = None, type_: str | None = None, limit: int = 50) -> list[OutboxEvent]:
    q = sa.select(OutboxEvent)
    if prompt_id is not None:
        q = q.where(OutboxEvent.prompt_id == prompt_id)
    if type_ is not None:
        q = q.where(OutboxEvent.type == type_)
    return list(s.execute(q.order_by(OutboxEvent.id.desc()).limit(limit)).scalars())


def attempts(s, delivery_ids: list[int]) -> dict[int, list[OutboxAttempt]]:
    out: dict[int, list[OutboxAttempt]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        for a in s.execute(sa.select(OutboxAttempt).where(OutboxAttempt.delivery_id.in_(delivery_ids))
                           .order_by(OutboxAttempt.delivery_id, OutboxAttempt.number)).scalars():
            out[a.delivery_id].append(a)
    return out


def mlflow_work_pending(s, prompt_id: int) -> bool:
    """Whether the MLflow consumer still has work for this prompt: an event of it not yet fanned out,
    or a pending MLflow delivery (a background sync leaves such a prompt to the consumer)."""
    unfanned = sa.select(E.id).where(E.prompt_id == prompt_id, E.fanned_out_at.is_(None), E.target.is_(None)).limit(1)
    pending = sa.select(D.id).where(D.target == MLFLOW_TARGET, D.prompt_id == prompt_id,
                                    D.status == "pending").limit(1)
    return s.execute(unfanned).first() is not None or s.execute(pending).first() is not None


def counts(s) -> dict[str, int]:
    """Deliveries by status, plus ``unfanned`` events not yet split into deliveries."""
    out = {st: 0 for st in ("pending", "delivered", "dead", "cancelled")}
    out.update({st: int(n) for st, n in s.execute(sa.select(D.status, sa.func.count()).group_by(D.status))})
    out["unfanned"] = int(s.execute(sa.select(sa.func.count()).select_from(OutboxEvent.__table__)
                                    .where(E.fanned_out_at.is_(None))).scalar() or 0)
    return out


__all__ = [
    "Claimed",
    "mlflow_work_pending",
    "attempts",
    "cancel_webhook_deliveries",
    "claim_delivery",
    "claim_mlflow_group",
    "claim_webhook_deliveries",
    "counts",
    "deliveries",
    "event_by_key",
    "events",
    "fan_out",
    "finish",
    "live_webhooks",
    "mlflow_heads",
    "release",
    "renew",
    "retry",
    "unfanned_events",
]
