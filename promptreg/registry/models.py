"""Registry database tables (the source of truth).

The schema is created and changed ONLY by the Alembic migrations under ``migrations/``; these classes
must agree with them (tests/test_migrations.py compares both with ``alembic.autogenerate``).

Datetimes are stored in UTC and always read back as timezone-aware UTC ``datetime`` objects, on
SQLite (which has no time zones and stores them naive) as on PostgreSQL (``timestamptz``).
"""

# NB: no ``from __future__ import annotations`` here: SQLModel/pydantic resolve the field annotations.

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.mutable import MutableDict
from sqlmodel import Field, SQLModel

#: Stable constraint and index names, identical to the ones written in the migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION

MIRROR_STATUSES = ("pending", "ok", "failed")
VERSION_STATUSES = ("active", "degraded", "incompatible")


def utcnow() -> dt.datetime:
    """The current time as a timezone-aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """``DateTime(timezone=True)`` that stores UTC and always returns aware UTC datetimes.

    Naive datetimes given to it are taken to be UTC already.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            # SQLite stores text without offset: keep it naive UTC so that ordering/comparison works.
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def json_type() -> sa.types.TypeEngine:
    """JSON on SQLite, JSONB on PostgreSQL; in-place changes of the top-level dict are tracked."""
    return MutableDict.as_mutable(sa.JSON().with_variant(postgresql.JSONB(), "postgresql"))


#: 64-bit primary key that still autoincrements on SQLite (only INTEGER PRIMARY KEY does there).
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Prompt(SQLModel, table=True):
    __tablename__ = "prompt"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(128), nullable=False, unique=True))
    task_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    description: str | None = Field(
        default="", sa_column=sa.Column(sa.Text, nullable=True, server_default="")
    )
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    created_by: str = Field(
        default="", sa_column=sa.Column(sa.String(128), nullable=False, server_default="")
    )


class PromptVersion(SQLModel, table=True):
    __tablename__ = "prompt_version"
    __table_args__ = (
        sa.UniqueConstraint("prompt_id", "number", name="uq_version_number"),
        sa.UniqueConstraint("prompt_id", "sha256", name="uq_version_sha256"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    prompt_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=False, index=True)
    )
    number: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    artifact_uri: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    size_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    method: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    method_config: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(json_type(), nullable=False)
    )
    base_model_fingerprint: str = Field(
        sa_column=sa.Column(sa.String(64), nullable=False, index=True)
    )
    base_model_name: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    dataset_fingerprint: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(64), nullable=True)
    )
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    manifest: dict[str, Any] = Field(sa_column=sa.Column(json_type(), nullable=False))
    mlflow_run_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    mlflow_model_version: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(32), nullable=True)
    )
    mirror_status: str = Field(
        default="pending", sa_column=sa.Column(sa.String(16), nullable=False, server_default="pending")
    )
    mirror_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    status: str = Field(
        default="active", sa_column=sa.Column(sa.String(16), nullable=False, server_default="active")
    )
    description: str | None = Field(
        default="", sa_column=sa.Column(sa.Text, nullable=True, server_default="")
    )
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class Alias(SQLModel, table=True):
    __tablename__ = "alias"
    __table_args__ = (sa.UniqueConstraint("prompt_id", "name", name="uq_alias_name"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    prompt_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt_version.id"), nullable=False)
    )
    row_version: int = Field(
        default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1")
    )
    updated_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    updated_by: str = Field(
        default="", sa_column=sa.Column(sa.String(128), nullable=False, server_default="")
    )


class AuditEvent(SQLModel, table=True):
    """Append-only: the database rejects UPDATE and DELETE on this table (triggers, migration 0001)."""

    __tablename__ = "audit_event"

    id: int | None = Field(
        default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True)
    )
    at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )
    actor: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    action: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    prompt_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=True, index=True)
    )
    alias: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    from_version: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    to_version: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    token_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    """The public id of the API token that authenticated the request (``promptreg server``), else None."""


class EvalRun(SQLModel, table=True):
    """One version evaluated on one regression suite with one base model (``promptreg eval``).

    The per-example outcomes are a content-addressed JSON document in the artifact store
    (``outcomes_uri`` / ``outcomes_sha256``); metrics and check results are kept here for queries.
    The newest row for (version, suite sha256, base-model fingerprint) is the cached result."""

    __tablename__ = "eval_run"
    __table_args__ = (
        sa.Index("ix_eval_run_key", "version_id", "suite_sha256", "base_model_fingerprint"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    version_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt_version.id"), nullable=False)
    )
    suite_name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    suite_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    base_model_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    dataset_fingerprints: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(json_type(), nullable=False)
    )
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    checks: list[Any] = Field(default_factory=list, sa_column=sa.Column(sa.JSON().with_variant(
        postgresql.JSONB(), "postgresql"), nullable=False))
    outcomes_uri: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    outcomes_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    mlflow_run_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    seconds: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0"))
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class GateResult(SQLModel, table=True):
    """A gate verdict: candidate vs baseline on a suite with a base model (``promptreg gate``).

    Cache key: (candidate sha256, baseline sha256 or "" for no baseline, suite sha256, base-model
    fingerprint); the newest matching row is reused instead of recomputing."""

    __tablename__ = "gate_result"
    __table_args__ = (
        sa.Index("ix_gate_result_key", "candidate_sha256", "baseline_sha256", "suite_sha256",
                 "base_model_fingerprint"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    prompt_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=False))
    candidate_version_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt_version.id"), nullable=False)
    )
    baseline_version_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt_version.id"), nullable=True)
    )
    candidate_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    baseline_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    suite_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    base_model_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    against: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    passed: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    report: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class Schedule(SQLModel, table=True):
    """A recurring drift check of ``prompt@alias`` on ``data_uri`` (``promptreg schedule add``).

    ``next_run_at`` is the next due fire time of ``cron`` (UTC). ``lease_owner``/``lease_until`` is
    the claim of the process that is running (or last ran) a check of this schedule; a claim is a
    compare-and-swap on the lease (promptreg.scheduling.schedules)."""

    __tablename__ = "schedule"
    __table_args__ = (sa.UniqueConstraint("prompt_id", "alias", "data_uri"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    prompt_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=False))
    alias: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    cron: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    data_uri: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    suite_path: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    enabled: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.true())
    )
    next_run_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False, index=True))
    last_run_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    lease_owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    lease_until: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class ScheduleRun(SQLModel, table=True):
    """One due slot of a schedule. UNIQUE (schedule_id, slot_at): a slot has one row for ever, so it
    is run at most once to completion; an interrupted attempt is retried by updating this row
    (``attempts`` + 1), never by inserting another."""

    __tablename__ = "schedule_run"
    __table_args__ = (sa.UniqueConstraint("schedule_id", "slot_at"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    schedule_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("schedule.id"), nullable=False)
    )
    slot_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    finished_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    status: str = Field(
        default="running", sa_column=sa.Column(sa.String(16), nullable=False, index=True)
    )
    owner: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    attempts: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    drift_report_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))


class DriftReport(SQLModel, table=True):
    """One drift check of a version on fresh data (``promptreg drift``, or a schedule).

    ``schedule_run_id``: the schedule_run this report answers, written in the same transaction as
    the report, so that a scheduler that dies after the report but before marking its run finished
    does not run the check again (no foreign key: removing a schedule keeps its reports)."""

    __tablename__ = "drift_report"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    prompt_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt.id"), nullable=False, index=True)
    )
    version_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("prompt_version.id"), nullable=False)
    )
    alias: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    data_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    data_uri: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    base_model_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    statistics: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(json_type(), nullable=False))
    decision: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    action: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    action_detail: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(json_type(), nullable=False)
    )
    report_uri: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    report_sha256: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    mlflow_run_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    schedule_run_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, nullable=True, index=True)
    )
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class EnvironmentModel(SQLModel, table=True):
    """The base model deployed in an environment (``promptreg env set-base-model``)."""

    __tablename__ = "environment_model"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    base_model_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    base_model_path: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    updated_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    updated_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class ApiToken(SQLModel, table=True):
    """An API token of ``promptreg server`` (migration 0004): ``prt_<token_id>_<secret>``.

    Only ``secret_hash`` (SHA-256 of the whole token) is stored, never the secret. A token is never
    deleted: ``revoked_at`` ends it (the audit log keeps naming its ``token_id``). ``prompts`` and
    ``aliases`` are lists of glob patterns (``fnmatch``) the role applies to."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    token_id: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    prompts: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON().with_variant(
        postgresql.JSONB(), "postgresql"), nullable=False))
    aliases: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON().with_variant(
        postgresql.JSONB(), "postgresql"), nullable=False))
    secret_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_by: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    expires_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_used_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    revoked_at: dt.datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    revoked_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))


def stamp_token_id(session, token_id: str) -> None:
    """Give every AuditEvent added to ``session`` (and not given one) ``token_id``, as it is flushed:
    the API token of the principal a ``promptreg server`` request acts for."""
    from sqlalchemy import event

    @event.listens_for(session, "before_flush")
    def _stamp(sess, _context, _instances) -> None:
        for obj in sess.new:
            if isinstance(obj, AuditEvent) and obj.token_id is None:
                obj.token_id = token_id


__all__ = [
    "NAMING_CONVENTION",
    "MIRROR_STATUSES",
    "VERSION_STATUSES",
    "Alias",
    "ApiToken",
    "AuditEvent",
    "DriftReport",
    "EnvironmentModel",
    "EvalRun",
    "GateResult",
    "Prompt",
    "PromptVersion",
    "Schedule",
    "ScheduleRun",
    "UTCDateTime",
    "json_type",
    "stamp_token_id",
    "utcnow",
]

# The outbox tables and the listener that publishes every audit event in its own transaction: imported
# here (at the end: it builds on the classes above) so that they are registered wherever these are.
from promptreg.registry import outbox as _outbox  # noqa: E402,F401
