"""``/api/v1/whoami`` and ``/api/v1/tokens``: who am I; create, list, revoke API tokens (admin)."""

from __future__ import annotations

from fastapi import Depends
from pydantic import BaseModel, Field

from promptreg.server.policy import Action
from promptreg.server.routing import Call, api_route, current_call

API = "/api/v1"
NO_STORE = {"Cache-Control": "no-store"}


class TokenCreate(BaseModel):
    name: str = Field(description="Principal name recorded in the audit log (letters, digits, '.', '_', '-').")
    role: str = Field(description="viewer, contributor, promoter or admin.")
    prompts: list[str] = Field(default_factory=list, description="Prompt globs (default: every prompt).")
    aliases: list[str] = Field(default_factory=list,
                               description="Alias globs; protected aliases only by name, for promoters.")
    expires: str | None = Field(default="90d", description="30m, 12h, 90d, 2w or 'never'.")


def register(router) -> None:
    @api_route(router, "GET", f"{API}/whoami", action=Action.READ, summary="The authenticated principal")
    def whoami(call: Call = Depends(current_call)):
        return call.principal.to_dict()

    @api_route(router, "GET", f"{API}/tokens", action=Action.ADMIN, what="list tokens", summary="List tokens")
    def list_tokens(call: Call = Depends(current_call)):
        return [t.to_dict() for t in call.server.tokens.list()]

    @api_route(router, "POST", f"{API}/tokens", action=Action.ADMIN, what="create tokens", body="json",
               status_code=201, summary="Create a token (its secret is in this answer only)")
    def create_token(body: TokenCreate, call: Call = Depends(current_call)):
        from fastapi.responses import JSONResponse

        from promptreg.server.tokens import parse_expiry

        created = call.server.tokens.create(body.name, body.role, prompts=body.prompts, aliases=body.aliases,
                                            expires=parse_expiry(body.expires), actor=call.principal.name,
                                            actor_token_id=call.principal.token_id)
        return JSONResponse(created.to_dict(), status_code=201, headers=NO_STORE)

    @api_route(router, "DELETE", f"{API}/tokens/{{token}}", action=Action.ADMIN, what="revoke tokens",
               summary="Revoke a token (by id, or by a name one active token carries)")
    def revoke_token(token: str, call: Call = Depends(current_call)):
        info = call.server.tokens.revoke(token, actor=call.principal.name, actor_token_id=call.principal.token_id)
        call.server.authenticator.forget(info.token_id)     # other processes: within auth_cache_s
        return info.to_dict()
