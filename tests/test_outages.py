"""Store outages (issue 7, item 3): a store that goes away in the middle of a command gives ONE error line
and exit 2, leaves nothing half-written, and the next command after the store is back succeeds.

* S3 (our own moto server, a separate process, killed with SIGKILL while a 33 MB push is uploading, and
  down before a push): exit 2, one line, no version / prompt / audit row; restarted empty on the same
  port (bucket created again) the same push succeeds.
* MLflow (our own ``mlflow server`` with a fresh PostgreSQL backend) stopped before a promote: the promote
  is a compare-and-swap on the alias row in the registry database first, then the MLflow alias. The
  database is the source of truth, so the move COMMITS and the command exits 0 with ONE warning line on
  stderr saying that MLflow was not updated and that ``promptreg sync`` repairs it (exit 2 would tell a
  CI job that the promote failed although it happened; re-running it would then fail with "already
  points at"). ``promptreg sync`` while MLflow is still down: exit 2, one error line. After the server is
  restarted on the same port, ``promptreg sync`` makes MLflow's alias (and the ``promptreg.aliases`` tags)
  equal the database's.
* PostgreSQL stopped and started again between commands (``pg_ctlcluster ... stop`` / ``start``, once,
  quickly; always restarted in a ``finally``): a command during the downtime gives one line, exit 2,
  "unreachable"; after the restart a long-lived Registry object (its engine pool holds connections that
  died with the server: ``pool_pre_ping`` replaces them) and a new CLI process both work again.
* PostgreSQL URL with a port nobody listens on: one line, exit 2.

Timings of each outage are printed (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from promptreg.registry.migrate import upgrade
from tests.cli_utils import assert_one_line_error, run_cli
from tests.fixtures.services import S3_ENV, create_pg_database, drop_pg_database, free_port

pytestmark = pytest.mark.integration

MOTO = str(Path(sys.executable).with_name("moto_server"))


def _s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=2))


class MotoProcess:
    """A moto S3 server in its own process, so that stopping it is a real outage (connections refused,
    state lost) and not a paused thread of this process."""

    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, bucket: str) -> float:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        client = _s3_client(self.endpoint)
        deadline = time.time() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        client.create_bucket(Bucket=bucket)  # a restarted server is empty: the bucket comes back empty
        return time.perf_counter() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _rows(db_url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    eng = create_engine(db_url)
    try:
        with eng.connect() as c:
            return {t: c.execute(text(f"select count(*) from {t}")).scalar()
                    for t in ("prompt", "prompt_version", "audit_event", "alias")}
    finally:
        eng.dispose()


def _big_artifact(dest: Path) -> Path:
    """A valid prompt-tuning artifact of ~33 MB (2048 x 2048 float32, twice: native + PEFT copy), so that
    the upload is still running when the first object shows up in the bucket."""
    from promptreg.artifact.builder import write_artifact
    from tests.helpers import TINY_BASE

    base = dict(TINY_BASE, hidden_size=2048)
    tensors = {"prompt_embeddings": np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)}
    return write_artifact(dest, method="prompt_tuning", tensors=tensors, base_model=base,
                          method_config={"init": "random"}, metrics={"accuracy": 0.5}, created_by="tests")


# --------------------------------------------------------------------------------------------------
# (a) S3


def test_s3_killed_during_push_then_push_succeeds_after_restart(tmp_path, pg_url, own_mlflow):
    # (own_mlflow: only so that the MLflow test's server boots while this test waits on S3 retries)
    moto = MotoProcess(free_port())
    bucket = "promptreg-outage"
    moto.start(bucket)
    env = {**S3_ENV, "AWS_ENDPOINT_URL": moto.endpoint, "MLFLOW_S3_ENDPOINT_URL": moto.endpoint,
           "PROMPTREG_DB_URL": pg_url, "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/registry"}
    try:
        upgrade(pg_url)
        art = _big_artifact(tmp_path / "big")

        killed_at: list[float] = []

        def kill_when_upload_starts():
            client = _s3_client(moto.endpoint)
            while time.perf_counter() - t0 < 60:
                with contextlib.suppress(Exception):
                    if client.list_objects_v2(Bucket=bucket, Prefix="registry/").get("KeyCount", 0):
                        break
                time.sleep(0.01)
            moto.kill()
            killed_at.append(time.perf_counter() - t0)

        killer = threading.Thread(target=kill_when_upload_starts, daemon=True)
        t0 = time.perf_counter()
        killer.start()
        res = run_cli("push", art, "--name", "big", cwd=tmp_path, env=env, timeout=300)
        push_s = time.perf_counter() - t0
        killer.join(timeout=60)
        assert killed_at and killed_at[0] < push_s, "the server was not killed during the push"
        assert_one_line_error(res, 2, "S3")
        assert "cannot reach S3 bucket" in res.err or "S3 failure" in res.err, res.err
        push_error = res.err.strip()
        assert _rows(pg_url) == {"prompt": 0, "prompt_version": 0, "audit_event": 0, "alias": 0}

        # still down: a push fails fast at the reachability probe, registers nothing
        t1 = time.perf_counter()
        res = run_cli("push", art, "--name", "big", cwd=tmp_path, env=env, timeout=120)
        down_s = time.perf_counter() - t1
        assert_one_line_error(res, 2, "S3")
        assert _rows(pg_url)["prompt_version"] == 0

        # back (empty, same port): the same push succeeds, stored and verified in the new bucket
        restart_s = moto.start(bucket)
        t2 = time.perf_counter()
        res = run_cli("push", art, "--name", "big", "--json", cwd=tmp_path, env=env, timeout=300)
        recover_s = time.perf_counter() - t2
        assert res.code == 0, res.err
        pushed = res.json()
        assert pushed["version"] == 1 and pushed["mirror_status"] == "ok"
        keys = {o["Key"] for o in _s3_client(moto.endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
        prefix = pushed["artifact_uri"].split(f"s3://{bucket}/", 1)[1]
        assert {f"{prefix}/{f}" for f in ("soft_prompt.safetensors", "promptreg.json", ".promptreg-complete")} <= keys
        assert _rows(pg_url)["prompt_version"] == 1
        print(f"\nS3 outage: killed {killed_at[0]:.2f} s into the push, push failed after {push_s:.1f} s (exit 2); "
              f"push while down failed in {down_s:.1f} s; moto restarted in {restart_s:.1f} s; "
              f"push after recovery {recover_s:.1f} s (exit 0)\n  push: {push_error[:300]}")
    finally:
        moto.kill()


# --------------------------------------------------------------------------------------------------
# (b) MLflow


class OwnMlflow:
    """Our own `mlflow server` (fresh PostgreSQL backend, a moto bucket as artifact destination), started in
    a background thread when the module starts (a server takes ~15-30 s to come up on a busy machine; the
    S3 test runs meanwhile). The MLflow test stops it and starts it again on the same port."""

    def __init__(self, moto_s3, log: Path):
        import concurrent.futures

        self.db = create_pg_database("promptreg_mlflow_outage")
        self.bucket = moto_s3.new_bucket()
        self.env = moto_s3.env()
        self.log = log
        self.servers: list = []
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._booting = self._pool.submit(self.start)

    def start(self, port: int | None = None):
        from tests.fixtures import services

        with pytest.MonkeyPatch.context() as mp:
            if port is not None:  # the same port again: the tracking URI stays the same
                mp.setattr(services, "free_port", lambda: port)
            server = services.start_mlflow_server(self.db, f"s3://{self.bucket}/mlflow", self.env, self.log)
        self.servers.append(server)
        return server

    def first(self):
        return self._booting.result(timeout=300)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._booting.result(timeout=300)
        self._pool.shutdown()
        for server in self.servers:
            server.stop()
        drop_pg_database(self.db)


@pytest.fixture(scope="module")
def own_mlflow(moto_s3, tmp_path_factory):
    mlflow = OwnMlflow(moto_s3, tmp_path_factory.mktemp("own-mlflow") / "server.log")
    yield mlflow
    mlflow.close()


def test_mlflow_stopped_before_promote_then_sync_repairs(tmp_path, pg_url, own_mlflow):
    from mlflow.tracking import MlflowClient

    from promptreg.services.registry import Registry
    from tests.helpers import make_artifact

    server = own_mlflow.first()
    env = {"PROMPTREG_DB_URL": pg_url, "MLFLOW_TRACKING_URI": server.url,
           "PROMPTREG_ARTIFACT_URI": str(tmp_path / "artifacts"), "PROMPTREG_HOME": str(tmp_path / "home")}
    upgrade(pg_url)
    reg = Registry(home=env["PROMPTREG_HOME"], db_url=pg_url, tracking_uri=server.url,
                   artifact_uri=env["PROMPTREG_ARTIFACT_URI"])
    mv = {}
    for seed in (1, 2):
        res = reg.push(make_artifact(tmp_path / f"a{seed}", seed=seed), "p")
        assert res.version.mirror_status == "ok", res.warnings
        mv[seed] = res.version.mlflow_model_version
    assert reg.set_alias("p", "staging", 1).warnings == []
    client = MlflowClient(tracking_uri=server.url)
    assert dict(client.get_registered_model("p").aliases) == {"staging": mv[1]}

    port = int(server.url.rsplit(":", 1)[1])
    server.stop()
    t0 = time.perf_counter()
    res = run_cli("promote", "p:2", "--to", "staging", cwd=tmp_path, env=env, timeout=300)
    promote_s = time.perf_counter() - t0
    # the move committed; MLflow could not be told: exit 0, ONE warning line naming the repair
    assert res.code == 0, res.err
    assert res.out.strip() == "promoted p:2 to staging (was 1)", res.out
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "promptreg sync" in lines[0], res.err
    assert "Traceback" not in res.err
    warning = lines[0]
    assert reg.show("p@staging").version == 2
    last = reg.history("p")[-1]
    assert (last.action, last.alias, last.from_version, last.to_version) == ("promote", "staging", 1, 2)

    # sync while MLflow is still down: one error line, exit 2
    t1 = time.perf_counter()
    res = run_cli("sync", cwd=tmp_path, env=env, timeout=300)
    sync_down_s = time.perf_counter() - t1
    assert_one_line_error(res, 2, "unreachable")
    sync_error = res.err.strip()

    t2 = time.perf_counter()
    assert own_mlflow.start(port).url == server.url
    restart_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    res = run_cli("sync", "--json", cwd=tmp_path, env=env, timeout=300)
    sync_s = time.perf_counter() - t3
    assert res.code == 0, res.out + res.err
    assert res.json()["aliases_set"] == ["p@staging"], res.out
    client = MlflowClient(tracking_uri=server.url)
    assert dict(client.get_registered_model("p").aliases) == {"staging": mv[2]}
    tags = {v: client.get_model_version("p", mv[v]).tags.get("promptreg.aliases") for v in (1, 2)}
    assert tags == {1: "none", 2: "staging"}
    print(f"\nMLflow outage: promote with MLflow down {promote_s:.1f} s (exit 0 + 1 warning); sync while down "
          f"{sync_down_s:.1f} s (exit 2); server restart {restart_s:.1f} s; sync after restart {sync_s:.1f} s"
          f"\n  promote: {warning}\n  sync while down: {sync_error}")


# --------------------------------------------------------------------------------------------------
# (c) PostgreSQL restarted between commands, (d) PostgreSQL unreachable


def _pg_cluster() -> tuple[str, str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1], "main"


def _pg_ctl(action: str) -> None:
    version, cluster = _pg_cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action], check=True,
                   capture_output=True, timeout=120)


def _wait_pg(url: str, timeout: float = 60.0) -> float:
    import psycopg

    t0 = time.perf_counter()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as c:
                c.execute("select 1")
            return time.perf_counter() - t0
        except psycopg.OperationalError:
            if time.perf_counter() - t0 > timeout:
                raise
            time.sleep(0.2)


def _main(*argv: str) -> tuple[int, str, str]:
    from promptreg.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.skipif(not os.path.isdir("/etc/postgresql") or os.geteuid() != 0,
                    reason="needs the local PostgreSQL cluster and root to restart it")
def test_postgres_restarted_between_commands(tmp_path, pg_url, monkeypatch):
    from promptreg.errors import StoreUnavailableError
    from promptreg.services.registry import Registry
    from tests.helpers import make_artifact

    for var in ("PROMPTREG_HOME", "PROMPTREG_DB_URL", "MLFLOW_TRACKING_URI", "PROMPTREG_ARTIFACT_URI"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--home", str(home), "--db-url", pg_url, "--tracking-uri", tracking]
    env = {"PROMPTREG_HOME": str(home), "PROMPTREG_DB_URL": pg_url, "MLFLOW_TRACKING_URI": tracking}
    upgrade(pg_url)
    reg = Registry(home=str(home), db_url=pg_url, tracking_uri=tracking)
    assert reg.push(make_artifact(tmp_path / "a"), "p").created
    assert reg.show("p:1").version == 1  # the engine pool now holds a connection to the running server

    t0 = time.perf_counter()
    try:
        _pg_ctl("stop")
        stopped_at = time.perf_counter()
        code, out, err = _main(*flags, "show", "p:1")
        during_s = time.perf_counter() - stopped_at
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            reg.show("p:1")
    finally:
        _pg_ctl("start")
        ready_s = _wait_pg(pg_url)
    downtime_s = time.perf_counter() - t0
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: registry database ") and "unreachable" in lines[0], err
    assert "Traceback" not in err
    during_error = lines[0]

    # recovered: the same long-lived Registry (its pool's connections died with the server) and a new process
    assert reg.show("p:1").version == 1
    assert reg.push(make_artifact(tmp_path / "b", seed=5), "p").version.version == 2
    res = run_cli("list", "p", "--json", cwd=tmp_path, env=env)
    assert res.code == 0 and [v["version"] for v in res.json()] == [1, 2], res.err
    print(f"\nPostgreSQL outage: down {downtime_s:.1f} s in all (command during downtime answered in "
          f"{during_s:.2f} s, exit 2); accepting connections {ready_s:.1f} s after start; next commands exit 0"
          f"\n  during: {during_error}")


def test_postgres_unreachable_url_is_one_line(tmp_path):
    env = {"PROMPTREG_DB_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
           "PROMPTREG_HOME": str(tmp_path / "home")}
    for args in (("list",), ("show", "p:1"), ("db", "upgrade"), ("push", tmp_path / "missing-folder", "--name", "p")):
        t0 = time.perf_counter()
        res = run_cli(*args, cwd=tmp_path, env=env, timeout=120)
        assert time.perf_counter() - t0 < 30
        if args[0] == "push":  # the folder is checked first
            assert_one_line_error(res, 2, "no such folder")
        else:
            assert_one_line_error(res, 2, "unreachable")
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())
