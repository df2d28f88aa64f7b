"""Plain-text renderings for the terminal: aligned tables and the gate verdict.

Invariants: pure functions returning lines (the CLI prints them); the gate is rendered from a
:class:`GateReport` only, with the wording of :mod:`promptreg.reporting.summaries`.
"""

from __future__ import annotations

from typing import Any

from promptreg.evaluation.results import CheckOutcome, GateReport


def text_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns aligned with spaces, a dashed rule under the header; None prints as empty."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for i, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def checks_table(checks: list[CheckOutcome]) -> list[str]:
    return text_table(["check", "type", "failure rate", "max", "result"],
                      [[c.name, c.type, f"{c.failure_rate:.3f} ({c.failures}/{c.cases})", fmt(c.max_failure_rate),
                        "pass" if c.passed else "FAIL"] for c in checks])


def gate_text(report: GateReport) -> list[str]:
    """The gate verdict: a headline, a table of the gated metrics, the checks, McNemar, notes and one
    line per failed rule."""
    base = f"{report.prompt}:{report.baseline}" if report.baseline is not None else f"no baseline ({report.against})"
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"gate {verdict}: {report.prompt}:{report.candidate} vs {base}  suite {report.suite_name} "
             f"({report.suite_sha256[:12]})" + ("  [cached]" if report.cached else "")]
    rows = []
    for m in report.metrics:
        ci = f"[{fmt(m.ci_low)}, {fmt(m.ci_high)}]" if m.ci_low is not None else ""
        rules = ", ".join(f"{r.rule}{'' if r.passed else '!'}" for r in m.rules if not r.skipped)
        rows.append([m.id, fmt(m.candidate), fmt(m.baseline), fmt(m.diff), ci,
                     m.margin if m.margin is not None else "", rules, "pass" if m.passed else "FAIL"])
    if rows:
        lines += text_table(["metric", "candidate", "baseline", "diff", "95% CI", "margin", "rules", "result"], rows)
    if report.checks:
        lines += checks_table(report.checks)
    for mc in report.mcnemar:
        lines.append(f"McNemar exact ({mc.dataset}): candidate-only correct {mc.b}, baseline-only correct {mc.c}, "
                     f"p = {mc.p_value:.4g}")
    lines += [f"note: {note}" for note in report.notes]
    lines += [f"failed: {failure}" for failure in report.failures()]
    return lines


SWEEP_COLUMNS = ["trial", "method", "tokens", "init", "lr", "metric", "steps", "seconds", "parameters", "status"]


def sweep_table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """A sweep's trials (services.sweep rows, best first): the metric and the cost of each."""
    return text_table([c if c != "metric" else metric for c in SWEEP_COLUMNS],
                      [[r["key"], r["method"], r["num_virtual_tokens"], r["init"] or "-", f"{r['lr']:g}",
                        fmt(r["metric"], 4), r["steps"], f"{r['seconds']:.1f}", r["parameters"], r["status"]]
                       for r in rows])


def sweep_markdown(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """The same table as :func:`sweep_table` in Markdown (docs, closing notes)."""
    head = [c if c != "metric" else metric for c in SWEEP_COLUMNS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in (
            r["key"], r["method"], r["num_virtual_tokens"], r["init"] or "-", f"{r['lr']:g}", fmt(r["metric"], 4),
            r["steps"], f"{r['seconds']:.1f}", r["parameters"], r["status"])) + " |")
    return out
