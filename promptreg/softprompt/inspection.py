"""Inspecting a soft prompt's virtual tokens against the base model's vocabulary (pure torch).

For N vectors [N, H] living in the input-embedding space (prompt tuning's prompt, P-tuning's exported
embeddings, an ID-SPAM prompt generated for one text) and the input embedding matrix [V, H]:

- nearest vocabulary tokens by cosine similarity (Lester et al. 2021 read soft prompts so);
- each vector's L2 norm and its percentile among the vocabulary rows' norms (the share of rows whose
  norm is at most the vector's: a trained prompt often drifts far outside the vocabulary's range);
- the vocabulary's norm distribution (min, 5th/50th/95th percentile, max, mean);
- the pairwise cosine similarity of the N vectors (collapsed prompts have near-1 off-diagonals).

Invariants: inputs are never modified; everything is computed in float32 on the inputs' device and
returned as plain Python numbers (JSON-ready); ties in the nearest tokens keep the lower token id first.
Nearest tokens are NOT an explanation of what a prompt does (Khashabi et al. 2022, "Prompt Waywardness":
a prompt can solve a task while its nearest tokens read as any text); renderers state that caveat
(:data:`WAYWARDNESS_CAVEAT`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from promptreg.errors import InputError

WAYWARDNESS_CAVEAT = ("caveat: nearest tokens are not an explanation: a soft prompt can work while its nearest "
                      "tokens read as any text (Khashabi et al. 2022, \"Prompt Waywardness\")")


@dataclass
class VectorReport:
    """One virtual token: its norm, the norm's vocabulary percentile, its nearest tokens (id, cosine)."""

    index: int
    norm: float
    norm_percentile: float
    nearest: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class VectorStats:
    vectors: list[VectorReport]
    pairwise: list[list[float]]              # [N, N] cosine similarity of the virtual tokens
    vocab_norm: dict[str, float]             # min, p5, median, p95, max, mean of the vocabulary rows' norms

    @property
    def pairwise_mean(self) -> float:
        """Mean off-diagonal cosine (0.0 for a single token)."""
        n = len(self.pairwise)
        if n < 2:
            return 0.0
        return sum(self.pairwise[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))

    @property
    def pairwise_max(self) -> tuple[int, int, float] | None:
        """The most similar pair (i < j) and its cosine (None for a single token)."""
        n = len(self.pairwise)
        pairs = [(i, j, self.pairwise[i][j]) for i in range(n) for j in range(i + 1, n)]
        return max(pairs, key=lambda p: p[2]) if pairs else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["vectors"] = [{**v, "nearest": [list(p) for p in v["nearest"]]} for v in out["vectors"]]
        out["pairwise_mean"] = self.pairwise_mean
        return out


@dataclass
class PromptInspection:
    """What ``promptreg inspect`` reports for one version (``Registry.inspect``): the vectors inspected
    (``space`` says which), per virtual token its norm, norm percentile and nearest tokens
    (``{"id", "token", "cosine"}``), the pairwise cosines, the vocabulary's norm distribution."""

    prompt: str
    version: int
    sha256: str
    method: str
    space: str                               # what the vectors are, in words
    text: str | None                         # ID-SPAM: the input the prompt was generated for
    top_k: int
    base_model_fingerprint: str
    tokens: list[dict]
    pairwise: list[list[float]]
    pairwise_mean: float
    vocab_norm: dict[str, float]
    caveat: str = WAYWARDNESS_CAVEAT
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, *, max_tokens: int = 50, top: int = 3) -> dict:
        """The compact record kept with the version (audit details; its MLflow description renders it)."""
        return {"method": self.method, "space": self.space, "text": (self.text or "")[:200] or None,
                "top_k": self.top_k, "base_model_fingerprint": self.base_model_fingerprint,
                "num_virtual_tokens": len(self.tokens), "pairwise_mean": round(self.pairwise_mean, 4),
                "vocab_norm_median": round(self.vocab_norm.get("median", 0.0), 4),
                "tokens": [{"norm": round(t["norm"], 4), "norm_percentile": round(t["norm_percentile"], 1),
                            "nearest": [[n["token"][:40], round(n["cosine"], 3)] for n in t["nearest"][:top]]}
                           for t in self.tokens[:max_tokens]]}


def nearest(vectors, vocab, k: int, exclude=()):
    """(token ids [N, k], cosines [N, k]): for each row of ``vectors`` [N, H] the ``k`` rows of ``vocab``
    [V, H] with the highest cosine, best first; equal cosines keep the lower id first; ids in
    ``exclude`` (e.g. special tokens) are never returned. The one nearest-token computation
    (``inspect_vectors`` and :func:`nearest_text` use it)."""
    import torch

    with torch.no_grad():
        x = vectors.detach().float()
        w = vocab.detach().to(device=x.device, dtype=torch.float32)
        xn = x / x.norm(dim=-1).clamp_min(1e-12).unsqueeze(-1)
        wn = w / w.norm(dim=-1).clamp_min(1e-12).unsqueeze(-1)
        cos = xn @ wn.T                                               # [N, V]
        banned = sorted({int(i) for i in exclude if 0 <= int(i) < cos.shape[1]})
        if banned:
            cos[:, banned] = -float("inf")
        k = min(k, w.shape[0] - len(banned))
        order = torch.argsort(-cos, dim=-1, stable=True)[:, :k]
        return order, cos.gather(-1, order)


def nearest_text(vectors, vocab, tokenizer) -> str:
    """The text of each vector's nearest (non-special) token, in order: what ``promptreg migrate`` starts
    a prompt for a base model of another width from (a starting point, not a description: see
    :data:`WAYWARDNESS_CAVEAT`)."""
    if vectors.dim() != 2 or vocab.dim() != 2 or vectors.shape[1] != vocab.shape[1]:
        raise InputError(f"vectors {list(vectors.shape)} and vocabulary {list(vocab.shape)} must be [N, H] and "
                         f"[V, H] with the same H")
    ids, _ = nearest(vectors, vocab, 1, exclude=tokenizer.all_special_ids)
    return tokenizer.decode([row[0] for row in ids.tolist()], skip_special_tokens=True)


def inspect_vectors(vectors, vocab, top_k: int = 5) -> VectorStats:
    """Nearest tokens, norm percentiles and pairwise cosines of ``vectors`` [N, H] against the vocabulary
    ``vocab`` [V, H] (the input embedding matrix)."""
    import torch

    if vectors.dim() != 2 or vocab.dim() != 2 or vectors.shape[1] != vocab.shape[1]:
        raise InputError(f"vectors {list(vectors.shape)} and vocabulary {list(vocab.shape)} must be [N, H] and "
                         f"[V, H] with the same H")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    with torch.no_grad():
        x = vectors.detach().float()
        w = vocab.detach().to(device=x.device, dtype=torch.float32)
        norms, vocab_norms = x.norm(dim=-1), w.norm(dim=-1)
        xn = x / norms.clamp_min(1e-12).unsqueeze(-1)
        order, top = nearest(x, w, top_k)
        ranked = torch.sort(vocab_norms).values
        below = torch.searchsorted(ranked, norms.contiguous(), right=True)  # rows with norm <= the vector's
        pct = [100.0 * int(c) / ranked.numel() for c in below.tolist()]
        pairwise = (xn @ xn.T).clamp(-1.0, 1.0)
        q = torch.quantile(vocab_norms, torch.tensor([0.05, 0.5, 0.95], device=x.device))
    reports = [VectorReport(i, float(norms[i]), float(pct[i]),
                            [(int(t), float(c)) for t, c in zip(order[i].tolist(), top[i].tolist(), strict=True)])
               for i in range(x.shape[0])]
    vocab_norm = {"min": float(ranked[0]), "p5": float(q[0]), "median": float(q[1]), "p95": float(q[2]),
                  "max": float(ranked[-1]), "mean": float(vocab_norms.mean())}
    return VectorStats(reports, [[float(v) for v in row] for row in pairwise.tolist()], vocab_norm)


__all__ = ["WAYWARDNESS_CAVEAT", "PromptInspection", "VectorReport", "VectorStats", "inspect_vectors", "nearest",
           "nearest_text"]
