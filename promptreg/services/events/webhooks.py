"""``promptreg webhook add/list/remove/test/deliveries``.

* ``add`` checks the URL (http(s), no user:password, every resolved address public unless private
  targets are allowed), makes a ``whsec_`` secret, stores it encrypted (PROMPTREG_WEBHOOK_KEY) and
  returns it: the only time it is shown. The webhook receives the events committed from then on that
  match its ``--events`` patterns and ``--prompts`` glob.
* ``remove`` keeps the row (its delivery history stays readable) and cancels what was still to be
  delivered to it.
* ``test`` sends a ``webhook.test`` event to that webhook only, at once, through the same code as the
  worker (signature, address check, attempt log); a failed test is not retried.
* Adding and removing a webhook are audited (``webhook.add`` / ``webhook.remove``), so they are
  events too; their payload names the target's scheme and host only, never its path or query.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from promptreg.refs import check_text
from promptreg.registry import delivery_queue as dq
from promptreg.registry import queries as q
from promptreg.services.events.config import EventSettings
from promptreg.services.events.views import DeliveryView, WebhookView


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def add_webhook(registry, url: str, events: str | list[str], prompts: str | None = None,
                description: str | None = None) -> tuple[WebhookView, str]:
    """Register a webhook; returns it and its secret (``whsec_…``), which is never shown again."""
    from promptreg.services.events import signing
    from promptreg.services.events.http import check_url
    from promptreg.services.events.policy import check_prompt_glob, parse_patterns

    cfg = EventSettings.load()
    patterns = parse_patterns(events)
    glob = check_prompt_glob(prompts)
    check_text(description, "description")
    check_url(url, cfg.webhook_allow_private)
    secret = signing.new_secret()
    encrypted = signing.encrypt(secret)
    user = registry.settings.user
    with registry.session() as s:
        hook = dq.add_webhook(s, url=url, events=patterns, prompts=glob, description=description or None,
                              secret_encrypted=encrypted, created_by=user, created_at=q.utcnow())
        q.add_event(s, actor=user, action="webhook.add", details={
            "webhook_id": hook.id, "target": _origin(url), "events": patterns, "prompts": glob})
        view = WebhookView.of(hook)
    return view, secret


def list_webhooks(registry, include_removed: bool = False) -> list[WebhookView]:
    with registry.session() as s:
        hooks = dq.webhooks(s, include_removed=include_removed)
        counts = dq.delivery_counts_by_webhook(s)
        return [WebhookView.of(h, counts.get(h.id)) for h in hooks]


def remove_webhook(registry, webhook_id: int) -> WebhookView:
    user = registry.settings.user
    with registry.session() as s:
        hook = dq.get_webhook(s, webhook_id)
        now = q.utcnow()
        dq.mark_removed(s, hook, user, now)
        cancelled = dq.cancel_webhook_deliveries(s, webhook_id, now)
        q.add_event(s, at=now, actor=user, action="webhook.remove", details={
            "webhook_id": hook.id, "target": _origin(hook.url), "cancelled_deliveries": cancelled})
        s.flush()
        return WebhookView.of(hook)


def send_test_event(registry, webhook_id: int):
    """Send a ``webhook.test`` event to this webhook now; the recorded Outcome."""
    from promptreg.registry.outbox import build_payload, new_event_id
    from promptreg.services.events.worker import EventWorker

    worker = EventWorker(registry, concurrency=1)
    with registry.session() as s:
        hook = dq.get_webhook(s, webhook_id)
        now = q.utcnow()
        event_id = new_event_id()
        payload = build_payload(event_id, "webhook.test", now, {
            "prompt": None, "actor": registry.settings.user, "webhook_id": hook.id,
            "message": "a test event from `promptreg webhook test`"})
        delivery_id = dq.add_test_delivery(s, hook, event_id, payload, now)
        claimed = dq.claim_delivery(s, delivery_id, worker.owner, q.utcnow(), worker.lease_s)
    return worker.record_all([(claimed, worker.attempt(claimed, hook), ("dead", None))])[0]


def webhook_deliveries(registry, webhook_id: int, limit: int = 50, status: str | None = None) -> list[DeliveryView]:
    with registry.session() as s:
        dq.get_webhook(s, webhook_id, live=False)
        rows = dq.deliveries(s, webhook_id=webhook_id, status=status, limit=limit)
        log = dq.attempts(s, [d.id for d, _e in rows])
        return [DeliveryView.of(d, e, log[d.id]) for d, e in rows]


__all__ = ["add_webhook", "list_webhooks", "remove_webhook", "send_test_event", "webhook_deliveries"]
