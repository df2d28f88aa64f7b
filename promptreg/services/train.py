"""The training job: data -> validation (Great Expectations) -> fingerprints -> MLflow run ->
training -> held-out evaluation (tuned and zero-shot) -> artifact -> push.

Everything a version needs to be reproduced goes into its manifest: the command line, seeds, the
training configuration, package versions, dataset fingerprints of every split and the base-model
fingerprint. The MLflow run (experiment ``promptreg/<name>/train``) gets params, per-step loss,
eval metrics, the datasets as inputs with our sha256 digests, the GX result and a loss-curve PNG;
``--push`` then attaches the artifact and the model version to that same run.

Under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1) every rank loads the data and the model
and trains its share (softprompt/distributed.py); rank 0 alone opens the MLflow run, writes
checkpoints and the artifact and pushes, so N processes make one run and one version. A rank that
dies mid-run leaves the last (atomic) checkpoint and no version: push happens only after training.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.data.examples import DataSpec, Example
from promptreg.errors import InputError, PromptregError

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

GEN_TEST_MAX_NEW_TOKENS = 128   # greedy tokens per test row at most (generation tasks)


@dataclass
class TrainJob:
    model: str                                   # a transformers folder, or "smollm2"
    train_path: Path
    spec: DataSpec
    config: Any                                  # TrainConfig
    eval_path: Path | None = None
    test_path: Path | None = None
    eval_fraction: float = 0.1                   # used when no eval file is given
    train_limit: int | None = None               # use at most this many training examples (seeded sample)
    test_limit: int | None = None
    zero_shot: bool = True                       # also score the base model without the prompt on the test split
    output: Path | None = None                   # artifact folder (default: <home>/runs/<run>/artifact)
    checkpoint_dir: Path | None = None
    resume: bool = False
    push: str | None = None
    description: str | None = None
    progress: bool = True                        # the progress bar (stderr, a terminal only)
    notes: bool = True                           # the per-evaluation lines on stderr (hidden by --quiet)
    device: str = "auto"                         # auto (cuda when available), cpu, cuda, cuda:N
    max_memory: int | None = None                # bytes: refuse a job estimated to need more
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))
    warm_start: tuple[dict, dict] | None = None  # (method_config, tensors) to start from (migrate)
    extra: dict | None = None                    # more manifest ``extra`` (migrate: migrated_from)

    def data_record(self) -> dict:
        """How the splits were made (files, fractions, limits, columns): enough to rebuild them."""
        return {"train_path": str(Path(self.train_path).resolve()),
                "eval_path": str(Path(self.eval_path).resolve()) if self.eval_path else None,
                "test_path": str(Path(self.test_path).resolve()) if self.test_path else None,
                "eval_fraction": self.eval_fraction, "train_limit": self.train_limit, "test_limit": self.test_limit,
                "spec": asdict(self.spec)}


@dataclass
class TrainReport:
    artifact: Path
    run_id: str | None
    metrics: dict[str, float]
    steps: int
    seconds: float
    tokens_per_second: float
    validation: dict
    pushed: Any = None                            # PushResult
    warnings: list[str] = field(default_factory=list)
    history: dict = field(default_factory=dict)   # per-step loss / eval curves

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("pushed", "history")}
        out["artifact"] = str(self.artifact)
        out["pushed"] = self.pushed.to_dict() if self.pushed is not None else None
        return out


def load_splits(job: TrainJob) -> tuple[DataSpec, dict[str, list[Example]]]:
    """The job's splits (train, eval, test when given) exactly as training makes them (seeded split and
    sample), with the resolved data spec: what the dataset fingerprints recorded in a manifest are of."""
    import random

    from promptreg.data.examples import load_examples, resolve_labels, seeded_split

    train = load_examples(job.train_path, job.spec)
    if job.eval_path is not None:
        evals = load_examples(job.eval_path, job.spec)
    else:
        train, evals = seeded_split(train, job.eval_fraction, job.config.seed)
    if job.train_limit is not None and len(train) > job.train_limit:
        train = random.Random(job.config.seed).sample(train, job.train_limit)
    splits = {"train": train, "eval": evals}
    if job.test_path is not None:
        test = load_examples(job.test_path, job.spec)
        if job.test_limit is not None:
            test = test[: job.test_limit]
        splits["test"] = test
    return resolve_labels(job.spec, train), splits


@dataclass
class PreparedData:
    """A job's data and base model, checked: what training and a sweep both start from."""

    spec: DataSpec
    splits: dict[str, list[Example]]
    validation: Any                       # the data validation result (GX)
    model_dir: Path
    info: Any                             # the base model's fingerprint info
    fps: dict[str, str]                   # split -> dataset fingerprint


def prepare_data(job: TrainJob, loaded: tuple[DataSpec, dict[str, list[Example]]] | None = None) -> PreparedData:
    """Load the splits (unless ``loaded`` already holds ``load_splits(job)``), refuse data that fails
    validation (one line), resolve and fingerprint the base model and fingerprint every split."""
    from promptreg.data.examples import rows_for_fingerprint
    from promptreg.evaluation.data_validation import validate_splits
    from promptreg.fingerprints.dataset import dataset_fingerprint
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import resolve_model_path

    spec, splits = loaded if loaded is not None else load_splits(job)
    validation = validate_splits(splits, spec)
    if not validation.success:
        raise InputError(f"dataset validation failed ({len(validation.failures)} critical): "
                         + "; ".join(validation.failures))
    model_dir = resolve_model_path(job.model)
    return PreparedData(spec, splits, validation, model_dir, model_fingerprint(model_dir),
                        {name: dataset_fingerprint(rows_for_fingerprint(rows)) for name, rows in splits.items()})


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("promptreg", "torch", "transformers", "peft", "mlflow", "great-expectations", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def run_training(registry: Registry | None, job: TrainJob) -> TrainReport | None:
    """Run the job end to end; raises PromptregError (one line) on bad input. Under a multi-process
    launcher every rank calls this; rank 0 returns the report, the other ranks None (and never touch
    ``registry``, which is then None: see ``distributed.env_rank``)."""
    from promptreg.softprompt import distributed as dist

    ctx, job.device = dist.init_from_env(job.device)
    try:
        return _run_training(registry, job, ctx)
    finally:
        dist.shutdown(ctx)


def _run_training(registry: Registry | None, job: TrainJob, ctx) -> TrainReport | None:
    from promptreg.refs import check_name

    if job.push:
        check_name(job.push)
    job.config.validate()
    data = prepare_data(job)
    spec, splits, validation, model_dir, info, fps = (data.spec, data.splits, data.validation, data.model_dir,
                                                      data.info, data.fps)
    warnings: list[str] = list(validation.warnings)
    if job.max_memory is not None:
        _check_memory(job, model_dir, splits)
    if not ctx.is_main:  # workers train and score their share; rank 0 owns every side effect
        _train_and_export(job, spec, splits, model_dir, info, fps, validation, None, lambda rows: None, warnings,
                          None, ctx)
        return None

    mirror = registry.mirror
    experiment = f"promptreg/{job.push}/train" if job.push else "promptreg/train"
    run_name = f"{job.config.method}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    if job.output is None:
        job.output = registry.settings.home / "runs" / run_name / "artifact"
    run_id = mirror.start_run(experiment, run_name, prompt=job.push, tags={
        "promptreg.base_model": info.fingerprint, "promptreg.dataset": fps["train"],
        "promptreg.method": job.config.method, "promptreg.job": "train"})
    log_failed = []

    def safe(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except PromptregError as exc:  # logging is best effort once the run exists
            if not log_failed:
                warnings.append(f"MLflow logging failed, training continues: {exc}")
            log_failed.append(str(exc))

    try:
        cfg = asdict(job.config)
        params = {k: v for k, v in cfg.items() if k != "method_options"}
        params.update({f"method.{k}": v for k, v in cfg["method_options"].items()})
        params.update({"base_model": str(model_dir), "task": spec.task, "labels": spec.labels,
                       "train_rows": len(splits["train"]), "eval_rows": len(splits["eval"])})
        safe(mirror.log_params, run_id, params)
        for name, rows in splits.items():
            path = {"train": job.train_path, "eval": job.eval_path or job.train_path, "test": job.test_path}[name]
            safe(mirror.log_dataset, run_id, fps[name], name=f"{Path(path).stem}-{name}", source=str(Path(path).resolve()),
                 rows=len(rows), context={"train": "training", "eval": "validation", "test": "testing"}[name])
        safe(mirror.log_dict, run_id, validation.to_dict(), "validation/gx_result.json")
        safe(mirror.log_text, run_id, validation.summary(), "validation/summary.txt")

        report = _train_and_export(job, spec, splits, model_dir, info, fps, validation, run_id,
                                   lambda rows: safe(mirror.log_metrics, run_id, rows), warnings,
                                   registry.settings.user, ctx)
        safe(mirror.log_metrics, run_id, [(k, v, report.steps) for k, v in report.metrics.items()])
        from promptreg.reporting.figures import loss_figure

        figure = loss_figure(report.history)
        safe(mirror.log_figure, run_id, figure, "plots/loss_curve.png")
        figure.clear()  # free it (an Agg figure: pyplot holds no reference)
        if job.push:
            report.pushed = registry.push(report.artifact, job.push, description=job.description, run_id=run_id)
            warnings.extend(report.pushed.warnings)
        safe(mirror.end_run, run_id, "FINISHED")
        report.warnings = warnings
        return report
    except BaseException:
        safe(mirror.end_run, run_id, "FAILED")
        raise


def _check_memory(job: TrainJob, model_dir, splits) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from promptreg.softprompt.collate import Encoder
    from promptreg.softprompt.methods import METHODS
    from promptreg.training.memory import check_budget

    cfg = job.config
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    slots = int(cfg.method_options.get("num_virtual_tokens", 20))
    enc = Encoder(tokenizer, cfg.template, slots=slots if METHODS[cfg.method].kind == "input" else 0,
                  max_text_tokens=cfg.max_text_tokens)
    encode = (lambda e: enc.generation(e.text, e.target)) if job.spec.task == "generation" else (
        lambda e: enc.classification(e.text, 0))
    longest = max(len(encode(e).ids) for e in splits["train"])
    width = {"fp32": 4, "bf16": 2, "fp16": 2}[cfg.precision]
    check_budget(AutoConfig.from_pretrained(model_dir), job.max_memory, dtype_bytes=width, batch=cfg.batch_size,
                 seq=longest + (slots if METHODS[cfg.method].kind != "input" else 0),
                 checkpointing=cfg.gradient_checkpointing)


def _generation_test(job, base, tokenizer, soft_prompt, test: list[Example]) -> dict[str, float]:
    """Greedy continuations of the test split scored against the targets (exact match, token F1,
    ROUGE-L, length ratio: evaluation.metrics, the suite's definitions) for the tuned prompt and, with
    ``zero_shot``, for the base model alone on the same template: ``test_*`` and ``zero_shot_test_*``."""
    from promptreg.evaluation.metrics import generation_metrics, generation_outcomes
    from promptreg.softprompt.collate import Encoded, Encoder
    from promptreg.softprompt.scoring import greedy_generate
    from promptreg.softprompt.soft_model import SoftPromptModel

    refs = [e.target for e in test]
    # room for the longest reference (+ a few tokens), as a reader of the outputs would expect
    max_new = min(GEN_TEST_MAX_NEW_TOKENS, max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs) + 4)
    out: dict[str, float] = {}
    runs = [("test_", soft_prompt)] + ([("zero_shot_test_", None)] if job.zero_shot else [])
    for prefix, prompt in runs:
        enc = Encoder(tokenizer, job.config.template, slots=prompt.input_slots if prompt is not None else 0,
                      max_text_tokens=job.config.max_text_tokens)
        rows = [Encoded(*enc.prompt(e.text)) for e in test]
        t0 = time.perf_counter()
        new = greedy_generate(base, SoftPromptModel(base, prompt) if prompt is not None else None, rows,
                              max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id, pad_id=enc.pad_id,
                              precision=job.config.precision)
        preds = [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
        out.update({prefix + k: v for k, v in generation_metrics(generation_outcomes(preds, refs)).items()})
        if prompt is not None:
            out["test_seconds"] = time.perf_counter() - t0
    return out


def _train_and_export(job, spec, splits, model_dir, info, fps, validation, run_id, on_metrics, warnings, user, ctx):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.softprompt import distributed as dist
    from promptreg.softprompt.collate import Encoder, answer_tokens
    from promptreg.softprompt.precision import Precision
    from promptreg.softprompt.scoring import accuracy_metrics, classify
    from promptreg.training.trainer import Trainer

    device = job.device
    precision = job.config.precision
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # loaded directly in the training dtype (no float32 copy first), then moved to the device
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=Precision(precision).dtype).eval().to(device)
    checkpoint_dir = job.checkpoint_dir
    trainer = Trainer(base, tokenizer, job.config, spec, splits["train"], splits["eval"],
                      checkpoint_dir=checkpoint_dir, on_metrics=on_metrics, progress=job.progress,
                      notes=job.notes, dist_ctx=ctx, warm_start=job.warm_start)
    result = trainer.run(resume=job.resume)
    metrics = {f"eval_{k}": v for k, v in result.eval_metrics.items()}
    if result.interrupted:
        warnings.append(f"training stopped at step {result.steps} as requested (stop_after_steps); resume with --resume")
    if "test" in splits and spec.task == "classification":
        from promptreg.softprompt.soft_model import SoftPromptModel

        label_ids = answer_tokens(tokenizer, [spec.answer(lab) for lab in spec.labels], job.config.label_score)
        index = {lab: i for i, lab in enumerate(spec.labels)}
        gold = [index[e.label] for e in splits["test"]]
        tuned_enc = Encoder(tokenizer, job.config.template, slots=result.soft_prompt.input_slots,
                            max_text_tokens=job.config.max_text_tokens)
        rows = [tuned_enc.classification(e.text, g) for e, g in zip(splits["test"], gold, strict=True)]
        t0 = time.perf_counter()

        def scored(soft_model, all_rows, pad_id):  # data-parallel under a launcher, gathered on every rank
            local, real = dist.shard_padded(ctx, all_rows)
            probs = classify(base, soft_model, local, label_ids, pad_id=pad_id, precision=precision)
            return dist.gather_strided(ctx, probs[:real], len(all_rows))

        probs = scored(SoftPromptModel(base, result.soft_prompt), rows, tuned_enc.pad_id)
        metrics.update({f"test_{k}": v for k, v in accuracy_metrics(probs, gold, spec.labels).items()})
        metrics["test_seconds"] = time.perf_counter() - t0
        if job.zero_shot:
            zs_enc = Encoder(tokenizer, job.config.template, slots=0, max_text_tokens=job.config.max_text_tokens)
            zs_rows = [zs_enc.classification(e.text, g) for e, g in zip(splits["test"], gold, strict=True)]
            zs = scored(None, zs_rows, zs_enc.pad_id)
            metrics.update({f"zero_shot_test_{k}": v for k, v in accuracy_metrics(zs, gold, spec.labels).items()})
    if "test" in splits and spec.task == "generation":
        metrics.update(_generation_test(job, base, tokenizer, result.soft_prompt, splits["test"]))
    metrics["train_tokens_per_second"] = result.tokens_per_second
    metrics["train_seconds"] = result.seconds
    metrics["train_steps"] = float(result.steps)
    if not ctx.is_main:
        return None

    output = export_artifact(job, spec, splits, info, fps, validation, run_id, user, result, metrics,
                             device=device, world=ctx.world)
    return TrainReport(output, run_id, metrics, result.steps, result.seconds, result.tokens_per_second,
                       {k: v for k, v in validation.to_dict().items() if k != "gx"}, history=result.history)



def export_artifact(job: TrainJob, spec, splits, info, fps, validation, run_id, user, result, metrics, *,
                    device: str, world: int = 1, extra: dict | None = None) -> Path:
    """Write the trained prompt (``result``: a TrainResult) to ``job.output`` with everything its
    manifest records: method, tensors, base model, task, dataset, metrics, reproducibility, ``extra``."""
    from promptreg.artifact.builder import write_artifact

    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    soft = result.soft_prompt
    verbalizer = {lab: [spec.answer(lab)] for lab in spec.labels} if spec.task == "classification" else None
    write_artifact(
        output, method=job.config.method, tensors=soft.export_tensors(),
        base_model=info.to_dict(), num_virtual_tokens=soft.num_virtual_tokens,
        task={"type": spec.task, "verbalizer": verbalizer, "template": job.config.template,
              **({"label_score": job.config.label_score} if verbalizer else {})},
        method_config=soft.method_config(),
        dataset={"fingerprint": fps["train"], "name": Path(job.train_path).name,
                 "source": str(Path(job.train_path).resolve()), "rows": len(splits["train"])},
        metrics={k: float(v) for k, v in metrics.items()},
        created_by=user, validation={k: v for k, v in validation.to_dict().items() if k != "gx"},
        reproducibility={"command_line": job.command_line, "seed": job.config.seed, "config": asdict(job.config),
                         "data": {name: {"fingerprint": fps[name], "rows": len(rows)} for name, rows in splits.items()},
                         "job": job.data_record(),
                         "packages": _versions(), "device": device, "world_size": world,
                         "mlflow_run_id": run_id, "steps": result.steps,
                         "best_step": result.best_step, "stopped_early": result.stopped_early,
                         "resumed": job.resume, "interrupted": result.interrupted},
        extra={**(job.extra or {}), **(extra or {})},
    )
    return output
