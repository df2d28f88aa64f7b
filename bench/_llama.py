"""Shared by bench/train_memory.py and bench/train_gpu.py: a 1B-class Llama with random weights
(Llama-3.2-1B's shapes: hidden 2048, MLP 8192, 16 layers, 32 heads / 8 kv heads, vocab 128,256,
tied embeddings) built directly in the target dtype, and one soft-prompt training step for
promptreg (its SoftPromptModel + method, the Trainer's loss: label logits at the answer position)
and for PEFT (get_peft_model + PromptTuningConfig, the causal-LM loss with labels = -100 except the
answer token, as PEFT's guides do). Random weights are fine for memory and speed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=4096,
                rope_theta=500000.0)


def build(layers: int | None, dtype_name: str, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptreg.softprompt.precision import Precision

    cfg = LlamaConfig(**{**LLAMA_1B, **({"num_hidden_layers": layers} if layers else {})})
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=Precision(dtype_name).dtype)
    return model.eval().requires_grad_(False)


def params_for_flops(model) -> int:
    """N in the FLOPs formula: every weight a token is multiplied by (the embedding lookup is not a
    matmul; with tied embeddings the same matrix is counted once, as the LM head)."""
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n or
               model.config.tie_word_embeddings)


def batch(b: int, t: int, vocab: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, min(vocab, 30000), (b, t), generator=g).to(device)
    return ids, torch.ones_like(ids)


def ours_step(model, method: str, n_virtual: int, precision: str, *, gradient_checkpointing: bool = False):
    """A closure running one training step of promptreg on (ids, mask); returns the loss."""
    import torch
    import torch.nn.functional as F

    from promptreg.softprompt.methods import ModelDims, build_method
    from promptreg.softprompt.precision import Precision
    from promptreg.softprompt.soft_model import SoftPromptModel
    from promptreg.training.memory import gradient_checkpointing as gc

    dims = ModelDims.from_config(model.config)
    options = {"num_virtual_tokens": n_virtual}
    if method == "prefix_tuning":
        options.update(projection=False, init="random")
    elif method == "id_spam":
        options.update(layer=min(1, dims.num_layers - 1), bottleneck=256)
    elif method == "prompt_tuning":
        options.update(init="random")
    soft = build_method(method, options, dims, embedding_weight=model.get_input_embeddings().weight.detach())
    sm = SoftPromptModel(model, soft, share_prefix=not gradient_checkpointing)
    params = [p for p in soft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    prec = Precision(precision)
    ctx = gc(model, soft, enabled=gradient_checkpointing)
    labels = torch.tensor([11, 12], device=next(model.parameters()).device)

    def step(ids, mask):
        b = ids.shape[0]
        vmask = torch.zeros_like(ids, dtype=torch.bool)
        if soft.kind == "input":
            vmask[:, :n_virtual] = True
        with ctx, prec.autocast(ids.device.type):
            logits = sm.label_logits(ids, mask, vmask, labels)
            loss = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=ids.device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def peft_step(model, n_virtual: int, precision: str, *, gradient_checkpointing: bool = False):
    import torch
    from peft import PromptTuningConfig, get_peft_model

    from promptreg.softprompt.precision import Precision

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_virtual))
    peft_model.prompt_encoder["default"].float()  # fp32 master weights, as ours
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    prec = Precision(precision)

    def step(ids, mask):
        labels = torch.full_like(ids, -100)
        labels[:, -1] = ids[:, -1]
        with prec.autocast(ids.device.type):
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step
