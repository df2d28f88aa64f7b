"""Mixed batches: every row with its OWN soft prompt, on one shared frozen base model.

PEFT runs one prompt adapter per batch (huggingface/peft#759). ``MixedRunner`` runs a batch whose rows
may each carry a different soft prompt -- different methods, different numbers of virtual tokens, or
none at all (zero-shot, the plain base model) -- and gives every row exactly what
:class:`promptreg.softprompt.soft_model.SoftPromptModel` gives that row run ALONE (batch of 1), up to
float rounding.

API::

    runner = MixedRunner(base_model, tokenizer)
    rows = [MixedRow(soft_prompt, ids, virtual), ...]  # ids/virtual from Encoder(...).prompt(text)
    runner.label_logits(rows, [[label ids of row 0], [label ids of row 1], ...])  # list of float32 [K_r]
    runner.label_scores(rows, [answers of row 0, ...])  # softprompt.collate.Answers: whole answers
    runner.generate(rows, max_new_tokens=16, eos_token_id=eos)  # list of new token ids per row

Layout of one batch (B rows). The text region is the rows' own tokens LEFT-padded to one width T
(``attention_mask`` 1 at real tokens and virtual slots); before it sits a "front" of F = max N
key/value slots (over the prefix-tuning and ID-SPAM rows) that lives in the transformers cache, as
past key/values, at every layer. Each row's own front entries occupy the LAST N_r front slots; the
others are zero and hidden by the attention mask. Attention only ever sees a row's positions through
its mask and ``position_ids``, so padding between the front and the text changes nothing: the soft
prompt sits next to its row's text, after the padding (huggingface/peft#1093).

How each kind runs in the one batch:

- zero-shot (``soft_prompt=None``): front fully masked, positions ``cumsum(mask) - 1``.
- ``"input"`` (prompt tuning, P-tuning): the row's N_r slots (``virtual``) get its own prompt's
  embeddings, in order (different N per row are fine: the slots are part of the row's text). Front
  fully masked, positions ``cumsum(mask) - 1``.
- ``"prefix"`` (prefix tuning): the row's per-layer key/values [N_r] fill its last N_r front slots
  (stored as is, not rotated, as PEFT and SoftPromptModel do), visible at every layer; the
  F - N_r padded front slots are masked; text positions ``N_r + cumsum(mask) - 1`` (prefix at
  positions 0..N_r-1, as when the row runs alone).
- ``"layer"`` (ID-SPAM, prompt inserted before layer k): in SoftPromptModel the N prompt tokens sit
  before the text from layer k on and attend causally to each other only -- never to the text. Their
  key/values at layers k..L-1 therefore depend on the prompt alone: they are computed once per distinct
  soft prompt by running that prompt's rows' generated prompts [G, N, H] through layers k..L-1 with
  positions 0..N-1 (a small pre-pass over N tokens per row), and then enter the front like a prefix --
  but only from layer k on: at layers < k the row's front slots are masked and its text positions are
  ``cumsum - 1``; at layers >= k they are visible and its text positions are ``N_r + cumsum - 1``. The
  batch is then run layer by layer with one attention mask / rotary table per distinct state (at most
  one more than the number of distinct k in the batch). This is exact: the same keys, values, masks
  and positions as the row alone.
- ``"deep"`` (IAPT: fresh prompt tokens at each selected layer, generated from that layer's input): text
  positions ``N_r + cumsum - 1`` at every layer; the row's front slots are visible only at its selected
  layers and are filled DURING the layer-by-layer pass, just before such a layer runs: the generator
  pools the rows' current hidden states (own masks), and the layer is run on the N generated tokens
  alone (positions 0..N-1, a throwaway cache) for their keys/values -- the prompt tokens attend to each
  other only, so these equal the row alone's. IAPT rows generate in the recompute sub-batch too.

Generation (greedy) uses the transformers cache: prefix rows' (padded, masked) key/values sit in the
cache before the prompt and every step appends one token per row. ID-SPAM rows are the exception:
SoftPromptModel.generate recomputes an ID-SPAM row's prompt from ALL its tokens, generated ones
included, at every step, so its layers >= k have to be recomputed over the whole sequence each step
(no cache can hold them). Those rows therefore run as a SEPARATE SUB-BATCH inside the same
``generate`` call (all ID-SPAM rows together, as one mixed batch re-run each step, finished rows
dropped); every other row shares one cached batched generation. ``label_logits`` runs all kinds,
ID-SPAM included, as ONE batched forward. ``label_scores`` too: a row whose answers are all one token is
scored as ``label_logits`` scores it; a row with a multi-token answer enters the batch once per label with
that answer appended (teacher forcing, as softprompt.scoring.label_logits does for a row alone) and gets
each answer's summed / mean token log-probability.

Identical soft prompts (the same object) are grouped: ``prompt()`` is computed once per distinct
prompt per call (P-tuning's encoder and prefix tuning's MLP are not free); ID-SPAM's generator runs once
per distinct prompt over all of its rows. Everything runs without gradients (inference runtime). The
base model's attention implementation must accept a 4D mask built by ``create_causal_mask`` (eager,
sdpa; not flash attention, which ignores per-row front masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from promptreg.errors import InputError
from promptreg.softprompt.collate import Answers, answer_targets
from promptreg.softprompt.methods.base import KINDS, ModelDims, SoftPrompt
from promptreg.softprompt.soft_model import (
    GreedyRecorder,
    OnFrozenBase,
    answer_logprobs,
    attention_masks,
    cached_greedy,
    positions_from_mask,
)
from promptreg.transformers_compat import cache_kwarg, output_cache


@dataclass
class MixedRow:
    """One row: its soft prompt (None: plain base model) and its encoded prompt text.

    ``ids`` / ``virtual`` as produced by ``Encoder(tokenizer, template, slots=soft_prompt.input_slots)
    .prompt(text)``: ``virtual`` is True at exactly ``soft_prompt.input_slots`` positions (input kind),
    nowhere otherwise (None means all False)."""

    soft_prompt: SoftPrompt | None
    ids: list[int]
    virtual: list[bool] | None = field(default=None)


@dataclass
class _Batch:
    """A prepared batch: text embeddings and mask, the front key/values and per-layer visibility."""

    embeds: Tensor  # [B, T, H], virtual slots already filled
    mask: Tensor  # [B, T] bool: real tokens and virtual slots
    front: int  # F
    keys: Tensor | None  # [L, B, kv heads, F, head_dim]
    values: Tensor | None
    visible: Tensor  # [L, B, F] bool: front slots a row attends to at each layer
    shift: Tensor  # [L, B] long: added to cumsum(mask) - 1 at each layer
    per_layer: bool  # True when visibility / shift change across layers (ID-SPAM, IAPT rows)
    deep: list = field(default_factory=list)  # IAPT: (soft prompt, row indices tensor), filled per layer


def _check_label_ids(label_token_ids, rows: int, vocab: int) -> list[list[int]]:
    if len(label_token_ids) != rows:
        raise InputError(f"label_token_ids needs one list per row: got {len(label_token_ids)} for {rows} rows")
    out = []
    for i, ids in enumerate(label_token_ids):
        ids = [int(t) for t in ids]
        if not ids:
            raise InputError(f"row {i}: empty list of label token ids")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InputError(f"row {i}: label token ids {bad} are outside the vocabulary (size {vocab})")
        out.append(ids)
    return out


class MixedRunner(OnFrozenBase):
    """Runs batches of rows with per-row soft prompts on one frozen ``*ForCausalLM`` (Llama family)."""

    def __init__(self, base_model: nn.Module, tokenizer=None) -> None:
        self.base_model = base_model
        base_model.requires_grad_(False)
        base_model.eval()
        self.dims = ModelDims.from_config(base_model.config)
        pad = None
        if tokenizer is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0  # padded ids are masked; any valid id will do
        impl = getattr(self._text_config, "_attn_implementation", None)
        if impl and "flash" in str(impl):
            raise InputError(f"mixed batches need eager or sdpa attention (per-row masks), the model uses {impl}")

    # ---- plumbing --------------------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def _check_rows(self, rows: Sequence[MixedRow]) -> None:
        d = self.dims
        vocab = int(self.base_model.get_input_embeddings().weight.shape[0])
        seen: set[int] = set()
        for i, row in enumerate(rows):
            if not isinstance(row, MixedRow):
                raise InputError(f"row {i}: expected a MixedRow, got {type(row).__name__}")
            if not row.ids:
                raise InputError(f"row {i}: no token ids")
            if row.virtual is not None and len(row.virtual) != len(row.ids):
                raise InputError(f"row {i}: virtual has {len(row.virtual)} entries for {len(row.ids)} ids")
            slots = sum(bool(v) for v in row.virtual) if row.virtual is not None else 0
            sp = row.soft_prompt
            want = 0 if sp is None else sp.input_slots
            if slots != want:
                what = "zero-shot rows take" if sp is None else f"{sp.method} needs"
                raise InputError(f"row {i}: {what} {want} virtual slots, got {slots}")
            bad = [t for t in row.ids if not 0 <= int(t) < vocab]
            if bad:
                raise InputError(f"row {i}: token ids {bad[:5]} are outside the vocabulary (size {vocab})")
            if sp is not None and id(sp) not in seen:
                seen.add(id(sp))
                s = sp.dims
                if (s.hidden_size, s.num_layers, s.num_kv_heads, s.head_dim) != (
                        d.hidden_size, d.num_layers, d.num_kv_heads, d.head_dim):
                    raise InputError(f"row {i}: the soft prompt was built for {s}, the base model has {d}")
                if sp.kind not in KINDS:
                    raise InputError(f"row {i}: unknown soft prompt kind {sp.kind!r}")

    @staticmethod
    def _groups(rows: Sequence[MixedRow], kind: str) -> list[tuple[SoftPrompt, list[int]]]:
        """Distinct soft prompts of one kind (by identity) with the indices of their rows, in order."""
        groups: dict[int, tuple[SoftPrompt, list[int]]] = {}
        for i, row in enumerate(rows):
            sp = row.soft_prompt
            if sp is not None and sp.kind == kind:
                groups.setdefault(id(sp), (sp, []))[1].append(i)
        return list(groups.values())

    @staticmethod
    def _prompt(sp: SoftPrompt, like: Tensor, *args: Tensor, **kw) -> Tensor:
        """``sp.prompt(*args, **kw)`` with tensor inputs on the prompt's device, the result on ``like``'s."""
        param = next(sp.parameters(), None)
        if param is not None and args:
            args = tuple(a.to(param.device) for a in args)
        return sp.prompt(*args, **kw).to(device=like.device, dtype=like.dtype)

    # ---- batch preparation -----------------------------------------------------------------------

    def _prepare(self, rows: Sequence[MixedRow]) -> _Batch:
        d, dev = self.dims, self._device
        b, t = len(rows), max(len(r.ids) for r in rows)
        ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, t), dtype=torch.bool)
        vmask = torch.zeros((b, t), dtype=torch.bool)
        for i, r in enumerate(rows):
            off = t - len(r.ids)
            ids[i, off:] = torch.tensor([int(x) for x in r.ids], dtype=torch.long)
            mask[i, off:] = True
            if r.virtual is not None:
                vmask[i, off:] = torch.tensor([bool(v) for v in r.virtual], dtype=torch.bool)
        ids, mask, vmask = ids.to(dev), mask.to(dev), vmask.to(dev)
        embeds = self.base_model.get_input_embeddings()(ids)

        # input kind: each row's slots get its own prompt, one prompt() per distinct soft prompt
        input_groups = self._groups(rows, "input")
        if input_groups:
            prompts = {id(sp): self._prompt(sp, embeds) for sp, _ in input_groups}
            fill = [prompts[id(r.soft_prompt)] for r in rows if r.soft_prompt is not None
                    and r.soft_prompt.kind == "input"]
            embeds = embeds.clone()
            embeds[vmask] = torch.cat(fill)  # row-major: row by row, each row's slots in order

        prefix_groups, layer_groups = self._groups(rows, "prefix"), self._groups(rows, "layer")
        deep_groups = self._groups(rows, "deep")
        front = max([sp.num_virtual_tokens for sp, _ in prefix_groups + layer_groups + deep_groups], default=0)
        nl = d.num_layers
        visible = torch.zeros((nl, b, front), dtype=torch.bool, device=dev)
        shift = torch.zeros((nl, b), dtype=torch.long, device=dev)
        keys = values = None
        if front:
            shape = (nl, b, d.num_kv_heads, front, d.head_dim)
            keys = embeds.new_zeros(shape)
            values = embeds.new_zeros(shape)
        for sp, idx in prefix_groups:
            n = sp.num_virtual_tokens
            prefix = self._prompt(sp, embeds)  # [N, L*2*kv_dim], PEFT row layout
            kv = prefix.view(n, nl, 2, d.num_kv_heads, d.head_dim).permute(1, 2, 3, 0, 4)  # [L, 2, kvh, N, hd]
            sel = torch.tensor(idx, device=dev)
            keys[:, sel, :, front - n:] = kv[:, 0].unsqueeze(1)
            values[:, sel, :, front - n:] = kv[:, 1].unsqueeze(1)
            visible[:, sel, front - n:] = True
            shift[:, sel] = n
        for sp, idx in layer_groups:
            n, k = sp.num_virtual_tokens, sp.layer
            sel = torch.tensor(idx, device=dev)
            layer_kv = self._layer_prompt_kv(sp, embeds[sel], mask[sel])
            for layer, (lk, lv) in layer_kv.items():
                keys[layer, sel, :, front - n:] = lk
                values[layer, sel, :, front - n:] = lv
            visible[k:, sel, front - n:] = True
            shift[k:, sel] = n
        deep = []
        for sp, idx in deep_groups:  # key/values filled layer by layer in _forward
            sel = torch.tensor(idx, device=dev)
            visible[torch.tensor(sp.layers, device=dev)[:, None], sel[None, :], front - sp.num_virtual_tokens:] = True
            shift[:, sel] = sp.num_virtual_tokens
            deep.append((sp, sel))
        return _Batch(embeds=embeds, mask=mask, front=front, keys=keys, values=values, visible=visible,
                      shift=shift, per_layer=bool(layer_groups or deep_groups), deep=deep)

    def _layer_prompt_kv(self, sp: SoftPrompt, embeds: Tensor, mask: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """ID-SPAM: the key/values of the generated prompts [G, N, H] at layers k..L-1. In the row alone
        the prompt tokens sit at positions 0..N-1 before the text and attend causally to each other
        only, so they are computed here without the text (identical values)."""
        from transformers import DynamicCache

        prompt = self._prompt(sp, embeds, embeds, mask)  # [G, N, H] from the rows' token embeddings
        g, n = prompt.shape[:2]
        k = sp.layer
        positions = torch.arange(n, device=prompt.device).unsqueeze(0).expand(g, n)
        cache = DynamicCache(config=self.base_model.config)
        masks = self._masks(prompt, torch.ones(g, n, dtype=torch.long, device=prompt.device), positions, None)
        pe = self.decoder.rotary_emb(prompt, position_ids=positions)
        hidden = prompt
        layers = list(self.decoder.layers[: self.dims.num_layers])
        for layer in layers[k:]:
            hidden = self._call_layer(layer, hidden, masks, positions, pe, cache)
        return {i: (cache.layers[i].keys, cache.layers[i].values) for i in range(k, len(layers))}

    def _fill_deep(self, batch: _Batch, index: int, layer: nn.Module, hidden: Tensor, cache) -> None:
        """IAPT rows selecting layer ``index``: their prompt key/values at that layer, written into the
        front slots of the batch's cache just before the layer runs (module docstring)."""
        from transformers import DynamicCache

        for sp, sel in batch.deep:
            if index not in sp.layers:
                continue
            prompt = self._prompt(sp, hidden, hidden[sel], batch.mask[sel], layer=index)  # [G, N, H]
            g, n = prompt.shape[:2]
            positions = torch.arange(n, device=prompt.device).unsqueeze(0).expand(g, n)
            own = DynamicCache(config=self.base_model.config)
            masks = self._masks(prompt, torch.ones(g, n, dtype=torch.long, device=prompt.device), positions, None)
            self._call_layer(layer, prompt, masks, positions, self.decoder.rotary_emb(prompt, position_ids=positions), own)
            front = cache.layers[index]
            front.keys[sel, :, batch.front - n:] = own.layers[index].keys
            front.values[sel, :, batch.front - n:] = own.layers[index].values

    def _front_cache(self, batch: _Batch):
        if not batch.front:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=self.base_model.config)
        for layer in range(self.dims.num_layers):
            cache.update(batch.keys[layer], batch.values[layer], layer)
        return cache

    # ---- forward ---------------------------------------------------------------------------------

    def _masks(self, hidden: Tensor, mask2d: Tensor, positions: Tensor, cache) -> dict:
        return attention_masks(self._text_config, hidden, mask2d, positions, cache)

    def _call_layer(self, layer: nn.Module, hidden: Tensor, masks: dict, positions: Tensor, pe, cache) -> Tensor:
        layer_types = getattr(self._text_config, "layer_types", None)
        kind = layer_types[layer.self_attn.layer_idx] if layer_types else "full_attention"
        out = layer(hidden, attention_mask=masks.get(kind, masks["full_attention"]), position_ids=positions,
                    use_cache=cache is not None, position_embeddings=pe, **cache_kwarg(layer, cache))
        return out[0] if isinstance(out, tuple) else out

    def _forward(self, batch: _Batch, *, use_cache: bool):
        """Final (normed) hidden states [B, T, H], the cache, the 2D mask and the positions (last
        layer's state; constant across layers unless ID-SPAM rows are present)."""
        base_pos = positions_from_mask(batch.mask)
        cache = self._front_cache(batch)
        if not batch.per_layer:
            mask2d = torch.cat([batch.visible[0], batch.mask], dim=1).long()
            positions = base_pos + batch.shift[0].unsqueeze(1)
            out = self.decoder(inputs_embeds=batch.embeds, attention_mask=mask2d, position_ids=positions,
                               use_cache=use_cache or cache is not None, **cache_kwarg(self.decoder, cache))
            return out.last_hidden_state, output_cache(out), mask2d, positions
        # ID-SPAM rows: layer by layer, one mask / rotary table per distinct (visibility, shift) state;
        # every mask is built before any layer runs (the cache then holds the F front slots everywhere)
        per_layer: list[tuple] = []
        for layer in range(self.dims.num_layers):
            if per_layer and torch.equal(batch.visible[layer], batch.visible[layer - 1]) and torch.equal(
                    batch.shift[layer], batch.shift[layer - 1]):
                per_layer.append(per_layer[-1])  # same state as the layer below (states only change at some k)
                continue
            mask2d = torch.cat([batch.visible[layer], batch.mask], dim=1).long()
            positions = base_pos + batch.shift[layer].unsqueeze(1)
            per_layer.append((self._masks(batch.embeds, mask2d, positions, cache), positions,
                              self.decoder.rotary_emb(batch.embeds, position_ids=positions), mask2d))
        hidden = batch.embeds
        for i, (layer, (masks, positions, pe, _)) in enumerate(zip(self.decoder.layers[: self.dims.num_layers],
                                                                   per_layer, strict=True)):
            if batch.deep:
                self._fill_deep(batch, i, layer, hidden, cache)
            hidden = self._call_layer(layer, hidden, masks, positions, pe, cache)
        return self.decoder.norm(hidden), cache, per_layer[-1][3], per_layer[-1][1]

    def _last_hidden(self, rows: Sequence[MixedRow]) -> Tensor:
        hidden, _, _, _ = self._forward(self._prepare(rows), use_cache=False)
        return hidden[:, -1]

    # ---- public API ------------------------------------------------------------------------------

    @torch.no_grad()
    def label_logits(self, rows: Sequence[MixedRow], label_token_ids: Sequence[Sequence[int]]) -> list[Tensor]:
        """Per row, float32 logits [K_r] of that row's own label tokens at its last position, all rows in
        ONE batched forward (LM-head rows of the label tokens only, no full-vocabulary logits)."""
        if not rows:
            return []
        self._check_rows(rows)
        head = self.base_model.get_output_embeddings()
        labels = _check_label_ids(label_token_ids, len(rows), int(head.weight.shape[0]))
        hidden = self._last_hidden(rows)  # [B, H]
        return [self._token_logits(hidden[i], ids) for i, ids in enumerate(labels)]

    def _token_logits(self, hidden: Tensor, ids: list[int]) -> Tensor:
        """float32 logits [K] of tokens ``ids`` from one final hidden state [H] (their LM-head rows only)."""
        head = self.base_model.get_output_embeddings()
        sel = torch.tensor(ids, device=head.weight.device)
        logits = hidden.float() @ head.weight[sel].float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[sel].float()
        return self._softcap(logits)

    @torch.no_grad()
    def label_scores(self, rows: Sequence[MixedRow], answers: Sequence[Answers]) -> list[Tensor]:
        """Per row, float32 scores [K_r] of its own labels (``answers[r]``: softprompt.collate.Answers), all
        rows in ONE batched forward: one-token answers as :meth:`label_logits`; otherwise the row once per
        label with the answer appended, scored by the answer's summed / mean token log-probability."""
        if len(answers) != len(rows):
            raise InputError(f"label_scores needs one Answers per row: got {len(answers)} for {len(rows)} rows")
        if all(a.single_token for a in answers):
            return self.label_logits(rows, [a.first for a in answers])
        wide: list[MixedRow] = []
        starts = []
        for row, ans in zip(rows, answers, strict=True):
            starts.append(len(wide))
            if ans.single_token:
                wide.append(row)
                continue
            for a in ans.tokens:
                virtual = None if row.virtual is None else list(row.virtual) + [False] * (len(a) - 1)
                wide.append(MixedRow(row.soft_prompt, list(row.ids) + list(a[:-1]), virtual))
        self._check_rows(wide)
        _check_label_ids([a.first for a in answers], len(rows), int(self.base_model.get_output_embeddings().weight.shape[0]))
        hidden, _, _, _ = self._forward(self._prepare(wide), use_cache=False)
        out = []
        for start, ans in zip(starts, answers, strict=True):
            if ans.single_token:
                out.append(self._token_logits(hidden[start, -1], ans.first))
                continue
            targets, mask = answer_targets(ans, hidden.device)
            tail = hidden[start:start + len(ans), -targets.shape[1]:]
            out.append(answer_logprobs(self.base_model, tail, targets, mask, ans.score))
        return out

    @torch.no_grad()
    def generate(self, rows: Sequence[MixedRow], max_new_tokens: int = 16,
                 eos_token_id: int | Sequence[int] | None = None) -> list[list[int]]:
        """Greedy decoding; each row's new tokens, stopping after (and excluding) an EOS token
        (``eos_token_id`` None: no EOS, always ``max_new_tokens`` tokens). Rows without ID-SPAM share one
        cached batched generation; ID-SPAM rows run as a separate sub-batch (see the module docstring)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        eos = set() if eos_token_id is None else (
            {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id})
        results: list[list[int]] = [[] for _ in rows]
        if not rows or max_new_tokens == 0:
            return results
        self._check_rows(rows)
        layer_idx = [i for i, r in enumerate(rows) if r.soft_prompt is not None and r.soft_prompt.kind in ("layer", "deep")]
        cached_idx = [i for i in range(len(rows)) if i not in set(layer_idx)]
        if cached_idx:
            sub = self._generate_cached([rows[i] for i in cached_idx], max_new_tokens, eos)
            for i, res in zip(cached_idx, sub, strict=True):
                results[i] = res
        if layer_idx:
            sub = self._generate_recompute([rows[i] for i in layer_idx], max_new_tokens, eos)
            for i, res in zip(layer_idx, sub, strict=True):
                results[i] = res
        return results

    def _generate_cached(self, rows: Sequence[MixedRow], max_new_tokens: int, eos: set[int]) -> list[list[int]]:
        hidden, cache, mask, positions = self._forward(self._prepare(rows), use_cache=True)
        return cached_greedy(self.base_model, hidden[:, -1], cache, mask, positions[:, -1:], max_new_tokens,
                             GreedyRecorder(len(rows), eos))

    def _generate_recompute(self, rows: Sequence[MixedRow], max_new_tokens: int,
                            eos: set[int]) -> list[list[int]]:
        """ID-SPAM rows: the prompt depends on every token of the row (generated ones included, as in
        SoftPromptModel.generate), so each step re-runs the rows' batch; finished rows are dropped."""
        head = self.base_model.get_output_embeddings()
        results: list[list[int]] = [[] for _ in rows]
        live = [MixedRow(r.soft_prompt, list(r.ids), None if r.virtual is None else list(r.virtual)) for r in rows]
        active = list(range(len(rows)))
        for step in range(max_new_tokens):
            hidden = self._last_hidden([live[i] for i in active])
            next_ids = self._softcap(head(hidden)).argmax(-1).tolist()
            still = []
            for i, tok in zip(active, next_ids, strict=True):
                if tok in eos:
                    continue
                results[i].append(tok)
                live[i].ids.append(tok)
                if live[i].virtual is not None:
                    live[i].virtual.append(False)
                still.append(i)
            active = still
            if not active or step == max_new_tokens - 1:
                break
        return results
