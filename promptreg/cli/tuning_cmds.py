"""sweep, migrate: many trainings from one command (a grid with successive halving) and carrying a
registered prompt to a new base model."""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.completion import complete_ref
from promptreg.cli.config_file import config_option
from promptreg.cli.output import emit_json, quiet, short, warn
from promptreg.cli.train_cmds import DEFAULT_TEMPLATE, data_spec


def _list(value: str | None, cast, what: str) -> list:
    from promptreg.errors import InputError

    if value is None:
        return []
    try:
        return [cast(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what} expects a comma-separated list, got {value!r}") from None


@click.command("sweep")
@config_option
@click.option("--model", default="smollm2", show_default=True, help="Base model: a transformers folder, or 'smollm2'.")
@click.option("--train", "train_path", required=True, type=click.Path(path_type=Path), help="Training data (JSONL/CSV).")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path), help="Evaluation data (default: a seeded split of --train).")
@click.option("--eval-fraction", default=0.1, show_default=True, help="Held-out fraction when no --eval file.")
@click.option("--task", type=click.Choice(["classification", "generation"]), default="classification", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--target-column", default="target", show_default=True)
@click.option("--labels", help="Declared labels, comma-separated (default: inferred from the training data).")
@click.option("--verbalizer", multiple=True, help="LABEL=ANSWER (repeatable); default answer is ' LABEL'.")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True)
@click.option("--method", "methods", default="prompt_tuning", show_default=True, help="Methods, comma-separated.")
@click.option("--num-virtual-tokens", "lengths", default="1,4,8,20", show_default=True,
              help="Prompt lengths, comma-separated.")
@click.option("--init", "inits", help="Initialisations, comma-separated (each applies to the methods that have it).")
@click.option("--init-text", help="Text for --init text.")
@click.option("--lr", "lrs", default="0.03", show_default=True, help="Learning rates, comma-separated.")
@click.option("--layer", type=int, help="ID-SPAM: the layer the prompt is prepended at.")
@click.option("--bottleneck", type=int, help="ID-SPAM: bottleneck width.")
@click.option("--max-steps", default=60, show_default=True, help="Optimizer steps of a trial that survives every rung.")
@click.option("--min-steps", type=int, help="Steps of the first rung of successive halving (none: no halving).")
@click.option("--eta", default=2, show_default=True, help="Successive halving keeps the best 1/eta at each rung.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--eval-limit", type=int, help="Evaluate on at most this many eval examples.")
@click.option("--patience", default=3, show_default=True, help="Early stopping: evaluations without improvement.")
@click.option("--max-text-tokens", default=128, show_default=True)
@click.option("--train-limit", type=int, help="Train on at most this many examples (seeded sample).")
@click.option("--seed", default=0, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--processes", default=1, show_default=True, help="Run each rung's trials in this many worker processes.")
@click.option("--plot", type=click.Path(path_type=Path), help="Where to save the plot (default: the sweep folder).")
@click.option("--push", "push_name", help="Register the best trial under this name.")
@click.option("--description", help="Description of the pushed version.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def sweep_cmd(obj, **kw):
    """Train a grid of soft prompts (methods x lengths x inits x learning rates), stop those that fall
    behind (successive halving), compare them, and with --push register only the best."""
    from promptreg.reporting.text import sweep_table
    from promptreg.services.sweep import SweepJob
    from promptreg.services.train import TrainJob
    from promptreg.training.trainer import TrainConfig

    config = TrainConfig(template=kw["template"], max_steps=kw["max_steps"], batch_size=kw["batch_size"],
                         eval_limit=kw["eval_limit"], patience=kw["patience"], max_text_tokens=kw["max_text_tokens"],
                         seed=kw["seed"], precision=kw["precision"])
    spec = data_spec(kw)
    base = TrainJob(model=kw["model"], train_path=kw["train_path"], spec=spec, config=config,
                    eval_path=kw["eval_path"], eval_fraction=kw["eval_fraction"], train_limit=kw["train_limit"],
                    zero_shot=False, push=kw["push_name"], description=kw["description"], progress=False,
                    notes=False, device=kw["device"])
    job = SweepJob(base=base, methods=_list(kw["methods"], str, "--method"),
                   lengths=_list(kw["lengths"], int, "--num-virtual-tokens"),
                   inits=_list(kw["inits"], str, "--init") or [None], lrs=_list(kw["lrs"], float, "--lr"),
                   min_steps=kw["min_steps"], eta=kw["eta"], processes=kw["processes"], plot=kw["plot"],
                   method_options={"init_text": kw["init_text"], "layer": kw["layer"], "bottleneck": kw["bottleneck"]})
    report = obj.get().sweep(job)
    if not quiet():
        for w in report.warnings:
            warn(w)
    if kw["as_json"]:
        emit_json(report.to_dict())
        return 0
    click.echo(f"sweep of {len(report.rows)} trials (rungs {', '.join(map(str, report.rungs))} steps) "
               f"in {report.seconds:.0f} s; mlflow run {report.run_id}")
    for line in sweep_table(report.rows, report.metric):
        click.echo(line)
    click.echo(f"best: {report.best}; plot {report.plot}")
    if report.pushed is not None:
        v = report.pushed.version
        click.echo(f"pushed {v.name}:{v.version}  sha256 {short(v.sha256)}")
    return 0


@click.command("migrate")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--to-model", required=True, help="The new base model: a transformers folder, or 'smollm2'.")
@click.option("--suite", "suite_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Gate the candidate (on the new model) against REF (on its own model) with this suite.")
@click.option("--from-model", help="REF's own base model folder, when the one its manifest names has moved.")
@click.option("--max-steps", type=int, help="Optimizer steps (default: the incumbent's recorded configuration).")
@click.option("--device", default="auto", show_default=True)
@click.option("--description", help="Description of the candidate version.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def migrate_cmd(obj, ref, to_model, suite_path, from_model, max_steps, device, description, as_json):
    """Carry REF (NAME@ALIAS or NAME:VERSION) to a new base model: retrain it on its recorded data, register
    the candidate bound to the new model and gate it against REF on its own base model."""
    from promptreg.reporting.text import gate_text

    out = obj.get().migrate(ref, to_model, suite=suite_path, from_model=from_model, max_steps=max_steps,
                            device=device, description=description, notes=not quiet())
    if not quiet():
        for w in out.warnings:
            warn(w)
    if as_json:
        emit_json(out.to_dict())
        return 0 if out.gate is None or out.gate.passed else 1
    v = out.candidate
    click.echo(f"migrated {out.incumbent} (base model {out.from_fingerprint[:12]}) -> {v.name}:{v.version} "
               f"(base model {out.to_fingerprint[:12]}), initialised by {out.init}"
               + (f" from {out.init_text!r}" if out.init_text else ""))
    for key in ("eval_accuracy", "eval_loss"):
        if key in out.train.metrics:
            click.echo(f"  {key:<24} {out.train.metrics[key]:.4f}")
    if out.gate is not None:
        for line in gate_text(out.gate):
            click.echo(line)
    return 0 if out.gate is None or out.gate.passed else 1
