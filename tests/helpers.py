"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from promptreg.artifact.builder import write_artifact

TINY_BASE = dict(fingerprint="a" * 64, name_or_path="tiny", model_type="llama", hidden_size=64,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300)


def prompt_shape(method: str, base: dict, n: int) -> tuple[int, int]:
    if method == "prefix_tuning":
        return n, base["num_hidden_layers"] * 2 * base["num_key_value_heads"] * base["head_dim"]
    return n, base["hidden_size"]


def make_artifact(dest: Path, *, method: str = "prompt_tuning", n: int = 4, seed: int = 0,
                  base: dict | None = None, metrics: dict | None = None, dataset: dict | None = None) -> Path:
    base = dict(base or TINY_BASE)
    rng = np.random.default_rng(seed)
    tensors = {"prompt_embeddings": rng.standard_normal(prompt_shape(method, base, n)).astype(np.float32)}
    if method == "p_tuning":
        tensors["encoder.mlp.0.weight"] = rng.standard_normal((base["hidden_size"], base["hidden_size"])).astype(np.float32)
    return write_artifact(dest, method=method, tensors=tensors, base_model=base,
                          method_config={"init": "random", "seed": seed},
                          metrics=metrics or {"accuracy": 0.5 + seed / 100}, dataset=dataset,
                          created_by="tests")
