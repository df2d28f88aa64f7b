"""The server's stores (doctor), MLflow sync and garbage collection."""

from __future__ import annotations

from fastapi import Depends, Query
from starlette.concurrency import run_in_threadpool

from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import reply

API = "/api/v1"


def register(router) -> None:
    @api_route(router, "GET", f"{API}/doctor", action=Action.READ, long=True,
               summary="The server's stores and whether each answers (URLs without passwords)")
    async def doctor(call: Call = Depends(current_call)):
        return reply(await run_in_threadpool(call.registry.doctor))

    @api_route(router, "POST", f"{API}/sync", action=Action.ADMIN, what="run sync", long=True,
               summary="Make MLflow match the database (aliases changed by hand are restored, and audited)")
    async def sync(grace_s: float = Query(default=0.0, ge=0, le=86_400), call: Call = Depends(current_call)):
        return reply(await call.server.run_long(lambda: call.registry.sync(grace_s=grace_s)))

    @api_route(router, "POST", f"{API}/gc", action=Action.ADMIN, what="run gc", long=True,
               summary="Find (and with delete=true remove) artifact-store content nothing references")
    async def gc(delete: bool = False, min_age_s: float | None = Query(default=None, ge=0),
                 capture_retention_days: float | None = Query(default=None, ge=0),
                 call: Call = Depends(current_call)):
        return reply(await call.server.run_long(lambda: call.registry.gc(
            min_age_s=min_age_s, delete=delete, capture_retention_days=capture_retention_days)))
