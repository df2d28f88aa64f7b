"""Write a soft-prompt artifact folder (see promptreg.artifact.manifest for the format)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promptreg.artifact.manifest import (
    MANIFEST_FILE,
    PEFT_CONFIG_FILE,
    PEFT_METHODS,
    PEFT_WEIGHTS_FILE,
    TENSORS_FILE,
    Manifest,
    format_validation_error,
)
from promptreg.artifact.peft_export import adapter_config
from promptreg.errors import InputError

_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "float64": "F64"}


def _to_numpy(value: Any):
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor; converted without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.ascontiguousarray(np.asarray(value))
    if arr.dtype.name not in _DTYPE_NAMES:
        arr = arr.astype(np.float32)
    return arr


def write_artifact(
    dest: Path | str,
    *,
    method: str,
    tensors: Mapping[str, Any],
    base_model: Mapping[str, Any],
    num_virtual_tokens: int | None = None,
    task: Mapping[str, Any] | None = None,
    method_config: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    created_by: str = "",
    reproducibility: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the artifact folder atomically (a temporary sibling renamed into place).

    ``tensors`` maps names to torch tensors or numpy arrays; ``prompt_embeddings`` is required for
    the PEFT methods. ``base_model`` is a ModelInfo.to_dict() (or the same keys)."""
    from safetensors.numpy import save_file

    from promptreg.version import __version__

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"destination exists and is not empty: {dest}")
    arrays = {name: _to_numpy(t) for name, t in tensors.items()}
    if method in PEFT_METHODS and "prompt_embeddings" not in arrays:
        raise InputError(f"method {method} needs a 'prompt_embeddings' tensor")
    if num_virtual_tokens is None:
        if "prompt_embeddings" not in arrays:
            raise InputError("num_virtual_tokens is required when there is no prompt_embeddings tensor")
        num_virtual_tokens = int(arrays["prompt_embeddings"].shape[0])
    bm_keys = set(Manifest.model_fields["base_model"].annotation.model_fields)
    try:
        manifest = Manifest(
            method=method,
            num_virtual_tokens=num_virtual_tokens,
            task=dict(task or {}),
            method_config=dict(method_config or {}),
            tensors={n: {"shape": list(a.shape), "dtype": _DTYPE_NAMES[a.dtype.name]} for n, a in arrays.items()},
            base_model={k: v for k, v in dict(base_model).items() if k in bm_keys},
            dataset=dict(dataset) if dataset else None,
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            created_by=created_by,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            promptreg_version=__version__,
            reproducibility=dict(reproducibility or {}),
            validation=dict(validation) if validation else None,
            extra=dict(extra or {}),
        )
    except Exception as exc:  # pydantic.ValidationError
        raise InputError(f"invalid artifact description: {format_validation_error(exc)}") from None
    expected = manifest.expected_prompt_shape()
    if expected is not None and list(arrays["prompt_embeddings"].shape) != expected:
        raise InputError(
            f"prompt_embeddings has shape {list(arrays['prompt_embeddings'].shape)}, "
            f"{method} on this base model needs {expected}"
        )

    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_file(arrays, str(tmp / TENSORS_FILE), metadata={"format": "promptreg", "method": method})
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if method in PEFT_METHODS:
            save_file({"prompt_embeddings": arrays["prompt_embeddings"]}, str(tmp / PEFT_WEIGHTS_FILE),
                      metadata={"format": "pt"})
            (tmp / PEFT_CONFIG_FILE).write_text(
                json.dumps(adapter_config(manifest), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
