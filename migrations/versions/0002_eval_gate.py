"""Evaluation runs and gate results (issue 4): eval_run, gate_result.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
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
        "eval_run",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("suite_name", sa.String(length=64), nullable=False),
        sa.Column("suite_sha256", sa.String(length=64), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("dataset_fingerprints", _json(), nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("checks", _json(), nullable=False),
        sa.Column("outcomes_uri", sa.Text(), nullable=False),
        sa.Column("outcomes_sha256", sa.String(length=64), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["prompt_version.id"],
                                name=op.f("fk_eval_run_version_id_prompt_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_run")),
    )
    op.create_index("ix_eval_run_key", "eval_run", ["version_id", "suite_sha256", "base_model_fingerprint"])

    op.create_table(
        "gate_result",
        sa.Column("id", _bigint_pk(), nullable=False, autoincrement=True),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("candidate_version_id", sa.Integer(), nullable=False),
        sa.Column("baseline_version_id", sa.Integer(), nullable=True),
        sa.Column("candidate_sha256", sa.String(length=64), nullable=False),
        sa.Column("baseline_sha256", sa.String(length=64), nullable=False),
        sa.Column("suite_sha256", sa.String(length=64), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("against", sa.String(length=64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report", _json(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_gate_result_prompt_id_prompt")),
        sa.ForeignKeyConstraint(["candidate_version_id"], ["prompt_version.id"],
                                name=op.f("fk_gate_result_candidate_version_id_prompt_version")),
        sa.ForeignKeyConstraint(["baseline_version_id"], ["prompt_version.id"],
                                name=op.f("fk_gate_result_baseline_version_id_prompt_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_result")),
    )
    op.create_index("ix_gate_result_key", "gate_result",
                    ["candidate_sha256", "baseline_sha256", "suite_sha256", "base_model_fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_gate_result_key", table_name="gate_result")
    op.drop_table("gate_result")
    op.drop_index("ix_eval_run_key", table_name="eval_run")
    op.drop_table("eval_run")
