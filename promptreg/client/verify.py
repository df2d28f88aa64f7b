"""Credentials presented to ``promptreg serve`` in remote mode, verified by the registry server.

``promptreg serve`` authenticates every inference request with the registry's own API tokens. In
direct mode its :class:`promptreg.server.auth.Authenticator` reads the token table; in remote mode it
has no database, so the same Authenticator (and its short verification cache) is given
:class:`RemoteTokens` instead: it asks the registry server who the presented token is
(``GET /api/v1/whoami`` WITH THAT TOKEN: the server applies its own checks, expiry, revocation and
rate limit; a 401 there is the same AuthenticationError here).
"""

from __future__ import annotations


class RemoteTokens:
    """The token store of a registry server, as far as checking one token goes."""

    def __init__(self, url: str):
        self.url = url

    def authenticate(self, token: str):
        from promptreg.client.http import ApiClient
        from promptreg.server.policy import Grant
        from promptreg.server.tokens import Principal

        api = ApiClient(self.url, token)
        try:
            me = api.request("GET", "/api/v1/whoami")
        finally:
            api.close()
        return Principal(me["name"], Grant(me["role"], tuple(me.get("prompts") or ("*",)),
                                           tuple(me.get("aliases") or ())),
                         me.get("token_id"), me.get("kind", "token"))


__all__ = ["RemoteTokens"]
