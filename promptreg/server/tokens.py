"""API tokens of ``promptreg server``: ``prt_<id>_<secret>``, stored only as a hash.

Invariants:
- The secret comes from :mod:`secrets` (238 bits), is shown once by :meth:`TokenStore.create` and
  never stored: the table keeps ``sha256(token)`` only. Tokens are high-entropy, so one SHA-256 is
  the right hash (a slow password hash would only slow every request down).
- :meth:`TokenStore.authenticate` looks a token up by its public id, then compares hashes with
  :func:`hmac.compare_digest`; an unknown id is compared against a dummy hash so that both paths
  cost the same. Unknown id and wrong secret give the same answer; only the holder of the right
  secret learns that the token expired or was revoked.
- A token is never deleted, only revoked (the audit log keeps naming its id); ``last_used_at`` is
  written at most once a minute per token (no write per request).
- Creating and revoking a token are audit events (no prompt), by the authenticated principal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from promptreg.errors import AuthenticationError, InputError, NotFoundError
from promptreg.server.policy import DEFAULT_PROTECTED, Grant, make_grant

PREFIX = "prt"
ID_LEN = 12
SECRET_LEN = 40
_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
TOKEN_RE = re.compile(rf"{PREFIX}_([a-z0-9]{{{ID_LEN}}})_([A-Za-z0-9]{{{SECRET_LEN}}})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LAST_USED_EVERY = dt.timedelta(minutes=1)
_DUMMY_HASH = hashlib.sha256(b"promptreg-no-such-token").hexdigest()
_EXPIRY_RE = re.compile(r"(\d{1,6})([mhdw])")
_EXPIRY_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LEN))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LEN))
    return token_id, f"{PREFIX}_{token_id}_{secret}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_expiry(text: str | None) -> dt.timedelta | None:
    """``90d``, ``12h``, ``30m``, ``2w``; ``never`` (or None) for no expiry."""
    if text is None or text == "never":
        return None
    m = _EXPIRY_RE.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InputError(f"invalid expiry {text!r}: use a number and a unit (30m, 12h, 90d, 2w) or 'never'")
    return dt.timedelta(**{_EXPIRY_UNIT[m.group(2)]: int(m.group(1))})


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the token's name (or the OIDC subject), its token id, its grant."""

    name: str
    grant: Grant
    token_id: str | None = None
    kind: str = "token"          # token | oidc

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "token_id": self.token_id, "kind": self.kind, **self.grant.to_dict()}


@dataclass
class TokenInfo:
    token_id: str
    name: str
    role: str
    prompts: list[str]
    aliases: list[str]
    created_by: str
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    revoked_by: str | None
    state: str                   # active | expired | revoked

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenInfo:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass
class CreatedToken:
    info: TokenInfo
    token: str = field(repr=False)   # shown once, never logged

    def to_dict(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "token": self.token}


def _state(row, now: dt.datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def _info(row, now: dt.datetime) -> TokenInfo:
    return TokenInfo(row.token_id, row.name, row.role, list(row.prompts or []), list(row.aliases or []),
                     row.created_by, _iso(row.created_at), _iso(row.expires_at), _iso(row.last_used_at),
                     _iso(row.revoked_at), row.revoked_by, _state(row, now))


class TokenStore:
    """Tokens in the registry database (table ``api_token``)."""

    def __init__(self, engine, *, protected: Collection[str] = DEFAULT_PROTECTED, clock=None):
        from promptreg.registry.models import utcnow

        self.engine = engine
        self.protected = tuple(protected)
        self.clock = clock or utcnow

    def _session(self):
        from promptreg.registry.db import session

        return session(self.engine)

    def create(self, name: str, role: str, *, prompts: Iterable[str] = (), aliases: Iterable[str] = (),
               expires: dt.timedelta | None = None, actor: str, actor_token_id: str | None = None) -> CreatedToken:
        """A new token; ``token`` in the result is the only time the secret is seen."""
        from promptreg.registry.models import ApiToken, AuditEvent

        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InputError(f"invalid token name {name!r}: letters, digits, '.', '_', '-', at most 64 characters")
        grant = make_grant(role, prompts, aliases, self.protected)
        now = self.clock()
        token_id, token = new_token()
        row = ApiToken(token_id=token_id, name=name, role=grant.role, prompts=list(grant.prompts),
                       aliases=list(grant.aliases), secret_hash=token_hash(token), created_by=actor,
                       created_at=now, expires_at=now + expires if expires is not None else None)
        with self._session() as s:
            s.add(row)
            s.add(AuditEvent(at=now, actor=actor, action="token.create", token_id=actor_token_id,
                             details={"token_id": token_id, "name": name, **grant.to_dict(),
                                      "expires_at": _iso(row.expires_at)}))
        return CreatedToken(_info(row, now), token)

    def list(self, *, include_inactive: bool = True) -> list[TokenInfo]:
        from sqlmodel import select

        from promptreg.registry.models import ApiToken

        now = self.clock()
        with self._session() as s:
            rows = s.exec(select(ApiToken).order_by(ApiToken.id)).all()
        infos = [_info(r, now) for r in rows]
        return infos if include_inactive else [i for i in infos if i.state == "active"]

    def _find(self, s, ref: str):
        """The token named by its id, or by a name that exactly one active token carries."""
        from sqlmodel import select

        from promptreg.registry.models import ApiToken

        row = s.exec(select(ApiToken).where(ApiToken.token_id == ref)).first()
        if row is not None:
            return row
        now = self.clock()
        active = [r for r in s.exec(select(ApiToken).where(ApiToken.name == ref)).all() if _state(r, now) == "active"]
        if len(active) == 1:
            return active[0]
        if active:
            raise InputError(f"{len(active)} active tokens are named {ref!r} ("
                             + ", ".join(r.token_id for r in active) + "): name one by its id")
        raise NotFoundError(f"no active token with id or name {ref!r}")

    def revoke(self, ref: str, *, actor: str, actor_token_id: str | None = None) -> TokenInfo:
        from promptreg.registry.models import AuditEvent

        now = self.clock()
        with self._session() as s:
            row = self._find(s, ref)
            if row.revoked_at is not None:
                raise InputError(f"token {row.token_id} ({row.name}) is already revoked")
            row.revoked_at, row.revoked_by = now, actor
            s.add(row)
            s.add(AuditEvent(at=now, actor=actor, action="token.revoke", token_id=actor_token_id,
                             details={"token_id": row.token_id, "name": row.name}))
            s.flush()
            return _info(row, now)

    def authenticate(self, token: str) -> Principal:
        """The principal of ``token``, or AuthenticationError (malformed, invalid, expired, revoked)."""
        from sqlalchemy import update
        from sqlmodel import select

        from promptreg.registry.models import ApiToken

        m = TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
        if m is None:
            raise AuthenticationError("malformed token: expected prt_<id>_<secret>", "malformed")
        token_id = m.group(1)
        with self._session() as s:
            row = s.exec(select(ApiToken).where(ApiToken.token_id == token_id)).first()
        expected = row.secret_hash if row is not None else _DUMMY_HASH
        if not hmac.compare_digest(token_hash(token), expected) or row is None:
            raise AuthenticationError("invalid token", "invalid")
        now = self.clock()
        state = _state(row, now)
        if state != "active":
            raise AuthenticationError(f"token {row.token_id} ({row.name}) is {state}", state)
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
            with self._session() as s:
                s.exec(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        return Principal(row.name, Grant(row.role, tuple(row.prompts or ("*",)), tuple(row.aliases or ())),
                         token_id=row.token_id, kind="token")


__all__ = ["CreatedToken", "PREFIX", "Principal", "TOKEN_RE", "TokenInfo", "TokenStore",
           "new_token", "parse_expiry", "token_hash"]
