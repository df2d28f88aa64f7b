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


POSITIVE_WORDS = ["great", "excellent", "amazing", "brilliant", "fun", "beautiful", "masterpiece", "best"]
NEGATIVE_WORDS = ["terrible", "awful", "boring", "dull", "bad", "worst", "disaster", "waste"]
TEMPLATE = "{virtual}Review : {text} Sentiment :"


def make_model_artifact(dest: Path, model_dir: Path, *, method: str = "prompt_tuning", n: int = 4, seed: int = 0,
                        scale: float = 1.0) -> Path:
    """A sentiment soft prompt for the tiny test model (tests/fixtures/models.py), bound to its REAL
    fingerprint, with random tensors of the right shape (different seeds -> different predictions)."""
    from promptreg.fingerprints.model import model_fingerprint

    info = model_fingerprint(model_dir).to_dict()
    base = {k: info[k] for k in ("fingerprint", "name_or_path", "model_type", "hidden_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")}
    base["name_or_path"] = str(model_dir)
    rng = np.random.default_rng(seed)
    tensors = {"prompt_embeddings": (scale * rng.standard_normal(prompt_shape(method, base, n))).astype(np.float32)}
    return write_artifact(dest, method=method, tensors=tensors, base_model=base,
                          task={"type": "classification", "template": TEMPLATE,
                                "verbalizer": {"positive": [" positive"], "negative": [" negative"]}},
                          method_config={"init": "random", "seed": seed}, metrics={"eval_accuracy": 0.5},
                          created_by="tests")


def sentiment_rows(n: int, seed: int = 0, positive_share: float = 0.5) -> list[dict]:
    """Toy reviews over the tiny model's vocabulary; the first ``positive_share`` of them positive."""
    import random

    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i < round(n * positive_share) else "negative"
        words = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        rows.append({"text": f"the movie was {rnd.choice(words)} and the acting {rnd.choice(words)} .",
                     "label": label})
    return rows


def write_suite(folder: Path, *, rows: int = 40, accuracy: str = "{margin: 1.0}", checks: bool = True,
                extra: str = "", positive_share: float = 0.5) -> Path:
    """A suite.yaml + golden.jsonl in ``folder``; ``accuracy`` is the YAML rule of the accuracy metric."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "golden.jsonl").write_text("".join(json.dumps(r) + "\n"
                                               for r in sentiment_rows(rows, positive_share=positive_share)))
    text = f"""name: toy-sentiment
golden:
  - name: toy
    path: golden.jsonl
    metrics:
      accuracy: {accuracy}
      macro_f1: {{margin: 1.0}}
      ece: {{margin: 1.0}}
"""
    if checks:
        text += """checks:
  - name: mft-positive
    type: mft
    template: "the movie was {adj} ."
    fill: {adj: [great, excellent, amazing]}
    label: positive
    max_failure_rate: 1.0
  - name: inv-typos
    type: invariance
    data: toy
    perturbation: typos
    max_failure_rate: 1.0
  - name: dir-negation
    type: directional
    data: toy
    perturbation: {suffix: [" but it was bad ."]}
    label: positive
    direction: decrease
    max_failure_rate: 1.0
"""
    path = folder / "suite.yaml"
    path.write_text(text + extra)
    return path
