"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``<dir>/latest/`` holds ``soft_prompt.safetensors`` (every trainable tensor, encoders and
generators included, so a run can resume — PEFT drops them), ``best.safetensors`` (the best
export so far), ``optimizer.safetensors`` (AdamW moments and step counts) and ``state.json``
(position in the data, schedule, histories, config). It is replaced atomically.

:class:`LoopState` is the training loop's state; it saves and loads itself through :func:`save` /
:func:`load`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptreg.errors import InputError

LATEST = "latest"


def optimizer_tensors(optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer state_dict into tensors and a JSON part."""
    import torch

    sd = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, state in sd["state"].items():
        meta["state"][str(idx)] = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(idx)][key] = "tensor"
            else:
                meta["state"][str(idx)][key] = value
    return tensors, meta


def load_optimizer(optimizer, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    state = {}
    for idx, entries in meta["state"].items():
        state[int(idx)] = {k: (tensors[f"{idx}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save(directory: Path, *, soft_prompt: dict, best: dict | None, optimizer, state: dict) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in soft_prompt.items()}, str(tmp / "soft_prompt.safetensors"))
        if best is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        opt_tensors, opt_meta = optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}, indent=1), encoding="utf-8")
        final = directory / LATEST
        old = directory / f".old-{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory / LATEST


def load(directory: Path) -> tuple[dict, dict | None, dict, dict]:
    """(soft_prompt tensors, best tensors or None, optimizer tensors, state) of the latest checkpoint."""
    from safetensors.torch import load_file

    path = Path(directory) / LATEST
    if not (path / "state.json").is_file():
        raise InputError(f"no checkpoint to resume from in {directory}")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    return load_file(str(path / "soft_prompt.safetensors")), best, load_file(str(path / "optimizer.safetensors")), state


def _empty_history() -> dict[str, list]:
    return {"step": [], "loss": [], "lr": [], "eval_step": [], "eval": []}


@dataclass
class LoopState:
    """Where a training run is: the one object the loop advances, saved into every checkpoint
    (``state.json`` + the best tensors) and loaded back to resume exactly there."""

    step: int = 0                        # optimizer steps done
    epoch: int = 0
    batch_pos: int = 0                   # batches of the current epoch consumed
    history: dict[str, list] = field(default_factory=_empty_history)   # per-step loss/lr, evaluations
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0                   # evaluations since the best one (early stopping)
    real_tokens: int = 0
    seconds: float = 0.0
    best: dict | None = None             # tensors of the best evaluation so far (best.safetensors)
    grad_scale: float | None = None      # fp16: the gradient scaler's scale

    def record_eval(self, score: float, soft) -> bool:
        """Count an evaluation; keep the soft prompt's tensors when it is the best so far (True)."""
        if self.best_metric is None or score > self.best_metric:
            self.best_metric, self.best_step, self.bad_evals = score, self.step, 0
            self.best = {k: v.clone() for k, v in soft.export_tensors().items()}
            return True
        self.bad_evals += 1
        return False

    def save(self, directory: Path, *, soft, optimizer, config: dict[str, Any], epoch_done: bool) -> Path:
        """Checkpoint the run (``epoch_done``: the next step starts the next epoch)."""
        return save(directory, soft_prompt=soft.export_tensors(), best=self.best, optimizer=optimizer, state={
            "step": self.step, "epoch": self.epoch + 1 if epoch_done else self.epoch,
            "batch_pos": 0 if epoch_done else self.batch_pos, "history": self.history,
            "best_metric": self.best_metric, "best_step": self.best_step, "bad_evals": self.bad_evals,
            "real_tokens": self.real_tokens, "seconds": self.seconds, "config": config,
            "grad_scale": self.grad_scale, "method_config": soft.method_config()})

    @classmethod
    def load(cls, directory: Path) -> tuple[LoopState, dict, dict, dict[str, Any]]:
        """(the state, the soft prompt's tensors, the optimizer's tensors, the saved JSON) of the latest
        checkpoint in ``directory``."""
        soft, best, opt, saved = load(directory)
        state = cls(step=saved.get("step", 0), epoch=saved.get("epoch", 0), batch_pos=saved.get("batch_pos", 0),
                    history=saved.get("history", _empty_history()), best_metric=saved.get("best_metric"),
                    best_step=saved.get("best_step"), bad_evals=saved.get("bad_evals", 0),
                    real_tokens=saved.get("real_tokens", 0), seconds=saved.get("seconds", 0.0), best=best,
                    grad_scale=saved.get("grad_scale"))
        return state, soft, opt, saved
