"""The MLflow mirror driven by the outbox (issue 16 acceptance): our own ``mlflow server`` is stopped
during 20 promotes and 5 pushes; every command succeeds against the registry database; a real
``promptreg events run`` worker keeps retrying; once the server is back (same port) the mirror equals
the database (aliases, alias/status tags, descriptions and their derived tags, versions mirrored)
without ``promptreg sync``, within the bound stated in docs/events.md: the first successful try comes
at most ``mlflow_backoff_max_s`` + the poll interval after MLflow is back (+ slack for a busy machine),
and the rest is the time to write the changes. ``sync`` afterwards has nothing to repair.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from promptreg.registry.outbox import OutboxAttempt, OutboxDelivery
from tests.cli_utils import _CLEAN, PROMPTREG
from tests.helpers import make_artifact

pytestmark = pytest.mark.integration

BACKOFF_MAX_S = 3.0
POLL_S = 0.5
RESUME_S = BACKOFF_MAX_S + POLL_S + 15   # first successful mirror try after MLflow is back (15 s: a busy machine)
BOUND_S = 180.0   # equal: RESUME_S + writing 5 new versions and 2 prompts' state on a busy 2-core machine


def mlflow_differences(reg, name: str) -> list[str]:
    """What MLflow shows differently from the database for prompt ``name`` ([] when equal)."""
    from promptreg.services.describe import collect, model_markdown, version_markdown, wanted_tags

    mirror = reg.mirror
    versions = reg.list_versions(name)
    diffs = [f"{name}:{v.version} not mirrored" for v in versions if v.mirror_status != "ok"]
    if diffs:
        return diffs
    want_aliases = {a: v.mlflow_model_version for v in versions for a in v.aliases}
    if mirror.get_aliases(name) != want_aliases:
        diffs.append(f"aliases {mirror.get_aliases(name)} != {want_aliases}")
    have_tags = mirror.version_tags(name)
    model, facts = collect(reg, name, None, experiment_of=mirror.run_experiment_id)
    from promptreg.services.mirroring import state_tags

    for mv, (number, tags) in state_tags(reg, name).items():
        derived = wanted_tags(next(f for f in facts if f.version == number))
        diffs += [f"{name}:{number} tag {k}" for k, val in {**tags, **derived}.items() if have_tags.get(mv, {}).get(k) != val]
    have_model, have_versions = mirror.descriptions(name)
    if have_model != model_markdown(model):
        diffs.append(f"{name} description")
    diffs += [f"{name}:{f.version} description" for f in facts
              if have_versions.get(f.mlflow_model_version) != version_markdown(f)]
    return diffs


def _converged(reg, names) -> list[str]:
    try:
        return [d for n in names for d in mlflow_differences(reg, n)]
    except Exception as exc:  # noqa: BLE001 - MLflow still starting
        return [f"{type(exc).__name__}: {exc}"]


def test_mirror_converges_after_mlflow_outage_without_sync(tmp_path, monkeypatch):
    from promptreg.services import lifecycle
    from promptreg.services.registry import Registry
    from tests.fixtures import services

    log = tmp_path / "mlflow.log"
    server = services.start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow-backend.db'}",
                                          str(tmp_path / "mlflow-artifacts"), {}, log)
    port = int(server.url.rsplit(":", 1)[1])
    env = {"PROMPTREG_HOME": str(tmp_path / "home"), "PROMPTREG_DB_URL": f"sqlite:///{tmp_path / 'registry.db'}",
           "MLFLOW_TRACKING_URI": server.url, "PROMPTREG_ARTIFACT_URI": str(tmp_path / "artifacts"),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
           "PROMPTREG_EVENTS_MLFLOW_DELAY_S": "1", "PROMPTREG_EVENTS_MLFLOW_BACKOFF_MAX_S": str(BACKOFF_MAX_S)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reg = Registry(home=env["PROMPTREG_HOME"], db_url=env["PROMPTREG_DB_URL"], tracking_uri=server.url,
                   artifact_uri=env["PROMPTREG_ARTIFACT_URI"])
    worker = None
    servers = [server]
    try:
        for name in ("p", "q"):
            for seed in (1, 2):
                res = reg.push(make_artifact(tmp_path / f"{name}{seed}", seed=seed + (10 if name == "q" else 0)), name)
                assert res.version.mirror_status == "ok", res.warnings
        lifecycle.promote(reg, "p:1", to="staging")
        full = {k: v for k, v in os.environ.items() if k not in _CLEAN}
        full.update(env)
        worker_log = open(tmp_path / "worker.log", "wb")  # a file, not a pipe nobody reads while it runs
        worker = subprocess.Popen([PROMPTREG, "events", "run", "--poll-s", str(POLL_S), "--lease-s", "30"],
                                  cwd=tmp_path, env=full, stdout=worker_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

        server.stop()
        t_down = time.monotonic()
        warnings, seeds = 0, iter(range(3, 100))
        numbers = {"p": [1, 2], "q": [1, 2]}
        for i in range(25):
            name = "pq"[i % 2]
            if i % 5 == 4:  # 5 pushes
                res = reg.push(make_artifact(tmp_path / f"n{i}", seed=next(seeds) + (10 if name == "q" else 0)), name)
                assert res.created and res.version.mirror_status == "failed" and res.warnings
                numbers[name].append(res.version.version)
                warnings += len(res.warnings)
                continue
            alias = "staging" if i % 3 else "canary"  # 20 promotes, to versions old and new
            holder = next((v.version for v in reg.list_versions(name) if alias in v.aliases), None)
            target = next(n for n in reversed(numbers[name]) if n != holder)
            move = lifecycle.promote(reg, f"{name}:{target}", to=alias)
            assert reg.show(f"{name}@{alias}").version == target == move.version
            warnings += len(move.warnings)
        down_s = time.monotonic() - t_down
        assert _converged(reg, "pq")  # MLflow is down: not equal (the check itself fails)

        t_up = time.monotonic()
        with pytest.MonkeyPatch.context() as mp:  # the same port: the tracking URI stays the same
            mp.setattr(services, "free_port", lambda: port)
            servers.append(services.start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow-backend.db'}",
                                                        str(tmp_path / "mlflow-artifacts"), {}, log))
        restart_s = time.monotonic() - t_up
        healthy_at = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        while diffs := _converged(reg, "pq"):
            assert time.monotonic() - t0 < BOUND_S, f"not converged {BOUND_S} s after MLflow came back: {diffs[:5]}"
            time.sleep(0.5)
        converge_s = time.monotonic() - t0
        report = reg.sync()      # the repair tool, used here as a checker: nothing left to repair
        with reg.session() as s:
            first_ok = s.execute(sa.select(sa.func.min(OutboxAttempt.started_at))
                                 .join(OutboxDelivery, OutboxDelivery.id == OutboxAttempt.delivery_id)
                                 .where(OutboxDelivery.target == "mlflow", OutboxAttempt.outcome == "ok")).scalar()
        resume_s = (first_ok.replace(tzinfo=dt.UTC) - healthy_at).total_seconds()
        assert resume_s <= RESUME_S, resume_s
        assert report.repaired == 0 and report.failed == [], report.to_dict()
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            worker_log.close()
            out = (tmp_path / "worker.log").read_text()
        for s in servers:
            s.stop()
    assert worker.returncode == 0, out[-3000:]
    failed_tries = out.count("pending ")
    assert failed_tries >= 1, out[-3000:]          # the worker did try during the outage
    from promptreg.services.events.outbox import counts

    assert counts(reg)["pending"] == 0 and counts(reg)["dead"] == 0
    print(f"\nMLflow outage: 20 promotes + 5 pushes in {down_s:.1f} s while down ({warnings} warnings, all exit 0); "
          f"server restarted in {restart_s:.1f} s; first successful mirror try {resume_s:.1f} s after it was back "
          f"(bound {RESUME_S:g} s), mirror equal to the database {converge_s:.1f} s after it was back (bound {BOUND_S:g} s), {failed_tries} failed mirror tries logged by the worker")
