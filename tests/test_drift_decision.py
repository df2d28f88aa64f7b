"""promptreg.evaluation.drift: what a drift check decides, on hand-built numbers (no model, no database)."""

from __future__ import annotations

import numpy as np
import pytest

from promptreg.errors import InputError
from promptreg.evaluation import drift as d

LABELS = ["negative", "positive"]


def _probs(pred: list[int]) -> np.ndarray:
    return np.array([[0.9, 0.1] if p == 0 else [0.1, 0.9] for p in pred])


def test_performance_drift_is_decided_on_the_confidence_interval():
    gold = ["negative", "positive"] * 50
    right = [i % 2 for i in range(100)]
    perfect = d.performance(_probs(right), gold, LABELS, "accuracy", recorded=0.9, margin=0.05, n_resamples=200)
    assert perfect["value"] == 1.0 and perfect["drift"] is False and "upper bound >=" in perfect["explain"]
    half = [0] * 100                                                    # always "negative": accuracy 0.5
    bad = d.performance(_probs(half), gold, LABELS, "accuracy", recorded=0.9, margin=0.05, n_resamples=200)
    assert bad["value"] == 0.5 and bad["ci_high"] < 0.85 and bad["drift"] is True
    assert bad["explain"].endswith("-> drift") and bad["rows"] == 100 and bad["estimated"] is False
    nothing = d.performance(_probs(half), gold, LABELS, "accuracy", recorded=None, margin=0.05, n_resamples=200)
    assert nothing["drift"] is False and "nothing recorded" in nothing["explain"]
    with pytest.raises(InputError, match=r"labels \['neutral'\] that toy:1 does not know"):
        d.performance(_probs([0]), ["neutral"], LABELS, "accuracy", 0.9, 0.05, who="toy:1")


def test_lower_is_better_metrics_drift_upwards():
    v = d.performance_verdict("ece", 0.30, 0.25, 0.35, recorded=0.05, margin=0.05, confidence=0.95, higher=False)
    assert v["drift"] is True and "lower bound > 0.100" in v["explain"]
    v = d.performance_verdict("ece", 0.06, 0.02, 0.09, recorded=0.05, margin=0.05, confidence=0.95, higher=False)
    assert v["drift"] is False


def test_decision_and_action():
    assert d.decide(data_drift=False, perf_drift=False, incompatible=False, holds=False) == "none"
    assert d.decide(data_drift=True, perf_drift=False, incompatible=False, holds=False) == "drift"
    assert d.decide(data_drift=False, perf_drift=True, incompatible=False, holds=False) == "drift"
    assert d.decide(data_drift=False, perf_drift=False, incompatible=True, holds=False) == "incompatible"
    assert d.decide(data_drift=True, perf_drift=False, incompatible=True, holds=True) == "drift"
    assert d.decide(data_drift=False, perf_drift=False, incompatible=True, holds=True) == "none"
    assert d.planned_action("none", "rollback") == ("none", None)
    assert d.planned_action("drift", "report") == ("report", None)
    assert d.planned_action("drift", "flag") == ("flag", "degraded")
    assert d.planned_action("incompatible", "rollback") == ("flag", None)      # already flagged incompatible
    measured = {"drift": False, "recorded": 0.8}
    assert d.holds_on_new_base(runs=True, labelled=True, perf=measured) is True
    assert d.holds_on_new_base(runs=True, labelled=False, perf=measured) is False
    assert d.holds_on_new_base(runs=True, labelled=True, perf={"drift": False, "recorded": None}) is False
    assert d.holds_on_new_base(runs=False, labelled=True, perf=measured) is False


def test_outcome_summary_and_json():
    out = d.DriftOutcome("toy", "production", 2, "fresh.jsonl", "f" * 64, 40, True, "training data", 100,
                         "a" * 64, "b" * 64, tests=[{"name": "labels", "drift": True}, {"name": "lengths", "drift": False}],
                         performance={"metric": "accuracy", "drift": True}, decision="incompatible")
    assert out.summary() == "labels, accuracy below recorded, base model changed"
    assert out.drift and out.to_dict()["drift"] is True
    assert d.DriftOutcome("t", None, 1, "u", "f", 1, False, "r", 1, "a", "a").summary() == "none"
