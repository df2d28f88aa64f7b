"""Training past one CPU: precision (fp32/bf16/fp16), gradient checkpointing, the memory guard, and
data parallelism under torchrun with 2 gloo processes (equal to 1 process, rank-0-only side effects,
resume across world sizes, a killed rank)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptreg.errors import InputError
from tests.test_training import TEMPLATE, _spec, toy_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def ddp_job(method: str = "prompt_tuning"):
    """The job tests/ddp_worker.py runs (and the single-process reference): global batch 8, 44 rows
    (the last batch of an epoch is partial), 21 eval rows (uneven shards)."""
    from promptreg.training.trainer import TrainConfig

    options = {"prompt_tuning": {"num_virtual_tokens": 4, "init": "labels"},
               "p_tuning": {"num_virtual_tokens": 4, "encoder": "mlp"},
               "id_spam": {"num_virtual_tokens": 4, "layer": 1, "bottleneck": 16}}[method]
    cfg = TrainConfig(method=method, method_options=options, template=TEMPLATE, epochs=2, batch_size=8,
                      lr=5e-2, warmup_ratio=0.0, eval_every=3, patience=100, seed=3)
    return cfg, _spec(), toy_examples(44, 11), toy_examples(21, 12)


def _base(model_dir, dtype="fp32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.softprompt.precision import Precision

    return (AutoModelForCausalLM.from_pretrained(model_dir, dtype=Precision(dtype).dtype).eval(),
            AutoTokenizer.from_pretrained(model_dir))


def _torchrun(*args, nproc: int = 2, cwd: Path, env: dict | None = None, timeout: float = 600, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *map(str, args)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("PROMPTREG_HOME", "MLFLOW_TRACKING_URI")}
    full_env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- precision

def test_label_logits_are_float32_and_exact_under_bf16_autocast(tiny_model_dir):
    """The bf16 divergence cause: under autocast, `hidden.float() @ rows.float().T` still ran in bf16,
    quantising label logits (ties -> argmax picks the first label). They must equal the fp32 product."""
    import torch

    from promptreg.softprompt.soft_model import fp32_label_logits

    base, _ = _base(tiny_model_dir)
    with torch.no_grad():
        base.get_output_embeddings().weight.mul_(300.0)  # logits of real-LM magnitude (tens)
    hidden = torch.randn(16, base.config.hidden_size)
    ids = torch.tensor([5, 9])
    reference = fp32_label_logits(base, hidden, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fp32_label_logits(base, hidden, ids)
        naive = hidden.float() @ base.get_output_embeddings().weight[ids].float().T
    assert under.dtype == torch.float32 and torch.equal(under, reference)
    assert naive.dtype == torch.bfloat16 and not torch.equal(naive.float(), reference)  # what the old code did


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_fp32_master_weights(tmp_path, tiny_model_dir, precision):
    import torch
    from safetensors.torch import load_file

    from promptreg.softprompt.precision import Precision
    from promptreg.training.trainer import TrainConfig, Trainer, params_digest

    base, tok = _base(tiny_model_dir, precision)
    assert {p.dtype for p in base.parameters()} == {Precision(precision).dtype}  # loaded directly in the dtype
    before = params_digest(base)
    cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 4}, template=TEMPLATE,
                      max_steps=4, batch_size=8, lr=5e-2, eval_every=2, precision=precision)
    result = Trainer(base, tok, cfg, _spec(), toy_examples(32, 1), toy_examples(8, 2),
                     checkpoint_dir=tmp_path / "ck", progress=False).run()
    assert result.steps == 4 and all(map(lambda v: v == v, result.history["loss"]))
    assert params_digest(base) == before
    assert all(t.dtype == torch.float32 for t in result.soft_prompt.export_tensors().values())
    opt = load_file(str(tmp_path / "ck" / "latest" / "optimizer.safetensors"))
    assert {t.dtype for k, t in opt.items() if not k.endswith(".step")} == {torch.float32}
    state = json.loads((tmp_path / "ck" / "latest" / "state.json").read_text())
    assert (state["grad_scale"] is not None) == (precision == "fp16")


def precision_job(precision: str, seed: int, *, steps: int = 16, lr: float = 0.1, warmup: float = 0.0,
                  batch_size: int = 8, template: str = TEMPLATE):
    """The SmolLM2 bf16-vs-fp32 job (the heavy test; bench/bf16_gap.py): prompt tuning, 8 tokens from the
    labels, batches of 8, evaluated once at the end (bench/bf16_gap.py --data: the demo's batch 16 and
    template)."""
    from promptreg.training.trainer import TrainConfig

    return TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 8, "init": "labels"},
                       template=template, max_steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=warmup,
                       eval_every=steps, patience=100, precision=precision, seed=seed)


def exported(soft) -> tuple[dict, dict]:
    """A trained prompt as (method_config, float32 tensors): what a Trainer warm-starts from."""
    return soft.method_config(), {k: v.detach().float().clone() for k, v in soft.export_tensors().items()}


def score_prompt(base, tok, prompt: tuple[dict, dict], precision: str, seed: int, train, evals,
                 template: str = TEMPLATE) -> float:
    """The eval accuracy of ``prompt`` on ``base`` under ``precision``, by training's own evaluation: one
    step at lr 1e-12 (a no-op update) warm-started from it."""
    from promptreg.training.trainer import Trainer

    cfg = precision_job(precision, seed, steps=1, lr=1e-12, template=template)
    return Trainer(base, tok, cfg, _spec(), train[:8], evals, progress=False,
                   warm_start=prompt).run().history["eval"][-1]["accuracy"]


@pytest.mark.heavy
def test_bf16_and_fp32_end_within_one_accuracy_point():
    """SmolLM2-135M (real logits of magnitude 20-30, where bf16-quantised label logits tied), lr 0.1,
    16 steps, three seeds.

    At this learning rate one run's final accuracy is decided by its trajectory, not by its numerics
    (bench/bf16_gap.py): seed 0 ended fp32 0.755 / bf16 0.970 in one run and fp32 0.83 / bf16 0.70 in
    an earlier one, while seeds 1 and 2 end at 1.0 in both precisions, with prompts whose cosine is
    about 0.5. So the test asserts what bf16 can be blamed for: (1) every trained prompt scores the
    same accuracy (within 1 point) under fp32 and bf16 scoring, and (2) over the seeds, the median
    bf16-fp32 gap is within 1 point and both precisions' median accuracy is above 0.8."""
    import statistics

    from promptreg.runtime.loader import resolve_model_path
    from promptreg.training.trainer import Trainer

    model = resolve_model_path("smollm2")
    bases = {p: _base(model, p) for p in ("fp32", "bf16")}
    train, evals = toy_examples(128, 21), toy_examples(200, 22)
    accuracy = {"fp32": [], "bf16": []}
    for seed in (0, 1, 2):
        for precision in ("fp32", "bf16"):
            base, tok = bases[precision]
            result = Trainer(base, tok, precision_job(precision, seed), _spec(), train, evals, progress=False).run()
            accuracy[precision].append(result.history["eval"][-1]["accuracy"])
            other = "bf16" if precision == "fp32" else "fp32"   # the same prompt scored under the other precision
            scored = score_prompt(*bases[other], exported(result.soft_prompt), other, seed, train, evals)
            assert abs(scored - accuracy[precision][-1]) <= 0.01, (seed, precision, scored, accuracy)
    print("bf16 vs fp32 eval accuracy per seed:", accuracy)
    gaps = [abs(b - f) for f, b in zip(accuracy["fp32"], accuracy["bf16"], strict=True)]
    assert statistics.median(gaps) <= 0.01, accuracy
    assert min(statistics.median(v) for v in accuracy.values()) > 0.8, accuracy


# ---------------------------------------------------------------------------- memory

def test_gradient_checkpointing_gives_the_same_gradients_and_refuses_prefix(tiny_model_dir):
    import torch

    from promptreg.training.trainer import TrainConfig, Trainer

    results = []
    for gc in (False, True):
        base, tok = _base(tiny_model_dir)
        cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 4}, template=TEMPLATE,
                          max_steps=3, batch_size=8, lr=5e-2, gradient_checkpointing=gc)
        results.append(Trainer(base, tok, cfg, _spec(), toy_examples(32, 1), [], progress=False).run())
    a, b = (r.soft_prompt.export_tensors()["prompt_embeddings"] for r in results)
    assert torch.allclose(a, b, atol=1e-6) and results[0].history["loss"] == pytest.approx(results[1].history["loss"])
    base, tok = _base(tiny_model_dir)
    cfg = TrainConfig(method="prefix_tuning", method_options={"num_virtual_tokens": 4}, template=TEMPLATE,
                      max_steps=1, batch_size=8, gradient_checkpointing=True)
    with pytest.raises(InputError, match="prefix"):
        Trainer(base, tok, cfg, _spec(), toy_examples(16, 1), [], progress=False).run()


def test_max_memory_guard_fails_early_in_one_line(tmp_path, tiny_model_dir):
    from promptreg.training.memory import parse_size
    from tests.cli_utils import assert_one_line_error, run_cli

    assert parse_size("24GiB") == 24 * 2**30 and parse_size("80GB") == 80 * 10**9
    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(16, 8))
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
                  "--template", TEMPLATE, "--max-memory", "10KiB", cwd=tmp_path)
    assert_one_line_error(res, match="exceeds --max-memory")
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--max-memory", "lots", cwd=tmp_path)
    assert_one_line_error(res, match="--max-memory expects")


# ---------------------------------------------------------------------------- several processes

def test_shard_and_gather_roundtrip_single_process():
    import torch

    from promptreg.softprompt import distributed as dist

    ctx = dist.DistContext(rank=1, world=3)
    assert dist.shard(ctx, list(range(8))) == [1, 4, 7]
    assert dist.shard(dist.SINGLE, [1, 2]) == [1, 2]
    t = torch.arange(6.0).view(3, 2)
    assert dist.gather_strided(dist.SINGLE, t, 3) is t


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process(tmp_path, tiny_model_dir, sharding):
    """DDP over the prompt, and FSDP2 (frozen decoder layers sharded, each rank holding half of every
    layer's weights): both equal one process with the same global batch."""
    import torch
    from safetensors.torch import load_file

    from promptreg.training.trainer import Trainer

    res = _torchrun(ROOT / "tests" / "ddp_worker.py", tiny_model_dir, tmp_path / "ddp", "prompt_tuning", sharding,
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    two = load_file(str(tmp_path / "ddp" / "prompt.safetensors"))
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert history["world"] == 2
    sharded_rows = history["q_proj_rows"] // 2 if sharding == "fsdp" else history["q_proj_rows"]
    assert history["q_proj_local_rows"] == sharded_rows
    base, tok = _base(tiny_model_dir)
    cfg, spec, train, evals = ddp_job()
    one = Trainer(base, tok, cfg, spec, train, evals, progress=False).run()
    assert one.history["loss"] == pytest.approx(history["loss"], rel=1e-5, abs=1e-6)
    assert [m["accuracy"] for m in one.history["eval"]] == [m["accuracy"] for m in history["eval"]]
    ref = one.soft_prompt.export_tensors()
    assert ref.keys() == two.keys()
    for k in ref:
        # fp32 summation order differs (per-rank sums, then the all-reduce); Adam normalises tiny
        # gradients, so after 12 steps elements agree to ~1e-5
        torch.testing.assert_close(two[k], ref[k], rtol=1e-4, atol=2e-5)


def _cli_train_args(tmp_path, tiny_model_dir, *extra, output="artifact"):
    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(48, 5))
    test = write_jsonl(tmp_path / "test.jsonl", toy_examples(15, 6))
    return ["-m", "promptreg.cli.main", "train", "--model", tiny_model_dir, "--train", train, "--test", test,
            "--labels", "negative,positive", "--template", TEMPLATE, "--num-virtual-tokens", "3", "--epochs", "2",
            "--batch-size", "8", "--eval-every", "1", "--patience", "1000", "--checkpoint-dir", tmp_path / "ck", "--no-progress",
            "--output", tmp_path / output, "--json", *extra]


def test_torchrun_cli_rank0_side_effects_and_resume_with_another_world_size(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    from promptreg import Registry

    # 2 processes stop at step 3 (as if interrupted) ...
    res = _torchrun(*_cli_train_args(tmp_path, tiny_model_dir, "--stop-after-steps", "3"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((tmp_path / "ck" / "latest" / "state.json").read_text())
    assert state["step"] == 3
    # ... and 1 process resumes and pushes
    res = _torchrun(*_cli_train_args(tmp_path, tiny_model_dir, "--resume", "--push", "ddp-toy", output="resumed"),
                    nproc=1, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["steps"] == 12 and report["pushed"]["version"] == 1  # 2 epochs x 6 batches of the 43 rows
    # and 2 processes push once more from scratch: exactly one new version, one more MLflow run
    res = _torchrun(*_cli_train_args(tmp_path, tiny_model_dir, "--push", "ddp-toy", output="again"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["pushed"]["version"] == 2  # one report on stdout: rank 1 printed nothing
    reg = Registry(home=str(tmp_path / ".promptreg"))
    assert [v.version for v in reg.list_versions("ddp-toy")] == [1, 2]
    manifest = reg.manifest("ddp-toy:2")
    assert manifest["reproducibility"]["world_size"] == 2
    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    exp = client.get_experiment_by_name("promptreg/ddp-toy/train")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher_pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def test_a_killed_rank_leaves_a_resumable_checkpoint_and_no_version(tmp_path, tiny_model_dir):
    from promptreg import Registry

    args = _cli_train_args(tmp_path, tiny_model_dir, "--push", "killed-toy")
    args[args.index("--epochs") + 1] = "40"
    proc = _torchrun(*args, cwd=tmp_path, wait=False)
    state_file = tmp_path / "ck" / "latest" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state_file.is_file() and json.loads(state_file.read_text())["step"] >= 2):
        time.sleep(0.5)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    reg = Registry(home=str(tmp_path / ".promptreg"))
    assert reg.list_prompts() == []  # nothing half-registered
    step = json.loads(state_file.read_text())["step"]
    assert step >= 2
    args[args.index("--epochs") + 1] = "2"  # finish sooner (12 steps): the position in the data holds
    args[args.index("--output") + 1] = tmp_path / "resumed"
    res = _torchrun(*args, "--resume", nproc=1, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["pushed"]["version"] == 1
