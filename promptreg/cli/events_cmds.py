"""``promptreg events run/list/show/retry``: the outbox's delivery worker and its history.

``events run --once`` exit codes: 0 every try of this round succeeded (or nothing was due), 1 some
try failed (it is retried later, or parked as dead), 2 the worker could not run (store down, bad input).
"""

from __future__ import annotations

import sys

import click

from promptreg.cli.output import emit_json, table, warn


def _echo_outcome(o) -> None:
    what = f"{o.type} {o.prompt or ''}".strip()
    parts = [f"{o.status:<9}", o.event_id, what, "->", o.target, f"try {o.attempt}"]
    if o.status_code is not None:
        parts.append(f"HTTP {o.status_code}")
    if o.status == "pending" and o.next_attempt_at is not None:
        parts.append(f"retry at {o.next_attempt_at.isoformat(timespec='seconds')}")
    if o.error and o.status != "delivered":
        parts.append(f"- {o.error[:200]}")
    click.echo("  ".join(parts))
    sys.stdout.flush()


@click.group("events")
def events_group():
    """Events from the outbox: every committed change, delivered to the MLflow mirror and webhooks."""


@events_group.command("run")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (for cron & co).")
@click.option("--poll-s", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds between two looks for new events when idle.")
@click.option("--lease-s", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Lease on a delivery being tried; renewed while it runs, taken over after it expires.")
@click.option("--batch", type=click.IntRange(min=1, max=1000), default=50, show_default=True,
              help="Webhook deliveries claimed at a time.")
@click.option("--concurrency", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Webhook requests in flight at once.")
@click.option("--grace-s", type=click.FloatRange(min=0), default=10, show_default=True,
              help="After SIGTERM/SIGINT, seconds the round in progress may still take (a second signal stops at once).")
@click.option("-q", "--quiet", is_flag=True, help="Do not print one line per try.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the round as JSON.")
@click.pass_obj
def run_cmd(obj, once, poll_s, lease_s, batch, concurrency, grace_s, quiet, as_json):
    """Deliver events (safe to run on several machines at once): until SIGTERM/SIGINT, or --once."""
    from promptreg.errors import InputError
    from promptreg.scheduling import CheckInterrupted, GracefulStop
    from promptreg.services.events.worker import EventWorker

    if obj.remote:
        raise InputError("events run runs where the stores are: in remote mode (--url / PROMPTREG_URL) the "
                         "server's own worker delivers the events")
    registry = obj.get()
    worker = EventWorker(registry, lease_s=lease_s, batch=batch, concurrency=concurrency,
                         on_outcome=None if (quiet or as_json) else _echo_outcome)
    if once:
        stats = worker.run_once()
        if as_json:
            emit_json(stats.to_dict())
        elif not stats.outcomes:
            click.echo("nothing due")
        return 1 if any(o.status in ("pending", "dead") for o in stats.outcomes) else 0
    click.echo(f"events worker {worker.owner}: delivering, polling every {poll_s:g} s", err=True)
    with GracefulStop(grace_s) as guard:
        try:
            with guard.checking():  # a stop signal ends the loop after this round, or after --grace-s
                worker.run_forever(guard.stop, poll_s,
                                   on_error=lambda exc: warn(f"delivery round failed, retrying in {poll_s:g} s: {exc}"))
        except CheckInterrupted as exc:
            warn(f"interrupted: {exc}; what was in flight is delivered again later")
    click.echo(f"events worker stopped ({guard.signal_name or 'done'})", err=True)
    return 0


def _delivery_rows(views) -> list[list]:
    return [[d.id, d.event_id, d.type, d.prompt or "", d.target, d.status, d.round_attempts,
             d.next_attempt_at or d.delivered_at or "", (d.last_error or "")[:80]] for d in views]


_DELIVERY_HEAD = ["delivery", "event", "type", "prompt", "target", "status", "tries", "next / delivered", "last error"]


@events_group.command("list")
@click.option("--dead", is_flag=True, help="Only deliveries parked as dead (too many failed tries).")
@click.option("--pending", is_flag=True, help="Only deliveries still to be made.")
@click.option("--prompt", "prompt", help="Only events of this prompt.")
@click.option("--type", "type_", help="Only events of this type (e.g. promote).")
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(obj, dead, pending, prompt, type_, limit, as_json):
    """The newest events and where each one was delivered (or the dead/pending deliveries)."""
    registry = obj.get()
    if dead and pending:
        raise click.UsageError("--dead and --pending exclude each other")
    if dead or pending:
        if type_:
            raise click.UsageError("--type lists events, not deliveries: drop --dead/--pending")
        views = registry.list_deliveries("dead" if dead else "pending", prompt=prompt, limit=limit)
        if as_json:
            emit_json([v.to_dict() for v in views])
        elif not views:
            click.echo("no dead deliveries" if dead else "nothing pending")
        else:
            table(_DELIVERY_HEAD, _delivery_rows(views))
        return 0
    events = registry.list_events(prompt=prompt, type_=type_, limit=limit)
    if as_json:
        emit_json([e.to_dict() for e in events])
        return 0
    if not events:
        click.echo("no events")
        return 0
    table(["#", "event", "type", "prompt", "at", "status", "targets"],
          [[e.id, e.event_id, e.type, e.prompt or "", e.created_at, e.status,
            ", ".join(f"{d.target}:{d.status}" for d in e.deliveries)] for e in events])
    return 0


@events_group.command("show")
@click.argument("event")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show_cmd(obj, event, as_json):
    """EVENT (number or evt_… id): its payload, deliveries and every try."""
    view = obj.get().show_event(event)
    if as_json:
        emit_json(view.to_dict())
        return 0
    click.echo(f"event {view.id} {view.event_id}  {view.type}  {view.prompt or ''}  {view.created_at}  "
               f"status {view.status}")
    emit_json(view.payload)
    for d in view.deliveries:
        click.echo(f"-> {d.target}: {d.status}, {d.attempts} tries"
                   + (f", delivered {d.delivered_at}" if d.delivered_at else "")
                   + (f", next {d.next_attempt_at}" if d.next_attempt_at else ""))
        for a in d.log:
            click.echo(f"   try {a.number} {a.outcome:<7} {a.started_at} by {a.worker}"
                       + (f" HTTP {a.status_code}" if a.status_code is not None else "")
                       + (f" - {a.error}" if a.error else ""))
    return 0


@events_group.command("retry")
@click.argument("events", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Every dead delivery.")
@click.option("--target", help="Only deliveries to this target (mlflow or webhook:ID).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def retry_cmd(obj, events, all_dead, target, as_json):
    """Give the dead deliveries of EVENTS (numbers or evt_… ids) a new round of tries, due now."""
    if bool(events) == bool(all_dead):
        raise click.UsageError("name the EVENTS to retry, or pass --all-dead")
    views = obj.get().retry_events(list(events) if events else None, target=target)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return 0
    if not views:
        click.echo("no dead deliveries")
    for v in views:
        click.echo(f"retrying {v.event_id} {v.type} -> {v.target} (due now; `promptreg events run` delivers it)")
    return 0


__all__ = ["events_group"]
