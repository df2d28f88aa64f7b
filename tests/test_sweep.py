"""``promptreg sweep`` (issue 19): the pure grid / successive-halving / winner logic on hand-built
data, and one sweep on the tiny model (child runs under one parent, the table, the plot, one version)."""

from __future__ import annotations

import json

import pytest

from promptreg.errors import InputError
from promptreg.training.sweep import Outcome, Trial, best, grid, ranked, rungs, survivors

INITS = {"prompt_tuning": ("random", "vocab", "text", "labels"), "prefix_tuning": ("activations", "random"),
         "id_spam": ()}


def _o(key: str, score, params: int = 10, **kw) -> Outcome:
    return Outcome(Trial("prompt_tuning", int(key), None, 0.1), score, params, **kw)


def test_grid_crosses_what_each_method_accepts():
    trials = grid(["prompt_tuning", "id_spam"], [1, 4], ["labels", "random"], [0.1, 0.01], INITS)
    pt = [t for t in trials if t.method == "prompt_tuning"]
    ids = [t for t in trials if t.method == "id_spam"]
    assert len(pt) == 2 * 2 * 2 and len(ids) == 2 * 2  # id_spam has no init: one init (None) per length/lr
    assert all(t.init is None for t in ids) and len({t.key for t in trials}) == len(trials)
    assert grid(["prompt_tuning"], [4], [None], [0.1], INITS) == [Trial("prompt_tuning", 4, None, 0.1)]
    with pytest.raises(InputError, match="activation"):
        grid(["prompt_tuning"], [4], ["activation"], [0.1], INITS)  # a typo is refused, not dropped
    for bad in ({"lengths": [0]}, {"lrs": [-1.0]}, {"lengths": []}):
        args = {"methods": ["prompt_tuning"], "lengths": [4], "inits": [None], "lrs": [0.1], **bad}
        with pytest.raises(InputError):
            grid(args["methods"], args["lengths"], args["inits"], args["lrs"], INITS)


def test_rungs():
    assert rungs(40, 5, 2) == [5, 10, 20, 40]
    assert rungs(30, 4, 3) == [4, 12, 30]
    assert rungs(40, None, 2) == [40] and rungs(10, 10, 2) == [10] and rungs(10, 20, 2) == [10]
    with pytest.raises(InputError):
        rungs(10, 2, 1)


def test_successive_halving_keeps_the_best_fraction_ties_to_fewer_parameters():
    outs = [_o("1", 0.5), _o("2", 0.9), _o("3", 0.7, params=50), _o("4", 0.7, params=5), _o("5", None)]
    kept = survivors(outs, 2)
    assert [o.trial.num_virtual_tokens for o in kept] == [2, 4, 3]  # ceil(5/2) = 3; tie -> fewer params
    assert [o.trial.num_virtual_tokens for o in survivors(outs, 10)] == [2]  # at least one
    finished = [_o("1", 0.9, finished=True), _o("2", 0.1), _o("3", 0.2)]
    assert [o.trial.num_virtual_tokens for o in survivors(finished, 2)] == [3]  # finished ones take no slot
    assert survivors([_o("1", 0.3, stopped=True)], 2) == []


def test_best_ignores_stopped_trials_and_breaks_ties_by_parameters():
    outs = [_o("1", 0.8, params=100), _o("2", 0.8, params=10), _o("3", 0.95, stopped=True), _o("4", None)]
    assert best(outs).trial.num_virtual_tokens == 2
    assert [o.trial.num_virtual_tokens for o in ranked(outs)][:2] == [3, 2]
    with pytest.raises(InputError, match="evaluated"):
        best([_o("1", None)])


def test_sweep_figure_and_table_render_rows():
    from promptreg.reporting.figures import figure_png_bytes, sweep_figure
    from promptreg.reporting.text import sweep_markdown, sweep_table

    rows = [{"key": f"m-n{n}", "method": m, "num_virtual_tokens": n, "init": None, "lr": 0.1, "metric": s,
             "score": s, "steps": 8, "seconds": 1.0, "parameters": n * 64, "status": st}
            for m, n, s, st in [("prompt_tuning", 1, 0.6, "finished"), ("prompt_tuning", 4, 0.8, "best"),
                                ("id_spam", 4, 0.5, "stopped at step 2"), ("id_spam", 1, 0.7, "finished")]]
    assert figure_png_bytes(sweep_figure(rows, "eval_accuracy")).startswith(b"\x89PNG")
    lines = sweep_table(rows, "eval_accuracy")
    assert "eval_accuracy" in lines[0] and len(lines) == 2 + len(rows) and "0.8000" in lines[3]
    assert sweep_markdown(rows, "eval_accuracy")[2].startswith("| m-n1 | prompt_tuning | 1 |")


def test_sweep_on_the_tiny_model_child_runs_table_plot_one_version(tmp_path, tiny_model_dir):
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from promptreg import Registry
    from promptreg.cli.main import cli
    from tests.test_training import TEMPLATE, toy_examples, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(48, 3))
    home = ["--home", str(tmp_path / ".promptreg")]
    args = ["sweep", "--model", str(tiny_model_dir), "--train", str(train), "--labels", "negative,positive",
            "--template", TEMPLATE, "--method", "prompt_tuning,id_spam", "--num-virtual-tokens", "1,4",
            "--lr", "0.05", "--layer", "1", "--bottleneck", "8", "--max-steps", "8", "--min-steps", "2",
            "--batch-size", "8", "--eval-fraction", "0.25", "--device", "cpu"]
    # in-process (the CLI's own code path; a subprocess would re-import torch on a busy machine)
    res = CliRunner().invoke(cli, [*home, *args, "--plot", str(tmp_path / "sweep.png"), "--push", "swept"])
    assert res.exit_code == 0, (res.output, res.exception)
    out = res.output
    assert "trial" in out and "eval_accuracy" in out and "best:" in out and "pushed swept:1" in out, out
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    reg = Registry(home=str(tmp_path / ".promptreg"))
    versions = reg.list_versions("swept")
    assert len(versions) == 1  # only the winner is registered
    manifest = reg.manifest("swept:1")
    sweep = manifest["extra"]["sweep"]
    assert len(sweep["trials"]) == 4 and sweep["rungs"] == [2, 4, 8]
    winner = next(t for t in sweep["trials"] if t["status"] == "best")
    assert sweep["winner"] == winner["key"] and manifest["method"] == winner["method"]
    assert manifest["num_virtual_tokens"] == winner["num_virtual_tokens"]
    assert sum(t["status"].startswith("stopped") for t in sweep["trials"]) >= 1  # halving stopped some
    # the winner is the best by metric, ties to fewer parameters
    done = [t for t in sweep["trials"] if not t["status"].startswith("stopped")]
    assert min(done, key=lambda t: (-t["metric"], t["parameters"]))["key"] == winner["key"]

    client = MlflowClient(tracking_uri=reg.settings.tracking_uri)
    parent = client.get_run(sweep["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == sorted(t["key"] for t in sweep["trials"])
    for c in children:
        assert c.info.status == "FINISHED"
        assert {"score", "steps", "seconds", "parameters"} <= set(c.data.metrics)
    assert parent.info.status == "FINISHED" and parent.data.tags["promptreg.sweep_best"] == winner["key"]
    assert reg.show("swept:1").mlflow_run_id == next(c.info.run_id for c in children
                                                    if c.info.run_name == winner["key"])
    res = CliRunner().invoke(cli, [*home, *args, "--init", "nonsense", "--json"])
    assert isinstance(res.exception, InputError) and "nonsense" in str(res.exception)
    assert "\n" not in str(res.exception) and len(reg.list_versions("swept")) == 1


@pytest.mark.heavy  # spawns two worker processes that each import torch and load the model (~1-2 min here)
def test_sweep_in_worker_processes_equals_in_process(tmp_path, tiny_model_dir):
    from promptreg import Registry
    from promptreg.data.examples import DataSpec
    from promptreg.services.sweep import SweepJob
    from promptreg.services.train import TrainJob
    from promptreg.training.trainer import TrainConfig
    from tests.test_training import TEMPLATE, toy_examples, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(32, 4))
    reg = Registry(home=str(tmp_path / ".promptreg"))

    def run(processes: int):
        base = TrainJob(model=str(tiny_model_dir), train_path=train, spec=DataSpec(labels=["negative", "positive"]),
                        config=TrainConfig(template=TEMPLATE, max_steps=4, batch_size=8), eval_fraction=0.25,
                        progress=False, notes=False, device="cpu")
        return reg.sweep(SweepJob(base=base, methods=["prompt_tuning"], lengths=[1, 2], lrs=[0.05],
                                  min_steps=2, processes=processes))

    one, two = run(1), run(2)
    assert json.dumps([(r["key"], r["metric"], r["steps"], r["status"]) for r in one.rows]) == \
        json.dumps([(r["key"], r["metric"], r["steps"], r["status"]) for r in two.rows])
