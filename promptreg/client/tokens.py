"""``token create|list|revoke`` and ``whoami`` over HTTP: the same methods as
:class:`promptreg.server.tokens.TokenStore`, for an admin token in remote mode."""

from __future__ import annotations

import datetime as dt

from promptreg.client.http import API, ApiClient
from promptreg.server.tokens import CreatedToken, TokenInfo


def _expires_text(expires: dt.timedelta | None) -> str:
    """The expiry in the largest unit that states it exactly (the server parses the same grammar)."""
    if expires is None:
        return "never"
    minutes = max(1, int(expires.total_seconds() // 60))
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


class RemoteTokens:
    def __init__(self, api: ApiClient):
        self.api = api

    def create(self, name: str, role: str, *, prompts=(), aliases=(), expires: dt.timedelta | None = None,
               **_ignored) -> CreatedToken:
        data = self.api.request("POST", f"{API}/tokens", json={
            "name": name, "role": role, "prompts": list(prompts), "aliases": list(aliases),
            "expires": _expires_text(expires)})
        return CreatedToken(TokenInfo.from_dict(data), data["token"])

    def list(self, *, include_inactive: bool = True) -> list[TokenInfo]:
        infos = [TokenInfo.from_dict(d) for d in self.api.request("GET", f"{API}/tokens")]
        return infos if include_inactive else [i for i in infos if i.state == "active"]

    def revoke(self, ref: str, **_ignored) -> TokenInfo:
        from urllib.parse import quote

        return TokenInfo.from_dict(self.api.request("DELETE", f"{API}/tokens/{quote(ref, safe='')}"))

    def whoami(self) -> dict:
        return self.api.request("GET", f"{API}/whoami")


__all__ = ["RemoteTokens"]
