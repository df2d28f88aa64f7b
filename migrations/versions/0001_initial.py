"""Initial registry schema: prompt, prompt_version, alias, audit_event (append-only).

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "audit_event is append-only"


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prompt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True, server_default=""),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt")),
        sa.UniqueConstraint("name", name=op.f("uq_prompt_name")),
    )

    op.create_table(
        "prompt_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("method_config", _json(), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("base_model_name", sa.Text(), nullable=True),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("manifest", _json(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("mlflow_model_version", sa.String(length=32), nullable=True),
        sa.Column("mirror_status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("mirror_error", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="active"),
        sa.Column("description", sa.Text(), nullable=True, server_default=""),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompt.id"], name=op.f("fk_prompt_version_prompt_id_prompt")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_version")),
        sa.UniqueConstraint("prompt_id", "number", name="uq_version_number"),
        sa.UniqueConstraint("prompt_id", "sha256", name="uq_version_sha256"),
    )
    op.create_index(op.f("ix_prompt_version_prompt_id"), "prompt_version", ["prompt_id"])
    op.create_index(
        op.f("ix_prompt_version_base_model_fingerprint"), "prompt_version", ["base_model_fingerprint"]
    )

    op.create_table(
        "alias",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_alias_prompt_id_prompt")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["prompt_version.id"], name=op.f("fk_alias_version_id_prompt_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias")),
        sa.UniqueConstraint("prompt_id", "name", name="uq_alias_name"),
    )

    op.create_table(
        "audit_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("alias", sa.String(length=64), nullable=True),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompt.id"], name=op.f("fk_audit_event_prompt_id_prompt")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index(op.f("ix_audit_event_at"), "audit_event", ["at"])
    op.create_index(op.f("ix_audit_event_prompt_id"), "audit_event", ["prompt_id"])

    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index(op.f("ix_audit_event_prompt_id"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_at"), table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_table("alias")
    op.drop_index(op.f("ix_prompt_version_base_model_fingerprint"), table_name="prompt_version")
    op.drop_index(op.f("ix_prompt_version_prompt_id"), table_name="prompt_version")
    op.drop_table("prompt_version")
    op.drop_table("prompt")


def _dialect() -> str:
    return op.get_context().dialect.name


def _create_append_only_triggers() -> None:
    dialect = _dialect()
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_event_no_{event.lower()} BEFORE {event} ON audit_event "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        # SQLSTATE 23001 (restrict_violation, an integrity-constraint class): drivers report it as an
        # IntegrityError, like SQLite's RAISE(ABORT) which is a constraint failure.
        op.execute(
            "CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}' USING ERRCODE = 'restrict_violation'; END; $$"
        )
        op.execute(
            "CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
        )
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"append-only triggers for {dialect} are not written")


def _drop_append_only_triggers() -> None:
    dialect = _dialect()
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update_delete ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
