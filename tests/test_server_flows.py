"""Who may move what, through the CLI in remote mode against a real server (PostgreSQL, moto S3, mlflow
server, the tiny model): a contributor pushes, gates and promotes to staging but gets exit 2 "permission
denied" for production and for --force; a production promoter succeeds; history names each token's
principal and token id. And: MLflow is not the authority: an alias changed by hand in MLflow is
restored by the server's periodic sync, and the overwrite is an audit event."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.cli_utils import Result, assert_one_line_error
from tests.fixtures.server import PROMPTREG, clean_env, start_server
from tests.helpers import make_model_artifact, write_suite

SAYS_POSITIVE = dict(method="prefix_tuning", seed=0, scale=1.0)
SAYS_NEGATIVE = dict(method="prefix_tuning", seed=0, scale=5.0)


@pytest.fixture
def service(request, tmp_path, tiny_model_dir, pg_url, moto_s3, mlflow_server):
    """A server; ``request.param``: its [server] table (default: no periodic sync)."""
    from promptreg.services.events.signing import new_key

    bucket = moto_s3.new_bucket()
    stores = {**moto_s3.env(), "PROMPTREG_DB_URL": pg_url, "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/reg",
              "MLFLOW_TRACKING_URI": mlflow_server.url, "PROMPTREG_BASE_MODEL": str(tiny_model_dir),
              "PROMPTREG_HOME": str(tmp_path / "server-home"),
              # webhooks: secrets encrypted at rest; the test's receiver is on loopback
              "PROMPTREG_WEBHOOK_KEY": new_key(), "PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "1"}
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    (srv_dir / "promptreg.toml").write_text(getattr(request, "param", "[server]\nsync_interval_s = 0\n"))

    def direct(*args):
        p = subprocess.run([PROMPTREG, *map(str, args)], cwd=srv_dir, env=clean_env(stores), capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if "--json" in args else p.stdout

    tokens = {
        "admin": direct("token", "create", "ops-admin", "--role", "admin", "--json")["token"],
        "contributor": direct("token", "create", "ci-bot", "--role", "contributor", "--json")["token"],
        "promoter": direct("token", "create", "release-bot", "--role", "promoter", "--aliases", "production",
                           "--json")["token"],
    }
    server = start_server(srv_dir, env=stores)

    def cli(who, *args):
        env = {"PROMPTREG_URL": server.url, "PROMPTREG_TOKEN": tokens[who], "PROMPTREG_HOME": str(tmp_path / who)}
        p = subprocess.run([PROMPTREG, *map(str, args)], cwd=tmp_path, env=clean_env(env), capture_output=True,
                           text=True, timeout=900)
        assert "Traceback" not in p.stderr, p.stderr
        return Result(p.returncode, p.stdout, p.stderr)

    yield cli, server, mlflow_server
    assert server.stop() == 0, server.log_text()[-3000:]
    assert "Traceback" not in server.log_text()
    from promptreg.registry.db import dispose_engines

    dispose_engines()


@pytest.mark.integration
def test_contributor_promoter_admin(service, tmp_path, tiny_model_dir):
    cli, server, _ = service
    for i, kind in enumerate((SAYS_POSITIVE, SAYS_NEGATIVE), 1):
        make_model_artifact(tmp_path / f"art{i}", tiny_model_dir, **kind)
    suite = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}")

    assert cli("contributor", "push", tmp_path / "art1", "--name", "toy").code == 0
    assert cli("contributor", "push", tmp_path / "art2", "--name", "toy").code == 0
    res = cli("contributor", "gate", "toy:1", "--against", "none", "--suite", suite)
    assert res.code == 0 and "gate PASSED" in res.out, res.out + res.err
    res = cli("contributor", "promote", "toy:1", "--to", "staging")
    assert res.code == 0 and "promoted toy:1 to staging" in res.out, res.err
    assert_one_line_error(cli("contributor", "promote", "toy:1", "--to", "production", "--suite", suite), 2,
                          "permission denied: token ci-bot may not move toy@production")
    assert_one_line_error(cli("contributor", "promote", "toy:2", "--to", "staging", "--force", "--reason", "x"), 2,
                          "permission denied: token ci-bot may not force toy@staging past its gate")
    assert_one_line_error(cli("promoter", "promote", "toy:2", "--to", "production", "--force", "--reason", "x"), 2,
                          "permission denied: token release-bot may not force toy@production past its gate "
                          "(role promoter; needs admin)")
    assert_one_line_error(cli("contributor", "rollback", "toy", "--alias", "production"), 2, "permission denied")
    res = cli("promoter", "promote", "toy:1", "--to", "production", "--suite", suite)
    assert res.code == 0 and "promoted toy:1 to production (new alias)" in res.out, res.out + res.err
    res = cli("promoter", "promote", "toy:2", "--to", "production", "--suite", suite)
    assert res.code == 1 and res.err.startswith("error: gate failed"), res.err       # permitted, but the gate says no
    res = cli("admin", "promote", "toy:2", "--to", "production", "--force", "--reason", "incident 42")
    assert res.code == 0 and "FORCED: incident 42" in res.out
    assert cli("promoter", "rollback", "toy", "--alias", "production").code == 0

    history = json.loads(cli("contributor", "history", "toy", "--json").out)
    by_action = [(e["action"], e["alias"], e["actor"]) for e in history]
    assert ("push", None, "ci-bot") in by_action and ("gate", None, "ci-bot") in by_action
    assert ("promote", "staging", "ci-bot") in by_action
    assert ("promote", "production", "release-bot") in by_action
    assert ("promote", "production", "ops-admin") in by_action
    assert ("rollback", "production", "release-bot") in by_action
    ids = {e["actor"]: e["token_id"] for e in history}
    assert len({ids["ci-bot"], ids["release-bot"], ids["ops-admin"]}) == 3 and all(ids.values())
    res = cli("contributor", "history", "toy")
    assert "ci-bot" in res.out and "release-bot" in res.out


@pytest.mark.integration
@pytest.mark.parametrize("service", ["[server]\nsync_interval_s = 1\nsync_grace_s = 2\n"], indirect=True)
def test_alias_changed_by_hand_in_mlflow_is_restored_and_audited(service, tmp_path, tiny_model_dir):
    import uuid

    from mlflow.tracking import MlflowClient

    cli, server, mlflow_server = service
    name = f"restore-{uuid.uuid4().hex[:8]}"       # its own registered model in the shared mlflow server
    for i in (1, 2):
        make_model_artifact(tmp_path / f"art{i}", tiny_model_dir, **(SAYS_POSITIVE if i == 1 else SAYS_NEGATIVE))
        assert cli("contributor", "push", tmp_path / f"art{i}", "--name", name).code == 0
    assert cli("contributor", "promote", f"{name}:1", "--to", "staging").code == 0
    mc = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    deadline = time.time() + 60           # the server's events worker mirrors after answering
    while True:
        shown = json.loads(cli("contributor", "show", f"{name}@staging", "--json").out)
        v2 = json.loads(cli("contributor", "show", f"{name}:2", "--json").out)
        if shown["mlflow_model_version"] and v2["mlflow_model_version"] and \
                name in {m.name for m in mc.search_registered_models(f"name='{name}'")} and \
                mc.get_registered_model(name).aliases.get("staging") == shown["mlflow_model_version"]:
            break
        assert time.time() < deadline, "the events worker did not mirror the versions and the alias"
        time.sleep(0.5)
    mc.set_registered_model_alias(name, "staging", v2["mlflow_model_version"])       # by hand, in MLflow
    deadline = time.time() + 60
    while time.time() < deadline:
        if mc.get_model_version_by_alias(name, "staging").version == shown["mlflow_model_version"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the periodic sync did not restore {name}@staging in MLflow")
    history = json.loads(cli("contributor", "history", name, "--json").out)
    restore = [e for e in history if e["action"] == "alias.restore"]
    assert len(restore) == 1, history
    assert restore[0]["actor"] == "promptreg-server" and restore[0]["alias"] == "staging"
    assert (restore[0]["from_version"], restore[0]["to_version"]) == (2, 1)
    assert restore[0]["details"]["mlflow_had"] == v2["mlflow_model_version"]
    assert mc.get_model_version_by_alias(name, "staging").version == shown["mlflow_model_version"]


@pytest.mark.integration
def test_events_and_webhooks_in_remote_mode(service, tmp_path):
    """events list/show/retry and webhook add/list/test/deliveries/remove work through the server with
    the same --json as direct mode; only an admin manages webhooks or retries; a contributor reads the
    events of its prompts; the daemons stay on the server's host; schedule export names the server."""
    from tests.helpers import make_artifact
    from tests.webhook_receiver import Receiver

    cli, server, _ = service
    assert cli("contributor", "push", make_artifact(tmp_path / "a1", seed=1), "--name", "toy").code == 0
    receiver = Receiver().start()
    try:
        denied = cli("contributor", "webhook", "add", receiver.url, "--events", "*")
        assert_one_line_error(denied, 2, "permission denied: token ci-bot may not add webhooks")
        added = cli("admin", "webhook", "add", receiver.url, "--events", "push,webhook.test", "--json")
        assert added.code == 0, added.err
        hook = added.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["push", "webhook.test"]
        receiver.secret = hook["secret"]
        tested = cli("admin", "webhook", "test", str(hook["id"]), "--json")
        assert tested.code == 0 and tested.json()["status"] == "delivered", tested.out + tested.err
        assert receiver.received[-1].valid and receiver.received[-1].payload["type"] == "webhook.test"
        listed = cli("admin", "webhook", "list", "--json").json()
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        deliveries = cli("admin", "webhook", "deliveries", str(hook["id"]), "--json").json()
        assert deliveries[0]["status"] == "delivered" and deliveries[0]["log"][0]["status_code"] == 200

        events = cli("contributor", "events", "list", "--prompt", "toy", "--json")
        assert events.code == 0 and [e["type"] for e in events.json()] == ["push"], events.out + events.err
        shown = cli("contributor", "events", "show", events.json()[0]["event_id"], "--json").json()
        assert shown["payload"]["data"]["prompt"] == "toy" and shown["payload"]["data"]["actor"] == "ci-bot"
        # webhook.add has no prompt: an admin sees it, a contributor does not
        assert "webhook.add" in {e["type"] for e in cli("admin", "events", "list", "--json").json()}
        assert "webhook.add" not in {e["type"] for e in cli("contributor", "events", "list", "--json").json()}
        assert cli("admin", "events", "list", "--dead", "--json").json() == []
        assert_one_line_error(cli("contributor", "events", "retry", "--all-dead"), 2,
                              "permission denied: token ci-bot may not retry deliveries")
        assert cli("admin", "events", "retry", "--all-dead", "--json").json() == []
        assert_one_line_error(cli("admin", "events", "run", "--once"), 2, "the server's own worker delivers")

        removed = cli("admin", "webhook", "remove", str(hook["id"]), "--json")
        assert removed.code == 0 and removed.json()["removed_at"]
        assert_one_line_error(cli("admin", "webhook", "test", str(hook["id"])), 2, "no webhook")
    finally:
        receiver.stop()
    snippet = cli("admin", "schedule", "export", "--format", "crontab")
    assert snippet.code == 0 and f"PROMPTREG_URL={server.url}" in snippet.out
    assert "PROMPTREG_TOKEN=<secret" in snippet.out and "prt_" not in snippet.out


@pytest.mark.integration
def test_train_in_remote_mode_pushes_through_the_server(service, tmp_path, tiny_model_dir):
    """train runs on the client (its data, its base model), the artifact goes through the server: the
    version is the token's, re-hashed by the server and mirrored by it into MLflow."""
    from tests.test_training import TEMPLATE, toy_examples, write_jsonl

    cli, _server, _ = service
    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(40, 8))
    res = cli("contributor", "train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
              "--template", TEMPLATE, "--num-virtual-tokens", "3", "--epochs", "1", "--batch-size", "8",
              "--push", "remote-toy", "--output", tmp_path / "out", "--json")
    assert res.code == 0, res.err
    report = res.json()
    assert report["pushed"]["name"] == "remote-toy" and report["pushed"]["version"] == 1
    assert report["run_id"] is None and "not logged to MLflow" in res.err
    shown = cli("admin", "show", "remote-toy:1", "--json").json()
    assert shown["sha256"] == report["pushed"]["sha256"]
    history = cli("admin", "history", "remote-toy", "--json").json()
    assert [(e["action"], e["actor"]) for e in history] == [("push", "ci-bot")]
    manifest = json.loads((tmp_path / "out" / "promptreg.json").read_text())
    assert manifest["created_by"] == "ci-bot"
    denied = cli("contributor", "train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
                 "--template", TEMPLATE, "--push", "bad/../name")
    assert_one_line_error(denied, 2)
