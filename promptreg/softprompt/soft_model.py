"""A frozen ``*ForCausalLM`` (Llama family) driven by a soft prompt, for training and inference.

Batch convention (docs/DEV_CONTRACTS.md, "Training contracts"): LEFT-padded ``input_ids`` /
``attention_mask`` [B, T]; the last position of every row predicts the answer / next token. For
input-slot methods ``virtual_mask`` [B, T] marks exactly N slots per row (ids = pad) whose embeddings
are replaced, in order, by ``soft_prompt.prompt()``; the slots count as real tokens in the attention
mask. Positions are ``(cumsum(mask) - 1).clamp(min=0)``, so a row gives the same result alone or
left-padded in a batch.

How each kind runs:
- ``"input"``: inputs_embeds with the N slots replaced; the decoder (``base_model.model``) is called
  directly so no full-vocabulary logits are computed unless asked for.
- ``"prefix"``: a fresh ``transformers.DynamicCache`` holds the N virtual key/values of every layer
  (PEFT row layout: layer, key/value, kv head, head_dim); the attention mask is ``cat(ones(B, N), mask)``
  and positions are ``N + cumsum(mask) - 1``: the virtual key/values occupy positions 0..N-1, exactly
  as PEFT's prefix tuning runs an unpadded row (its keys are stored as is, without rotary embedding).
- ``"layer"`` (ID-SPAM): the decoder is run layer by layer. Layers ``[0, k)`` see the T real tokens
  (causal + padding mask, positions ``cumsum - 1``); the generated [B, N, H] prompt is then prepended to
  the hidden states and layers ``[k, L)`` run on N + T tokens with positions 0..N-1 for the prompt and
  ``N + cumsum - 1`` for the real tokens (the text is shifted by N, as if the prompt preceded it; the
  relative positions inside the text are unchanged). The prompt tokens attend causally to each other
  only; every real token attends to all N prompt tokens. Padding stays masked. The final norm is
  applied and the N prompt positions are dropped, so outputs are indexed by the real sequence.
- ``"deep"`` (IAPT): the decoder is run layer by layer on the T real tokens, at positions
  ``N + cumsum - 1`` everywhere (as if the N prompt tokens preceded the text). Before each selected
  layer l the row's N soft tokens are generated from the hidden states at l's input (real tokens only)
  and inserted before the text at positions 0..N-1 for layer l alone; l's outputs at those N positions
  are dropped. Prompt tokens attend causally to each other only; every real token attends to them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.softprompt.methods.base import ModelDims, SoftPrompt
from promptreg.transformers_compat import cache_kwarg, output_cache


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids that ignore left padding: a row gets the same positions padded or alone."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_of(base_model: nn.Module) -> nn.Module:
    """The decoder stack of a ``*ForCausalLM`` (``.model``, else ``get_decoder()``)."""
    inner = getattr(base_model, "model", None)
    return inner if inner is not None else base_model.get_decoder()


def text_config_of(base_model: nn.Module):
    """The text part of the model's config (multimodal configs nest it)."""
    cfg = base_model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def softcap(cfg, logits: Tensor) -> Tensor:
    """The model's final-logit soft cap (Gemma-style), when its config has one."""
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class GreedyRecorder:
    """Collects each row's greedy tokens, stopping a row after (and excluding) an EOS token;
    calling it with a step's [B] next ids returns True once every row is done."""

    def __init__(self, rows: int, eos: set[int]):
        self.eos = eos
        self.results: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows

    def __call__(self, next_ids: Tensor) -> bool:
        for row, tok in enumerate(next_ids.tolist()):
            if self.done[row]:
                continue
            if tok in self.eos:
                self.done[row] = True
            else:
                self.results[row].append(tok)
        return all(self.done)


def cached_greedy(base_model: nn.Module, hidden: Tensor, cache, mask: Tensor, last_pos: Tensor,
                  max_new_tokens: int, record: GreedyRecorder) -> list[list[int]]:
    """Greedy decoding from a prefilled transformers cache: ``hidden`` [B, H] is the last position's
    final hidden state, ``mask`` the 2D mask the cache was filled with, ``last_pos`` [B, 1] the last
    position ids. One token per row per step through the decoder with the cache."""
    head, embed = base_model.get_output_embeddings(), base_model.get_input_embeddings()
    cfg, decoder = text_config_of(base_model), decoder_of(base_model)
    for step in range(max_new_tokens):
        next_ids = softcap(cfg, head(hidden)).argmax(-1)
        if record(next_ids) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last_pos = last_pos + 1
        out = decoder(inputs_embeds=embed(next_ids.unsqueeze(1)), attention_mask=mask, position_ids=last_pos,
                      use_cache=True, **cache_kwarg(decoder, cache))
        cache, hidden = output_cache(out), out.last_hidden_state[:, -1]
    return record.results


def fp32_label_logits(base_model: nn.Module, hidden: Tensor, label_token_ids) -> Tensor:
    """[B, K] float32 logits of the K label tokens from final hidden states [B, H], computed outside
    autocast from the LM head's K rows only. ``label_token_ids``: [K] (shared) or [B, K] (per row)."""
    head = base_model.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):
        ids = torch.as_tensor(label_token_ids, device=head.weight.device).long()
        rows = head.weight[ids].float()
        hidden = hidden.float()
        logits = hidden @ rows.T if ids.dim() == 1 else torch.einsum("bh,bkh->bk", hidden, rows)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[ids].float()
        return softcap(text_config_of(base_model), logits)


def answer_logprobs(base_model: nn.Module, hidden: Tensor, targets: Tensor, mask: Tensor,
                    score: str = "sum") -> Tensor:
    """[R] float32 log-probability of each row's answer: ``hidden`` [R, M, H] are the final hidden states
    predicting ``targets`` [R, M] (``mask`` [R, M]: the answer's real positions); full-vocabulary
    log-softmax there (head in its storage dtype outside autocast, upcast, soft-capped), summed over the
    answer's tokens, or their mean per token with ``score="mean"``."""
    logp = torch.log_softmax(softcap(text_config_of(base_model), head_logits(base_model, hidden)), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    total = torch.where(mask, picked, torch.zeros_like(picked)).sum(-1)
    return total / mask.sum(-1) if score == "mean" else total


def head_logits(base_model: nn.Module, hidden: Tensor) -> Tensor:
    """Full-vocabulary float32 logits from hidden states, computed in the head's STORAGE dtype (not
    lowered by autocast: an fp32 head gives fp32 logits) and upcast, as transformers does."""
    head = base_model.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.to(head.weight.dtype)).float()


def attention_masks(cfg, hidden: Tensor, mask2d: Tensor, positions: Tensor, cache=None) -> dict:
    """The 4D attention masks a decoder layer takes, by layer type ("full_attention" and, for models
    with sliding-window layers, "sliding_attention"), built by transformers from a 2D padding mask."""
    from transformers.masking_utils import create_causal_mask

    masks = {"full_attention": create_causal_mask(config=cfg, inputs_embeds=hidden, attention_mask=mask2d,
                                                  position_ids=positions, **cache_kwarg(create_causal_mask, cache))}
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types and "sliding_attention" in layer_types:
        from transformers.masking_utils import create_sliding_window_causal_mask

        masks["sliding_attention"] = create_sliding_window_causal_mask(
            config=cfg, inputs_embeds=hidden, attention_mask=mask2d, position_ids=positions,
            **cache_kwarg(create_sliding_window_causal_mask, cache))
    return masks


class OnFrozenBase:
    """The plumbing of everything that runs on a frozen ``*ForCausalLM`` held as ``self.base_model``
    (SoftPromptModel here, runtime.mixed.MixedRunner): its decoder, text config and logit soft-cap."""

    base_model: nn.Module

    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.base_model)

    @property
    def _text_config(self):
        return text_config_of(self.base_model)

    def _softcap(self, logits: Tensor) -> Tensor:
        return softcap(self._text_config, logits)


class SoftPromptModel(OnFrozenBase, nn.Module):
    def __init__(self, base_model: nn.Module, soft_prompt: SoftPrompt, *, share_prefix: bool = True) -> None:
        super().__init__()
        self.base_model = base_model
        self.soft_prompt = soft_prompt
        self.share_prefix = share_prefix  # compute a prefix common to every row once (see _shared_prefix_last)
        base_model.requires_grad_(False)
        base_model.eval()
        dims = ModelDims.from_config(base_model.config)
        sp = soft_prompt.dims
        if (sp.hidden_size, sp.num_layers, sp.num_kv_heads, sp.head_dim) != (
            dims.hidden_size, dims.num_layers, dims.num_kv_heads, dims.head_dim
        ):
            raise InputError(f"the soft prompt was built for {sp}, the base model has {dims}")
        self.dims = dims
        param = next(base_model.parameters())
        soft_prompt.to(device=param.device)

    # ---- plumbing --------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> SoftPromptModel:
        super().train(mode)
        self.base_model.eval()  # the base model never leaves eval mode (no dropout)
        return self

    def _lm_head(self) -> nn.Module:
        return self.base_model.get_output_embeddings()

    def _check(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None) -> Tensor | None:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise InputError(f"input_ids and attention_mask must both be [B, T], got {list(input_ids.shape)} "
                             f"and {list(attention_mask.shape)}")
        n = self.soft_prompt.num_virtual_tokens
        if self.soft_prompt.kind == "input":
            if virtual_mask is None:
                raise InputError(f"{self.soft_prompt.method} needs a virtual_mask with {n} slots per row")
            if virtual_mask.shape != input_ids.shape:
                raise InputError(f"virtual_mask must be [B, T] like input_ids, got {list(virtual_mask.shape)}")
            counts = virtual_mask.bool().sum(-1)
            if bool((counts != n).any()):
                raise InputError(f"every row needs exactly {n} virtual slots, got {counts.tolist()}")
            return virtual_mask.bool()
        if virtual_mask is not None and bool(virtual_mask.bool().any()):
            raise InputError(f"{self.soft_prompt.method} takes no virtual input slots (virtual_mask must be empty)")
        return None

    def _prepare(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None):
        """inputs_embeds, the 2D attention mask the decoder sees, position_ids, cache (input/prefix kinds)."""
        vmask = self._check(input_ids, attention_mask, virtual_mask)
        embeds = self.base_model.get_input_embeddings()(input_ids)
        mask = attention_mask.bool()
        kind = self.soft_prompt.kind
        if kind == "input":
            mask = mask | vmask
            prompt = self.soft_prompt.prompt().to(embeds.dtype)  # [N, H]
            index = (vmask.long().cumsum(-1) - 1).clamp(0, prompt.shape[0] - 1)
            embeds = torch.where(vmask.unsqueeze(-1), prompt[index], embeds)
            return embeds, mask.long(), positions_from_mask(mask), None
        # prefix
        from transformers import DynamicCache

        b, n, d = input_ids.shape[0], self.soft_prompt.num_virtual_tokens, self.dims
        prefix = self.soft_prompt.prompt().to(embeds.dtype)  # [N, L*2*kv_dim]
        kv = prefix.view(n, d.num_layers, 2, d.num_kv_heads, d.head_dim).permute(1, 2, 3, 0, 4)
        cache = DynamicCache(config=self.base_model.config)
        for layer in range(d.num_layers):
            shape = (b, d.num_kv_heads, n, d.head_dim)
            cache.update(kv[layer, 0].unsqueeze(0).expand(shape), kv[layer, 1].unsqueeze(0).expand(shape), layer)
        full_mask = torch.cat([torch.ones(b, n, dtype=torch.long, device=mask.device), mask.long()], dim=1)
        return embeds, full_mask, n + positions_from_mask(mask), cache

    def _run_layers(self, layers, hidden: Tensor, mask2d: Tensor, positions: Tensor) -> Tensor:
        cfg = self._text_config
        masks = attention_masks(cfg, hidden, mask2d, positions)
        layer_types = getattr(cfg, "layer_types", None)
        position_embeddings = self.decoder.rotary_emb(hidden, position_ids=positions)
        for layer in layers:
            kind = layer_types[layer.self_attn.layer_idx] if layer_types else "full_attention"
            out = layer(hidden, attention_mask=masks.get(kind, masks["full_attention"]), position_ids=positions,
                        use_cache=False, position_embeddings=position_embeddings)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def _layer_forward(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None) -> Tensor:
        self._check(input_ids, attention_mask, virtual_mask)
        decoder = self.decoder
        embeds = decoder.embed_tokens(input_ids)
        mask = attention_mask.bool()
        positions = positions_from_mask(mask)
        k = self.soft_prompt.layer
        layers = list(decoder.layers[: self.dims.num_layers])
        hidden = self._run_layers(layers[:k], embeds, mask.long(), positions) if k > 0 else embeds
        prompt = self.soft_prompt.prompt(embeds, mask).to(hidden.dtype)  # [B, N, H]
        b, n = prompt.shape[:2]
        hidden = torch.cat([prompt, hidden], dim=1)
        mask2 = torch.cat([torch.ones(b, n, dtype=torch.long, device=mask.device), mask.long()], dim=1)
        prompt_pos = torch.arange(n, device=mask.device).unsqueeze(0).expand(b, n)
        positions2 = torch.cat([prompt_pos, n + positions], dim=1)
        hidden = self._run_layers(layers[k:], hidden, mask2, positions2)
        return decoder.norm(hidden)[:, n:]

    def _deep_forward(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None) -> Tensor:
        self._check(input_ids, attention_mask, virtual_mask)
        decoder, sp, cfg = self.decoder, self.soft_prompt, self._text_config
        hidden = decoder.embed_tokens(input_ids)
        mask = attention_mask.bool()
        b, n = hidden.shape[0], sp.num_virtual_tokens
        positions = n + positions_from_mask(mask)
        positions2 = torch.cat([torch.arange(n, device=mask.device).unsqueeze(0).expand(b, n), positions], dim=1)
        mask2 = torch.cat([torch.ones(b, n, dtype=torch.long, device=mask.device), mask.long()], dim=1)
        wide = hidden.new_zeros(b, n + hidden.shape[1], hidden.shape[2])  # shape/dtype for the masks only
        text = (attention_masks(cfg, hidden, mask.long(), positions), decoder.rotary_emb(hidden, position_ids=positions))
        both = (attention_masks(cfg, wide, mask2, positions2), decoder.rotary_emb(wide, position_ids=positions2))
        layer_types = getattr(cfg, "layer_types", None)
        for i, layer in enumerate(decoder.layers[: self.dims.num_layers]):
            inserted = i in sp.layers
            if inserted:
                hidden = torch.cat([sp.prompt(hidden, mask, i).to(hidden.dtype), hidden], dim=1)
            masks, pe = both if inserted else text
            kind = layer_types[layer.self_attn.layer_idx] if layer_types else "full_attention"
            out = layer(hidden, attention_mask=masks.get(kind, masks["full_attention"]),
                        position_ids=positions2 if inserted else positions, use_cache=False, position_embeddings=pe)
            hidden = out[0] if isinstance(out, tuple) else out
            if inserted:
                hidden = hidden[:, n:]
        return decoder.norm(hidden)

    def _shared_prefix_last(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None):
        """Last-position hidden states computing a prefix shared by every row ONCE (input kind only).

        With a template like ``{virtual}Review: {text}``, every row starts (after its left padding)
        with the same P tokens: the virtual slots and the literal. Their keys/values are identical
        across the batch, so they are computed for one row and broadcast through the cache; the rest
        of each row is run after them (its left padding, now between prefix and text, is masked and
        positions continue at P). Same function, B*P fewer token computations. Returns None when
        the batch has no such prefix (the caller then runs the plain path)."""
        b, t = input_ids.shape
        if self.soft_prompt.kind != "input" or b < 2 or virtual_mask is None:
            return None
        vmask = virtual_mask.bool()
        real = attention_mask.bool() | vmask
        lengths = real.sum(-1)
        shortest = int(lengths.min())
        if shortest < 3 or not bool((real == (torch.arange(t, device=real.device) >= (t - lengths).unsqueeze(1))).all()):
            return None  # not plain left padding
        cols = (t - lengths).unsqueeze(1) + torch.arange(shortest - 1, device=input_ids.device)  # keep >= 1 token
        ids_al, v_al = input_ids.gather(1, cols), vmask.gather(1, cols)
        same = ((ids_al == ids_al[:1]) & (v_al == v_al[:1])).all(0)
        p = int(same.long().cumprod(0).sum())
        n_slots = int(vmask[0].sum())
        if p < 2 or int(v_al[0, :p].sum()) != n_slots or not bool((vmask.sum(-1) == n_slots).all()):
            return None  # every virtual slot must lie inside the shared prefix
        from transformers import DynamicCache

        embed = self.base_model.get_input_embeddings()
        prefix = embed(ids_al[:1, :p])
        prompt = self.soft_prompt.prompt().to(prefix.dtype)
        slots = v_al[:1, :p]
        index = (slots.long().cumsum(-1) - 1).clamp(0, prompt.shape[0] - 1)
        prefix = torch.where(slots.unsqueeze(-1), prompt[index], prefix)
        pos = torch.arange(p, device=input_ids.device).unsqueeze(0)
        out = self.decoder(inputs_embeds=prefix, attention_mask=torch.ones(1, p, dtype=torch.long, device=pos.device),
                           position_ids=pos, use_cache=True)
        cache = DynamicCache(config=self.base_model.config)
        for i, layer in enumerate(output_cache(out).layers):
            shape = (b, *layer.keys.shape[1:])
            cache.update(layer.keys.expand(shape), layer.values.expand(shape), i)
        rest_ids = input_ids[:, p:]
        rest_mask = (torch.arange(t - p, device=rest_ids.device) >= (t - lengths).unsqueeze(1)).long()
        full_mask = torch.cat([torch.ones(b, p, dtype=torch.long, device=rest_ids.device), rest_mask], dim=1)
        rest = self.decoder(inputs_embeds=embed(rest_ids), attention_mask=full_mask,
                            position_ids=p + positions_from_mask(rest_mask.bool()), use_cache=True,
                            **cache_kwarg(self.decoder, cache))
        return rest.last_hidden_state[:, -1]

    def _hidden(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None) -> Tensor:
        if self.soft_prompt.kind == "layer":
            return self._layer_forward(input_ids, attention_mask, virtual_mask)
        if self.soft_prompt.kind == "deep":
            return self._deep_forward(input_ids, attention_mask, virtual_mask)
        embeds, mask, positions, cache = self._prepare(input_ids, attention_mask, virtual_mask)
        out = self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           use_cache=cache is not None, **cache_kwarg(self.decoder, cache))
        return out.last_hidden_state

    # ---- public API ------------------------------------------------------------------------------

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None = None, *,
                      last_only: bool = True) -> Tensor:
        """Final (normed) decoder hidden states: [B, H] at the last position, or [B, T, H]."""
        if last_only and self.share_prefix:
            self._check(input_ids, attention_mask, virtual_mask)
            shared = self._shared_prefix_last(input_ids, attention_mask, virtual_mask)
            if shared is not None:
                return shared
        hidden = self._hidden(input_ids, attention_mask, virtual_mask)
        return hidden[:, -1] if last_only else hidden

    def label_logits(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None,
                     label_token_ids: Tensor) -> Tensor:
        """[B, K] logits of the K label tokens at the last position, from those LM-head rows only (no
        full-vocabulary logits). ``label_token_ids``: [K] (shared) or [B, K] (per row). Computed and
        returned in float32 whatever the base dtype (cheap: K rows), for a precise loss. Autocast is
        switched off here: under bf16 autocast ``hidden.float() @ rows.float().T`` would still run in
        bf16 and quantise the logits (see softprompt/precision.py)."""
        hidden = self.hidden_states(input_ids, attention_mask, virtual_mask)  # [B, H]
        return fp32_label_logits(self.base_model, hidden, label_token_ids)

    def token_logits(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None = None, *,
                     positions: Tensor | None = None) -> Tensor:
        """Full-vocabulary logits [B, T, V]; with ``positions`` ([P]: the same positions for every row,
        or [B, P]: per row; negative values count from the end) only there: [B, P, V]."""
        hidden = self._hidden(input_ids, attention_mask, virtual_mask)
        if positions is not None:
            b, t, h = hidden.shape
            pos = torch.as_tensor(positions, device=hidden.device).long()
            if pos.dim() == 1:
                pos = pos.unsqueeze(0).expand(b, -1)
            pos = torch.where(pos < 0, pos + t, pos)
            hidden = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, h))
        return self._softcap(self._lm_head()(hidden))

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None = None, *,
                 max_new_tokens: int = 16, eos_token_id: int | list[int] | None = None,
                 use_cache: bool = True) -> list[list[int]]:
        """Greedy decoding. Returns each row's new tokens, stopping after (and excluding) an EOS token.
        Input and prefix kinds decode with the transformers cache (the prefix key/values sit in the cache
        before the prompt). ``use_cache=False`` is the reference decoder: every step recomputes the whole
        sequence exactly as training runs it (the soft prompt applied afresh, no key/value carried from a
        step to the next); ID-SPAM and IAPT always decode so (their prompts are pooled from the row's tokens,
        generated ones included)."""
        eos = set() if eos_token_id is None else (
            {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id})
        record = GreedyRecorder(input_ids.shape[0], eos)
        if max_new_tokens <= 0:
            return record.results
        if not use_cache or self.soft_prompt.kind in ("layer", "deep"):
            return self._uncached_greedy(input_ids, attention_mask, virtual_mask, max_new_tokens, record)
        embeds, mask, positions, cache = self._prepare(input_ids, attention_mask, virtual_mask)
        out = self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           use_cache=True, **cache_kwarg(self.decoder, cache))
        return cached_greedy(self.base_model, out.last_hidden_state[:, -1], output_cache(out), mask,
                             positions[:, -1:], max_new_tokens, record)

    def _uncached_greedy(self, input_ids: Tensor, attention_mask: Tensor, virtual_mask: Tensor | None,
                         max_new_tokens: int, record: GreedyRecorder) -> list[list[int]]:
        head = self._lm_head()
        ids, mask, vmask = input_ids, attention_mask, virtual_mask
        for step in range(max_new_tokens):
            next_ids = self._softcap(head(self._hidden(ids, mask, vmask)[:, -1])).argmax(-1)
            if record(next_ids) or step == max_new_tokens - 1:
                break
            ids = torch.cat([ids, next_ids.unsqueeze(1)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if vmask is not None:
                vmask = torch.cat([vmask, torch.zeros_like(vmask[:, :1])], dim=1)
        return record.results
