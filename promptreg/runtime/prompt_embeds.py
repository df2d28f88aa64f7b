"""Input-level soft prompts as plain prompt embeddings, for engines that take ``prompt_embeds`` (vLLM).

An input-level method (prompt tuning, P-tuning: ``SoftPrompt.kind == "input"``) acts ONLY on the input
embeddings: the model sees ``[left text | soft prompt | template + text]`` where every real token is
its row of the base model's input embedding matrix and the N virtual slots hold the version's
``prompt()`` rows, in order. ``build_prompt_embeds`` writes exactly that ``[T, H]`` tensor from the
ids / virtual mask a version's ``Encoder.prompt(text)`` gives, so an engine that runs the base model on
it (positions 0..T-1, causal attention) computes what ``SoftPromptModel`` computes for the row alone.

Methods that act inside the model -- prefix tuning (per-layer key/values) and ID-SPAM (a prompt
inserted at layer k, pooled from the row's tokens) -- cannot be expressed as input embeddings:
``refuse_unless_input`` refuses them with one line naming the runtime that serves them.

``EmbeddingBase`` is the part of a base-model folder such an engine's client needs: its fingerprint
(promptreg.fingerprints.model), tokenizer, dimensions and input embedding matrix -- read alone from the
folder's safetensors (one tensor; the rest of the weights is never loaded here, the engine holds them).

Invariants: tensors are read with safetensors only; the embedding matrix is returned in float32 (the
engine casts prompt embeddings to its own dtype); ``build_prompt_embeds`` never changes a real token's
row and fills exactly the virtual slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptreg.errors import InputError

# where Llama-family checkpoints keep the input embeddings (multimodal wrappers nest the text model)
EMBEDDING_NAMES = ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight",
                   "language_model.model.embed_tokens.weight", "embed_tokens.weight")
OWN_RUNTIME = "promptreg serve --engine promptreg"


def method_kind(method: str) -> str:
    """``"input"``, ``"prefix"``, ``"layer"`` or ``"deep"`` for a registered method name (InputError if unknown)."""
    from promptreg.softprompt.methods import METHODS

    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    return METHODS[method].kind


def refuse_unless_input(method: str, label: str, engine: str = "vLLM") -> None:
    """InputError (one line) unless ``method`` acts only on the input embeddings."""
    kind = method_kind(method)
    if kind == "input":
        return
    where = "every layer's keys/values" if kind == "prefix" else "the hidden states inside the model"
    raise InputError(f"{label} is {method}, which acts on {where}, not on input embeddings: {engine} cannot "
                     f"serve it; serve it with promptreg's own runtime ({OWN_RUNTIME})")


def build_prompt_embeds(weight, ids, virtual, prompt):
    """``[T, H]`` embeddings of one row: ``weight[ids]`` with the virtual slots replaced by ``prompt``'s
    rows in order (``prompt`` None or ``virtual`` None / all False: no slots). ``weight`` [V, H]; the result
    has ``weight``'s dtype and device."""
    import torch

    ids_t = torch.as_tensor([int(t) for t in ids], dtype=torch.long, device=weight.device)
    if ids_t.numel() == 0:
        raise InputError("a prompt needs at least one token")
    if int(ids_t.min()) < 0 or int(ids_t.max()) >= weight.shape[0]:
        raise InputError(f"token ids outside the vocabulary (size {weight.shape[0]})")
    embeds = weight[ids_t]
    slots = [i for i, v in enumerate(virtual or ()) if v]
    if virtual is not None and len(virtual) != len(ids):
        raise InputError(f"virtual has {len(virtual)} entries for {len(ids)} ids")
    n = 0 if prompt is None else int(prompt.shape[0])
    if len(slots) != n:
        raise InputError(f"the soft prompt has {n} virtual tokens, the row has {len(slots)} virtual slots")
    if n:
        if prompt.shape[-1] != weight.shape[1]:
            raise InputError(f"the soft prompt's width {prompt.shape[-1]} is not the model's {weight.shape[1]}")
        embeds = embeds.clone()
        embeds[torch.as_tensor(slots, device=weight.device)] = prompt.to(device=weight.device, dtype=weight.dtype)
    return embeds


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (index or every top-level file)."""
    from promptreg.safetensors_io import read_header

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{index}: unreadable shard index ({exc})") from None
        return {name: folder / file for name, file in weight_map.items()}
    out: dict[str, Path] = {}
    for path in sorted(folder.glob("*.safetensors")):
        for name in read_header(path)[0]:
            out[name] = path
    return out


def embedding_matrix(folder: Path | str):
    """The input embedding matrix [V, H] (float32) of a base-model folder, read alone with safetensors."""
    import torch
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    files = _weight_files(folder)
    name = next((n for n in EMBEDDING_NAMES if n in files), None)
    if name is None:
        found = sorted(n for n in files if n.endswith("embed_tokens.weight"))
        if len(found) != 1:
            raise InputError(f"{folder}: cannot tell which tensor is the input embedding matrix "
                             f"(looked for {', '.join(EMBEDDING_NAMES)}; found {found or 'none'})")
        name = found[0]
    try:
        with safe_open(str(files[name]), framework="pt") as f:
            return f.get_tensor(name).to(torch.float32)
    except (SafetensorError, OSError) as exc:
        raise InputError(f"cannot read {name} from {files[name]}: {exc}") from None


@dataclass
class EmbeddingBase:
    """A base model as a prompt-embeddings client sees it: folder, fingerprint (``info``:
    fingerprints.model.ModelInfo), tokenizer, dimensions; the embedding matrix is read on first use."""

    folder: Path
    info: Any
    tokenizer: Any
    dims: Any                                  # training.methods.ModelDims
    device: str = "cpu"
    _weight: Any = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def weight(self):
        if self._weight is None:
            weight = embedding_matrix(self.folder)
            if tuple(weight.shape) != (weight.shape[0], self.dims.hidden_size):
                raise InputError(f"{self.folder}: embedding matrix {list(weight.shape)} does not match hidden "
                                 f"size {self.dims.hidden_size}")
            self._weight = weight
        return self._weight


def load_embedding_base(model: str | Path) -> EmbeddingBase:
    """Fingerprint, tokenizer and dimensions of a base-model folder (or ``smollm2``), no weights loaded."""
    from transformers import AutoConfig, AutoTokenizer

    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.softprompt.methods import ModelDims

    folder = resolve_model_path(model)
    info = model_fingerprint(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        dims = ModelDims.from_config(AutoConfig.from_pretrained(folder))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load base model {folder}: {first}") from None
    return EmbeddingBase(folder, info, tokenizer, dims)
