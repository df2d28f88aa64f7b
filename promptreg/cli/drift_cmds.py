"""drift, env set-base-model / env list.

``drift`` exit codes: 0 no drift, 1 drift detected (or the version is incompatible with the deployed
base model), 2 the check could not run.
"""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.completion import complete_ref
from promptreg.cli.launch import data_parallel
from promptreg.cli.output import emit_json, table, warn


@click.command("drift")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--data", "data_uri", required=True,
              help="Fresh production inputs: a .jsonl/.json/.csv file, s3://bucket/prefix, or captured[:SINCE] "
                   "(the traffic serve --capture-rate captured, with /feedback labels; SINCE: 30m, 24h, 7d or an "
                   "ISO time; default the last 24 h).")
@click.option("--suite", "suite_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Regression suite: its drift policy and golden sets (reference data).")
@click.option("--env", "env", help="Environment whose deployed base model to check against (promptreg env set-base-model).")
@click.option("--model", help="Deployed base model folder (instead of --env).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--reference", help="Reference data file (default: the version's training file, else the suite's golden sets).")
@click.option("--action", type=click.Choice(["report", "flag", "rollback"]), help="Override the policy's action.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
@data_parallel
def drift_cmd(obj, ref, data_uri, suite_path, env, model, device, reference, action, text_column, label_column,
              as_json):
    """Check NAME@ALIAS (or NAME:VERSION) for base-model, data and performance drift; act by policy."""
    out = obj.get().drift(ref, data_uri, suite=suite_path, env=env, model=model, reference=reference,
                          action=action, text_column=text_column, label_column=label_column, device=device)
    for w in out.warnings:
        warn(w)
    if as_json:
        emit_json(out.to_dict())
        return 1 if out.drift else 0
    click.echo(f"drift check {out.prompt}:{out.version}" + (f" ({out.prompt}@{out.alias})" if out.alias else "")
               + f" on {out.rows} {_rows_desc(out)} vs {out.reference} "
               f"({out.reference_rows} rows): {out.decision.upper()}")
    if out.window:
        click.echo(f"  captured traffic {out.window['since']} .. {out.window['until']}: {out.window['objects']} "
                   f"objects, versions {', '.join(map(str, out.window['versions']))}; data sha256 "
                   f"{out.data_fingerprint[:12]}")
    for t in out.tests:
        click.echo(f"  {t['explain']}")
    if out.performance:
        click.echo(f"  performance: {out.performance['explain']}")
    for note in out.notes:
        click.echo(f"note: {note}")
    click.echo(f"action: {out.action}" + (f" {out.action_detail}" if out.action_detail else "")
               + f"  (report {out.report_id}, sha256 {str(out.report_sha256)[:12]})")
    return 1 if out.drift else 0


def _rows_desc(out) -> str:
    if out.source == "captured":
        return f"captured rows ({out.labelled_rows} labelled by feedback)"
    return f"rows ({'labelled' if out.labelled else 'unlabelled'})"


@click.group("env")
def env_group():
    """Deployment environments and the base model each runs."""


@env_group.command("set-base-model")
@click.argument("env")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def env_set_base_model_cmd(obj, env, model, as_json):
    """Record that ENV runs base model MODEL (a folder or 'smollm2'); drift checks compare fingerprints."""
    out = obj.get().set_environment_model(env, model)
    if as_json:
        emit_json(out.to_dict())
    else:
        was = f" (was {out.previous[:12]})" if out.previous and out.previous != out.fingerprint else ""
        click.echo(f"{env}: base model {out.fingerprint[:12]} at {out.path}{was}")
        for v in out.incompatible:
            click.echo(f"incompatible: {v['prompt']}@{v['alias']} (version {v['version']}, base model "
                       f"{v['fingerprint'][:12]}); to carry it over: {v['suggest']}")
    return 0


@env_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def env_list_cmd(obj, as_json):
    """List environments and their base models."""
    rows = obj.get().list_environments()
    if as_json:
        emit_json([r.to_dict() for r in rows])
    else:
        table(["environment", "fingerprint", "path", "updated"],
              [[r.environment, r.fingerprint[:12], r.path, r.updated_at] for r in rows])
    return 0
