"""Drift re-evaluation and scheduling (issue 5): schedule, schedule_run, drift_report, environment_model.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
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
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("data_uri", sa.Text(), nullable=False),
        sa.Column("suite_path", sa.Text(), nullable=True),
        sa.Column("policy", _json(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("next_run_at", _ts(), nullable=False),
        sa.Column("last_run_at", _ts(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_schedule_prompt_id_prompt")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule")),
        sa.UniqueConstraint("prompt_id", "alias", "data_uri", name=op.f("uq_schedule_prompt_id_alias_data_uri")),
    )
    op.create_index(op.f("ix_schedule_next_run_at"), "schedule", ["next_run_at"])

    op.create_table(
        "schedule_run",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("slot_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("drift_report_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedule.id"],
                                name=op.f("fk_schedule_run_schedule_id_schedule")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_run")),
        sa.UniqueConstraint("schedule_id", "slot_at", name=op.f("uq_schedule_run_schedule_id_slot_at")),
    )
    op.create_index(op.f("ix_schedule_run_status"), "schedule_run", ["status"])

    op.create_table(
        "drift_report",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=True),
        sa.Column("data_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("data_uri", sa.Text(), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("statistics", _json(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("action_detail", _json(), nullable=False),
        sa.Column("report_uri", sa.Text(), nullable=True),
        sa.Column("report_sha256", sa.String(length=64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("schedule_run_id", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_drift_report_prompt_id_prompt")),
        sa.ForeignKeyConstraint(["version_id"], ["prompt_version.id"],
                                name=op.f("fk_drift_report_version_id_prompt_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_report")),
    )
    op.create_index(op.f("ix_drift_report_prompt_id"), "drift_report", ["prompt_id"])
    op.create_index(op.f("ix_drift_report_schedule_run_id"), "drift_report", ["schedule_run_id"])

    op.create_table(
        "environment_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("base_model_path", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_model")),
        sa.UniqueConstraint("name", name=op.f("uq_environment_model_name")),
    )


def downgrade() -> None:
    op.drop_table("environment_model")
    op.drop_index(op.f("ix_drift_report_schedule_run_id"), table_name="drift_report")
    op.drop_index(op.f("ix_drift_report_prompt_id"), table_name="drift_report")
    op.drop_table("drift_report")
    op.drop_index(op.f("ix_schedule_run_status"), table_name="schedule_run")
    op.drop_table("schedule_run")
    op.drop_index(op.f("ix_schedule_next_run_at"), table_name="schedule")
    op.drop_table("schedule")
