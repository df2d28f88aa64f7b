"""The gate as JUnit XML, for CI test reporters (Jenkins, GitLab, GitHub actions that read JUnit).

One ``<testsuite>`` per gate, one ``<testcase>`` per gated metric (``classname="promptreg.gate.<prompt>.metrics"``,
``name="<golden set>/<metric>"``) and per behavioural check (``...checks``, ``name=<check>``); ``<failure>``
when a rule failed, ``<skipped>`` when every rule of a metric was skipped (non-inferiority without a
baseline). A gate that could not run is one ``<error>`` testcase (:func:`gate_error_junit_xml`).

Invariants: rendered from a :class:`GateReport` only; texts are stripped of the characters XML 1.0
forbids, so the document always parses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from promptreg.evaluation.results import GateReport, MetricDecision
from promptreg.reporting.markdown import xml_safe
from promptreg.reporting.summaries import (
    check_message,
    decision_summary,
    example_line,
    only_skipped,
    rule_state,
    rule_text,
)

MAX_FAILING_EXAMPLES = 5        # failing examples listed per check in the JUnit body
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _set(el: ET.Element, **attrs: Any) -> ET.Element:
    for k, v in attrs.items():
        el.set(k, xml_safe(v))
    return el


def _properties(suite: ET.Element, report: GateReport) -> None:
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
        pairs.append((f"mcnemar.{x.dataset}", f"b={x.b} c={x.c} p={x.p_value:.4g}"))
    for i, note in enumerate(report.notes):
        pairs.append((f"note.{i + 1}", note))
    for name, value in pairs:
        _set(ET.SubElement(props, "property"), name=name, value=value)


def _metric_case(suite: ET.Element, classname: str, m: MetricDecision, state: str) -> None:
    case = _set(ET.SubElement(suite, "testcase"), classname=classname, name=m.id, time="0")
    body = "\n".join(f"[{rule_state(r)}] {r.rule} ({rule_text(m, r)}): {r.explanation}" for r in m.rules)
    if state == "fail":
        message = "; ".join(f"{r.rule}: {r.explanation}" for r in m.rules if not r.passed)
        failed = ",".join(r.rule for r in m.rules if not r.passed) or "gate"
        _set(ET.SubElement(case, "failure"), message=message, type=failed).text = xml_safe(body)
    elif state == "skip":
        _set(ET.SubElement(case, "skipped"), message="; ".join(f"{r.rule}: {r.explanation}" for r in m.rules))
    ET.SubElement(case, "system-out").text = xml_safe(decision_summary(m) + ("\n" + body if body else ""))


def gate_junit_xml(report: GateReport) -> str:
    """The gate as a JUnit XML document (a ``<testsuites>`` root holding one ``<testsuite>``)."""
    metric_cases = [(m, "fail" if not m.passed else ("skip" if only_skipped(m) else "pass")) for m in report.metrics]
    check_cases = [(c, "pass" if c.passed else "fail") for c in report.checks]
    states = [s for _, s in metric_cases] + [s for _, s in check_cases]
    counts = {"tests": str(len(states)), "failures": str(states.count("fail")), "errors": "0",
              "skipped": str(states.count("skip")), "time": f"{max(report.seconds or 0.0, 0.0):.3f}"}
    root = _set(ET.Element("testsuites"), name="promptreg gate", **counts)
    suite = _set(ET.SubElement(root, "testsuite"),
                 name=f"promptreg gate {report.prompt}:{report.candidate} vs {report.against}", **counts)
    if report.created_at:
        _set(suite, timestamp=report.created_at)
    _properties(suite, report)
    for m, state in metric_cases:
        _metric_case(suite, f"promptreg.gate.{report.prompt}.metrics", m, state)
    for c, state in check_cases:
        case = _set(ET.SubElement(suite, "testcase"), classname=f"promptreg.gate.{report.prompt}.checks",
                    name=c.name, time="0")
        message = check_message(c)
        if state == "fail":
            shown = c.failing_examples[:MAX_FAILING_EXAMPLES]
            lines = [f"{c.type} check {c.name}: {message}"]
            if shown:
                lines.append(f"failing examples ({len(shown)} of {c.failures}):")
                lines += [f"  {example_line(ex)}" for ex in shown]
            _set(ET.SubElement(case, "failure"), message=message, type="max_failure_rate").text = xml_safe("\n".join(lines))
        ET.SubElement(case, "system-out").text = xml_safe(f"{c.type} check {c.name}: {message}")
    ET.indent(root)
    return _DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


def gate_error_junit_xml(ref: str, message: str) -> str:
    """A JUnit document that says the gate of ``ref`` could not run (so CI shows why, not an empty report)."""
    message = xml_safe(message)
    root = ET.Element("testsuites", tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name=xml_safe(f"promptreg gate {ref}"), tests="1", failures="0",
                          errors="1", skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname="promptreg.gate", name="gate")
    ET.SubElement(case, "error", message=message[:1000], type="PromptregError").text = message
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
