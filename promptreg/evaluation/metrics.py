"""Per-example outcomes and aggregate metrics for classification and generation golden sets.

Two layers:

- builders (:func:`classification_outcomes`, :func:`generation_outcomes`) turn model output into the
  per-example outcome dicts that an :class:`~promptreg.evaluation.results.EvalResult` stores, and
  :func:`classification_metrics` / :func:`generation_metrics` aggregate them;
- vectorised statistics (:func:`metric_columns`, :func:`metric_statistic`) compute one metric along the
  last axis of per-example columns with any number of leading (resample) dimensions, which is what the
  paired bootstrap (``scipy.stats.bootstrap(vectorized=True)``) calls. The aggregate functions are
  built on the same kernels, so the statistic on the full data equals the reported metric exactly.

Metric definitions (classification, ``K`` declared labels, ``n`` examples):

- ``accuracy``: fraction of examples whose arg-max label is the gold label.
- ``recall_<label>``: TP / (number of gold examples of that label); 0.0 when the label never occurs
  in the gold data (scikit-learn's default ``zero_division`` behaviour).
- ``macro_f1``: mean over ALL declared labels of the per-class F1 = 2 TP / (gold count + predicted
  count); a class that is neither in the gold data nor predicted has F1 = 0.0 (scikit-learn's
  ``f1_score(labels=..., average="macro")`` with the default ``zero_division``), so it pulls the mean down.
- ``ece``: expected calibration error of the top-label confidence with 15 equal-width bins on [0, 1]
  (bin ``b`` is ``[b/15, (b+1)/15)``; a confidence of exactly 1.0 goes in the last bin):
  ``ECE = sum_b |sum_{i in b} (correct_i - conf_i)| / n``.

Generation (SQuAD-style answer normalisation for EM / token F1):

- ``exact_match``: 1.0 when the normalised prediction equals the normalised reference.
- ``token_f1``: token-overlap F1 of the normalised tokens; both empty -> 1.0, one empty -> 0.0.
- ``rouge_l``: ROUGE-L F-measure from ``rouge_score`` (no stemming).
- ``length_ratio``: whitespace tokens of the prediction / max(1, whitespace tokens of the reference).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from promptreg.errors import InputError

ECE_BINS = 15
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "ece")   # plus recall_<label> per declared label
GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l", "length_ratio")
TASKS = ("classification", "generation")


# --------------------------------------------------------------------------- classification outcomes


def classification_outcomes(gold: Sequence[int], probs: np.ndarray, labels: Sequence[str],
                            texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One outcome dict per example from gold label indices and class probabilities ``[n, K]``.

    The prediction is the arg-max class (the first one on ties); ``confidence`` is its probability.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    if probs.ndim != 2:
        raise InputError(f"probs must be a 2-D array [examples, classes], got shape {probs.shape}")
    n, k = probs.shape
    if k != len(labels):
        raise InputError(f"probs has {k} columns but {len(labels)} labels were given")
    if len(gold) != n:
        raise InputError(f"{len(gold)} gold labels but {n} rows of probabilities")
    if texts is not None and len(texts) != n:
        raise InputError(f"{len(texts)} texts but {n} examples")
    if not np.all(np.isfinite(probs)):
        raise InputError("probs contains NaN or infinite values")
    gold_arr = np.asarray(gold, dtype=np.int64).reshape(-1) if n else np.zeros(0, dtype=np.int64)
    if n and (gold_arr.min() < 0 or gold_arr.max() >= k):
        raise InputError(f"gold label indices must be in [0, {k - 1}]")
    pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    out = []
    for i in range(n):
        g, p = int(gold_arr[i]), int(pred[i])
        row: dict[str, Any] = {
            "index": i,
            "gold": labels[g],
            "pred": labels[p],
            "gold_index": g,
            "pred_index": p,
            "confidence": float(probs[i, p]),
            "probs": [round(float(x), 6) for x in probs[i]],
            "correct": g == p,
        }
        if texts is not None:
            row["text"] = texts[i]
        out.append(row)
    return out


def classification_metrics(outcomes: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, float]:
    """accuracy, macro_f1, recall_<label> for every declared label, and ece (see the module doc)."""
    labels = list(labels)
    _check_labels(labels)
    gold, pred, correct, conf = _classification_arrays(outcomes, len(labels))
    tp, gold_n, pred_n = _class_counts(gold, pred, len(labels))
    out = {"accuracy": float(_mean(correct)), "macro_f1": float(_macro_f1(tp, gold_n, pred_n))}
    recalls = _recalls(tp, gold_n)
    for j, label in enumerate(labels):
        out[f"recall_{label}"] = float(recalls[..., j])
    out["ece"] = float(_ece(correct, conf))
    return out


def _check_labels(labels: list[str]) -> None:
    if not labels:
        raise InputError("a classification task needs at least one label")
    if len(set(labels)) != len(labels):
        raise InputError(f"duplicate labels: {labels}")


def _classification_arrays(outcomes: Sequence[dict[str, Any]], k: int | None):
    """(gold, pred, correct, confidence) columns; indices checked against ``k`` labels when given."""
    if not outcomes:
        raise InputError("no classification outcomes to compute metrics from")
    try:
        gold = np.fromiter((o["gold_index"] for o in outcomes), dtype=np.int64, count=len(outcomes))
        pred = np.fromiter((o["pred_index"] for o in outcomes), dtype=np.int64, count=len(outcomes))
        conf = np.fromiter((o["confidence"] for o in outcomes), dtype=np.float64, count=len(outcomes))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed classification outcome (needs gold_index, pred_index, confidence): "
                         f"{exc}") from None
    for name, arr in (("gold_index", gold), ("pred_index", pred)):
        if arr.min() < 0 or (k is not None and arr.max() >= k):
            raise InputError(f"{name} out of range for {k} labels")
    correct = (gold == pred).astype(np.float64)
    return gold, pred, correct, conf


# --------------------------------------------------------------------------- generation outcomes


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, strip punctuation, remove articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, ref: str) -> float:
    return 1.0 if normalize_answer(pred) == normalize_answer(ref) else 0.0


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token-overlap F1 on normalised tokens (both empty -> 1.0, one empty -> 0.0)."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return 1.0 if p == r else 0.0
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (``rouge_score``, no stemming)."""
    return float(_rouge_scorer().score(ref, pred)["rougeL"].fmeasure)


def length_ratio(pred: str, ref: str) -> float:
    return len(pred.split()) / max(1, len(ref.split()))


def generation_outcomes(preds: Sequence[str], refs: Sequence[str],
                        texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One outcome dict per example with the four per-example scores."""
    if len(preds) != len(refs):
        raise InputError(f"{len(preds)} predictions but {len(refs)} references")
    if texts is not None and len(texts) != len(preds):
        raise InputError(f"{len(texts)} texts but {len(preds)} examples")
    out = []
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise InputError(f"example {i}: prediction and reference must be strings")
        row: dict[str, Any] = {
            "index": i,
            "output": p,
            "reference": r,
            "exact_match": exact_match(p, r),
            "token_f1": token_f1(p, r),
            "rouge_l": rouge_l(p, r),
            "length_ratio": length_ratio(p, r),
        }
        if texts is not None:
            row["text"] = texts[i]
        out.append(row)
    return out


def generation_metrics(outcomes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means of exact_match, token_f1, rouge_l and length_ratio."""
    if not outcomes:
        raise InputError("no generation outcomes to compute metrics from")
    return {m: float(_mean(_score_column(outcomes, m))) for m in GENERATION_METRICS}


def _score_column(outcomes: Sequence[dict[str, Any]], metric: str) -> np.ndarray:
    try:
        return np.fromiter((o[metric] for o in outcomes), dtype=np.float64, count=len(outcomes))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed generation outcome (needs {metric}): {exc}") from None


# --------------------------------------------------------------------------- vectorised kernels
# Every kernel reduces along the LAST axis and accepts any leading dimensions.


def _mean(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=-1)


def _grouped_sum(keys: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row histogram: out[..., j] = sum over the last axis of weights where keys == j.

    One ``np.bincount`` over row-offset keys (no loop over examples or rows): O(rows * n) memory,
    and the same summation order for a row whether it is alone or stacked with others.
    """
    keys = np.asarray(keys, dtype=np.int64)
    lead, n = keys.shape[:-1], keys.shape[-1]
    rows = int(np.prod(lead, dtype=np.int64)) if lead else 1
    flat = (keys.reshape(rows, n) + (np.arange(rows, dtype=np.int64) * k)[:, None]).reshape(-1)
    w = None if weights is None else np.broadcast_to(weights, keys.shape).reshape(-1)
    counts = np.bincount(flat, weights=w, minlength=rows * k)
    return counts.reshape(*lead, k).astype(np.float64, copy=False)


def _class_counts(gold: np.ndarray, pred: np.ndarray, k: int):
    """(true positives, gold counts, predicted counts) per class, shape [..., K].

    One histogram of the K*K confusion cells (gold * K + pred) per row; integer counts, so exact.
    """
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    confusion = _grouped_sum(gold * k + pred, k * k).reshape(*gold.shape[:-1], k, k)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    return tp, confusion.sum(axis=-1), confusion.sum(axis=-2)


def _macro_f1(tp: np.ndarray, gold_n: np.ndarray, pred_n: np.ndarray) -> np.ndarray:
    denom = gold_n + pred_n
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return np.mean(f1, axis=-1)


def _recalls(tp: np.ndarray, gold_n: np.ndarray) -> np.ndarray:
    return np.divide(tp, gold_n, out=np.zeros_like(tp), where=gold_n > 0)


def _ece(correct: np.ndarray, conf: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    bins = np.clip(np.floor(conf * ECE_BINS), 0, ECE_BINS - 1).astype(np.int64)
    gaps = _grouped_sum(bins, ECE_BINS, correct - conf)
    return np.sum(np.abs(gaps), axis=-1) / correct.shape[-1]


# --------------------------------------------------------------------------- bootstrap interface


def known_metrics(task: str, labels: Sequence[str] | None = None) -> list[str]:
    """The metric names :func:`metric_statistic` knows for a task."""
    if task == "classification":
        return [*CLASSIFICATION_METRICS, *(f"recall_{lab}" for lab in (labels or []))]
    if task == "generation":
        return list(GENERATION_METRICS)
    raise InputError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


def _resolve(task: str, metric: str, labels: Sequence[str] | None) -> tuple[str, int | None]:
    """(kind, class index) of a metric, or InputError naming the known metrics."""
    known = known_metrics(task, labels)
    if task == "classification":
        if metric.startswith("recall_") or metric == "macro_f1":
            if labels is None:
                raise InputError(f"the class labels are needed to compute {metric}")
            _check_labels(list(labels))
        if metric in CLASSIFICATION_METRICS:
            return metric, None
        if metric.startswith("recall_") and metric in known:
            return "recall", list(labels).index(metric[len("recall_"):])
    elif metric in GENERATION_METRICS:
        return "score", None
    raise InputError(f"unknown {task} metric {metric!r} (known: {', '.join(known)})")


def metric_columns(task: str, metric: str, outcomes: Sequence[dict[str, Any]],
                   labels: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
    """The per-example columns (each shape [n]) that :func:`metric_statistic` needs for ``metric``.

    accuracy: (correct,); macro_f1 and recall_<label>: (gold_index, pred_index);
    ece: (correct, confidence); generation metrics: (per-example score,).
    """
    kind, _ = _resolve(task, metric, labels)
    if task == "classification":
        gold, pred, correct, conf = _classification_arrays(
            outcomes, None if labels is None else len(labels))
        if kind == "accuracy":
            return (correct,)
        if kind == "ece":
            return (correct, conf)
        return (gold, pred)
    if not outcomes:
        raise InputError("no generation outcomes to compute metrics from")
    return (_score_column(outcomes, metric),)


def metric_statistic(task: str, metric: str,
                     labels: Sequence[str] | None = None) -> Callable[..., np.ndarray]:
    """``statistic(*cols, axis=-1)`` computing ``metric`` along ``axis`` of :func:`metric_columns`'s
    columns, for any leading (resample) dimensions. Vectorised: no Python loop over examples."""
    kind, cls = _resolve(task, metric, labels)
    k = len(labels) if labels is not None else 0

    def _last(col, axis):
        col = np.asarray(col)
        return col if axis in (-1, col.ndim - 1) else np.moveaxis(col, axis, -1)

    if kind in ("accuracy", "score"):
        def statistic(values, axis=-1):
            return _mean(_last(values, axis))
    elif kind == "ece":
        def statistic(correct, conf, axis=-1):
            return _ece(_last(correct, axis), _last(conf, axis))
    elif kind == "macro_f1":
        def statistic(gold, pred, axis=-1):
            return _macro_f1(*_class_counts(_last(gold, axis), _last(pred, axis), k))
    else:  # recall of class ``cls``
        def statistic(gold, pred, axis=-1):
            tp, gold_n, _ = _class_counts(_last(gold, axis), _last(pred, axis), k)
            return _recalls(tp, gold_n)[..., cls]
    statistic.__name__ = f"{task}_{metric}"
    return statistic
