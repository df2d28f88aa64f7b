"""Forward passes that score batches: label logits for classification, target loss for generation,
with or without a soft prompt (zero-shot uses the same template without ``{virtual}``)."""

from __future__ import annotations

from promptreg.softprompt.collate import Answers, Encoded, collate, length_batches, with_answers


def device_of(model):
    return next(model.parameters()).device


def label_logits(base, soft_model, batch, labels):
    """[B, K] float32 label scores. ``labels``: :class:`Answers` (or one token id per label). One-token
    answers: the label tokens' logits at the last position (never lowered by autocast). Otherwise each
    answer's summed / mean token log-probability, the rows run once per label (collate.with_answers)."""
    import torch

    from promptreg.softprompt.soft_model import answer_logprobs, fp32_label_logits, positions_from_mask

    answers = Answers.of(labels)
    if answers.single_token:
        ids = labels if isinstance(labels, torch.Tensor) else torch.tensor(answers.first, device=device_of(base))
        if soft_model is not None:
            return soft_model.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"], ids)
        out = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=positions_from_mask(batch["attention_mask"]), use_cache=False)
        return fp32_label_logits(base, out.last_hidden_state[:, -1], ids)
    wide, targets, mask = with_answers(batch, answers)
    b, (k, m) = batch["input_ids"].shape[0], targets.shape
    if soft_model is not None:
        hidden = soft_model.hidden_states(wide["input_ids"], wide["attention_mask"], wide["virtual_mask"],
                                          last_only=False)
    else:
        hidden = base.model(input_ids=wide["input_ids"], attention_mask=wide["attention_mask"],
                            position_ids=positions_from_mask(wide["attention_mask"]), use_cache=False).last_hidden_state
    scores = answer_logprobs(base, hidden[:, -m:], targets.repeat(b, 1), mask.repeat(b, 1), answers.score)
    return scores.view(b, k)


def generation_loss(base, soft_model, batch, reduction: str = "mean"):
    """Next-token cross-entropy over the target positions (full-vocabulary logits only there, in the
    head's storage dtype, upcast): their mean, or their sum with ``reduction="sum"``."""
    import torch.nn.functional as F

    from promptreg.softprompt.soft_model import head_logits, positions_from_mask

    mask = batch["target_mask"]
    if soft_model is not None:
        hidden = soft_model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                          last_only=False)
    else:
        hidden = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=positions_from_mask(batch["attention_mask"]), use_cache=False).last_hidden_state
    picked = hidden[:, :-1][mask[:, :-1]]
    targets = batch["input_ids"][:, 1:][mask[:, :-1]]
    return F.cross_entropy(head_logits(base, picked), targets, reduction=reduction)


def classify(base, soft_model, rows: list[Encoded], labels, *, batch_size: int = 32, pad_id: int = 0,
             precision: str = "fp32"):
    """Probabilities over the labels for every row (in input order): a float32 tensor [n, K].
    ``labels``: :class:`Answers`, or one token id per label."""
    import torch

    from promptreg.softprompt.precision import Precision

    device = device_of(base)
    answers = Answers.of(labels)
    label_ids_t = torch.tensor(answers.first, device=device) if answers.single_token else answers
    probs = torch.zeros(len(rows), len(answers))
    with torch.no_grad(), Precision(precision).autocast(device.type):
        for idx in length_batches([len(r.ids) for r in rows], batch_size, shuffle=False):
            batch = collate([rows[i] for i in idx], pad_id, device)
            probs[idx] = torch.softmax(label_logits(base, soft_model, batch, label_ids_t).float(), -1).cpu()
    return probs


def accuracy_metrics(probs, labels: list[int], label_names: list[str]) -> dict[str, float]:
    import torch

    pred = probs.argmax(-1)
    gold = torch.tensor(labels)
    out = {"accuracy": float((pred == gold).float().mean()) if len(labels) else 0.0}
    f1s = []
    for k, name in enumerate(label_names):
        tp = int(((pred == k) & (gold == k)).sum())
        fp = int(((pred == k) & (gold != k)).sum())
        fn = int(((pred != k) & (gold == k)).sum())
        recall = tp / (tp + fn) if tp + fn else 0.0
        precision = tp / (tp + fp) if tp + fp else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        out[f"recall_{name}"] = recall
    out["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    return out


def greedy_generate(base, soft_model, rows: list[Encoded], *, max_new_tokens: int, eos_token_id, pad_id: int = 0,
                    batch_size: int = 16, precision: str = "fp32") -> list[list[int]]:
    """Greedy new tokens for every row (in input order), stopping after (and excluding) EOS. With
    ``soft_model`` None the base model alone decodes the same rows (zero-shot: the template without
    virtual tokens) through the same cached greedy loop as the soft prompt's."""
    import torch

    from promptreg.softprompt.precision import Precision
    from promptreg.softprompt.soft_model import GreedyRecorder, cached_greedy, decoder_of, positions_from_mask
    from promptreg.transformers_compat import output_cache

    device = device_of(base)
    eos = {int(eos_token_id)} if eos_token_id is not None else set()
    out: list[list[int]] = [[] for _ in rows]
    with torch.no_grad(), Precision(precision).autocast(device.type):
        for idx in length_batches([len(r.ids) for r in rows], batch_size, shuffle=False):
            batch = collate([rows[i] for i in idx], pad_id, device)
            if soft_model is not None:
                new = soft_model.generate(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                          max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
            elif max_new_tokens <= 0:
                new = [[] for _ in idx]
            else:
                mask = batch["attention_mask"]
                positions = positions_from_mask(mask)
                res = decoder_of(base)(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                                       use_cache=True)
                new = cached_greedy(base, res.last_hidden_state[:, -1], output_cache(res), mask, positions[:, -1:],
                                    max_new_tokens, GreedyRecorder(len(idx), eos))
            for i, ids in zip(idx, new, strict=True):
                out[i] = list(ids)
    return out
