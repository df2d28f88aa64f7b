"""The transactional outbox (issue 16) on SQLite and PostgreSQL: every audited change publishes one
event in its own transaction, a change that does not commit publishes nothing (also when its process
is SIGKILLed between the change and the COMMIT), fan-out and claims are exclusive, a delivery that
keeps failing is parked as dead and ``events retry`` delivers it once the receiver is back."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from promptreg.registry.db import dispose_engines
from promptreg.registry.outbox import OutboxAttempt, OutboxDelivery, OutboxEvent, event_type
from tests.cli_utils import _CLEAN, PROMPTREG, run_cli
from tests.fixtures.services import free_port
from tests.helpers import make_artifact
from tests.webhook_receiver import Receiver


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    url = f"sqlite:///{tmp_path}/registry.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    yield url
    dispose_engines()


def _no_mlflow_env(monkeypatch, key: str | None = None) -> dict[str, str]:
    """MLflow unreachable at once (the registry is the subject here) and loopback webhooks allowed."""
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "1",
           "PROMPTREG_EVENTS_MLFLOW_DELAY_S": "3600", "PROMPTREG_WEBHOOK_KEY": key or _key()}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _key() -> str:
    from promptreg.services.events.signing import new_key

    return new_key()


def _registry(db_url: str, tmp_path: Path):
    from promptreg.services.registry import Registry

    return Registry(home=str(tmp_path / "home"), db_url=db_url, tracking_uri=f"http://127.0.0.1:{free_port()}",
                    artifact_uri=str(tmp_path / "artifacts"))


def _rows(reg, model) -> list:
    with reg.session() as s:
        return list(s.execute(sa.select(model).order_by(model.id)).scalars())


def test_every_audited_change_publishes_exactly_one_event(db_url, tmp_path, monkeypatch):
    from promptreg.registry.models import AuditEvent
    from promptreg.services import lifecycle
    from promptreg.services.drift.record import set_status as _set_status
    from promptreg.services.events.webhooks import add_webhook, remove_webhook
    from promptreg.services.schedule import add_schedule, remove_schedule

    _no_mlflow_env(monkeypatch)
    reg = _registry(db_url, tmp_path)
    for seed in (1, 2):
        res = reg.push(make_artifact(tmp_path / f"a{seed}", seed=seed), "p")
        assert res.version.mirror_status == "failed"  # MLflow down: the push still commits (and publishes)
    lifecycle.promote(reg, "p:1", to="staging")
    lifecycle.promote(reg, "p:2", to="staging")
    lifecycle.rollback(reg, "p", "staging")
    reg.set_alias("p", "canary", 2)
    _set_status(reg, reg.show("p:2"), "degraded", reason="drift: test", details={"data_uri": "x"})
    sched = add_schedule(reg, "p@staging", "0 3 * * *", str(tmp_path / "fresh.jsonl"))
    remove_schedule(reg, sched.id)
    hook, _secret = add_webhook(reg, "http://127.0.0.1:9/hook", "*")
    remove_webhook(reg, hook.id)

    audits, events = _rows(reg, AuditEvent), _rows(reg, OutboxEvent)
    assert [e.audit_event_id for e in events] == [a.id for a in audits]
    assert [e.type for e in events] == [event_type(a.action, a.details) for a in audits] == [
        "push", "push", "promote", "promote", "rollback", "alias.set", "drift.flag", "schedule.add",
        "schedule.remove", "webhook.add", "webhook.remove"]
    for a, e in zip(audits, events, strict=True):
        data = e.payload["data"]
        assert e.payload["id"] == e.event_id and e.event_id.startswith("evt_")
        assert (data["audit_event_id"], data["action"], data["to_version"], data["alias"]) == \
            (a.id, a.action, a.to_version, a.alias)
        assert e.prompt_name == ("p" if a.prompt_id else None) == data["prompt"]
    assert len({e.event_id for e in events}) == len(events)
    assert "9/hook" not in str(events[-2].payload)  # a webhook's path never goes into an event


def test_a_change_that_rolls_back_publishes_nothing(db_url, tmp_path, monkeypatch):
    from promptreg.errors import ConflictError

    _no_mlflow_env(monkeypatch)
    reg = _registry(db_url, tmp_path)
    reg.push(make_artifact(tmp_path / "a1", seed=1), "p")
    reg.push(make_artifact(tmp_path / "a2", seed=2), "p")
    reg.set_alias("p", "staging", 1)
    before = len(_rows(reg, OutboxEvent))

    def boom(_s):
        raise RuntimeError("fails after the alias row and the audit event were flushed")

    with pytest.raises(RuntimeError):
        reg.set_alias("p", "staging", 2, in_transaction=boom)
    with pytest.raises(ConflictError):  # lost compare-and-swap: nothing written
        reg.set_alias("p", "staging", 2, expected_version=2)
    assert reg.show("p@staging").version == 1
    assert len(_rows(reg, OutboxEvent)) == before


# --------------------------------------------------------------------------------------------------
# crash between the change and the commit


def _kill_at(stage: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    full = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    full.update(env)
    full["PROMPTREG_FAULT_PAUSE"] = stage
    proc = subprocess.Popen([PROMPTREG, *args], cwd=cwd, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    killer = threading.Timer(240, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        for raw in proc.stderr:
            if raw.decode().strip() == f"PAUSE {stage}":
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        killer.cancel()
    assert proc.returncode == -signal.SIGKILL, f"{args} did not pause at {stage}"


def _counts(db_url: str) -> dict[str, int]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as c:
            return {t: c.execute(sa.text(f"select count(*) from {t}")).scalar()
                    for t in ("prompt_version", "alias", "audit_event", "outbox_event")}
    finally:
        eng.dispose()


def test_crash_between_change_and_commit_leaves_neither_row(tmp_path, monkeypatch):
    """SIGKILL at the ``before_commit`` fault point (the change and its outbox row are flushed, the
    COMMIT is not sent) leaves neither; at ``after_commit`` both exist, and the outbox mirrors the
    version that the killed push never mirrored, without `promptreg sync`."""
    from promptreg.registry.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    env = {"PROMPTREG_HOME": str(tmp_path / "home"), "PROMPTREG_DB_URL": db,
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PROMPTREG_EVENTS_MLFLOW_DELAY_S": "0"}
    (tmp_path / "home").mkdir()
    upgrade(db)
    a1, a2 = make_artifact(tmp_path / "a1", seed=1), make_artifact(tmp_path / "a2", seed=2)

    _kill_at("before_commit", ["push", str(a1), "--name", "p"], tmp_path, env)
    assert _counts(db) == {"prompt_version": 0, "alias": 0, "audit_event": 0, "outbox_event": 0}

    _kill_at("after_commit", ["push", str(a1), "--name", "p"], tmp_path, env)  # committed, never mirrored
    assert _counts(db) == {"prompt_version": 1, "alias": 0, "audit_event": 1, "outbox_event": 1}
    assert run_cli("push", a2, "--name", "p", cwd=tmp_path, env=env).code == 0
    assert run_cli("promote", "p:1", "--to", "staging", cwd=tmp_path, env=env).code == 0
    before = _counts(db)

    _kill_at("before_commit", ["promote", "p:2", "--to", "staging"], tmp_path, env)
    assert _counts(db) == before
    res = run_cli("show", "p@staging", "--json", cwd=tmp_path, env=env)
    assert res.json()["version"] == 1

    monkeypatch.setenv("PROMPTREG_EVENTS_MLFLOW_DELAY_S", "0")
    from promptreg.services.events.worker import EventWorker
    from promptreg.services.registry import Registry

    reg = Registry(home=env["PROMPTREG_HOME"], db_url=db, tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert reg.show("p:1").mirror_status == "pending"
    stats = EventWorker(reg).run_once()
    assert stats.count("delivered") == 3 and stats.count("pending") == 0, stats.to_dict()
    assert reg.show("p:1").mirror_status == "ok"
    assert reg.mirror.get_aliases("p") == {"staging": reg.show("p:1").mlflow_model_version}
    assert reg.sync().repaired == 0


# --------------------------------------------------------------------------------------------------
# queue: fan-out, claims, dead letters


def _promote_n(reg, n: int) -> None:
    reg.push(make_artifact(Path(reg.settings.home) / "a1", seed=1), "p")
    reg.push(make_artifact(Path(reg.settings.home) / "a2", seed=2), "p")
    for i in range(n - 2):
        reg.set_alias("p", "staging", 1 + i % 2)


def test_fan_out_and_claims_are_exclusive(db_url, tmp_path, monkeypatch):
    import datetime as dt

    from promptreg.registry import delivery_queue as dq
    from promptreg.services.events.webhooks import add_webhook
    from promptreg.services.events.worker import EventWorker

    _no_mlflow_env(monkeypatch)
    reg = _registry(db_url, tmp_path)
    add_webhook(reg, "http://127.0.0.1:9/a", "push,alias.set")
    add_webhook(reg, "http://127.0.0.1:9/b", "alias.*")
    _promote_n(reg, 12)
    workers = [EventWorker(reg, owner=f"w{i}") for i in range(3)]
    threads = [threading.Thread(target=w.fan_out) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deliveries = _rows(reg, OutboxDelivery)
    targets = sorted((d.outbox_event_id, d.target) for d in deliveries)
    assert len(targets) == len(set(targets)) == 12 + 12 + 10  # mlflow: all 12; hook a: 12; hook b: 10 moves
    assert all(e.fanned_out_at is not None for e in _rows(reg, OutboxEvent))

    now = dt.datetime.now(dt.UTC)
    with reg.session() as s:
        a = dq.claim_webhook_deliveries(s, "w0", now, 60, 10)
    with reg.session() as s:
        b = dq.claim_webhook_deliveries(s, "w1", now, 60, 100)
    assert len(a) == 10 and len(b) == 12 and not {c.delivery_id for c in a} & {c.delivery_id for c in b}
    with reg.session() as s:
        assert dq.claim_webhook_deliveries(s, "w2", now, 60, 100) == []
        later = now + dt.timedelta(seconds=61)  # leases expired: another worker takes over, as try 2
        c = dq.claim_webhook_deliveries(s, "w2", later, 60, 100)
    assert len(c) == 22 and {x.attempt for x in c} == {2}
    stale, fresh = a[0], next(x for x in c if x.delivery_id == a[0].delivery_id)
    with reg.session() as s:  # the first claimer lost its lease: its outcome changes nothing
        assert not dq.finish(s, stale, now=later, ok=True, status="delivered", status_code=200)
        assert dq.finish(s, fresh, now=later, ok=True, status="delivered", status_code=200)
    log = {(x.delivery_id, x.number): x.outcome for x in _rows(reg, OutboxAttempt)}
    assert (log[(stale.delivery_id, 1)], log[(stale.delivery_id, 2)]) == ("lost", "ok")
    assert sorted(o for (_d, n), o in log.items() if n == 1) == ["lost"] * 22  # the takeover closed every try 1


def test_dead_after_max_attempts_then_retry_delivers(tmp_path, monkeypatch):
    from promptreg.services.events import outbox
    from promptreg.services.events.config import EventSettings
    from promptreg.services.events.webhooks import add_webhook, webhook_deliveries
    from promptreg.services.events.worker import EventWorker

    _no_mlflow_env(monkeypatch)
    reg = _registry(f"sqlite:///{tmp_path}/registry.db", tmp_path)
    port = free_port()  # nobody listens: the receiver is down for good
    hook, secret = add_webhook(reg, f"http://127.0.0.1:{port}/hook", "push")
    reg.push(make_artifact(tmp_path / "a1"), "p")
    cfg = EventSettings(webhook_allow_private=True, max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.1,
                        mlflow_delay_s=3600)
    worker = EventWorker(reg, cfg)
    statuses = []
    deadline = time.monotonic() + 30
    while not statuses or statuses[-1] != "dead":
        assert time.monotonic() < deadline
        statuses += [o.status for o in worker.run_once().outcomes]
        time.sleep(0.06)
    assert statuses == ["pending", "pending", "dead"]
    dead = outbox.list_deliveries(reg, "dead")
    assert [(d.type, d.target, d.attempts) for d in dead] == [("push", f"webhook:{hook.id}", 3)]
    assert "ConnectionRefusedError" in dead[0].last_error
    assert worker.run_once().outcomes == []  # dead: not tried again by itself

    receiver = Receiver(port, secret=secret).start()
    try:
        revived = outbox.retry(reg, [dead[0].event_id])
        assert [d.id for d in revived] == [dead[0].id]
        assert [o.status for o in worker.run_once().outcomes] == ["delivered"]
    finally:
        receiver.stop()
    got = receiver.snapshot()
    assert [(r.msg_id, r.valid) for r in got] == [(dead[0].event_id, True)]
    [view] = webhook_deliveries(reg, hook.id)
    assert view.status == "delivered" and [a.outcome for a in view.log] == ["failed"] * 3 + ["ok"]
    assert [a.number for a in view.log] == [1, 2, 3, 4] and view.round_attempts == 1


def test_webhook_cli(tmp_path):
    """add (loopback refused by default), list (no secret), test, deliveries, remove; one-line errors."""
    from tests.cli_utils import assert_one_line_error

    env = {"PROMPTREG_HOME": str(tmp_path / "home")}
    res = run_cli("webhook", "add", "http://127.0.0.1:9/x", "--events", "promote", cwd=tmp_path, env=env)
    assert_one_line_error(res, 2, "private or loopback")
    res = run_cli("webhook", "add", "http://127.0.0.1:9/x", "--events", "promot", cwd=tmp_path, env=env)
    assert_one_line_error(res, 2, "unknown event type")
    (tmp_path / "promptreg.toml").write_text("[events]\nwebhook_allow_private = true\n")
    res = run_cli("webhook", "add", "http://127.0.0.1:9/x", "--events", "promote", cwd=tmp_path, env=env)
    assert_one_line_error(res, 2, "PROMPTREG_WEBHOOK_KEY is not set")
    env["PROMPTREG_WEBHOOK_KEY"] = run_cli("webhook", "keygen", cwd=tmp_path).out.strip()

    receiver = Receiver().start()
    try:
        res = run_cli("webhook", "add", receiver.url, "--events", "promote,gate.*", "--prompts", "team-a.*",
                      "--json", cwd=tmp_path, env=env)
        assert res.code == 0, res.err
        added = res.json()
        receiver.secret = added["secret"]
        assert added["secret"].startswith("whsec_")
        res = run_cli("webhook", "list", "--json", cwd=tmp_path, env=env)
        assert res.code == 0 and added["secret"] not in res.out and "secret" not in res.out
        assert res.json()[0]["events"] == ["promote", "gate.*"]
        res = run_cli("webhook", "test", str(added["id"]), cwd=tmp_path, env=env)
        assert res.code == 0 and "HTTP 200" in res.out, res.out + res.err
        [got] = receiver.snapshot()
        assert got.valid and got.payload["type"] == "webhook.test"
        res = run_cli("webhook", "deliveries", str(added["id"]), "--json", cwd=tmp_path, env=env)
        assert [(d["type"], d["status"], d["log"][0]["status_code"]) for d in res.json()] == \
            [("webhook.test", "delivered", 200)]
        assert run_cli("webhook", "remove", str(added["id"]), cwd=tmp_path, env=env).code == 0
        assert_one_line_error(run_cli("webhook", "test", str(added["id"]), cwd=tmp_path, env=env), 2, "was removed")
        res = run_cli("events", "list", "--json", cwd=tmp_path, env=env)
        assert [e["type"] for e in res.json()] == ["webhook.remove", "webhook.test", "webhook.add"]
        assert_one_line_error(run_cli("events", "retry", "evt_nope", cwd=tmp_path, env=env), 2, "no event evt_nope")
    finally:
        receiver.stop()


def test_scheduler_delivers_events_in_a_thread(tmp_path, monkeypatch):
    """`promptreg scheduler` runs the event worker too; SIGTERM stops both, exit 0."""
    from promptreg.services.events.webhooks import add_webhook

    env = _no_mlflow_env(monkeypatch)
    db = f"sqlite:///{tmp_path}/registry.db"
    reg = _registry(db, tmp_path)
    receiver = Receiver().start()
    try:
        _view, receiver.secret = add_webhook(reg, receiver.url, "push")
        reg.push(make_artifact(tmp_path / "a1"), "p")
        full = {k: v for k, v in os.environ.items() if k not in _CLEAN}
        full.update(env, PROMPTREG_DB_URL=db, PROMPTREG_HOME=str(tmp_path / "home"),
                    MLFLOW_TRACKING_URI=reg.settings.tracking_uri)
        proc = subprocess.Popen([PROMPTREG, "scheduler", "--poll-s", "0.5"], cwd=tmp_path, env=full,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not receiver.snapshot():
                assert time.monotonic() < deadline and proc.poll() is None, "no event delivered by the scheduler"
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            err = proc.communicate(timeout=60)[1].decode()
    finally:
        receiver.stop()
    assert proc.returncode == 0, err
    assert "delivering events" in err
    [got] = receiver.snapshot()
    assert got.valid and got.payload["type"] == "push" and got.payload["data"]["prompt"] == "p"
