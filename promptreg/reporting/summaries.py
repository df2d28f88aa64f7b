"""Markdown summaries of a gate and of an evaluation (``$GITHUB_STEP_SUMMARY``, PR comments, the
``summary.md`` logged to MLflow), and the one wording of a rule, a check and a decision that every
gate rendering (terminal, markdown, JUnit, MLflow description) shares.

Invariants: a gate is rendered from a :class:`GateReport` only, an evaluation from an
:class:`EvalResult` only; a rule's bound is read from ``RuleResult.bound``, never parsed back out of
its explanation.
"""

from __future__ import annotations

import json
from typing import Any

from promptreg.evaluation.results import CheckOutcome, EvalResult, GateReport, MetricDecision, RuleResult
from promptreg.reporting.markdown import MISSING, cell, f3, pct, signed, table

MAX_EXAMPLE_CHARS = 500         # one failing example, as JSON


# ----------------------------------------------------------------------------------------- shared wording


def rule_text(m: MetricDecision, r: RuleResult) -> str:
    """What the rule requires, short: "CI low > -0.020", "CI high < +0.020", "≥ 0.800", "≤ 0.100"."""
    if r.rule == "non_inferiority":
        if m.margin is None:
            return "non-inferiority"
        if m.higher_is_better is False:
            return f"CI high < +{abs(m.margin):.3f}"
        return f"CI low > -{abs(m.margin):.3f}"
    if r.rule in ("min", "max"):
        op = "≥" if r.rule == "min" else "≤"
        return f"{op} {r.bound:.3f}" if r.bound is not None else r.rule
    return r.rule


def rule_state(r: RuleResult) -> str:
    if r.skipped:
        return "SKIP"
    return "PASS" if r.passed else "FAIL"


def only_skipped(m: MetricDecision) -> bool:
    """Every rule of the metric was skipped (non-inferiority without a baseline) and none failed."""
    return bool(m.rules) and all(r.skipped for r in m.rules) and m.passed


def check_message(c: CheckOutcome) -> str:
    if c.cases == 0:
        return f"no cases could be built (max failure rate {c.max_failure_rate:.3f})"
    op = ">" if not c.passed else "<="
    return f"failure rate {c.failure_rate:.3f} ({c.failures}/{c.cases}) {op} max {c.max_failure_rate:.3f}"


def check_rate(c: CheckOutcome) -> str:
    return f"{c.failure_rate:.3f} ({c.failures}/{c.cases})"


def decision_summary(m: MetricDecision) -> str:
    text = f"{m.id}: candidate {f3(m.candidate)}"
    if m.baseline is not None:
        text += f", baseline {f3(m.baseline)}, diff {signed(m.diff)}"
    if m.ci_low is not None or m.ci_high is not None:
        text += f", {pct(m.confidence)} CI [{signed(m.ci_low)}, {signed(m.ci_high)}]"
        if m.ci_method:
            text += f" ({m.ci_method})"
    return text


def example_line(example: Any) -> str:
    try:
        text = json.dumps(example, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(example)
    if len(text) > MAX_EXAMPLE_CHARS:
        text = text[: MAX_EXAMPLE_CHARS - 1] + "…"
    return text


def baseline_text(report: GateReport) -> str:
    """``sentiment:3`` or ``no baseline (production)``."""
    if report.baseline is not None:
        return f"{report.prompt}:{report.baseline}"
    return f"no baseline ({report.against})"


# ----------------------------------------------------------------------------------------- markdown


def _ref(prompt: str, version: int | None) -> str:
    return f"`{prompt}:{version}`"


def check_rows(checks: list[CheckOutcome]) -> list[list[str]]:
    rows = []
    for c in checks:
        if c.cases == 0:
            rate, result = f"{MISSING} (0 cases)", "❌ no cases"
        else:
            rate, result = check_rate(c), "✅ pass" if c.passed else "❌ fail"
        rows.append([cell(c.name), cell(c.type), rate, f"{c.max_failure_rate:.3f}", result])
    return rows


def _metric_row(m: MetricDecision, conf: float | None) -> list[str]:
    ci = MISSING
    if m.ci_low is not None or m.ci_high is not None:
        ci = f"[{signed(m.ci_low)}, {signed(m.ci_high)}]"
        if m.confidence is not None and m.confidence != conf:
            ci += f" ({pct(m.confidence)})"
    rule = "<br>".join(("⏭️ " if r.skipped else ("" if r.passed else "❌ ")) + cell(rule_text(m, r))
                       for r in m.rules) if m.rules else MISSING
    result = "❌ fail" if not m.passed else ("⏭️ skipped" if only_skipped(m) else "✅ pass")
    return [cell(m.dataset), cell(m.metric), f3(m.candidate), f3(m.baseline), signed(m.diff), ci, rule, result]


def _section(title: str, body: list[str]) -> list[str]:
    return [f"### {title}", "", *body, ""]


def gate_markdown(report: GateReport) -> str:
    """A GitHub-flavoured markdown summary of a gate (headline, metrics, checks, McNemar, failures)."""
    head = "✅ Gate passed" if report.passed else "❌ Gate failed"
    if report.baseline is not None:
        vs = f"{_ref(report.prompt, report.baseline)} ({cell(report.against)})"
    else:
        vs = f"no baseline ({cell(report.against)} has no version)"
    lines = [f"## {head}: {_ref(report.prompt, report.candidate)} vs {vs}", "",
             f"Suite **{cell(report.suite_name)}** · {len(report.metrics)} metric(s), "
             f"{len(report.checks)} behavioural check(s)", ""]
    if report.metrics:
        conf = next((m.confidence for m in report.metrics if m.confidence is not None), None)
        headers = ["golden set", "metric", "candidate", "baseline", "diff", f"{pct(conf)} CI", "rule", "result"]
        lines += _section("Metrics", table(headers, [_metric_row(m, conf) for m in report.metrics]))
    if report.checks:
        lines += _section("Behavioural checks", table(["check", "type", "failure rate", "max", "result"],
                                                      check_rows(report.checks)))
    if report.mcnemar:
        lines += _section("McNemar (paired correctness, exact two-sided)", [
            f"- {cell(x.dataset)}: candidate right / baseline wrong **{x.b}**, "
            f"candidate wrong / baseline right **{x.c}**, p = {x.p_value:.4g}" for x in report.mcnemar])
    failures = report.failures()
    if failures:
        lines += _section("Why the gate failed", [f"- {cell(f, limit=None)}" for f in failures])
    if report.notes:
        lines += _section("Notes", [f"- {cell(n, limit=None)}" for n in report.notes])
    lines += ["---", _footer(report.suite_sha256, report.base_model_fingerprint, report.cached, report.seconds,
                             gate_id=report.gate_id, what="gate")]
    return "\n".join(lines) + "\n"


def _footer(suite_sha: str, fingerprint: str, cached: bool, seconds: float, *, gate_id: int | None = None,
            eval_id: int | None = None, what: str) -> str:
    parts = [f"suite sha256 `{cell(suite_sha[:12])}`", f"base model `{cell(fingerprint[:12])}`"]
    if gate_id is not None:
        parts.append(f"gate #{gate_id}")
    if eval_id is not None:
        parts.append(f"eval run #{eval_id}")
    if cached:
        parts.append(f"cached: reused a previous {what} with the same inputs")
    else:
        parts.append(f"computed in {seconds or 0.0:.1f} s (not cached)")
    return "<sub>" + " · ".join(parts) + "</sub>"


def eval_markdown(result: EvalResult) -> str:
    """A GitHub-flavoured markdown summary of ``promptreg eval``: metrics per golden set, checks."""
    lines = [f"## 📊 Evaluation of {_ref(result.prompt, result.version)} on suite **{cell(result.suite_name)}**", "",
             f"Task {cell(result.task)} · sha256 `{result.sha256[:12]}` · "
             f"{len(result.datasets)} golden set(s), {len(result.checks)} behavioural check(s)", ""]
    if result.datasets:
        rows = []
        for d in result.datasets:
            first = True
            for metric, value in d.metrics.items():
                rows.append([cell(d.name) if first else "", str(d.rows) if first else "", cell(metric), f3(value)])
                first = False
            if first:  # no metrics
                rows.append([cell(d.name), str(d.rows), MISSING, MISSING])
        lines += _section("Metrics", table(["golden set", "rows", "metric", "value"], rows))
    if result.checks:
        lines += _section("Behavioural checks", table(["check", "type", "failure rate", "max", "result"],
                                                      check_rows(result.checks)))
    lines += ["---", _footer(result.suite_sha256, result.base_model_fingerprint, result.cached, result.seconds,
                             eval_id=result.eval_run_id, what="evaluation")]
    return "\n".join(lines) + "\n"
