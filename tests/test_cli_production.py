"""Production mode through the CLI: PostgreSQL registry, a real `mlflow server` (PostgreSQL backend,
S3 artifact destination) and S3 artifacts on a moto server; asserted through MLflow's own client
and boto3."""

from __future__ import annotations

import pytest

from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_artifact

pytestmark = pytest.mark.integration


def test_push_show_pull_against_real_services(tmp_path, pg_url, mlflow_server, moto_s3):
    from mlflow.tracking import MlflowClient

    bucket = moto_s3.new_bucket()
    env = {**moto_s3.env(), "PROMPTREG_DB_URL": pg_url, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/registry"}
    res = run_cli("init", cwd=tmp_path, env=env)
    assert res.code == 0, res.out + res.err
    assert not (tmp_path / ".promptreg" / "registry.db").exists()

    art = make_artifact(tmp_path / "art", seed=7, dataset={"fingerprint": "c" * 64, "name": "rt", "rows": 3})
    res = run_cli("push", art, "--name", "sentiment-prod", "--description", "prod test", "--json", cwd=tmp_path, env=env)
    assert res.code == 0, res.err
    pushed = res.json()
    assert pushed["mirror_status"] == "ok" and pushed["artifact_uri"].startswith(f"s3://{bucket}/registry/sha256/")
    assert run_cli("push", art, "--name", "sentiment-prod", cwd=tmp_path, env=env).out.startswith("already registered")

    # our artifact in our bucket, byte for byte
    s3 = moto_s3.client()
    key = pushed["artifact_uri"].split(f"s3://{bucket}/", 1)[1] + "/soft_prompt.safetensors"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (art / "soft_prompt.safetensors").read_bytes()

    # MLflow's view, through its own client against the server
    client = MlflowClient(tracking_uri=mlflow_server.url)
    model = client.get_registered_model("sentiment-prod")
    assert model.description.startswith("prod test") and model.tags.get("promptreg.managed") == "true"
    mv = client.get_model_version("sentiment-prod", pushed["mlflow_model_version"])
    assert mv.tags["promptreg.sha256"] == pushed["sha256"]
    assert mv.tags["promptreg.base_model"] == pushed["base_model_fingerprint"]
    assert mv.tags["promptreg.dataset"] == "c" * 64
    run = client.get_run(mv.run_id)
    assert run.data.tags["promptreg.sha256"] == pushed["sha256"]
    # MLflow's proxied artifacts landed in the server's bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server.bucket).get("Contents", [])]
    mlflow_key = next(k for k in keys if mv.run_id in k and k.endswith("soft_prompt/soft_prompt.safetensors"))
    assert s3.get_object(Bucket=mlflow_server.bucket, Key=mlflow_key)["Body"].read() == \
        (art / "soft_prompt.safetensors").read_bytes()

    shown = run_cli("show", "sentiment-prod:1", "--json", cwd=tmp_path, env=env).json()
    assert shown["sha256"] == pushed["sha256"]
    res = run_cli("pull", "sentiment-prod:1", tmp_path / "pulled", cwd=tmp_path, env=env)
    assert res.code == 0, res.err
    assert (tmp_path / "pulled" / "promptreg.json").read_bytes() == (art / "promptreg.json").read_bytes()

    # a byte changed in the bucket: pull refuses
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-1] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    assert_one_line_error(run_cli("pull", "sentiment-prod:1", tmp_path / "p2", cwd=tmp_path, env=env), 2,
                          "sha256 mismatch")
    assert not (tmp_path / "p2").exists()

    res = run_cli("doctor", "--json", cwd=tmp_path, env=env)
    assert res.code == 0 and all(c["ok"] for c in res.json())


def test_unreachable_s3_is_one_line_and_registers_nothing(tmp_path, pg_url, moto_s3):
    from tests.fixtures.services import free_port

    env = {**moto_s3.env(), "PROMPTREG_DB_URL": pg_url,
           "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "PROMPTREG_ARTIFACT_URI": "s3://nowhere/x"}
    res = run_cli("push", make_artifact(tmp_path / "a"), "--name", "p", cwd=tmp_path, env=env, timeout=120)
    assert_one_line_error(res, 2)
    assert run_cli("list", "--json", cwd=tmp_path, env=env).json() == []
