"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``<dir>/latest/`` holds ``soft_prompt.safetensors`` (every trainable tensor, encoders and
generators included, so a run can resume — PEFT drops them), ``best.safetensors`` (the best
export so far), ``optimizer.safetensors`` (AdamW moments and step counts) and ``state.json``
(position in the data, schedule, histories, config). It is replaced atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
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
