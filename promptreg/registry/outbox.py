"""The transactional outbox: every audited change publishes an event in its own transaction.

Invariants
----------
* An ``outbox_event`` row exists if and only if its change committed. There is ONE writer: the
  ``after_flush`` listener registered below on the registry's Session class. For every
  :class:`AuditEvent` that a flush inserts, it inserts the matching outbox row on the same
  connection, inside the same transaction; so a change that rolls back (or whose process dies before
  the commit) leaves neither row, and a change that commits always has both. Every state change
  already writes an audit event as an ORM object (``s.add(AuditEvent(...))``), so every present and
  future audited action is published without touching the code that makes the change. (An audit
  event written with a Core ``insert()`` would bypass the listener: write them as ORM objects.)
* The payload is built from the audit event alone (plus the prompt's name, which never changes) and
  is never updated: retries send the same bytes, and ``event_id`` (``evt_…``) is the idempotency key
  (the Standard Webhooks ``webhook-id``).
* Delivery state lives elsewhere (``outbox_delivery``: one row per event and target, UNIQUE on
  (event, target); ``outbox_attempt``: one row per try, UNIQUE on (delivery, number)); the rules
  are in promptreg.registry.delivery_queue.
* Crash-test checkpoint: with PROMPTREG_FAULT_PAUSE=before_commit, a transaction that wrote an outbox
  row pauses after its last flush and before its COMMIT (tests kill it there).

This module is imported at the end of promptreg.registry.models, so the listener is registered
whenever the registry tables are.
"""

# NB: no ``from __future__ import annotations`` here: SQLModel/pydantic resolve the field annotations.

import datetime as dt
import os
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import util as orm_util
from sqlmodel import Field, Session, SQLModel

from promptreg.registry.models import AuditEvent, BigIntPK, Prompt, UTCDateTime, json_type, utcnow

#: Identifies the payload layout (docs/events.md); bumped on an incompatible change.
SCHEMA = "promptreg.event/1"
DELIVERY_STATUSES = ("pending", "delivered", "dead", "cancelled")
ATTEMPT_OUTCOMES = ("running", "ok", "failed", "lost")
MLFLOW_TARGET = "mlflow"

_FAULT_ENV = "PROMPTREG_FAULT_PAUSE"
_WROTE = "promptreg.outbox.wrote"


class OutboxEvent(SQLModel, table=True):
    """One published event. Written only by the listener below (or ``webhook test``: ``target`` set)."""

    __tablename__ = "outbox_event"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    event_id: str = Field(sa_column=sa.Column(sa.String(40), nullable=False, unique=True))
    type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    audit_event_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("audit_event.id"), nullable=True, unique=True)
    )
    prompt_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=True, index=True)
    )
    prompt_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    #: deliver to this target only (``webhook test``); None: every subscribed target
    target: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    #: when the delivery rows were created (None: not yet: the worker's fan-out picks it up)
    fanned_out_at: dt.datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True, index=True)
    )


class Webhook(SQLModel, table=True):
    """A subscriber. The secret is stored encrypted (Fernet, key from the environment); removing a
    webhook keeps the row (``removed_at``) so its delivery history stays readable."""

    __tablename__ = "webhook"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    url: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    events: list[Any] = Field(default_factory=list, sa_column=sa.Column(
        sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False))
    prompts: str | None = Field(default=None, sa_column=sa.Column(sa.String(256), nullable=True))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    secret_encrypted: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    removed_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    removed_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))


class OutboxDelivery(SQLModel, table=True):
    """One event to one target (``mlflow`` or ``webhook:<id>``): claimed with a lease, retried with
    backoff, ``dead`` after too many attempts in a row (``events retry`` starts a new round)."""

    __tablename__ = "outbox_delivery"
    __table_args__ = (
        sa.UniqueConstraint("outbox_event_id", "target"),
        sa.Index("ix_outbox_delivery_due", "status", "next_attempt_at"),
        sa.Index("ix_outbox_delivery_group", "target", "prompt_id", "status"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    outbox_event_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("outbox_event.id"), nullable=False)
    )
    target: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    webhook_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("webhook.id"), nullable=True, index=True)
    )
    prompt_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    status: str = Field(
        default="pending", sa_column=sa.Column(sa.String(16), nullable=False, server_default="pending")
    )
    #: tries so far (numbers the attempt log; never reset)
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    #: ``attempts`` when the current round began (``events retry`` sets it)
    retry_base: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    next_attempt_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    lease_owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    lease_until: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    last_status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    delivered_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class OutboxAttempt(SQLModel, table=True):
    """The attempt log: one row per try of a delivery. UNIQUE (delivery, number): two workers can never
    both record try N of the same delivery."""

    __tablename__ = "outbox_attempt"
    __table_args__ = (sa.UniqueConstraint("delivery_id", "number"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    delivery_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("outbox_delivery.id"), nullable=False)
    )
    number: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    worker: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    started_at: dt.datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    finished_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    outcome: str = Field(
        default="running", sa_column=sa.Column(sa.String(16), nullable=False, server_default="running")
    )
    status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


# ----------------------------------------------------------------------------------------- events (pure)


def event_type(action: str, details: dict[str, Any] | None) -> str:
    """The published type of an audit action: the action itself, except ``gate`` (``gate.passed`` /
    ``gate.failed``) and the drift service's status changes ``flag``/``unflag`` (``drift.flag`` /
    ``drift.unflag``)."""
    if action == "gate":
        return "gate.passed" if (details or {}).get("passed") else "gate.failed"
    if action in ("flag", "unflag"):
        return f"drift.{action}"
    return action


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def build_payload(event_id: str, type_: str, at: dt.datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON document delivered for an event (docs/events.md has its schema)."""
    return {"schema": SCHEMA, "id": event_id, "type": type_, "timestamp": _iso(at), "data": data}


def audit_payload(event_id: str, audit: AuditEvent, prompt_name: str | None) -> dict[str, Any]:
    data = {"prompt": prompt_name, "alias": audit.alias, "from_version": audit.from_version,
            "to_version": audit.to_version, "actor": audit.actor, "action": audit.action,
            "reason": audit.reason, "audit_event_id": audit.id, "details": dict(audit.details or {})}
    return build_payload(event_id, event_type(audit.action, audit.details), audit.at or utcnow(), data)


def outbox_row(audit: AuditEvent, prompt_name: str | None) -> dict[str, Any]:
    """The ``outbox_event`` values for one flushed audit event."""
    event_id = new_event_id()
    payload = audit_payload(event_id, audit, prompt_name)
    return {"event_id": event_id, "type": payload["type"], "audit_event_id": audit.id,
            "prompt_id": audit.prompt_id, "prompt_name": prompt_name, "payload": payload,
            "target": None, "created_at": audit.at or utcnow(), "fanned_out_at": None}


# ----------------------------------------------------------------------------------------- the listener


def _prompt_names(session: Session, ids: set[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for pid in ids:  # the changing code has usually loaded its prompt: no query then
        obj = session.identity_map.get(orm_util.identity_key(Prompt, pid))
        if obj is not None:
            names[pid] = obj.name
    missing = sorted(ids - set(names))
    if missing:
        rows = session.connection().execute(sa.select(Prompt.__table__.c.id, Prompt.__table__.c.name)
                                            .where(Prompt.__table__.c.id.in_(missing)))
        names.update({pid: name for pid, name in rows})
    return names


@sa_event.listens_for(Session, "after_flush")
def _publish_audit_events(session: Session, _flush_context) -> None:
    audits = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if not audits:
        return
    names = _prompt_names(session, {a.prompt_id for a in audits if a.prompt_id is not None})
    rows = [outbox_row(a, names.get(a.prompt_id)) for a in sorted(audits, key=lambda a: a.id)]
    session.connection().execute(sa.insert(OutboxEvent.__table__), rows)
    session.info[_WROTE] = True


@sa_event.listens_for(Session, "before_commit")
def _fault_before_commit(session: Session) -> None:
    if os.environ.get(_FAULT_ENV) != "before_commit":
        return
    if session.info.get(_WROTE) or any(isinstance(obj, AuditEvent) for obj in session.new):
        session.flush()
        from promptreg.registry.store import fault_point

        fault_point("before_commit")


@sa_event.listens_for(Session, "after_commit")
@sa_event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_WROTE, None)


__all__ = [
    "ATTEMPT_OUTCOMES",
    "DELIVERY_STATUSES",
    "MLFLOW_TARGET",
    "SCHEMA",
    "OutboxAttempt",
    "OutboxDelivery",
    "OutboxEvent",
    "Webhook",
    "audit_payload",
    "build_payload",
    "event_type",
    "new_event_id",
    "outbox_row",
]
