"""Registry database layer: migrations, models/migration agreement, database-enforced rules,
ensure_schema behaviour, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from promptreg.errors import PromptregError, StoreUnavailableError
from promptreg.registry import migrate
from promptreg.registry.db import check, dispose_engines, make_engine, session, translate_db_error
from promptreg.registry.models import Alias, AuditEvent, Prompt, PromptVersion, utcnow
from tests.fixtures.services import free_port

REPO = Path(__file__).resolve().parents[1]
TABLES = {"prompt", "prompt_version", "alias", "audit_event", "eval_run", "gate_result", "schedule", "schedule_run", "drift_report", "environment_model",
          "outbox_event", "outbox_delivery", "outbox_attempt", "webhook"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database URL on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/nested/dir/registry.db"
    else:
        url = request.getfixturevalue("pg_url")
    yield url
    dispose_engines()  # release pooled connections before pg_url drops the database


def _tables(url: str) -> set[str]:
    with make_engine(url).connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def _schema_diff(url: str) -> list:
    with make_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)


def _triggers(url: str) -> set[str]:
    with make_engine(url).connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            rows = conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "UNION ALL SELECT proname FROM pg_proc WHERE proname = 'audit_event_append_only'"
            )
        return {r[0] for r in rows}


def _version(prompt_id: int, number: int, sha: str) -> PromptVersion:
    return PromptVersion(
        prompt_id=prompt_id,
        number=number,
        sha256=sha,
        artifact_uri=f"file:///store/{sha}",
        size_bytes=5 * 1024**3,  # > 2**31: needs BIGINT
        method="prompt_tuning",
        method_config={"num_virtual_tokens": 20},
        base_model_fingerprint="f" * 64,
        manifest={"format": 1, "files": {"adapter_model.safetensors": sha}},
        created_by="tester",
    )


def _new_prompt(url: str, name: str) -> int:
    with session(make_engine(url)) as s:
        p = Prompt(name=name, created_by="tester")
        s.add(p)
        s.flush()
        return p.id


# --------------------------------------------------------------------------------------------------
# migrations


def test_head_revision_matches_migration_scripts():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert script.get_heads() == [migrate.HEAD_REVISION]


def test_upgrade_downgrade_upgrade_and_models_agree(db_url):
    assert migrate.current_revision(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.HEAD_REVISION
    assert TABLES <= _tables(db_url)
    assert _schema_diff(db_url) == []
    assert _triggers(db_url)

    migrate.downgrade(db_url, "base")
    assert migrate.current_revision(db_url) is None
    assert _tables(db_url) & TABLES == set()
    assert _triggers(db_url) == set()

    migrate.upgrade(db_url, "head")
    assert migrate.current_revision(db_url) == migrate.HEAD_REVISION
    assert _schema_diff(db_url) == []


def test_alembic_cli_uses_env_url(tmp_path):
    url = f"sqlite:///{tmp_path}/cli/registry.db"
    env = {**os.environ, "PROMPTREG_DB_URL": url}
    alembic_bin = str(Path(sys.executable).with_name("alembic"))
    r = subprocess.run([alembic_bin, "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert migrate.current_revision(url) == migrate.HEAD_REVISION
    r = subprocess.run([alembic_bin, "-c", str(REPO / "alembic.ini"), "current"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert migrate.HEAD_REVISION in r.stdout
    dispose_engines()


# --------------------------------------------------------------------------------------------------
# rules the database enforces


def test_audit_event_is_append_only(db_url):
    migrate.upgrade(db_url)
    pid = _new_prompt(db_url, "p1")
    engine = make_engine(db_url)
    with session(engine) as s:
        s.add(AuditEvent(actor="alice", action="push", prompt_id=pid, to_version=1, details={"k": [1, 2]}))
        s.add(AuditEvent(actor="alice", action="alias.set", prompt_id=pid, alias="prod", to_version=1))

    for stmt in ("UPDATE audit_event SET actor = 'mallory'", "DELETE FROM audit_event"):
        with pytest.raises(sa.exc.IntegrityError, match="append-only"):
            with session(engine) as s:
                s.execute(sa.text(stmt))

    with pytest.raises(sa.exc.IntegrityError, match="append-only"):
        with session(engine) as s:
            ev = s.get(AuditEvent, 1)
            ev.reason = "tampered"  # ORM update, flushed at commit

    with session(engine) as s:
        s.add(AuditEvent(actor="bob", action="promote", prompt_id=pid, from_version=1, to_version=2))
    with session(engine) as s:
        rows = s.execute(sa.select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
    assert [(r.id, r.actor) for r in rows] == [(1, "alice"), (2, "alice"), (3, "bob")]
    assert rows[0].details == {"k": [1, 2]}


def test_version_unique_constraints(db_url):
    migrate.upgrade(db_url)
    p1 = _new_prompt(db_url, "p1")
    p2 = _new_prompt(db_url, "p2")
    engine = make_engine(db_url)
    with session(engine) as s:
        s.add(_version(p1, 1, "a" * 64))

    with pytest.raises(sa.exc.IntegrityError, match="uq_version_number|UNIQUE"):
        with session(engine) as s:
            s.add(_version(p1, 1, "b" * 64))  # same number
    with pytest.raises(sa.exc.IntegrityError, match="uq_version_sha256|UNIQUE"):
        with session(engine) as s:
            s.add(_version(p1, 2, "a" * 64))  # same content under the same prompt

    with session(engine) as s:
        s.add(_version(p2, 1, "a" * 64))  # same content under another prompt: fine
        s.add(_version(p1, 2, "c" * 64))
    with pytest.raises(sa.exc.IntegrityError):
        with session(engine) as s:
            s.add(Prompt(name="p1"))  # prompt names are unique

    with session(engine) as s:
        v = s.execute(sa.select(PromptVersion).where(PromptVersion.prompt_id == p2)).scalar_one()
    assert v.size_bytes == 5 * 1024**3
    assert v.mirror_status == "pending" and v.status == "active"
    assert v.metrics == {} and v.manifest["format"] == 1


def test_foreign_keys_and_alias_defaults(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with pytest.raises(sa.exc.IntegrityError):
        with session(engine) as s:
            s.add(_version(12345, 1, "a" * 64))  # no such prompt (SQLite: PRAGMA foreign_keys=ON)

    pid = _new_prompt(db_url, "p")
    with session(engine) as s:
        v = _version(pid, 1, "a" * 64)
        s.add(v)
        s.flush()
        s.add(Alias(prompt_id=pid, name="prod", version_id=v.id, updated_by="alice"))
    with pytest.raises(sa.exc.IntegrityError):
        with session(engine) as s:
            s.add(Alias(prompt_id=pid, name="prod", version_id=v.id))  # uq_alias_name
    with session(engine) as s:
        a = s.execute(sa.select(Alias)).scalar_one()
    assert a.row_version == 1


def test_datetimes_read_back_aware_utc(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    cest = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2025, 6, 1, 14, 30, 0, 123456, tzinfo=cest)
    with session(engine) as s:
        s.add(Prompt(name="p", created_at=moment))
        s.add(AuditEvent(actor="a", action="push"))
    with session(engine) as s:
        p = s.execute(sa.select(Prompt)).scalar_one()
        ev = s.execute(sa.select(AuditEvent)).scalar_one()
        later = s.execute(sa.select(Prompt).where(Prompt.created_at > moment - dt.timedelta(seconds=1)))
        assert later.scalar_one().id == p.id
    assert p.created_at == moment
    assert p.created_at.utcoffset() == dt.timedelta(0)
    assert ev.at.utcoffset() == dt.timedelta(0)
    assert abs((utcnow() - ev.at).total_seconds()) < 60


def test_session_rolls_back_on_error(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with pytest.raises(RuntimeError):
        with session(engine) as s:
            s.add(Prompt(name="never"))
            s.flush()
            raise RuntimeError("boom")
    with session(engine) as s:
        assert s.execute(sa.select(Prompt)).first() is None


# --------------------------------------------------------------------------------------------------
# ensure_schema


def test_ensure_schema_creates_schema_on_empty_db(db_url):
    migrate.ensure_schema(db_url, auto_upgrade=False)
    assert migrate.current_revision(db_url) == migrate.HEAD_REVISION
    assert TABLES <= _tables(db_url)
    migrate.ensure_schema(db_url, auto_upgrade=False)  # idempotent


FAST_PATH_SCRIPT = textwrap.dedent(
    """
    import sys
    from promptreg.registry import models  # noqa: F401
    from promptreg.registry.migrate import ensure_schema
    ensure_schema(sys.argv[1], auto_upgrade=False)
    heavy = sorted(m for m in ("alembic", "torch", "mlflow", "transformers", "great_expectations")
                   if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
    """
)


def test_ensure_schema_fast_path_does_not_import_alembic(db_url):
    migrate.upgrade(db_url)
    r = subprocess.run([sys.executable, "-c", FAST_PATH_SCRIPT, db_url], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY=\n" in r.stdout, r.stdout


def test_ensure_schema_refuses_newer_and_older_schema(db_url, monkeypatch):
    migrate.upgrade(db_url)
    with make_engine(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(PromptregError, match="schema 9999 is newer than this promptreg"):
        migrate.ensure_schema(db_url, auto_upgrade=True)

    with make_engine(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    # pretend this promptreg needs a later revision than the database has
    monkeypatch.setattr(migrate, "HEAD_REVISION", "0002")
    with pytest.raises(PromptregError, match="schema is at 0001, this promptreg needs 0002: run `promptreg db"):
        migrate.ensure_schema(db_url, auto_upgrade=False)


def test_unreachable_postgres_is_store_unavailable():
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        migrate.ensure_schema(url, auto_upgrade=True)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "unreachable" in msg and "127.0.0.1" in msg
    assert "s3cret" not in msg and "\n" not in msg
    with pytest.raises(StoreUnavailableError):
        check(make_engine(url))
    dispose_engines()


def test_translate_db_error_masks_password():
    exc = sa.exc.OperationalError("select 1", {}, Exception("connection refused\nIs the server running?"))
    err = translate_db_error(exc, "postgresql+psycopg://u:pw@db.example:5432/reg")
    assert isinstance(err, StoreUnavailableError)
    assert str(err) == "registry database postgresql+psycopg://u:***@db.example:5432/reg unreachable: " \
                       "connection refused"


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from promptreg.registry.migrate import ensure_schema, current_revision
    url, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))
    ensure_schema(url, auto_upgrade=False)
    print("REV=" + str(current_revision(url)))
    """
)


def test_concurrent_first_use(db_url):
    if db_url.startswith("sqlite"):
        Path(db_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    start = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, db_url, repr(start)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for rc, out, err in results:
        assert rc == 0, err
        assert f"REV={migrate.HEAD_REVISION}" in out
    assert migrate.current_revision(db_url) == migrate.HEAD_REVISION
    assert _schema_diff(db_url) == []


def test_json_columns_roundtrip_nested(db_url):
    migrate.upgrade(db_url)
    pid = _new_prompt(db_url, "p")
    engine = make_engine(db_url)
    manifest = {"format": 1, "nested": {"list": [1, 2.5, "x", None, True]}, "unicode": "é✓"}
    with session(engine) as s:
        v = _version(pid, 1, "a" * 64)
        v.manifest = manifest
        s.add(v)
    with session(engine) as s:
        v = s.execute(sa.select(PromptVersion)).scalar_one()
        assert v.manifest == manifest
        v.metrics["accuracy"] = 0.91  # in-place change of the top-level dict is persisted
    with session(engine) as s:
        v = s.execute(sa.select(PromptVersion)).scalar_one()
    assert v.metrics == {"accuracy": 0.91}
    assert json.loads(json.dumps(v.manifest)) == manifest
