"""Prompts and versions: list, show, manifest, history, push (streamed upload), pull (streamed tar).

A push is re-validated and re-hashed here: ``X-Promptreg-Sha256`` is the client's claim, and an
upload whose content hashes otherwise is refused before anything is stored.
"""

from __future__ import annotations

from fastapi import Depends, Query
from fastapi.responses import StreamingResponse

from promptreg.errors import IntegrityError
from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call
from promptreg.server.uploads import received_folder, reply

API = "/api/v1"
SHA_HEADER = "X-Promptreg-Sha256"


def register(router) -> None:
    @api_route(router, "GET", f"{API}/prompts", action=Action.READ, summary="Every prompt the caller may read")
    def list_prompts(call: Call = Depends(current_call)):
        return reply([p for p in call.registry.list_prompts() if call.principal.grant.sees(p.name)])

    @api_route(router, "GET", f"{API}/prompts/{{name}}/versions", action=Action.READ, summary="Versions of a prompt")
    def list_versions(name: str, call: Call = Depends(current_call)):
        return reply(call.registry.list_versions(name))

    @api_route(router, "GET", f"{API}/prompts/{{name}}/history", action=Action.READ,
               summary="The audit log of a prompt (each event names its principal and token id)")
    def history(name: str, call: Call = Depends(current_call)):
        return reply(call.registry.history(name))

    @api_route(router, "POST", f"{API}/prompts/{{name}}/versions", action=Action.PUSH, body="upload",
               long=True, status_code=201, summary="Push: a tar of the artifact folder (re-validated, re-hashed)")
    async def push(name: str, description: str | None = Query(default=None, max_length=10_000),
                   call: Call = Depends(current_call)):
        from promptreg.artifact.hashing import folder_sha256

        claimed = call.request.headers.get(SHA_HEADER)
        async with received_folder(call) as folder:
            actual = await call.server.run_long(folder_sha256, folder)
            if claimed is not None and claimed != actual:
                raise IntegrityError(f"the upload hashes to {actual}, not the claimed sha256 {claimed}: "
                                     "refused, nothing stored (transfer corrupted or tampered?)")
            result = await call.server.run_long(call.registry.push, folder, name, description)
        return reply(result, 201 if result.created else 200)

    # the routes below a {ref:path} end with a fixed word, so they are declared before the bare one
    @api_route(router, "GET", f"{API}/versions/{{ref:path}}/manifest", action=Action.READ,
               summary="The manifest (promptreg.json) of a version")
    def manifest(ref: str, call: Call = Depends(current_call)):
        return reply(call.registry.manifest(ref))

    @api_route(router, "GET", f"{API}/versions/{{ref:path}}/artifact", action=Action.READ, long=True,
               summary="Pull: the artifact as a tar stream (verify its sha256 on arrival)")
    def artifact(ref: str, call: Call = Depends(current_call)):
        from promptreg.artifact.transfer import CONTENT_TYPE, pack

        info, folder = call.registry.fetch_verified(ref)
        headers = {SHA_HEADER: info.sha256, "X-Promptreg-Version": f"{info.name}:{info.version}"}
        return StreamingResponse(pack(folder), media_type=CONTENT_TYPE, headers=headers)

    @api_route(router, "GET", f"{API}/versions/{{ref:path}}", action=Action.READ,
               summary="A version: NAME (latest), NAME:VERSION or NAME@ALIAS")
    def show(ref: str, call: Call = Depends(current_call)):
        return reply(call.registry.show(ref))
