"""Evaluation, the regression gate, promote and rollback on the embedded default, with a real (tiny)
model: eval runs stored and cached, the gate on better / worse / equal candidates, CI exit codes,
JUnit and markdown reports, the fingerprint refusal, promote/rollback through the audit log, sync.

The tiny random model predicts one class for every input; which class depends on the soft prompt.
With a golden set that is 75% positive, a prompt that says "positive" scores 0.75 and one that says
"negative" scores 0.25: a clearly better and a clearly worse candidate, on exactly the same rows."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.errors import IntegrityError
from promptreg.evaluation.suite import load_suite
from promptreg.services.evaluate import Evaluator
from promptreg.services.lifecycle import alias_stack, promote, rollback
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_model_artifact, write_suite

SAYS_POSITIVE = dict(method="prefix_tuning", seed=0, scale=1.0)
SAYS_NEGATIVE = dict(method="prefix_tuning", seed=0, scale=5.0)
ALSO_POSITIVE = dict(method="prefix_tuning", seed=5, scale=1.0)


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    """A registry with v1 (says positive), v2 (says negative), v3 (says positive, other tensors)."""
    reg = Registry(home=str(tmp_path / ".promptreg"))
    for i, kind in enumerate((SAYS_POSITIVE, SAYS_NEGATIVE, ALSO_POSITIVE), start=1):
        assert reg.push(make_model_artifact(tmp_path / f"art{i}", tiny_model_dir, **kind), "toy").version.version == i
    return reg


def _suite(tmp_path, name="suite", **kw):
    return load_suite(write_suite(tmp_path / name, positive_share=0.75, **kw))


def _count(reg, table) -> int:
    import sqlalchemy as sa

    with reg.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def test_eval_stores_outcomes_logs_mlflow_and_is_cached(project, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    suite = _suite(tmp_path)
    ev = Evaluator(project, model=tiny_model_dir)
    result, baseline = ev.evaluate("toy:1", suite, against="none")
    assert baseline is None and not result.cached and ev.warnings == []
    toy = result.dataset("toy")
    assert toy.rows == 40 and toy.metrics["accuracy"] == pytest.approx(0.75)
    assert toy.metrics["recall_positive"] == 1.0 and toy.metrics["recall_negative"] == 0.0
    assert {c.name for c in result.checks} == {"mft-positive", "inv-typos", "dir-negation"}
    assert result.check("mft-positive").failures == 0 and result.check("mft-positive").cases == 3
    outcomes = result.outcomes["toy"]
    assert len(outcomes) == 40 and all(o["pred"] == "positive" for o in outcomes)
    assert sum(o["correct"] for o in outcomes) == 30

    # the eval_run row and its outcomes document in the artifact store, verified by sha256
    assert _count(project, "eval_run") == 1
    again, _ = Evaluator(project, model=tiny_model_dir).evaluate("toy:1", suite, against="none")
    assert again.cached and again.eval_run_id == result.eval_run_id and _count(project, "eval_run") == 1
    assert again.outcomes == result.outcomes and again.dataset("toy").metrics == toy.metrics
    assert [c.to_dict() for c in again.checks] == [c.to_dict() for c in result.checks]
    assert any(e.action == "eval" for e in project.history("toy"))

    # MLflow: metrics, the per-example table and the comparison plot on the version's run
    run_id = project.show("toy:1").mlflow_run_id
    client = MlflowClient(tracking_uri=project.settings.tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval/toy-sentiment/toy/accuracy"] == pytest.approx(0.75)
    assert "eval/toy-sentiment/check/dir-negation/failure_rate" in metrics
    files = {f.path for f in client.list_artifacts(run_id, "eval/toy-sentiment")}
    assert {"eval/toy-sentiment/outcomes.json", "eval/toy-sentiment/comparison.png",
            "eval/toy-sentiment/result.json"} <= files
    table = json.loads(Path(client.download_artifacts(run_id, "eval/toy-sentiment/outcomes.json",
                                                      str(tmp_path / "dl"))).read_text())
    assert len(table["data"]) == 40


def test_gate_better_worse_equal_and_cache(project, tmp_path, tiny_model_dir):
    suite = _suite(tmp_path, accuracy="{margin: 0.02}")
    ev = Evaluator(project, model=tiny_model_dir)

    worse = ev.gate("toy:2", suite, against="1")          # 0.25 vs 0.75
    assert not worse.passed and worse.baseline == 1
    acc = next(m for m in worse.metrics if m.id == "toy/accuracy")
    assert acc.candidate == pytest.approx(0.25) and acc.baseline == pytest.approx(0.75)
    assert acc.diff == pytest.approx(-0.5) and acc.ci_high < -0.02
    assert any(f.startswith("toy/accuracy non_inferiority:") and "-0.500" in f for f in worse.failures())
    assert [(m.b, m.c) for m in worse.mcnemar] == [(10, 30)]   # candidate-only right, baseline-only right

    better = ev.gate("toy:1", suite, against="2")
    assert better.passed and better.metrics[0].ci_low > 0
    assert [(m.b, m.c) for m in better.mcnemar] == [(30, 10)]

    equal = ev.gate("toy:3", suite, against="1")          # same predictions, other tensors
    acc = next(m for m in equal.metrics if m.id == "toy/accuracy")
    assert equal.passed and acc.diff == 0 and acc.ci_low == 0
    strict = _suite(tmp_path, name="strict", accuracy="{margin: 0.0}", checks=False)
    strict_report = Evaluator(project, model=tiny_model_dir).gate("toy:3", strict, against="1")
    assert not strict_report.passed
    assert [f for f in strict_report.failures() if "accuracy" in f]

    # a gate that already ran is reused: no new evaluation, no new gate row
    evals, gates = _count(project, "eval_run"), _count(project, "gate_result")
    cached = Evaluator(project, model=tiny_model_dir).gate("toy:2", suite, against="1")
    assert cached.cached and cached.gate_id == worse.gate_id and not cached.passed
    assert cached.failures() == worse.failures()
    assert (_count(project, "eval_run"), _count(project, "gate_result")) == (evals, gates)


def test_base_model_with_another_fingerprint_is_refused(project, tmp_path):
    from tests.fixtures.models import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other-model", seed=1)
    with pytest.raises(IntegrityError, match="refusing to apply it"):
        Evaluator(project, model=other).evaluate("toy:1", _suite(tmp_path), against="none")
    assert _count(project, "eval_run") == 0


def test_promote_rollback_walk_the_audit_log(project, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=project.settings.tracking_uri)
    for v in (1, 2, 3):                                     # staging: no gate required by default
        res = promote(project, f"toy:{v}", "staging")
        assert res.version == v and res.previous == (v - 1 or None) and res.gate is None
    assert rollback(project, "toy", "staging").version == 2
    assert str(client.get_model_version_by_alias("toy", "staging").version) == project.show("toy@staging").mlflow_model_version
    assert rollback(project, "toy", "staging").version == 1
    with pytest.raises(Exception, match="no previous holder"):
        rollback(project, "toy", "staging")
    assert rollback(project, "toy", "staging", to=3, reason="manual").version == 3
    events = [e for e in project.history("toy") if e.alias == "staging"]
    assert [(e.action, e.from_version, e.to_version) for e in events] == [
        ("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1),
        ("rollback", 1, 3)]
    assert alias_stack(events) == [1, 3]
    mv = client.get_model_version("toy", project.show("toy:3").mlflow_model_version)
    assert mv.tags["promptreg.aliases"] == "staging"
    assert client.get_model_version("toy", project.show("toy:1").mlflow_model_version).tags["promptreg.aliases"] == "none"


def test_sync_repairs_mlflow_aliases_and_tags(project):
    from mlflow.tracking import MlflowClient

    promote(project, "toy:2", "staging")
    client = MlflowClient(tracking_uri=project.settings.tracking_uri)
    client.set_registered_model_alias("toy", "staging", project.show("toy:1").mlflow_model_version)  # drift
    client.set_model_version_tag("toy", project.show("toy:2").mlflow_model_version, "promptreg.aliases", "none")
    report = project.sync()
    assert report.aliases_set == ["toy@staging"]
    assert report.tags_set == ["toy:2 promptreg.aliases"]
    assert str(client.get_model_version_by_alias("toy", "staging").version) == project.show("toy:2").mlflow_model_version
    assert project.sync().repaired == 0


def test_cli_gate_exit_codes_and_reports(project, tmp_path, tiny_model_dir):
    suite = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02, min: 0.5}")
    env = {"PROMPTREG_BASE_MODEL": str(tiny_model_dir), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    cwd = tmp_path  # the project lives in ./.promptreg

    # no production yet: the gate has no baseline (floors and checks only) and passes
    res = run_cli("promote", "toy:1", "--to", "production", "--suite", suite, cwd=cwd, env=env)
    assert res.code == 0, res.out + res.err
    assert "promoted toy:1 to production (new alias)" in res.out and "not tested" not in res.err

    # a clearly worse candidate: exit 1, JUnit + markdown say which rule failed, with numbers
    res = run_cli("gate", "toy:2", "--suite", suite, "--junit", tmp_path / "gate.xml", "--markdown",
                  tmp_path / "gate.md", cwd=cwd, env=env)
    assert res.code == 1, res.out + res.err
    assert "gate FAILED" in res.out and "failed: toy/accuracy non_inferiority" in res.out
    root = ET.parse(tmp_path / "gate.xml").getroot()
    suite_el = root if root.tag == "testsuite" else root.find("testsuite")
    cases = {c.get("name"): c for c in suite_el.iter("testcase")}
    assert {"toy/accuracy", "toy/macro_f1", "toy/ece", "mft-positive", "inv-typos", "dir-negation"} <= set(cases)
    failure = cases["toy/accuracy"].find("failure")
    assert failure is not None and "-0.500" in failure.get("message")
    assert "min" in failure.get("message")          # both rules named: non-inferiority and the 0.5 floor
    assert int(suite_el.get("failures")) == 1 and int(suite_el.get("tests")) == 6
    md = (tmp_path / "gate.md").read_text()
    assert "Gate failed" in md
    assert md.strip() in (tmp_path / "summary.md").read_text()

    # an equal candidate passes; the same gate again is served from the cache
    res = run_cli("gate", "toy:3", "--suite", suite, "--json", cwd=cwd, env=env)
    assert res.code == 0, res.err
    assert res.json()["passed"] and not res.json()["cached"]
    assert run_cli("gate", "toy:3", "--suite", suite, "--json", cwd=cwd, env=env).json()["cached"]

    # could not run: exit 2, one line, and the JUnit file says why
    res = run_cli("gate", "toy:2", "--suite", tmp_path / "missing.yaml", "--junit", tmp_path / "err.xml", cwd=cwd,
                  env=env)
    assert_one_line_error(res, 2)
    assert ET.parse(tmp_path / "err.xml").getroot().find(".//error") is not None
    assert_one_line_error(run_cli("gate", "toy:9", "--suite", suite, cwd=cwd, env=env), 2, "no version 9")
    from tests.fixtures.models import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", seed=3)
    assert_one_line_error(run_cli("gate", "toy:2", "--suite", suite, "--model", other, "--no-cache", cwd=cwd,
                                  env=env), 2, "refusing")


def test_cli_promote_refused_forced_and_rolled_back(project, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    suite = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}")
    env = {"PROMPTREG_BASE_MODEL": str(tiny_model_dir)}
    cwd = tmp_path
    assert run_cli("promote", "toy:1", "--suite", suite, cwd=cwd, env=env).code == 0

    res = run_cli("promote", "toy:2", "--suite", suite, cwd=cwd, env=env)   # the gate refuses
    assert res.code == 1 and "gate FAILED" in res.out
    assert_one_line_error(res, 1, "gate failed, toy:2 not promoted to production")
    assert project.show("toy@production").version == 1
    # production needs a gate: no suite and no stored verdict for 3 vs 1 -> refused
    assert_one_line_error(run_cli("promote", "toy:3", cwd=cwd, env=env), 2, "requires a passing gate")
    assert_one_line_error(run_cli("promote", "toy:2", "--force", cwd=cwd, env=env), 2, "--force needs --reason")

    res = run_cli("promote", "toy:2", "--force", "--reason", "hotfix approved by on-call", "--json", cwd=cwd, env=env)
    assert res.code == 0, res.err
    assert res.json()["forced"] is True and res.json()["gate"]["passed"] is False   # the stored verdict
    event = [e for e in project.history("toy") if e.action == "promote"][-1]
    assert event.reason == "hotfix approved by on-call" and event.details["forced"] is True
    assert event.details["gate_passed"] is False and (event.from_version, event.to_version) == (1, 2)

    res = run_cli("rollback", "toy", cwd=cwd, env=env)
    assert res.code == 0 and "rolled back toy@production to version 1 (was 2)" in res.out
    client = MlflowClient(tracking_uri=project.settings.tracking_uri)
    assert str(client.get_model_version_by_alias("toy", "production").version) == project.show("toy:1").mlflow_model_version
    assert_one_line_error(run_cli("rollback", "toy", cwd=cwd, env=env), 2, "no previous holder")
    assert_one_line_error(run_cli("rollback", "toy", "--alias", "canary", cwd=cwd, env=env), 2, "not set")
    # promoting with the stored verdict: 3 vs 1 passes once gated, then promote reuses it without a suite
    assert run_cli("gate", "toy:3", "--suite", suite, cwd=cwd, env=env).code == 0
    res = run_cli("promote", "toy:3", "--json", cwd=cwd, env=env)
    assert res.code == 0 and res.json()["gate"]["cached"] is True and res.json()["previous"] == 1


@pytest.mark.slow
def test_smollm2_eval_and_gate_end_to_end(tmp_path):
    """The real base model on a small Rotten Tomatoes golden set: an instruction-initialised prompt
    is promoted (no baseline yet), a randomly initialised one is gated against it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.artifact.builder import write_artifact
    from promptreg.data.dataset_fetch import fetch_rotten_tomatoes
    from promptreg.data.model_fetch import fetch_smollm2
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.softprompt.methods import ModelDims, build_method

    model_dir = fetch_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    info = model_fingerprint(model_dir).to_dict()
    task = {"type": "classification", "template": "{virtual}Review: {text}\nSentiment:",
            "verbalizer": {"negative": [" negative"], "positive": [" positive"]}}
    reg = Registry(home=str(tmp_path / ".promptreg"))
    for i, (init, text) in enumerate([("text", "Is this movie review positive or negative?"), ("random", None)], 1):
        sp = build_method("prompt_tuning", {"num_virtual_tokens": 8, "init": init, "init_text": text},
                          ModelDims.from_config(base.config), embedding_weight=base.get_input_embeddings().weight,
                          tokenizer=tok, seed=i)
        art = write_artifact(tmp_path / f"v{i}", method="prompt_tuning", tensors=sp.export_tensors(), base_model=info,
                             num_virtual_tokens=8, task=task, method_config=sp.method_config(), created_by="tests")
        assert reg.push(art, "rt").version.version == i
    del base

    test_split = fetch_rotten_tomatoes(tmp_path / "rt")["test"]
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    (suite_dir / "suite.yaml").write_text(f"""name: rt-smoke
golden:
  - name: rt-test
    path: {test_split}
    limit: 60
    metrics:
      accuracy: {{margin: 0.05, min: 0.6}}
      macro_f1: {{margin: 0.05}}
checks:
  - name: mft-positive
    type: mft
    template: "This movie was {{adj}}."
    fill: {{adj: [wonderful, great, superb, delightful]}}
    label: positive
    max_failure_rate: 0.5
  - name: dir-negation
    type: directional
    data: rt-test
    perturbation: add_negation
    only_labels: [positive]
    label: positive
    direction: decrease
    max_failure_rate: 0.5
""")
    suite = load_suite(suite_dir / "suite.yaml")
    ev = Evaluator(reg, model=model_dir)
    moved = promote(reg, "rt:1", "production", suite=suite, evaluator=ev)
    first = moved.gate
    assert moved.version == 1 and first.passed and first.baseline is None, first.failures()
    acc1 = next(m for m in first.metrics if m.id == "rt-test/accuracy").candidate
    assert acc1 >= 0.6

    report = ev.gate("rt:2", suite)                          # against production = rt:1
    assert report.baseline == 1 and not report.cached
    cand = ev.evaluate_version(reg.show("rt:2"), suite)      # cached by now: the outcomes the gate used
    prod = ev.evaluate_version(reg.show("rt:1"), suite)
    assert cand.cached and prod.cached and len(cand.outcomes["rt-test"]) == 60
    pairs = list(zip(cand.outcomes["rt-test"], prod.outcomes["rt-test"], strict=True))
    b = sum(x["correct"] and not y["correct"] for x, y in pairs)
    c = sum(y["correct"] and not x["correct"] for x, y in pairs)
    assert [(m.b, m.c) for m in report.mcnemar] == [(b, c)]
    acc = next(m for m in report.metrics if m.id == "rt-test/accuracy")
    assert acc.diff == pytest.approx((b - c) / 60)
    assert acc.passed == (acc.ci_low > -0.05 and acc.candidate >= 0.6)
    assert report.passed == (all(m.passed for m in report.metrics) and all(ch.passed for ch in report.checks))
    print(f"\nSmolLM2 rt-test (60): v1 accuracy {acc1:.3f}; v2 {acc.candidate:.3f}, diff {acc.diff:+.3f} "
          f"CI [{acc.ci_low:.3f}, {acc.ci_high:.3f}], McNemar b={b} c={c} p={report.mcnemar[0].p_value:.3g}; "
          f"gate {'passed' if report.passed else 'failed: ' + '; '.join(report.failures())}")


@pytest.mark.parametrize("method,options", [
    ("prompt_tuning", {"num_virtual_tokens": 4, "init": "random"}),
    ("p_tuning", {"num_virtual_tokens": 3, "encoder": "mlp"}),
    ("prefix_tuning", {"num_virtual_tokens": 5, "projection": True, "projection_hidden": 32}),
    ("id_spam", {"num_virtual_tokens": 4, "layer": 1, "bottleneck": 16}),
    ("iapt", {"num_virtual_tokens": 4, "layers": "0,1", "bottleneck": 16, "activation": "tanh"}),
])
def test_evaluator_applies_every_method_like_the_runtime(tmp_path, tiny_model_dir, method, options):
    """A registered version of each method, loaded from the registry (verified files, safetensors
    only) onto the base model, gives exactly the probabilities of the in-memory soft prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.softprompt.collate import Encoder, label_token_ids
    from promptreg.softprompt.methods import ModelDims, build_method
    from promptreg.softprompt.scoring import classify
    from promptreg.softprompt.soft_model import SoftPromptModel
    from tests.helpers import TEMPLATE, sentiment_rows

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sp = build_method(method, options, ModelDims.from_config(base.config),
                      embedding_weight=base.get_input_embeddings().weight, tokenizer=tok, seed=3)
    with torch.no_grad():
        for p in sp.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    art = write_artifact(tmp_path / "art", method=method, tensors=sp.export_tensors(),
                         base_model=model_fingerprint(tiny_model_dir).to_dict(),
                         num_virtual_tokens=sp.num_virtual_tokens, method_config=sp.method_config(),
                         task={"type": "classification", "template": TEMPLATE,
                               "verbalizer": {"positive": [" positive"], "negative": [" negative"]}})
    reg = Registry(home=str(tmp_path / ".promptreg"))
    reg.push(art, "m")
    suite = _suite(tmp_path, checks=False)
    result, _ = Evaluator(reg, model=tiny_model_dir, log_mlflow=False).evaluate("m:1", suite, against="none")

    texts = [r["text"] for r in sentiment_rows(40, positive_share=0.75)]
    enc = Encoder(tok, TEMPLATE, slots=sp.input_slots)
    sp.eval()
    want = classify(base, SoftPromptModel(base, sp), [enc.classification(t, 0) for t in texts],
                    label_token_ids(tok, [" negative", " positive"]), pad_id=enc.pad_id).numpy()
    got = [o["probs"] for o in result.outcomes["toy"]]
    assert [o["text"] for o in result.outcomes["toy"]] == texts
    assert {o["pred"] for o in result.outcomes["toy"]} <= {"negative", "positive"}  # labels in manifest order
    import numpy as np

    np.testing.assert_allclose(np.array(got), want, atol=2e-6)


def test_imported_peft_adapter_is_evaluated_and_generates_like_peft(tmp_path, tiny_model_dir):
    """A PEFT prompt-tuning adapter imported with a verbalizer is a classification prompt the gate can
    evaluate; imported without one it is a generation prompt whose greedy output equals PEFT's."""
    import torch
    from peft import PeftModel, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.services.peft_import import import_peft
    from tests.peft_reference import PEFT_GENERATE_BROKEN, peft_forward_greedy

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    peft_model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.mul_(20)      # a prompt that matters
    peft_model.save_pretrained(tmp_path / "adapter")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    import_peft(reg, tmp_path / "adapter", str(tiny_model_dir), "cls", template="Review : {text} Sentiment :",
                verbalizer={"positive": " positive", "negative": " negative"})
    import_peft(reg, tmp_path / "adapter", str(tiny_model_dir), "gen")
    result, _ = Evaluator(reg, model=tiny_model_dir, log_mlflow=False).evaluate("cls:1", _suite(tmp_path, checks=False),
                                                                              against="none")
    assert result.task == "classification" and result.dataset("toy").rows == 40

    loaded = Evaluator(reg, model=tiny_model_dir).load(reg.show("gen:1"))
    assert loaded.task == "generation"
    text = "the movie was great and the acting brilliant ."
    got = loaded.generate([text], max_new_tokens=6)[0]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    peft_again = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    ids = tok(text, return_tensors="pt")
    # PEFT's forward recomputed at every step is the reference (its cached generate is not, with some
    # transformers releases: tests/peft_reference.py)
    want = tok.decode(peft_forward_greedy(peft_again.eval(), ids["input_ids"], 6, eos=tok.eos_token_id),
                      skip_special_tokens=True)
    assert got == want and got
    if not PEFT_GENERATE_BROKEN:
        with torch.no_grad():
            out = peft_again.generate(**ids, max_new_tokens=6, do_sample=False, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == want


def test_every_version_option_takes_the_ref_grammar(project, tmp_path, tiny_model_dir):
    """gate/eval --against, rollback --to and promote --to accept NAME:V / NAME@ALIAS / V / ALIAS (issue 20)."""
    suite = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}", checks=False)
    env = {"PROMPTREG_BASE_MODEL": str(tiny_model_dir)}
    cwd = tmp_path
    by_ref = run_cli("gate", "toy:2", "--against", "toy:1", "--suite", suite, "--json", cwd=cwd, env=env)
    assert by_ref.code == 1, by_ref.err
    assert by_ref.json()["baseline"] == 1 and by_ref.json()["against"] == "1"
    bare = run_cli("gate", "toy:2", "--against", "1", "--suite", suite, "--json", cwd=cwd, env=env)
    assert bare.json()["cached"] and bare.json()["gate_id"] == by_ref.json()["gate_id"]   # the same gate

    assert run_cli("promote", "toy:1", "--to", "toy@staging", cwd=cwd, env=env).code == 0
    by_alias = run_cli("gate", "toy:3", "--against", "toy@staging", "--suite", suite, "--json", cwd=cwd, env=env)
    assert by_alias.code == 0 and by_alias.json()["baseline"] == 1 and by_alias.json()["against"] == "staging"
    res = run_cli("eval", "toy:3", "--against", "toy:1", "--suite", suite, cwd=cwd, env=env)
    assert res.code == 0, res.err

    assert_one_line_error(run_cli("gate", "toy:2", "--against", "other:1", "--suite", suite, cwd=cwd, env=env), 2,
                          "--against 'other:1' names prompt 'other', not 'toy'")
    assert_one_line_error(run_cli("gate", "toy:2", "--against", "toy:0", "--suite", suite, cwd=cwd, env=env), 2,
                          "invalid version in 'toy:0'")
    assert_one_line_error(run_cli("gate", "toy:2", "--against", "toy:9", "--suite", suite, cwd=cwd, env=env), 2,
                          "toy has no version 9")

    # rollback: NAME@ALIAS positional; --to as a number, NAME:V or the holder of another alias
    for v in (2, 3):
        assert run_cli("promote", f"toy:{v}", "--to", "staging", cwd=cwd, env=env).code == 0
    promote(project, "toy:2", "canary")
    res = run_cli("rollback", "toy@staging", "--to", "toy:1", cwd=cwd, env=env)
    assert res.code == 0 and "rolled back toy@staging to version 1 (was 3)" in res.out, res.err
    res = run_cli("rollback", "toy@staging", "--to", "canary", "--json", cwd=cwd, env=env)
    assert res.code == 0 and res.json()["version"] == 2, res.err
    assert rollback(project, "toy", "staging", to="toy:3").version == 3
    assert_one_line_error(run_cli("rollback", "toy@staging", "--to", "toy:x", cwd=cwd, env=env), 2,
                          "invalid version in 'toy:x'")
    assert_one_line_error(run_cli("rollback", "toy@staging", "--to", "other@canary", cwd=cwd, env=env), 2,
                          "names prompt 'other'")
    assert_one_line_error(run_cli("rollback", "toy@staging", "--to", "nope", cwd=cwd, env=env), 2, "no alias 'nope'")
    assert_one_line_error(run_cli("promote", "toy:1", "--to", "other@staging", cwd=cwd, env=env), 2,
                          "names prompt 'other'")


def test_eval_gate_promote_on_an_environments_base_model(project, tmp_path, tiny_model_dir):
    """--env NAME evaluates on the base model recorded for that environment (no PROMPTREG_BASE_MODEL,
    no --model), in eval, gate and promote alike; an unknown environment or --env with --model is one line."""
    suite = write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}", checks=False)
    cwd = tmp_path
    assert run_cli("env", "set-base-model", "prod", tiny_model_dir, cwd=cwd).code == 0
    res = run_cli("eval", "toy:1", "--suite", suite, "--against", "none", "--env", "prod", "--json", cwd=cwd)
    assert res.code == 0 and res.json()["datasets"][0]["rows"] == 40, res.err
    res = run_cli("promote", "toy:3", "--to", "staging", "--suite", suite, "--env", "prod", "--json", cwd=cwd)
    assert res.code == 0 and res.json()["version"] == 3, res.err
    assert_one_line_error(run_cli("eval", "toy:1", "--suite", suite, "--env", "nope", cwd=cwd), 2,
                          "no base model recorded for environment 'nope'")
    assert_one_line_error(run_cli("gate", "toy:1", "--suite", suite, "--env", "prod", "--model", tiny_model_dir,
                                  cwd=cwd), 2, "give --env or --model, not both")
