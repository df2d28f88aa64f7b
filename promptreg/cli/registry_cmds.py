"""push, list, show, history, pull, sync."""

from __future__ import annotations

from pathlib import Path

import click

from promptreg.cli.completion import complete_name, complete_ref
from promptreg.cli.output import echo_push, emit_json, short, table


@click.command("push")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Prompt name (letters, digits, '.', '_', '-').")
@click.option("--description", default=None, help="Description of this version (and of a new prompt).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def push_cmd(obj, folder, name, description, as_json):
    """Validate FOLDER and register it as a new, immutable version of NAME."""
    return echo_push(obj.get().push(folder, name, description=description), as_json)


@click.command("list")
@click.argument("name", required=False, shell_complete=complete_name)
@click.option("--limit", type=click.IntRange(min=1), help="With NAME: show at most this many versions.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="With NAME: skip the first versions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(obj, name, limit, offset, as_json):
    """List prompts, or the versions of NAME (oldest first; page with --limit/--offset)."""
    if (limit is not None or offset) and name is None:
        raise click.UsageError("--limit/--offset page the versions of NAME")
    if name is None:
        prompts = obj.read("list_prompts")
        if as_json:
            emit_json([p.to_dict() for p in prompts])
        elif not prompts:
            click.echo("no prompts registered yet (promptreg push FOLDER --name NAME)")
        else:
            table(["name", "task", "versions", "latest", "aliases", "description"],
                  [[p.name, p.task_type, p.versions, p.latest,
                    ", ".join(f"{a}={n}" for a, n in sorted(p.aliases.items())), p.description[:50]]
                   for p in prompts])
        return 0
    versions, more = obj.read("version_page", name, limit=limit, offset=offset)
    if as_json:
        emit_json([v.to_dict() for v in versions])
    else:
        table(["version", "sha256", "method", "tokens", "base model", "aliases", "status", "mlflow", "created"],
              [[v.version, short(v.sha256), v.method, v.num_virtual_tokens, short(v.base_model_fingerprint),
                ",".join(v.aliases), v.status, v.mirror_status, v.created_at] for v in versions])
        if more:
            click.echo(f"(more versions: --offset {offset + len(versions)})")
    return 0


@click.command("show")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--manifest", is_flag=True, help="Print the full manifest (promptreg.json).")
@click.pass_obj
def show_cmd(obj, ref, as_json, manifest):
    """Show a version: NAME (latest), NAME:VERSION or NAME@ALIAS."""
    if manifest:
        emit_json(obj.read("manifest", ref))
        return 0
    v = obj.read("show", ref)
    if as_json:
        emit_json(v.to_dict())
        return 0
    rows = [
        ("version", f"{v.name}:{v.version}"), ("aliases", ", ".join(v.aliases) or "-"),
        ("method", f"{v.method} ({v.num_virtual_tokens} virtual tokens)"), ("task", v.task_type or "-"),
        ("sha256", v.sha256), ("artifact", v.artifact_uri), ("size", f"{v.size_bytes} bytes"),
        ("base model", f"{v.base_model_fingerprint} ({v.base_model_name or 'unnamed'})"),
        ("dataset", v.dataset_fingerprint or "-"), ("status", v.status),
        ("mlflow", f"{v.mirror_status}" + (f" run {v.mlflow_run_id}, model version {v.mlflow_model_version}"
                                          if v.mlflow_run_id else "") + (f" ({v.mirror_error})" if v.mirror_error else "")),
        ("created", f"{v.created_at} by {v.created_by}"),
    ]
    rows += [(f"metric {k}", f"{val:.6g}") for k, val in sorted(v.metrics.items())]
    if v.description:
        rows.append(("description", v.description))
    width = max(len(k) for k, _ in rows)
    for k, val in rows:
        click.echo(f"{k.ljust(width)}  {val}")
    return 0


@click.command("history")
@click.argument("name", shell_complete=complete_name)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history_cmd(obj, name, as_json):
    """The audit log of NAME (append-only): every push and alias move."""
    events = obj.get().history(name)
    if as_json:
        emit_json([e.to_dict() for e in events])
    else:
        table(["#", "at", "actor", "action", "alias", "from", "to", "reason"],
              [[e.id, e.at, e.actor, e.action, e.alias, e.from_version, e.to_version, e.reason or ""]
               for e in events])
    return 0


@click.command("pull")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def pull_cmd(obj, ref, dest, as_json):
    """Download a version into DEST and verify its sha256 (a tampered artifact is refused)."""
    reg = obj.get()
    path = reg.pull(ref, dest)
    if as_json:
        v = reg.show(ref)
        emit_json({"ref": ref, "name": v.name, "version": v.version, "sha256": v.sha256, "path": str(path),
                   "verified": True})
    else:
        click.echo(f"pulled {ref} into {path} (sha256 verified)")
    return 0


@click.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def sync_cmd(obj, as_json):
    """Repair the MLflow mirror so it matches the registry database."""
    report = obj.get().sync()
    if as_json:
        emit_json(report.to_dict())
    else:
        for label, items in (("mirrored", report.mirrored), ("alias set", report.aliases_set),
                             ("alias removed", report.aliases_removed), ("tags", report.tags_set),
                             ("pyfunc MLmodel added", report.models_added),
                             ("description", report.descriptions_set),
                             ("FAILED", report.failed)):
            for item in items:
                click.echo(f"{label}: {item}")
        click.echo(f"sync: {report.repaired} repaired, {len(report.failed)} failed")
    if report.failed:  # the report is on stdout; the error is one line on stderr, exit 2
        from promptreg.errors import MirrorError

        raise MirrorError(f"sync could not repair {len(report.failed)} item(s) (run it again once the store is "
                          f"back); first: {report.failed[0]}")
    return 0
