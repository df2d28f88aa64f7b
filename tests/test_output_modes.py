"""Output modes (issue 20): every command has -q/--quiet and (except the long-running servers, the
schedule exporter and the completion script) --json; --quiet prints nothing but errors and --json;
train --no-progress hides only the bar, not the per-evaluation lines."""

from __future__ import annotations

import json

import click
import pytest

from promptreg.cli.main import cli
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import make_artifact

# commands whose stdout is not a result: servers and daemons, a generated file, a shell script, a secret
NO_JSON = {"serve", "server", "ui", "scheduler", "events run", "schedule export", "completion", "webhook keygen"}


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_command_has_the_output_modes():
    missing_quiet, missing_json = [], []
    for path, cmd in _commands(cli):
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        if not {"-q", "--quiet"} <= opts:
            missing_quiet.append(path)
        if "--json" not in opts and path not in NO_JSON:
            missing_json.append(path)
    assert missing_quiet == [] and missing_json == []


def test_quiet_json_and_default(tmp_path):
    art = make_artifact(tmp_path / "art")
    res = run_cli("push", art, "--name", "toy", "-q", cwd=tmp_path)
    assert res.code == 0 and res.out == "" and res.err == "", res
    res = run_cli("push", art, "--name", "toy", cwd=tmp_path)
    assert res.code == 0 and "already registered" in res.out
    for args in (["list"], ["list", "toy"], ["show", "toy:1"], ["history", "toy"]):
        assert run_cli(*args, "--quiet", cwd=tmp_path).out == ""
        assert json.loads(run_cli(*args, "-q", "--json", cwd=tmp_path).out)
        assert run_cli(*args, cwd=tmp_path).out.strip()
    res = run_cli("pull", "toy:1", tmp_path / "pulled", "--json", cwd=tmp_path)
    assert res.code == 0 and res.json()["version"] == 1 and res.json()["verified"] is True
    res = run_cli("pull", "toy:1", tmp_path / "pulled2", "-q", cwd=tmp_path)
    assert res.code == 0 and res.out == "" and (tmp_path / "pulled2" / "promptreg.json").is_file()
    assert run_cli("db", "current", "--json", cwd=tmp_path).json()["revision"]
    # errors are the same one line in every mode
    for mode in ([], ["-q"], ["--json"]):
        assert_one_line_error(run_cli("show", "toy:7", *mode, cwd=tmp_path), 2, "toy has no version 7")


def test_progress_notes_without_bar(capsys):
    from promptreg.training.trainer import _Progress

    _Progress(10, enabled=False, notes=True).note("step 1: eval loss 1.0")
    _Progress(10, enabled=False, notes=False).note("hidden")
    err = capsys.readouterr().err
    assert err == "step 1: eval loss 1.0\n"


@pytest.mark.parametrize("mode", ["--no-progress", "-q"])
def test_train_no_progress_keeps_eval_lines_quiet_hides_them(tmp_path, tiny_model_dir, mode):
    from tests.test_training import TEMPLATE, toy_examples, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", toy_examples(24, 3))
    res = run_cli("train", "--model", tiny_model_dir, "--train", train, "--labels", "negative,positive",
                  "--template", TEMPLATE, "--num-virtual-tokens", "2", "--max-steps", "2", "--eval-every", "1",
                  "--batch-size", "8", "--no-zero-shot", mode, cwd=tmp_path, timeout=600)
    assert res.code == 0, res.err
    evals = [line for line in res.err.splitlines() if line.startswith("step ") and "eval" in line]
    if mode == "--no-progress":
        assert [line.split(":")[0] for line in evals] == ["step 1", "step 2"], res.err
        assert "trained prompt_tuning: 2 steps" in res.out
    else:
        assert evals == [] and res.out == "" and "warning" not in res.err, res
