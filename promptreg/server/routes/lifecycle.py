"""eval, gate, promote, rollback. Evaluations and gates run here, on the server's base model: a
client uploads the suite (its YAML and data files) and waits; ``promote`` accepts only a verdict
the server computed (run now with the uploaded suite, or stored by an earlier gate)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from promptreg.errors import InputError
from promptreg.refs import check_alias, parse_ref
from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import received_folder, reply

API = "/api/v1"
SUITE_FILE = "suite.yaml"


def suite_in(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    path = folder / SUITE_FILE
    if not path.is_file():
        raise InputError(f"the suite bundle has no {SUITE_FILE}")
    return path


class RollbackBody(BaseModel):
    to: int | None = Field(default=None, ge=1, le=2**31 - 1)
    reason: str | None = Field(default=None, max_length=10_000)


def register(router) -> None:
    @api_route(router, "POST", f"{API}/versions/{{ref:path}}/eval", action=Action.EVALUATE, body="upload", long=True,
               summary="Evaluate a version on an uploaded suite (runs on the server)")
    async def evaluate(ref: str, against: str | None = Query(default="production"), use_cache: bool = True,
                       env: str | None = None, call: Call = Depends(current_call)):
        async with received_folder(call) as folder:
            result = await call.server.run_long(call.registry.eval, ref, suite_in(folder),
                                             against=None if against in (None, "", "none") else against,
                                             env=env or None, use_cache=use_cache)
        return reply(result)

    @api_route(router, "POST", f"{API}/versions/{{ref:path}}/gate", action=Action.EVALUATE, body="upload", long=True,
               summary="The regression gate of a version against an alias or version (runs on the server)")
    async def gate(ref: str, against: str = "production", use_cache: bool = True, env: str | None = None,
                   call: Call = Depends(current_call)):
        async with received_folder(call) as folder:
            report = await call.server.run_long(call.registry.gate, ref, suite_in(folder), against=against,
                                             env=env or None, use_cache=use_cache)
        return reply(report)

    @api_route(router, "POST", f"{API}/versions/{{ref:path}}/promote", action=Action.MOVE, body="upload", long=True,
               summary="Move an alias to this version if its gate passes (optional suite bundle: run the gate)")
    async def promote(ref: str, to: str = "production", force: bool = False,
                      reason: str | None = Query(default=None, max_length=10_000), env: str | None = None,
                      call: Call = Depends(current_call)):
        check_alias(to)
        prompt = parse_ref(ref).name
        call.require(Action.MOVE, prompt=prompt, alias=to)
        if force:
            call.require(Action.FORCE, prompt=prompt, alias=to)
            if not (reason or "").strip():
                raise InputError("--force needs --reason TEXT: say why the gate is bypassed (it is recorded)")
        async with received_folder(call, required=False) as folder:
            # with a suite the gate runs (long); a bare alias move stays in the shared pool
            run = call.server.run_long if folder is not None else run_in_threadpool
            result = await run(call.registry.promote, ref, to, suite=suite_in(folder),
                               env=env or None, force=force, reason=reason)
        return reply(result)

    @api_route(router, "POST", f"{API}/prompts/{{name}}/aliases/{{alias}}/rollback", action=Action.MOVE, body="json",
               summary="Move an alias back to its previous holder (or to a given version)")
    def rollback(name: str, alias: str, body: RollbackBody, call: Call = Depends(current_call)):
        call.require(Action.MOVE, prompt=name, alias=alias)
        return reply(call.registry.rollback(name, alias, to=body.to, reason=body.reason))
