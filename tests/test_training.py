"""The training job on a tiny random Llama (fast) and, once, on the real SmolLM2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.data.examples import DataSpec, Example
from promptreg.errors import InputError

TEMPLATE = "{virtual}Review: {text} Sentiment:"
POS = ["great", "good", "excellent", "amazing", "brilliant", "fun", "beautiful", "best"]
NEG = ["terrible", "bad", "awful", "boring", "dull", "worst", "ugly", "poor"]


def toy_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        word = rng.choice(POS if label == "positive" else NEG)
        filler = rng.sample(["the", "movie", "film", "was", "really", "acting", "plot", "very"], 3)
        out.append(Example(text=" ".join(filler[:2] + [word] + filler[2:]), label=label))
    return out


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in examples))
    return path


def _spec() -> DataSpec:
    return DataSpec(labels=["negative", "positive"])


def _base(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(tiny_model_dir))


METHOD_OPTIONS = {
    "prompt_tuning": {"num_virtual_tokens": 4, "init": "labels"},
    "p_tuning": {"num_virtual_tokens": 4, "encoder": "mlp"},
    "prefix_tuning": {"num_virtual_tokens": 4, "projection": False},
    "prefix_projection": {"num_virtual_tokens": 4, "projection": True, "projection_hidden": 32},
    "id_spam": {"num_virtual_tokens": 4, "layer": 1, "bottleneck": 16},
    "iapt": {"num_virtual_tokens": 4, "bottleneck": 16, "activation": "gelu"},
}


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning", "id_spam", "iapt"])
def test_trainer_learns_toy_task_and_keeps_base_frozen(tiny_model_dir, method):
    from promptreg.training.trainer import TrainConfig, Trainer, params_digest

    base, tok = _base(tiny_model_dir)
    before = params_digest(base)
    cfg = TrainConfig(method=method, method_options=METHOD_OPTIONS[method], template=TEMPLATE, epochs=6,
                      batch_size=8, lr=5e-2, warmup_ratio=0.0, eval_every=4, patience=100, seed=0)
    trainer = Trainer(base, tok, cfg, _spec(), toy_examples(64, 1), toy_examples(32, 2), progress=False)
    result = trainer.run()
    losses = result.history["loss"]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    assert result.history["eval"][-1]["accuracy"] >= result.history["eval"][0]["accuracy"]
    assert result.best_metric == max(m["accuracy"] for m in result.history["eval"])
    assert params_digest(base) == before
    assert all(not p.requires_grad for p in base.parameters())


@pytest.mark.parametrize("variant", ["prompt_tuning", "p_tuning", "prefix_tuning", "prefix_projection", "id_spam",
                                     "iapt"])
def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir, variant):
    import torch

    from promptreg.training.trainer import TrainConfig, Trainer

    base, tok = _base(tiny_model_dir)
    train, evals = toy_examples(48, 3), toy_examples(16, 4)

    method = "prefix_tuning" if variant.startswith("prefix") else variant

    def run(ckdir, stop=None, resume=False):
        cfg = TrainConfig(method=method, method_options=METHOD_OPTIONS[variant], template=TEMPLATE, epochs=2,
                          batch_size=8, grad_accum=2, lr=3e-2, eval_every=2, patience=100, seed=7,
                          stop_after_steps=stop)
        return Trainer(base, tok, cfg, _spec(), train, evals, checkpoint_dir=ckdir, progress=False).run(resume=resume)

    full = run(tmp_path / "a")
    first = run(tmp_path / "b", stop=3)
    assert first.interrupted and first.steps == 3
    resumed = run(tmp_path / "b", resume=True)
    assert resumed.steps == full.steps == 6
    assert resumed.history["loss"] == full.history["loss"]
    a, b = full.soft_prompt.export_tensors(), resumed.soft_prompt.export_tensors()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the checkpoint keeps the encoder / generator, which PEFT would drop
    from safetensors.numpy import load_file

    kept = load_file(str(tmp_path / "b" / "latest" / "soft_prompt.safetensors"))
    if method in ("p_tuning", "id_spam", "iapt") or METHOD_OPTIONS[variant].get("projection"):
        assert any(k.startswith(("encoder.", "generator.", "generators.")) for k in kept), sorted(kept)


def _job(tmp_path, tiny_model_dir, **kw):
    from promptreg.services.train import TrainJob
    from promptreg.training.trainer import TrainConfig

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(64, 5))
    test = write_jsonl(tmp_path / "test.jsonl", toy_examples(32, 6))
    cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 4}, template=TEMPLATE,
                      epochs=2, batch_size=8, lr=5e-2, seed=0)
    defaults = dict(model=str(tiny_model_dir), train_path=train, spec=_spec(), config=cfg, test_path=test,
                    progress=False, output=tmp_path / "artifact", push="toy-sentiment",
                    command_line=["promptreg", "train", "..."])
    defaults.update(kw)
    return TrainJob(**defaults)


def test_train_job_registers_version_with_everything_in_mlflow(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    from promptreg.services.train import run_training

    reg = Registry(home=str(tmp_path / ".promptreg"))
    report = run_training(reg, _job(tmp_path, tiny_model_dir))
    v = report.pushed.version
    assert (v.name, v.version, v.method, v.mirror_status) == ("toy-sentiment", 1, "prompt_tuning", "ok")
    assert {"eval_accuracy", "test_accuracy", "zero_shot_test_accuracy"} <= set(v.metrics)
    manifest = reg.manifest("toy-sentiment:1")
    repro = manifest["reproducibility"]
    assert repro["command_line"] == ["promptreg", "train", "..."] and repro["seed"] == 0
    assert {"torch", "transformers", "promptreg"} <= set(repro["packages"])
    assert set(repro["data"]) == {"train", "eval", "test"}
    assert manifest["dataset"]["fingerprint"] == repro["data"]["train"]["fingerprint"] == v.dataset_fingerprint
    assert manifest["validation"]["success"] is True
    assert manifest["task"]["verbalizer"] == {"negative": [" negative"], "positive": [" positive"]}

    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "promptreg/toy-sentiment/train"
    assert len(client.get_metric_history(report.run_id, "train_loss")) == report.steps
    assert "test_accuracy" in run.data.metrics and run.data.params["method"] == "prompt_tuning"
    digests = {d.dataset.digest for d in run.inputs.dataset_inputs}
    assert repro["data"]["train"]["fingerprint"][:36] in digests and len(digests) == 3
    files = {f.path for f in client.list_artifacts(report.run_id)} | {
        f.path for d in ("plots", "validation", "soft_prompt") for f in client.list_artifacts(report.run_id, d)}
    assert {"plots/loss_curve.png", "validation/gx_result.json", "soft_prompt/promptreg.json"} <= files
    mv = client.get_model_version("toy-sentiment", v.mlflow_model_version)
    assert mv.run_id == report.run_id  # the model version points at the training run


@pytest.mark.parametrize("bad,match", [
    ("missing_column", "column"), ("unknown_label", "neutral"), ("empty", "no rows"),
])
def test_bad_data_fails_clearly_and_registers_nothing(tmp_path, tiny_model_dir, bad, match):
    from promptreg.services.train import run_training

    path = tmp_path / "bad.jsonl"
    if bad == "missing_column":
        path.write_text('{"review": "good", "label": "positive"}\n')
    elif bad == "unknown_label":
        path.write_text('{"text": "good", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n')
    else:
        path.write_text("")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    with pytest.raises(InputError, match=match) as exc:
        run_training(reg, _job(tmp_path, tiny_model_dir, train_path=path))
    assert "\n" not in str(exc.value)
    assert reg.list_prompts() == []


def test_validation_failure_stops_the_job(tmp_path, tiny_model_dir):
    from promptreg.services.train import run_training

    rows = toy_examples(20, 1) + [Example(text="x" * 5000, label="positive")]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    reg = Registry(home=str(tmp_path / ".promptreg"))
    with pytest.raises(InputError, match="validation failed"):
        run_training(reg, _job(tmp_path, tiny_model_dir, train_path=path))
    assert reg.list_prompts() == []


def test_cli_train_and_push(tmp_path, tiny_model_dir):
    from tests.cli_utils import run_cli

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(40, 8))
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
                  "--template", TEMPLATE, "--num-virtual-tokens", "3", "--epochs", "1", "--batch-size", "8",
                  "--push", "cli-toy", "--json", cwd=tmp_path, timeout=300)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["pushed"]["name"] == "cli-toy" and report["pushed"]["version"] == 1
    res = run_cli("train", "--model", tiny_model_dir, "--train", tmp_path / "nope.jsonl", cwd=tmp_path)
    assert res.code == 2 and res.err.startswith("error: ") and "Traceback" not in res.err


def test_import_peft_roundtrip(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel, PromptTuningConfig, get_peft_model

    base, _ = _base(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    peft_model.save_pretrained(tmp_path / "peft-adapter")
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits

    reg = Registry(home=str(tmp_path / ".promptreg"))
    from promptreg.services.peft_import import import_peft

    result = import_peft(reg, tmp_path / "peft-adapter", str(tiny_model_dir), "imported")
    assert result.created and result.version.method == "prompt_tuning" and result.version.num_virtual_tokens == 5
    reg.pull("imported:1", tmp_path / "pulled")
    fresh, _ = _base(tiny_model_dir)
    with torch.no_grad():
        got = PeftModel.from_pretrained(fresh, tmp_path / "pulled")(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(InputError, match="never unpickles"):
        import_peft(reg, tmp_path / "pickled", str(tiny_model_dir), "x")


@pytest.mark.slow
def test_real_smollm2_train_push_end_to_end(tmp_path):
    from promptreg.data.dataset_fetch import fetch_rotten_tomatoes
    from promptreg.services.train import TrainJob, run_training
    from promptreg.training.trainer import TrainConfig

    splits = fetch_rotten_tomatoes(tmp_path / "rt")
    small_eval = tmp_path / "eval16.jsonl"  # keep the eval split small: this proves the path, not the accuracy
    small_eval.write_text("".join(splits["eval"].read_text().splitlines(keepends=True)[:16]))
    cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 4, "init": "labels"},
                      template="{virtual}Review: {text}\nSentiment:", max_steps=3, batch_size=4, lr=3e-2, seed=0)
    job = TrainJob(model="smollm2", train_path=splits["train"], eval_path=small_eval, test_path=splits["test"],
                   spec=DataSpec(labels=["negative", "positive"]), config=cfg, train_limit=24, test_limit=16,
                   progress=False, push="rt-smoke", output=tmp_path / "artifact")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    report = run_training(reg, job)
    v = report.pushed.version
    assert v.base_model_fingerprint == reg.manifest("rt-smoke:1")["base_model"]["fingerprint"]
    assert 0.0 <= report.metrics["test_accuracy"] <= 1.0 and report.steps == 3


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_generation_task_trains_on_target_tokens(tiny_model_dir, method):
    from promptreg.training.trainer import TrainConfig, Trainer

    base, tok = _base(tiny_model_dir)
    rng = random.Random(0)
    rows = [Example(text=" ".join(rng.sample(POS + NEG, 3)), target=" the movie was fun") for _ in range(32)]
    spec = DataSpec(task="generation")
    cfg = TrainConfig(method=method, method_options={"num_virtual_tokens": 4}, template="{virtual}{text} :",
                      epochs=4, batch_size=8, lr=5e-2, warmup_ratio=0.0, patience=100, seed=0)
    result = Trainer(base, tok, cfg, spec, rows, rows[:8], progress=False).run()
    evals = [m["loss"] for m in result.history["eval"]]
    assert evals[-1] < evals[0], evals
    assert result.best_metric == -min(evals)
    assert {"loss", "perplexity"} <= set(result.eval_metrics)


def _generation_rows(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = ["great", "good", "bad", "awful", "fun", "dull", "movie", "film", "plot", "acting"]
    path.write_text("".join(json.dumps({"text": " ".join(rng.sample(words, 3)), "target": " the movie was fun"}) + "\n"
                            for _ in range(n)))
    return path


def test_generation_test_metrics_next_to_zero_shot_and_config_file(tmp_path, tiny_model_dir):
    """`train --task generation --test`: exact match / token F1 / ROUGE-L of the tuned prompt next to the
    base model alone, in stdout, --json, MLflow and the manifest; `--config train.yaml` with a command-line
    override gives the same run (issue 20)."""
    from mlflow.tracking import MlflowClient

    from tests.cli_utils import run_cli

    train, test = _generation_rows(tmp_path / "train.jsonl", 48, 0), _generation_rows(tmp_path / "test.jsonl", 12, 1)
    args = ["--model", tiny_model_dir, "--train", train, "--test", test, "--task", "generation", "--template",
            "{virtual}{text} :", "--num-virtual-tokens", "4", "--epochs", "4", "--batch-size", "8", "--lr", "5e-2",
            "--warmup-ratio", "0", "--patience", "100", "--no-progress"]
    res = run_cli("train", *args, "--push", "gen-toy", cwd=tmp_path, timeout=600)
    assert res.code == 0, res.err
    reg = Registry(home=str(tmp_path / ".promptreg"))
    metrics = reg.manifest("gen-toy:1")["metrics"]
    for m in ("exact_match", "token_f1", "rouge_l"):
        assert 0.0 <= metrics[f"test_{m}"] <= 1.0 and 0.0 <= metrics[f"zero_shot_test_{m}"] <= 1.0
    # the random base model never continues with the target; the tuned prompt learned part of it
    assert metrics["test_token_f1"] > metrics["zero_shot_test_token_f1"]
    row = next(line.split() for line in res.out.splitlines() if line.startswith("token_f1 "))
    assert row == ["token_f1", f"{metrics['zero_shot_test_token_f1']:.4f}", f"{metrics['test_token_f1']:.4f}"]
    assert any(line.split()[:1] == ["rouge_l"] for line in res.out.splitlines())
    run = MlflowClient(tracking_uri=reg.settings.tracking_uri).get_run(reg.show("gen-toy:1").mlflow_run_id)
    assert run.data.metrics["test_token_f1"] == pytest.approx(metrics["test_token_f1"])
    assert run.data.metrics["zero_shot_test_rouge_l"] == pytest.approx(metrics["zero_shot_test_rouge_l"])

    # the same run from a config file (keys with dashes or underscores); the command line overrides it
    (tmp_path / "train.yaml").write_text(
        f"model: {tiny_model_dir}\ntrain: {train}\ntest: {test}\ntask: generation\ntemplate: '{{virtual}}{{text}} :'\n"
        "num_virtual_tokens: 2\nepochs: 4\nbatch-size: 8\nlr: 0.05\nwarmup_ratio: 0\npatience: 100\nprogress: false\n")
    res = run_cli("train", "--config", tmp_path / "train.yaml", "--num-virtual-tokens", "4", "--push", "gen-toy",
                  "--json", cwd=tmp_path, timeout=600)
    assert res.code == 0, res.err
    report = res.json()
    assert report["metrics"]["test_token_f1"] == pytest.approx(metrics["test_token_f1"])
    assert report["metrics"]["zero_shot_test_token_f1"] == pytest.approx(metrics["zero_shot_test_token_f1"])
    config = reg.manifest(f"gen-toy:{report['pushed']['version']}")["reproducibility"]["config"]
    assert config["method_options"]["num_virtual_tokens"] == 4 and config["epochs"] == 4 and config["lr"] == 0.05


@pytest.mark.parametrize("text, message", [
    ("train: a.jsonl\nepoch: 3\n", "unknown key 'epoch'"),
    ("- train\n", "must be a mapping"),
    ("epochs: [1\n", "not valid YAML"),
    ("epochs: many\ntrain: a.jsonl\n", "'many' is not a valid integer"),
    ("method: lora\ntrain: a.jsonl\n", "'lora' is not one of"),
    ("config: other.yaml\n", "unknown key 'config'"),
])
def test_train_config_file_errors_are_one_line(tmp_path, text, message):
    from tests.cli_utils import assert_one_line_error, run_cli

    (tmp_path / "train.yaml").write_text(text)
    assert_one_line_error(run_cli("train", "--config", tmp_path / "train.yaml", cwd=tmp_path), 2, message)
    assert_one_line_error(run_cli("train", "--config", tmp_path / "missing.yaml", cwd=tmp_path), 2, "missing.yaml")
