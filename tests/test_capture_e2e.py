"""Capture -> scheduled drift -> report, end to end with the real serving app (uvicorn on loopback, the
tiny model): shifted traffic is captured with its request ids, ``schedule add --data captured`` + run-due
report drift on it with the label-free estimate; then more traffic with true labels posted to
/feedback, and the next scheduled run (reading only the traffic since the previous run) MEASURES the
accuracy and finds the performance drift. The served version (prefix tuning, random weights) answers
"positive" to these long reviews, its manifest records accuracy 0.5, and the traffic is 95% negative."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import pytest

from promptreg import Registry
from tests.helpers import make_model_artifact, sentiment_rows
from tests.test_serving import _Server

VERSION = dict(method="prefix_tuning", seed=0, scale=5.0)


def _shifted(n: int, seed: int) -> list[dict]:
    return [{"text": r["text"] + " the plot and the acting and the music were " + r["text"], "label": r["label"]}
            for r in sentiment_rows(n, seed=seed, positive_share=0.05)]


def _cli(home: str, *args) -> int:
    from promptreg.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--home", home, *map(str, args)])
    return exc.value.code


def _report(reg, report_id: int) -> tuple[dict, dict]:
    """(drift_report row statistics, the stored drift_report.json) of one report."""
    import sqlalchemy as sa

    with reg.engine.connect() as conn:
        stats, uri, sha = conn.execute(sa.text("SELECT statistics, report_uri, report_sha256 FROM drift_report "
                                               "WHERE id = :i"), {"i": report_id}).one()
    folder = reg.store.fetch(uri, reg.settings.home / f"report-{report_id}", sha)
    stats = json.loads(stats) if isinstance(stats, str) else stats
    return stats, json.loads((folder / "drift_report.json").read_text())


def test_captured_traffic_feeds_scheduled_drift_and_feedback_makes_it_measured(tmp_path, tiny_model_dir, capsys,
                                                                             monkeypatch):
    from promptreg.fingerprints.dataset import dataset_fingerprint
    from promptreg.runtime.capture import Capturer
    from promptreg.runtime.server import create_app
    from promptreg.runtime.service import PromptRuntime

    monkeypatch.chdir(tmp_path)
    home = str(tmp_path / ".promptreg")
    reg = Registry(home=home)
    reg.push(make_model_artifact(tmp_path / "art", tiny_model_dir, **VERSION), "toy")
    reg.set_alias("toy", "production", 1)
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(60, seed=1)))

    capture = Capturer(reg.store, rate=1.0, flush_s=0.2)
    app = create_app(PromptRuntime(reg, tiny_model_dir, device="cpu"), max_wait_ms=5, capture=capture)
    traffic_a, traffic_b = _shifted(40, seed=9), _shifted(40, seed=11)
    t0 = dt.datetime.now(dt.UTC)
    with _Server(app) as srv:
        # phase A: shifted traffic, no labels; every answer carries its request id
        code, _, body = srv.call("/v1/classify", {"requests": [{"ref": "toy@production", "text": r["text"]}
                                                              for r in traffic_a]})
        answers_a = json.loads(body)["results"]
        assert code == 200 and len({a["request_id"] for a in answers_a}) == 40
        capture.flush()
        assert _cli(home, "schedule", "add", "toy@production", "--cron", "* * * * *", "--data", "captured",
                    "--policy", f"model={tiny_model_dir}", "--policy", f"reference={reference}",
                    "--policy", "action=report", "--json") == 0
        capsys.readouterr()
        (run1,) = reg.run_due(now=t0 + dt.timedelta(seconds=61))
        assert run1.status == "ok", run1.error
        stats, doc = _report(reg, run1.drift_report_id)
        assert stats["data"]["source"] == "captured" and stats["data"]["rows"] == 40
        assert stats["data"]["labelled_rows"] == 0 and stats["performance"] is None
        assert doc["data_fingerprint"] == dataset_fingerprint([{"text": r["text"]} for r in traffic_a])
        assert doc["source"] == "captured" and doc["window"]["versions"] == [1]
        assert any("ESTIMATED" in n for n in doc["notes"])
        assert any(t["name"].startswith("confidence") for t in doc["tests"]) and doc["decision"] == "drift"

        # phase B: more traffic; the true labels arrive later through /feedback
        answers_b = []
        for r in traffic_b[:2]:       # single requests: the id is also the X-Request-Id header
            req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/classify",
                                         data=json.dumps({"ref": "toy@production", "text": r["text"]}).encode())
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.loads(resp.read())
                assert resp.headers["X-Request-Id"] == answer["request_id"]
            answers_b.append(answer)
        code, _, body = srv.call("/v1/classify", {"requests": [{"ref": "toy@production", "text": r["text"]}
                                                              for r in traffic_b[2:]]})
        answers_b += json.loads(body)["results"]
        rid = answers_b[0]["request_id"]
        for bad, why in (({"request_id": "nope", "label": "positive"}, "32-hex-digit"),
                         ({"request_id": rid, "label": "maybe"}, "not one of the version's labels"),
                         ({"request_id": rid, "label": "positive", "x": 1}, "unknown feedback field")):
            code, _, body = srv.call("/feedback", bad)
            assert code == 400 and why in json.loads(body)["error"]
        code, _, body = srv.call("/feedback", {"request_id": rid, "label": traffic_b[0]["label"]})
        assert code == 202 and json.loads(body) == {"request_id": rid, "accepted": True}
        code, _, body = srv.call("/feedback", {"feedback": [{"request_id": a["request_id"], "label": r["label"]}
                                                            for a, r in zip(answers_b[1:], traffic_b[1:], strict=True)]})
        assert code == 202 and json.loads(body) == {"accepted": 39}
        code, _, metrics = srv.call("/metrics")
        assert 'promptreg_capture_rows_total{outcome="offered"} 80' in metrics
    # the server stopped: its flusher wrote what was still queued
    assert capture.stats.written == 80 and capture.stats.feedback_written == 40 and capture.queued == 0

    (run2,) = reg.run_due(now=t0 + dt.timedelta(seconds=130))
    assert run2.status == "ok", run2.error
    stats, doc = _report(reg, run2.drift_report_id)
    assert stats["data"]["rows"] == 40 and stats["data"]["labelled_rows"] == 40       # phase B only
    perf = doc["performance"]
    want = sum(a["label"] == r["label"] for a, r in zip(answers_b, traffic_b, strict=True)) / 40
    assert perf["estimated"] is False and perf["metric"] == "accuracy" and perf["value"] == pytest.approx(want)
    assert want < 0.2 and perf["recorded"] == 0.5 and perf["drift"] is True
    assert doc["decision"] == "drift"
    assert not any("ESTIMATED" in n for n in doc["notes"])

    # the same traffic directly: promptreg drift REF --data captured:SINCE (all 80 rows, 40 labelled)
    code = _cli(home, "drift", "toy@production", "--data", "captured:1h", "--model", tiny_model_dir,
                "--reference", reference, "--action", "report")
    out = capsys.readouterr().out
    assert code == 1, out
    assert "on 80 captured rows (40 labelled by feedback)" in out and "captured traffic" in out
    assert "performance: accuracy" in out
