"""The training loop: a frozen causal LM, a trainable soft prompt, AdamW with warm-up and decay,
gradient accumulation, length-bucketed dynamic padding, periodic evaluation with early stopping,
and checkpoints that keep encoders/generators so ``resume`` continues exactly.

Classification with one-token answers scores only the answer position and only the label tokens'
rows of the LM head; multi-token answers score each label's whole answer (``label_score`` sum / mean
log-probability, softprompt/collate.py); generation computes full logits only at target positions.

Precision (softprompt/precision.py): the base runs in ``cfg.precision`` under autocast, the prompt and
AdamW state stay float32, fp16 scales the loss. Several processes (softprompt/distributed.py): every
rank walks the same global batches and takes its strided share; losses are sums over local rows
divided by the global count, prompt gradients are summed across ranks, so N processes compute the
1-process update; evaluation is sharded and gathered; only rank 0 writes checkpoints and metrics.
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
from promptreg.softprompt import distributed as dist
from promptreg.softprompt.collate import Answers, Encoded, Encoder, answer_tokens, collate, length_batches
from promptreg.softprompt.precision import check_finite_grads
from promptreg.softprompt.scoring import accuracy_metrics, classify, device_of, generation_loss, label_logits
from promptreg.training import checkpoint as ckpt
from promptreg.training.checkpoint import LoopState


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
    precision: str = "fp32"              # fp32 | bf16 | fp16: the frozen model's dtype + autocast
    gradient_checkpointing: bool = False # recompute decoder layers in backward (not with prefix tuning)
    fsdp: bool = False                   # under a launcher: shard the frozen decoder layers (FSDP2)
    stop_after_steps: int | None = None  # stop early at this step, as if interrupted (checkpoint kept)
    label_score: str = "sum"             # multi-token answers: sum | mean token log-probability

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
        if self.label_score not in ("sum", "mean"):
            raise InputError(f"label_score must be sum or mean, got {self.label_score!r}")
        from promptreg.softprompt.precision import Precision

        Precision(self.precision)


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
    label_ids: list[list[int]]            # each label's answer tokens
    trainable_parameters: int = 0         # what the optimizer updated (encoders and generators included)

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds else 0.0


def params_digest(model) -> str:
    """sha256 over every base parameter's bytes (proves the base model did not change). A parameter
    sharded by FSDP2 (a DTensor) is gathered whole first: every rank calls this at the same points."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach()
        t = t.full_tensor() if hasattr(t, "full_tensor") else t
        h.update(name.encode())
        h.update(t.cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Trainer:
    def __init__(self, base_model, tokenizer, config: TrainConfig, spec: DataSpec, train: list[Example],
                 eval_examples: list[Example] | None = None, *, checkpoint_dir: Path | None = None,
                 on_metrics: Callable[[list[tuple[str, float, int]]], None] | None = None,
                 progress: bool = True, notes: bool = False, dist_ctx: dist.DistContext | None = None,
                 warm_start: tuple[dict, dict] | None = None):
        """``progress``: the live bar on stderr (a terminal only); ``notes``: the per-evaluation lines on
        stderr, shown with or without the bar (the bar prints them above itself); both on rank 0 only.
        ``warm_start``: (method_config, tensors) of an exported prompt of the same method and shapes to
        start from instead of a fresh initialisation (``promptreg migrate`` onto a same-sized model)."""
        from promptreg.softprompt.precision import Precision

        config.validate()
        self.precision = Precision(config.precision)
        if not train:
            raise InputError("the training set is empty")
        self.base, self.tokenizer, self.cfg, self.spec = base_model, tokenizer, config, spec
        self.train_examples, self.eval_examples = train, list(eval_examples or [])
        if config.eval_limit is not None:
            self.eval_examples = self.eval_examples[: config.eval_limit]
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.warm_start = warm_start
        self.dist = dist_ctx or dist.current(str(device_of(base_model)))
        self.on_metrics = (on_metrics or (lambda rows: None)) if self.dist.is_main else (lambda rows: None)
        self.progress, self.notes = progress and self.dist.is_main, notes and self.dist.is_main
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
        elif self.warm_start is not None:
            warm_config, warm_tensors = self.warm_start
            soft = method_from_tensors(self.cfg.method, warm_config, warm_tensors, dims, trainable=True)
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

    def _denominator(self, rows: list[Encoded]) -> int:
        """What the loss of a global batch is averaged over: its rows, or its target tokens."""
        if self.spec.task == "classification":
            return len(rows)
        return sum(len(r.ids) - r.target_start for r in rows)

    def _loss(self, soft_model, batch, label_ids, denominator: int):
        """This rank's rows' summed loss over the GLOBAL batch's denominator (sums to the batch mean)."""
        import torch.nn.functional as F

        if self.spec.task == "classification":
            total = F.cross_entropy(label_logits(self.base, soft_model, batch, label_ids), batch["labels"],
                                    reduction="sum")
        else:
            total = generation_loss(self.base, soft_model, batch, reduction="sum")
        return total / denominator

    def evaluate(self, soft_model, rows: list[Encoded], label_ids, pad_id: int) -> dict[str, float]:
        import torch

        if not rows:
            return {}
        ctx = self.dist
        if self.spec.task == "classification":
            local, real = dist.shard_padded(ctx, rows)
            probs = classify(self.base, soft_model, local, label_ids, batch_size=max(32, self.cfg.batch_size),
                             pad_id=pad_id, precision=self.cfg.precision) if local else torch.zeros(0, len(label_ids))
            probs = dist.gather_strided(ctx, probs[:real], len(rows))
            gold = [r.label for r in rows]
            metrics = accuracy_metrics(probs, gold, self.spec.labels)
            metrics["loss"] = float(-torch.log(probs[torch.arange(len(gold)), torch.tensor(gold)].clamp_min(1e-12)).mean())
            return metrics
        (local, real), total, count = dist.shard_padded(ctx, rows), 0.0, 0
        device = device_of(self.base)
        with torch.no_grad(), self.precision.autocast(device.type):
            for idx in length_batches([len(r.ids) for r in local], 32, shuffle=False):
                part = [local[i] for i in idx if i < real]
                if not part:    # only padding: run it (FSDP ranks forward together), count nothing
                    generation_loss(self.base, soft_model, collate([local[i] for i in idx], pad_id, device))
                    continue
                batch = collate(part, pad_id, device)
                total += float(generation_loss(self.base, soft_model, batch, reduction="sum"))
                count += self._denominator(part)
        total, count = dist.sum_floats(ctx, [total, float(count)])
        loss = total / max(count, 1.0)
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
        st, resume_tensors, opt_tensors, saved = self._resume(resume)
        soft, model = self._build(resume_tensors, saved.get("method_config"))
        r = self._setup(soft, model, opt_tensors, saved)
        bar = _Progress(r.plan.total_steps, enabled=self.progress, notes=self.notes)
        bar.advance(st.step)
        soft.train()
        stopped_early = interrupted = False
        done = st.step >= r.plan.total_steps
        while not done and st.epoch < r.plan.max_epochs:
            order = length_batches(r.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + st.epoch)
            while st.batch_pos < r.plan.usable and not done:
                self._step(r, st, order, bar)
                done = st.step >= r.plan.total_steps
                epoch_done = st.batch_pos >= r.plan.usable
                if r.eval_rows and (st.step % r.plan.eval_every == 0 or done or epoch_done):
                    if self._evaluate_step(r, st, bar):
                        stopped_early = done = True
                    self._save(r, st)
                if not done and cfg.stop_after_steps is not None and st.step >= cfg.stop_after_steps:
                    self._save(r, st)
                    interrupted = done = True
            if st.batch_pos >= r.plan.usable:
                st.epoch, st.batch_pos = st.epoch + 1, 0
        bar.close()
        r.flush_metrics(self.on_metrics, force=True)
        if not interrupted:
            self._save(r, st)
        if params_digest(self.base) != before:
            raise RuntimeError("the base model's parameters changed during training")  # a bug, never expected
        return self._result(r, st, stopped_early, interrupted)

    def _resume(self, resume: bool) -> tuple[LoopState, dict | None, dict | None, dict]:
        """The loop state to start from (a fresh one, or the checkpoint's after checking it was made with
        the same settings), with the soft prompt's and optimizer's tensors and the raw saved state."""
        if not resume:
            return LoopState(), None, None, {}
        if self.checkpoint_dir is None:
            raise InputError("--resume needs a checkpoint directory")
        st, soft_tensors, opt_tensors, saved = LoopState.load(self.checkpoint_dir)
        for key in ("method", "method_options", "template", "batch_size", "grad_accum", "seed", "lr", "schedule",
                    "label_score"):
            if saved.get("config", {}).get(key, "sum" if key == "label_score" else None) != asdict(self.cfg)[key]:
                raise InputError(f"cannot resume: {key} differs from the checkpoint ({saved.get('config', {}).get(key)!r})")
        return st, soft_tensors, opt_tensors, saved

    def _setup(self, soft, model, opt_tensors: dict | None, saved: dict) -> _Run:
        import torch

        cfg = self.cfg
        encoder = Encoder(self.tokenizer, cfg.template, slots=soft.input_slots, max_text_tokens=cfg.max_text_tokens)
        train_rows = self._encode(encoder, self.train_examples)
        device = device_of(self.base)
        answers = answer_tokens(self.tokenizer, [self.spec.answer(lab) for lab in self.spec.labels] if
                                self.spec.task == "classification" else [], cfg.label_score)
        # one-token answers: the label ids as a device tensor (the fast path), else the Answers
        label_ids = torch.tensor(answers.first, dtype=torch.long, device=device) if answers.single_token else answers
        params = [p for p in soft.parameters() if p.requires_grad]
        if not params:
            raise InputError(f"method {cfg.method} has no trainable parameters")
        if any(p.dtype != torch.float32 for p in params):
            raise RuntimeError("soft-prompt parameters must be float32 master weights")  # a bug, never expected
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if opt_tensors is not None:
            ckpt.load_optimizer(optimizer, opt_tensors, saved["optimizer"])
        scaler = self.precision.scaler(device.type)
        if scaler is not None and saved.get("grad_scale") is not None:
            scaler.load_state_dict({**scaler.state_dict(), "scale": float(saved["grad_scale"])})
        from promptreg.training.memory import gradient_checkpointing

        if cfg.fsdp:
            dist.shard_frozen_layers(self.base, self.dist)   # after the prompt was initialised from the embeddings
        checkpointing = gradient_checkpointing(self.base, soft, enabled=cfg.gradient_checkpointing)
        if cfg.gradient_checkpointing or (cfg.fsdp and self.dist.enabled):
            model.share_prefix = False  # the shared-prefix path runs through a cache, which checkpointing
            #                              drops and FSDP's resharded layers cannot backpropagate through
        plan = _Plan.of(cfg, len(train_rows))
        return _Run(soft, model, encoder, train_rows, self._encode(encoder, self.eval_examples), device, label_ids,
                    params, optimizer, plan, [len(row.ids) for row in train_rows], scaler, checkpointing)

    def _step(self, r: _Run, st: LoopState, order: list[list[int]], bar: _Progress) -> None:
        """One optimizer step over ``grad_accum`` batches."""
        import torch

        cfg, ctx, precision, scaler = self.cfg, self.dist, self.precision, r.scaler
        t0 = time.perf_counter()
        r.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for k in range(cfg.grad_accum):
            global_rows = [r.train_rows[i] for i in order[st.batch_pos + k]]
            mine = dist.shard(ctx, global_rows)
            st.real_tokens += sum(len(row.ids) for row in global_rows)
            weight = 1.0
            if not mine:  # a global batch smaller than the world: this rank adds zero gradient
                if not cfg.fsdp:
                    continue
                mine, weight = global_rows[:1], 0.0   # sharded layers: run the forward with the others
            batch = collate(mine, r.encoder.pad_id, r.device)
            with r.checkpointing, precision.autocast(r.device.type):
                loss = self._loss(r.model, batch, r.label_ids, self._denominator(global_rows)) * weight / cfg.grad_accum
            if not torch.isfinite(loss):
                raise InputError(f"training diverged: non-finite loss at step {st.step + 1} (lower --lr"
                                 f"{' or use --precision fp32' if precision.mixed else ''})")
            (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_sum += float(loss.detach())
        st.batch_pos += cfg.grad_accum
        if ctx.enabled:
            dist.all_reduce_grads(ctx, r.params)
            loss_sum = dist.sum_floats(ctx, [loss_sum])[0]
        for group in r.optimizer.param_groups:
            group["lr"] = cfg.lr * r.plan.lr_factor(st.step)
        if scaler is not None:
            scaler.unscale_(r.optimizer)
        else:
            check_finite_grads(r.params, st.step + 1, precision)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(r.params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(r.optimizer)  # skipped (and the scale lowered) when a gradient is inf/nan
            scaler.update()
        else:
            r.optimizer.step()
        st.seconds += time.perf_counter() - t0
        st.step += 1
        lr_now = r.optimizer.param_groups[0]["lr"]
        st.history["step"].append(st.step)
        st.history["loss"].append(loss_sum)
        st.history["lr"].append(lr_now)
        r.pending += [("train_loss", loss_sum, st.step), ("lr", lr_now, st.step)]
        bar.update(st.step, loss_sum, st.real_tokens / st.seconds if st.seconds else 0.0)
        r.flush_metrics(self.on_metrics)

    def _evaluate_step(self, r: _Run, st: LoopState, bar: _Progress) -> bool:
        """Evaluate, keep the best tensors; True when early stopping says stop."""
        r.soft.eval()
        metrics = self.evaluate(r.model, r.eval_rows, r.label_ids, r.encoder.pad_id)
        r.soft.train()
        st.history["eval_step"].append(st.step)
        st.history["eval"].append(metrics)
        r.pending += [(f"eval_{k}", v, st.step) for k, v in metrics.items()]
        st.record_eval(self._score(metrics), r.soft)
        bar.note(f"step {st.step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in metrics.items()
                                                 if k in ("accuracy", "loss", "macro_f1")))
        return st.bad_evals >= self.cfg.patience

    def _save(self, r: _Run, st: LoopState) -> None:
        """Checkpoint (rank 0 only)."""
        if self.checkpoint_dir is not None and self.dist.is_main:
            st.grad_scale = float(r.scaler.get_scale()) if r.scaler is not None else None
            st.save(self.checkpoint_dir, soft=r.soft, optimizer=r.optimizer, config=asdict(self.cfg),
                    epoch_done=st.batch_pos >= r.plan.usable)

    def _result(self, r: _Run, st: LoopState, stopped_early: bool, interrupted: bool) -> TrainResult:
        from promptreg.softprompt.methods import ModelDims, method_from_tensors

        final_tensors = st.best if st.best is not None else r.soft.export_tensors()
        best_soft = method_from_tensors(self.cfg.method, r.soft.method_config(), final_tensors,
                                        ModelDims.from_config(self.base.config), trainable=False)
        best_soft.eval()
        history = st.history
        eval_metrics = (history["eval"][history["eval_step"].index(st.best_step)]
                        if st.best_step in history["eval_step"] else {})
        return TrainResult(best_soft, st.step, st.epoch, st.best_metric, st.best_step, stopped_early, interrupted,
                           eval_metrics, history, st.real_tokens, st.seconds, list(self.spec.labels or []),
                           [list(t) for t in Answers.of(r.label_ids).tokens], sum(p.numel() for p in r.params))


@dataclass
class _Plan:
    """The step schedule of a run: how many optimizer steps, warmup, evaluation cadence, learning rate."""

    cfg: TrainConfig
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    usable: int          # batches of an epoch used: whole accumulation groups only
    eval_every: int
    max_epochs: int

    @classmethod
    def of(cls, cfg: TrainConfig, rows: int) -> _Plan:
        batches_per_epoch = math.ceil(rows / cfg.batch_size)
        if batches_per_epoch < cfg.grad_accum:
            raise InputError(f"grad_accum {cfg.grad_accum} exceeds the {batches_per_epoch} batches of an epoch")
        steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        return cls(cfg, batches_per_epoch, steps_per_epoch, total_steps, int(total_steps * cfg.warmup_ratio),
                   batches_per_epoch - batches_per_epoch % cfg.grad_accum, cfg.eval_every or steps_per_epoch,
                   cfg.epochs if cfg.max_steps is None else math.ceil(total_steps / steps_per_epoch))

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.cfg.schedule == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        if self.cfg.schedule == "linear":
            return max(0.0, 1 - progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class _Run:
    """What the loop works with (built once by Trainer._setup)."""

    soft: Any
    model: Any
    encoder: Encoder
    train_rows: list[Encoded]
    eval_rows: list[Encoded]
    device: Any
    label_ids: Any
    params: list
    optimizer: Any
    plan: _Plan
    lengths: list[int]
    scaler: Any = None                    # fp16: the gradient scaler
    checkpointing: Any = None             # context manager: gradient checkpointing on (or a no-op)
    pending: list[tuple[str, float, int]] = field(default_factory=list)   # metrics not yet handed on

    def flush_metrics(self, sink: Callable[[list[tuple[str, float, int]]], None], *, force: bool = False) -> None:
        if self.pending and (force or len(self.pending) >= 100):
            sink(self.pending)
            self.pending = []


class _Progress:
    """A rich progress bar with loss, throughput and ETA (silent when disabled or not a terminal), and
    the per-evaluation notes: above the bar, or as plain stderr lines without it (``notes``)."""

    def __init__(self, total: int, enabled: bool, notes: bool = False):
        self.enabled, self.notes = enabled, notes
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
        elif self.notes:
            import sys

            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
