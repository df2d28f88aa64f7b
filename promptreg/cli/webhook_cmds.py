"""``promptreg webhook add/list/remove/test/deliveries/keygen``: signed event notifications.

``webhook test`` exits 1 when the target did not accept the test event (2xx).
"""

from __future__ import annotations

import click

from promptreg.cli.output import emit_json, table, warn

_ID = click.IntRange(min=1, max=2**31 - 1)


@click.group("webhook")
def webhook_group():
    """Webhooks: signed POSTs (Standard Webhooks) for the events you choose; docs/events.md."""


@webhook_group.command("add")
@click.argument("url")
@click.option("--events", "events", required=True,
              help="Comma-separated event types or patterns: promote,rollback,gate.failed,drift.* or '*'.")
@click.option("--prompts", help="Only events of prompts whose name matches this glob, e.g. 'team-a/*'.")
@click.option("--description", help="What this webhook is for.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the secret included, once).")
@click.pass_obj
def add_cmd(obj, url, events, prompts, description, as_json):
    """Send the chosen events to URL. Prints the signing secret ONCE: store it at the receiver."""
    view, secret = obj.get().add_webhook(url, events, prompts=prompts, description=description)
    if as_json:
        emit_json({**view.to_dict(), "secret": secret})
        return 0
    click.echo(f"webhook {view.id}: {view.url}  events {','.join(view.events)}"
               + (f"  prompts {view.prompts}" if view.prompts else ""))
    click.echo(f"secret: {secret}")
    warn("the secret is shown only now: store it where the receiver verifies signatures (docs/events.md)")
    return 0


@webhook_group.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Removed webhooks too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(obj, include_removed, as_json):
    """List webhooks (never their secrets) with their deliveries by state."""
    views = obj.get().list_webhooks(include_removed=include_removed)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return 0
    if not views:
        click.echo("no webhooks")
        return 0
    table(["id", "url", "events", "prompts", "delivered", "pending", "dead", "created", "removed"],
          [[v.id, v.url, ",".join(v.events), v.prompts or "", v.counts.get("delivered", 0), v.counts.get("pending", 0),
            v.counts.get("dead", 0), v.created_at, v.removed_at or ""] for v in views])
    return 0


@webhook_group.command("remove")
@click.argument("webhook_id", type=_ID)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def remove_cmd(obj, webhook_id, as_json):
    """Stop sending events to WEBHOOK_ID (its delivery history stays)."""
    view = obj.get().remove_webhook(webhook_id)
    if as_json:
        emit_json(view.to_dict())
        return 0
    click.echo(f"removed webhook {view.id}: {view.url}")
    return 0


@webhook_group.command("test")
@click.argument("webhook_id", type=_ID)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def test_cmd(obj, webhook_id, as_json):
    """Send a signed webhook.test event to WEBHOOK_ID now and show the answer."""
    out = obj.get().test_webhook(webhook_id)
    if as_json:
        emit_json(out.to_dict())
    elif out.status == "delivered":
        click.echo(f"delivered {out.event_id} to webhook {webhook_id}: HTTP {out.status_code} ({out.seconds:.2f} s)")
    else:
        click.echo(f"not delivered {out.event_id} to webhook {webhook_id}: {out.error}")
    return 0 if out.status == "delivered" else 1


@webhook_group.command("deliveries")
@click.argument("webhook_id", type=_ID)
@click.option("--status", type=click.Choice(["pending", "delivered", "dead", "cancelled"]))
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every try).")
@click.pass_obj
def deliveries_cmd(obj, webhook_id, status, limit, as_json):
    """The newest deliveries to WEBHOOK_ID and their tries."""
    views = obj.get().webhook_deliveries(webhook_id, limit=limit, status=status)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return 0
    if not views:
        click.echo("no deliveries")
        return 0
    table(["delivery", "event", "type", "prompt", "status", "tries", "last answer", "delivered / next"],
          [[v.id, v.event_id, v.type, v.prompt or "", v.status, v.attempts,
            (f"HTTP {v.last_status_code}" if v.last_status_code is not None else (v.last_error or ""))[:60],
            v.delivered_at or v.next_attempt_at or ""] for v in views])
    return 0


@webhook_group.command("keygen")
def keygen_cmd():
    """Print a new key for PROMPTREG_WEBHOOK_KEY (encrypts webhook secrets at rest)."""
    from promptreg.services.events.signing import new_key

    click.echo(new_key())
    return 0


__all__ = ["webhook_group"]
