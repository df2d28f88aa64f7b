"""Mean-pooled hidden states of the frozen base model, for embedding drift (issue 5).

torch is imported inside the function (no torch at module import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from promptreg.errors import InputError


def _decoder(model: Any) -> Any:
    inner = getattr(model, "model", None)
    if inner is not None:
        return inner
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is None:
        raise InputError(f"{type(model).__name__} has no decoder (.model or .get_decoder())")
    return get_decoder()


def _hidden_size(model: Any) -> int:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    size = getattr(cfg, "hidden_size", None)
    return int(size) if size is not None else 0


def mean_pooled_hidden_states(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16,
                              max_tokens: int = 256, device: Any = None,
                              padding_side: str = "right") -> np.ndarray:
    """Embed ``texts`` as the mean of the decoder's last hidden states over their real tokens.

    ``model`` is a transformers ``*ForCausalLM``; its decoder (``model.model``, else
    ``model.get_decoder()``) runs with the attention mask and position ids counted from the mask,
    so a text gives the same vector alone or in a batch, with right or left padding
    (``padding_side``). Each text is tokenized with the tokenizer's special tokens and truncated to
    ``max_tokens``. Texts are batched by length (fewer pad tokens); the rows come back in input
    order as float32 numpy [len(texts), hidden]. No gradients; the model is put in eval mode for
    the call and its mode restored after. ``device``: default the model's device.
    """
    import torch

    if isinstance(texts, str | bytes):
        raise InputError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] is {type(t).__name__}, not a string")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(max_tokens) < 1:
        raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if padding_side not in ("right", "left"):
        raise InputError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not texts:
        return np.zeros((0, _hidden_size(model)), dtype=np.float32)

    decoder = _decoder(model)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)

    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=int(max_tokens),
                    padding=False)["input_ids"]
    for i, row in enumerate(ids):
        if len(row) == 0:
            raise InputError(f"texts[{i}] has no tokens: nothing to embed")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None) or 0  # masked out: any valid id will do

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    rows: dict[int, np.ndarray] = {}
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), int(batch_size)):
                chunk = order[start:start + int(batch_size)]
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), int(pad_id), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    row = torch.tensor(ids[i], dtype=torch.long)
                    sl = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
                    input_ids[r, sl] = row
                    mask[r, sl] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                 use_cache=False).last_hidden_state.float()
                keep = mask.bool().unsqueeze(-1)
                # masked_fill, not a product: fully masked pad rows may hold NaN (left padding)
                summed = hidden.masked_fill(~keep, 0.0).sum(dim=1)
                pooled = summed / mask.sum(dim=1, keepdim=True).to(summed.dtype)
                pooled = pooled.cpu().numpy().astype(np.float32)
                for r, i in enumerate(chunk):
                    rows[i] = pooled[r]
    finally:
        model.train(was_training)
    return np.stack([rows[i] for i in range(len(ids))]).astype(np.float32, copy=False)
