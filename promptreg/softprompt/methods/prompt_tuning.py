"""Prompt tuning (Lester et al. 2021): N trainable vectors written into the N virtual input slots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from promptreg.softprompt.methods.base import (
    ModelDims,
    SoftPrompt,
    check_init,
    check_positive,
    check_shape,
    frozen_tensor,
    initial_embeddings,
    register_method,
    require,
)


@dataclass(frozen=True)
class PromptTuningConfig:
    num_virtual_tokens: int = 20
    init: str = "labels"  # "random" | "vocab" | "text" | "labels"
    init_text: str | None = None  # for init="text"

    def __post_init__(self) -> None:
        check_positive("prompt_tuning", "num_virtual_tokens", self.num_virtual_tokens)
        check_init("prompt_tuning", self.init, self.init_text)


class PromptTuning(SoftPrompt):
    """``embedding``: Parameter [N, H]; ``prompt()`` returns it (same N vectors for every row)."""

    method = "prompt_tuning"
    config_class = PromptTuningConfig
    kind = "input"

    def __init__(self, config: PromptTuningConfig, dims: ModelDims, weight: Tensor | None = None,
                 trainable: bool = True) -> None:
        super().__init__(config, dims)
        if weight is None:
            weight = torch.zeros(config.num_virtual_tokens, dims.hidden_size)
        self.embedding = nn.Parameter(weight.detach().to(torch.float32).clone(), requires_grad=trainable)

    @classmethod
    def create(cls, config: PromptTuningConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator,
               base_model: nn.Module | None = None) -> PromptTuning:
        weight, record = initial_embeddings(cls.method, config.init, config.num_virtual_tokens, embedding_weight,
                                            tokenizer=tokenizer, label_words=label_words,
                                            init_text=config.init_text, generator=generator)
        module = cls(config, dims, weight)
        module.provenance.update(record)
        return module

    @classmethod
    def from_tensors(cls, config: PromptTuningConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> PromptTuning:
        require(tensors, ["prompt_embeddings"], cls.method, "the virtual-token embeddings")
        pe = tensors["prompt_embeddings"]
        check_shape(cls.method, "prompt_embeddings", pe, [config.num_virtual_tokens, dims.hidden_size])
        return cls(config, dims, pe, trainable=trainable)

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        return self.embedding

    def export_tensors(self) -> dict[str, Tensor]:
        return {"prompt_embeddings": frozen_tensor(self.embedding)}


register_method(PromptTuning)
