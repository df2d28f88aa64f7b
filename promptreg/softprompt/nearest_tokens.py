"""The vocabulary tokens nearest to soft-prompt vectors (cosine over a model's input embedding matrix).

Used to carry a prompt to a base model of another width (``promptreg migrate``): the text of the
nearest tokens initialises the new prompt. Caveat (Khashabi et al., "Prompt Waywardness"): the nearest
tokens need not explain what a prompt does; they are a starting point, not a description.

Invariants: no gradient, no side effect; special tokens (pad, bos, eos...) are never returned.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def nearest_token_ids(vectors: Tensor, embedding: Tensor, *, k: int = 1, exclude: Iterable[int] = ()) -> list[list[int]]:
    """For each row of ``vectors`` [N, H], the ids of the ``k`` rows of ``embedding`` [V, H] with the
    highest cosine similarity, best first (ids in ``exclude`` skipped)."""
    if vectors.dim() != 2 or embedding.dim() != 2 or vectors.shape[1] != embedding.shape[1]:
        raise ValueError(f"shapes {tuple(vectors.shape)} and {tuple(embedding.shape)} do not match")
    with torch.no_grad():
        a = torch.nn.functional.normalize(vectors.detach().float(), dim=-1)
        b = torch.nn.functional.normalize(embedding.detach().float(), dim=-1)
        sims = a @ b.T
        banned = [i for i in set(exclude) if 0 <= i < sims.shape[1]]
        if banned:
            sims[:, banned] = -float("inf")
        return sims.topk(min(k, sims.shape[1]), dim=-1).indices.tolist()


def nearest_text(vectors: Tensor, embedding: Tensor, tokenizer) -> str:
    """The text of the nearest token of each vector, in order (one token per virtual token)."""
    ids = [row[0] for row in nearest_token_ids(vectors, embedding, exclude=tokenizer.all_special_ids)]
    return tokenizer.decode(ids, skip_special_tokens=True)
