"""MLflow pyfunc flavour: a pushed version loads with ``mlflow.pyfunc.load_model("models:/NAME@alias")``
and is served by ``mlflow models serve`` (real embedded registry, real MLflow, the tiny test model)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from promptreg import Registry
from promptreg.errors import InputError, IntegrityError
from tests.fixtures.models import build_tiny_llama
from tests.fixtures.services import free_port
from tests.helpers import TEMPLATE, make_model_artifact

NAME = "sentiment"
URI = f"models:/{NAME}@production"
TEXTS = ["the movie was great and the acting brilliant .", "the movie was awful and the acting dull .",
         "a boring waste of time"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """An embedded registry holding one pushed classification version, aliased ``production``."""
    root = tmp_path_factory.mktemp("pyfunc")
    reg = Registry(home=str(root / ".promptreg"))
    art = make_model_artifact(root / "art", tiny_model_dir, seed=3)
    res = reg.push(art, NAME)
    assert res.created and res.version.mirror_status == "ok", res.warnings
    reg.set_alias(NAME, "production", 1)
    return reg, art


@pytest.fixture
def mlflow_env(served, tiny_model_dir, monkeypatch):
    reg, _ = served
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg.settings.tracking_uri)
    monkeypatch.setenv("PROMPTREG_BASE_MODEL", str(tiny_model_dir))
    return reg


def _runtime_probs(reg, tiny_model_dir, texts):
    from promptreg.runtime.loader import load_base_model, load_soft_prompt

    info, folder = reg.fetch_verified(f"{NAME}:1")
    loaded = load_soft_prompt(folder, reg.manifest(f"{NAME}:1"), load_base_model(tiny_model_dir, device="cpu"),
                              label=f"{NAME}:1", sha256=info.sha256)
    return loaded.labels, loaded.classify(texts)


def test_module_import_is_light():
    code = "import sys, promptreg.runtime.pyfunc; print(sorted(m for m in ('mlflow','torch','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_load_model_by_alias_matches_runtime(mlflow_env, served, tiny_model_dir):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from promptreg.artifact.hashing import folder_sha256

    reg, art = served
    sha = reg.show(f"{NAME}:1").sha256
    # the mirrored model version carries an MLmodel next to the artifact files; our store's copy does not
    mv = MlflowClient().get_model_version_by_alias(NAME, "production")
    names = {Path(f.path).name for f in MlflowClient().list_artifacts(mv.run_id, "soft_prompt")}
    assert "MLmodel" in names and "promptreg.json" in names
    _, cached = reg.fetch_verified(f"{NAME}:1")
    assert not (cached / "MLmodel").exists() and folder_sha256(cached) == sha == folder_sha256(art)

    model = mlflow.pyfunc.load_model(URI)
    meta = model.metadata
    assert meta.flavors["promptreg"]["sha256"] == sha
    assert meta.flavors["python_function"]["loader_module"] == "promptreg.runtime.pyfunc"
    assert meta.get_input_schema().input_names() == ["text"]
    out = model.predict(pd.DataFrame({"text": TEXTS}))
    labels, probs = _runtime_probs(reg, tiny_model_dir, TEXTS)
    assert sorted(labels) == ["negative", "positive"]
    assert meta.get_output_schema().input_names() == list(out.columns)
    assert sorted(out.columns) == sorted(["label"] + [f"p_{lab}" for lab in labels])
    np.testing.assert_allclose(out[[f"p_{lab}" for lab in labels]].to_numpy(), probs, atol=1e-6)
    assert out["label"].tolist() == [labels[i] for i in probs.argmax(1)]
    # other input shapes give the same answer
    assert model.get_raw_model().sha256 == sha
    impl = model._model_impl  # a plain list is refused by MLflow's schema check, but not by our predict
    for got in (model.predict({"text": TEXTS}), impl.predict(TEXTS), impl.predict({"text": TEXTS})):
        np.testing.assert_allclose(got[f"p_{labels[0]}"].to_numpy(), probs[:, 0], atol=1e-6)
    assert model.predict({"text": TEXTS[0]})["label"].tolist() == out["label"].tolist()[:1]


def test_ensure_mlmodel_repairs_a_version_mirrored_without_one(mlflow_env):
    from urllib.parse import urlsplit

    from mlflow.tracking import MlflowClient

    reg = mlflow_env
    info = reg.show(f"{NAME}:1")
    run = MlflowClient().get_run(MlflowClient().get_model_version_by_alias(NAME, "production").run_id)
    mlmodel = Path(urlsplit(run.info.artifact_uri).path) / "soft_prompt" / "MLmodel"
    before = mlmodel.read_text()
    mlmodel.unlink()  # as mirrored before the pyfunc flavour existed
    assert reg.mirror.ensure_mlmodel(run.info.run_id, info.sha256, reg.manifest(f"{NAME}:1")) is True
    assert reg.mirror.ensure_mlmodel(run.info.run_id, info.sha256, reg.manifest(f"{NAME}:1")) is False
    assert "sha256: " + info.sha256 in mlmodel.read_text() and "sha256: " + info.sha256 in before


def test_wrong_base_model_is_refused(mlflow_env, tmp_path, monkeypatch):
    import mlflow.pyfunc

    other = build_tiny_llama(tmp_path / "other", seed=1)
    monkeypatch.setenv("PROMPTREG_BASE_MODEL", str(other))
    with pytest.raises(IntegrityError, match="refusing to apply it") as err:
        mlflow.pyfunc.load_model(URI)
    assert "\n" not in str(err.value)


def test_tampered_artifact_and_missing_base_model_are_refused(mlflow_env, tmp_path, monkeypatch):
    import mlflow.artifacts

    from promptreg.runtime.pyfunc import artifact_sha256, load_verified, write_mlmodel

    local = Path(mlflow.artifacts.download_artifacts(URI, dst_path=str(tmp_path / "dl")))
    assert (local / "registered_model_meta").is_file()  # MLflow's own file: not part of the hash
    # no base model: neither PROMPTREG_BASE_MODEL nor an existing manifest folder
    manifest = json.loads((local / "promptreg.json").read_text())
    monkeypatch.delenv("PROMPTREG_BASE_MODEL")
    good = tmp_path / "nobase"
    shutil.copytree(local, good)
    manifest["base_model"]["name_or_path"] = str(tmp_path / "gone")
    (good / "promptreg.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="refusing to load"):  # the manifest edit breaks the sha256 first
        load_verified(good)
    write_mlmodel(good, manifest, artifact_sha256(good))  # a consistent copy whose base model is nowhere
    with pytest.raises(InputError, match="set PROMPTREG_BASE_MODEL") as err:
        load_verified(good)
    assert "\n" not in str(err.value)
    # tampered tensors
    data = bytearray((local / "soft_prompt.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (local / "soft_prompt.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing to load"):
        load_verified(local, base_model="unused")
    # an extra file in the artifact is refused too
    (local / "soft_prompt.safetensors").write_bytes(bytes(data[:-1] + bytes([data[-1] ^ 0xFF])))
    (local / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError):
        load_verified(local, base_model="unused")


def test_generation_prompt(tmp_path, tiny_model_dir):
    from promptreg.artifact.builder import write_artifact
    from promptreg.artifact.hashing import folder_sha256
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import load_base_model, load_soft_prompt
    from promptreg.runtime.pyfunc import load_verified, write_mlmodel

    info = model_fingerprint(tiny_model_dir).to_dict()
    base = {k: info[k] for k in ("fingerprint", "model_type", "hidden_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")}
    rng = np.random.default_rng(0)
    folder = write_artifact(tmp_path / "gen", method="prompt_tuning",
                            tensors={"prompt_embeddings": rng.standard_normal((4, base["hidden_size"])).astype(np.float32)},
                            base_model=base, task={"type": "generation", "template": TEMPLATE})
    sha = folder_sha256(folder)
    model_dir = tmp_path / "model"
    shutil.copytree(folder, model_dir)
    write_mlmodel(model_dir, json.loads((folder / "promptreg.json").read_text()), sha)
    model = load_verified(model_dir, base_model=str(tiny_model_dir), device="cpu")
    out = model.predict(TEXTS[:2], params={"max_new_tokens": 3})
    manifest = json.loads((folder / "promptreg.json").read_text())
    ref = load_soft_prompt(folder, manifest, load_base_model(tiny_model_dir, device="cpu"), label="g", sha256=sha)
    assert list(out.columns) == ["text"]
    assert out["text"].tolist() == ref.generate(TEXTS[:2], max_new_tokens=3)
    with pytest.raises(InputError, match="max_new_tokens"):
        model.predict(TEXTS[:1], params={"max_new_tokens": 0})
    with pytest.raises(InputError, match="text"):
        model.predict({"prompt": ["x"]})


@pytest.mark.integration
def test_mlflow_models_serve_answers_scoring_protocol(mlflow_env, served, tiny_model_dir, tmp_path):
    reg, _ = served
    port = free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(bindir / "mlflow"), "models", "serve", "-m", URI, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "-w", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping within 90 s: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
        req = urllib.request.Request(f"{base_url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        labels, probs = _runtime_probs(reg, tiny_model_dir, TEXTS)
        preds = answer["predictions"]
        assert [p["label"] for p in preds] == [labels[i] for i in probs.argmax(1)]
        np.testing.assert_allclose([[p[f"p_{lab}"] for lab in labels] for p in preds], probs, atol=1e-6)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
