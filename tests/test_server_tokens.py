"""API tokens (promptreg.server.tokens) on SQLite and PostgreSQL: hash-only storage, expiry, last use,
revocation, audit events."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from promptreg.errors import AuthenticationError, InputError, NotFoundError
from promptreg.registry import migrate
from promptreg.registry.db import dispose_engines, make_engine
from promptreg.server.policy import Grant
from promptreg.server.tokens import TOKEN_RE, TokenStore, parse_expiry

T0 = dt.datetime(2027, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/reg.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrate.upgrade(url)
    clock = Clock()
    yield TokenStore(make_engine(url), clock=clock), clock
    dispose_engines()


def _rows(engine, sql):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_create_stores_only_a_hash_and_authenticates(store):
    tokens, _ = store
    created = tokens.create("ci-bot", "contributor", prompts=["team-a.*"], aliases=["staging"], actor="root")
    assert TOKEN_RE.fullmatch(created.token)
    assert created.token.startswith(f"prt_{created.info.token_id}_")
    secret = created.token.rsplit("_", 1)[1]
    dump = repr(_rows(tokens.engine, "SELECT * FROM api_token")) + repr(_rows(tokens.engine, "SELECT * FROM audit_event"))
    assert secret not in dump and created.token not in dump
    assert secret not in repr(created)                      # the secret is never in a repr/log line

    p = tokens.authenticate(created.token)
    assert (p.name, p.token_id, p.kind) == ("ci-bot", created.info.token_id, "token")
    assert p.grant == Grant("contributor", ("team-a.*",), ("staging",))
    assert _rows(tokens.engine, "SELECT actor, action, token_id FROM audit_event") == [("root", "token.create", None)]


@pytest.mark.parametrize("bad", ["", "Bearer x", "prt_short_x", "prt_abcdefghijkl_" + "a" * 39, "prt_ABCDEFGHIJKL_" + "a" * 40])
def test_malformed_tokens(store, bad):
    tokens, _ = store
    with pytest.raises(AuthenticationError) as info:
        tokens.authenticate(bad)
    assert info.value.reason == "malformed"


def test_wrong_secret_and_unknown_id_look_the_same(store):
    tokens, _ = store
    good = tokens.create("a", "viewer", actor="root").token
    wrong = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown = "prt_" + "0" * 12 + "_" + good.rsplit("_", 1)[1]
    errors = []
    for t in (wrong, unknown):
        with pytest.raises(AuthenticationError) as info:
            tokens.authenticate(t)
        errors.append((str(info.value), info.value.reason))
    assert errors == [("invalid token", "invalid")] * 2


def test_expiry_last_use_and_revocation(store):
    tokens, clock = store
    created = tokens.create("short", "viewer", expires=parse_expiry("2h"), actor="root")
    assert created.info.expires_at == (T0 + dt.timedelta(hours=2)).isoformat(timespec="seconds")
    tokens.authenticate(created.token)
    (info,) = tokens.list()
    assert info.last_used_at == T0.isoformat(timespec="seconds") and info.state == "active"
    clock.now = T0 + dt.timedelta(seconds=30)
    tokens.authenticate(created.token)                      # within a minute: no write
    assert tokens.list()[0].last_used_at == T0.isoformat(timespec="seconds")
    clock.now = T0 + dt.timedelta(minutes=5)
    tokens.authenticate(created.token)
    assert tokens.list()[0].last_used_at == clock.now.isoformat(timespec="seconds")
    clock.now = T0 + dt.timedelta(hours=2)
    with pytest.raises(AuthenticationError, match=r"is expired") as info:
        tokens.authenticate(created.token)
    assert info.value.reason == "expired"
    assert tokens.list()[0].state == "expired" and tokens.list(include_inactive=False) == []

    other = tokens.create("ci", "contributor", actor="root")
    revoked = tokens.revoke("ci", actor="root", actor_token_id="abc")
    assert revoked.state == "revoked" and revoked.revoked_by == "root"
    with pytest.raises(AuthenticationError) as info:
        tokens.authenticate(other.token)
    assert info.value.reason == "revoked"
    with pytest.raises(NotFoundError):
        tokens.revoke("ci", actor="root")                   # no active token of that name left
    with pytest.raises(InputError, match="already revoked"):
        tokens.revoke(other.info.token_id, actor="root")
    assert _rows(tokens.engine, "SELECT action, token_id FROM audit_event ORDER BY id")[-1] == ("token.revoke", "abc")


def test_rotation_by_name_needs_the_id_when_two_are_active(store):
    tokens, _ = store
    old = tokens.create("ci", "contributor", actor="root")
    new = tokens.create("ci", "contributor", actor="root")
    with pytest.raises(InputError, match="2 active tokens are named 'ci'"):
        tokens.revoke("ci", actor="root")
    tokens.revoke(old.info.token_id, actor="root")
    assert tokens.authenticate(new.token).name == "ci"


def test_invalid_names_roles_and_expiry(store):
    tokens, _ = store
    for kwargs, match in [({"name": "bad name", "role": "viewer"}, "invalid token name"),
                          ({"name": "x", "role": "root"}, "unknown role"),
                          ({"name": "x", "role": "contributor", "aliases": ["production"]}, "protected")]:
        with pytest.raises(InputError, match=match):
            tokens.create(actor="root", **kwargs)
    for bad in ("0d", "90", "1y", "-1d", "d"):
        with pytest.raises(InputError, match="invalid expiry"):
            parse_expiry(bad)
    assert parse_expiry("never") is None and parse_expiry("2w") == dt.timedelta(weeks=2)
    assert tokens.list() == []


def test_authenticator_caches_verified_tokens_briefly_and_forgets_revoked_ones(store):
    from promptreg.server.auth import Authenticator

    tokens, _ = store
    now = [100.0]
    auth = Authenticator(tokens, cache_s=2.0, clock=lambda: now[0])
    created = tokens.create("ci", "contributor", actor="root")
    header = f"Bearer {created.token}"
    assert auth.cached(header) is None                       # not verified yet
    assert auth.authenticate(header).name == "ci"
    assert auth.cached(header).name == "ci"                  # no database read within cache_s
    tokens.revoke("ci", actor="root")
    assert auth.cached(header) is not None                   # another process revoked it: up to cache_s
    now[0] += 2.5
    assert auth.cached(header) is None
    with pytest.raises(AuthenticationError):
        auth.authenticate(header)
    other = tokens.create("cd", "viewer", actor="root")
    auth.authenticate(f"Bearer {other.token}")
    auth.forget(other.info.token_id)                          # revoked through this process: at once
    assert auth.cached(f"Bearer {other.token}") is None
    assert auth.cached("Bearer prt_" + "x" * 12 + "_" + "y" * 40) is None
    assert auth.cached(None) is None and auth.cached("Basic abc") is None
