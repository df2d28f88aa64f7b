"""PEFT as an independent reference for generation, and where its own cached `generate` is known broken.

The reference is PEFT's plain forward pass, recomputing the whole sequence at every step (no key/value
cache carried between steps): that is how the soft prompt is applied in training, on both sides. Our
cached decoders are compared with it, and with our own no-cache reference (`generate(use_cache=False)`).

PEFT's cached `generate` broke with transformers 5.24 (which renamed `past_key_values` to `cache`):
PEFT 0.21.2 still passes its virtual tokens' key/values as `past_key_values`, which 5.24 ignores once
`generate` passes `cache` (its own warning says so: "Both `past_key_values` and `cache` are set ...
ignoring deprecated `past_key_values`"), and its prompt-tuning/P-tuning generation diverges after two
tokens likewise. PEFT's forward pass still agrees with ours and with the reference. The comparison with
PEFT's `generate` is therefore pinned to the versions where PEFT is right, and marked as an expected
failure (strict: a PEFT release that fixes it turns the mark into a failure, so we notice) elsewhere.
"""

from __future__ import annotations

import peft
import torch
import transformers
from packaging.version import Version

PEFT_GENERATE_BROKEN = (Version(transformers.__version__) >= Version("5.24.0")
                        and Version(peft.__version__) <= Version("0.21.2"))
PEFT_GENERATE_REASON = (f"PEFT {peft.__version__} cached generate is wrong with transformers "
                        f"{transformers.__version__} (past_key_values renamed to cache): see tests/peft_reference.py")


@torch.no_grad()
def peft_forward_greedy(peft_model, ids: torch.Tensor, max_new_tokens: int, eos: int | None = None) -> list[int]:
    """Greedy tokens of one row from PEFT's forward pass over the whole sequence at every step."""
    out: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].argmax())
        if eos is not None and nxt == eos:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
    return out
