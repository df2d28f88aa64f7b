"""Prefix tuning (Li & Liang 2021): N trainable key/value pairs per layer, used as past key/values.

``prompt()`` is ``[N, L*2*kv_dim]`` in PEFT's row layout: each row is (layer, key/value, kv head,
head_dim), kv_dim = num_key_value_heads * head_dim (grouped-query attention stores kv heads only).

Initialisation (``init``):
- ``"activations"`` (default; Li & Liang found real-word activations crucial): the frozen base model
  is run once (no grad) on N real tokens and the prefix starts at their per-layer key/value states,
  read from the model's cache. The tokens are ``init_text``'s when given, else the label words'
  (classification: all label words' tokens in order), else N seeded vocabulary ids among the first
  5,000 non-special ids; repeated/truncated to N. Cached keys are post-RoPE at positions 0..N-1, which
  is where the runtime places the prefix, so at step 0 the model sees exactly "[init tokens] + input".
  Without a base model (``build_method(..., base_model=None)``) it falls back to ``"random"``
  (recorded as ``init_effective``).
- ``"random"``: PEFT's initialisation (the old behaviour): N(0, 1) direct prefixes, or PEFT's
  default-initialised projection MLP.

With ``projection`` (Li & Liang's reparameterisation, PEFT's ``prefix_projection``):
Embedding [N, H] -> Linear(H, projection_hidden) -> Tanh -> Linear(projection_hidden, L*2*kv_dim).
With ``init="activations"`` the MLP is a learned RESIDUAL on a fixed base: ``prompt = base_kv + MLP()``
where ``base_kv`` (a buffer, exported as ``encoder.base_kv``) holds the activations and the last
Linear starts at zero, so step 0 is exactly the activations and the whole MLP still trains. Artifacts
without ``encoder.base_kv`` (random init, or made before this option) rebuild as a plain MLP.
The MLP is a training device: ``prompt_embeddings`` stores the full output (PEFT's export uses it as
is), ``encoder.*`` the weights (and base) needed to resume training exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.softprompt.methods.base import (
    ModelDims,
    SoftPrompt,
    _sample_vocab_ids,
    _token_ids,
    check_positive,
    check_shape,
    export_with_encoder,
    frozen_tensor,
    load_module,
    register_method,
    require,
)
from promptreg.transformers_compat import cache_kwarg, output_cache

PREFIX_INIT_CHOICES = ("activations", "random")


@dataclass(frozen=True)
class PrefixTuningConfig:
    num_virtual_tokens: int = 20
    projection: bool = True
    projection_hidden: int = 512
    init: str = "activations"
    init_text: str | None = None

    def __post_init__(self) -> None:
        check_positive("prefix_tuning", "num_virtual_tokens", self.num_virtual_tokens)
        check_positive("prefix_tuning", "projection_hidden", self.projection_hidden)
        if not isinstance(self.projection, bool):
            raise InputError(f"prefix_tuning: projection must be true or false, got {self.projection!r}")
        if self.init not in PREFIX_INIT_CHOICES:
            raise InputError(f"prefix_tuning: init must be one of {', '.join(PREFIX_INIT_CHOICES)}, "
                             f"got {self.init!r}")
        if self.init_text is not None and not (isinstance(self.init_text, str) and self.init_text.strip()):
            raise InputError(f"prefix_tuning: init_text must be a non-empty string, got {self.init_text!r}")


class PrefixEncoder(nn.Module):
    """Embedding [N, H] -> Linear -> Tanh -> Linear -> [N, L*2*kv_dim] (names as PEFT's PrefixEncoder),
    plus the fixed ``base_kv`` buffer [N, L*2*kv_dim] when given (the MLP is then a residual on it)."""

    def __init__(self, n: int, hidden: int, projection_hidden: int, out_dim: int,
                 base_kv: Tensor | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, hidden)
        self.transform = nn.Sequential(nn.Linear(hidden, projection_hidden), nn.Tanh(),
                                       nn.Linear(projection_hidden, out_dim))
        if base_kv is not None:
            self.register_buffer("base_kv", frozen_tensor(base_kv))
        else:
            self.base_kv = None

    def forward(self) -> Tensor:
        out = self.transform(self.embedding.weight)
        return out if self.base_kv is None else self.base_kv + out


def _init_token_ids(config: PrefixTuningConfig, vocab: int, tokenizer, label_words: Sequence[str] | None,
                    generator: torch.Generator) -> tuple[list[int], str]:
    """N real token ids for the activation init, and where they came from (text | labels | vocab)."""
    n = config.num_virtual_tokens
    ids: list[int] = []
    source = "vocab"
    if config.init_text is not None or label_words:
        if tokenizer is None:
            raise InputError("prefix_tuning: init 'activations' with label words or init_text needs the base "
                             "model's tokenizer")
        if config.init_text is not None:
            ids, source = _token_ids(tokenizer, config.init_text), "text"
            if not ids:
                raise InputError(f"prefix_tuning: init_text {config.init_text!r} has no tokens")
        else:
            for word in label_words:
                word_ids = _token_ids(tokenizer, word)
                if not word_ids:
                    raise InputError(f"prefix_tuning: label word {word!r} has no tokens")
                ids.extend(word_ids)
            source = "labels"
    if not ids:
        return _sample_vocab_ids(n, vocab, tokenizer, generator), source
    return [ids[i % len(ids)] for i in range(n)], source


@torch.no_grad()
def prefix_activations(base_model: nn.Module, token_ids: Sequence[int], dims: ModelDims) -> Tensor:
    """The base model's per-layer key/value states for ``token_ids`` (positions 0..N-1, no padding), as
    float32 ``[N, L*2*kv_dim]`` rows in PEFT's layout (layer, key/value, kv head, head_dim)."""
    from transformers import DynamicCache

    param = next(base_model.parameters())
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=param.device)
    n = ids.shape[1]
    decoder = getattr(base_model, "model", None)
    if decoder is None:
        decoder = base_model.get_decoder()
    cache = DynamicCache(config=base_model.config)
    was_training = base_model.training
    base_model.eval()
    try:
        out = decoder(input_ids=ids, attention_mask=torch.ones_like(ids),
                      position_ids=torch.arange(n, device=ids.device).unsqueeze(0),
                      use_cache=True, **cache_kwarg(decoder, cache))
    finally:
        base_model.train(was_training)
    returned = output_cache(out)
    cache = returned if returned is not None else cache
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) < dims.num_layers:
        raise InputError(f"prefix_tuning: the base model's cache has {0 if layers is None else len(layers)} "
                         f"layers, expected {dims.num_layers}")
    expected = (1, dims.num_kv_heads, n, dims.head_dim)
    per_layer = []
    for layer in layers[: dims.num_layers]:
        keys, values = layer.keys, layer.values
        if keys is None or tuple(keys.shape) != expected or tuple(values.shape) != expected:
            got = None if keys is None else list(keys.shape)
            raise InputError(f"prefix_tuning: cached key/values have shape {got}, expected {list(expected)}")
        per_layer.append(torch.stack([keys[0], values[0]]))  # [2, kv heads, N, head_dim]
    kv = torch.stack(per_layer)  # [L, 2, kv heads, N, head_dim]
    return kv.permute(3, 0, 1, 2, 4).reshape(n, dims.prefix_dim).to(device="cpu", dtype=torch.float32)


class PrefixTuning(SoftPrompt):
    method = "prefix_tuning"
    config_class = PrefixTuningConfig
    kind = "prefix"

    def __init__(self, config: PrefixTuningConfig, dims: ModelDims, *, with_encoder: bool,
                 prefix: Tensor | None = None, trainable: bool = True, base_kv: Tensor | None = None) -> None:
        super().__init__(config, dims)
        self.encoder = (PrefixEncoder(config.num_virtual_tokens, dims.hidden_size, config.projection_hidden,
                                      dims.prefix_dim, base_kv) if with_encoder else None)
        # the direct prefix (no projection), or the stored projection output for inference
        self.prefix = None if prefix is None else nn.Parameter(frozen_tensor(prefix), requires_grad=trainable)

    @classmethod
    def create(cls, config: PrefixTuningConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator,
               base_model: nn.Module | None = None) -> PrefixTuning:
        record: dict[str, Any] = {"init_effective": config.init}
        base_kv = None
        if config.init == "activations" and base_model is None:
            record["init_effective"] = "random"  # nothing to run: PEFT's random initialisation
        elif config.init == "activations":
            vocab = int(dims.vocab_size or embedding_weight.shape[0])
            ids, source = _init_token_ids(config, vocab, tokenizer, label_words, generator)
            base_kv = prefix_activations(base_model, ids, dims)
            record.update(init_source=source, init_token_ids=ids)
        if config.projection:
            module = cls(config, dims, with_encoder=True, base_kv=base_kv)  # PEFT's init (N(0,1), default Linear)
            if base_kv is not None:  # residual MLP: starts at exactly the activations
                last = module.encoder.transform[-1]
                with torch.no_grad():
                    last.weight.zero_()
                    last.bias.zero_()
        elif base_kv is not None:
            module = cls(config, dims, with_encoder=False, prefix=base_kv)
        else:  # direct prefixes: N(0, 1) like PEFT's nn.Embedding
            module = cls(config, dims, with_encoder=False,
                         prefix=torch.randn(config.num_virtual_tokens, dims.prefix_dim, generator=generator))
        module.provenance.update(record)
        return module

    @classmethod
    def from_tensors(cls, config: PrefixTuningConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> PrefixTuning:
        has_encoder = any(k.startswith("encoder.") for k in tensors)
        shape = [config.num_virtual_tokens, dims.prefix_dim]
        base_kv = tensors.get("encoder.base_kv")
        if base_kv is not None:
            check_shape(cls.method, "encoder.base_kv", base_kv, shape)
        if trainable and config.projection:
            if not has_encoder:
                raise InputError("prefix_tuning: cannot resume training with projection, the artifact has no "
                                 "encoder.* weights; rebuild it with trainable=False")
            module = cls(config, dims, with_encoder=True, base_kv=base_kv)
            load_module(module.encoder, tensors, "encoder.", cls.method)
            return module
        require(tensors, ["prompt_embeddings"], cls.method, "the prefix key/values")
        check_shape(cls.method, "prompt_embeddings", tensors["prompt_embeddings"], shape)
        module = cls(config, dims, with_encoder=has_encoder and config.projection,
                     prefix=tensors["prompt_embeddings"], trainable=trainable, base_kv=base_kv)
        if module.encoder is not None:  # kept for re-export only
            load_module(module.encoder, tensors, "encoder.", cls.method)
            module.encoder.requires_grad_(False)
        return module

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if self.prefix is not None:
            return self.prefix
        return self.encoder()

    def export_tensors(self) -> dict[str, Tensor]:
        return export_with_encoder(self)

    def method_config(self) -> dict:
        out = super().method_config()
        out["kv_dim"] = self.dims.kv_dim
        return out


register_method(PrefixTuning)
