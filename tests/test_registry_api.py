"""promptreg.Registry: push atomicity, idempotency, concurrency, aliases (CAS) and sync."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.errors import ConflictError, NotFoundError, StoreUnavailableError
from tests.fixtures.services import free_port
from tests.helpers import make_artifact


def _registry(tmp_path: Path, **overrides) -> Registry:
    return Registry(home=str(tmp_path / ".promptreg"), **overrides)


def test_push_is_idempotent_and_versions_count_up(tmp_path):
    reg = _registry(tmp_path)
    a, b = make_artifact(tmp_path / "a", seed=1), make_artifact(tmp_path / "b", seed=2)
    r1 = reg.push(a, "p")
    r2 = reg.push(a, "p")
    r3 = reg.push(b, "p")
    assert (r1.created, r2.created, r3.created) == (True, False, True)
    assert (r1.version.version, r2.version.version, r3.version.version) == (1, 1, 2)
    assert r1.version.sha256 == r2.version.sha256
    # the same content under another prompt is a separate version
    assert reg.push(a, "other").version.version == 1
    assert [e.action for e in reg.history("p")] == ["push", "push"]


def test_failed_upload_registers_nothing_and_retry_succeeds(tmp_path, s3_env):
    missing_bucket = f"s3://does-not-exist-{free_port()}/x"
    reg = _registry(tmp_path, artifact_uri=missing_bucket)
    art = make_artifact(tmp_path / "a")
    with pytest.raises(StoreUnavailableError):
        reg.push(art, "p")
    assert reg.list_prompts() == []
    bucket = s3_env.new_bucket()
    reg2 = _registry(tmp_path, artifact_uri=f"s3://{bucket}/artifacts")
    res = reg2.push(art, "p")
    assert res.created and res.version.version == 1
    assert res.version.artifact_uri.startswith(f"s3://{bucket}/artifacts/sha256/")


def test_mirror_failure_is_marked_and_sync_repairs(tmp_path):
    from mlflow.tracking import MlflowClient

    down = _registry(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    res = down.push(make_artifact(tmp_path / "a"), "p")
    assert res.created and res.version.mirror_status == "failed" and res.warnings
    assert "promptreg sync" in res.warnings[0]
    down.set_alias("p", "staging", 1)
    up = _registry(tmp_path)
    assert up.show("p:1").mirror_status == "failed"
    report = up.sync()
    assert report.mirrored == ["p:1"] and report.failed == []
    assert report.aliases_set == ["p@staging"]
    info = up.show("p@staging")
    assert info.mirror_status == "ok" and info.mlflow_model_version == "1"
    client = MlflowClient(tracking_uri=up.settings.tracking_uri)
    assert {k: str(v) for k, v in client.get_registered_model("p").aliases.items()} == {"staging": "1"}
    assert up.sync().repaired == 0  # idempotent


def test_alias_compare_and_swap(tmp_path):
    reg = _registry(tmp_path)
    for seed in (1, 2, 3):
        reg.push(make_artifact(tmp_path / f"a{seed}", seed=seed), "p")
    info = reg.set_alias("p", "production", 1, expected_version=None)
    assert (info.version, info.previous, info.row_version) == (1, None, 1)
    with pytest.raises(ConflictError):
        reg.set_alias("p", "production", 2, expected_version=None)  # it exists already
    info = reg.set_alias("p", "production", 2, expected_version=1, reason="better")
    assert (info.previous, info.row_version) == (1, 2)
    with pytest.raises(ConflictError):
        reg.set_alias("p", "production", 3, expected_version=1)  # stale expectation
    with pytest.raises(NotFoundError):
        reg.set_alias("p", "production", 9)
    assert reg.show("p@production").version == 2
    assert reg.show("p:2").aliases == ["production"]
    events = [(e.action, e.alias, e.from_version, e.to_version, e.reason) for e in reg.history("p")][3:]
    assert events == [("alias.set", "production", None, 1, None), ("alias.set", "production", 1, 2, "better")]


def test_audit_log_is_append_only(tmp_path):
    from sqlalchemy import text

    reg = _registry(tmp_path)
    reg.push(make_artifact(tmp_path / "a"), "p")
    with pytest.raises(Exception, match="append-only"):
        with reg.engine.begin() as conn:
            conn.execute(text("UPDATE audit_event SET actor = 'mallory'"))
    with pytest.raises(Exception, match="append-only"):
        with reg.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event"))
    assert [e.actor for e in reg.history("p")] != ["mallory"]


def _push_worker(args):
    db_url, home, folder, name = args
    reg = Registry(home=home, db_url=db_url, tracking_uri=f"sqlite:///{home}/mlflow-{Path(folder).name}.db")
    return reg.push(folder, name).version.version


@pytest.mark.integration
def test_concurrent_pushes_on_postgres_get_distinct_numbers(tmp_path, pg_url):
    home = str(tmp_path / ".promptreg")
    folders = [make_artifact(tmp_path / f"a{i}", seed=i) for i in range(6)]
    Registry(home=home, db_url=pg_url).init()
    ctx = mp.get_context("spawn")
    with ctx.Pool(6) as pool:
        numbers = pool.map(_push_worker, [(pg_url, home, str(f), "p") for f in folders] +
                           [(pg_url, home, str(folders[0]), "p")])
    assert sorted(set(numbers)) == [1, 2, 3, 4, 5, 6]
    reg = Registry(home=home, db_url=pg_url)
    assert [v.version for v in reg.list_versions("p")] == [1, 2, 3, 4, 5, 6]
    assert len([e for e in reg.history("p") if e.action == "push"]) == 6
