"""schedule add/list/remove/run-due/export and scheduler: recurring drift checks (times in UTC).

``run-due`` exit codes: 0 every due check ran (or nothing was due, or it stopped on SIGTERM), 1 a
check ran and failed (recorded as a failed run), 2 it could not run (store down, bad input).
"""

from __future__ import annotations

import json
import sys

import click

from promptreg.cli.completion import complete_name, complete_ref
from promptreg.cli.output import emit_json, table, warn
from promptreg.errors import InputError


def _parse_policy(items: tuple[str, ...]) -> dict:
    policy: dict = {}
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"--policy {item!r}: not valid JSON: {exc.msg}") from None
            if not isinstance(value, dict):
                raise InputError(f"--policy {item!r}: expected a JSON object")
            policy.update(value)
            continue
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--policy {item!r}: expected KEY=VALUE or a JSON object")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        policy[key.strip()] = value
    return policy


def _echo_result(r) -> None:
    parts = [f"{r.status:<11}", r.ref, f"slot {r.slot_at}"]
    if r.attempt > 1:
        parts.append(f"attempt {r.attempt}")
    if r.drift_report_id is not None:
        parts.append(f"drift report {r.drift_report_id}")
    parts.append(f"({r.seconds:.1f} s)")
    if r.error:
        parts.append(f"- {r.error}")
    click.echo("  ".join(parts))
    sys.stdout.flush()


@click.group("schedule")
def schedule_group():
    """Recurring drift checks: schedules live in the registry database; cron times are UTC."""


@schedule_group.command("add")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--cron", required=True, help='Five-field cron expression in UTC, e.g. "0 3 * * *".')
@click.option("--data", "data_uri", required=True,
              help="Fresh data (JSONL path or URI) read at each run, or 'captured': the traffic serve captured "
                   "since the schedule's last successful run (captured:7d: a fixed window).")
@click.option("--suite", "suite_path", help="Regression suite (suite.yaml) to re-run on drift.")
@click.option("--policy", "policy_items", multiple=True,
              help="Drift policy: KEY=VALUE (value parsed as JSON when it is) or a JSON object; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def add_cmd(obj, ref, cron, data_uri, suite_path, policy_items, as_json):
    """Check REF (NAME@ALIAS) for drift on fresh data at every fire time of --cron."""
    info = obj.get().add_schedule(ref, cron, data_uri, suite_path=suite_path, policy=_parse_policy(policy_items))
    if as_json:
        emit_json(info.to_dict())
        return 0
    click.echo(f"schedule {info.id}: {info.ref} on {info.data_uri}  cron \"{info.cron}\" (UTC)  "
               f"next run {info.next_run_at}")
    return 0


@schedule_group.command("list")
@click.argument("name", required=False, shell_complete=complete_name)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(obj, name, as_json):
    """List schedules (of prompt NAME only, if given)."""
    infos = obj.get().list_schedules(name)
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return 0
    if not infos:
        click.echo("no schedules")
        return 0
    table(["id", "target", "cron (UTC)", "data", "next run", "last run", "last status", "running on"],
          [[i.id, i.ref, i.cron, i.data_uri, i.next_run_at, i.last_run_at or "", i.last_status or "",
            i.lease_owner or ""] for i in infos])
    return 0


@schedule_group.command("remove")
@click.argument("schedule_id", type=click.IntRange(min=1, max=2**31 - 1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def remove_cmd(obj, schedule_id, as_json):
    """Remove schedule SCHEDULE_ID (its run history goes with it; drift reports stay)."""
    info = obj.get().remove_schedule(schedule_id)
    if as_json:
        emit_json(info.to_dict())
        return 0
    click.echo(f"removed schedule {info.id}: {info.ref} on {info.data_uri}")
    return 0


@schedule_group.command("run-due")
@click.option("--lease-s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Lease on a running check; renewed while it runs, taken over after it expires.")
@click.option("--grace-s", type=click.FloatRange(min=0), default=20, show_default=True,
              help="After SIGTERM/SIGINT, seconds the running check may still take before it is interrupted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def run_due_cmd(obj, lease_s, grace_s, as_json):
    """Run every due check once (safe to start on several machines at once): for cron & co."""
    from promptreg.scheduling import GracefulStop

    registry = obj.get()
    with GracefulStop(grace_s) as guard:   # the check: the registry's drift check (run by the server in remote mode)
        results = registry.run_due(lease_s=lease_s, guard=guard, on_result=None if as_json else _echo_result)
    if as_json:
        emit_json([r.to_dict() for r in results])
    elif not results:
        click.echo("nothing due")
    if guard.stop.is_set():
        warn(f"stopped by {guard.signal_name}; remaining due checks run at the next run-due")
    return 1 if any(r.status == "failed" for r in results) else 0


@schedule_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["crontab", "k8s", "github"]), required=True,
              help="crontab line, Kubernetes CronJob or GitHub Actions workflow.")
@click.option("--every", default="*/5 * * * *", show_default=True,
              help="How often to call run-due (cron, UTC): at least as often as your finest schedule.")
@click.option("--workdir", default="/srv/app", show_default=True, help="crontab: folder to run in.")
@click.option("--image", default="ghcr.io/OWNER/promptreg:latest", show_default=True,
              help="k8s: container image with promptreg installed.")
@click.pass_obj
def export_cmd(obj, fmt, every, workdir, image):
    """Print a ready-made snippet that calls `promptreg schedule run-due` periodically."""
    click.echo(obj.get().export_schedule(fmt, every=every, workdir=workdir, image=image), nl=False)
    return 0


@click.command("scheduler")
@click.option("--poll-s", type=click.FloatRange(min=0.1), default=30, show_default=True,
              help="Seconds between two looks for due checks.")
@click.option("--lease-s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Lease on a running check; renewed while it runs, taken over after it expires.")
@click.option("--grace-s", type=click.FloatRange(min=0), default=20, show_default=True,
              help="After SIGTERM/SIGINT, seconds the running check may still take before it is interrupted.")
@click.option("--events/--no-events", "events", default=True, show_default=True,
              help="Also deliver outbox events (MLflow mirror, webhooks) in a background thread.")
@click.pass_obj
def scheduler_cmd(obj, poll_s, lease_s, grace_s, events):
    """Run due checks until SIGTERM/SIGINT (a long-lived `schedule run-due`); exits 0 when stopped."""
    sched = obj.get().scheduler(poll_s=poll_s, lease_s=lease_s, grace_s=grace_s, on_result=_echo_result,
                                on_error=lambda exc: warn(f"run-due failed, retrying in {poll_s:g} s: {exc}"))
    click.echo(f"scheduler {sched.owner}: looking for due checks every {poll_s:g} s", err=True)
    worker = None
    if events:
        from promptreg.services.events.worker import start_background

        worker = start_background(obj.get().settings)
        click.echo(f"scheduler: delivering events as {worker.worker.owner}", err=True)
    try:
        code = sched.run_forever()
    finally:
        if worker is not None:
            worker.stop()
    click.echo(f"scheduler stopped ({sched.guard.signal_name if sched.guard else 'done'})", err=True)
    return code


__all__ = ["schedule_group", "scheduler_cmd"]
