"""The shared-prefix fast path computes exactly what the plain path computes (values and gradients)."""

from __future__ import annotations

import torch

from promptreg.softprompt.collate import Encoder, collate
from promptreg.softprompt.methods import ModelDims, build_method
from promptreg.softprompt.soft_model import SoftPromptModel


def _setup(tiny_model_dir, method="prompt_tuning", opts=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    soft = build_method(method, opts or {"num_virtual_tokens": 3, "init": "random"}, ModelDims.from_config(base.config),
                        embedding_weight=base.get_input_embeddings().weight.detach(), tokenizer=tok, seed=1)
    return base, tok, soft


TEXTS = ["the movie was great", "bad", "a very long and really boring film with dull acting", "fun plot"]


def test_shared_prefix_matches_plain_forward_and_backward(tiny_model_dir):
    base, tok, soft = _setup(tiny_model_dir)
    enc = Encoder(tok, "{virtual}Review: {text} Sentiment:", slots=3)
    batch = collate([enc.classification(t, 0) for t in TEXTS], enc.pad_id)
    labels = torch.tensor([7, 8])
    results = []
    for share in (True, False):
        soft.zero_grad()
        model = SoftPromptModel(base, soft, share_prefix=share)
        shared = model._shared_prefix_last(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"])
        assert (shared is not None) == share or not share
        logits = model.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"], labels)
        logits.sum().backward()
        results.append((logits.detach(), soft.embedding.grad.clone() if hasattr(soft, "embedding") else
                        next(p for p in soft.parameters()).grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_no_shared_prefix_falls_back(tiny_model_dir):
    base, tok, soft = _setup(tiny_model_dir)
    enc = Encoder(tok, "{text} {virtual}", slots=3)  # rows differ from the first token on
    batch = collate([enc.classification(t, 0) for t in TEXTS], enc.pad_id)
    model = SoftPromptModel(base, soft)
    assert model._shared_prefix_last(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"]) is None
    plain = SoftPromptModel(base, soft, share_prefix=False)
    torch.testing.assert_close(
        model.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"], torch.tensor([7, 8])),
        plain.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"], torch.tensor([7, 8])))
