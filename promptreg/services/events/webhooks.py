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

from promptreg.errors import NotFoundError
from promptreg.refs import check_text
from promptreg.services.events.config import EventSettings
from promptreg.services.events.views import DeliveryView, WebhookView


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _get(s, webhook_id: int, *, live: bool = True):
    from promptreg.registry.outbox import Webhook

    hook = s.get(Webhook, webhook_id)
    if hook is None or (live and hook.removed_at is not None):
        raise NotFoundError(f"no webhook {webhook_id}" + (" (it was removed)" if hook is not None else ""))
    return hook


def add_webhook(registry, url: str, events: str | list[str], prompts: str | None = None,
                description: str | None = None) -> tuple[WebhookView, str]:
    """Register a webhook; returns it and its secret (``whsec_…``), which is never shown again."""
    from promptreg.registry.models import AuditEvent, utcnow
    from promptreg.registry.outbox import Webhook
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
        hook = Webhook(url=url, events=patterns, prompts=glob, description=description or None,
                       secret_encrypted=encrypted, created_by=user, created_at=utcnow())
        s.add(hook)
        s.flush()
        s.add(AuditEvent(at=utcnow(), actor=user, action="webhook.add", details={
            "webhook_id": hook.id, "target": _origin(url), "events": patterns, "prompts": glob}))
        view = WebhookView.of(hook)
    return view, secret


def list_webhooks(registry, include_removed: bool = False) -> list[WebhookView]:
    import sqlalchemy as sa

    from promptreg.registry.outbox import OutboxDelivery, Webhook

    with registry.session() as s:
        q = sa.select(Webhook).order_by(Webhook.id)
        if not include_removed:
            q = q.where(Webhook.removed_at.is_(None))
        hooks = list(s.execute(q).scalars())
        counts: dict[int, dict[str, int]] = {}
        for hid, status, n in s.execute(sa.select(OutboxDelivery.webhook_id, OutboxDelivery.status, sa.func.count())
                                        .where(OutboxDelivery.webhook_id.is_not(None))
                                        .group_by(OutboxDelivery.webhook_id, OutboxDelivery.status)):
            counts.setdefault(hid, {})[status] = int(n)
        return [WebhookView.of(h, counts.get(h.id)) for h in hooks]


def remove_webhook(registry, webhook_id: int) -> WebhookView:
    from promptreg.registry import delivery_queue as dq
    from promptreg.registry.models import AuditEvent, utcnow

    user = registry.settings.user
    with registry.session() as s:
        hook = _get(s, webhook_id)
        now = utcnow()
        hook.removed_at, hook.removed_by = now, user
        s.add(hook)
        cancelled = dq.cancel_webhook_deliveries(s, webhook_id, now)
        s.add(AuditEvent(at=now, actor=user, action="webhook.remove", details={
            "webhook_id": hook.id, "target": _origin(hook.url), "cancelled_deliveries": cancelled}))
        s.flush()
        return WebhookView.of(hook)


def send_test_event(registry, webhook_id: int):
    """Send a ``webhook.test`` event to this webhook now; the recorded Outcome."""
    from promptreg.registry import delivery_queue as dq
    from promptreg.registry.models import utcnow
    from promptreg.registry.outbox import OutboxDelivery, OutboxEvent, build_payload, new_event_id
    from promptreg.services.events.worker import EventWorker

    worker = EventWorker(registry, concurrency=1)
    with registry.session() as s:
        hook = _get(s, webhook_id)
        now = utcnow()
        event_id = new_event_id()
        target = f"webhook:{hook.id}"
        payload = build_payload(event_id, "webhook.test", now, {
            "prompt": None, "actor": registry.settings.user, "webhook_id": hook.id,
            "message": "a test event from `promptreg webhook test`"})
        ev = OutboxEvent(event_id=event_id, type="webhook.test", payload=payload, target=target, created_at=now,
                         fanned_out_at=now)
        s.add(ev)
        s.flush()
        delivery = OutboxDelivery(outbox_event_id=ev.id, target=target, webhook_id=hook.id, status="pending",
                                  next_attempt_at=now, created_at=now)
        s.add(delivery)
        s.flush()
        claimed = dq.claim_delivery(s, delivery.id, worker.owner, utcnow(), worker.lease_s)
    return worker.record_all([(claimed, worker.attempt(claimed, hook), ("dead", None))])[0]


def webhook_deliveries(registry, webhook_id: int, limit: int = 50, status: str | None = None) -> list[DeliveryView]:
    from promptreg.registry import delivery_queue as dq

    with registry.session() as s:
        _get(s, webhook_id, live=False)
        rows = dq.deliveries(s, webhook_id=webhook_id, status=status, limit=limit)
        log = dq.attempts(s, [d.id for d, _e in rows])
        return [DeliveryView.of(d, e, log[d.id]) for d, e in rows]


__all__ = ["add_webhook", "list_webhooks", "remove_webhook", "send_test_event", "webhook_deliveries"]
