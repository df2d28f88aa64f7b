"""Prefix tuning (Li & Liang 2021): N trainable key/value pairs per layer, used as past key/values.

``prompt()`` is ``[N, L*2*kv_dim]`` in PEFT's row layout: each row is (layer, key/value, kv head,
head_dim), kv_dim = num_key_value_heads * head_dim (grouped-query attention stores kv heads only).
With ``projection`` (Li & Liang's reparameterisation, PEFT's ``prefix_projection``):
Embedding [N, H] -> Linear(H, projection_hidden) -> Tanh -> Linear(projection_hidden, L*2*kv_dim);
the MLP is a training device: ``prompt_embeddings`` stores its output, ``encoder.*`` its weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.training.methods.base import (
    ModelDims,
    SoftPrompt,
    check_positive,
    check_shape,
    frozen_tensor,
    load_module,
    require,
)


@dataclass(frozen=True)
class PrefixTuningConfig:
    num_virtual_tokens: int = 20
    projection: bool = True
    projection_hidden: int = 512

    def __post_init__(self) -> None:
        check_positive("prefix_tuning", "num_virtual_tokens", self.num_virtual_tokens)
        check_positive("prefix_tuning", "projection_hidden", self.projection_hidden)
        if not isinstance(self.projection, bool):
            raise InputError(f"prefix_tuning: projection must be true or false, got {self.projection!r}")


class PrefixEncoder(nn.Module):
    """Embedding [N, H] -> Linear -> Tanh -> Linear -> [N, L*2*kv_dim] (names as PEFT's PrefixEncoder)."""

    def __init__(self, n: int, hidden: int, projection_hidden: int, out_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, hidden)
        self.transform = nn.Sequential(nn.Linear(hidden, projection_hidden), nn.Tanh(),
                                       nn.Linear(projection_hidden, out_dim))

    def forward(self) -> Tensor:
        return self.transform(self.embedding.weight)


class PrefixTuning(SoftPrompt):
    method = "prefix_tuning"
    kind = "prefix"

    def __init__(self, config: PrefixTuningConfig, dims: ModelDims, *, with_encoder: bool,
                 prefix: Tensor | None = None, trainable: bool = True) -> None:
        super().__init__(config, dims)
        self.encoder = (PrefixEncoder(config.num_virtual_tokens, dims.hidden_size, config.projection_hidden,
                                      dims.prefix_dim) if with_encoder else None)
        # the direct prefix (no projection), or the stored projection output for inference
        self.prefix = None if prefix is None else nn.Parameter(frozen_tensor(prefix), requires_grad=trainable)

    @classmethod
    def create(cls, config: PrefixTuningConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator) -> PrefixTuning:
        if config.projection:
            return cls(config, dims, with_encoder=True)  # PEFT's initialisation (N(0,1) embedding, default Linear)
        # direct prefixes: N(0, 1) like PEFT's nn.Embedding
        return cls(config, dims, with_encoder=False,
                   prefix=torch.randn(config.num_virtual_tokens, dims.prefix_dim, generator=generator))

    @classmethod
    def from_tensors(cls, config: PrefixTuningConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> PrefixTuning:
        has_encoder = any(k.startswith("encoder.") for k in tensors)
        shape = [config.num_virtual_tokens, dims.prefix_dim]
        if trainable and config.projection:
            if not has_encoder:
                raise InputError("prefix_tuning: cannot resume training with projection, the artifact has no "
                                 "encoder.* weights; rebuild it with trainable=False")
            module = cls(config, dims, with_encoder=True)
            load_module(module.encoder, tensors, "encoder.", cls.method)
            return module
        require(tensors, ["prompt_embeddings"], cls.method, "the prefix key/values")
        check_shape(cls.method, "prompt_embeddings", tensors["prompt_embeddings"], shape)
        module = cls(config, dims, with_encoder=has_encoder and config.projection,
                     prefix=tensors["prompt_embeddings"], trainable=trainable)
        if module.encoder is not None:  # kept for re-export only
            load_module(module.encoder, tensors, "encoder.", cls.method)
            module.encoder.requires_grad_(False)
        return module

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if self.prefix is not None:
            return self.prefix
        return self.encoder()

    def export_tensors(self) -> dict[str, Tensor]:
        with torch.no_grad():
            out = {"prompt_embeddings": frozen_tensor(self.prompt())}
            if self.encoder is not None:
                out.update({f"encoder.{k}": frozen_tensor(v) for k, v in self.encoder.state_dict().items()})
        return out

    def method_config(self) -> dict:
        out = super().method_config()
        out["kv_dim"] = self.dims.kv_dim
        return out
