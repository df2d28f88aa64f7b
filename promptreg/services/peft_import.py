"""Register an existing PEFT prompt-learning adapter (prompt tuning, P-tuning, prefix tuning).

The adapter's ``adapter_model.safetensors`` holds ``prompt_embeddings`` (for P-tuning and projected
prefix tuning, the encoder's output: PEFT drops the encoder at save). It is checked against the base
model (dimensions, grouped-query attention for prefixes), bound to the model's fingerprint and
repackaged as a promptreg artifact whose PEFT export is equivalent. ``adapter_model.bin`` (pickle)
is refused: promptreg never unpickles.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import InputError

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

_PEFT_TO_METHOD = {"PROMPT_TUNING": "prompt_tuning", "P_TUNING": "p_tuning", "PREFIX_TUNING": "prefix_tuning"}


def read_peft_adapter(folder: Path) -> tuple[dict, dict]:
    """(adapter_config, tensors as numpy) of a PEFT prompt-learning adapter folder."""
    from promptreg.safetensors_io import load_numpy

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise InputError(f"{folder}: missing adapter_config.json (not a PEFT adapter folder)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"adapter_config.json: not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError("adapter_config.json: must be a JSON object")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        if (folder / "adapter_model.bin").exists():
            raise InputError(f"{folder}: only adapter_model.bin (pickle) found; promptreg never unpickles — "
                             "re-save the adapter with safe_serialization=True")
        raise InputError(f"{folder}: missing adapter_model.safetensors")
    peft_type = str(cfg.get("peft_type", ""))
    if peft_type not in _PEFT_TO_METHOD:
        raise InputError(f"adapter_config.json: peft_type {peft_type!r} is not a prompt-learning method "
                         f"({', '.join(_PEFT_TO_METHOD)})")
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        raise InputError(f"adapter_config.json: task_type {cfg.get('task_type')!r} is not supported (CAUSAL_LM only)")
    if int(cfg.get("num_transformer_submodules") or 1) != 1:
        raise InputError("adapter_config.json: encoder-decoder adapters (num_transformer_submodules 2) are not supported")
    tensors = load_numpy(weights)
    if "prompt_embeddings" not in tensors:
        raise InputError(f"{weights.name}: no 'prompt_embeddings' tensor (found {sorted(tensors)})")
    return cfg, tensors


def import_peft(registry: Registry, folder: Path | str, base_model: str, name: str, *, description: str | None = None,
                template: str | None = None, verbalizer: dict[str, str] | None = None):
    """Register a PEFT prompt-learning adapter. PEFT records no task: with ``verbalizer`` (label ->
    answer text) the version is a classification prompt, otherwise a generation prompt; ``template``
    (with ``{text}``, optionally ``{virtual}``) is how inputs are laid out (default ``{text}``, the
    soft prompt first, as PEFT places it)."""
    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.refs import check_name
    from promptreg.runtime.loader import resolve_model_path as resolve_model

    check_name(name)
    template = template or "{text}"
    if "{text}" not in template:
        raise InputError(f"template must contain {{text}}: {template!r}")
    task = ({"type": "classification", "template": template, "verbalizer": {k: [v] for k, v in verbalizer.items()}}
            if verbalizer else {"type": "generation", "template": template})
    cfg, tensors = read_peft_adapter(Path(folder))
    method = _PEFT_TO_METHOD[cfg["peft_type"]]
    info = model_fingerprint(resolve_model(base_model))
    prompt = tensors["prompt_embeddings"].astype("float32")
    n = int(cfg.get("num_virtual_tokens") or prompt.shape[0])
    if prompt.shape[0] != n:
        raise InputError(f"prompt_embeddings has {prompt.shape[0]} rows, adapter_config says {n} virtual tokens")
    method_config = {"imported_from": "peft", "peft_version": cfg.get("peft_version"),
                     "peft_base_model_name_or_path": cfg.get("base_model_name_or_path")}
    warnings = []
    if method == "prompt_tuning":
        method_config["init"] = str(cfg.get("prompt_tuning_init", "RANDOM")).lower()
    elif method == "p_tuning":
        method_config.update(encoder=str(cfg.get("encoder_reparameterization_type", "MLP")).lower(),
                             encoder_hidden=cfg.get("encoder_hidden_size"), encoder_trained_weights=False)
        warnings.append("PEFT saved only the P-tuning encoder's output: the version runs, but training cannot resume")
    else:
        method_config.update(projection=bool(cfg.get("prefix_projection", False)), exported_projection=True)
    with tempfile.TemporaryDirectory(prefix="promptreg-import-") as tmp:
        folder_out = write_artifact(
            Path(tmp) / "artifact", method=method, tensors={"prompt_embeddings": prompt}, base_model=info.to_dict(),
            num_virtual_tokens=n, method_config=method_config, created_by=registry.settings.user, task=task,
            extra={"source": "peft", "source_folder": str(Path(folder).resolve())})
        result = registry.push(folder_out, name, description=description)
    result.warnings = warnings + result.warnings
    return result
