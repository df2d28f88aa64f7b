"""Transactional outbox (issue 16): outbox_event, webhook, outbox_delivery, outbox_attempt.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def _bigint_pk() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox_event",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("audit_event_id", sa.BigInteger(), nullable=True),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("prompt_name", sa.String(length=128), nullable=True),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("fanned_out_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(["audit_event_id"], ["audit_event.id"],
                                name=op.f("fk_outbox_event_audit_event_id_audit_event")),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_outbox_event_prompt_id_prompt")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_event")),
        sa.UniqueConstraint("audit_event_id", name=op.f("uq_outbox_event_audit_event_id")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_event_id")),
    )
    op.create_index(op.f("ix_outbox_event_prompt_id"), "outbox_event", ["prompt_id"])
    op.create_index(op.f("ix_outbox_event_fanned_out_at"), "outbox_event", ["fanned_out_at"])

    op.create_table(
        "webhook",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", _json(), nullable=False),
        sa.Column("prompts", sa.String(length=256), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("removed_at", _ts(), nullable=True),
        sa.Column("removed_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook")),
    )

    op.create_table(
        "outbox_delivery",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("outbox_event_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=True),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retry_base", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _ts(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("delivered_at", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["outbox_event_id"], ["outbox_event.id"],
                                name=op.f("fk_outbox_delivery_outbox_event_id_outbox_event")),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhook.id"], name=op.f("fk_outbox_delivery_webhook_id_webhook")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_delivery")),
        sa.UniqueConstraint("outbox_event_id", "target", name=op.f("uq_outbox_delivery_outbox_event_id_target")),
    )
    op.create_index("ix_outbox_delivery_due", "outbox_delivery", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_delivery_group", "outbox_delivery", ["target", "prompt_id", "status"])
    op.create_index(op.f("ix_outbox_delivery_webhook_id"), "outbox_delivery", ["webhook_id"])

    op.create_table(
        "outbox_attempt",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False, server_default="running"),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["outbox_delivery.id"],
                                name=op.f("fk_outbox_attempt_delivery_id_outbox_delivery")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_attempt")),
        sa.UniqueConstraint("delivery_id", "number", name=op.f("uq_outbox_attempt_delivery_id_number")),
    )


def downgrade() -> None:
    op.drop_table("outbox_attempt")
    op.drop_index(op.f("ix_outbox_delivery_webhook_id"), table_name="outbox_delivery")
    op.drop_index("ix_outbox_delivery_group", table_name="outbox_delivery")
    op.drop_index("ix_outbox_delivery_due", table_name="outbox_delivery")
    op.drop_table("outbox_delivery")
    op.drop_table("webhook")
    op.drop_index(op.f("ix_outbox_event_fanned_out_at"), table_name="outbox_event")
    op.drop_index(op.f("ix_outbox_event_prompt_id"), table_name="outbox_event")
    op.drop_table("outbox_event")
