"""The MLflow descriptions (promptreg.services.describe): the pure markdown builders, then the real flow
on the embedded default with the tiny model — push, eval run, gate, promote, forced promote, rollback,
drift flag — each refreshing what MLflow shows, and ``sync`` rewriting tampered descriptions and derived
tags, idempotently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptreg import Registry
from promptreg.errors import GateFailedError
from promptreg.evaluation.results import CheckOutcome, GateReport
from promptreg.evaluation.suite import load_suite
from promptreg.reporting.descriptions import (
    MAX_DESCRIPTION,
    DriftFacts,
    EvalFacts,
    GateFacts,
    ModelFacts,
    RunLink,
    VersionFacts,
    model_markdown,
    version_markdown,
    wanted_tags,
)
from promptreg.services.evaluate import Evaluator
from promptreg.services.lifecycle import promote, rollback
from tests.helpers import make_model_artifact, sentiment_rows, write_suite

FP = "f" * 64


def _gate_report(passed: bool = False, gate_id: int = 7, baseline: int = 2) -> GateReport:
    """A stored gate report as the database holds it (GateReport.to_dict), read back."""
    acc = {"dataset": "toy", "metric": "accuracy", "candidate": 0.25, "baseline": 0.75,
           "diff": -0.5, "ci_low": -0.62, "ci_high": -0.38, "margin": 0.02,
           "rules": [{"rule": "non_inferiority", "passed": passed, "explanation": "CI low -0.620 <= -margin -0.020",
                      "bound": -0.02}]}
    stored = {"prompt": "sentiment", "candidate": 3, "candidate_sha256": "a" * 64, "baseline": baseline,
              "baseline_sha256": "b" * 64, "against": "production", "suite_name": "rt", "suite_sha256": "c" * 64,
              "base_model_fingerprint": FP, "metrics": [acc],
              "checks": [{"name": "mft-positive", "type": "mft", "cases": 3, "failures": 0 if passed else 3,
                          "max_failure_rate": 0.1}],
              "mcnemar": [{"dataset": "toy", "b": 10, "c": 30, "p_value": 0.002}], "gate_id": gate_id}
    return GateReport.from_dict(stored)


def _facts(**kw) -> VersionFacts:
    base = dict(
        name="sentiment", version=3, sha256="a" * 64, method="prompt_tuning", num_virtual_tokens=8,
        task_type="classification", status="degraded", aliases=["production", "staging"], created_by="alice",
        created_at="2025-01-02 03:04 UTC", base_model_fingerprint=FP, base_model_name="smollm2",
        dataset={"fingerprint": "d" * 64, "name": "rotten-tomatoes", "source": "hf://rotten_tomatoes", "rows": 8530},
        metrics={"test_accuracy": 0.8512, "eval_accuracy": 0.84},
        validation={"success": True, "failures": [], "warnings": ["eval: 3 duplicate rows"],
                    "stats": {"splits": {"train": {"rows": 8530}}, "expectations": {"evaluated": 21, "failed": 1}}},
        gate=GateFacts(_gate_report(False), "2025-01-03 10:00 UTC"),
        evals=[EvalFacts(4, "rt", "c" * 64, {"toy": {"accuracy": 0.25, "macro_f1": 0.2}}, ["mft-positive"],
                         "2025-01-03 09:59 UTC", RunLink("eval run: rt", "e" * 32, "5"))],
        drift=DriftFacts(9, "drift", "flag", "s3://logs/sentiment/", "2025-01-04 03:00 UTC",
                         ["input length (tokens)", "labels"], {"metric": "accuracy", "value": 0.7, "recorded": 0.85},
                         "production", RunLink("drift run", "9" * 32, "6")),
        source_run=RunLink("source run", "r" * 32, "3"), mlflow_model_version="3")
    base.update(kw)
    return VersionFacts(**base)


def test_version_markdown_has_every_section():
    md = version_markdown(_facts())
    first = md.splitlines()[0]
    assert first == ("sentiment:3 · aliases: production, staging · status: degraded · gate vs production: FAILED"
                     " · drift: drift")
    assert "**status:** degraded" in md and "prompt_tuning (8 virtual tokens)" in md
    assert "| test_accuracy | 0.8512 |" in md and "| eval_accuracy | 0.84 |" in md
    assert f"fingerprint `{FP}`" in md and "smollm2" in md
    assert f"fingerprint `{'d' * 64}`" in md and "8530 rows" in md and "`hf://rotten_tomatoes`" in md
    assert "**PASSED** — 21 expectations evaluated, 1 failed; 0 critical failure(s); 1 warning(s)" in md
    assert "- warning: eval: 3 duplicate rows" in md
    # the gate: verdict, baseline, every number of the gated metric, the failures
    assert "**FAILED** vs sentiment:2 — suite `rt` (cccccccccccc), gate #7" in md
    assert "| toy/accuracy | 0.250 | 0.750 | -0.500 | [-0.620, -0.380] | 0.02 | **FAIL** |" in md
    assert "| mft-positive | mft | 1.000 (3/3) | 0.100 | **FAIL** |" in md
    assert "- toy/accuracy non_inferiority: CI low -0.620 <= -margin -0.020" in md
    assert "McNemar exact (toy): candidate-only correct 10, baseline-only correct 30" in md
    assert "toy: accuracy 0.25, macro_f1 0.2; checks failed: mft-positive" in md
    assert "decision **drift**, action **flag** — input length (tokens), labels" in md
    assert "- accuracy 0.7 vs recorded 0.85" in md
    # relative links the MLflow UI resolves
    assert f"[source run](#/experiments/3/runs/{'r' * 32})" in md
    assert f"[eval run: rt](#/experiments/5/runs/{'e' * 32})" in md
    assert f"[drift run](#/experiments/6/runs/{'9' * 32})" in md
    assert len(md) <= MAX_DESCRIPTION


def test_a_fresh_version_says_what_is_missing():
    md = version_markdown(_facts(status="active", aliases=[], gate=None, evals=[], drift=None, validation=None,
                                 dataset=None, metrics={}, source_run=RunLink("source run", "r1")))
    assert md.splitlines()[0] == "sentiment:3 · aliases: none · status: active · gate vs production: none"
    assert "no gate run yet against production" in md and "no drift check yet" in md
    assert "no evaluation yet" in md and "no metrics recorded" in md and "**dataset:** not recorded" in md
    assert "not recorded (the artifact was not trained by `promptreg train`)" in md
    assert "source run (run `r1`)" in md            # no experiment id known: no broken link


def test_descriptions_fit_mlflow_limit_and_cells_are_escaped():
    many = {f"metric_{i:04d}|x\nnext": i / 7 for i in range(3000)}
    report = _gate_report(False)
    report.metrics = report.metrics * 200
    report.checks = [CheckOutcome(f"check {i} " + "x" * 200, "mft", 3, 3, 0.1) for i in range(500)]
    md = version_markdown(_facts(metrics=many, gate=GateFacts(report, "t"),
                                 description="y" * 4000))
    assert len(md) <= MAX_DESCRIPTION
    assert "**FAILED** vs sentiment:2" in md and "[source run](#/experiments/3/runs/" in md
    assert "metric_0000\\|x next" in md and "more in the source run" in md
    huge = ModelFacts(name="p", description="d" * 9000, verbalizer={f"l{i}": ["w" * 50] for i in range(500)},
                      base_models=[(str(i) * 64, f"m{i}") for i in range(10)] * 50)
    assert len(model_markdown(huge)) <= MAX_DESCRIPTION


def test_model_markdown_and_wanted_tags():
    md = model_markdown(ModelFacts(
        name="sentiment", description="Movie review sentiment.", task_type="classification", owner="alice",
        created_at="2025-01-01 00:00 UTC", methods={"prompt_tuning": [1, 3], "p_tuning": [4, 4]}, versions=4,
        latest=4, verbalizer={"positive": [" great"], "negative": [" terrible", " bad"]},
        template="{virtual}Review: {text}", aliases={"production": 3, "staging": 4},
        base_models=[(FP, "smollm2")]))
    assert md.splitlines()[0] == "Movie review sentiment."
    assert "| task | classification |" in md and "| owner | alice |" in md
    assert "| methods | p_tuning (v4), prompt_tuning (v1–v3) |" in md
    assert 'negative → `" terrible"`, `" bad"`; positive → `" great"`' in md
    assert "**production** → v3, **staging** → v4" in md and "| versions | 4 (latest v4) |" in md
    assert wanted_tags(_facts()) == {"promptreg.gate.production": "failed", "promptreg.gate.production.baseline": "2",
                                     "promptreg.gate.production.id": "7", "promptreg.drift": "drift"}
    assert wanted_tags(_facts(gate=None, drift=None)) == {}


# ----------------------------------------------------------------------------------------- the real flow

SAYS_POSITIVE = dict(method="prefix_tuning", seed=0, scale=1.0)
SAYS_NEGATIVE = dict(method="prefix_tuning", seed=0, scale=5.0)


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    reg = Registry(home=str(tmp_path / ".promptreg"))
    for i, kind in enumerate((SAYS_POSITIVE, SAYS_NEGATIVE), start=1):
        reg.push(make_model_artifact(tmp_path / f"art{i}", tiny_model_dir, **kind), "toy",
                 description="toy sentiment")
    suite = load_suite(write_suite(tmp_path / "suite", positive_share=0.75, accuracy="{margin: 0.02}"))
    return reg, suite, Evaluator(reg, model=tiny_model_dir)


def _mlflow(reg):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=reg.settings.tracking_uri)


def _desc(reg, number: int) -> str:
    return _mlflow(reg).get_model_version("toy", reg.show(f"toy:{number}").mlflow_model_version).description


def _tags(reg, number: int) -> dict:
    return _mlflow(reg).get_model_version("toy", reg.show(f"toy:{number}").mlflow_model_version).tags


def _link(reg, run_id: str) -> str:
    return f"#/experiments/{_mlflow(reg).get_run(run_id).info.experiment_id}/runs/{run_id}"


def test_descriptions_follow_push_gate_promote_rollback_and_drift(project, tmp_path, tiny_model_dir):
    from promptreg.services.drift import check_drift

    reg, suite, ev = project
    client = _mlflow(reg)
    v1 = reg.show("toy:1")
    d1 = _desc(reg, 1)
    assert d1.startswith("toy:1 · aliases: none · status: active · gate vs production: none")
    assert f"[source run]({_link(reg, v1.mlflow_run_id)})" in d1 and "no gate run yet" in d1
    rm = client.get_registered_model("toy").description
    assert rm.startswith("toy sentiment") and "| owner | " in rm and '`" positive"`' in rm
    assert "| aliases | none |" in rm

    # promote v1 through the gate (no baseline yet): verdict, alias, eval run of its own
    promote(reg, "toy:1", "production", suite=suite, evaluator=ev)
    d1 = _desc(reg, 1)
    assert d1.startswith("toy:1 · aliases: production · status: active · gate vs production: passed")
    assert "**PASSED** vs no baseline (production was not set)" in d1
    assert "**production** → v1" in client.get_registered_model("toy").description
    assert _tags(reg, 1)["promptreg.gate.production"] == "passed"
    eval_exp = client.get_experiment_by_name("promptreg/toy/eval")
    (eval_run,) = client.search_runs([eval_exp.experiment_id], filter_string="tags.`promptreg.version` = '1'")
    assert eval_run.info.run_name == "v1-toy-sentiment" and eval_run.info.status == "FINISHED"
    assert eval_run.data.tags["promptreg.source_run"] == v1.mlflow_run_id
    assert _link(reg, v1.mlflow_run_id) in eval_run.data.tags["mlflow.note.content"]
    assert eval_run.data.metrics["eval/toy-sentiment/toy/accuracy"] == pytest.approx(0.75)
    files = {f.path for f in client.list_artifacts(eval_run.info.run_id, "eval/toy-sentiment")}
    assert {"eval/toy-sentiment/outcomes.json", "eval/toy-sentiment/comparison.png"} <= files
    assert {d.dataset.name for d in eval_run.inputs.dataset_inputs} == {"toy-sentiment/toy"}
    assert f"[eval run: toy-sentiment]({_link(reg, eval_run.info.run_id)})" in d1

    # a worse candidate: the failed gate with its numbers, on v2's description and tag
    with pytest.raises(GateFailedError):
        promote(reg, "toy:2", "production", suite=suite, evaluator=ev)
    d2 = _desc(reg, 2)
    assert "gate vs production: FAILED" in d2.splitlines()[0] and "**FAILED** vs toy:1" in d2
    assert "| toy/accuracy | 0.250 | 0.750 | -0.500 |" in d2 and "toy/accuracy non_inferiority" in d2
    assert _tags(reg, 2)["promptreg.gate.production"] == "failed"

    # forced over it: the old and the new holder are both rewritten; then rolled back
    promote(reg, "toy:2", "production", suite=suite, evaluator=ev, force=True, reason="test")
    assert "aliases: production" in _desc(reg, 2).splitlines()[0]
    assert "aliases: none" in _desc(reg, 1).splitlines()[0]
    rollback(reg, "toy", "production")
    assert "aliases: production" in _desc(reg, 1).splitlines()[0]
    assert "aliases: none" in _desc(reg, 2).splitlines()[0]
    assert "**production** → v1" in client.get_registered_model("toy").description

    # drift with the flag policy: status, decision, drift run link, promptreg.drift tag
    rows = [{"text": r["text"] + " the plot and the acting and the music were " + r["text"], "label": r["label"]}
            for r in sentiment_rows(60, seed=9, positive_share=0.95)]
    fresh = tmp_path / "shifted.jsonl"
    fresh.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = check_drift(reg, "toy@production", str(fresh), suite=suite, model=str(tiny_model_dir), action="flag")
    assert out.decision == "drift" and out.action == "flag" and reg.show("toy:1").status == "degraded"
    d1 = _desc(reg, 1)
    assert d1.splitlines()[0].endswith("status: degraded · gate vs production: passed · drift: drift")
    assert "decision **drift**, action **flag**" in d1 and Path(fresh).name in d1
    assert f"[drift run]({_link(reg, out.mlflow_run_id)})" in d1
    assert _tags(reg, 1)["promptreg.drift"] == "drift" and _tags(reg, 1)["promptreg.status"] == "degraded"
    assert reg.sync().repaired == 0      # every refresh left MLflow equal to the database


def test_sync_rewrites_tampered_descriptions_and_tags(project):
    reg, suite, ev = project
    promote(reg, "toy:1", "production", suite=suite, evaluator=ev)
    client = _mlflow(reg)
    good_model = client.get_registered_model("toy").description
    good = {n: _desc(reg, n) for n in (1, 2)}
    assert reg.sync().repaired == 0
    mv1 = reg.show("toy:1").mlflow_model_version
    client.update_registered_model("toy", description="edited by hand")
    client.update_model_version("toy", mv1, description="")
    client.delete_model_version_tag("toy", mv1, "promptreg.gate.production")
    report = reg.sync()
    assert report.failed == []
    assert report.descriptions_set == ["toy", "toy:1 description,promptreg.gate.production"]
    assert client.get_registered_model("toy").description == good_model
    assert {n: _desc(reg, n) for n in (1, 2)} == good
    assert _tags(reg, 1)["promptreg.gate.production"] == "passed"
    again = reg.sync()
    assert again.repaired == 0 and again.descriptions_set == []


def test_refresh_is_best_effort_when_mlflow_is_down(tmp_path, monkeypatch):
    from promptreg.services.describe import refresh_descriptions
    from tests.fixtures.services import free_port
    from tests.helpers import make_artifact

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")     # fail fast: nothing listens there
    home = str(tmp_path / ".promptreg")
    up = Registry(home=home)
    up.push(make_artifact(tmp_path / "a"), "p")
    down = Registry(home=home, tracking_uri=f"http://127.0.0.1:{free_port()}")
    (warning,) = refresh_descriptions(down, "p", {1})
    assert warning.startswith("MLflow: descriptions of p not updated (") and "promptreg sync" in warning
    assert "\n" not in warning
    assert refresh_descriptions(down, "nope", {1})[0].startswith("MLflow: descriptions of nope not updated")
    info = down.set_alias("p", "staging", 1)          # the move commits; MLflow is repaired later
    assert info.version == 1 and down.show("p@staging").version == 1
    assert up.sync().failed == [] and "aliases: staging" in _mlflow(up).get_model_version("p", "1").description
