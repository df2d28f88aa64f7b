"""Soft-prompt methods (one file each, registered by one ``register_method`` call): construction and
rebuilding from stored tensors.

``build_method(name, config, dims, embedding_weight=..., base_model=..., ...)`` makes a fresh, trainable
method (``base_model``: only prefix tuning's activation init runs it);
``method_from_tensors(name, method_config, tensors, dims, trainable=...)`` rebuilds one from an
artifact (``soft_prompt.safetensors`` + ``promptreg.json``'s ``method_config``) or a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from promptreg.errors import InputError
from promptreg.softprompt.methods import iapt, id_spam, p_tuning, prefix_tuning, prompt_tuning  # noqa: F401 - registers them
from promptreg.softprompt.methods.base import DERIVED_KEYS, METHODS, ModelDims, SoftPrompt, parse_config
from promptreg.softprompt.methods.iapt import Iapt, IaptConfig
from promptreg.softprompt.methods.id_spam import IdSpam, IdSpamConfig
from promptreg.softprompt.methods.p_tuning import PEFT_KEYS, PTuning, PTuningConfig
from promptreg.softprompt.methods.prefix_tuning import PrefixTuning, PrefixTuningConfig
from promptreg.softprompt.methods.prompt_tuning import PromptTuning, PromptTuningConfig

_DERIVED = (*DERIVED_KEYS, *PEFT_KEYS, "kv_dim", "init_source")
_INIT_FIELDS = ("init", "init_text")
_DIM_KEYS = ("hidden_size", "num_layers", "num_kv_heads", "head_dim", "kv_dim", *PEFT_KEYS)

__all__ = [
    "METHODS", "Iapt", "IaptConfig", "IdSpam", "IdSpamConfig", "ModelDims", "PTuning", "PTuningConfig", "PrefixTuning",
    "PrefixTuningConfig", "PromptTuning", "PromptTuningConfig", "SoftPrompt", "build_method", "make_config",
    "method_from_tensors",
]


def _lookup(name: str) -> type[SoftPrompt]:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def make_config(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """The method's config dataclass from a dict (unknown keys refused; method_config() extras ignored)."""
    return parse_config(_lookup(name).config_class, config, name, derived=_DERIVED)


def build_method(name: str, config: Mapping[str, Any] | None, dims: ModelDims, *, embedding_weight: Tensor,
                 tokenizer=None, label_words: Sequence[str] | None = None, seed: int = 0,
                 base_model=None) -> SoftPrompt:
    """A fresh trainable method. ``embedding_weight``: the base model's input embedding matrix [V, H]
    (used for initialisation only); ``base_model``: the frozen base model, run once (no grad) by
    methods whose initialisation needs activations (prefix tuning's ``init="activations"``; without it
    they fall back to random and record ``init_effective``), ignored by the others. Every random choice
    derives from ``seed`` (the global RNG is left untouched)."""
    cls = _lookup(name)
    cfg = make_config(name, config)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module = cls.create(cfg, dims, embedding_weight=embedding_weight, tokenizer=tokenizer,
                            label_words=label_words, generator=generator, base_model=base_model)
    module.provenance["seed"] = int(seed)
    if label_words:
        module.provenance["label_words"] = list(label_words)
    return module


def method_from_tensors(name: str, method_config: Mapping[str, Any] | None, tensors: Mapping[str, Tensor],
                        dims: ModelDims, *, trainable: bool = False) -> SoftPrompt:
    """Rebuild a method from its exported tensors. ``trainable=True`` restores the encoder /
    reparameterisation / generator weights so training resumes exactly; ``trainable=False`` uses
    ``prompt_embeddings`` directly where the method has one (inference; parameters frozen).
    ``method_config`` is read leniently: unknown keys (provenance) are kept, not refused."""
    cls = _lookup(name)
    mc = dict(method_config or {})
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    # Stored configs carry provenance (seed, init record, "imported_from", PEFT's init names...): only the
    # structural fields shape the module; the initialisation fields are irrelevant once tensors exist.
    structural = {k: v for k, v in mc.items() if k in fields and k not in _INIT_FIELDS}
    cfg = make_config(name, structural)
    tensors = {k: (v if isinstance(v, Tensor) else torch.as_tensor(v)) for k, v in tensors.items()}
    module = cls.from_tensors(cfg, tensors, dims, trainable)
    # method_config() of the rebuilt module gives back what was stored (dims are recomputed)
    module.provenance.update({k: v for k, v in mc.items() if k not in structural and k not in _DIM_KEYS})
    if name == "prefix_tuning" and "init" not in mc:
        module.provenance["init"] = "random"  # stored before prefix tuning had an init option (or imported)
    if not trainable:
        module.requires_grad_(False)
    return module
