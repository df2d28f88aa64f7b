"""gc: list (default) or delete orphaned uploads in the artifact store."""

from __future__ import annotations

import click

from promptreg.cli.output import emit_json, short, table, warn


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list the orphaned uploads (the default).")
@click.option("--yes", is_flag=True, help="Delete the orphaned uploads older than --min-age-s.")
@click.option("--min-age-s", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Never delete an upload younger than this (a push between its upload and its commit "
                   "looks like an orphan; it commits within seconds).")
@click.option("--capture-retention-days", type=click.FloatRange(min=0),
              help="Delete captured traffic (captures/) older than this many days (0: keep it; default: "
                   "PROMPTREG_CAPTURE_RETENTION_DAYS, promptreg.toml [capture] retention_days, else 30).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def gc_cmd(obj, dry_run, yes, min_age_s, capture_retention_days, as_json):
    """Find artifact-store content that no version, eval run or drift report references.

    Orphans are uploads whose commit never happened (a push killed between upload and commit),
    S3 uploads without their completion marker and local temporary upload folders. Without --yes
    nothing is deleted. Referenced content is never deleted; see promptreg/services/gc.py for how a
    concurrent push is kept safe (--min-age-s, a lock on new references, a check after each push).
    """
    from promptreg.errors import InputError

    if dry_run and yes:
        raise InputError("--dry-run and --yes exclude each other")
    report = obj.get().gc(min_age_s=min_age_s, delete=yes, capture_retention_days=capture_retention_days)
    if as_json:
        emit_json(report.to_dict())
        return 0
    for m in report.missing:
        warn(f"referenced content is missing from the store: {m}")
    if report.orphans:
        table(["kind", "sha256", "age", "size", "action", "location"],
              [[o.kind, short(o.sha256) or "-", _age(o.age_s), _size(o.size_bytes),
                "deleted" if o.deleted else ("kept (younger than --min-age-s)" if not o.deletable
                                             else ("kept" if yes else "would delete")),
                o.location] for o in report.orphans])
    for s in report.skipped:
        click.echo(f"skipped: {s}")
    n, total = len(report.orphans), sum(o.size_bytes for o in report.orphans)
    old = [o for o in report.orphans if o.deletable]
    head = f"gc: {report.stored} stored, {report.referenced} referenced, {n} orphaned ({_size(total)})"
    if yes:
        gone = report.deleted
        click.echo(f"{head}; deleted {len(gone)} ({_size(sum(o.size_bytes for o in gone))}), "
                   f"kept {len(report.kept_young)} younger than {min_age_s:g} s")
    elif n:
        click.echo(f"{head}; dry run, nothing deleted ({len(old)} older than {min_age_s:g} s: "
                   "`promptreg gc --yes` deletes them)")
    else:
        click.echo(f"{head}; nothing to do")
    c = report.captures
    if c is not None:
        keep = "kept for ever" if c.retention_days <= 0 else f"retention {c.retention_days:g} days"
        done = (f"deleted {c.deleted}" if yes else f"{c.expired} expired, dry run" if c.expired else "none expired")
        click.echo(f"captures: {c.objects} objects ({_size(c.bytes)}), {keep}: {done}"
                   + (f" ({_size(c.expired_bytes)})" if c.expired else ""))
    return 0
