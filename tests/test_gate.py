"""The promotion gate (evaluation.gate.compare) on hand-built EvalResults: no database, no model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptreg.errors import InputError
from promptreg.evaluation.gate import compare
from promptreg.evaluation.metrics import (
    classification_metrics,
    classification_outcomes,
    generation_metrics,
    generation_outcomes,
)
from promptreg.evaluation.results import CheckOutcome, DatasetEval, EvalResult, GateReport

LABELS = ["neg", "pos"]
N = 400
FAST = dict(n_resamples=1000, seed=0)


def clf_result(correct, *, version=2, conf=None, gold=None, name="golden", suite="s" * 64, base="b" * 64,
               checks=None, extra_sets=()) -> EvalResult:
    """A classification EvalResult whose example i is right iff correct[i] (gold alternates neg/pos)."""
    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    gold = np.arange(n) % 2 if gold is None else np.asarray(gold)
    pred = np.where(correct, gold, 1 - gold)
    conf = np.full(n, 0.8) if conf is None else np.broadcast_to(np.asarray(conf, dtype=float), (n,))
    probs = np.empty((n, 2))
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), 1 - pred] = 1 - conf
    outcomes = classification_outcomes(gold.tolist(), probs, LABELS)
    datasets = [DatasetEval(name, "f" * 64, n, classification_metrics(outcomes, LABELS))]
    all_outcomes = {name: outcomes}
    for extra in extra_sets:
        datasets.append(DatasetEval(extra, "e" * 64, n, classification_metrics(outcomes, LABELS)))
        all_outcomes[extra] = outcomes
    return EvalResult(prompt="sentiment", version=version, sha256=f"{version:x}" * 64, task="classification",
                      suite_name="suite", suite_sha256=suite, base_model_fingerprint=base,
                      datasets=datasets, checks=list(checks or []), outcomes=all_outcomes,
                      eval_run_id=100 + version)


def first_k(k, n=N):
    out = np.zeros(n, dtype=bool)
    out[:k] = True
    return out


def acc_threshold(margin=0.02, **extra):
    return {"golden": {"accuracy": {"margin": margin, **extra}}}


def decision(report, metric="accuracy"):
    (d,) = [m for m in report.metrics if m.metric == metric]
    return d


def rule(dec, name):
    (r,) = [r for r in dec.rules if r.rule == name]
    return r


# (a) clearly better candidate
def test_clearly_better_candidate_passes():
    base = clf_result(first_k(280), version=1)          # accuracy 0.70
    cand = clf_result(first_k(320), version=2)          # 0.80, right on a superset
    report = compare(cand, base, acc_threshold(), against="production", labels=LABELS, **FAST)
    assert report.passed and report.failures() == []
    d = decision(report)
    assert (d.candidate, d.baseline) == (pytest.approx(0.8), pytest.approx(0.7))
    assert d.diff == pytest.approx(0.1) and d.ci_method == "BCa" and d.confidence == 0.95
    assert 0.0 < d.ci_low < 0.1 < d.ci_high
    r = rule(d, "non_inferiority")
    assert r.passed and not r.skipped
    assert "candidate 0.800 vs baseline 0.700: diff +0.100, 95% CI [" in r.explanation
    assert "> -margin -0.020" in r.explanation
    assert (report.prompt, report.candidate, report.baseline, report.against) == ("sentiment", 2, 1, "production")
    assert report.candidate_sha256 == cand.sha256 and report.baseline_sha256 == base.sha256
    assert (report.suite_name, report.suite_sha256, report.base_model_fingerprint) == ("suite", "s" * 64, "b" * 64)
    assert (report.candidate_eval_id, report.baseline_eval_id) == (102, 101)
    # (e) McNemar reported: b = 40 (cand right, base wrong), c = 0 -> p = 2 * 0.5**40
    (mc,) = report.mcnemar
    assert (mc.dataset, mc.b, mc.c) == ("golden", 40, 0)
    assert mc.p_value == pytest.approx(2 * 0.5 ** 40)


# (b) clearly worse candidate
def test_clearly_worse_candidate_fails_with_numbers():
    base = clf_result(first_k(320), version=1)
    cand = clf_result(first_k(280), version=2)
    report = compare(cand, base, acc_threshold(), against="production", labels=LABELS, **FAST)
    assert not report.passed
    d = decision(report)
    r = rule(d, "non_inferiority")
    assert not r.passed
    assert r.explanation.startswith("candidate 0.700 vs baseline 0.800: diff -0.100, 95% CI [")
    assert f"lower bound {d.ci_low:.3f} <= -margin -0.020" in r.explanation
    assert d.ci_high < 0
    (line,) = report.failures()
    assert line.startswith("golden/accuracy non_inferiority: candidate 0.700 vs baseline 0.800")
    (mc,) = report.mcnemar
    assert (mc.b, mc.c) == (0, 40)


# (c) identical outcomes
def test_equal_candidate_passes_with_margin_fails_without():
    base = clf_result(first_k(280), version=1)
    cand = clf_result(first_k(280), version=2)
    ok = compare(cand, base, acc_threshold(0.02), against="production", labels=LABELS, **FAST)
    assert ok.passed
    d = decision(ok)
    assert (d.diff, d.ci_low, d.ci_high, d.ci_method) == (0.0, 0.0, 0.0, "degenerate")
    assert "lower bound 0.000 > -margin -0.020" in rule(d, "non_inferiority").explanation
    strict = compare(cand, base, acc_threshold(0.0), against="production", labels=LABELS, **FAST)
    assert not strict.passed
    assert "lower bound 0.000 <= -margin 0.000" in rule(decision(strict), "non_inferiority").explanation
    assert strict.mcnemar[0].p_value == 1.0


# (d) equal accuracy, different per-example outcomes
def test_equal_accuracy_half_swapped():
    base_correct = first_k(280)
    cand_correct = base_correct.copy()
    cand_correct[:60] = False          # 60 right -> wrong
    cand_correct[280:340] = True       # 60 wrong -> right
    base = clf_result(base_correct, version=1)
    cand = clf_result(cand_correct, version=2)
    strict = compare(cand, base, acc_threshold(0.0), against="production", labels=LABELS, **FAST)
    d = decision(strict)
    assert d.diff == pytest.approx(0.0) and d.ci_method == "BCa"
    assert d.ci_low < 0 < d.ci_high
    assert not strict.passed
    generous = compare(cand, base, acc_threshold(0.15), against="production", labels=LABELS, **FAST)
    assert generous.passed
    (mc,) = generous.mcnemar
    assert (mc.b, mc.c) == (60, 60) and mc.p_value == pytest.approx(1.0)


# (h) min / max rules
def test_min_max_rules():
    base = clf_result(first_k(280), version=1)
    cand = clf_result(first_k(320), version=2)
    th = {"golden": {"accuracy": {"min": 0.85, "margin": 0.02},
                     "ece": {"max": 0.05},
                     "macro_f1": {"min": 0.5, "max": 0.99}}}
    report = compare(cand, base, th, against="production", labels=LABELS, **FAST)
    acc = decision(report, "accuracy")
    assert [r.rule for r in acc.rules] == ["min", "non_inferiority"]
    assert not rule(acc, "min").passed and rule(acc, "min").explanation == "candidate 0.800 < min 0.850"
    assert rule(acc, "non_inferiority").passed
    ece = decision(report, "ece")      # conf 0.8 everywhere, accuracy 0.8 -> ECE 0
    assert ece.higher_is_better is False
    assert rule(ece, "max").passed and rule(ece, "max").explanation == "candidate 0.000 <= max 0.050"
    assert ece.ci_low is None          # no margin: no CI computed
    mf1 = decision(report, "macro_f1")
    assert [r.rule for r in mf1.rules] == ["min", "max"] and mf1.passed
    assert not report.passed
    assert report.failures() == ["golden/accuracy min: candidate 0.800 < min 0.850"]
    # metrics computed but not listed are not gated
    assert {m.metric for m in report.metrics} == {"accuracy", "ece", "macro_f1"}
    over = compare(cand, base, {"golden": {"accuracy": {"max": 0.75}}}, against="3", labels=LABELS, **FAST)
    assert rule(decision(over), "max").explanation == "candidate 0.800 > max 0.750"


# (i) lower-is-better ECE margin
def test_ece_margin_is_upper_bound():
    correct = first_k(280)
    calibrated = clf_result(correct, version=1, conf=0.7)      # ECE 0
    rng = np.random.default_rng(0)
    overconfident = clf_result(correct, version=2, conf=rng.uniform(0.93, 0.99, N))   # ECE ~0.26
    th = {"golden": {"ece": {"margin": 0.02}}}
    worse = compare(overconfident, calibrated, th, against="production", labels=LABELS, **FAST)
    d = decision(worse, "ece")
    assert d.higher_is_better is False and d.diff > 0.2
    r = rule(d, "non_inferiority")
    assert not r.passed
    assert f"upper bound {d.ci_high:.3f} >= margin 0.020" in r.explanation
    better = compare(calibrated, overconfident, th, against="production", labels=LABELS, **FAST)
    d2 = decision(better, "ece")
    assert d2.diff < -0.2 and d2.ci_high < 0.02
    assert rule(d2, "non_inferiority").passed
    assert "< margin 0.020" in rule(d2, "non_inferiority").explanation


# (j) no baseline
def test_no_baseline_skips_non_inferiority():
    cand = clf_result(first_k(320), version=1)
    report = compare(cand, None, acc_threshold(0.02, min=0.5), against="production", labels=LABELS, **FAST)
    assert report.passed
    d = decision(report)
    r = rule(d, "non_inferiority")
    assert r.skipped and r.passed
    assert r.explanation == "no baseline (production is not set): non-inferiority not tested"
    assert d.baseline is None and d.ci_low is None and d.diff is None
    assert report.baseline is None and report.baseline_sha256 is None and report.mcnemar == []
    assert any("non-inferiority not tested" in n for n in report.notes)


# (k) mismatched examples and other input errors
def test_mismatched_examples_raise():
    cand = clf_result(first_k(280), version=2)
    other_gold = clf_result(first_k(280), version=1, gold=(np.arange(N) + 1) % 2)
    with pytest.raises(InputError, match="candidate and baseline were evaluated on different examples"):
        compare(cand, other_gold, acc_threshold(), against="production", labels=LABELS, **FAST)
    shorter = clf_result(first_k(280, n=300), version=1)
    with pytest.raises(InputError, match="different examples"):
        compare(cand, shorter, acc_threshold(), against="production", labels=LABELS, **FAST)


def test_input_errors():
    cand = clf_result(first_k(280), version=2)
    base = clf_result(first_k(280), version=1)
    with pytest.raises(InputError, match="different suite"):
        compare(cand, clf_result(first_k(280), version=1, suite="t" * 64), acc_threshold(),
                against="production", labels=LABELS)
    with pytest.raises(InputError, match="different base model"):
        compare(cand, clf_result(first_k(280), version=1, base="c" * 64), acc_threshold(),
                against="production", labels=LABELS)
    with pytest.raises(InputError, match="labels are required"):
        compare(cand, base, acc_threshold(), against="production")
    with pytest.raises(InputError, match="golden set 'nope' was not evaluated"):
        compare(cand, base, {"nope": {"accuracy": {"margin": 0.0}}}, against="production", labels=LABELS)
    with pytest.raises(InputError, match="metric 'bleu' was not computed"):
        compare(cand, base, {"golden": {"bleu": {"margin": 0.0}}}, against="production", labels=LABELS)
    with pytest.raises(InputError, match="unknown threshold key"):
        compare(cand, base, {"golden": {"accuracy": {"margn": 0.0}}}, against="production", labels=LABELS)
    with pytest.raises(InputError, match="must be a finite number"):
        compare(cand, base, acc_threshold(float("nan")), against="production", labels=LABELS)
    with pytest.raises(InputError) as exc:
        compare(cand, base, acc_threshold(), against="production")
    assert "\n" not in str(exc.value)


# (l) determinism for a seed
def test_deterministic_for_seed():
    base_correct = first_k(280)
    cand_correct = base_correct.copy()
    cand_correct[:60] = False
    cand_correct[280:330] = True
    base = clf_result(base_correct, version=1)
    cand = clf_result(cand_correct, version=2)
    th = {"golden": {"accuracy": {"margin": 0.05}, "macro_f1": {"margin": 0.05}}}

    def run(seed):
        out = compare(cand, base, th, against="production", labels=LABELS, n_resamples=1000, seed=seed)
        d = out.to_dict()
        d.pop("seconds")
        return d

    assert run(3) == run(3)

    def bounds(d):
        return [(m["ci_low"], m["ci_high"]) for m in d["metrics"]]

    assert bounds(run(3)) != bounds(run(4))


def test_checks_failures_and_round_trip():
    good = CheckOutcome("negation", "mft", cases=50, failures=2, max_failure_rate=0.1)
    bad = CheckOutcome("typos", "invariance", cases=40, failures=10, max_failure_rate=0.1)
    base = clf_result(first_k(280), version=1, extra_sets=["holdout"])
    cand = clf_result(first_k(320), version=2, checks=[good, bad], extra_sets=["holdout", "extra"])
    report = compare(cand, base, acc_threshold(), against="production", labels=LABELS, **FAST)
    assert report.checks == [good, bad]
    assert not report.passed
    assert report.failures() == ["check typos (invariance) failure rate 0.250 (10/40) > max 0.100"]
    # McNemar for every classification golden set, gated or not
    assert [m.dataset for m in report.mcnemar] == ["golden", "holdout"]
    assert report.notes == ["McNemar not computed for extra: per-example outcomes missing"]
    again = GateReport.from_dict(report.to_dict())
    assert again.to_dict() == report.to_dict()


def gen_result(preds, refs, *, version):
    outcomes = generation_outcomes(preds, refs)
    return EvalResult(prompt="qa", version=version, sha256=f"{version:x}" * 64, task="generation",
                      suite_name="qa-suite", suite_sha256="q" * 64, base_model_fingerprint="b" * 64,
                      datasets=[DatasetEval("answers", "f" * 64, len(preds), generation_metrics(outcomes))],
                      checks=[], outcomes={"answers": outcomes})


def test_generation_gate():
    refs = [f"answer number {i}" for i in range(200)]
    base_preds = [r if i % 2 == 0 else "something else" for i, r in enumerate(refs)]
    cand_preds = [r if i % 4 != 3 else "something else" for i, r in enumerate(refs)]
    base = gen_result(base_preds, refs, version=1)
    cand = gen_result(cand_preds, refs, version=2)
    th = {"answers": {"exact_match": {"margin": 0.02}, "token_f1": {"margin": 0.02},
                      "length_ratio": {"min": 0.5, "max": 1.5}}}
    report = compare(cand, base, th, against="production", **FAST)
    assert report.passed, report.failures()
    em = decision(report, "exact_match")
    assert em.diff == pytest.approx(0.25) and em.ci_low > 0
    lr = decision(report, "length_ratio")
    assert lr.higher_is_better is None and [r.rule for r in lr.rules] == ["min", "max"]
    assert report.mcnemar == []
    with pytest.raises(InputError, match="only min/max"):
        compare(cand, base, {"answers": {"length_ratio": {"margin": 0.1}}}, against="production", **FAST)
    worse = compare(base, cand, th, against="production", **FAST)
    assert not worse.passed
    assert {line.split(" ")[0] for line in worse.failures()} == {"answers/exact_match", "answers/token_f1"}
    assert all(math.isfinite(m.ci_low) for m in worse.metrics if m.ci_low is not None)
