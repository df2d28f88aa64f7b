"""inspect: a version's virtual tokens against the base model's vocabulary (services/inspection.py)."""

from __future__ import annotations

import click

from promptreg.cli.completion import complete_ref
from promptreg.cli.output import emit_json, warn


@click.command("inspect")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--model", help="Base model folder or 'smollm2' (default: PROMPTREG_BASE_MODEL, then the manifest's).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Nearest vocabulary tokens listed per virtual token.")
@click.option("--text", help="ID-SPAM: inspect the prompt generated for this input text.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON.")
@click.pass_obj
def inspect_cmd(obj, ref, model, top_k, text, device, as_json):
    """Nearest vocabulary tokens of each virtual token of REF, its norm against the vocabulary's, and the
    virtual tokens' pairwise similarity (recorded in the version's MLflow description). Nearest tokens are
    not an explanation: a prompt can work while they read as any text (Prompt Waywardness)."""
    report = obj.get().inspect(ref, model=model, top_k=top_k, text=text, device=device)
    if as_json:
        emit_json(report.to_dict())
    else:
        from promptreg.reporting.inspection import inspection_text

        for line in inspection_text(report):
            click.echo(line)
    for w in report.warnings:
        warn(w)
    return 0
