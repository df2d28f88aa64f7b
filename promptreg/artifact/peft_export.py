"""PEFT-compatible export: ``adapter_config.json`` for prompt-learning methods.

Facts (PEFT 0.21): prompt learning saves one tensor ``prompt_embeddings``. When PEFT loads with
``inference_mode`` (``PeftModel.from_pretrained`` without ``is_trainable``), it uses that tensor as is:
- prompt tuning / P-tuning: [N, token_dim], the virtual-token embeddings (for P-tuning, the prompt
  encoder's OUTPUT; the encoder itself is not part of PEFT's file);
- prefix tuning: [N, num_layers * 2 * token_dim] where, for grouped-query attention,
  token_dim = head_dim * num_key_value_heads and num_attention_heads = num_key_value_heads;
  each row is laid out as (layer, key/value, head, head_dim).
Choices made here so the export loads offline and identically in both PEFT modes:
- prompt tuning is exported with ``prompt_tuning_init = RANDOM`` (TEXT init would make PEFT load a
  tokenizer at load time); the real initialisation is in promptreg.json;
- prefix tuning is exported with ``prefix_projection = False``: the reparameterisation MLP is a
  training device, and the stored prefixes are its output.
"""

from __future__ import annotations

from typing import Any

from promptreg.artifact.manifest import PEFT_METHODS, Manifest


def adapter_config(manifest: Manifest, peft_version: str = "0.21.2") -> dict[str, Any]:
    if manifest.method not in PEFT_METHODS:
        raise ValueError(f"method {manifest.method} has no PEFT equivalent")
    bm = manifest.base_model
    cfg: dict[str, Any] = {
        "peft_type": PEFT_METHODS[manifest.method],
        "task_type": "CAUSAL_LM",
        "auto_mapping": None,
        "peft_version": peft_version,
        "base_model_name_or_path": bm.name_or_path,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": manifest.num_virtual_tokens,
        "token_dim": bm.hidden_size,
        "num_transformer_submodules": 1,
        "num_attention_heads": bm.num_attention_heads,
        "num_layers": bm.num_hidden_layers,
        "modules_to_save": None,
    }
    if manifest.method == "prompt_tuning":
        cfg.update(prompt_tuning_init="RANDOM", prompt_tuning_init_text=None, tokenizer_name_or_path=None,
                   tokenizer_kwargs=None)
    elif manifest.method == "p_tuning":
        mc = manifest.method_config
        encoder = str(mc.get("encoder_type", "MLP")).upper()
        cfg.update(
            encoder_reparameterization_type=encoder if encoder in ("MLP", "LSTM") else "MLP",
            encoder_hidden_size=int(mc.get("encoder_hidden_size", bm.hidden_size)),
            encoder_num_layers=int(mc.get("encoder_num_layers", 2)),
            encoder_dropout=float(mc.get("encoder_dropout", 0.0)),
        )
    else:  # prefix tuning
        kv_dim = bm.kv_heads * bm.effective_head_dim
        cfg.update(token_dim=kv_dim, num_attention_heads=bm.kv_heads, encoder_hidden_size=kv_dim,
                   prefix_projection=False, init_weights=None)
    return cfg
