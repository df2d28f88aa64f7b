"""eval, gate and drift under torchrun with 2 gloo processes (runtime/parallel.py): rank 0 runs the
command, rank 1 scores half of every request's rows. Each launched run is compared with the same
command in one process: the same numbers (probabilities within fp32 tolerance, identical predictions,
checks and verdicts), one JSON document on stdout (rank 1 prints nothing), and one eval run / gate
result / drift report and audit event written (rank 1 never opens the registry). The golden set has
an odd row count, so the two shards are uneven."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest

from promptreg import Registry
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_model_artifact, sentiment_rows, write_suite
from tests.test_training_scale import _torchrun


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    home = tmp_path / ".promptreg"
    reg = Registry(home=str(home))
    for seed in (0, 1):
        reg.push(make_model_artifact(tmp_path / f"art{seed}", tiny_model_dir, method="prefix_tuning", seed=seed,
                                     scale=2.0), "toy")
    suite = write_suite(tmp_path / "suite", rows=41, positive_share=0.6)
    return reg, home, suite


def _count(reg, sql: str) -> int:
    import sqlalchemy as sa

    with reg.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar())


def _both(tmp_path, home, *args):
    """(one process's JSON, two processes' JSON) of ``promptreg --home HOME ARGS --json``."""
    one = run_cli("--home", home, *args, "--json", cwd=tmp_path, timeout=300)
    assert one.code in (0, 1), one.err
    two = _torchrun("-m", "promptreg.cli.main", "--home", home, *args, "--json", cwd=tmp_path)
    assert two.returncode == one.code, two.stderr[-3000:]
    (shares,) = re.findall(r"note: data-parallel scoring on 2 ranks: (\d+), (\d+) rows", two.stderr)
    assert all(int(n) > 0 for n in shares), shares            # rank 1 scored its share, not rank 0 all
    assert abs(int(shares[0]) - int(shares[1])) <= 4, shares  # one row per request at most (up to 4 requests)
    return json.loads(one.out), json.loads(two.stdout)   # a second document (rank 1 printing) fails here


def _same_outcomes(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert len(a[name]) == len(b[name])
        for x, y in zip(a[name], b[name], strict=True):
            assert x.keys() == y.keys()
            for key in x:
                if isinstance(x[key], float | list) and key != "text":
                    np.testing.assert_allclose(np.asarray(x[key], dtype=float), np.asarray(y[key], dtype=float),
                                               rtol=1e-5, atol=1e-6)
                else:
                    assert x[key] == y[key], (key, x, y)


def test_eval_under_torchrun_equals_one_process_and_only_rank_0_writes(project, tmp_path):
    reg, home, suite = project
    runs0 = _count(reg, "SELECT count(*) FROM eval_run")
    one, two = _both(tmp_path, home, "eval", "toy:2", "--suite", suite, "--against", "none", "--no-cache")
    assert _count(reg, "SELECT count(*) FROM eval_run") == runs0 + 2          # one per command, not per rank
    assert _count(reg, "SELECT count(*) FROM audit_event WHERE action = 'eval'") == 2
    for d1, d2 in zip(one["datasets"], two["datasets"], strict=True):
        assert d1["rows"] == d2["rows"] == 41
        for metric, value in d1["metrics"].items():
            assert d2["metrics"][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), metric
    assert [(c["name"], c["failures"], c["cases"]) for c in one["checks"]] == \
           [(c["name"], c["failures"], c["cases"]) for c in two["checks"]]
    _same_outcomes(one["outcomes"], two["outcomes"])
    assert two["eval_run_id"] != one["eval_run_id"] and not two["cached"]


def test_gate_and_drift_under_torchrun_give_one_process_verdicts(project, tmp_path, tiny_model_dir):
    reg, home, suite = project
    one, two = _both(tmp_path, home, "gate", "toy:2", "--suite", suite, "--against", "1", "--no-cache")
    assert one["passed"] == two["passed"]
    assert [(m["dataset"], m["metric"], m["passed"]) for m in one["metrics"]] == \
           [(m["dataset"], m["metric"], m["passed"]) for m in two["metrics"]]
    for m1, m2 in zip(one["metrics"], two["metrics"], strict=True):
        for key in ("candidate", "baseline", "diff", "ci_low", "ci_high"):
            assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-6), (m1["metric"], key)
    assert [(c["name"], c["failures"]) for c in one["checks"]] == [(c["name"], c["failures"]) for c in two["checks"]]
    assert one["mcnemar"] == two["mcnemar"]
    assert _count(reg, "SELECT count(*) FROM gate_result") == 2

    fresh = _jsonl(tmp_path / "fresh.jsonl", sentiment_rows(33, seed=5, positive_share=0.3))
    reports0 = _count(reg, "SELECT count(*) FROM drift_report")
    one, two = _both(tmp_path, home, "drift", "toy:1", "--data", fresh, "--suite", suite, "--model", tiny_model_dir,
                     "--action", "report")
    assert _count(reg, "SELECT count(*) FROM drift_report") == reports0 + 2
    assert (one["decision"], one["drift"]) == (two["decision"], two["drift"])
    assert [t["name"] for t in one["tests"]] == [t["name"] for t in two["tests"]]
    for t1, t2 in zip(one["tests"], two["tests"], strict=True):
        assert t2["statistic"] == pytest.approx(t1["statistic"], rel=1e-4, abs=1e-6), t1["name"]
    assert two["performance"]["explain"].split("(")[0] == one["performance"]["explain"].split("(")[0]


def test_generation_eval_under_torchrun_gives_the_same_outputs(tmp_path, tiny_model_dir):
    from promptreg.artifact.builder import write_artifact
    from tests.helpers import prompt_shape

    home = tmp_path / ".promptreg"
    reg = Registry(home=str(home))
    one_art = make_model_artifact(tmp_path / "c", tiny_model_dir)        # for its base-model block
    from promptreg.artifact.manifest import MANIFEST_FILE

    manifest = json.loads((one_art / MANIFEST_FILE).read_text())
    base = manifest["base_model"]
    rng = np.random.default_rng(3)
    art = write_artifact(tmp_path / "gen", method="prompt_tuning",
                         tensors={"prompt_embeddings": rng.standard_normal(prompt_shape("prompt_tuning", base, 4))
                                  .astype(np.float32)},
                         base_model=base, task={"type": "generation", "template": "{virtual}{text}"},
                         method_config={"init": "random", "seed": 3}, created_by="tests")
    reg.push(art, "gen")
    _jsonl(tmp_path / "qa.jsonl", [{"text": f"the movie was {w} and", "target": "good"}
                                   for w in ("great", "bad", "dull", "fun", "long")])
    (tmp_path / "gen.yaml").write_text(textwrap.dedent("""\
        name: gen
        task: generation
        golden:
          - name: qa
            path: qa.jsonl
            metrics:
              exact_match: {min: 0.0}
        """))
    one, two = _both(tmp_path, home, "eval", "gen:1", "--suite", tmp_path / "gen.yaml", "--against", "none", "--no-cache",
                     "--model", tiny_model_dir)
    outputs = [o["output"] for o in one["outcomes"]["qa"]]
    assert any(outputs) and outputs == [o["output"] for o in two["outcomes"]["qa"]]


def test_a_failing_command_under_torchrun_ends_every_rank_with_one_error(project, tmp_path):
    _, home, suite = project
    res = _torchrun("-m", "promptreg.cli.main", "--home", home, "eval", "toy:9", "--suite", suite, cwd=tmp_path,
                    timeout=180)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: toy has no version 9"], res.stderr[-2000:]
    single = run_cli("--home", home, "eval", "toy:9", "--suite", suite, cwd=tmp_path)
    assert_one_line_error(single, match="toy has no version 9")
