"""MLflow mirror against real MLflow: embedded SQLite store, a real ``mlflow server`` (PostgreSQL +
moto S3) and an unreachable server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from promptreg.errors import MirrorError, PromptregError, StoreUnavailableError
from promptreg.registry.mirror import (
    MirrorResult,
    MlflowMirror,
    VersionRecord,
    dataset_digest,
    experiment_name,
)
from tests.fixtures.services import free_port

FILES = {"adapter_model.safetensors": b"\x00\x01soft-prompt-bytes\xff", "sub/adapter_config.json": b'{"n": 8}'}
SHA = "ab" * 32
DATA_FP = "cd" * 32


def make_folder(root: Path) -> Path:
    folder = root / "artifact"
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def make_record(folder: Path, prompt: str = "sentiment", **kw) -> VersionRecord:
    base = dict(
        prompt=prompt,
        prompt_description="Sentiment soft prompt",
        version=3,
        sha256=SHA,
        method="prompt_tuning",
        folder=folder,
        params={"num_virtual_tokens": 8, "lr": 0.3, "long": "x" * 7000, "task type": "CAUSAL_LM"},
        metrics={"accuracy": 0.91, "loss": 0.25},
        base_model_fingerprint="ef" * 32,
        base_model_name="sshleifer/tiny-gpt2",
        dataset_fingerprint=DATA_FP,
        dataset_name="sst2-train",
        dataset_source="/data/sst2/train.jsonl",
        dataset_rows=128,
        created_by="alice",
        description="**v3**: first tuned version",
    )
    base.update(kw)
    return VersionRecord(**base)


def expected_tags(rec: VersionRecord) -> dict[str, str]:
    return {
        "promptreg.prompt": rec.prompt,
        "promptreg.version": str(rec.version),
        "promptreg.sha256": rec.sha256,
        "promptreg.base_model": rec.base_model_fingerprint,
        "promptreg.base_model_name": rec.base_model_name,
        "promptreg.dataset": rec.dataset_fingerprint,
        "promptreg.method": rec.method,
        "promptreg.created_by": rec.created_by,
    }


def test_module_import_is_light():
    import subprocess
    import sys

    code = "import sys, promptreg.registry.mirror; print(sorted(m for m in ('mlflow','torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dataset_digest_fits_mlflow_limit():
    from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

    assert MAX_DATASET_DIGEST_SIZE == 36
    assert dataset_digest(DATA_FP) == DATA_FP[:36]
    assert dataset_digest("sha256:" + DATA_FP) == DATA_FP[:36]


def test_embedded_sqlite_roundtrip(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    art_root = tmp_path / "mlartifacts"
    folder = make_folder(tmp_path)
    rec = make_record(folder)
    mirror = MlflowMirror(uri, str(art_root))
    mirror.check()

    res = mirror.mirror_version(rec)
    assert isinstance(res, MirrorResult) and res.model_version == "1"

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # experiment + artifact location under our root
    exp = client.get_experiment_by_name(experiment_name("sentiment"))
    assert exp is not None
    assert exp.artifact_location == (art_root / "promptreg_sentiment_push").resolve().as_uri()

    # registered model
    rm = client.get_registered_model("sentiment")
    assert rm.description == "Sentiment soft prompt"
    assert rm.tags["promptreg.managed"] == "true"

    # model version
    mv = client.get_model_version("sentiment", res.model_version)
    for k, v in expected_tags(rec).items():
        assert mv.tags[k] == v, k
    assert mv.run_id == res.run_id
    assert mv.description == rec.description
    assert mv.source.endswith("/soft_prompt")

    # run: params, metrics, tags, status, dataset input
    run = client.get_run(res.run_id)
    assert run.info.run_name == "v3"
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == exp.experiment_id
    assert run.data.params["num_virtual_tokens"] == "8"
    assert run.data.params["lr"] == "0.3"
    assert run.data.params["task type"] == "CAUSAL_LM"
    assert len(run.data.params["long"]) == 6000  # truncated to MLflow's param value limit
    assert run.data.metrics == {"accuracy": 0.91, "loss": 0.25}
    for k, v in expected_tags(rec).items():
        assert run.data.tags[k] == v, k
    (di,) = run.inputs.dataset_inputs
    assert di.dataset.digest == DATA_FP[:36]
    assert di.dataset.name == "sst2-train"
    assert "/data/sst2/train.jsonl" in di.dataset.source
    assert '"num_rows": 128' in di.dataset.profile
    in_tags = {t.key: t.value for t in di.tags}
    assert in_tags["mlflow.data.context"] == "train"
    assert in_tags["promptreg.dataset_fingerprint"] == DATA_FP

    # artifacts: downloaded bytes equal originals, and they live under our artifact root
    dst = tmp_path / "download"
    dst.mkdir()
    local = Path(client.download_artifacts(res.run_id, "soft_prompt", str(dst)))
    for rel, data in FILES.items():
        assert (local / rel).read_bytes() == data
    stored = sorted(p.relative_to(art_root).as_posix() for p in art_root.rglob("*") if p.is_file())
    assert stored == sorted(
        f"promptreg_sentiment_push/{res.run_id}/artifacts/soft_prompt/{rel}" for rel in FILES
    )

    # idempotency: a fresh mirror object, same record -> same run, same version, nothing new
    again = MlflowMirror(uri, str(art_root)).mirror_version(rec)
    assert again == res
    assert len(client.search_model_versions("name = 'sentiment'")) == 1
    assert len(client.search_runs([exp.experiment_id])) == 1
    run2 = client.get_run(res.run_id)
    assert len(run2.inputs.dataset_inputs) == 1
    assert len(client.get_metric_history(res.run_id, "accuracy")) == 1
    assert mirror.find_model_version("sentiment", SHA) == "1"
    assert mirror.find_model_version("sentiment", "00" * 32) is None
    assert mirror.find_model_version("no-such-prompt", SHA) is None

    # a second version gets its own run and model version
    folder2 = tmp_path / "artifact2"
    folder2.mkdir()
    (folder2 / "adapter_model.safetensors").write_bytes(b"other")
    res2 = mirror.mirror_version(
        make_record(folder2, version=4, sha256="12" * 32, dataset_fingerprint=None, base_model_name=None)
    )
    assert res2.model_version == "2" and res2.run_id != res.run_id
    mv2 = client.get_model_version("sentiment", "2")
    assert mv2.tags["promptreg.dataset"] == "none"
    assert mv2.tags["promptreg.base_model_name"] == "none"
    assert client.get_run(res2.run_id).inputs.dataset_inputs == []

    # aliases
    assert mirror.get_aliases("sentiment") == {}
    assert mirror.get_aliases("no-such-prompt") == {}
    mirror.set_alias("sentiment", "production", res.model_version)
    mirror.set_alias("sentiment", "candidate", res2.model_version)
    assert mirror.get_aliases("sentiment") == {"production": "1", "candidate": "2"}
    mirror.set_alias("sentiment", "production", res2.model_version)
    assert MlflowMirror(uri).get_aliases("sentiment") == {"production": "2", "candidate": "2"}
    mirror.delete_alias("sentiment", "candidate")
    mirror.delete_alias("sentiment", "candidate")  # absent: no error
    mirror.delete_alias("no-such-prompt", "candidate")
    assert mirror.get_aliases("sentiment") == {"production": "2"}
    with pytest.raises(MirrorError):
        mirror.set_alias("sentiment", "production", "99")

    # version tags
    mirror.set_version_tags("sentiment", "1", {"promptreg.status": "archived", "gate": "passed"})
    tags = client.get_model_version("sentiment", "1").tags
    assert tags["promptreg.status"] == "archived" and tags["gate"] == "passed"


def test_attach_to_existing_training_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.create_experiment("training", artifact_location=(tmp_path / "train-art").as_uri())
    train = client.create_run(exp_id, run_name="train")
    client.log_param(train.info.run_id, "lr", "0.3")  # same key as the record: must be skipped, not fail
    client.log_metric(train.info.run_id, "loss", 1.5, step=0)

    rec = make_record(make_folder(tmp_path), run_id=train.info.run_id)
    mirror = MlflowMirror(uri, str(tmp_path / "mlartifacts"))
    res = mirror.mirror_version(rec)
    assert res.run_id == train.info.run_id
    assert mirror.mirror_version(rec) == res
    assert client.get_experiment_by_name(experiment_name("sentiment")) is None
    run = client.get_run(res.run_id)
    assert run.info.status == "RUNNING"  # the trainer owns its run's lifecycle
    assert run.data.params["lr"] == "0.3" and run.data.params["num_virtual_tokens"] == "8"
    assert run.data.metrics["loss"] == 0.25
    assert run.data.tags["promptreg.sha256"] == SHA
    names = sorted(f.path for f in client.list_artifacts(res.run_id, "soft_prompt"))
    assert names == ["soft_prompt/adapter_model.safetensors", "soft_prompt/sub"]
    assert len(client.search_model_versions("name = 'sentiment'")) == 1

    with pytest.raises(MirrorError) as ei:
        mirror.mirror_version(make_record(make_folder(tmp_path / "x"), run_id="0" * 32))
    assert "\n" not in str(ei.value)


@pytest.mark.integration
def test_server_postgres_and_s3(mlflow_server, s3_env, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    prompt = f"server-{time.time_ns()}"
    rec = make_record(make_folder(tmp_path), prompt=prompt)
    mirror = MlflowMirror(mlflow_server.url)
    mirror.check()
    res = mirror.mirror_version(rec)
    assert mirror.mirror_version(rec) == res
    assert "View run" not in capsys.readouterr().out  # MLflow's run-URL banner is suppressed

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    rm = client.get_registered_model(prompt)
    assert rm.description == "Sentiment soft prompt" and rm.tags["promptreg.managed"] == "true"
    mv = client.get_model_version(prompt, res.model_version)
    for k, v in expected_tags(rec).items():
        assert mv.tags[k] == v, k
    assert len(client.search_model_versions(f"name = '{prompt}'")) == 1
    run = client.get_run(res.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.inputs.dataset_inputs[0].dataset.digest == DATA_FP[:36]

    s3 = s3_env.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server.bucket).get("Contents", [])]
    for rel, data in FILES.items():
        matches = [k for k in keys if k.endswith(f"{res.run_id}/artifacts/soft_prompt/{rel}")]
        assert len(matches) == 1, (rel, keys)
        body = s3.get_object(Bucket=mlflow_server.bucket, Key=matches[0])["Body"].read()
        assert body == data

    mirror.set_alias(prompt, "production", res.model_version)
    assert mirror.get_aliases(prompt) == {"production": res.model_version}
    mirror.delete_alias(prompt, "production")
    mirror.delete_alias(prompt, "production")
    assert mirror.get_aliases(prompt) == {}


def test_unreachable_server_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    mirror = MlflowMirror(url)

    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as ei:
        mirror.check()
    assert time.monotonic() - t0 < 20
    msg = str(ei.value)
    assert msg.startswith(f"MLflow at {url} unreachable") and "\n" not in msg

    t0 = time.monotonic()
    with pytest.raises(PromptregError) as ei2:
        mirror.mirror_version(make_record(make_folder(tmp_path)))
    assert time.monotonic() - t0 < 20
    assert isinstance(ei2.value, (StoreUnavailableError, MirrorError))
    assert "unreachable" in str(ei2.value) and "\n" not in str(ei2.value)


def test_user_http_settings_win(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    import os

    MlflowMirror("http://127.0.0.1:1")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "20"


def test_unopenable_sqlite_is_store_unavailable(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    mirror = MlflowMirror(f"sqlite:///{tmp_path}/blocker/mlflow.db")
    with pytest.raises(StoreUnavailableError) as ei:
        mirror.check()
    assert str(ei.value).startswith("MLflow at sqlite:///") and "\n" not in str(ei.value)
