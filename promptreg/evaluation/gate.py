"""The promotion gate: compare a candidate's EvalResult with a baseline's, rule by rule.

Pure function: no database, no model. See :func:`compare` and the rule definitions in
:mod:`promptreg.evaluation.results`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from promptreg.errors import InputError
from promptreg.evaluation.metrics import metric_columns, metric_statistic
from promptreg.evaluation.results import (
    EvalResult,
    GateReport,
    McNemar,
    MetricDecision,
    RuleResult,
    metric_direction,
)
from promptreg.evaluation.stats import mcnemar_exact, paired_bootstrap_ci

THRESHOLD_KEYS = ("margin", "min", "max")


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _threshold(dataset: str, metric: str, spec: Any) -> dict[str, float | None]:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise InputError(f"threshold for {dataset}/{metric} must be a mapping with margin/min/max")
    unknown = sorted(set(spec) - set(THRESHOLD_KEYS))
    if unknown:
        raise InputError(f"unknown threshold key(s) {', '.join(map(str, unknown))} for {dataset}/{metric} "
                         f"(known: {', '.join(THRESHOLD_KEYS)})")
    out: dict[str, float | None] = {}
    for key in THRESHOLD_KEYS:
        value = spec.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"threshold {key} for {dataset}/{metric} must be a finite number, "
                                 f"got {value!r}")
            value = float(value)
        out[key] = value
    return out


def _example_key(outcome: dict[str, Any]) -> Any:
    return outcome.get("gold", outcome.get("reference"))


def _paired_outcomes(candidate: EvalResult, baseline: EvalResult, name: str):
    cand = candidate.outcomes.get(name)
    base = baseline.outcomes.get(name)
    for who, res, outs in (("candidate", candidate, cand), ("baseline", baseline, base)):
        if not outs:
            raise InputError(f"no per-example outcomes stored for golden set {name!r} of the {who} "
                             f"(version {res.version}): cannot run a paired comparison")
    if len(cand) != len(base) or any(_example_key(c) != _example_key(b) for c, b in zip(cand, base,
                                                                                        strict=True)):
        raise InputError(f"candidate and baseline were evaluated on different examples (golden set {name!r})")
    return cand, base


def _bound_rules(value: float, th: dict[str, float | None]) -> list[RuleResult]:
    rules = []
    if th["min"] is not None:
        ok = value >= th["min"]
        rules.append(RuleResult("min", ok, f"candidate {_num(value)} {'>=' if ok else '<'} min {_num(th['min'])}",
                                bound=float(th["min"])))
    if th["max"] is not None:
        ok = value <= th["max"]
        rules.append(RuleResult("max", ok, f"candidate {_num(value)} {'<=' if ok else '>'} max {_num(th['max'])}",
                                bound=float(th["max"])))
    return rules


def compare(candidate: EvalResult, baseline: EvalResult | None, thresholds: dict[str, dict[str, dict]], *,
            against: str, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
            labels: list[str] | None = None, across_base_models: bool = False) -> GateReport:
    """Gate ``candidate`` against ``baseline`` (None: no baseline, non-inferiority is skipped).

    ``across_base_models``: the baseline was evaluated on ITS OWN base model and the candidate on
    another (a migration to a new base model): the fingerprints may differ, the examples are still
    paired one by one (same golden sets, same order).

    ``thresholds``: golden-set name -> metric name -> {"margin", "min", "max"} (each optional/None).
    Every listed metric is gated with rules ``min``, ``max`` and, when ``margin`` is set,
    ``non_inferiority`` (paired-bootstrap CI of candidate - baseline: lower bound > -margin for
    higher-is-better metrics, upper bound < margin for lower-is-better ones, both strict).
    McNemar's exact test is reported (not gated) for every classification golden set when a baseline
    exists. ``labels`` (the class labels, in index order) are required for classification.
    """
    started = time.perf_counter()
    task = candidate.task
    if task == "classification" and not labels:
        raise InputError("the class labels are required to gate a classification prompt")
    if not isinstance(thresholds, dict):
        raise InputError("thresholds must map golden-set names to metric thresholds")
    if baseline is not None:
        if baseline.suite_sha256 != candidate.suite_sha256:
            raise InputError(f"baseline was evaluated on a different suite (sha256 {baseline.suite_sha256[:12]} "
                             f"vs candidate {candidate.suite_sha256[:12]})")
        if baseline.base_model_fingerprint != candidate.base_model_fingerprint and not across_base_models:
            raise InputError(f"baseline was evaluated with a different base model (fingerprint "
                             f"{baseline.base_model_fingerprint[:12]} vs candidate "
                             f"{candidate.base_model_fingerprint[:12]})")
        if baseline.task != task:
            raise InputError(f"baseline task {baseline.task!r} differs from candidate task {task!r}")

    pct = f"{confidence * 100:g}%"
    decisions: list[MetricDecision] = []
    paired_cache: dict[str, tuple[list, list]] = {}
    for ds_name, metrics in thresholds.items():
        try:
            cand_ds = candidate.dataset(ds_name)
        except KeyError:
            known = ", ".join(d.name for d in candidate.datasets) or "none"
            raise InputError(f"golden set {ds_name!r} was not evaluated (evaluated: {known})") from None
        if not isinstance(metrics, dict):
            raise InputError(f"thresholds for golden set {ds_name!r} must map metric names to thresholds")
        for metric, spec in metrics.items():
            th = _threshold(ds_name, metric, spec)
            if metric not in cand_ds.metrics:
                raise InputError(f"metric {metric!r} was not computed for golden set {ds_name!r} "
                                 f"(computed: {', '.join(sorted(cand_ds.metrics))})")
            direction = metric_direction(metric)
            if direction is None and th["margin"] is not None:
                raise InputError(f"{ds_name}/{metric} has no better direction: only min/max thresholds are "
                                 f"allowed, not a margin")
            value = float(cand_ds.metrics[metric])
            decision = MetricDecision(dataset=ds_name, metric=metric, candidate=value, margin=th["margin"],
                                      higher_is_better=direction, rules=_bound_rules(value, th))
            if th["margin"] is not None:
                decision.rules.append(_non_inferiority(decision, candidate, baseline, task, labels,
                                                       paired_cache, against=against, confidence=confidence,
                                                       n_resamples=n_resamples, seed=seed, pct=pct))
            decisions.append(decision)

    mcnemar: list[McNemar] = []
    notes: list[str] = []
    if baseline is not None and task == "classification":
        for ds in candidate.datasets:
            if "accuracy" not in ds.metrics:
                continue
            if not candidate.outcomes.get(ds.name) or not baseline.outcomes.get(ds.name):
                notes.append(f"McNemar not computed for {ds.name}: per-example outcomes missing")
                continue
            if ds.name not in paired_cache:
                paired_cache[ds.name] = _paired_outcomes(candidate, baseline, ds.name)
            cand_out, base_out = paired_cache[ds.name]
            (cand_right,) = metric_columns(task, "accuracy", cand_out, labels)
            (base_right,) = metric_columns(task, "accuracy", base_out, labels)
            b, c, p = mcnemar_exact(cand_right, base_right)
            mcnemar.append(McNemar(dataset=ds.name, b=b, c=c, p_value=p))
    if baseline is None:
        notes.append(f"no baseline ({against} is not set): non-inferiority not tested")

    return GateReport(
        prompt=candidate.prompt,
        candidate=candidate.version,
        candidate_sha256=candidate.sha256,
        baseline=None if baseline is None else baseline.version,
        baseline_sha256=None if baseline is None else baseline.sha256,
        against=against,
        suite_name=candidate.suite_name,
        suite_sha256=candidate.suite_sha256,
        base_model_fingerprint=candidate.base_model_fingerprint,
        metrics=decisions,
        checks=list(candidate.checks),
        mcnemar=mcnemar,
        notes=notes,
        candidate_eval_id=candidate.eval_run_id,
        baseline_eval_id=None if baseline is None else baseline.eval_run_id,
        seconds=time.perf_counter() - started,
    )


def _non_inferiority(decision: MetricDecision, candidate: EvalResult, baseline: EvalResult | None,
                     task: str, labels: list[str] | None, paired_cache: dict, *, against: str,
                     confidence: float, n_resamples: int, seed: int, pct: str) -> RuleResult:
    ds_name, metric, margin = decision.dataset, decision.metric, decision.margin
    assert margin is not None
    bound = -margin + 0.0 if decision.higher_is_better else margin
    if baseline is None:
        return RuleResult("non_inferiority", True,
                          f"no baseline ({against} is not set): non-inferiority not tested", skipped=True,
                          bound=bound)
    if ds_name not in paired_cache:
        try:
            baseline.dataset(ds_name)
        except KeyError:
            raise InputError(f"golden set {ds_name!r} was not evaluated for the baseline "
                             f"(version {baseline.version})") from None
        paired_cache[ds_name] = _paired_outcomes(candidate, baseline, ds_name)
    cand_out, base_out = paired_cache[ds_name]
    statistic = metric_statistic(task, metric, labels)
    ci = paired_bootstrap_ci(statistic, metric_columns(task, metric, cand_out, labels),
                             metric_columns(task, metric, base_out, labels),
                             confidence=confidence, n_resamples=n_resamples, seed=seed)
    base_value = baseline.dataset(ds_name).metrics.get(metric)
    if base_value is None:
        base_value = float(statistic(*metric_columns(task, metric, base_out, labels)))
    decision.baseline = float(base_value)
    decision.diff, decision.ci_low, decision.ci_high = ci.diff, ci.low, ci.high
    decision.confidence, decision.ci_method = ci.confidence, ci.method
    head = (f"candidate {_num(decision.candidate)} vs baseline {_num(decision.baseline)}: "
            f"diff {ci.diff:+.3f}, {pct} CI [{ci.low:.3f}, {ci.high:.3f}]"
            + (" (degenerate: every resample gives the same difference)" if ci.method == "degenerate" else ""))
    if decision.higher_is_better:
        ok = ci.low > -margin
        tail = f"lower bound {ci.low:.3f} {'>' if ok else '<='} -margin {-margin + 0.0:.3f}"
    else:
        ok = ci.high < margin
        tail = f"upper bound {ci.high:.3f} {'<' if ok else '>='} margin {margin:.3f}"
    return RuleResult("non_inferiority", ok, f"{head}; {tail}", bound=bound)
