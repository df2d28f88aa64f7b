"""The events and webhook verbs of ``promptreg.Registry`` (a mixin: the facade would otherwise pass
its size budget). Same rules as the facade: one typed method per verb, delegating to one service
function in :mod:`promptreg.services.events`; results are the dataclasses of
:mod:`promptreg.services.events.views` (what ``--json`` prints and what the server sends)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptreg.services.events.views import DeliveryView, EventView, WebhookView
    from promptreg.services.events.worker import Outcome


class EventVerbs:
    """``promptreg events list/show/retry`` and ``promptreg webhook …`` as methods."""

    def list_events(self, *, prompt: str | None = None, type_: str | None = None,
                    limit: int = 50) -> list[EventView]:
        """The newest events (of one prompt / one type), each with the state of its deliveries."""
        from promptreg.services.events.outbox import list_events

        return list_events(self, prompt=prompt, type_=type_, limit=limit)

    def list_deliveries(self, status: str, *, prompt: str | None = None, limit: int = 100) -> list[DeliveryView]:
        """Deliveries in one state (``dead`` or ``pending``), newest first."""
        from promptreg.errors import InputError
        from promptreg.services.events.outbox import list_deliveries

        if status not in ("dead", "pending"):
            raise InputError(f"status must be dead or pending, not {status!r}")
        return list_deliveries(self, status, prompt=prompt, limit=limit)

    def show_event(self, key: str) -> EventView:
        """One event (number or ``evt_…`` id) with its payload, deliveries and every try."""
        from promptreg.services.events.outbox import show_event

        return show_event(self, key)

    def retry_events(self, keys: list[str] | None = None, *, target: str | None = None) -> list[DeliveryView]:
        """Give the dead deliveries of these events (every dead one when ``keys`` is None) a new round
        of tries, due now; the deliveries revived."""
        from promptreg.services.events.outbox import retry

        return retry(self, keys, target=target)

    def add_webhook(self, url: str, events: str | list[str], *, prompts: str | None = None,
                    description: str | None = None) -> tuple[WebhookView, str]:
        """Register a webhook; returns it and its ``whsec_`` secret (shown this once only)."""
        from promptreg.services.events.webhooks import add_webhook

        return add_webhook(self, url, events, prompts=prompts, description=description)

    def list_webhooks(self, *, include_removed: bool = False) -> list[WebhookView]:
        """The webhooks, with their deliveries counted by status."""
        from promptreg.services.events.webhooks import list_webhooks

        return list_webhooks(self, include_removed=include_removed)

    def remove_webhook(self, webhook_id: int) -> WebhookView:
        """Stop delivering to a webhook (its history stays) and cancel what it still had to receive."""
        from promptreg.services.events.webhooks import remove_webhook

        return remove_webhook(self, webhook_id)

    def test_webhook(self, webhook_id: int) -> Outcome:
        """Send a ``webhook.test`` event to this webhook now; the recorded try."""
        from promptreg.services.events.webhooks import send_test_event

        return send_test_event(self, webhook_id)

    def webhook_deliveries(self, webhook_id: int, *, limit: int = 50,
                           status: str | None = None) -> list[DeliveryView]:
        """The newest deliveries to one webhook, with every try."""
        from promptreg.services.events.webhooks import webhook_deliveries

        return webhook_deliveries(self, webhook_id, limit=limit, status=status)


__all__ = ["EventVerbs"]
