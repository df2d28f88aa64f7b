"""eval, gate, promote, rollback.

``gate`` exit codes (for CI): 0 the gate passed, 1 it ran and failed, 2 it could not run (bad input,
unknown version, store down, base-model fingerprint mismatch). ``promote`` exits 1 when the gate
refuses the move.
"""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.completion import complete_ref, complete_version_of_ref
from promptreg.cli.launch import data_parallel
from promptreg.cli.output import emit_json, table, warn

_SUITE = click.Path(path_type=Path, dir_okay=False)


def echo_gate(report) -> None:
    """The gate verdict as a table plus one line per failed rule."""
    from promptreg.reporting.text import gate_text

    for line in gate_text(report):
        click.echo(line)


@click.command("eval")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--suite", "suite_path", required=True, type=_SUITE, help="Regression suite (suite.yaml).")
@click.option("--model", help="Base model folder or 'smollm2' (default: PROMPTREG_BASE_MODEL, then the manifest's).")
@click.option("--against", default="production", show_default=True, shell_complete=complete_version_of_ref,
              help="Version to compare with in the plot: V, ALIAS, NAME:V or NAME@ALIAS ('none' to skip).")
@click.option("--env", "env", help="Evaluate on this environment's base model (promptreg env set-base-model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-cache", is_flag=True, help="Re-evaluate even if this suite already ran on this version.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a markdown summary here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with per-example outcomes).")
@click.pass_obj
@data_parallel
def eval_cmd(obj, ref, suite_path, model, env, against, device, no_cache, markdown_path, as_json):
    """Evaluate REF (NAME:VERSION or NAME@ALIAS) on a regression suite and record the eval run."""
    result = obj.get().eval(ref, suite_path, against=against, model=model, device=device, use_cache=not no_cache,
                            env=env)
    for w in result.warnings:
        warn(w)
    if markdown_path is not None:
        from promptreg.reporting.summaries import eval_markdown

        markdown_path.write_text(eval_markdown(result), encoding="utf-8")
    if as_json:
        emit_json(result.to_dict(outcomes=True))
        return 0
    click.echo(f"eval {result.prompt}:{result.version} on suite {result.suite_name} ({result.suite_sha256[:12]}), "
               f"base model {result.base_model_fingerprint[:12]}: eval run {result.eval_run_id}"
               + ("  [cached]" if result.cached else f"  ({result.seconds:.1f} s)"))
    from promptreg.reporting.text import checks_table, fmt

    table(["golden set", "rows", "metric", "value"],
          [[d.name, d.rows, m, fmt(v, 4)] for d in result.datasets for m, v in sorted(d.metrics.items())])
    if result.checks:
        for line in checks_table(result.checks):
            click.echo(line)
    return 0


@click.command("gate")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--against", default="production", show_default=True, shell_complete=complete_version_of_ref,
              help="Baseline: V, ALIAS (its current holder), NAME:V or NAME@ALIAS; 'none' for floors only.")
@click.option("--suite", "suite_path", required=True, type=_SUITE, help="Regression suite (suite.yaml).")
@click.option("--model", help="Base model folder or 'smollm2' (default: PROMPTREG_BASE_MODEL, then the manifest's).")
@click.option("--env", "env", help="Evaluate on this environment's base model (promptreg env set-base-model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a JUnit XML report (one testcase per metric and check).")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a markdown summary (also appended to $GITHUB_STEP_SUMMARY when set).")
@click.option("--no-cache", is_flag=True, help="Recompute even if this exact gate already ran.")
@click.option("--json", "as_json", is_flag=True, help="Print the gate report as JSON.")
@click.pass_obj
@data_parallel
def gate_cmd(obj, ref, against, suite_path, model, env, device, junit_path, markdown_path, no_cache, as_json):
    """Run the regression gate of REF against the version it would replace. Exit 0 pass, 1 fail, 2 could not run."""
    from promptreg.errors import PromptregError

    try:
        report = obj.get().gate(ref, suite_path, against=against, model=model, device=device, use_cache=not no_cache,
                                env=env)
    except PromptregError as exc:
        if junit_path is not None:
            from promptreg.reporting.junit import gate_error_junit_xml

            junit_path.write_text(gate_error_junit_xml(ref, str(exc)), encoding="utf-8")
        raise
    for w in report.warnings:
        warn(w)
    from promptreg.reporting.junit import gate_junit_xml
    from promptreg.reporting.markdown import write_github_step_summary
    from promptreg.reporting.summaries import gate_markdown

    markdown = gate_markdown(report)
    if junit_path is not None:
        junit_path.write_text(gate_junit_xml(report), encoding="utf-8")
    if markdown_path is not None:
        markdown_path.write_text(markdown, encoding="utf-8")
    write_github_step_summary(markdown)
    if as_json:
        emit_json(report.to_dict())
    else:
        echo_gate(report)
    return 0 if report.passed else 1


@click.command("promote")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--to", "to", default="production", show_default=True, shell_complete=complete_version_of_ref, help="The alias to move: ALIAS or NAME@ALIAS.")
@click.option("--suite", "suite_path", type=_SUITE, help="Run (or reuse) this suite's gate first.")
@click.option("--model", help="Base model folder or 'smollm2' for the gate.")
@click.option("--env", "env", help="Evaluate on this environment's base model (promptreg env set-base-model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--force", is_flag=True, help="Move even if the gate failed or is missing (needs --reason).")
@click.option("--reason", help="Why (recorded in the audit log; required with --force).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@data_parallel
def promote_cmd(obj, ref, to, suite_path, model, env, device, force, reason, as_json):
    """Point NAME@TO at REF after its gate passes (compare-and-swap + audit event + MLflow alias)."""
    from promptreg.errors import GateFailedError

    try:
        result = obj.get().promote(ref, to, suite=suite_path, model=model, device=device, force=force, reason=reason,
                                   env=env)
    except GateFailedError as exc:
        if exc.report is not None and not as_json:
            echo_gate(exc.report)  # the table on stdout; the one-line error follows on stderr
        raise
    for w in result.warnings:
        warn(w)
    if as_json:
        emit_json(result.to_dict())
        return 0
    if result.gate is not None:
        echo_gate(result.gate)
    was = f"was {result.previous}" if result.previous is not None else "new alias"
    forced = f"  FORCED: {result.reason}" if result.forced else ""
    click.echo(f"promoted {result.name}:{result.version} to {result.alias} ({was}){forced}")
    return 0


@click.command("rollback")
@click.argument("name", shell_complete=complete_ref)
@click.option("--alias", default=None, help="The alias to move back (default: production, or the one NAME@ALIAS names).")
@click.option("--to", "to", shell_complete=complete_version_of_ref, help="Version to roll back to: V, ALIAS, NAME:V or NAME@ALIAS (default: the previous holder).")
@click.option("--reason", help="Why (recorded in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def rollback_cmd(obj, name, alias, to, reason, as_json):
    """Move NAME@ALIAS back to its previous holder (from the audit log) or to --to VERSION."""
    from promptreg.refs import parse_ref

    ref = parse_ref(name)
    if ref.version is not None:
        raise click.UsageError(f"rollback takes NAME or NAME@ALIAS (the alias to move), got {name!r}")
    if ref.alias is not None and alias is not None and alias != ref.alias:
        raise click.UsageError(f"{name!r} names alias {ref.alias!r} but --alias says {alias!r}")
    result = obj.get().rollback(ref.name, ref.alias or alias or "production", to=to, reason=reason)
    for w in result.warnings:
        warn(w)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(f"rolled back {result.name}@{result.alias} to version {result.version} (was {result.previous})")
    return 0
