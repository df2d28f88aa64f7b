"""P-tuning (Liu et al. 2021): a prompt encoder (MLP, or bidirectional LSTM + MLP head) over N trainable
input embeddings; its OUTPUT [N, H] fills the virtual input slots. Layout and module names follow
PEFT 0.21's ``PromptEncoder`` (``embedding``, ``mlp_head``, ``lstm_head``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.softprompt.methods.base import (
    ModelDims,
    SoftPrompt,
    check_init,
    check_positive,
    check_shape,
    export_with_encoder,
    frozen_tensor,
    initial_embeddings,
    load_module,
    register_method,
    require,
)

ENCODERS = ("mlp", "lstm")
LSTM_LAYERS = 2  # PEFT's default encoder_num_layers
# keys method_config() adds for the PEFT export (promptreg.artifact.peft_export reads them)
PEFT_KEYS = ("encoder_type", "encoder_hidden_size", "encoder_num_layers", "encoder_dropout")


@dataclass(frozen=True)
class PTuningConfig:
    num_virtual_tokens: int = 20
    encoder: str = "mlp"  # "mlp" | "lstm"
    encoder_hidden: int | None = None  # None: the model's hidden size
    init: str = "labels"  # initialisation of the encoder's input embedding (as prompt tuning)
    init_text: str | None = None

    def __post_init__(self) -> None:
        check_positive("p_tuning", "num_virtual_tokens", self.num_virtual_tokens)
        if self.encoder not in ENCODERS:
            raise InputError(f"p_tuning: encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.encoder_hidden is not None:
            check_positive("p_tuning", "encoder_hidden", self.encoder_hidden)
        check_init("p_tuning", self.init, self.init_text)


class PTuningEncoder(nn.Module):
    """embedding [N, H] -> MLP (Linear-ReLU-Linear-ReLU-Linear) or BiLSTM + (Linear-ReLU-Linear) -> [N, H]."""

    def __init__(self, n: int, hidden: int, encoder: str, encoder_hidden: int) -> None:
        super().__init__()
        self.encoder_type = encoder
        self.embedding = nn.Embedding(n, hidden)
        if encoder == "lstm":
            self.lstm_head = nn.LSTM(input_size=hidden, hidden_size=encoder_hidden, num_layers=LSTM_LAYERS,
                                     bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * encoder_hidden, 2 * encoder_hidden), nn.ReLU(),
                                          nn.Linear(2 * encoder_hidden, hidden))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(hidden, encoder_hidden), nn.ReLU(),
                                          nn.Linear(encoder_hidden, encoder_hidden), nn.ReLU(),
                                          nn.Linear(encoder_hidden, hidden))

    def forward(self) -> Tensor:
        x = self.embedding.weight
        if self.encoder_type == "lstm":
            x = self.lstm_head(x.unsqueeze(0))[0].squeeze(0)
        return self.mlp_head(x)


class PTuning(SoftPrompt):
    """Trainable: ``prompt()`` = ``encoder()``. Rebuilt for inference (``trainable=False``): ``prompt()``
    returns the stored encoder output ``prompt_embeddings`` (what PEFT consumes), bit for bit."""

    method = "p_tuning"
    config_class = PTuningConfig
    kind = "input"

    def __init__(self, config: PTuningConfig, dims: ModelDims, *, with_encoder: bool = True,
                 fixed: Tensor | None = None) -> None:
        super().__init__(config, dims)
        self.encoder_hidden = int(config.encoder_hidden or dims.hidden_size)
        self.encoder = (PTuningEncoder(config.num_virtual_tokens, dims.hidden_size, config.encoder,
                                       self.encoder_hidden) if with_encoder else None)
        self.fixed = None if fixed is None else nn.Parameter(frozen_tensor(fixed), requires_grad=False)

    @classmethod
    def create(cls, config: PTuningConfig, dims: ModelDims, *, embedding_weight: Tensor, tokenizer=None,
               label_words: Sequence[str] | None = None, generator: torch.Generator,
               base_model: nn.Module | None = None) -> PTuning:
        module = cls(config, dims)
        weight, record = initial_embeddings(cls.method, config.init, config.num_virtual_tokens, embedding_weight,
                                            tokenizer=tokenizer, label_words=label_words,
                                            init_text=config.init_text, generator=generator)
        with torch.no_grad():
            module.encoder.embedding.weight.copy_(weight)
        module.provenance.update(record)
        return module

    @classmethod
    def from_tensors(cls, config: PTuningConfig, tensors: Mapping[str, Tensor], dims: ModelDims,
                     trainable: bool) -> PTuning:
        has_encoder = any(k.startswith("encoder.") for k in tensors)
        if trainable:
            if not has_encoder:
                raise InputError("p_tuning: cannot resume training, the artifact has no encoder.* weights "
                                 "(e.g. a PEFT export); rebuild it with trainable=False")
            module = cls(config, dims)
            load_module(module.encoder, tensors, "encoder.", cls.method)
            return module
        require(tensors, ["prompt_embeddings"], cls.method, "the encoder output")
        pe = tensors["prompt_embeddings"]
        check_shape(cls.method, "prompt_embeddings", pe, [config.num_virtual_tokens, dims.hidden_size])
        module = cls(config, dims, with_encoder=has_encoder, fixed=pe)
        if has_encoder:  # kept so a re-export loses nothing; not used to compute the prompt
            load_module(module.encoder, tensors, "encoder.", cls.method)
            module.encoder.requires_grad_(False)
        return module

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if self.fixed is not None:
            return self.fixed
        return self.encoder()

    def export_tensors(self) -> dict[str, Tensor]:
        return export_with_encoder(self)

    def method_config(self) -> dict:
        out = super().method_config()
        out.update(encoder_type=self.config.encoder.upper(), encoder_hidden_size=self.encoder_hidden,
                   encoder_num_layers=LSTM_LAYERS, encoder_dropout=0.0)
        return out


register_method(PTuning)
