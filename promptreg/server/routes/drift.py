"""Drift checks (data uploaded, an ``s3://`` prefix or ``captured[:SINCE]`` traffic the server reads) and
environments."""

from __future__ import annotations

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from promptreg.errors import InputError
from promptreg.refs import parse_ref
from promptreg.server.policy import Action
from promptreg.server.routes.lifecycle import suite_in
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import received_folder, reply

API = "/api/v1"
DATA_DIR = "data"
SUITE_DIR = "suite"


class EnvironmentBody(BaseModel):
    model: str = Field(description="The base model on the server: a folder there, or 'smollm2'.", max_length=4096)


def register(router) -> None:
    @api_route(router, "POST", f"{API}/versions/{{ref:path}}/drift", action=Action.DRIFT, body="upload", long=True,
               summary="Check a version for drift on fresh data (a bundle: data/<file>, suite/suite.yaml)")
    async def drift(ref: str, data_uri: str | None = Query(default=None, max_length=4096), env: str | None = None,
                    reference: str | None = None, action: str | None = None, text_column: str = "text",
                    label_column: str = "label", call: Call = Depends(current_call)):
        parsed = parse_ref(ref)
        if parsed.alias is not None and action not in ("report", "flag"):
            # a rollback policy (the suite's, or the default's) may move the alias: the caller must be allowed to
            call.require(Action.MOVE, prompt=parsed.name, alias=parsed.alias,
                         what=f"run a drift check that may roll back {parsed.name}@{parsed.alias}")
        async with received_folder(call, required=False) as folder:
            files = sorted((folder / DATA_DIR).iterdir()) if folder is not None and (folder / DATA_DIR).is_dir() else []
            if data_uri is not None and files:
                raise InputError("give the data as an upload or as data_uri (s3://...), not both")
            if data_uri is not None and not data_uri.startswith("s3://") and data_uri.split(":", 1)[0] != "captured":
                raise InputError("data_uri must be an s3:// prefix the server can read or captured[:SINCE]; "
                                 "upload a local file instead")
            if data_uri is None:
                if len(files) != 1:
                    raise InputError("the drift bundle must hold exactly one data file under data/")
                data_uri = str(files[0])
            suite = suite_in(folder / SUITE_DIR) if folder is not None and (folder / SUITE_DIR).is_dir() else None
            outcome = await call.server.run_long(call.registry.drift, ref, data_uri, suite=suite, env=env,
                                              reference=reference, action=action, text_column=text_column,
                                              label_column=label_column)
        return reply(outcome)

    @api_route(router, "GET", f"{API}/environments", action=Action.READ, summary="Environments and their base models")
    def environments(call: Call = Depends(current_call)):
        return reply(call.registry.list_environments())

    @api_route(router, "PUT", f"{API}/environments/{{env}}", action=Action.ADMIN, what="set environments",
               body="json", long=True, summary="Record the base model an environment runs (a path on the server)")
    def set_environment(env: str, body: EnvironmentBody, call: Call = Depends(current_call)):
        return reply(call.registry.set_environment_model(env, body.model))
