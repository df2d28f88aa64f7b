"""Per-example outcomes, aggregate metrics, vectorised bootstrap statistics and paired statistics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from promptreg.errors import InputError
from promptreg.evaluation.metrics import (
    classification_metrics,
    classification_outcomes,
    exact_match,
    generation_metrics,
    generation_outcomes,
    length_ratio,
    metric_columns,
    metric_statistic,
    normalize_answer,
    rouge_l,
    token_f1,
)
from promptreg.evaluation.stats import PairedCI, mcnemar_exact, paired_bootstrap_ci

LABELS = ["a", "b"]
# gold, probs -> pred, conf, correct:
#   0 [0.95 0.05] -> a 0.95 right   | 1 [0.95 0.05] -> a 0.95 wrong | 1 [0.45 0.55] -> b 0.55 right
#   0 [0.55 0.45] -> a 0.55 right   | 0 [1.0 0.0]   -> a 1.0 right
HAND_GOLD = [0, 1, 1, 0, 0]
HAND_PROBS = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45], [1.0, 0.0]])


def hand_outcomes(labels=LABELS):
    probs = HAND_PROBS
    if len(labels) > 2:
        probs = np.hstack([probs, np.zeros((len(probs), len(labels) - 2))])
    return classification_outcomes(HAND_GOLD, probs, labels, texts=[f"t{i}" for i in range(5)])


def random_outcomes(n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = [f"c{j}" for j in range(k)]
    gold = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) * 2
    logits[np.arange(n), gold] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[:5] = np.eye(k)[gold[:5]]          # a few with confidence exactly 1.0
    return classification_outcomes(gold.tolist(), probs, labels), labels


# ------------------------------------------------------------------ classification


def test_classification_outcomes_shape():
    out = hand_outcomes()
    assert out[1] == {"index": 1, "gold": "b", "pred": "a", "gold_index": 1, "pred_index": 0,
                      "confidence": 0.95, "probs": [0.95, 0.05], "correct": False, "text": "t1"}
    assert [o["correct"] for o in out] == [True, False, True, True, True]
    no_text = classification_outcomes([0], np.array([[0.1234567891, 0.8765432109]]), LABELS)
    assert "text" not in no_text[0]
    assert no_text[0]["probs"] == [0.123457, 0.876543]
    assert no_text[0]["pred"] == "b" and no_text[0]["confidence"] == 0.8765432109


def test_classification_metrics_hand():
    m = classification_metrics(hand_outcomes(), LABELS)
    assert m["accuracy"] == pytest.approx(0.8)
    # class a: tp 3, gold 3, pred 4 -> F1 6/7; class b: tp 1, gold 2, pred 1 -> F1 2/3
    assert m["macro_f1"] == pytest.approx((6 / 7 + 2 / 3) / 2)
    assert m["recall_a"] == pytest.approx(1.0)
    assert m["recall_b"] == pytest.approx(0.5)
    # bin 14: (1-.95) + (0-.95) + (1-1.0) = -0.9 ; bin 8: 2 * (1-.55) = 0.9 -> (0.9 + 0.9) / 5
    assert m["ece"] == pytest.approx(0.36)
    assert set(m) == {"accuracy", "macro_f1", "recall_a", "recall_b", "ece"}


def test_absent_class_counts_as_zero_f1_and_recall():
    labels = ["a", "b", "c"]
    m = classification_metrics(hand_outcomes(labels), labels)
    assert m["macro_f1"] == pytest.approx((6 / 7 + 2 / 3 + 0.0) / 3)
    assert m["recall_c"] == 0.0
    assert m["accuracy"] == pytest.approx(0.8)


def _reference_metrics(outcomes, labels):
    """Plain-Python reference implementation (loops), independent of the vectorised kernels."""
    n = len(outcomes)
    out = {"accuracy": sum(o["correct"] for o in outcomes) / n}
    f1s = []
    for j, label in enumerate(labels):
        tp = sum(1 for o in outcomes if o["gold_index"] == j and o["pred_index"] == j)
        g = sum(1 for o in outcomes if o["gold_index"] == j)
        p = sum(1 for o in outcomes if o["pred_index"] == j)
        out[f"recall_{label}"] = tp / g if g else 0.0
        f1s.append(2 * tp / (g + p) if g + p else 0.0)
    out["macro_f1"] = sum(f1s) / len(f1s)
    ece = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        members = [o for o in outcomes if lo <= o["confidence"] < hi or (b == 14 and o["confidence"] == 1.0)]
        ece += abs(sum(float(o["correct"]) - o["confidence"] for o in members))
    out["ece"] = ece / n
    return out


def test_classification_metrics_match_reference():
    outcomes, labels = random_outcomes()
    got = classification_metrics(outcomes, labels)
    ref = _reference_metrics(outcomes, labels)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k


def test_classification_input_errors():
    with pytest.raises(InputError, match="no classification outcomes"):
        classification_metrics([], LABELS)
    with pytest.raises(InputError, match="columns"):
        classification_outcomes([0], np.array([[0.5, 0.3, 0.2]]), LABELS)
    with pytest.raises(InputError, match="gold"):
        classification_outcomes([0, 1], np.array([[0.5, 0.5]]), LABELS)
    with pytest.raises(InputError, match="gold label indices"):
        classification_outcomes([2], np.array([[0.5, 0.5]]), LABELS)


# ------------------------------------------------------------------ generation


def test_normalize_and_em():
    assert normalize_answer("  The  Cat, sat!  on AN old mat. ") == "cat sat on old mat"
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("cats", "cat") == 0.0


def test_token_f1_hand():
    # "cat sat on mat" vs "cat on mat": 3 common, P 3/4, R 1 -> 6/7
    assert token_f1("The cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    assert token_f1("", "the") == 1.0          # both normalise to empty
    assert token_f1("", "dog") == 0.0
    assert token_f1("dog", "") == 0.0
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)   # Counter overlap: a, b -> 2 of 3 each


def test_rouge_l_and_length_ratio_hand():
    # tokens [the cat sat] vs [the cat was here]: LCS 2, P 2/3, R 1/2 -> F 4/7
    assert rouge_l("the cat sat", "the cat was here") == pytest.approx(4 / 7)
    assert rouge_l("x y z", "x y z") == pytest.approx(1.0)
    assert length_ratio("a b c", "x y") == 1.5
    assert length_ratio("a", "") == 1.0
    assert length_ratio("", "x y") == 0.0


def test_generation_outcomes_and_metrics():
    out = generation_outcomes(["The cat sat", "dog"], ["the cat was here", "Dog."], texts=["q1", "q2"])
    # token F1: "cat sat" vs "cat was here": 1 common, P 1/2, R 1/3 -> 0.4
    assert out[0] == {"index": 0, "output": "The cat sat", "reference": "the cat was here",
                      "exact_match": 0.0, "token_f1": pytest.approx(0.4),
                      "rouge_l": pytest.approx(4 / 7), "length_ratio": 0.75, "text": "q1"}
    assert out[1]["exact_match"] == 1.0 and out[1]["token_f1"] == 1.0
    m = generation_metrics(out)
    assert m["exact_match"] == 0.5
    assert m["rouge_l"] == pytest.approx((4 / 7 + 1.0) / 2)
    assert m["length_ratio"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["token_f1"] == pytest.approx((0.4 + 1.0) / 2)
    with pytest.raises(InputError):
        generation_metrics([])
    with pytest.raises(InputError, match="2 predictions but 1 references"):
        generation_outcomes(["a", "b"], ["a"])


# ------------------------------------------------------------------ vectorised statistics


def _gen_outcomes(n=60, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "a"]
    preds = [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(n)]
    refs = [" ".join(rng.choice(words, rng.integers(1, 5))) for _ in range(n)]
    return generation_outcomes(preds, refs)


def test_statistic_equals_metric_and_rowwise():
    outcomes, labels = random_outcomes()
    gen = _gen_outcomes()
    cases = [("classification", outcomes, labels, classification_metrics(outcomes, labels)),
             ("generation", gen, None, generation_metrics(gen))]
    rng = np.random.default_rng(5)
    for task, outs, labs, full in cases:
        n = len(outs)
        idx = rng.integers(0, n, size=(40, n))
        for metric, value in full.items():
            cols = metric_columns(task, metric, outs, labs)
            stat = metric_statistic(task, metric, labs)
            assert float(stat(*cols)) == value, metric                      # exact on full data
            stacked = stat(*[c[idx] for c in cols], axis=-1)
            assert stacked.shape == (40,)
            rows = np.array([stat(*[c[i] for c in cols]) for i in idx])
            np.testing.assert_array_equal(stacked, rows)                     # 2-D == row by row
            deeper = stat(*[c[idx.reshape(4, 10, n)] for c in cols])
            np.testing.assert_array_equal(deeper.reshape(-1), rows)          # any leading dims
            first_axis = stat(*[c[idx].T for c in cols], axis=0)
            np.testing.assert_array_equal(first_axis, rows)


def test_metric_columns_shapes():
    outcomes, labels = random_outcomes(n=20)
    assert len(metric_columns("classification", "accuracy", outcomes, labels)) == 1
    assert len(metric_columns("classification", "ece", outcomes, labels)) == 2
    gold, pred = metric_columns("classification", "macro_f1", outcomes, labels)
    assert gold.tolist() == [o["gold_index"] for o in outcomes]
    assert pred.tolist() == [o["pred_index"] for o in outcomes]
    assert metric_columns("classification", "recall_c1", outcomes, labels)[0].tolist() == gold.tolist()


def test_unknown_metric_names_known_ones():
    with pytest.raises(InputError, match=r"unknown classification metric 'bleu'.*accuracy.*recall_c0"):
        metric_statistic("classification", "bleu", ["c0", "c1"])
    with pytest.raises(InputError, match=r"unknown generation metric 'accuracy'.*token_f1"):
        metric_statistic("generation", "accuracy")
    with pytest.raises(InputError, match="recall_zzz"):
        metric_statistic("classification", "recall_zzz", ["c0"])
    with pytest.raises(InputError, match="unknown task"):
        metric_statistic("ranking", "accuracy")
    with pytest.raises(InputError, match="labels"):
        metric_statistic("classification", "macro_f1", None)


# ------------------------------------------------------------------ paired statistics


def _acc_cols(correct):
    return (np.asarray(correct, dtype=float),)


ACC = metric_statistic("classification", "accuracy")


def test_paired_bootstrap_clear_difference_and_determinism():
    rng = np.random.default_rng(3)
    base = (rng.random(400) < 0.7).astype(float)
    cand = base.copy()
    cand[np.flatnonzero(base == 0)[:40]] = 1.0          # +0.10
    ci = paired_bootstrap_ci(ACC, _acc_cols(cand), _acc_cols(base), n_resamples=1000, seed=7)
    assert ci.method == "BCa" and ci.confidence == 0.95
    assert ci.diff == pytest.approx(0.1)
    assert 0.0 < ci.low < 0.1 < ci.high < 0.2
    again = paired_bootstrap_ci(ACC, _acc_cols(cand), _acc_cols(base), n_resamples=1000, seed=7)
    assert again == ci
    other = paired_bootstrap_ci(ACC, _acc_cols(cand), _acc_cols(base), n_resamples=1000, seed=8)
    assert (other.low, other.high) != (ci.low, ci.high)


def test_paired_bootstrap_degenerate_without_warnings():
    same = (np.arange(50) % 3 == 0).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = paired_bootstrap_ci(ACC, _acc_cols(same), _acc_cols(same), n_resamples=500)
    assert ci == PairedCI(diff=0.0, low=0.0, high=0.0, confidence=0.95, method="degenerate")


def test_paired_bootstrap_percentile_fallback():
    # fraction of distinct values: 1.0 on the full data, < 1 on (almost) every resample -> BCa's bias
    # correction is infinite (NaN interval), the percentile interval is still defined.
    def distinct(x, axis=-1):
        s = np.sort(x, axis=axis)
        return (1 + np.count_nonzero(np.diff(s, axis=axis), axis=axis)) / s.shape[axis]

    x = np.arange(12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = paired_bootstrap_ci(distinct, (x,), (np.zeros(12),), n_resamples=300, seed=1)
    assert ci.method == "percentile"
    assert ci.diff == pytest.approx(1 - 1 / 12)
    assert math.isfinite(ci.low) and math.isfinite(ci.high) and ci.low <= ci.high < ci.diff


def test_paired_bootstrap_input_errors():
    with pytest.raises(InputError, match="same examples"):
        paired_bootstrap_ci(ACC, _acc_cols([1, 0, 1]), _acc_cols([1, 0]))
    with pytest.raises(InputError, match="at least 2"):
        paired_bootstrap_ci(ACC, _acc_cols([1]), _acc_cols([0]))


def test_mcnemar_hand_case():
    cand = [1] * 10 + [0] * 2 + [1] * 5 + [0] * 3     # b = 10, c = 2, 5 both right, 3 both wrong
    base = [0] * 10 + [1] * 2 + [1] * 5 + [0] * 3
    b, c, p = mcnemar_exact(cand, base)
    assert (b, c) == (10, 2)
    closed = 2 * sum(math.comb(12, k) for k in range(0, 3)) / 2 ** 12    # 2 * (1 + 12 + 66) / 4096
    assert p == pytest.approx(closed) == pytest.approx(sps.binomtest(10, 12).pvalue)
    assert p == pytest.approx(0.03857421875)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == (0, 0, 1.0)
    assert mcnemar_exact([True, False], [False, True])[2] == 1.0
