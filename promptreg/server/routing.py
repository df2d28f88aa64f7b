"""How every API route is declared: one permission rule, a body limit and a time limit per route.

Invariants:
- Every route of the API is added through :func:`api_route`, which gives it a :class:`Guard` (the
  route's permission rule); ``create_app`` refuses to build an app with a route that has no guard, so
  an unguarded route cannot ship (tests/test_server_matrix.py checks the rule of each).
- Order of checks on a request: the client's failed-auth budget (429), the credential (401), the
  names and references in the path (400), the role and prompt grant (403), all before the body is
  read or parsed; alias grants are checked by the route once it knows the alias
  (:meth:`Call.require`). Only then does the route run.
- Body size is counted as it arrives (``Content-Length`` first, then the bytes really received):
  over the route's limit is 413 before anything is stored. A route that does not answer within
  its time limit gets 504 (a thread already running finishes in the background).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from promptreg.errors import (
    AuthenticationError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    RequestTimeoutError,
)
from promptreg.refs import check_alias, check_name, parse_ref
from promptreg.server.policy import Action, decide

if TYPE_CHECKING:  # pragma: no cover
    from promptreg.server.app import ServerContext
    from promptreg.server.tokens import Principal

SPEC_KEY = "x-promptreg"
BODY_KINDS = ("none", "json", "upload")
#: Path parameters checked at the edge (400) before the permission check.
_PATH_CHECKS: dict[str, Callable[[str], Any]] = {"name": check_name, "ref": parse_ref, "alias": check_alias}
_VERBS = {
    Action.READ: "read {p}", Action.PUSH: "push to {p}", Action.EVALUATE: "evaluate {p}",
    Action.DRIFT: "run drift checks on {p}", Action.SCHEDULE: "schedule checks of {p}",
    Action.MOVE: "move {p}@{a}", Action.FORCE: "force {p}@{a} past its gate",
}


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Call:
    """One authenticated, authorised request: who, and the server it reached."""

    principal: Principal
    server: ServerContext
    request: Request

    def require(self, action: Action, *, prompt: str | None = None, alias: str | None = None,
                what: str | None = None) -> None:
        why = decide(self.principal.grant, action, prompt=prompt, alias=alias, protected=self.server.protected)
        if why is None:
            return
        self.server.metrics.denied.labels(action.value).inc()
        verb = what or _VERBS.get(action, "{p}").format(p=prompt or "prompts", a=alias or "")
        who = "token" if self.principal.kind == "token" else "principal"
        raise PermissionDeniedError(f"permission denied: {who} {self.principal.name} may not {verb} ({why})")

    @property
    def registry(self):
        """The registry facade acting as this principal (audit events name it and its token id)."""
        return self.server.registry_for(self.principal)


class Guard:
    """The permission rule of one route, run by :class:`LimitedRoute` before anything else."""

    def __init__(self, action: Action, what: str | None = None):
        self.action = action
        self.what = what

    async def __call__(self, request: Request) -> Call:
        server: ServerContext = request.app.state.server
        key = client_key(request)
        try:
            server.limiter.check(key)
        except RateLimitedError:
            server.metrics.rate_limited.inc()
            raise
        header = request.headers.get("authorization")
        try:
            principal = server.authenticator.cached(header) or \
                await run_in_threadpool(server.authenticator.authenticate, header)
        except AuthenticationError as exc:
            server.metrics.auth_failures.labels(exc.reason).inc()
            if exc.reason != "missing":
                server.limiter.failed(key)
            raise
        params = request.path_params
        for param, check in _PATH_CHECKS.items():
            if param in params:
                check(params[param])
        prompt = params.get("name") or (parse_ref(params["ref"]).name if "ref" in params else None)
        call = Call(principal, server, request)
        call.require(self.action, prompt=prompt, what=self.what)
        return call


class LimitedRoute(APIRoute):
    """An APIRoute with a guard, its own body limit and time limit (the route's ``x-promptreg`` spec)."""

    guard: Guard | None = None

    def get_route_handler(self):
        original = super().get_route_handler()
        spec = (self.openapi_extra or {}).get(SPEC_KEY, {})

        async def handler(request: Request):
            if self.guard is None:  # create_app refuses such an app; this is the last line of defence
                raise PermissionDeniedError("permission denied: this route has no permission rule")
            request.state.call = await self.guard(request)
            cfg = request.app.state.server.config
            limit = cfg.max_upload_bytes if spec.get("body") == "upload" else cfg.max_body_bytes
            timeout = cfg.long_request_timeout_s if spec.get("timeout") == "long" else cfg.request_timeout_s
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise PayloadTooLargeError(f"request body of {int(length)} bytes is over the limit of {limit} bytes")
            limited = Request(request.scope, _limited_receive(request.receive, limit, cfg.request_timeout_s))
            if spec.get("body") == "json":
                await limited.body()   # read here (cached on the request): over the limit is our 413, not a parse error
            try:
                return await asyncio.wait_for(original(limited), timeout)
            except TimeoutError:
                raise RequestTimeoutError(f"the server gave up on this request after {timeout:g} s") from None

        return handler


def _limited_receive(receive, limit: int, chunk_timeout_s: float):
    seen = 0

    async def wrapped():
        nonlocal seen
        try:
            message = await asyncio.wait_for(receive(), chunk_timeout_s)
        except TimeoutError:
            raise RequestTimeoutError(f"the client sent no body data for {chunk_timeout_s:g} s") from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        return message

    return wrapped


def api_route(router, method: str, path: str, *, action: Action, what: str | None = None, body: str = "none",
              long: bool = False, status_code: int = 200, summary: str | None = None, **kwargs):
    """Decorator: add ``fn`` to ``router`` under its permission rule. The endpoint takes the
    :class:`Call` as a parameter declared ``call: Call = Depends(current_call)``."""
    if body not in BODY_KINDS:
        raise ValueError(f"body must be one of {BODY_KINDS}")
    def deco(fn):
        router.add_api_route(path, fn, methods=[method], status_code=status_code, route_class_override=LimitedRoute,
                             summary=summary, openapi_extra={SPEC_KEY: {"permission": action.value, "body": body,
                                                                        "timeout": "long" if long else "short"}},
                             **kwargs)
        router.routes[-1].guard = Guard(action, what)
        return fn

    return deco


def current_call(request: Request) -> Call:
    """The Call the route's Guard established (endpoint parameter ``call: Call = Depends(current_call)``)."""
    return request.state.call


def guard_of(route) -> Guard | None:
    return getattr(route, "guard", None)


__all__ = ["Call", "Guard", "LimitedRoute", "api_route", "client_key", "current_call", "guard_of"]
