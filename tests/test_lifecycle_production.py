"""promote/rollback in production mode: PostgreSQL registry, a real `mlflow server`, S3 artifacts.

Ten `promptreg promote` processes race to move the same alias to ten different versions. The alias
row's compare-and-swap lets exactly one mover win per expected state; the others get a clear
one-line error. Afterwards the alias equals the last audit event, every audit event continues the
chain of the one before it (from_version == previous to_version), and MLflow's alias agrees."""

from __future__ import annotations

import subprocess
import time

import pytest

from promptreg import Registry
from tests.cli_utils import PROMPTREG
from tests.helpers import make_artifact

pytestmark = pytest.mark.integration

N = 10


def _env(pg_url, mlflow_server, moto_s3, bucket):
    return {**moto_s3.env(), "PROMPTREG_DB_URL": pg_url, "MLFLOW_TRACKING_URI": mlflow_server.url,
            "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/registry"}


def test_ten_concurrent_promoters_on_postgres(tmp_path, pg_url, mlflow_server, moto_s3, monkeypatch):
    import os

    from mlflow.tracking import MlflowClient

    env = _env(pg_url, mlflow_server, moto_s3, moto_s3.new_bucket())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reg = Registry()
    for i in range(1, N + 1):
        assert reg.push(make_artifact(tmp_path / f"a{i}", seed=i), "race").version.version == i

    full_env = {**os.environ, **env}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([PROMPTREG, "promote", f"race:{i}", "--to", "staging"], cwd=tmp_path, env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(1, N + 1)]
    results = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for p in procs]
    seconds = time.perf_counter() - t0
    winners = [i + 1 for i, (code, _, _) in enumerate(results) if code == 0]
    losers = [(i + 1, err.strip()) for i, (code, _, err) in enumerate(results) if code != 0]
    for _version, err in losers:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "concurrently" in lines[0], err
    assert all(code in (0, 2) for code, _, _ in results)
    assert winners, results

    events = [e for e in reg.history("race") if e.action == "promote"]
    assert len(events) == len(winners) and sorted(e.to_version for e in events) == winners
    chain = [None] + [e.to_version for e in events]
    assert [e.from_version for e in events] == chain[:-1]     # every move started from the state before it
    final = reg.show("race@staging")
    assert final.version == events[-1].to_version
    client = MlflowClient(tracking_uri=mlflow_server.url)
    assert str(client.get_model_version_by_alias("race", "staging").version) == final.mlflow_model_version
    tags = client.get_model_version("race", final.mlflow_model_version).tags
    assert tags["promptreg.aliases"] == "staging"
    print(f"\n{N} concurrent promoters: {len(winners)} won, {len(losers)} lost with a conflict error, "
          f"{seconds:.1f} s; final staging = {final.version} = last audit event; MLflow agrees")

    # rollback walks the chain back, through the same compare-and-swap; MLflow follows
    first = subprocess.run([PROMPTREG, "rollback", "race", "--alias", "staging"], cwd=tmp_path, env=full_env,
                           capture_output=True, text=True, timeout=120)
    if len(events) >= 2:
        assert first.returncode == 0, first.stderr
        assert reg.show("race@staging").version == events[-2].to_version
        assert str(client.get_model_version_by_alias("race", "staging").version) == \
            reg.show("race@staging").mlflow_model_version
    else:
        assert first.returncode == 2 and "no previous holder" in first.stderr
