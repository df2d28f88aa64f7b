"""What a drift check decides, as pure functions of numbers (no database, no model): the performance
verdict on labelled fresh data, the decision (none | drift | incompatible) and the action the policy
takes, and the :class:`DriftOutcome` that carries it all (``promptreg.services.drift`` gathers the
numbers, :mod:`promptreg.evaluation.drift_stats` computes the data-drift tests).

Invariants: performance drift is decided on the confidence interval, never on the point value: for a
higher-is-better metric the upper bound must fall below ``recorded - margin``; with nothing recorded
there is no performance drift. A version on another base model is ``incompatible`` unless it was
measured, on labelled data, to hold its recorded performance there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from promptreg.errors import InputError


@dataclass
class DriftOutcome:
    prompt: str
    alias: str | None
    version: int
    data_uri: str
    data_fingerprint: str
    rows: int
    labelled: bool
    reference: str
    reference_rows: int
    base_model_fingerprint: str          # the deployed base model the check ran with
    version_base_model_fingerprint: str
    tests: list[dict] = field(default_factory=list)          # DriftTest.to_dict() + "explain"
    performance: dict | None = None
    decision: str = "none"               # none | drift | incompatible
    action: str = "none"                 # none | report | flag | rollback
    action_detail: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report_id: int | None = None
    report_sha256: str | None = None
    mlflow_run_id: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    source: str = "file"                 # file | s3 | captured (serving traffic)
    labelled_rows: int = 0               # rows with a true label (captured: joined from /feedback)
    window: dict | None = None           # captured: {"since", "until", "objects", "versions"}

    @property
    def drift(self) -> bool:
        return self.decision != "none"

    def summary(self) -> str:
        """What drifted, in a few words ("input length (tokens), accuracy below recorded")."""
        parts = [t["name"] for t in self.tests if t["drift"]]
        if self.performance and self.performance.get("drift"):
            parts.append(f"{self.performance['metric']} below recorded")
        if self.decision == "incompatible":
            parts.append("base model changed")
        return ", ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift
        return out


def performance(probs: Any, gold: list[str], labels: list[str], metric: str, recorded: float | None, margin: float,
                *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                who: str = "the version") -> dict[str, Any]:
    """The metric of predictions ``probs`` (rows x labels) on labelled fresh rows, with a BCa bootstrap
    CI, against the value recorded at promotion: ``{"metric", "value", "ci_low", "ci_high", "drift",
    "explain", ...}``."""
    import numpy as np
    from scipy import stats

    from promptreg.evaluation.metrics import (
        classification_metrics,
        classification_outcomes,
        metric_columns,
        metric_statistic,
    )
    from promptreg.evaluation.results import metric_direction

    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise InputError(f"fresh data has labels {unknown} that {who} does not know ({labels})")
    outcomes = classification_outcomes([labels.index(g) for g in gold], probs, labels)
    value = classification_metrics(outcomes, labels)[metric]
    cols = metric_columns("classification", metric, outcomes, labels)
    stat = metric_statistic("classification", metric, labels)
    if len({tuple(c) for c in zip(*cols, strict=True)}) == 1 or len(gold) < 2:
        low = high = float(value)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(cols, lambda *c, axis=-1: stat(*c, axis=axis), paired=True, vectorized=True,
                                  method="BCa", confidence_level=confidence, n_resamples=n_resamples,
                                  random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            low = high = float(value)
    out = {"metric": metric, "value": float(value), "ci_low": low, "ci_high": high, "confidence": confidence,
           "recorded": recorded, "margin": margin, "rows": len(gold), "estimated": False}
    return {**out, **performance_verdict(metric, float(value), low, high, recorded, margin, confidence,
                                         higher=metric_direction(metric) is not False)}


def performance_verdict(metric: str, value: float, low: float, high: float, recorded: float | None, margin: float,
                        confidence: float, *, higher: bool = True) -> dict[str, Any]:
    """``{"drift", "explain"}``: drift when the CI lies beyond the recorded value by more than the margin."""
    if recorded is None:
        return {"drift": False, "explain": f"{metric} {value:.3f} [{low:.3f}, {high:.3f}] on fresh data; nothing "
                                           "recorded at promotion to compare with"}
    if higher:
        drift = high < recorded - margin
        return {"drift": drift, "explain": (
            f"{metric} {value:.3f}, {confidence:.0%} CI [{low:.3f}, {high:.3f}] vs recorded "
            f"{recorded:.3f}: upper bound {'<' if drift else '>='} {recorded - margin:.3f} "
            f"(recorded - margin {margin})" + (" -> drift" if drift else ""))}
    drift = low > recorded + margin
    return {"drift": drift, "explain": (
        f"{metric} {value:.3f}, CI [{low:.3f}, {high:.3f}] vs recorded {recorded:.3f}: lower "
        f"bound {'>' if drift else '<='} {recorded + margin:.3f}" + (" -> drift" if drift else ""))}


def holds_on_new_base(*, runs: bool, labelled: bool, perf: dict | None) -> bool:
    """Whether a version checked on another base model may stay active: it runs there, the fresh data is
    labelled, and its measured performance did not drift from a recorded value."""
    return bool(runs and labelled and perf is not None and not perf.get("drift")
                and perf.get("recorded") is not None)


def decide(*, data_drift: bool, perf_drift: bool, incompatible: bool, holds: bool) -> str:
    """none | drift | incompatible."""
    if incompatible and not holds:
        return "incompatible"
    if incompatible:
        return "drift" if data_drift else "none"
    return "drift" if (data_drift or perf_drift) else "none"


def planned_action(decision: str, policy_action: str) -> tuple[str, str | None]:
    """(action, status to flag the version with): nothing without drift; ``report`` only reports; a
    ``flag``/``rollback`` policy flags a drifted version ``degraded`` (``incompatible`` is set already).
    A rollback policy starts as ``flag``: the move happens only when a previous holder passes."""
    if decision == "none":
        return "none", None
    if policy_action == "report":
        return "report", None
    return "flag", "degraded" if decision == "drift" else None
