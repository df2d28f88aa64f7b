"""Authentication of each request: a ``prt_`` API token or (optionally) an OIDC JWT, behind a
per-client limit on failed attempts.

Invariants:
- The identity is only ever what a verified credential says; nothing the client asserts (a user name,
  ``X-Forwarded-For`` unless uvicorn is told to trust a proxy) is used.
- A verified API token is remembered for ``auth_cache_s`` (default 2 s) in its process: revoking a
  token takes effect within that time.
- Every failed attempt with a credential (malformed, invalid, expired, revoked) counts against the
  client address; at ``limit`` failures within ``window_s`` that address gets 429 for every request
  until the oldest failure leaves the window, while other addresses are unaffected. A missing
  credential is a plain 401 and is not counted. The counts live in this process (one per worker).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

from promptreg.errors import AuthenticationError, RateLimitedError
from promptreg.server.tokens import PREFIX, Principal, TokenStore


class FailureLimiter:
    """Failed authentications per client key in a sliding window (bounded memory)."""

    def __init__(self, limit: int, window_s: float, *, max_clients: int = 100_000, clock=time.monotonic):
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q

    def check(self, key: str) -> None:
        """RateLimitedError when ``key`` is over its limit."""
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is not None and len(q) >= self.limit:
                retry = max(1, math.ceil(q[0] + self.window_s - now))
                raise RateLimitedError(f"too many failed authentications from this client; retry in {retry} s",
                                       retry_after=retry)

    def failed(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is None:
                q = self._failures[key] = deque()
            self._failures.move_to_end(key)
            q.append(now)
            if len(q) > self.limit:
                q.popleft()
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


class Authenticator:
    """``Authorization: Bearer <credential>`` -> :class:`Principal` (or AuthenticationError).

    A verified ``prt_`` token is remembered for ``cache_s`` seconds (keyed by its SHA-256, in this
    process), so a busy client costs one database read per ``cache_s``, not one per request: a revoked or
    expired token is refused at most ``cache_s`` later. Failures are never cached."""

    def __init__(self, tokens: TokenStore, oidc=None, *, cache_s: float = 2.0, max_cached: int = 10_000,
                 clock=time.monotonic):
        self.tokens = tokens
        self.oidc = oidc
        self.cache_s, self.max_cached, self.clock = cache_s, max_cached, clock
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def credential(header: str | None) -> str:
        """The bearer credential of an Authorization header (AuthenticationError when there is none)."""
        if not header:
            raise AuthenticationError("missing credential: send 'Authorization: Bearer <token>' "
                                      "(promptreg login, or PROMPTREG_TOKEN)", "missing")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <token>'", "malformed")
        return credential

    def cached(self, header: str | None) -> Principal | None:
        """The principal of a token verified less than ``cache_s`` ago, else None (no I/O)."""
        if self.cache_s <= 0:
            return None
        try:
            credential = self.credential(header)
        except AuthenticationError:
            return None
        if not credential.startswith(PREFIX + "_"):
            return None
        from promptreg.server.tokens import token_hash

        key = token_hash(credential)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > self.clock():
                return hit[1]
        return None

    def forget(self, token_id: str) -> None:
        """Drop the cached verifications of a token (its revocation, in this process: at once)."""
        with self._lock:
            for key in [k for k, (_, p) in self._cache.items() if p.token_id == token_id]:
                del self._cache[key]

    def authenticate(self, header: str | None) -> Principal:
        credential = self.credential(header)
        if credential.startswith(PREFIX + "_") or self.oidc is None:
            principal = self.tokens.authenticate(credential)
            if self.cache_s > 0:
                from promptreg.server.tokens import token_hash

                with self._lock:
                    self._cache[token_hash(credential)] = (self.clock() + self.cache_s, principal)
                    while len(self._cache) > self.max_cached:
                        self._cache.popitem(last=False)
            return principal
        from promptreg.server.oidc import looks_like_jwt

        if not looks_like_jwt(credential):
            raise AuthenticationError("malformed token: expected prt_<id>_<secret> or an OIDC JWT", "malformed")
        return self.oidc.verify(credential)


__all__ = ["Authenticator", "FailureLimiter"]
