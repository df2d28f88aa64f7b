"""ID-SPAM (input-dependent soft prompting with a self-attention mechanism, ACL 2025 short).

Per input row, a small generator turns the row's (frozen) input token embeddings into N soft tokens,
prepended to the hidden states at ONE transformer layer (``layer``, default ``num_layers // 2``).

Pooling choice: learned-query attention pooling. N learned queries (one per virtual token) attend,
with ``heads`` heads, over the row's real token embeddings (padding and other masked positions get
zero weight; a row without any real token pools uniformly instead of producing NaN). Each pooled
vector goes through an output projection, then the paper's bottleneck: down-projection
H -> ``bottleneck``, ReLU, up-projection ``bottleneck`` -> H. Output: [B, N, H]. Using one query per
virtual token (rather than one pooled vector expanded to N) keeps the N soft tokens distinct and
input-dependent, and lets the up-projection stay H-sized as in the paper.

There is no PEFT equivalent: the artifact holds only ``generator.*`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.softprompt.methods.base import (
    ModelDims,
    SoftPrompt,
    check_positive,
    frozen_tensor,
    load_module,
    register_method,
)


@dataclass(frozen=True)
class IdSpamConfig:
    num_virtual_tokens: int = 8
    layer: int | None = None  # None: num_layers // 2
    bottleneck: int = 64
    heads: int = 1

    def __post_init__(self) -> None:
        check_positive("id_spam", "num_virtual_tokens", self.num_virtual_tokens)
        check_positive("id_spam", "bottleneck", self.bottleneck)
        check_positive("id_spam", "heads", self.heads)
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)
                                       or self.layer < 0):
            raise InputError(f"id_spam: layer must be a non-negative integer, got {self.layer!r}")


class IdSpamGenerator(nn.Module):
    def __init__(self, n: int, hidden: int, heads: int, bottleneck: int) -> None:
        super().__init__()
        if hidden % heads:
            raise InputError(f"id_spam: heads ({heads}) must divide the hidden size ({hidden})")
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(n, hidden))
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)

    def forward(self, input_embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        x = input_embeds.to(self.queries.dtype)
        b, t, h = x.shape
        n, nh = self.queries.shape[0], self.heads
        dh = h // nh
        q = self.q_proj(self.queries).view(n, nh, dh).transpose(0, 1)  # [nh, N, dh]
        k = self.k_proj(x).view(b, t, nh, dh).transpose(1, 2)  # [B, nh, T, dh]
        v = self.v_proj(x).view(b, t, nh, dh).transpose(1, 2)
        scores = torch.matmul(q.unsqueeze(0), k.transpose(-1, -2)) / math.sqrt(dh)  # [B, nh, N, T]
        if attention_mask is not None:
            keep = attention_mask.to(device=x.device).bool()[:, None, None, :]
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        pooled = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, h)  # [B, N, H]
        pooled = self.o_proj(pooled)
        return self.up(torch.relu(self.down(pooled)))


class IdSpam(SoftPrompt):
    method = "id_spam"
    config_class = IdSpamConfig
    kind = "layer"

    def __init__(self, config: IdSpamConfig, dims: ModelDims, trainable: bool = True) -> None:
        super().__init__(config, dims)
        layer = dims.num_layers // 2 if config.layer is None else int(config.layer)
        if not 0 <= layer < dims.num_layers:
            raise InputError(f"id_spam: layer must be in 0..{dims.num_layers - 1} for this base model, got {layer}")
        self.layer = layer
        self.generator = IdSpamGenerator(config.num_virtual_tokens, dims.hidden_size, config.heads,
                                         config.bottleneck)
        self.generator.requires_grad_(trainable)

    @classmethod
    def create(cls, config: IdSpamConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator,
               base_model: nn.Module | None = None) -> IdSpam:
        return cls(config, dims)

    @classmethod
    def from_tensors(cls, config: IdSpamConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> IdSpam:
        module = cls(config, dims, trainable=trainable)
        load_module(module.generator, tensors, "generator.", cls.method)
        return module

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if input_embeds is None:
            raise InputError("id_spam: prompt() needs the row's input embeddings")
        return self.generator(input_embeds, attention_mask)

    def export_tensors(self) -> dict[str, Tensor]:
        return {f"generator.{k}": frozen_tensor(v) for k, v in self.generator.state_dict().items()}

    def method_config(self) -> dict:
        out = super().method_config()
        out["layer"] = self.layer
        return out


register_method(IdSpam)
