"""promptreg.codec: every result type of the API survives encode -> JSON -> decode unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from promptreg.codec import decode, encode
from promptreg.evaluation.results import (
    CheckOutcome,
    DatasetEval,
    EvalResult,
    GateReport,
    McNemar,
    MetricDecision,
    RuleResult,
)
from promptreg.services.drift import DriftOutcome
from promptreg.services.gc import GcReport, Orphan
from promptreg.services.lifecycle import MoveResult
from promptreg.services.schedule import RunResult, ScheduleInfo
from promptreg.services.views import AuditEntry, Check, PromptSummary, PushResult, SyncReport, VersionInfo


def _wire(obj):
    return decode(type(obj), json.loads(json.dumps(encode(obj))))


VERSION = VersionInfo(name="toy", version=3, sha256="a" * 64, method="prompt_tuning", num_virtual_tokens=4,
                      artifact_uri="s3://b/x", size_bytes=10, base_model_fingerprint="f" * 64, base_model_name=None,
                      dataset_fingerprint=None, metrics={"accuracy": 1.0, "f1": 0.5}, method_config={"init": "random"},
                      task_type="classification", aliases=["production"], status="active", mirror_status="ok",
                      mirror_error=None, mlflow_run_id="r", mlflow_model_version="3", description="",
                      created_by="ci-bot", created_at="2027-01-01T00:00:00+00:00")
CHECK = CheckOutcome("mft", "mft", 10, 1, 0.2, [{"text": "x", "got": "neg"}])
GATE = GateReport(prompt="toy", candidate=2, candidate_sha256="b" * 64, baseline=1, baseline_sha256="a" * 64,
                  against="production", suite_name="s", suite_sha256="c" * 64, base_model_fingerprint="f" * 64,
                  metrics=[MetricDecision("toy", "accuracy", 0.8, 0.9, -0.1, -0.2, 0.0, 0.95, "BCa", 0.02, True,
                                          [RuleResult("non_inferiority", False, "CI low -0.2 <= -0.02")])],
                  checks=[CHECK], mcnemar=[McNemar("toy", 1, 5, 0.21875)], notes=["n"], gate_id=7, cached=True)


def test_round_trips():
    samples = [
        VERSION,
        PushResult(VERSION, created=False, warnings=["w"]),
        PromptSummary("toy", None, "", 2, 2, {"production": 1}, "2027"),
        AuditEntry(1, "2027", "ci-bot", "promote", "toy", "production", 1, 2, None, {"gate_id": 3}),
        Check("registry database", "sqlite:///x", True, "schema 0004", "default"),
        SyncReport(aliases_set=["toy@staging"], failed=["x"]),
        EvalResult(prompt="toy", version=1, sha256="a" * 64, task="classification", suite_name="s",
                   suite_sha256="c" * 64, base_model_fingerprint="f" * 64,
                   datasets=[DatasetEval("toy", "d" * 64, 40, {"accuracy": 0.75})], checks=[CHECK],
                   outcomes={"toy": [{"i": 0, "ok": True}]}, seconds=1.5, eval_run_id=4),
        GATE,
        MoveResult("toy", "production", 2, 1, "promote", GATE, forced=True, reason="r", warnings=[]),
        DriftOutcome(prompt="toy", alias="production", version=1, data_uri="d.jsonl", data_fingerprint="e" * 64,
                     rows=60, labelled=True, reference="golden", reference_rows=40, base_model_fingerprint="f" * 64,
                     version_base_model_fingerprint="f" * 64, tests=[{"name": "ks", "p": 0.5}],
                     performance={"accuracy": 0.7}, decision="drift", action="report"),
        ScheduleInfo(1, "toy", "production", "0 3 * * *", "s3://b/p", None, {"action": "report"}, True,
                     "2027", None, None, None, None, "ci-bot", "2027"),
        RunResult(1, 2, "toy@production", "2027", "ok", 1, None, 5, 0.5),
        GcReport("s3://b", 3600.0, True, 3, 4, [Orphan("upload", None, "/tmp/x", 10.0, 5, True)], ["m"], []),
    ]
    for obj in samples:
        back = _wire(obj)
        assert back == obj, type(obj).__name__
        assert back.to_dict() == obj.to_dict() if not isinstance(obj, EvalResult) else back.to_dict(outcomes=True) == obj.to_dict(outcomes=True)
    assert _wire(GATE).passed is False and _wire(GATE).failures() == GATE.failures()


def test_lists_paths_unknown_keys_and_defaults():
    assert decode(list[Check], encode([Check("a", "b", True, "c")])) == [Check("a", "b", True, "c")]
    data = encode(VERSION) | {"added_by_a_newer_server": 1}
    assert decode(VersionInfo, data) == VERSION
    partial = {k: v for k, v in encode(PushResult(VERSION, True)).items() if k != "warnings"}
    assert decode(PushResult, partial).warnings == []
    assert encode({"p": Path("/x")}) == {"p": "/x"}
    assert isinstance(decode(VersionInfo, encode(VERSION) | {"metrics": {"accuracy": 1}}).metrics["accuracy"], float)
