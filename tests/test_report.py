"""Reports: JUnit XML, markdown, GITHUB_STEP_SUMMARY, the comparison figure, the MLflow table."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from promptreg.evaluation.results import (
    CheckOutcome,
    DatasetEval,
    EvalResult,
    GateReport,
    McNemar,
    MetricDecision,
    RuleResult,
)
from promptreg.reporting.figures import comparison_figure, figure_png_bytes
from promptreg.reporting.junit import gate_error_junit_xml, gate_junit_xml
from promptreg.reporting.markdown import md_escape, write_github_step_summary, xml_safe
from promptreg.reporting.mlflow import eval_table, version_tags
from promptreg.reporting.summaries import eval_markdown, gate_markdown
from promptreg.reporting.text import gate_text

NASTY = 'a<b & "c" \'d\' \x00\x07\x1b ] ]]> \ud800 \ufffe ünï 😀 | pipe\nnewline <script>x</script>'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ builders


def _ni(passed: bool, low: float, margin: float = 0.02) -> RuleResult:
    # the wording of promptreg.evaluation.gate
    op = ">" if passed else "<="
    return RuleResult("non_inferiority", passed, f"lower bound {low:.3f} {op} -margin {-margin:.3f}")


def passing_report() -> GateReport:
    return GateReport(
        prompt="sentiment", candidate=4, candidate_sha256="c" * 64, baseline=3, baseline_sha256="b" * 64,
        against="production", suite_name="sentiment-suite", suite_sha256="5" * 64,
        base_model_fingerprint="f" * 64,
        metrics=[
            MetricDecision("golden", "accuracy", 0.861, 0.850, 0.011, -0.012, 0.034, 0.95, "BCa", 0.02, True,
                           [_ni(True, -0.012), RuleResult("min", True, "candidate 0.861 >= min 0.800", bound=0.8)]),
            MetricDecision("golden", "ece", 0.041, 0.045, -0.004, -0.015, 0.008, 0.95, "BCa", 0.02, False,
                           [RuleResult("non_inferiority", True, "upper bound 0.008 < margin 0.020")]),
        ],
        checks=[CheckOutcome("negation", "mft", 100, 3, 0.1), CheckOutcome("typos", "invariance", 50, 0, 0.05)],
        mcnemar=[McNemar("golden", 7, 4, 0.548828125)],
        notes=["baseline resolved from alias production"], gate_id=12, created_at="2025-01-02T03:04:05",
        seconds=12.5,
    )


def failing_report() -> GateReport:
    return GateReport(
        prompt="sentiment", candidate=5, candidate_sha256="c" * 64, baseline=3, baseline_sha256="b" * 64,
        against="production", suite_name="sentiment-suite", suite_sha256="5" * 64,
        base_model_fingerprint="f" * 64,
        metrics=[
            MetricDecision("golden", "accuracy", 0.780, 0.850, -0.070, -0.101, -0.041, 0.95, "BCa", 0.02, True,
                           [_ni(False, -0.101), RuleResult("min", False, "candidate 0.780 < min 0.800", bound=0.8)]),
            MetricDecision("golden", "macro_f1", 0.830, 0.840, -0.010, -0.015, 0.004, 0.95, "BCa", 0.02, True,
                           [_ni(True, -0.015)]),
        ],
        checks=[
            CheckOutcome("negation", "mft", 100, 12, 0.1, failing_examples=[
                {"text": NASTY, "expected": "negative", "got": "positive"},
                *({"text": f"example {i}", "got": "positive"} for i in range(7)),
            ]),
            CheckOutcome("typos", "invariance", 50, 1, 0.05),
            CheckOutcome("empty", "directional", 0, 0, 0.1),
        ],
        mcnemar=[McNemar("golden", 2, 9, 0.065)], seconds=3.0,
    )


def no_baseline_report() -> GateReport:
    return GateReport(
        prompt="sentiment", candidate=1, candidate_sha256="c" * 64, baseline=None, baseline_sha256=None,
        against="production", suite_name="s", suite_sha256="5" * 64, base_model_fingerprint="f" * 64,
        metrics=[
            MetricDecision("golden", "accuracy", 0.861, margin=0.02, rules=[
                RuleResult("non_inferiority", True, "no baseline: non-inferiority not tested", skipped=True)]),
            MetricDecision("golden", "macro_f1", 0.84, margin=0.02, rules=[
                RuleResult("non_inferiority", True, "no baseline", skipped=True),
                RuleResult("min", True, "candidate 0.840 >= min 0.700", bound=0.7)]),
        ],
        checks=[CheckOutcome(f"weird {NASTY}", "mft", 10, 0, 0.1)],
        notes=[f"note with {NASTY}"], cached=True,
    )


def eval_result(version: int = 4, task: str = "classification", acc: float = 0.86) -> EvalResult:
    if task == "classification":
        outcomes = {
            "golden": [{"index": 0, "gold": "pos", "pred": "pos", "gold_index": 1, "pred_index": 1,
                        "confidence": 0.9, "probs": [0.1, 0.9], "correct": True, "text": "x" * 800},
                       {"index": 1, "gold": "neg", "pred": "pos", "gold_index": 0, "pred_index": 1,
                        "confidence": 0.6, "probs": [0.4, 0.6], "correct": False}],
            "extra": [{"index": 0, "gold": "neg", "pred": "neg", "gold_index": 0, "pred_index": 0,
                       "confidence": 0.7, "probs": [0.7, 0.3], "correct": True, "text": "fine"}],
        }
        datasets = [DatasetEval("golden", "d" * 64, 2, {"accuracy": acc, "macro_f1": acc - 0.02, "ece": 0.04}),
                    DatasetEval("extra", "e" * 64, 1, {"accuracy": 1.0})]
    else:
        outcomes = {"golden": [{"index": 0, "output": "hi there", "reference": "hi", "exact_match": 0.0,
                                "token_f1": 0.67, "rouge_l": 0.67, "length_ratio": 2.0}]}
        datasets = [DatasetEval("golden", "d" * 64, 1, {"exact_match": 0.0, "token_f1": 0.67,
                                                        "length_ratio": 2.0})]
    return EvalResult(prompt="sentiment", version=version, sha256="a" * 64, task=task, suite_name="suite",
                      suite_sha256="5" * 64, base_model_fingerprint="f" * 64, datasets=datasets,
                      checks=[CheckOutcome("negation", "mft", 100, 3, 0.1),
                              CheckOutcome("a|b", "invariance", 0, 0, 0.1)],
                      outcomes=outcomes, seconds=1.5, eval_run_id=7)


# -------------------------------------------------------------------------------------------- JUnit


def _parse(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    ET.fromstring(xml.encode("utf-8"))  # bytes: the declared encoding must hold
    return ET.fromstring(xml.split("\n", 1)[1])


def _check_schema(root: ET.Element) -> ET.Element:
    """The usual JUnit expectations (Jenkins/GitLab/mikepenz): integer counts, name+classname, at most one
    failure/skipped/error child, counts matching the testcases."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for el in (root, suite):
        for attr in ("tests", "failures", "errors", "skipped"):
            assert int(el.get(attr)) >= 0
        float(el.get("time"))
    assert suite.get("name")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    children = list(suite)
    assert children[0].tag == "properties"
    assert all(c.tag == "testcase" for c in children[1:])
    for p in suite.find("properties"):
        assert p.tag == "property" and p.get("name") and p.get("value") is not None
    n_fail = n_skip = 0
    for case in cases:
        assert case.get("name") and case.get("classname")
        float(case.get("time"))
        results = [c for c in case if c.tag in ("failure", "skipped", "error")]
        assert len(results) <= 1
        assert all(c.tag in ("failure", "skipped", "error", "system-out", "system-err") for c in case)
        n_fail += sum(c.tag == "failure" for c in results)
        n_skip += sum(c.tag == "skipped" for c in results)
    assert int(suite.get("failures")) == n_fail
    assert int(suite.get("skipped")) == n_skip
    assert suite.get("errors") == "0"
    return suite


def test_junit_passing_gate():
    suite = _check_schema(_parse(gate_junit_xml(passing_report())))
    assert suite.get("name") == "promptreg gate sentiment:4 vs production"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "0", "0")
    assert suite.get("time") == "12.500"
    names = [(c.get("classname"), c.get("name")) for c in suite.findall("testcase")]
    assert names == [("promptreg.gate.sentiment.metrics", "golden/accuracy"),
                     ("promptreg.gate.sentiment.metrics", "golden/ece"),
                     ("promptreg.gate.sentiment.checks", "negation"),
                     ("promptreg.gate.sentiment.checks", "typos")]
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["candidate.sha256"] == "c" * 64
    assert props["baseline.version"] == "3" and props["baseline.sha256"] == "b" * 64
    assert props["suite.sha256"] == "5" * 64 and props["base_model.fingerprint"] == "f" * 64
    assert props["cached"] == "false" and props["passed"] == "true"
    assert props["mcnemar.golden"] == "b=7 c=4 p=0.5488"


def test_junit_failing_gate_messages_and_examples():
    xml = gate_junit_xml(failing_report())
    suite = _check_schema(_parse(xml))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "3", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    acc = cases["golden/accuracy"].find("failure")
    assert acc.get("message") == ("non_inferiority: lower bound -0.101 <= -margin -0.020; "
                                  "min: candidate 0.780 < min 0.800")
    assert acc.text.splitlines() == [
        "[FAIL] non_inferiority (CI low > -0.020): lower bound -0.101 <= -margin -0.020",
        "[FAIL] min (≥ 0.800): candidate 0.780 < min 0.800",
    ]
    assert cases["golden/macro_f1"].find("failure") is None
    neg = cases["negation"].find("failure")
    assert neg.get("message") == "failure rate 0.120 (12/100) > max 0.100"
    body = neg.text.splitlines()
    assert body[1] == "failing examples (5 of 12):"
    assert len(body) == 2 + 5
    assert "ünï 😀" in body[2] and "\x00" not in body[2] and "<script>" in body[2]
    assert "example 3" in neg.text and "example 4" not in neg.text
    assert cases["typos"].find("failure") is None
    assert cases["typos"].find("system-out").text == "invariance check typos: failure rate 0.020 (1/50) <= max 0.050"
    assert "no cases could be built" in cases["empty"].find("failure").get("message")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert "gate.id" not in props and "timestamp" not in suite.attrib


def test_junit_no_baseline_skipped_only_metric_and_nasty_texts():
    xml = gate_junit_xml(no_baseline_report())
    suite = _check_schema(_parse(xml))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "0", "1")
    cases = suite.findall("testcase")
    skipped = cases[0].find("skipped")
    assert cases[0].get("name") == "golden/accuracy"
    assert "no baseline" in skipped.get("message")
    assert cases[1].find("skipped") is None  # its min rule did run
    check = cases[2]
    assert check.get("name").startswith("weird a<b & \"c\" 'd'") and "\x00" not in check.get("name")
    assert "😀" in check.get("name") and "\ud800" not in check.get("name")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["baseline.version"] == "none" and props["baseline.sha256"] == "none"
    assert props["cached"] == "true"
    assert props["note.1"].startswith("note with a<b &")
    xml.encode("utf-8")  # no lone surrogate survived


def test_xml_safe_strips_forbidden_characters():
    assert xml_safe("a\x00b\x0bc\x1fd\te\nf\rg\ud800h\ufffei\uffffj\U0001F600") == "abcd\te\nf\rghij\U0001F600"
    assert xml_safe(None) == ""


# ----------------------------------------------------------------------------------------- markdown


def test_markdown_passing_gate():
    md = gate_markdown(passing_report())
    lines = md.splitlines()
    assert lines[0] == "## ✅ Gate passed: `sentiment:4` vs `sentiment:3` (production)"
    assert "| golden set | metric | candidate | baseline | diff | 95% CI | rule | result |" in lines
    assert ("| golden | accuracy | 0.861 | 0.850 | +0.011 | [-0.012, +0.034] | CI low > -0.020<br>≥ 0.800 "
            "| ✅ pass |") in lines
    assert "| golden | ece | 0.041 | 0.045 | -0.004 | [-0.015, +0.008] | CI high < +0.020 | ✅ pass |" in lines
    assert "| check | type | failure rate | max | result |" in lines
    assert "| negation | mft | 0.030 (3/100) | 0.100 | ✅ pass |" in lines
    assert any("p = 0.5488" in line and "**7**" in line and "**4**" in line for line in lines)
    assert "Why the gate failed" not in md
    assert "- baseline resolved from alias production" in lines
    assert lines[-1] == ("<sub>suite sha256 `555555555555` · base model `ffffffffffff` · gate #12 · "
                         "computed in 12.5 s (not cached)</sub>")


def test_markdown_failing_gate_lists_failures():
    md = gate_markdown(failing_report())
    assert md.startswith("## ❌ Gate failed: `sentiment:5` vs `sentiment:3` (production)")
    assert ("| golden | accuracy | 0.780 | 0.850 | -0.070 | [-0.101, -0.041] | ❌ CI low > -0.020<br>❌ ≥ 0.800 "
            "| ❌ fail |") in md
    assert "| negation | mft | 0.120 (12/100) | 0.100 | ❌ fail |" in md
    assert "| empty | directional | — (0 cases) | 0.100 | ❌ no cases |" in md
    assert "### Why the gate failed" in md
    assert "- golden/accuracy min: candidate 0.780 < min 0.800" in md
    assert "- golden/accuracy non_inferiority: lower bound -0.101 <= -margin -0.020" in md
    assert "- check negation (mft) failure rate 0.120 (12/100) > max 0.100" in md
    assert "- check empty: no cases could be built" in md
    # every table row has the same number of unescaped cells as its header
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            widths = {len(r.replace("\\|", "").split("|")) for r in rows}
            assert len(widths) == 1, block


def test_markdown_no_baseline_escapes_pipes_and_tags():
    md = gate_markdown(no_baseline_report())
    assert md.startswith("## ✅ Gate passed: `sentiment:1` vs no baseline (production has no version)")
    assert "| golden | accuracy | 0.861 | — | — | — | ⏭️ CI low > -0.020 | ⏭️ skipped |" in md
    assert "| golden | macro_f1 | 0.840 | — | — | — | ⏭️ CI low > -0.020<br>≥ 0.700 | ✅ pass |" in md
    row = next(r for r in md.splitlines() if r.startswith("| weird"))
    assert "\\| pipe" in row and "&lt;script>" in row and "a&lt;b" in row and "\x00" not in row
    assert len(row.replace("\\|", "").split("|")) == 7
    assert "cached: reused a previous gate" in md
    assert md_escape("CI low -0.031 <= -0.020 & more") == "CI low -0.031 <= -0.020 & more"
    assert md_escape("&amp; <!-- x -->") == "&amp;amp; &lt;!-- x -->"
    assert md_escape("x" * 400).endswith("…") and len(md_escape("x" * 400)) == 300


def test_eval_markdown():
    md = eval_markdown(eval_result())
    assert md.startswith("## 📊 Evaluation of `sentiment:4` on suite **suite**")
    assert "| golden set | rows | metric | value |" in md
    assert "| golden | 2 | accuracy | 0.860 |" in md
    assert "|  |  | ece | 0.040 |" in md
    assert "| extra | 1 | accuracy | 1.000 |" in md
    assert "| negation | mft | 0.030 (3/100) | 0.100 | ✅ pass |" in md
    assert "| a\\|b | invariance | — (0 cases) | 0.100 | ❌ no cases |" in md
    assert "eval run #7" in md


def test_github_step_summary_appends(tmp_path):
    assert write_github_step_summary("# nothing", env={}) is False
    assert write_github_step_summary("# nothing", env={"GITHUB_STEP_SUMMARY": ""}) is False
    path = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(path)}
    assert write_github_step_summary(gate_markdown(passing_report()), env=env) is True
    assert write_github_step_summary("second", env=env) is True
    text = path.read_text(encoding="utf-8")
    assert "✅ Gate passed" in text and text.endswith("second\n\n")
    assert text.index("Gate passed") < text.index("second")
    assert write_github_step_summary("x", env={"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "dir.md")}) is False


# ------------------------------------------------------------------------------------ figure, table


def test_comparison_figure_png():
    report = failing_report()
    fig = comparison_figure(eval_result(5, acc=0.78), eval_result(3, acc=0.85), report.metrics)
    png = figure_png_bytes(fig)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert "sentiment:5 vs sentiment:3" in fig.get_suptitle()
    assert len(fig.axes) == 2


@pytest.mark.parametrize("decisions", [None, "no-baseline"])
def test_comparison_figure_without_baseline(decisions):
    ds = no_baseline_report().metrics if decisions else None
    fig = comparison_figure(eval_result(1, task="generation"), None, ds)
    png = figure_png_bytes(fig, dpi=60)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 2_000
    assert "no baseline" in fig.get_suptitle()
    assert len(fig.axes) == (2 if decisions else 1)


def test_eval_table_classification_and_generation():
    table = eval_table(eval_result())
    assert list(table) == ["dataset", "index", "text", "gold", "prediction", "correct", "confidence"]
    assert {len(v) for v in table.values()} == {3}
    assert table["dataset"] == ["golden", "golden", "extra"]
    assert len(table["text"][0]) == 500 and table["text"][1] == ""
    assert table["correct"] == [True, False, True] and table["prediction"][1] == "pos"
    gen = eval_table(eval_result(task="generation"))
    assert list(gen) == ["dataset", "index", "text", "reference", "output", "exact_match", "token_f1",
                         "rouge_l", "length_ratio"]
    assert {len(v) for v in gen.values()} == {1}
    assert gen["output"] == ["hi there"] and gen["text"] == [""]
    empty = eval_table(EvalResult("p", 1, "a", "classification", "s", "s", "f", [], []))
    assert all(v == [] for v in empty.values())


def test_report_module_does_not_import_heavy_packages():
    import subprocess
    import sys

    code = ("import sys, promptreg.reporting.summaries, promptreg.reporting.junit, promptreg.reporting.text, "
            "promptreg.reporting.figures, promptreg.reporting.mlflow, promptreg.reporting.descriptions; "
            "print(sorted(m for m in ('torch', 'mlflow', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reports_of_a_real_compare():
    """The rule texts read the explanations written by promptreg.evaluation.gate.compare."""
    from promptreg.evaluation.gate import compare

    def result(version: int, wrong: set[int]) -> EvalResult:
        outs = []
        for i in range(60):
            gold = i % 2
            pred = 1 - gold if i in wrong else gold
            conf = 0.7 + 0.005 * (i % 10)
            outs.append({"index": i, "gold": ["negative", "positive"][gold], "pred": ["negative", "positive"][pred],
                         "gold_index": gold, "pred_index": pred, "confidence": conf,
                         "probs": [conf, 1 - conf] if pred == 0 else [1 - conf, conf], "correct": pred == gold})
        acc = sum(o["correct"] for o in outs) / len(outs)
        return EvalResult("sentiment", version, f"{version}" * 64, "classification", "suite", "5" * 64, "f" * 64,
                          [DatasetEval("golden", "d" * 64, 60, {"accuracy": acc, "ece": 0.1})],
                          [CheckOutcome("negation", "mft", 20, 4, 0.1, [{"text": "not <good> & bad"}])],
                          outcomes={"golden": outs})

    cand, base = result(2, set(range(0, 60, 4))), result(1, set(range(0, 60, 10)))
    thresholds = {"golden": {"accuracy": {"margin": 0.02, "min": 0.8}, "ece": {"max": 0.2}}}
    report = compare(cand, base, thresholds, against="production", n_resamples=200,
                     labels=["negative", "positive"])
    assert not report.passed
    md = gate_markdown(report)
    assert "❌ ≥ 0.800<br>❌ CI low > -0.020" in md and "| ≤ 0.200 | ✅ pass |" in md
    assert "| negation | mft | 0.200 (4/20) | 0.100 | ❌ fail |" in md
    suite = _check_schema(_parse(gate_junit_xml(report)))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "2", "0")
    fig = comparison_figure(cand, base, report.metrics)
    assert figure_png_bytes(fig, dpi=50).startswith(PNG_SIGNATURE)
    no_base = compare(cand, None, thresholds, against="production", labels=["negative", "positive"])
    suite = _check_schema(_parse(gate_junit_xml(no_base)))
    assert suite.get("skipped") == "0"  # accuracy still has its min rule
    assert "vs no baseline" in gate_markdown(no_base)
    # the bound is carried by the rule (never parsed back out of its explanation)
    acc = next(m for m in report.metrics if m.metric == "accuracy")
    assert {r.rule: r.bound for r in acc.rules} == {"min": 0.8, "non_inferiority": -0.02}
    roundtrip = GateReport.from_dict(report.to_dict())
    assert gate_markdown(roundtrip) == gate_markdown(report)


def test_gate_text_is_rendered_from_the_report():
    lines = gate_text(failing_report())
    assert lines[0] == "gate FAILED: sentiment:5 vs sentiment:3  suite sentiment-suite (555555555555)"
    assert lines[1].split() == ["metric", "candidate", "baseline", "diff", "95%", "CI", "margin", "rules", "result"]
    assert any(line.startswith("golden/accuracy") and "non_inferiority!, min!" in line and line.endswith("FAIL")
               for line in lines)
    assert "McNemar exact (golden): candidate-only correct 2, baseline-only correct 9, p = 0.065" in lines
    assert lines[-len(failing_report().failures()):] == [f"failed: {f}" for f in failing_report().failures()]
    assert gate_text(no_baseline_report())[0].startswith("gate PASSED: sentiment:1 vs no baseline (production)")


def test_gate_error_junit_and_version_tags():
    xml = gate_error_junit_xml("toy:2", "no prompt named 'toy'\x00")
    root = _parse(xml.replace('encoding="utf-8"', 'encoding="UTF-8"'))
    case = root.find("testsuite").find("testcase")
    assert case.find("error").get("message") == "no prompt named 'toy'" and root.get("errors") == "1"
    report = failing_report()
    report.gate_id = 9
    assert version_tags(gate=report) == {"promptreg.gate.production": "failed",
                                         "promptreg.gate.production.baseline": "3", "promptreg.gate.production.id": "9"}
    assert version_tags(aliases=["staging", "production"], status="active") == {
        "promptreg.aliases": "production,staging", "promptreg.status": "active"}
    assert version_tags(aliases=[], drift="none") == {"promptreg.aliases": "none", "promptreg.drift": "none"}
