"""The end-to-end lifecycle through the CLI, once in direct mode and once in remote mode against a real
`promptreg server` (PostgreSQL, moto S3, mlflow server, the tiny model): push -> eval -> gate ->
promote -> rollback -> drift -> schedule run-due. ONE test body, parametrised over the mode; both
runs must print the same outputs (compared after the values that name a place or a moment are
dropped) and exit the same way.

v1 says "positive" for every review, v2 says "negative" (tests/test_lifecycle.py explains how)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from tests.fixtures.server import PROMPTREG, clean_env, start_server
from tests.helpers import make_model_artifact, sentiment_rows, write_suite

SAYS_POSITIVE = dict(method="prefix_tuning", seed=0, scale=1.0)
SAYS_NEGATIVE = dict(method="prefix_tuning", seed=0, scale=5.0)
# values that name a place (paths, URIs, run ids), a moment or a row id: they differ between any two runs
VOLATILE = {"at", "created_at", "updated_at", "artifact_uri", "mlflow_run_id", "mlflow_model_version", "seconds",
            "id", "eval_run_id", "gate_id", "candidate_eval_id", "baseline_eval_id", "report_id", "data_uri",
            "actor", "created_by", "run_id", "schedule_id", "slot_at", "drift_report_id", "report_sha256",
            "outcomes_uri", "path", "token_id", "cached", "next_run_at", "last_run_at", "started_at",
            "finished_at", "lease_owner", "lease_until", "owner", "details", "action_detail", "mlflow",
            # the server mirrors into MLflow after answering (mirror = "outbox"): checked below, not compared
            "mirror_status", "mirror_error"}
OUTPUTS: dict[str, list] = {}


def _normal(value):
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    """The two versions' folders, the suite and fresh data: made once, so both modes push the same bytes."""
    root = tmp_path_factory.mktemp("e2e-inputs")
    for i, kind in enumerate((SAYS_POSITIVE, SAYS_NEGATIVE), 1):
        make_model_artifact(root / f"art{i}", tiny_model_dir, **kind)
    suite = write_suite(root / "suite", positive_share=0.75, accuracy="{margin: 0.02}")
    fresh = _jsonl(root / "fresh.jsonl", sentiment_rows(60, seed=7, positive_share=0.75))
    return root, suite, fresh


@pytest.fixture
def project(request, tmp_path, tiny_model_dir, pg_url, moto_s3, mlflow_server):
    """(run the CLI in this mode, the stores' env, the server or None)"""
    mode = request.param
    bucket = moto_s3.new_bucket()
    stores = {**moto_s3.env(), "PROMPTREG_DB_URL": pg_url, "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/reg",
              "MLFLOW_TRACKING_URI": mlflow_server.url, "PROMPTREG_BASE_MODEL": str(tiny_model_dir),
              "PROMPTREG_HOME": str(tmp_path / "server-home")}
    server = None
    client_env = dict(stores)
    if mode == "remote":
        (tmp_path / "srv").mkdir()
        made = subprocess.run([PROMPTREG, "token", "create", "e2e-admin", "--role", "admin", "--json"],
                              cwd=tmp_path / "srv", env=clean_env(stores), capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        server = start_server(tmp_path / "srv", "--sync-interval", "0", env=stores)
        # the client has no store settings and no base model: only the server and a token
        client_env = {"PROMPTREG_URL": server.url, "PROMPTREG_TOKEN": json.loads(made.stdout)["token"],
                      "PROMPTREG_HOME": str(tmp_path / "client-home")}

    def cli(*args):
        p = subprocess.run([PROMPTREG, *map(str, args)], cwd=tmp_path, env=clean_env(client_env),
                           capture_output=True, text=True, timeout=900)
        assert "Traceback" not in p.stderr, p.stderr
        return p

    yield mode, cli, stores, server
    if server is not None:
        assert server.stop() == 0, server.log_text()[-3000:]
        assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
    from promptreg.registry.db import dispose_engines

    dispose_engines()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("project", ["direct", "remote"], indirect=True)
def test_lifecycle_end_to_end(project, inputs, tmp_path):
    mode, cli, stores, _ = project
    root, suite, fresh = inputs
    out: list = []

    def ok(*args, code=0):
        p = cli(*args)
        assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
        data = json.loads(p.stdout) if "--json" in args else p.stdout
        out.append((args[0], code, _normal(data) if "--json" in args else None))
        return data

    assert ok("push", root / "art1", "--name", "toy", "--json")["version"] == 1
    assert ok("push", root / "art2", "--name", "toy", "--description", "the negative one", "--json")["version"] == 2
    assert ok("push", root / "art2", "--name", "toy", "--json")["created"] is False
    ev = ok("eval", "toy:1", "--suite", suite, "--against", "none", "--json")
    assert ev["datasets"][0]["rows"] == 40 and ev["suite_name"] == "toy-sentiment"
    promoted = ok("promote", "toy:1", "--to", "production", "--suite", suite, "--json")
    assert promoted["gate"]["passed"] is True and promoted["previous"] is None
    gate = ok("gate", "toy:2", "--against", "production", "--suite", suite, "--json", code=1)
    assert gate["passed"] is False and gate["baseline"] == 1
    p = cli("promote", "toy:2", "--to", "production")                 # the stored failed verdict refuses it
    assert p.returncode == 1 and p.stderr.startswith("error: gate failed, toy:2 not promoted"), p.stderr
    assert "gate FAILED" in p.stdout                                   # the table, in both modes
    out.append(("promote-refused", 1, p.stderr.strip()))
    assert ok("promote", "toy:2", "--to", "production", "--force", "--reason", "e2e", "--json")["forced"] is True
    assert ok("promote", "toy:2", "--to", "staging", "--json")["alias"] == "staging"
    assert ok("rollback", "toy", "--alias", "production", "--reason", "bad", "--json")["version"] == 1
    drift = ok("drift", "toy@production", "--data", fresh, "--suite", suite, "--json")
    assert drift["decision"] == "none" and drift["rows"] == 60
    # a schedule that missed three nights (added in the past, directly: the CLI has no clock flag)
    from promptreg.services.registry import Registry
    from promptreg.settings import Settings

    direct = Registry(Settings.load(cwd=tmp_path, env={**stores}))
    direct.add_schedule("toy@production", "0 3 * * *", str(fresh), suite_path=str(suite),
                        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    runs = ok("schedule", "run-due", "--json")
    assert [r["status"] for r in runs] == ["ok"]
    assert ok("schedule", "run-due", "--json") == []
    history = ok("history", "toy", "--json")
    actions = [e["action"] for e in history]
    assert actions[:2] == ["push", "push"] and actions.count("promote") == 3 and "rollback" in actions
    actors = {e["actor"] for e in history if e["action"] in ("push", "promote", "rollback")}
    if mode == "remote":                                               # the token's principal, never a claimed name
        assert actors == {"e2e-admin"}
        assert all(e["token_id"] for e in history if e["action"] in ("push", "promote", "rollback"))
    shown = ok("show", "toy@production", "--json")
    assert shown["version"] == 1 and shown["aliases"] == ["production"]
    p = cli("pull", "toy@staging", tmp_path / "pulled")
    assert p.returncode == 0 and "sha256 verified" in p.stdout
    import time

    deadline = time.time() + 120          # remote: the server's events worker mirrors after answering
    while {v["mirror_status"] for v in json.loads(cli("list", "toy", "--json").stdout)} != {"ok"}:
        assert time.time() < deadline, "the versions were not mirrored into MLflow"
        time.sleep(1)
    OUTPUTS[mode] = out


def test_both_modes_printed_the_same():
    if set(OUTPUTS) != {"direct", "remote"}:
        pytest.skip("needs both runs of test_lifecycle_end_to_end in this session")
    for (d, r) in zip(OUTPUTS["direct"], OUTPUTS["remote"], strict=True):
        assert d == r, f"{d[0]}: " + "; ".join(_differences(d, r))


def _differences(a, b, where="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [x for k in sorted(set(a) | set(b)) for x in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [x for i, (u, v) in enumerate(zip(a, b, strict=True)) for x in _differences(u, v, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: direct {a!r:.200} != remote {b!r:.200}"]


def test_remote_mode_refuses_local_only_arguments(tmp_path):
    """--model / --device name things of the client's machine: refused in remote mode, never ignored."""
    from tests.cli_utils import assert_one_line_error

    env = clean_env({"PROMPTREG_URL": "http://127.0.0.1:9", "PROMPTREG_TOKEN": "prt_" + "a" * 12 + "_" + "b" * 40})
    suite = write_suite(tmp_path / "suite")
    for args, match in [(("gate", "toy:1", "--suite", suite, "--model", "smollm2"), "drop --model"),
                        (("eval", "toy:1", "--suite", suite, "--device", "cpu"), "drop --device"),
                        (("init",), "runs where the stores are")]:
        p = subprocess.run([PROMPTREG, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
        from tests.cli_utils import Result

        assert_one_line_error(Result(p.returncode, p.stdout, p.stderr), 2, match)
