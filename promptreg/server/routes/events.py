"""``/api/v1/events`` and ``/api/v1/webhooks``: the outbox's history and the webhooks, over HTTP.

Who sees what: events are read like the prompts they concern (a principal sees the events of the
prompts its grant sees; events of no prompt, such as ``webhook.add``, only an admin). Giving dead
deliveries another round and managing webhooks is admin only: a webhook receives every matching
event of every prompt, and its URL is checked by the server (public addresses only unless the
server allows private ones), never by the client.
"""

from __future__ import annotations

from fastapi import Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from promptreg.codec import encode
from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import reply

API = "/api/v1"
NO_STORE = {"Cache-Control": "no-store"}


class WebhookBody(BaseModel):
    url: str = Field(description="http(s) URL receiving signed POSTs.", max_length=2048)
    events: list[str] = Field(description="Event types or patterns (promote, drift.*, '*').", max_length=64)
    prompts: str | None = Field(default=None, description="Only prompts matching this glob.", max_length=256)
    description: str | None = Field(default=None, max_length=1024)


class RetryBody(BaseModel):
    events: list[str] | None = Field(default=None, description="Event numbers or evt_ ids; null: every dead one.",
                                     max_length=1000)
    target: str | None = Field(default=None, description="mlflow or webhook:ID.", max_length=64)


def _sees(call: Call, prompt: str | None) -> bool:
    grant = call.principal.grant
    return grant.role == "admin" if prompt is None else grant.sees(prompt)


def register(router) -> None:
    @api_route(router, "GET", f"{API}/events", action=Action.READ,
               summary="The newest events (of one prompt / one type) and their deliveries")
    def list_events(prompt: str | None = Query(default=None, max_length=128),
                    type: str | None = Query(default=None, max_length=64),  # noqa: A002 - the query parameter
                    limit: int = Query(default=50, ge=1, le=10_000), call: Call = Depends(current_call)):
        if prompt is not None:
            call.require(Action.READ, prompt=prompt)
        events = call.registry.list_events(prompt=prompt, type_=type, limit=limit)
        return reply([e for e in events if _sees(call, e.prompt)])

    @api_route(router, "GET", f"{API}/events/deliveries", action=Action.READ,
               summary="Deliveries in one state (dead or pending), newest first")
    def list_deliveries(status: str = Query(pattern="^(dead|pending)$"),
                        prompt: str | None = Query(default=None, max_length=128),
                        limit: int = Query(default=100, ge=1, le=10_000), call: Call = Depends(current_call)):
        if prompt is not None:
            call.require(Action.READ, prompt=prompt)
        views = call.registry.list_deliveries(status, prompt=prompt, limit=limit)
        return reply([d for d in views if _sees(call, d.prompt)])

    @api_route(router, "POST", f"{API}/events/retry", action=Action.ADMIN, what="retry deliveries", body="json",
               summary="Give dead deliveries (of these events, or all) a new round of tries")
    def retry(body: RetryBody, call: Call = Depends(current_call)):
        return reply(call.registry.retry_events(body.events, target=body.target))

    @api_route(router, "GET", f"{API}/events/{{event}}", action=Action.READ,
               summary="One event: payload, deliveries and every try")
    def show_event(event: str, call: Call = Depends(current_call)):
        from promptreg.errors import NotFoundError

        view = call.registry.show_event(event)
        if not _sees(call, view.prompt):        # as if it did not exist: no probing of other teams' events
            raise NotFoundError(f"no event {event}")
        return reply(view)

    @api_route(router, "GET", f"{API}/webhooks", action=Action.ADMIN, what="list webhooks",
               summary="Webhooks (never their secrets), deliveries counted by state")
    def list_webhooks(include_removed: bool = False, call: Call = Depends(current_call)):
        return reply(call.registry.list_webhooks(include_removed=include_removed))

    @api_route(router, "POST", f"{API}/webhooks", action=Action.ADMIN, what="add webhooks", body="json",
               status_code=201, summary="Add a webhook (its secret is in this answer only)")
    def add_webhook(body: WebhookBody, call: Call = Depends(current_call)):
        view, secret = call.registry.add_webhook(body.url, body.events, prompts=body.prompts,
                                                 description=body.description)
        return JSONResponse({"webhook": encode(view), "secret": secret}, status_code=201, headers=NO_STORE)

    @api_route(router, "DELETE", f"{API}/webhooks/{{webhook_id}}", action=Action.ADMIN, what="remove webhooks",
               summary="Stop delivering to a webhook (its history stays)")
    def remove_webhook(webhook_id: int, call: Call = Depends(current_call)):
        return reply(call.registry.remove_webhook(webhook_id))

    @api_route(router, "POST", f"{API}/webhooks/{{webhook_id}}/test", action=Action.ADMIN, what="test webhooks",
               long=True, summary="Send a signed webhook.test event to this webhook now")
    def test_webhook(webhook_id: int, call: Call = Depends(current_call)):
        return reply(call.registry.test_webhook(webhook_id))

    @api_route(router, "GET", f"{API}/webhooks/{{webhook_id}}/deliveries", action=Action.ADMIN,
               what="read webhook deliveries", summary="The newest deliveries to one webhook, with every try")
    def deliveries(webhook_id: int, status: str | None = Query(default=None, pattern="^(pending|delivered|dead|cancelled)$"),
                   limit: int = Query(default=50, ge=1, le=10_000), call: Call = Depends(current_call)):
        return reply(call.registry.webhook_deliveries(webhook_id, limit=limit, status=status))
