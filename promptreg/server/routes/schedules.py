"""Schedules of recurring drift checks: list, show, add, remove, runs, run-due. A schedule's data
and suite are read by the server when it fires: ``s3://`` prefixes or paths on the server."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from promptreg.refs import parse_ref
from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import reply

API = "/api/v1"


class ScheduleBody(BaseModel):
    ref: str = Field(description="NAME@ALIAS to check.", max_length=256)
    cron: str = Field(description="Five-field cron expression (UTC).", max_length=128)
    data_uri: str = Field(description="s3:// prefix or a data file on the server.", max_length=4096)
    suite_path: str | None = Field(default=None, max_length=4096)
    policy: dict[str, Any] | None = None


def _may_roll_back(policy: dict[str, Any] | None) -> bool:
    return policy is None or (policy.get("action") not in ("report", "flag"))


def register(router) -> None:
    @api_route(router, "GET", f"{API}/schedules", action=Action.READ, summary="Schedules (of one prompt, if named)")
    def list_schedules(name: str | None = Query(default=None, max_length=128), call: Call = Depends(current_call)):
        if name is not None:
            call.require(Action.READ, prompt=parse_ref(name).name)
        return reply([s for s in call.registry.list_schedules(name) if call.principal.grant.sees(s.name)])

    @api_route(router, "GET", f"{API}/schedules/runs", action=Action.READ, summary="The newest schedule runs")
    def runs(schedule_id: int | None = Query(default=None, ge=1), limit: int = Query(default=100, ge=1, le=10_000),
             call: Call = Depends(current_call)):
        if schedule_id is not None:
            call.require(Action.READ, prompt=call.registry.get_schedule(schedule_id).name)
            return reply(call.registry.schedule_runs(schedule_id, limit))
        visible = {s.id for s in call.registry.list_schedules(None) if call.principal.grant.sees(s.name)}
        return reply([r for r in call.registry.schedule_runs(None, limit) if r.schedule_id in visible])

    @api_route(router, "POST", f"{API}/schedules/run-due", action=Action.ADMIN, what="run due schedules", long=True,
               summary="Run every due check once (safe with several replicas)")
    async def run_due(lease_s: float | None = Query(default=None, ge=1, le=86_400), call: Call = Depends(current_call)):
        return reply(await call.server.run_long(lambda: call.registry.run_due(lease_s=lease_s)))

    @api_route(router, "GET", f"{API}/schedules/{{schedule_id}}", action=Action.READ, summary="One schedule")
    def get_schedule(schedule_id: int, call: Call = Depends(current_call)):
        info = call.registry.get_schedule(schedule_id)
        call.require(Action.READ, prompt=info.name)
        return reply(info)

    @api_route(router, "POST", f"{API}/schedules", action=Action.SCHEDULE, body="json", status_code=201,
               summary="Add a recurring drift check of NAME@ALIAS")
    def add_schedule(body: ScheduleBody, call: Call = Depends(current_call)):
        ref = parse_ref(body.ref)
        call.require(Action.SCHEDULE, prompt=ref.name)
        if ref.alias is not None and _may_roll_back(body.policy):
            call.require(Action.MOVE, prompt=ref.name, alias=ref.alias,
                         what=f"schedule checks that may roll back {ref.name}@{ref.alias}")
        info = call.registry.add_schedule(body.ref, body.cron, body.data_uri, suite_path=body.suite_path,
                                          policy=body.policy)
        return reply(info, 201)

    @api_route(router, "DELETE", f"{API}/schedules/{{schedule_id}}", action=Action.SCHEDULE,
               summary="Remove a schedule (its drift reports stay)")
    def remove_schedule(schedule_id: int, call: Call = Depends(current_call)):
        call.require(Action.SCHEDULE, prompt=call.registry.get_schedule(schedule_id).name)
        return reply(call.registry.remove_schedule(schedule_id))
