"""Optional OIDC: a JWT bearer token validated with PyJWT against the issuer's JWKS.

Invariants:
- Only asymmetric algorithms from the configuration are accepted (never ``none`` or HMAC: a public
  JWKS key must not double as a shared secret); the signing key is the JWKS key with the token's
  ``kid``.
- ``iss``, ``aud``, ``exp`` and the name claim are required; ``exp``/``nbf`` allow ``leeway_s``.
- The grant comes from the roles claim through ``[server.oidc.roles]``; when several values map, the
  highest role wins (grants are never merged). No mapped value: authenticated, but no permission.
- The JWKS is fetched lazily and cached (PyJWKClient, 5 minutes); an unknown ``kid`` refetches it at
  most once per cool-down.
"""

from __future__ import annotations

import json
import urllib.request

from promptreg.errors import AuthenticationError, PermissionDeniedError, StoreUnavailableError
from promptreg.server.config import OidcConfig
from promptreg.server.policy import rank
from promptreg.server.tokens import Principal

_FETCH_TIMEOUT_S = 10


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class OidcVerifier:
    def __init__(self, config: OidcConfig, protected):
        self.config = config
        self.grants = config.grants(protected)
        self._jwks = None

    def _jwks_client(self):
        import jwt

        if self._jwks is None:
            url = self.config.jwks_url or self._discover()
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=_FETCH_TIMEOUT_S)
        return self._jwks

    def _discover(self) -> str:
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as r:   # noqa: S310 - configured issuer
                doc = json.loads(r.read(1 << 20))
            return str(doc["jwks_uri"])
        except (OSError, ValueError, KeyError) as exc:
            raise StoreUnavailableError(f"OIDC discovery at {url} failed: {exc}") from None

    def verify(self, token: str) -> Principal:
        import jwt

        cfg = self.config
        try:
            key = self._jwks_client().get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise StoreUnavailableError(f"OIDC keys unavailable: {exc}") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AuthenticationError(f"invalid OIDC token: {exc}", "invalid") from None
        try:
            claims = jwt.decode(token, key.key, algorithms=list(cfg.algorithms), audience=cfg.audience,
                                issuer=cfg.issuer, leeway=cfg.leeway_s,
                                options={"require": ["exp", "iss", "aud", cfg.name_claim]})
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("OIDC token expired", "expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid OIDC token: {exc}", "invalid") from None
        name = f"oidc:{claims[cfg.name_claim]}"
        values = claims.get(cfg.roles_claim, [])
        values = [values] if isinstance(values, str) else values if isinstance(values, list) else []
        mapped = [self.grants[v] for v in values if isinstance(v, str) and v in self.grants]
        if not mapped:
            raise PermissionDeniedError(f"{name} has no promptreg role (claim {cfg.roles_claim} maps to none)")
        grant = max(mapped, key=lambda g: rank(g.role))
        return Principal(name, grant, token_id=None, kind="oidc")


__all__ = ["OidcVerifier", "looks_like_jwt"]
