"""Drift re-evaluation end to end on the tiny model: no drift, data + performance drift with the
``rollback`` policy, base-model swap, label-free estimate, the stored report, MLflow, the CLI, and a
SIGTERM in the middle of a check.

v1 says "positive" for every review, v2 says "negative" (tests/test_lifecycle.py explains how).
Production history: v1 promoted through the gate, then v2 forced over it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from promptreg import Registry
from promptreg.evaluation.suite import load_suite
from promptreg.services.drift import check_drift, set_environment_model
from promptreg.services.evaluate import Evaluator
from promptreg.services.lifecycle import promote
from tests.cli_utils import PROMPTREG, assert_one_line_error, run_cli
from tests.helpers import make_model_artifact, sentiment_rows, write_suite

SAYS_POSITIVE = dict(method="prefix_tuning", seed=0, scale=1.0)
SAYS_NEGATIVE = dict(method="prefix_tuning", seed=0, scale=5.0)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def prod(tmp_path, tiny_model_dir):
    reg = Registry(home=str(tmp_path / ".promptreg"))
    for i, kind in enumerate((SAYS_POSITIVE, SAYS_NEGATIVE), 1):
        reg.push(make_model_artifact(tmp_path / f"art{i}", tiny_model_dir, **kind), "toy")
    suite_path = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}")
    suite = load_suite(suite_path)
    ev = Evaluator(reg, model=tiny_model_dir)
    promote(reg, "toy:1", "production", suite=suite, evaluator=ev)
    promote(reg, "toy:2", "production", suite=suite, evaluator=ev, force=True, reason="test setup")
    return reg, suite, suite_path


def _reports(reg):
    import sqlalchemy as sa

    with reg.engine.connect() as conn:
        return conn.execute(sa.text("SELECT decision, action FROM drift_report ORDER BY id")).all()


def test_same_distribution_is_not_drift(prod, tmp_path, tiny_model_dir):
    reg, suite, _ = prod
    fresh = _jsonl(tmp_path / "fresh.jsonl", sentiment_rows(60, seed=7, positive_share=0.75))
    out = check_drift(reg, "toy@production", str(fresh), suite=suite, model=str(tiny_model_dir))
    assert out.decision == "none" and out.action == "none" and not out.drift, out.tests
    names = [t["name"] for t in out.tests]
    assert names[0].startswith("input length") and "labels" in names and "predictions" in names
    assert any(n.startswith("embeddings") for n in names)
    for t in out.tests:      # every statistic carries its p-value or threshold
        assert t["threshold"] is not None and (t["p_value"] is not None or t["method"] == "wasserstein_normed")
    perf = out.performance
    assert perf["metric"] == "accuracy" and perf["value"] == pytest.approx(0.25)
    assert perf["recorded"] == pytest.approx(0.25) and perf["recorded_source"].startswith("promotion gate")
    assert not perf["drift"] and perf["ci_low"] <= 0.25 <= perf["ci_high"]
    assert reg.show("toy:2").status == "active" and reg.show("toy@production").version == 2
    assert _reports(reg) == [("none", "none")]


def test_drift_with_rollback_policy_restores_a_passing_previous_holder(prod, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    reg, suite, _ = prod
    # longer reviews, 95% positive: lengths, labels, predictions and embeddings all move
    rows = [{"text": r["text"] + " the plot and the acting and the music were " + r["text"], "label": r["label"]}
            for r in sentiment_rows(60, seed=9, positive_share=0.95)]
    fresh = _jsonl(tmp_path / "shifted.jsonl", rows)
    out = check_drift(reg, "toy@production", str(fresh), suite=suite, model=str(tiny_model_dir), action="rollback")
    assert out.decision == "drift" and out.action == "rollback"
    drifted = {t["name"].split(" (")[0] for t in out.tests if t["drift"]}
    assert {"input length", "labels", "embeddings"} <= drifted
    assert out.action_detail["rolled_back_to"] == 1 and out.action_detail["rolled_back_from"] == 2
    assert out.action_detail["candidates"][0]["passes"] is True
    assert reg.show("toy@production").version == 1
    assert reg.show("toy:2").status == "degraded"
    actions = [(e.action, e.from_version, e.to_version) for e in reg.history("toy")][-3:]
    assert actions == [("drift.rollback", 2, 1), ("flag", None, 2), ("drift", None, 2)]   # one transaction
    assert _reports(reg) == [("drift", "rollback")]
    # the list/show views and MLflow see the flag; the drift run holds the statistics and the report
    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    mv = client.get_model_version("toy", reg.show("toy:2").mlflow_model_version)
    assert mv.tags["promptreg.status"] == "degraded"
    assert str(client.get_model_version_by_alias("toy", "production").version) == reg.show("toy:1").mlflow_model_version
    run = client.get_run(out.mlflow_run_id)
    assert run.data.metrics["drift/detected"] == 1.0 and "drift/input_length/p_value" in run.data.metrics
    files = {f.path for f in client.list_artifacts(out.mlflow_run_id, "drift")}
    assert {"drift/drift_report.json", "drift/drift_report.png"} <= files
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "promptreg/toy/drift"


def test_base_model_swap_flags_incompatible_at_once(prod, tmp_path, tiny_model_dir):
    from tests.fixtures.models import build_tiny_llama

    reg, suite, _ = prod
    new_base = build_tiny_llama(tmp_path / "new-base", seed=4)          # same shapes, other weights
    env = set_environment_model(reg, "prod", str(new_base))
    assert env.fingerprint != reg.show("toy:2").base_model_fingerprint
    fresh = _jsonl(tmp_path / "fresh.jsonl", [{"text": r["text"]} for r in sentiment_rows(40, seed=3)])
    out = check_drift(reg, "toy@production", str(fresh), suite=suite, env="prod")
    assert out.decision == "incompatible" and out.action == "report"        # default policy: report
    assert out.action_detail["passes_on_new_base_model"] is False           # no labels: cannot pass
    assert reg.show("toy:2").status == "incompatible"
    flag = [e for e in reg.history("toy") if e.action == "flag"][-1]
    assert flag.details["status"] == "incompatible" and flag.details["deployed_fingerprint"] == env.fingerprint
    assert any("ESTIMATED" in n for n in out.notes)                          # label-free performance
    conf = next(t for t in out.tests if t["name"].startswith("confidence"))
    assert conf["detail"]["estimate"] is True


def test_cli_drift_exit_codes_and_env(prod, tmp_path, tiny_model_dir):
    reg, _, suite_path = prod
    cwd, env = tmp_path, {"PROMPTREG_BASE_MODEL": str(tiny_model_dir)}
    same = _jsonl(tmp_path / "same.jsonl", sentiment_rows(60, seed=7, positive_share=0.75))
    res = run_cli("drift", "toy@production", "--data", same, "--suite", suite_path, cwd=cwd, env=env)
    assert res.code == 0, res.out + res.err
    assert "NONE" in res.out and "KS" in res.out and "MMD" in res.out
    shifted = _jsonl(tmp_path / "long.jsonl", [{"text": (r["text"] + " ") * 6} for r in sentiment_rows(40)])
    res = run_cli("drift", "toy@production", "--data", shifted, "--suite", suite_path, "--json", cwd=cwd, env=env)
    assert res.code == 1, res.out + res.err
    assert res.json()["decision"] == "drift" and res.json()["action"] == "report"
    assert_one_line_error(run_cli("drift", "toy@production", "--data", tmp_path / "nope.jsonl", cwd=cwd, env=env),
                          2, "data file not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"review": "b"}\n')
    assert_one_line_error(run_cli("drift", "toy@production", "--data", bad, cwd=cwd, env=env), 2, "row 2 has no text")
    assert_one_line_error(run_cli("drift", "toy:1", "--data", same, "--action", "rollback", "--suite", suite_path,
                                  cwd=cwd, env=env), 2, "needs NAME@ALIAS")
    res = run_cli("env", "set-base-model", "staging", tiny_model_dir, cwd=cwd, env=env)
    assert res.code == 0 and "staging: base model" in res.out
    assert run_cli("env", "list", "--json", cwd=cwd, env=env).json()[0]["environment"] == "staging"


def test_sigterm_during_a_check_leaves_no_half_written_report(prod, tmp_path, tiny_model_dir):
    """The base-model swap flags the version at once (its own commit, observable); SIGTERM right after
    that lands in the middle of the check (the permutation test is made long): the flag stays (a
    complete state), and no report or drift event exists."""
    from tests.fixtures.models import build_tiny_llama

    reg, _, suite_path = prod
    set_environment_model(reg, "prod", str(build_tiny_llama(tmp_path / "new-base", seed=4)))
    fresh = _jsonl(tmp_path / "big.jsonl", sentiment_rows(1000, seed=11, positive_share=0.75))
    (tmp_path / "promptreg.toml").write_text("[drift]\nmmd_permutations = 100000\nembedding_sample = 1000\n")
    proc = subprocess.Popen([PROMPTREG, "drift", "toy@production", "--data", str(fresh), "--suite", str(suite_path),
                             "--env", "prod"], cwd=tmp_path, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [e for e in reg.history("toy") if e.action == "flag"]:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    assert code == -signal.SIGTERM, (code, proc.stderr.read())
    assert reg.show("toy:2").status == "incompatible"
    assert _reports(reg) == []          # nothing half-written: the report is one transaction at the end
    assert not [e for e in reg.history("toy") if e.action == "drift"]


def test_scheduled_drift_check_runs_once_through_run_due(prod, tmp_path, tiny_model_dir):
    """A schedule (added in the past, so a slot is due) run by `promptreg schedule run-due` with the real
    drift check: one report tied to its schedule_run; a second run-due finds nothing due."""
    import datetime as dt

    import sqlalchemy as sa

    from promptreg.scheduling import add_schedule

    reg, _, suite_path = prod
    fresh = _jsonl(tmp_path / "fresh.jsonl", sentiment_rows(60, seed=7, positive_share=0.75))
    add_schedule(reg, "toy@production", "0 3 * * *", str(fresh), suite_path=str(suite_path),
                 now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))       # three missed nights -> ONE run
    env = {"PROMPTREG_BASE_MODEL": str(tiny_model_dir)}
    res = run_cli("schedule", "run-due", "--json", cwd=tmp_path, env=env)
    assert res.code == 0, res.out + res.err
    assert [r["status"] for r in res.json()] == ["ok"]
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT r.status, d.decision, d.schedule_run_id = r.id FROM schedule_run r "
                                    "JOIN drift_report d ON d.schedule_run_id = r.id")).all()
    assert rows == [("ok", "none", True)]
    res = run_cli("schedule", "run-due", cwd=tmp_path, env=env)
    assert res.code == 0 and "nothing due" in res.out
