"""IAPT (Instruction-Aware Prompt Tuning, Zhu et al., ACL 2024, arXiv 2405.18203).

A small prompt generator at each selected transformer layer (``layers``; default: every layer, as in the
paper) turns the row's hidden states AT THAT LAYER'S INPUT into K soft tokens (``num_virtual_tokens``;
the paper uses 4). The K tokens are inserted into that layer's input hidden states, before the row's
text, and dropped at the layer's output: every selected layer gets its own fresh K tokens (kind
``"deep"``, see soft_model.py). Only the real tokens attend to them; their own outputs are never used.

Generator (the paper's bottleneck order, per layer, independent weights):
down-projection H -> ``bottleneck`` over every token; self-attention pooling in the bottleneck space
with K learned queries (one per soft token; masked softmax over the row's real tokens: padding gets zero
weight, a row without any real token pools uniformly instead of producing NaN) -> [B, K, m];
activation; up-projection m -> H -> [B, K, H].

Activation: one fixed choice for all layers among ``ACTIVATIONS``. The paper learns a per-layer
RATIONAL activation (a ratio of polynomials); that learned activation is NOT implemented here.
Cross-layer parameter sharing (mentioned in the paper) is not implemented either: each layer has its
own generator.

There is no PEFT equivalent: the artifact holds only ``generators.<layer>.*`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def _parse_layers(value) -> tuple[int, ...] | None:
    """None / "all" -> None (every layer); "0,2,4" or a list of ints -> a sorted tuple without repeats."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        out = []
        for item in items:
            if isinstance(item, bool) or isinstance(item, float):
                raise ValueError
            out.append(int(item.strip()) if isinstance(item, str) else int(item))
    except (TypeError, ValueError, AttributeError):
        raise InputError(f"iapt: layers must be 'all' or comma-separated layer indices, got {value!r}")
    if not out or any(i < 0 for i in out):
        raise InputError(f"iapt: layers must be non-negative layer indices, got {value!r}")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class IaptConfig:
    num_virtual_tokens: int = 4
    layers: tuple[int, ...] | None = None  # None: every layer; also "all" or "0,2,4"
    bottleneck: int = 32
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_positive("iapt", "num_virtual_tokens", self.num_virtual_tokens)
        check_positive("iapt", "bottleneck", self.bottleneck)
        if self.activation not in ACTIVATIONS:
            raise InputError(f"iapt: activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        object.__setattr__(self, "layers", _parse_layers(self.layers))


class IaptGenerator(nn.Module):
    """hidden [B, T, H] + mask [B, T] -> K soft tokens [B, K, H] (down, attention pooling, act, up)."""

    def __init__(self, n: int, hidden: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.down = nn.Linear(hidden, bottleneck)
        self.queries = nn.Parameter(torch.randn(n, bottleneck) / math.sqrt(bottleneck))
        self.up = nn.Linear(bottleneck, hidden)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        x = self.down(hidden.to(self.queries.dtype))  # [B, T, m]
        scores = torch.matmul(x, self.queries.T).transpose(1, 2) / math.sqrt(x.shape[-1])  # [B, K, T]
        if attention_mask is not None:
            keep = attention_mask.to(device=x.device).bool()
            keep = keep | ~keep.any(-1, keepdim=True)  # no real token at all: pool uniformly
            scores = scores.masked_fill(~keep[:, None, :], torch.finfo(scores.dtype).min)
        pooled = torch.matmul(torch.softmax(scores, dim=-1), x)  # [B, K, m]
        return self.up(ACTIVATIONS[self.activation](pooled))


class Iapt(SoftPrompt):
    method = "iapt"
    config_class = IaptConfig
    kind = "deep"

    def __init__(self, config: IaptConfig, dims: ModelDims, trainable: bool = True) -> None:
        super().__init__(config, dims)
        layers = tuple(range(dims.num_layers)) if config.layers is None else config.layers
        bad = [i for i in layers if i >= dims.num_layers]
        if bad:
            raise InputError(f"iapt: layers must be in 0..{dims.num_layers - 1} for this base model, got {bad}")
        self.layers = layers
        self.generators = nn.ModuleDict({str(i): IaptGenerator(config.num_virtual_tokens, dims.hidden_size,
                                                                config.bottleneck, config.activation)
                                         for i in layers})
        self.generators.requires_grad_(trainable)

    @classmethod
    def create(cls, config: IaptConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator,
               base_model: nn.Module | None = None) -> Iapt:
        return cls(config, dims)

    @classmethod
    def from_tensors(cls, config: IaptConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> Iapt:
        module = cls(config, dims, trainable=trainable)
        load_module(module.generators, tensors, "generators.", cls.method)
        return module

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None,
               layer: int | None = None) -> Tensor:
        """The K soft tokens [B, K, H] of ``layer`` from the rows' hidden states at that layer's input
        (``input_embeds``: [B, T, H]) and their real-token mask [B, T]."""
        if input_embeds is None or layer is None or str(layer) not in self.generators:
            raise InputError(f"iapt: prompt() needs the rows' hidden states and one of the layers {list(self.layers)}")
        return self.generators[str(layer)](input_embeds, attention_mask)

    def export_tensors(self) -> dict[str, Tensor]:
        return {f"generators.{k}": frozen_tensor(v) for k, v in self.generators.state_dict().items()}

    def method_config(self) -> dict:
        out = super().method_config()
        out["layers"] = list(self.layers)
        return out


register_method(Iapt)
