"""Credentials presented to ``promptreg serve`` in remote mode, verified by the registry server.

``promptreg serve`` authenticates every inference request with the registry's own API tokens. In
direct mode it reads the token table itself (:class:`promptreg.server.auth.Authenticator`); in remote
mode it has no database, so it asks the registry server who the presented token is
(``GET /api/v1/whoami`` WITH THAT TOKEN: the server applies its own checks, expiry, revocation and
rate limit). A verified credential is remembered for ``cache_s`` seconds (keyed by its SHA-256), so a
busy client costs one round trip per ``cache_s``; a failure is never cached.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict


class RemoteVerifier:
    def __init__(self, url: str, *, cache_s: float = 2.0, max_cached: int = 10_000, clock=time.monotonic):
        self.url = url
        self.cache_s, self.max_cached, self.clock = cache_s, max_cached, clock
        self._cache: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, header: str | None):
        from promptreg.client.http import ApiClient
        from promptreg.server.auth import Authenticator
        from promptreg.server.policy import Grant
        from promptreg.server.tokens import Principal

        credential = Authenticator.credential(header)
        key = hashlib.sha256(credential.encode()).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > self.clock():
                return hit[1]
        api = ApiClient(self.url, credential)
        try:
            me = api.request("GET", "/api/v1/whoami")     # 401 from the server: AuthenticationError
        finally:
            api.close()
        principal = Principal(me["name"], Grant(me["role"], tuple(me.get("prompts") or ("*",)),
                                                tuple(me.get("aliases") or ())),
                              me.get("token_id"), me.get("kind", "token"))
        with self._lock:
            self._cache[key] = (self.clock() + self.cache_s, principal)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return principal


__all__ = ["RemoteVerifier"]
