"""Reports for people and CI: JUnit XML, GitHub-flavoured markdown, a comparison figure, an MLflow table.

Everything here reads the plain dataclasses of :mod:`promptreg.evaluation.results` and returns text,
bytes or a matplotlib ``Figure``; nothing is written anywhere except by
:func:`write_github_step_summary`. No torch/mlflow import; matplotlib is imported only inside
:func:`comparison_figure` / :func:`figure_png_bytes` and always through the Agg canvas (no pyplot, no
global state).

- :func:`gate_junit_xml`: one ``<testsuite>`` per gate, one ``<testcase>`` per gated metric
  (``classname="promptreg.gate.<prompt>.metrics"``, ``name="<golden set>/<metric>"``) and per
  behavioural check (``...checks``, ``name=<check>``); ``<failure>`` when a rule failed, ``<skipped>``
  when every rule of a metric was skipped (non-inferiority without a baseline). Texts are stripped of
  the characters XML 1.0 forbids, so the document always parses.
- :func:`gate_markdown` / :func:`eval_markdown`: summaries for ``$GITHUB_STEP_SUMMARY`` / PR comments.
- :func:`write_github_step_summary`: append a summary to ``$GITHUB_STEP_SUMMARY`` when it is set.
- :func:`comparison_figure` / :func:`figure_png_bytes`: candidate vs baseline bars, CI of the difference.
- :func:`eval_table`: per-example golden outcomes as columns (for ``mlflow.log_table``).
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from promptreg.evaluation.results import CheckOutcome, EvalResult, GateReport, MetricDecision, RuleResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "comparison_figure",
    "eval_markdown",
    "eval_table",
    "figure_png_bytes",
    "gate_junit_xml",
    "gate_markdown",
    "write_github_step_summary",
]

MAX_FAILING_EXAMPLES = 5        # failing examples listed per check in the JUnit body
MAX_EXAMPLE_CHARS = 500         # one failing example, as JSON, in the JUnit body
MAX_TEXT_CHARS = 500            # the text column of eval_table
MAX_CELL_CHARS = 300            # one markdown table cell

# XML 1.0 Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_XML_FORBIDDEN = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"


# ------------------------------------------------------------------------------------------ helpers


def xml_safe(text: Any) -> str:
    """``str(text)`` without the characters XML 1.0 cannot carry (controls, lone surrogates, U+FFFE/F)."""
    return _XML_FORBIDDEN.sub("", "" if text is None else str(text))


def _f3(x: float | None) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.3f}"


def _signed(x: float | None) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:+.3f}"


def _pct(confidence: float | None) -> str:
    c = 0.95 if confidence is None else confidence
    return f"{c * 100:g}%"


def _threshold(rule: str, explanation: str) -> float | None:
    """The bound of a ``min``/``max`` rule, read from its explanation ("0.750 < min 0.800" -> 0.8).

    Tries "min 0.8" / "minimum: 0.8" first, else the last number of the explanation."""
    m = re.search(rf"\b{rule}(?:imum)?\b\s*[:=]?\s*{_NUMBER}", explanation, re.IGNORECASE)
    if m is None:
        numbers = re.findall(_NUMBER, explanation)
        if not numbers:
            return None
        return float(numbers[-1])
    return float(m.group(1))


def rule_text(m: MetricDecision, r: RuleResult) -> str:
    """What the rule requires, short: "CI low > -0.020", "CI high < +0.020", "≥ 0.800", "≤ 0.100"."""
    if r.rule == "non_inferiority":
        if m.margin is None:
            return "non-inferiority"
        if m.higher_is_better is False:
            return f"CI high < +{abs(m.margin):.3f}"
        return f"CI low > -{abs(m.margin):.3f}"
    if r.rule in ("min", "max"):
        bound = _threshold(r.rule, r.explanation or "")
        op = "≥" if r.rule == "min" else "≤"
        return f"{op} {bound:.3f}" if bound is not None else r.rule
    return r.rule


def _rule_state(r: RuleResult) -> str:
    if r.skipped:
        return "SKIP"
    return "PASS" if r.passed else "FAIL"


def _only_skipped(m: MetricDecision) -> bool:
    return bool(m.rules) and all(r.skipped for r in m.rules) and m.passed


def _check_message(c: CheckOutcome) -> str:
    if c.cases == 0:
        return f"no cases could be built (max failure rate {c.max_failure_rate:.3f})"
    op = ">" if not c.passed else "<="
    return (f"failure rate {c.failure_rate:.3f} ({c.failures}/{c.cases}) {op} "
            f"max {c.max_failure_rate:.3f}")


def _example_line(example: Any) -> str:
    try:
        text = json.dumps(example, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(example)
    if len(text) > MAX_EXAMPLE_CHARS:
        text = text[: MAX_EXAMPLE_CHARS - 1] + "…"
    return text


def _mcnemar_text(x) -> str:
    return f"b={x.b} c={x.c} p={x.p_value:.4g}"


# -------------------------------------------------------------------------------------------- JUnit


def _set(el: ET.Element, **attrs: Any) -> ET.Element:
    for k, v in attrs.items():
        el.set(k, xml_safe(v))
    return el


def gate_junit_xml(report: GateReport) -> str:
    """The gate as a JUnit XML document (a ``<testsuites>`` root holding one ``<testsuite>``)."""
    metric_cases: list[tuple[MetricDecision, str]] = []   # (decision, "pass" | "fail" | "skip")
    for m in report.metrics:
        state = "fail" if not m.passed else ("skip" if _only_skipped(m) else "pass")
        metric_cases.append((m, state))
    check_cases = [(c, "pass" if c.passed else "fail") for c in report.checks]
    states = [s for _, s in metric_cases] + [s for _, s in check_cases]
    counts = {
        "tests": str(len(states)),
        "failures": str(states.count("fail")),
        "errors": "0",
        "skipped": str(states.count("skip")),
        "time": f"{max(report.seconds or 0.0, 0.0):.3f}",
    }
    suite_name = f"promptreg gate {report.prompt}:{report.candidate} vs {report.against}"

    root = _set(ET.Element("testsuites"), name="promptreg gate", **counts)
    suite = _set(ET.SubElement(root, "testsuite"), name=suite_name, **counts)
    if report.created_at:
        _set(suite, timestamp=report.created_at)

    props = _set(ET.SubElement(suite, "properties"))
    pairs: list[tuple[str, Any]] = [
        ("prompt", report.prompt),
        ("candidate.version", report.candidate),
        ("candidate.sha256", report.candidate_sha256),
        ("baseline.against", report.against),
        ("baseline.version", "none" if report.baseline is None else report.baseline),
        ("baseline.sha256", report.baseline_sha256 or "none"),
        ("suite.name", report.suite_name),
        ("suite.sha256", report.suite_sha256),
        ("base_model.fingerprint", report.base_model_fingerprint),
        ("cached", "true" if report.cached else "false"),
        ("passed", "true" if report.passed else "false"),
    ]
    if report.gate_id is not None:
        pairs.append(("gate.id", report.gate_id))
    for x in report.mcnemar:
        pairs.append((f"mcnemar.{x.dataset}", _mcnemar_text(x)))
    for i, note in enumerate(report.notes):
        pairs.append((f"note.{i + 1}", note))
    for name, value in pairs:
        _set(ET.SubElement(props, "property"), name=name, value=value)

    metric_class = f"promptreg.gate.{report.prompt}.metrics"
    for m, state in metric_cases:
        case = _set(ET.SubElement(suite, "testcase"), classname=metric_class, name=m.id, time="0")
        body = "\n".join(f"[{_rule_state(r)}] {r.rule} ({rule_text(m, r)}): {r.explanation}"
                         for r in m.rules)
        if state == "fail":
            message = "; ".join(f"{r.rule}: {r.explanation}" for r in m.rules if not r.passed)
            el = _set(ET.SubElement(case, "failure"), message=message, type=_failure_type(m))
            el.text = xml_safe(body)
        elif state == "skip":
            message = "; ".join(f"{r.rule}: {r.explanation}" for r in m.rules)
            _set(ET.SubElement(case, "skipped"), message=message)
        out = ET.SubElement(case, "system-out")
        out.text = xml_safe(_decision_summary(m) + ("\n" + body if body else ""))

    check_class = f"promptreg.gate.{report.prompt}.checks"
    for c, state in check_cases:
        case = _set(ET.SubElement(suite, "testcase"), classname=check_class, name=c.name, time="0")
        message = _check_message(c)
        if state == "fail":
            el = _set(ET.SubElement(case, "failure"), message=message, type="max_failure_rate")
            shown = c.failing_examples[:MAX_FAILING_EXAMPLES]
            lines = [f"{c.type} check {c.name}: {message}"]
            if shown:
                lines.append(f"failing examples ({len(shown)} of {c.failures}):")
                lines += [f"  {_example_line(ex)}" for ex in shown]
            el.text = xml_safe("\n".join(lines))
        out = ET.SubElement(case, "system-out")
        out.text = xml_safe(f"{c.type} check {c.name}: {message}")

    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _failure_type(m: MetricDecision) -> str:
    return ",".join(r.rule for r in m.rules if not r.passed) or "gate"


def _decision_summary(m: MetricDecision) -> str:
    text = f"{m.id}: candidate {_f3(m.candidate)}"
    if m.baseline is not None:
        text += f", baseline {_f3(m.baseline)}, diff {_signed(m.diff)}"
    if m.ci_low is not None or m.ci_high is not None:
        text += f", {_pct(m.confidence)} CI [{_signed(m.ci_low)}, {_signed(m.ci_high)}]"
        if m.ci_method:
            text += f" ({m.ci_method})"
    return text


# ----------------------------------------------------------------------------------------- markdown


def md_escape(text: Any, *, limit: int | None = MAX_CELL_CHARS) -> str:
    """Text made safe for one markdown table cell / list item: one line, pipes escaped, no HTML tags."""
    s = xml_safe(text)
    s = re.sub(r"[\r\n\t]+", " ", s)
    s = re.sub(r"&(?=#?\w+;)", "&amp;", s)               # keep "&" readable unless it forms an entity
    s = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", s)           # keep "<=" readable, defuse tags / comments
    s = s.replace("|", "\\|")
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _ref(prompt: str, version: int | None) -> str:
    return f"`{prompt}:{version}`"


def _check_rows(checks: list[CheckOutcome]) -> list[list[str]]:
    rows = []
    for c in checks:
        if c.cases == 0:
            rate, result = "— (0 cases)", "❌ no cases"
        else:
            rate = f"{c.failure_rate:.3f} ({c.failures}/{c.cases})"
            result = "✅ pass" if c.passed else "❌ fail"
        rows.append([md_escape(c.name), md_escape(c.type), rate, f"{c.max_failure_rate:.3f}", result])
    return rows


def gate_markdown(report: GateReport) -> str:
    """A GitHub-flavoured markdown summary of a gate (headline, metrics, checks, McNemar, failures)."""
    lines: list[str] = []
    head = "✅ Gate passed" if report.passed else "❌ Gate failed"
    if report.baseline is not None:
        vs = f"{_ref(report.prompt, report.baseline)} ({md_escape(report.against)})"
    else:
        vs = f"no baseline ({md_escape(report.against)} has no version)"
    lines.append(f"## {head}: {_ref(report.prompt, report.candidate)} vs {vs}")
    lines.append("")
    lines.append(f"Suite **{md_escape(report.suite_name)}** · {len(report.metrics)} metric(s), "
                 f"{len(report.checks)} behavioural check(s)")
    lines.append("")

    if report.metrics:
        conf = next((m.confidence for m in report.metrics if m.confidence is not None), None)
        headers = ["golden set", "metric", "candidate", "baseline", "diff", f"{_pct(conf)} CI", "rule",
                   "result"]
        rows = []
        for m in report.metrics:
            ci = "—"
            if m.ci_low is not None or m.ci_high is not None:
                ci = f"[{_signed(m.ci_low)}, {_signed(m.ci_high)}]"
                if m.confidence is not None and m.confidence != conf:
                    ci += f" ({_pct(m.confidence)})"
            if m.rules:
                rule = "<br>".join(
                    ("⏭️ " if r.skipped else ("" if r.passed else "❌ ")) + md_escape(rule_text(m, r))
                    for r in m.rules)
            else:
                rule = "—"
            if not m.passed:
                result = "❌ fail"
            elif _only_skipped(m):
                result = "⏭️ skipped"
            else:
                result = "✅ pass"
            rows.append([md_escape(m.dataset), md_escape(m.metric), _f3(m.candidate), _f3(m.baseline),
                         _signed(m.diff), ci, rule, result])
        lines.append("### Metrics")
        lines.append("")
        lines += _table(headers, rows)
        lines.append("")

    if report.checks:
        lines.append("### Behavioural checks")
        lines.append("")
        lines += _table(["check", "type", "failure rate", "max", "result"], _check_rows(report.checks))
        lines.append("")

    if report.mcnemar:
        lines.append("### McNemar (paired correctness, exact two-sided)")
        lines.append("")
        for x in report.mcnemar:
            lines.append(f"- {md_escape(x.dataset)}: candidate right / baseline wrong **{x.b}**, "
                         f"candidate wrong / baseline right **{x.c}**, p = {x.p_value:.4g}")
        lines.append("")

    failures = report.failures()
    if failures:
        lines.append("### Why the gate failed")
        lines.append("")
        lines += [f"- {md_escape(f, limit=None)}" for f in failures]
        lines.append("")

    if report.notes:
        lines.append("### Notes")
        lines.append("")
        lines += [f"- {md_escape(n, limit=None)}" for n in report.notes]
        lines.append("")

    lines.append("---")
    lines.append(_footer(report.suite_sha256, report.base_model_fingerprint, report.cached,
                         report.seconds, gate_id=report.gate_id, what="gate"))
    return "\n".join(lines) + "\n"


def _footer(suite_sha: str, fingerprint: str, cached: bool, seconds: float, *, gate_id: int | None = None,
            eval_id: int | None = None, what: str) -> str:
    parts = [f"suite sha256 `{md_escape(suite_sha[:12])}`", f"base model `{md_escape(fingerprint[:12])}`"]
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
    lines = [f"## 📊 Evaluation of {_ref(result.prompt, result.version)} on suite "
             f"**{md_escape(result.suite_name)}**", ""]
    lines.append(f"Task {md_escape(result.task)} · sha256 `{result.sha256[:12]}` · "
                 f"{len(result.datasets)} golden set(s), {len(result.checks)} behavioural check(s)")
    lines.append("")
    if result.datasets:
        lines.append("### Metrics")
        lines.append("")
        rows = []
        for d in result.datasets:
            first = True
            for metric, value in d.metrics.items():
                rows.append([md_escape(d.name) if first else "", str(d.rows) if first else "",
                             md_escape(metric), _f3(value)])
                first = False
            if first:  # no metrics
                rows.append([md_escape(d.name), str(d.rows), "—", "—"])
        lines += _table(["golden set", "rows", "metric", "value"], rows)
        lines.append("")
    if result.checks:
        lines.append("### Behavioural checks")
        lines.append("")
        lines += _table(["check", "type", "failure rate", "max", "result"], _check_rows(result.checks))
        lines.append("")
    lines.append("---")
    lines.append(_footer(result.suite_sha256, result.base_model_fingerprint, result.cached, result.seconds,
                         eval_id=result.eval_run_id, what="evaluation"))
    return "\n".join(lines) + "\n"


def write_github_step_summary(markdown: str, env: Mapping[str, str] = os.environ) -> bool:
    """Append ``markdown`` to the file named by ``$GITHUB_STEP_SUMMARY`` (created if missing).

    Returns True when it wrote; False when the variable is unset/empty or the file cannot be written
    (a summary is a convenience: it never makes a gate fail)."""
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")  # a blank line keeps consecutive summaries apart
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------- figure


def comparison_figure(candidate: EvalResult, baseline: EvalResult | None,
                      decisions: list[MetricDecision] | None = None) -> Figure:
    """Grouped bars per (golden set, metric): candidate vs baseline (omitted when None).

    With ``decisions``, a second, smaller panel under the bars shows each gated metric's difference
    (candidate - baseline) with its paired confidence interval as an error bar, the zero line and the
    non-inferiority bound; a red marker means the metric failed the gate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs: list[tuple[str, str]] = [(d.name, k) for d in candidate.datasets for k in d.metrics]
    by_id = {m.id: m for m in decisions or []}
    for m in decisions or []:
        if (m.dataset, m.metric) not in pairs:
            pairs.append((m.dataset, m.metric))

    def value(result: EvalResult | None, ds: str, metric: str) -> float | None:
        if result is None:
            return None
        for d in result.datasets:
            if d.name == ds:
                v = d.metrics.get(metric)
                return None if v is None else float(v)
        return None

    cand_vals = [value(candidate, ds, k) for ds, k in pairs]
    base_vals = [value(baseline, ds, k) for ds, k in pairs]
    for i, (ds, k) in enumerate(pairs):  # fall back on the decisions' numbers
        m = by_id.get(f"{ds}/{k}")
        if m is not None:
            if cand_vals[i] is None:
                cand_vals[i] = m.candidate
            if base_vals[i] is None and baseline is not None:
                base_vals[i] = m.baseline

    n = max(len(pairs), 1)
    show_ci = decisions is not None
    fig = Figure(figsize=(max(6.0, 1.1 * n + 2.0), 6.5 if show_ci else 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    if show_ci:
        ax, ax_ci = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    else:
        ax, ax_ci = fig.subplots(1, 1), None

    xs = list(range(len(pairs)))
    width = 0.38 if baseline is not None else 0.6
    c_off = -width / 2 if baseline is not None else 0.0
    finite = [v for v in cand_vals + base_vals if v is not None and math.isfinite(v)]
    top = max([1.0] + finite) * 1.15
    bottom = min([0.0] + finite)
    cand_label = f"candidate {candidate.prompt}:{candidate.version}"
    bars = ax.bar([x + c_off for x in xs], [0.0 if v is None else v for v in cand_vals], width,
                  label=cand_label, color="#4C72B0")
    _label_bars(ax, bars, cand_vals)
    if baseline is not None:
        bars = ax.bar([x + width / 2 for x in xs], [0.0 if v is None else v for v in base_vals], width,
                      label=f"baseline {baseline.prompt}:{baseline.version}", color="#A0A0A0")
        _label_bars(ax, bars, base_vals)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("value")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    labels = [f"{ds}\n{k}" for ds, k in pairs]
    if not pairs:
        ax.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax.transAxes)

    vs = f"{baseline.prompt}:{baseline.version}" if baseline is not None else "no baseline"
    fig.suptitle(f"{candidate.prompt}:{candidate.version} vs {vs} — suite {candidate.suite_name}",
                 fontsize=11)

    target = ax
    if ax_ci is not None:
        target = ax_ci
        ax_ci.axhline(0.0, color="black", linewidth=0.8)
        drew = bound_labelled = False
        for x, (ds, k) in zip(xs, pairs, strict=True):
            m = by_id.get(f"{ds}/{k}")
            if m is None or m.diff is None:
                continue
            color = "#2CA02C" if m.passed else "#D62728"
            lo = m.diff - m.ci_low if m.ci_low is not None else 0.0
            hi = m.ci_high - m.diff if m.ci_high is not None else 0.0
            ax_ci.errorbar([x], [m.diff], yerr=[[max(lo, 0.0)], [max(hi, 0.0)]], fmt="o", color=color,
                           capsize=4)
            if m.margin is not None and m.higher_is_better is not None:
                bound = -abs(m.margin) if m.higher_is_better else abs(m.margin)
                ax_ci.hlines(bound, x - 0.4, x + 0.4, colors="#D62728", linestyles="dashed", linewidth=1,
                             label=None if bound_labelled else "non-inferiority bound")
                bound_labelled = True
            drew = True
        ax_ci.set_ylabel(f"diff, {_pct(next((m.confidence for m in decisions or [] if m.confidence), None))} CI",
                         fontsize=8)
        ax_ci.grid(axis="y", alpha=0.3)
        if bound_labelled:
            ax_ci.legend(loc="best", fontsize=7, frameon=False)
        if not drew:
            ax_ci.set_yticks([])
            ax_ci.text(0.5, 0.5, "no baseline: no paired difference to show", ha="center", va="center",
                       transform=ax_ci.transAxes, fontsize=9)
    target.set_xticks(xs)
    target.set_xticklabels(labels, fontsize=8)
    if pairs:
        target.set_xlim(-0.6, len(pairs) - 0.4)
    return fig


def _label_bars(ax, bars, values: list[float | None]) -> None:
    for bar, v in zip(bars, values, strict=True):
        text = "n/a" if v is None else f"{v:.3f}"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG by the Agg canvas."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -------------------------------------------------------------------------------------------- table

_CLASSIFICATION_COLUMNS = ("dataset", "index", "text", "gold", "prediction", "correct", "confidence")
_GENERATION_COLUMNS = ("dataset", "index", "text", "reference", "output", "exact_match", "token_f1",
                       "rouge_l", "length_ratio")


def _truncate(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def eval_table(result: EvalResult) -> dict[str, list]:
    """Golden-set outcomes as equal-length columns, one row per example (for ``mlflow.log_table``).

    Classification: dataset, index, text, gold, prediction, correct, confidence. Generation: dataset,
    index, text, reference, output, exact_match, token_f1, rouge_l, length_ratio. ``text`` is "" when
    the outcome has none, truncated to 500 characters otherwise."""
    generation = result.task == "generation"
    columns = _GENERATION_COLUMNS if generation else _CLASSIFICATION_COLUMNS
    table: dict[str, list] = {c: [] for c in columns}
    for ds, outcomes in result.outcomes.items():
        for pos, o in enumerate(outcomes):
            row: dict[str, Any] = {"dataset": ds, "index": o.get("index", pos), "text": _truncate(o.get("text"))}
            if generation:
                row.update(reference=_truncate(o.get("reference")), output=_truncate(o.get("output")),
                           exact_match=o.get("exact_match"), token_f1=o.get("token_f1"),
                           rouge_l=o.get("rouge_l"), length_ratio=o.get("length_ratio"))
            else:
                gold, pred = o.get("gold"), o.get("pred")
                row.update(gold="" if gold is None else str(gold), prediction="" if pred is None else str(pred),
                           correct=o.get("correct"), confidence=o.get("confidence"))
            for c in columns:
                table[c].append(row[c])
    return table
