"""The training loop: a frozen causal LM, a trainable soft prompt, AdamW with warm-up and decay,
gradient accumulation, length-bucketed dynamic padding, periodic evaluation with early stopping,
and checkpoints that keep encoders/generators so ``resume`` continues exactly.

Classification scores only the answer position and only the label tokens' rows of the LM head
(no full-vocabulary logits); generation computes full logits only at target positions.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptreg.data.examples import DataSpec, Example
from promptreg.errors import InputError
from promptreg.softprompt.collate import Encoded, Encoder, collate, label_token_ids, length_batches
from promptreg.softprompt.scoring import accuracy_metrics, classify, device_of, generation_loss, label_logits
from promptreg.training import checkpoint as ckpt


@dataclass
class TrainConfig:
    method: str = "prompt_tuning"
    method_options: dict[str, Any] = field(default_factory=dict)
    template: str = "{virtual}{text}"
    epochs: int = 1
    max_steps: int | None = None         # optimizer steps; overrides epochs when set
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-2
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    schedule: str = "linear"             # linear | cosine | constant
    max_grad_norm: float = 1.0
    eval_every: int = 0                  # optimizer steps between evaluations; 0 = once per epoch
    eval_limit: int | None = None        # evaluate on at most this many eval examples during training
    patience: int = 3                    # early stopping: evaluations without improvement
    max_text_tokens: int = 128
    seed: int = 0
    bf16: bool = False                   # bfloat16 autocast for the frozen model's matmuls
    stop_after_steps: int | None = None  # stop early at this step, as if interrupted (checkpoint kept)

    def validate(self) -> None:
        from promptreg.softprompt.methods import METHODS

        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r} (known: {', '.join(sorted(METHODS))})")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError("lr must be a positive number")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise InputError("schedule must be linear, cosine or constant")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError("warmup_ratio must be in [0, 1)")


@dataclass
class TrainResult:
    soft_prompt: Any                      # the best SoftPrompt module
    steps: int
    epochs_run: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    interrupted: bool
    eval_metrics: dict[str, float]
    history: dict[str, list]
    real_tokens: int
    seconds: float
    label_names: list[str]
    label_ids: list[int]

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds else 0.0


def params_digest(model) -> str:
    """sha256 over every base parameter's bytes (proves the base model did not change)."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Trainer:
    def __init__(self, base_model, tokenizer, config: TrainConfig, spec: DataSpec, train: list[Example],
                 eval_examples: list[Example] | None = None, *, checkpoint_dir: Path | None = None,
                 on_metrics: Callable[[list[tuple[str, float, int]]], None] | None = None,
                 progress: bool = True):
        config.validate()
        if not train:
            raise InputError("the training set is empty")
        self.base, self.tokenizer, self.cfg, self.spec = base_model, tokenizer, config, spec
        self.train_examples, self.eval_examples = train, list(eval_examples or [])
        if config.eval_limit is not None:
            self.eval_examples = self.eval_examples[: config.eval_limit]
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.on_metrics = on_metrics or (lambda rows: None)
        self.progress = progress
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()

    # ------------------------------------------------------------------ set-up
    def _build(self, resume_tensors: dict | None, method_config: dict | None):
        import torch

        from promptreg.softprompt.methods import ModelDims, build_method, method_from_tensors
        from promptreg.softprompt.soft_model import SoftPromptModel

        dims = ModelDims.from_config(self.base.config)
        if resume_tensors is not None:
            soft = method_from_tensors(self.cfg.method, method_config, resume_tensors, dims, trainable=True)
        else:
            torch.manual_seed(self.cfg.seed)
            label_words = [self.spec.answer(lab) for lab in self.spec.labels] if self.spec.task == "classification" else None
            soft = build_method(self.cfg.method, dict(self.cfg.method_options), dims,
                                embedding_weight=self.base.get_input_embeddings().weight.detach(),
                                tokenizer=self.tokenizer, label_words=label_words, seed=self.cfg.seed,
                                base_model=self.base)
        return soft, SoftPromptModel(self.base, soft)

    def _encode(self, encoder: Encoder, examples: list[Example]) -> list[Encoded]:
        if self.spec.task == "classification":
            index = {lab: i for i, lab in enumerate(self.spec.labels)}
            return [encoder.classification(e.text, index[e.label]) for e in examples]
        return [encoder.generation(e.text, e.target) for e in examples]

    def _loss(self, soft_model, batch, label_ids):
        import torch.nn.functional as F

        if self.spec.task == "classification":
            return F.cross_entropy(label_logits(self.base, soft_model, batch, label_ids), batch["labels"])
        return generation_loss(self.base, soft_model, batch)

    def evaluate(self, soft_model, rows: list[Encoded], label_ids, pad_id: int) -> dict[str, float]:
        import torch

        if not rows:
            return {}
        if self.spec.task == "classification":
            probs = classify(self.base, soft_model, rows, label_ids.tolist(), batch_size=max(32, self.cfg.batch_size),
                             pad_id=pad_id, autocast=self.cfg.bf16)
            gold = [r.label for r in rows]
            metrics = accuracy_metrics(probs, gold, self.spec.labels)
            metrics["loss"] = float(-torch.log(probs[torch.arange(len(gold)), torch.tensor(gold)].clamp_min(1e-12)).mean())
            return metrics
        losses = []
        device = device_of(self.base)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            for idx in length_batches([len(r.ids) for r in rows], 32, shuffle=False):
                batch = collate([rows[i] for i in idx], pad_id, device)
                losses.append((float(generation_loss(self.base, soft_model, batch)), len(idx)))
        loss = sum(v * n for v, n in losses) / sum(n for _, n in losses)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50))}

    def _score(self, metrics: dict[str, float]) -> float:
        return metrics["accuracy"] if "accuracy" in metrics else -metrics["loss"]

    # ------------------------------------------------------------------ the loop
    def run(self, *, resume: bool = False) -> TrainResult:
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        before = params_digest(self.base)
        state: dict[str, Any] = {}
        resume_tensors = best_tensors = opt_tensors = None
        if resume:
            if self.checkpoint_dir is None:
                raise InputError("--resume needs a checkpoint directory")
            resume_tensors, best_tensors, opt_tensors, state = ckpt.load(self.checkpoint_dir)
            saved = state.get("config", {})
            for key in ("method", "method_options", "template", "batch_size", "grad_accum", "seed", "lr", "schedule"):
                if saved.get(key) != asdict(cfg)[key]:
                    raise InputError(f"cannot resume: {key} differs from the checkpoint ({saved.get(key)!r})")
        soft, model = self._build(resume_tensors, state.get("method_config"))
        slots = soft.input_slots
        encoder = Encoder(self.tokenizer, cfg.template, slots=slots, max_text_tokens=cfg.max_text_tokens)
        train_rows = self._encode(encoder, self.train_examples)
        eval_rows = self._encode(encoder, self.eval_examples)
        device = device_of(self.base)
        label_ids = torch.tensor(label_token_ids(self.tokenizer, [self.spec.answer(lab) for lab in self.spec.labels])
                                 if self.spec.task == "classification" else [], dtype=torch.long, device=device)
        params = [p for p in soft.parameters() if p.requires_grad]
        if not params:
            raise InputError(f"method {cfg.method} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if opt_tensors is not None:
            ckpt.load_optimizer(optimizer, opt_tensors, state["optimizer"])

        lengths = [len(r.ids) for r in train_rows]
        batches_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
        steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        warmup = int(total_steps * cfg.warmup_ratio)

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if cfg.schedule == "constant":
                return 1.0
            progress = (step - warmup) / max(1, total_steps - warmup)
            return max(0.0, 1 - progress) if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        step = state.get("step", 0)
        epoch = state.get("epoch", 0)
        batch_pos = state.get("batch_pos", 0)
        history = state.get("history", {"step": [], "loss": [], "lr": [], "eval_step": [], "eval": []})
        best_metric, best_step = state.get("best_metric"), state.get("best_step")
        bad_evals = state.get("bad_evals", 0)
        real_tokens = state.get("real_tokens", 0)
        seconds = state.get("seconds", 0.0)
        best = best_tensors
        if batches_per_epoch < cfg.grad_accum:
            raise InputError(f"grad_accum {cfg.grad_accum} exceeds the {batches_per_epoch} batches of an epoch")
        stopped_early = interrupted = False
        eval_every = cfg.eval_every or steps_per_epoch
        pending: list[tuple[str, float, int]] = []

        def save_checkpoint():
            if self.checkpoint_dir is None:
                return
            at_end = batch_pos >= usable  # the next step starts the next epoch
            ckpt.save(self.checkpoint_dir, soft_prompt=soft.export_tensors(), best=best, optimizer=optimizer, state={
                "step": step, "epoch": epoch + 1 if at_end else epoch, "batch_pos": 0 if at_end else batch_pos,
                "history": history,
                "best_metric": best_metric, "best_step": best_step, "bad_evals": bad_evals,
                "real_tokens": real_tokens, "seconds": seconds, "config": asdict(cfg),
                "method_config": soft.method_config()})

        bar = _Progress(total_steps, enabled=self.progress)
        bar.advance(step)
        soft.train()
        max_epochs = cfg.epochs if cfg.max_steps is None else math.ceil(total_steps / steps_per_epoch)
        usable = batches_per_epoch - batches_per_epoch % cfg.grad_accum  # whole accumulation groups only
        done = step >= total_steps
        while not done and epoch < max_epochs:
            order = length_batches(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)
            while batch_pos < usable and not done:
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for k in range(cfg.grad_accum):
                    batch = collate([train_rows[i] for i in order[batch_pos + k]], encoder.pad_id, device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                        loss = self._loss(model, batch, label_ids) / cfg.grad_accum
                    if not torch.isfinite(loss):
                        raise InputError(f"training diverged: non-finite loss at step {step + 1} "
                                         f"(lower --lr{' or drop --bf16' if cfg.bf16 else ''})")
                    loss.backward()
                    loss_sum += float(loss.detach())
                    real_tokens += int(batch["attention_mask"].sum())
                batch_pos += cfg.grad_accum
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(step)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                seconds += time.perf_counter() - t0
                step += 1
                lr_now = optimizer.param_groups[0]["lr"]
                history["step"].append(step)
                history["loss"].append(loss_sum)
                history["lr"].append(lr_now)
                pending += [("train_loss", loss_sum, step), ("lr", lr_now, step)]
                bar.update(step, loss_sum, real_tokens / seconds if seconds else 0.0)
                if len(pending) >= 100:
                    self.on_metrics(pending)
                    pending = []
                done = step >= total_steps
                if eval_rows and (step % eval_every == 0 or done or batch_pos >= usable):
                    soft.eval()
                    metrics = self.evaluate(model, eval_rows, label_ids, encoder.pad_id)
                    soft.train()
                    history["eval_step"].append(step)
                    history["eval"].append(metrics)
                    pending += [(f"eval_{k}", v, step) for k, v in metrics.items()]
                    score = self._score(metrics)
                    if best_metric is None or score > best_metric:
                        best_metric, best_step, bad_evals = score, step, 0
                        best = {k: v.clone() for k, v in soft.export_tensors().items()}
                    else:
                        bad_evals += 1
                    bar.note(f"step {step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in metrics.items()
                                                         if k in ("accuracy", "loss", "macro_f1")))
                    if bad_evals >= cfg.patience:
                        stopped_early = done = True
                    save_checkpoint()
                if not done and cfg.stop_after_steps is not None and step >= cfg.stop_after_steps:
                    save_checkpoint()
                    interrupted = done = True
            if batch_pos >= usable:
                epoch, batch_pos = epoch + 1, 0
        bar.close()
        if pending:
            self.on_metrics(pending)
        if not interrupted:
            save_checkpoint()
        after = params_digest(self.base)
        if after != before:
            raise RuntimeError("the base model's parameters changed during training")  # a bug, never expected
        from promptreg.softprompt.methods import ModelDims, method_from_tensors

        final_tensors = best if best is not None else soft.export_tensors()
        best_soft = method_from_tensors(cfg.method, soft.method_config(), final_tensors,
                                        ModelDims.from_config(self.base.config), trainable=False)
        best_soft.eval()
        eval_metrics = history["eval"][history["eval_step"].index(best_step)] if best_step in history["eval_step"] else {}
        return TrainResult(best_soft, step, epoch, best_metric, best_step, stopped_early,
                           interrupted, eval_metrics, history, real_tokens, seconds, list(self.spec.labels or []),
                           label_ids.tolist())


class _Progress:
    """A rich progress bar with loss, throughput and ETA (silent when disabled or not a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]train[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
                                console=Console(stderr=True))  # stdout stays clean for --json
            self.task = self.bar.add_task("train", total=total, loss="-", tps="-")
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar:
            self.bar.update(self.task, completed=n)

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.bar:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tps:.0f}")

    def note(self, text: str) -> None:
        if self.bar:
            self.bar.console.print(text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
