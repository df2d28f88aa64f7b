"""``promptreg migrate NAME@ALIAS --to-model NEW``: carry a prompt to a new base model.

From the incumbent (the version ``ref`` names) to a candidate version of the same prompt bound to the
new model's fingerprint:

1. the incumbent's recorded training data is rebuilt exactly as it was split (manifest
   ``reproducibility.job``: files, eval fraction, limits, columns; older manifests: the training file
   with the defaults) and its fingerprint must equal the recorded one, or nothing happens;
2. initialisation: when the incumbent's tensors fit the new model (same dimensions) training starts
   from them (warm start); otherwise from text — the nearest vocabulary tokens of the incumbent's
   virtual tokens (cosine over the OLD model's input embeddings, for methods whose prompt lives in
   the embedding space), else its recorded ``init_text``, else its recorded initialisation (class
   labels, vocabulary, activations), which the new model re-derives from the label words;
3. training with the incumbent's recorded configuration (``max_steps`` may be overridden), pushed as
   a new version whose manifest ``extra.migrated_from`` names both fingerprints;
4. with a suite, the gate: candidate on the NEW model against the incumbent on ITS OWN (old) model,
   on the same golden examples paired one by one; the verdict is stored like any gate, so
   ``promote`` of the candidate over the incumbent is guarded by it.

Invariants: nothing is registered when the data check fails; the incumbent is never modified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError

if TYPE_CHECKING:
    from promptreg.services.registry import Registry


@dataclass
class MigrateReport:
    incumbent: str                        # NAME:VERSION
    from_fingerprint: str
    to_fingerprint: str
    init: str                             # warm-start | nearest-tokens | init-text | <recorded init> | fresh
    init_text: str | None
    train: Any                            # TrainReport (its .pushed: the candidate)
    gate: Any = None                      # GateReport (None without a suite)
    warnings: list[str] = field(default_factory=list)

    @property
    def candidate(self):
        return self.train.pushed.version

    def to_dict(self) -> dict:
        return {"incumbent": self.incumbent, "candidate": f"{self.candidate.name}:{self.candidate.version}",
                "from_fingerprint": self.from_fingerprint, "to_fingerprint": self.to_fingerprint,
                "init": self.init, "init_text": self.init_text, "train": self.train.to_dict(),
                "gate": self.gate.to_dict() if self.gate is not None else None, "warnings": self.warnings}


def _train_job(manifest: dict, label: str, to_model: Path, max_steps: int | None, device: str, progress: bool,
               notes: bool):
    """The incumbent's training job, rebuilt from its manifest, aimed at the new model."""
    from promptreg.data.examples import DataSpec
    from promptreg.services.train import TrainJob
    from promptreg.training.trainer import TrainConfig

    repro = manifest.get("reproducibility") or {}
    recorded = repro.get("config")
    dataset = manifest.get("dataset") or {}
    if not recorded or not dataset.get("fingerprint"):
        raise InputError(f"{label} records no training configuration or dataset (imported, not trained here): "
                         "nothing to migrate from")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    config = dataclasses.replace(config, stop_after_steps=None, max_steps=max_steps or config.max_steps)
    record = repro.get("job") or {}
    if record.get("spec"):
        spec = DataSpec(**record["spec"])
    else:  # older manifests: the task and the verbalizer, default columns
        task = manifest.get("task") or {}
        verbalizer = task.get("verbalizer")
        spec = DataSpec(task=task.get("type", "classification"), labels=list(verbalizer) if verbalizer else None,
                        verbalizer={k: v[0] for k, v in verbalizer.items()} if verbalizer else None)
    source = record.get("train_path") or dataset.get("source")
    if not source:
        raise InputError(f"{label} does not record where its training data is: nothing to migrate from")
    eval_path = record.get("eval_path")
    return TrainJob(model=str(to_model), train_path=Path(source), spec=spec, config=config,
                    eval_path=Path(eval_path) if eval_path else None, test_path=None,
                    eval_fraction=record.get("eval_fraction", 0.1), train_limit=record.get("train_limit"),
                    zero_shot=False, progress=progress, notes=notes, device=device)


def check_training_data(job, recorded: str, label: str) -> None:
    """Refuse (one line) unless the rebuilt training split has the recorded fingerprint."""
    from promptreg.data.examples import rows_for_fingerprint
    from promptreg.fingerprints.dataset import dataset_fingerprint
    from promptreg.services.train import load_splits

    _, splits = load_splits(job)
    now = dataset_fingerprint(rows_for_fingerprint(splits["train"]))
    if now != recorded:
        raise InputError(f"training data {job.train_path} no longer matches {label}'s dataset fingerprint "
                         f"(recorded {recorded[:12]}, now {now[:12]}): refusing to migrate")


def _initialisation(manifest: dict, folder: Path, old_dir: Path, new_dir: Path, job) -> tuple[str, str | None]:
    """Decide how the candidate starts (see the module docstring) and set ``job`` accordingly."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from promptreg.artifact.manifest import TENSORS_FILE
    from promptreg.softprompt.methods import METHODS, ModelDims, method_from_tensors

    method = manifest["method"]
    tensors = load_file(str(folder / TENSORS_FILE))
    mc = manifest.get("method_config") or {}
    dims = ModelDims.from_config(AutoConfig.from_pretrained(new_dir))
    try:
        method_from_tensors(method, mc, tensors, dims, trainable=True)
        job.warm_start = (mc, tensors)
        return "warm-start", None
    except InputError:
        pass  # other dimensions: start from text
    fields = {f.name for f in dataclasses.fields(METHODS[method].config_class)}
    options = dict(job.config.method_options)
    options.setdefault("num_virtual_tokens", manifest["num_virtual_tokens"])
    text, how = None, None
    if "init_text" in fields and METHODS[method].kind == "input" and "prompt_embeddings" in tensors:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from promptreg.softprompt.inspection import nearest_text

        old = AutoModelForCausalLM.from_pretrained(old_dir)
        text = nearest_text(tensors["prompt_embeddings"], old.get_input_embeddings().weight,
                            AutoTokenizer.from_pretrained(old_dir))
        del old
        how = "nearest-tokens"
    if not (text or "").strip() and "init_text" in fields and mc.get("init_text"):
        text, how = mc["init_text"], "init-text"
    if (text or "").strip():
        options.update(init="text", init_text=text)
    else:
        text = None
        how = options.get("init") or mc.get("init") or "fresh"
    job.config = dataclasses.replace(job.config, method_options=options)
    return how, text


def migrate(registry: Registry, ref: str, to_model: str, *, suite=None, from_model: str | None = None,
            max_steps: int | None = None, device: str = "auto", description: str | None = None,
            progress: bool = False, notes: bool = False) -> MigrateReport:
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.refs import parse_ref
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.services.train import run_training

    info = registry.show(ref)
    label = f"{info.name}:{info.version}"
    manifest = registry.manifest(label)
    new_dir = resolve_model_path(to_model)
    new_fp = model_fingerprint(new_dir).fingerprint
    old_fp = info.base_model_fingerprint
    if new_fp == old_fp:
        raise InputError(f"{label} is already bound to that base model ({new_fp[:12]}): nothing to migrate")
    old_dir = resolve_model_path(from_model) if from_model else Path(
        (manifest.get("base_model") or {}).get("name_or_path") or "")
    if not old_dir.is_dir() or model_fingerprint(old_dir).fingerprint != old_fp:
        raise InputError(f"{label}'s own base model ({old_fp[:12]}) is not at {old_dir}: pass --from-model PATH "
                         "(it is needed for the initialisation and to evaluate the incumbent)")
    job = _train_job(manifest, label, new_dir, max_steps, device, progress, notes)
    check_training_data(job, manifest["dataset"]["fingerprint"], label)
    _, folder = registry.fetch_verified(label)
    how, text = _initialisation(manifest, folder, old_dir, new_dir, job)
    job.push = info.name
    job.description = description or f"{label} migrated to base model {new_fp[:12]} ({how})"
    job.command_line = ["promptreg", "migrate", ref, "--to-model", str(new_dir)]
    job.extra = {"migrated_from": {
        "prompt": info.name, "version": info.version, "sha256": info.sha256, "ref": ref,
        "base_model_fingerprint": old_fp, "base_model": str(old_dir), "to_base_model_fingerprint": new_fp,
        "init": how, "init_text": text}}
    report = run_training(registry, job)
    out = MigrateReport(label, old_fp, new_fp, how, text, report, warnings=list(report.warnings))
    if suite is not None:
        alias = parse_ref(ref).alias
        out.gate = gate_across_models(registry, report.pushed.version, info, suite, new_dir=new_dir,
                                      old_dir=old_dir, against=alias or str(info.version), device=device)
        out.warnings += out.gate.warnings
    return out


def gate_across_models(registry: Registry, cand, baseline, suite, *, new_dir: Path, old_dir: Path, against: str,
                       device: str = "auto"):
    """The gate of ``cand`` (evaluated on ``new_dir``) against ``baseline`` evaluated on ITS OWN base model
    (``old_dir``), on the same golden examples paired one by one; stored and logged like any gate."""
    import time

    from promptreg.evaluation.gate import compare

    t0 = time.perf_counter()
    ev_new = registry.evaluator(model=new_dir, device=device)
    ev_old = registry.evaluator(model=old_dir, device=device)
    cand_eval = ev_new.evaluate_version(cand, suite)
    base_eval = ev_old.evaluate_version(baseline, suite)
    labels = None
    if cand_eval.task == "classification":
        labels = ev_new.base_labels(cand)
        if ev_old.base_labels(baseline) != labels:
            raise InputError(f"{baseline.name}:{baseline.version} has labels {ev_old.base_labels(baseline)}, the "
                             f"candidate has {labels}: they cannot be compared")
    opts = suite.gate
    report = compare(cand_eval, base_eval, suite.thresholds(), against=against, confidence=opts.confidence,
                     n_resamples=opts.resamples, seed=opts.seed, labels=labels, across_base_models=True)
    report.notes.append(f"migration: candidate on base model {cand_eval.base_model_fingerprint[:12]}, "
                        f"{baseline.name}:{baseline.version} on its own base model "
                        f"{base_eval.base_model_fingerprint[:12]}; examples paired one by one")
    report.seconds = time.perf_counter() - t0
    ev_new.record_gate(cand, baseline, cand_eval, base_eval, report)
    report.warnings = [*ev_old.warnings, *ev_new.warnings, *report.warnings]
    return report
