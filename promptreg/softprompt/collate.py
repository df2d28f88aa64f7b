"""Tokenisation and batching for soft-prompt training and scoring.

A template such as ``"{virtual}Review: {text}\\nSentiment:"`` is split into literal segments and
the ``{virtual}`` / ``{text}`` placeholders. Literal segments are tokenised once; trailing
whitespace of a literal is moved onto the following ``{text}`` so BPE tokenisers see " word" as
they would in running text. ``{virtual}`` becomes N slot positions (``virtual_mask``), filled by the
runtime with the soft prompt (see docs/DEV_CONTRACTS.md, "Batch convention"). A template without
``{virtual}`` gets the slots at the start when the method needs them.

Batches are left-padded to the longest row of the batch (dynamic padding); rows are grouped by
length (length bucketing) so little padding is computed. Classification rows carry the index of
their label. A label is scored by its whole verbalizer answer (:class:`Answers`): when every answer
is one token, by that token's logit at the last position (the fast path); otherwise each row is run
once per label with that label's answer appended (:func:`with_answers`, teacher forcing) and the
label's score is the summed -- or, ``score="mean"``, per-token mean -- log-probability of its answer
tokens (as evaluation harnesses such as lm-eval score multiple choice). With one-token answers both
give the same softmax over the labels (a log-probability is the logit minus a per-row constant).
Generation rows carry target tokens (+ EOS) after the prompt and a mask of the positions whose
next-token prediction is scored.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from promptreg.errors import InputError

_PLACEHOLDER = re.compile(r"\{(virtual|text)\}")

#: how a multi-token answer is scored: its tokens' summed log-probability, or their mean per token
LABEL_SCORES = ("sum", "mean")


@dataclass
class Encoded:
    ids: list[int]
    virtual: list[bool]
    label: int | None = None          # classification: index into the label list
    target_start: int | None = None   # generation: index of the first target token in ids


class Encoder:
    def __init__(self, tokenizer, template: str, *, slots: int, max_text_tokens: int = 256):
        if "{text}" not in template:
            raise InputError(f"template must contain {{text}}: {template!r}")
        if slots and "{virtual}" not in template:
            template = "{virtual}" + template
        if not slots:
            template = template.replace("{virtual}", "")
        self.tokenizer = tokenizer
        self.template = template
        self.slots = slots
        self.max_text_tokens = max_text_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise InputError("the tokenizer has neither a pad nor an eos token")
        probe = tokenizer("a")["input_ids"]
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and probe[:1] == [
            tokenizer.bos_token_id] else []
        self.segments: list[tuple[str, list[int] | str]] = []
        pending_ws = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(template):
            literal = pending_ws + template[pos:m.start()]
            pending_ws = ""
            if m.group(1) == "text":
                stripped = literal.rstrip()
                pending_ws, literal = literal[len(stripped):], stripped
            if literal:
                self.segments.append(("lit", self._tok(literal)))
            self.segments.append((m.group(1), pending_ws))
            if m.group(1) == "text":
                pending_ws = ""
            pos = m.end()
        tail = template[pos:]
        if tail:
            self.segments.append(("lit", self._tok(tail)))

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, text: str) -> tuple[list[int], list[bool]]:
        ids, virtual = list(self.bos), [False] * len(self.bos)
        for kind, value in self.segments:
            if kind == "lit":
                ids += value
                virtual += [False] * len(value)
            elif kind == "virtual":
                ids += [self.pad_id] * self.slots
                virtual += [True] * self.slots
            else:
                toks = self._tok(value + text)[: self.max_text_tokens]
                ids += toks
                virtual += [False] * len(toks)
        return ids, virtual

    def classification(self, text: str, label: int) -> Encoded:
        ids, virtual = self.prompt(text)
        return Encoded(ids, virtual, label=label)

    def generation(self, text: str, target: str, max_target_tokens: int = 128) -> Encoded:
        ids, virtual = self.prompt(text)
        target_ids = self._tok(target)[:max_target_tokens]
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        start = len(ids)
        return Encoded(ids + target_ids + eos, virtual + [False] * (len(target_ids) + len(eos)), target_start=start)


def label_token_ids(tokenizer, answers: list[str]) -> list[int]:
    """First token of each label's verbalizer text; they must differ (the one-token-per-label scoring
    of external baselines; promptreg itself scores whole answers through :func:`answer_tokens`)."""
    ids = []
    for answer in answers:
        toks = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not toks:
            raise InputError(f"verbalizer answer {answer!r} tokenises to nothing")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise InputError(f"verbalizer answers {answers} share their first token; use distinct answer words")
    return ids


@dataclass(frozen=True)
class Answers:
    """Every label's answer tokens (its verbalizer text tokenised whole) and how a label is scored
    (``score``: one of :data:`LABEL_SCORES`). ``single_token``: every answer is one token (the fast path)."""

    tokens: tuple[tuple[int, ...], ...]
    score: str = "sum"

    def __post_init__(self):
        if self.score not in LABEL_SCORES:
            raise InputError(f"label score must be one of {', '.join(LABEL_SCORES)}, got {self.score!r}")

    @property
    def single_token(self) -> bool:
        return all(len(t) == 1 for t in self.tokens)

    @property
    def first(self) -> list[int]:
        return [t[0] for t in self.tokens]

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def of(cls, labels) -> Answers:
        """``labels`` as Answers: Answers as they are, a list/tensor of token ids as one-token answers."""
        if isinstance(labels, Answers):
            return labels
        ids = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        return cls(tuple((int(i),) for i in ids))


def answer_tokens(tokenizer, answers: list[str], score: str = "sum") -> Answers:
    """Each label's whole answer tokenised; two answers may share leading tokens but not all of them."""
    seqs: list[tuple[int, ...]] = []
    for answer in answers:
        toks = tuple(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if not toks:
            raise InputError(f"verbalizer answer {answer!r} tokenises to nothing")
        if toks in seqs:
            raise InputError(f"verbalizer answers {answers[seqs.index(toks)]!r} and {answer!r} tokenise to the "
                             f"same tokens; use distinct answers")
        seqs.append(toks)
    return Answers(tuple(seqs), score)


def answer_targets(answers: Answers, device=None):
    """targets [K, M] (M: the longest answer) with each answer RIGHT-aligned, and mask [K, M] of its
    real positions: the hidden states of a row's last M positions predict them (see with_answers)."""
    import torch

    k, m = len(answers), max(len(a) for a in answers.tokens)
    targets = torch.zeros((k, m), dtype=torch.long)
    mask = torch.zeros((k, m), dtype=torch.bool)
    for j, ans in enumerate(answers.tokens):
        targets[j, m - len(ans):] = torch.tensor(ans)
        mask[j, m - len(ans):] = True
    return targets.to(device), mask.to(device)


def with_answers(batch, answers: Answers):
    """Every row of a left-padded batch once per label, with all but the last token of that label's
    answer appended (teacher forcing): [B*K, T+M-1], row i label k at i*K+k, still left-padded (the
    extra padding is masked, id 0). Its last M positions then predict :func:`answer_targets`: the row's
    last prompt token predicts the answer's first token, each appended token the next."""
    import torch

    ids, mask = batch["input_ids"], batch["attention_mask"]
    virtual = batch.get("virtual_mask")
    b, t = ids.shape
    k, m = len(answers), max(len(a) for a in answers.tokens)
    w = t + m - 1
    out_ids = ids.new_zeros((b, k, w))
    out_mask = mask.new_zeros((b, k, w))
    out_virtual = torch.zeros((b, k, w), dtype=torch.bool, device=ids.device)
    for j, ans in enumerate(answers.tokens):
        start = m - len(ans)
        out_ids[:, j, start:start + t] = ids
        out_mask[:, j, start:start + t] = mask
        if virtual is not None:
            out_virtual[:, j, start:start + t] = virtual
        if len(ans) > 1:
            out_ids[:, j, start + t:] = torch.tensor(ans[:-1], device=ids.device)
            out_mask[:, j, start + t:] = 1
    wide = {"input_ids": out_ids.view(b * k, w), "attention_mask": out_mask.view(b * k, w),
            "virtual_mask": out_virtual.view(b * k, w)}
    return wide, *answer_targets(answers, ids.device)


def collate(rows: list[Encoded], pad_id: int, device=None):
    """Left-pad a list of encoded rows into tensors (on ``device`` when given)."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    virtual = torch.zeros((len(rows), width), dtype=torch.bool)
    target = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        off = width - len(r.ids)
        ids[i, off:] = torch.tensor(r.ids)
        mask[i, off:] = 1
        virtual[i, off:] = torch.tensor(r.virtual)
        if r.target_start is not None:
            # position p predicts token p+1: score predictions of target tokens
            target[i, off + r.target_start - 1: width - 1] = True
    batch = {"input_ids": ids, "attention_mask": mask, "virtual_mask": virtual}
    if rows[0].label is not None:
        batch["labels"] = torch.tensor([r.label for r in rows], dtype=torch.long)
    if rows[0].target_start is not None:
        batch["target_mask"] = target
    if device is not None and str(device) != "cpu":
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def length_batches(lengths: list[int], batch_size: int, *, shuffle: bool, seed: int = 0,
                   window: int = 50) -> list[list[int]]:
    """Indices grouped into batches of similar length (seeded). Without shuffle: sorted by length."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
        span = batch_size * window
        chunks = [sorted(order[i:i + span], key=lambda j: lengths[j]) for i in range(0, len(order), span)]
        batches = [c[i:i + batch_size] for c in chunks for i in range(0, len(c), batch_size)]
        rng.shuffle(batches)
        return batches
    order.sort(key=lambda j: lengths[j])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
