"""Memory for training: gradient checkpointing of the frozen decoder and the ``--max-memory`` guard.

Invariants:
- gradient checkpointing uses transformers' own per-layer mechanism (``GradientCheckpointingLayer``,
  non-reentrant ``torch.utils.checkpoint``), enabled only around the training forward: the layers
  are flagged as training (that flag alone; no dropout module changes mode) inside the context and
  restored after, so evaluation and the base model's eval mode are untouched;
- prefix tuning is refused with gradient checkpointing: a checkpointed transformers layer drops its
  cache argument (``_can_checkpoint_with_cache = False``), and the prefix key/values ARE that cache,
  so the prefix would be silently ignored (PEFT's open peft#2191 is the same conflict); for the same
  reason the trainer turns off SoftPromptModel's shared-prefix computation (it runs through a cache);
- the guard estimates, before anything is loaded, the weights (parameters x dtype size, from the
  config) plus the activations kept for the backward of the longest batch, and refuses a job whose
  estimate exceeds ``--max-memory`` with one line naming the parts and what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptreg.errors import InputError

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'24GiB', '80GB', '512MiB', '1e9' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"--max-memory expects a size such as 24GiB or 80GB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class gradient_checkpointing:
    """Context: the decoder layers of ``base`` recompute their forward in backward while inside."""

    def __init__(self, base, soft_prompt, *, enabled: bool):
        self.layers = []
        if not enabled:
            return
        if soft_prompt.kind == "prefix":
            raise InputError("--gradient-checkpointing does not work with prefix tuning: a checkpointed layer "
                             "drops the key/value cache that holds the prefix (same as PEFT, peft#2191); "
                             "use a smaller --batch-size or another method")
        from transformers.modeling_layers import GradientCheckpointingLayer

        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.eval()
        self.layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not self.layers:
            raise InputError("--gradient-checkpointing: this base model has no checkpointable layers")

    def __enter__(self):
        for layer in self.layers:
            layer.training = True  # the flag transformers checks; submodules (dropout) stay in eval
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.training = False
        return False


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def estimate(hf_config, *, dtype_bytes: int, batch: int, seq: int, checkpointing: bool) -> MemoryEstimate:
    """Bytes for the frozen weights plus the activations saved for the backward of one micro-batch.

    Per layer and token a Llama block keeps about 16 hidden-size vectors (norm inputs, q/k/v, attention
    output, residuals) plus 3 intermediate-size vectors (gate, up, their product) for the backward
    through activations; with checkpointing only each layer's input is kept (plus one layer
    recomputed). Eager attention would add heads x seq^2 per layer; SDPA/flash keep O(seq)."""
    cfg = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    h, layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    inter = int(getattr(cfg, "intermediate_size", 4 * h))
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or h // heads)
    per_layer_params = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter + 2 * h
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    params = layers * per_layer_params + vocab * h * (1 if tied else 2) + h
    tokens = batch * seq
    per_layer_act = tokens * (16 * h + 3 * inter) * dtype_bytes
    acts = (tokens * h * dtype_bytes * layers + per_layer_act) if checkpointing else per_layer_act * layers
    return MemoryEstimate(weights=params * dtype_bytes, activations=acts)


def check_budget(hf_config, limit: int, *, dtype_bytes: int, batch: int, seq: int, checkpointing: bool) -> MemoryEstimate:
    est = estimate(hf_config, dtype_bytes=dtype_bytes, batch=batch, seq=seq, checkpointing=checkpointing)
    if est.total > limit:
        gib = 2**30
        hints = [] if checkpointing else ["--gradient-checkpointing"]
        hints += ["a smaller --batch-size with --grad-accum", "--max-text-tokens"]
        if dtype_bytes == 4:
            hints.insert(0, "--precision bf16")
        raise InputError(f"estimated memory {est.total / gib:.1f} GiB (weights {est.weights / gib:.1f} GiB + "
                         f"activations {est.activations / gib:.1f} GiB for batch {batch} x {seq} tokens) exceeds "
                         f"--max-memory {limit / gib:.1f} GiB; try {', '.join(hints)}")
    return est
