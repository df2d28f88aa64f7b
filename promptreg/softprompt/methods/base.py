"""Shared pieces of the soft-prompt methods: model dimensions, the ``SoftPrompt`` base class, config
parsing and the Lester-style initialisations of virtual-token embeddings.

Every method is a ``torch.nn.Module`` holding only its own (trainable) weights; the frozen base model
lives in :class:`promptreg.softprompt.soft_model.SoftPromptModel`. Three kinds exist:

- ``"input"`` (prompt tuning, P-tuning): ``prompt()`` is ``[N, H]``, written into the N virtual slots
  of every row (``virtual_mask``);
- ``"prefix"`` (prefix tuning): ``prompt()`` is ``[N, L*2*kv_dim]`` in PEFT's row layout
  (layer, key/value, kv head, head_dim), used as past key/values;
- ``"layer"`` (ID-SPAM): ``prompt(input_embeds, attention_mask)`` is ``[B, N, H]``, computed per row and
  prepended to the hidden states at one transformer layer.
- ``"deep"`` (IAPT): ``prompt(hidden_states, attention_mask, layer)`` is ``[B, N, H]``, computed per row
  at each of the method's ``layers`` from the hidden states at that layer's input, inserted into that
  layer's input only (fresh tokens at every selected layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from promptreg.errors import InputError

INIT_CHOICES = ("random", "vocab", "text", "labels")
# Lester et al. sample initial prompt tokens among the 5,000 most common tokens; with BPE vocabularies
# (ids roughly ordered by merge frequency) the lowest ids are the closest proxy.
VOCAB_SAMPLE_LIMIT = 5000


@dataclass(frozen=True)
class ModelDims:
    """The base model's sizes a soft prompt depends on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def prefix_dim(self) -> int:
        """Width of one prefix-tuning row: layers x (key, value) x kv_dim."""
        return self.num_layers * 2 * self.kv_dim

    @classmethod
    def from_config(cls, hf_config) -> ModelDims:
        cfg = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
        hidden = int(cfg.hidden_size)
        heads = int(cfg.num_attention_heads)
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        return cls(hidden_size=hidden, num_layers=int(cfg.num_hidden_layers), num_heads=heads,
                   num_kv_heads=int(kv), head_dim=int(head_dim), vocab_size=int(getattr(cfg, "vocab_size", 0) or 0))

    @classmethod
    def from_manifest(cls, base_model: Mapping[str, Any]) -> ModelDims:
        try:
            hidden = int(base_model["hidden_size"])
            layers = int(base_model["num_hidden_layers"])
            heads = int(base_model["num_attention_heads"])
        except (KeyError, TypeError, ValueError):
            raise InputError("base_model needs hidden_size, num_hidden_layers and num_attention_heads")
        kv = base_model.get("num_key_value_heads") or heads
        head_dim = base_model.get("head_dim") or hidden // heads
        return cls(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=int(kv),
                   head_dim=int(head_dim), vocab_size=int(base_model.get("vocab_size") or 0))


def parse_config(config_cls: type, config: Mapping[str, Any] | None, method: str,
                 derived: Sequence[str] = ()) -> Any:
    """Build a config dataclass from a dict. Unknown keys are refused, except ``derived`` keys (what
    ``method_config()`` adds for provenance: sizes, effective init, seed), which are ignored."""
    data = dict(config or {})
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(k for k in data if k not in names and k not in set(derived))
    if unknown:
        raise InputError(f"unknown {method} option(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return config_cls(**{k: v for k, v in data.items() if k in names})


def check_positive(method: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{method}: {name} must be a positive integer, got {value!r}")


def check_init(method: str, init: str, init_text: str | None) -> None:
    if init not in INIT_CHOICES:
        raise InputError(f"{method}: init must be one of {', '.join(INIT_CHOICES)}, got {init!r}")
    if init == "text" and not (isinstance(init_text, str) and init_text.strip()):
        raise InputError(f"{method}: init 'text' needs a non-empty init_text")


def _token_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def _sample_vocab_ids(n: int, vocab: int, tokenizer, generator: torch.Generator) -> list[int]:
    limit = min(vocab, VOCAB_SAMPLE_LIMIT)
    special = set(getattr(tokenizer, "all_special_ids", None) or []) if tokenizer is not None else set()
    candidates = torch.tensor([i for i in range(limit) if i not in special] or list(range(limit)))
    if n <= len(candidates):
        picked = candidates[torch.randperm(len(candidates), generator=generator)[:n]]
    else:
        picked = candidates[torch.randint(len(candidates), (n,), generator=generator)]
    return [int(i) for i in picked]


def initial_embeddings(
    method: str,
    init: str,
    n: int,
    embedding_weight: Tensor,
    *,
    tokenizer=None,
    label_words: Sequence[str] | None = None,
    init_text: str | None = None,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, Any]]:
    """Initial virtual-token embeddings [n, H] (float32) and a JSON-able record of what was used.

    - ``random``: N(0, std) with std = the standard deviation of the embedding matrix (virtual tokens
      start on the scale of real tokens);
    - ``vocab``: embeddings of n token ids sampled (seeded, without replacement when possible) among
      the first 5,000 non-special ids;
    - ``text``: embeddings of ``init_text``'s tokens, repeated/truncated to n;
    - ``labels`` (Lester's class-label init): row i < K is the embedding of label word i (the mean of
      its tokens' embeddings when it has several), the remaining rows are sampled vocabulary as in
      ``vocab``. Without label words it falls back to ``vocab`` (recorded as ``init_effective``).
    """
    weight = embedding_weight.detach().to(device="cpu", dtype=torch.float32)
    vocab, _hidden = weight.shape
    record: dict[str, Any] = {"init_effective": init}
    if init == "random":
        std = float(weight.std())
        out = torch.randn(n, weight.shape[1], generator=generator) * std
        record["init_std"] = std
        return out, record
    if init == "text":
        if tokenizer is None:
            raise InputError(f"{method}: init 'text' needs the base model's tokenizer")
        ids = _token_ids(tokenizer, init_text or "")
        if not ids:
            raise InputError(f"{method}: init_text {init_text!r} has no tokens")
        ids = [ids[i % len(ids)] for i in range(n)]
        record["init_token_ids"] = ids
        return weight[ids].clone(), record
    if init == "labels" and label_words:
        if tokenizer is None:
            raise InputError(f"{method}: init 'labels' needs the base model's tokenizer")
        rows, label_ids = [], []
        for word in list(label_words)[:n]:
            ids = _token_ids(tokenizer, word)
            if not ids:
                raise InputError(f"{method}: label word {word!r} has no tokens")
            label_ids.append(ids)
            rows.append(weight[ids].mean(dim=0))
        fill = _sample_vocab_ids(n - len(rows), vocab, tokenizer, generator) if n > len(rows) else []
        record.update(label_token_ids=label_ids, init_token_ids=fill)
        out = torch.stack(rows + [weight[i] for i in fill])
        return out, record
    # "vocab", or "labels" without label words
    record["init_effective"] = "vocab"
    ids = _sample_vocab_ids(n, vocab, tokenizer, generator)
    record["init_token_ids"] = ids
    return weight[ids].clone(), record


def frozen_tensor(t: Tensor) -> Tensor:
    return t.detach().to(dtype=torch.float32).contiguous().clone()


def export_with_encoder(module: nn.Module) -> dict[str, Tensor]:
    """``prompt_embeddings`` (the encoder's OUTPUT, what PEFT stores) plus the encoder's own weights
    under ``encoder.*`` (what PEFT drops, and what resuming needs)."""
    with torch.no_grad():
        out = {"prompt_embeddings": frozen_tensor(module.prompt())}
        if module.encoder is not None:
            out.update({f"encoder.{k}": frozen_tensor(v) for k, v in module.encoder.state_dict().items()})
    return out


def require(tensors: Mapping[str, Tensor], names: Sequence[str], method: str, why: str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"{method}: missing tensor(s) {', '.join(missing)} ({why})")


def load_module(module: nn.Module, tensors: Mapping[str, Tensor], prefix: str, method: str) -> None:
    """Copy ``prefix + name`` tensors into ``module``'s parameters/buffers, shapes checked."""
    state = module.state_dict()
    wanted = {prefix + k: k for k in state}
    require(tensors, sorted(wanted), method, "the artifact lacks the trainable weights")
    for full, key in wanted.items():
        src = tensors[full]
        if tuple(src.shape) != tuple(state[key].shape):
            raise InputError(f"{method}: tensor {full} has shape {list(src.shape)}, expected {list(state[key].shape)}")
    with torch.no_grad():
        module.load_state_dict({key: tensors[full].to(torch.float32) for full, key in wanted.items()})


def check_shape(method: str, name: str, t: Tensor, shape: Sequence[int]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise InputError(f"{method}: {name} has shape {list(t.shape)}, this base model needs {list(shape)}")


class SoftPrompt(nn.Module):
    """A trainable soft prompt: one method, one file, one :func:`register_method` call.

    The contract a method implements: class attributes ``method`` (its name in manifests), ``kind``
    (``input``: virtual tokens before the text; ``prefix``: per-layer key/value prefixes; ``layer``: a
    prompt inserted at one layer; ``deep``: prompts generated and inserted at several layers) and ``config_class`` (a frozen dataclass: its fields are the method's
    options); ``create(config, dims, *, embedding_weight, tokenizer=None, label_words=None, generator,
    base_model=None)`` a fresh trainable module (``base_model``: the frozen model, for methods whose
    initialisation runs it; ignored by the others); ``from_tensors(config, tensors, dims, trainable)``
    the module rebuilt from exported tensors; ``prompt(...)`` and ``export_tensors()``."""

    method: ClassVar[str]
    kind: ClassVar[str]  # "input" | "prefix" | "layer" | "deep"
    config_class: ClassVar[type]

    def __init__(self, config: Any, dims: ModelDims) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.num_virtual_tokens = int(config.num_virtual_tokens)
        self.provenance: dict[str, Any] = {}  # init record, seed, label words (goes into method_config)

    @property
    def input_slots(self) -> int:
        return self.num_virtual_tokens if self.kind == "input" else 0

    def prompt(self, input_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def export_tensors(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def method_config(self) -> dict:
        out = dataclasses.asdict(self.config)
        out.update(self.provenance)
        out.update(hidden_size=self.dims.hidden_size, num_layers=self.dims.num_layers,
                   num_kv_heads=self.dims.num_kv_heads, head_dim=self.dims.head_dim)
        return out

    def extra_repr(self) -> str:
        return f"method={self.method}, kind={self.kind}, num_virtual_tokens={self.num_virtual_tokens}"


# keys method_config() adds on top of the config dataclass fields (ignored when rebuilding)
DERIVED_KEYS = ("hidden_size", "num_layers", "num_kv_heads", "head_dim", "init_effective", "init_std",
                "init_token_ids", "label_token_ids", "label_words", "seed")


#: the kinds of soft prompt the runtimes know how to run (module docstring)
KINDS = ("input", "prefix", "layer", "deep")

#: method name -> its SoftPrompt class (filled by register_method; the one registry of methods)
METHODS: dict[str, type[SoftPrompt]] = {}


def register_method(cls: type[SoftPrompt]) -> type[SoftPrompt]:
    """Make a method known by its ``method`` name (once per method, at the end of its module)."""
    for attr in ("method", "kind", "config_class"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} does not set {attr}")
    if cls.kind not in KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, not {cls.kind!r}")
    if METHODS.get(cls.method, cls) is not cls:
        raise TypeError(f"method {cls.method!r} is already registered by {METHODS[cls.method].__name__}")
    METHODS[cls.method] = cls
    return cls
