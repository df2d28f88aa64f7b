"""Webhook delivery under failure (issue 16 acceptance), with real ``promptreg events run`` workers:

* a 200-event run reaches a loopback receiver exactly once per idempotency key (``webhook-id``), every
  request correctly signed (checked with the ``standardwebhooks`` package), although the worker is
  SIGKILLed at random points 20 times and the receiver answers 500 to every fifth request;
* two workers at once (PostgreSQL): every delivery made once, by the attempt log and by the receiver,
  none lost, and both workers did part of the work.

Run with ``-s`` to see the figures (duplicates caused by the kills, tries marked lost, timings).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from promptreg.registry.db import dispose_engines
from promptreg.registry.outbox import OutboxAttempt, OutboxDelivery, OutboxEvent
from tests.cli_utils import _CLEAN, PROMPTREG
from tests.fixtures.services import free_port
from tests.helpers import make_artifact
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

N_EVENTS = 200


def _env(db_url: str, tmp_path: Path, key: str) -> dict[str, str]:
    return {"PROMPTREG_DB_URL": db_url, "PROMPTREG_HOME": str(tmp_path / "home"),
            "PROMPTREG_ARTIFACT_URI": str(tmp_path / "artifacts"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "PROMPTREG_WEBHOOK_KEY": key, "PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "1",
            # the MLflow mirror is not the subject here: its deliveries wait
            "PROMPTREG_EVENTS_MLFLOW_DELAY_S": "3600",
            "PROMPTREG_EVENTS_BACKOFF_BASE_S": "0.2", "PROMPTREG_EVENTS_BACKOFF_MAX_S": "1",
            "PROMPTREG_EVENTS_MAX_ATTEMPTS": "100"}


def _setup(db_url: str, tmp_path: Path, monkeypatch, receiver: Receiver) -> tuple[dict[str, str], object]:
    from promptreg.services.events.signing import new_key
    from promptreg.services.events.webhooks import add_webhook
    from promptreg.services.registry import Registry

    env = _env(db_url, tmp_path, new_key())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reg = Registry(home=env["PROMPTREG_HOME"], db_url=db_url, tracking_uri=env["MLFLOW_TRACKING_URI"],
                   artifact_uri=env["PROMPTREG_ARTIFACT_URI"])
    _view, receiver.secret = add_webhook(reg, receiver.url, "*")   # its own webhook.add is event 1
    return env, reg


def _make_events(reg, tmp_path: Path, n: int) -> None:
    """n - 1 more events: 2 pushes, then alias moves."""
    for seed in (1, 2):
        reg.push(make_artifact(tmp_path / f"a{seed}", seed=seed), "p")
    for i in range(n - 3):
        reg.set_alias("p", "staging", 1 + i % 2)


def _worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    full.update(env)
    return subprocess.Popen([PROMPTREG, "events", "run", "--quiet", "--lease-s", "2", "--poll-s", "0.1", *args],
                            cwd=cwd, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _webhook_deliveries(reg) -> list:
    with reg.session() as s:
        return list(s.execute(sa.select(OutboxDelivery).where(OutboxDelivery.target != "mlflow")).scalars())


def _wait_delivered(reg, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        done = [d for d in _webhook_deliveries(reg) if d.status == "delivered"]
        if len(done) == n:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"{len(done)} of {n} delivered after {timeout} s"
        time.sleep(0.3)


def _attempt_log(reg) -> dict[int, list[tuple[int, str, str]]]:
    log: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    with reg.session() as s:
        for a in s.execute(sa.select(OutboxAttempt).order_by(OutboxAttempt.delivery_id, OutboxAttempt.number)).scalars():
            log[a.delivery_id].append((a.number, a.outcome, a.worker))
    return log


def _event_ids(reg) -> set[str]:
    with reg.session() as s:
        return set(s.execute(sa.select(OutboxEvent.event_id)).scalars())


def test_200_events_survive_20_sigkills_and_a_flaky_receiver(tmp_path, monkeypatch):
    receiver = Receiver(fail_every=5, delay_s=0.05).start()
    rng = random.Random(16)
    try:
        env, reg = _setup(f"sqlite:///{tmp_path}/registry.db", tmp_path, monkeypatch, receiver)
        _make_events(reg, tmp_path, N_EVENTS)
        ids = _event_ids(reg)
        assert len(ids) == N_EVENTS
        t0 = time.monotonic()
        kills = []
        for _ in range(20):
            proc = _worker(env, tmp_path, "--batch", "4", "--concurrency", "2")
            seen = len(receiver.snapshot())
            deadline = time.monotonic() + 120
            while len(receiver.snapshot()) == seen and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)  # wait until this worker is delivering
            time.sleep(rng.uniform(0.0, 0.4))  # then a random point: claiming, posting or recording
            _kill(proc)
            kills.append(proc.returncode)
        assert kills == [-signal.SIGKILL] * 20
        before_final = len(receiver.snapshot())
        proc = _worker(env, tmp_path)
        try:
            _wait_delivered(reg, N_EVENTS, timeout=240)
        finally:
            _kill(proc, signal.SIGTERM)
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        total_s = time.monotonic() - t0
    finally:
        receiver.stop()

    got = receiver.snapshot()
    assert all(r.valid for r in got), [r.msg_id for r in got if not r.valid][:5]
    accepted = Counter(r.msg_id for r in got if r.status == 200)
    assert set(accepted) == ids                          # every event, none unknown
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for r in got:
        bodies[r.msg_id].add(r.body)
    assert all(len(b) == 1 for b in bodies.values())     # a retry sends the same bytes
    assert sum(1 for r in got if r.status == 500) == len(got) // 5
    assert before_final < len(got)
    log = _attempt_log(reg)
    deliveries = _webhook_deliveries(reg)
    assert len(deliveries) == N_EVENTS and all(d.status == "delivered" for d in deliveries)
    for d in deliveries:  # exactly one recorded success per delivery; tries numbered 1..n
        tries = log[d.id]
        assert [n for n, _o, _w in tries] == list(range(1, len(tries) + 1))
        assert [o for _n, o, _w in tries].count("ok") == 1 and tries[-1][1] == "ok"
    lost = sum(o == "lost" for tries in log.values() for _n, o, _w in tries)
    workers = {w for tries in log.values() for _n, _o, w in tries}
    duplicates = sum(n - 1 for n in accepted.values())
    print(f"\n200 events, 20 SIGKILLs, 500 on every 5th request: {len(got)} requests "
          f"({sum(r.status == 500 for r in got)} answered 500), {duplicates} duplicate deliveries (same webhook-id, "
          f"dropped by the receiver), {lost} tries marked lost, {len(workers)} worker processes, {total_s:.1f} s")


def test_two_workers_deliver_each_event_once(pg_url, tmp_path, monkeypatch):
    receiver = Receiver(delay_s=0.01).start()
    procs = []
    try:
        env, reg = _setup(pg_url, tmp_path, monkeypatch, receiver)
        assert reg.engine is not None  # the schema exists before the workers start
        procs = [_worker(env, tmp_path, "--batch", "5", "--concurrency", "2") for _ in range(2)]
        for p in procs:  # both are running before the first event commits
            line = p.stderr.readline().decode()
            assert "delivering" in line, line
        t0 = time.monotonic()
        _make_events(reg, tmp_path, N_EVENTS)
        _wait_delivered(reg, N_EVENTS, timeout=240)
        seconds = time.monotonic() - t0
    finally:
        for p in procs:
            _kill(p, signal.SIGTERM)
        receiver.stop()
        dispose_engines()
    assert [p.returncode for p in procs] == [0, 0]
    got = receiver.snapshot()
    assert all(r.valid for r in got)
    assert sorted(r.msg_id for r in got) == sorted(_event_ids(reg))     # each once: no duplicate, none lost
    log = _attempt_log(reg)
    assert len(log) == N_EVENTS and all([(n, o) for n, o, _w in t] == [(1, "ok")] for t in log.values())
    share = Counter(w for t in log.values() for _n, _o, w in t)
    assert len(share) == 2, share                                    # both workers delivered some
    print(f"\ntwo workers on PostgreSQL: {N_EVENTS} events delivered once each in {seconds:.1f} s "
          f"(while they were being created); split {sorted(share.values())}")
