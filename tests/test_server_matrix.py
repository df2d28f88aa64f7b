"""Every route of promptreg server x every kind of caller answers exactly the documented status.

A real uvicorn server on loopback over PostgreSQL, moto S3 and an mlflow server. The table ROUTES below
is the documentation of each route's rule (docs/server.md, section 4, says the same in prose): one
sample request per route (several where the alias matters), and who gets which status. The samples are
chosen so that an allowed caller reaches the route and gets a deterministic answer without changing
what the next caller sees (unknown versions, invalid bodies, dry runs). The test fails when the server
has a route this table does not cover, or the table names a route the server does not have.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile

import httpx
import pytest

from promptreg.server.tokens import TokenStore
from tests.fixtures.server import bearer, start_server
from tests.helpers import make_artifact

CALLERS = ("none", "malformed", "wrong_secret", "expired", "revoked", "viewer", "contributor",
           "promoter_staging", "promoter_production", "admin")
UNAUTHENTICATED = CALLERS[:5]
ROLES = CALLERS[5:]
A, V = "/api/v1", "/api/v1/versions"


def allowed(status: int, *who: str) -> dict[str, int]:
    """``status`` for the callers in ``who``, 403 for the other authenticated callers, 401 for the rest."""
    return {c: 401 if c in UNAUTHENTICATED else status if c in who else 403 for c in CALLERS}


def from_role(status: int, least: str) -> dict[str, int]:
    order = ("viewer", "contributor", "promoter_staging", "admin")   # promoter(production) ranks with promoter
    rank = {"viewer": 0, "contributor": 1, "promoter_staging": 2, "promoter_production": 2, "admin": 3}
    return allowed(status, *[c for c in ROLES if rank[c] >= order.index(least)])


def public(status: int) -> dict[str, int]:
    return dict.fromkeys(CALLERS, status)


JSON = {"Content-Type": "application/json"}
TAR = {"Content-Type": "application/x-tar"}

# (method, route template) -> [(sample path, params, body, headers, expected status per caller), ...]
ROUTES: dict[tuple[str, str], list[tuple]] = {
    ("GET", "/healthz"): [("/healthz", None, None, None, public(200))],
    ("GET", "/readyz"): [("/readyz", None, None, None, public(200))],
    ("GET", "/metrics"): [("/metrics", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/openapi.json"): [(f"{A}/openapi.json", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/whoami"): [(f"{A}/whoami", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/doctor"): [(f"{A}/doctor", None, None, None, from_role(200, "viewer"))],
    # tokens: admin only (an invalid body / unknown token: the route ran, nothing changed)
    ("GET", f"{A}/tokens"): [(f"{A}/tokens", None, None, None, from_role(200, "admin"))],
    ("POST", f"{A}/tokens"): [(f"{A}/tokens", None, json.dumps({"name": "x", "role": "bogus"}), JSON,
                               from_role(400, "admin"))],
    ("DELETE", f"{A}/tokens/{{token}}"): [(f"{A}/tokens/nosuchtoken", None, None, None, from_role(404, "admin"))],
    # reads
    ("GET", f"{A}/prompts"): [(f"{A}/prompts", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/prompts/{{name}}/versions"): [(f"{A}/prompts/sentiment/versions", None, None, None,
                                                 from_role(200, "viewer"))],
    ("GET", f"{A}/prompts/{{name}}/history"): [(f"{A}/prompts/sentiment/history", None, None, None,
                                                from_role(200, "viewer"))],
    ("GET", f"{V}/{{ref:path}}"): [(f"{V}/sentiment@staging", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{V}/{{ref:path}}/manifest"): [(f"{V}/sentiment:1/manifest", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{V}/{{ref:path}}/artifact"): [(f"{V}/sentiment:1/artifact", None, None, None, from_role(200, "viewer"))],
    # push / eval / gate / drift: contributor and up (an empty body: refused by the route, nothing runs)
    ("POST", f"{A}/prompts/{{name}}/versions"): [(f"{A}/prompts/sentiment/versions", None, b"", TAR,
                                                  from_role(400, "contributor"))],
    ("POST", f"{V}/{{ref:path}}/eval"): [(f"{V}/sentiment:1/eval", None, b"", TAR, from_role(400, "contributor"))],
    ("POST", f"{V}/{{ref:path}}/gate"): [(f"{V}/sentiment:1/gate", None, b"", TAR, from_role(400, "contributor"))],
    ("POST", f"{V}/{{ref:path}}/drift"): [
        (f"{V}/sentiment:1/drift", None, b"", TAR, from_role(400, "contributor")),
        # on an alias, a check that may roll it back needs the alias grant
        (f"{V}/sentiment@production/drift", None, b"", TAR,
         allowed(400, "promoter_production", "admin")),
        (f"{V}/sentiment@production/drift", {"action": "report"}, b"", TAR, from_role(400, "contributor")),
    ],
    # alias moves (an unknown version: 404 once allowed)
    ("POST", f"{V}/{{ref:path}}/promote"): [
        (f"{V}/sentiment:99/promote", {"to": "staging"}, b"", TAR,
         allowed(404, "contributor", "promoter_staging", "admin")),          # promoter(production) lacks staging
        (f"{V}/sentiment:99/promote", {"to": "production"}, b"", TAR, allowed(404, "promoter_production", "admin")),
        (f"{V}/sentiment:99/promote", {"to": "staging", "force": "true", "reason": "r"}, b"", TAR,
         allowed(404, "admin")),
    ],
    ("POST", f"{A}/prompts/{{name}}/aliases/{{alias}}/rollback"): [
        (f"{A}/prompts/sentiment/aliases/staging/rollback", None, json.dumps({"to": 99}), JSON,
         allowed(404, "contributor", "promoter_staging", "admin")),
        (f"{A}/prompts/sentiment/aliases/production/rollback", None, json.dumps({}), JSON,
         allowed(400, "promoter_production", "admin")),                   # not set: nothing to roll back
    ],
    # environments
    ("GET", f"{A}/environments"): [(f"{A}/environments", None, None, None, from_role(200, "viewer"))],
    ("PUT", f"{A}/environments/{{env}}"): [(f"{A}/environments/prod", None, json.dumps({"model": "/no/such/model"}),
                                            JSON, from_role(400, "admin"))],
    # schedules
    ("GET", f"{A}/schedules"): [(f"{A}/schedules", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/schedules/runs"): [(f"{A}/schedules/runs", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/schedules/{{schedule_id}}"): [(f"{A}/schedules/1", None, None, None, from_role(200, "viewer"))],
    ("POST", f"{A}/schedules"): [(f"{A}/schedules", None, json.dumps({
        "ref": "sentiment@staging", "cron": "not a cron", "data_uri": "d.jsonl", "policy": {"action": "report"}}),
        JSON, from_role(400, "contributor"))],
    ("DELETE", f"{A}/schedules/{{schedule_id}}"): [(f"{A}/schedules/999", None, None, None,
                                                    from_role(404, "contributor"))],
    ("POST", f"{A}/schedules/run-due"): [(f"{A}/schedules/run-due", None, None, None, from_role(200, "admin"))],
    # events: read like their prompts; retrying and webhooks are admin only (unknown ids: 404 once allowed)
    ("GET", f"{A}/events"): [(f"{A}/events", None, None, None, from_role(200, "viewer"))],
    ("GET", f"{A}/events/deliveries"): [(f"{A}/events/deliveries", {"status": "dead"}, None, None,
                                         from_role(200, "viewer"))],
    ("GET", f"{A}/events/{{event}}"): [(f"{A}/events/1", None, None, None, from_role(200, "viewer"))],
    ("POST", f"{A}/events/retry"): [(f"{A}/events/retry", None, json.dumps({"events": ["999999"]}), JSON,
                                     from_role(404, "admin"))],
    ("GET", f"{A}/webhooks"): [(f"{A}/webhooks", None, None, None, from_role(200, "admin"))],
    ("POST", f"{A}/webhooks"): [(f"{A}/webhooks", None, json.dumps({"url": "ftp://x", "events": ["*"]}), JSON,
                                 from_role(400, "admin"))],
    ("DELETE", f"{A}/webhooks/{{webhook_id}}"): [(f"{A}/webhooks/999", None, None, None, from_role(404, "admin"))],
    ("POST", f"{A}/webhooks/{{webhook_id}}/test"): [(f"{A}/webhooks/999/test", None, None, None,
                                                     from_role(404, "admin"))],
    ("GET", f"{A}/webhooks/{{webhook_id}}/deliveries"): [(f"{A}/webhooks/999/deliveries", None, None, None,
                                                          from_role(404, "admin"))],
    # housekeeping
    ("POST", f"{A}/sync"): [(f"{A}/sync", None, None, None, from_role(200, "admin"))],
    ("POST", f"{A}/gc"): [(f"{A}/gc", None, None, None, from_role(200, "admin"))],
}


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory, mlflow_server, moto_s3):
    from promptreg.registry.db import dispose_engines, make_engine
    from promptreg.services.registry import Registry
    from tests.fixtures.services import create_pg_database, drop_pg_database

    cwd = tmp_path_factory.mktemp("matrix")
    db_url = create_pg_database()
    bucket = moto_s3.new_bucket()
    env = {**moto_s3.env(), "PROMPTREG_DB_URL": db_url, "PROMPTREG_ARTIFACT_URI": f"s3://{bucket}/reg",
           "MLFLOW_TRACKING_URI": mlflow_server.url, "PROMPTREG_HOME": str(cwd / "home")}
    (cwd / "promptreg.toml").write_text("[server]\nauth_failures = 100000\nsync_interval_s = 0\n")
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        reg = Registry()
        for seed in (1, 2):
            reg.push(make_artifact(cwd / f"a{seed}", seed=seed), "sentiment")
        reg.set_alias("sentiment", "staging", 1)
        reg.add_schedule("sentiment@staging", "0 3 * * *", "s3://nowhere/data", policy={"action": "report"})
        tokens = TokenStore(make_engine(db_url))
        made = {
            "viewer": tokens.create("m-viewer", "viewer", actor="t").token,
            "contributor": tokens.create("m-contributor", "contributor", actor="t").token,
            "promoter_staging": tokens.create("m-promo-staging", "promoter", aliases=["staging"], actor="t").token,
            "promoter_production": tokens.create("m-promo-prod", "promoter", aliases=["production"], actor="t").token,
            "admin": tokens.create("m-admin", "admin", actor="t").token,
        }
        past = TokenStore(make_engine(db_url), clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
        made["expired"] = past.create("m-expired", "admin", expires=dt.timedelta(days=1), actor="t").token
        made["revoked"] = tokens.create("m-revoked", "admin", actor="t").token
        tokens.revoke("m-revoked", actor="t")
        good = made["admin"]
        made["wrong_secret"] = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        made["malformed"] = "not-a-token"
        srv = start_server(cwd, env=env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield srv, made
    code = srv.stop()
    dispose_engines()
    drop_pg_database(db_url)
    assert code == 0, srv.log_text()[-3000:]


def test_every_route_has_a_rule_in_the_table(matrix_server):
    srv, tokens = matrix_server
    schema = httpx.get(srv.url + f"{A}/openapi.json", headers=bearer(tokens["admin"])).json()
    served = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    served = {(m, p.replace("{ref}", "{ref:path}")) for m, p in served}
    assert served == set(ROUTES), (f"routes without a rule here: {sorted(served - set(ROUTES))}; "
                                   f"rules for routes the server lacks: {sorted(set(ROUTES) - served)}")
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if path not in ("/healthz", "/readyz"):
                assert op["x-promptreg"]["permission"], (method, path)


def test_role_by_route_matrix(matrix_server):
    srv, tokens = matrix_server
    failures = []
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        for (method, _template), samples in ROUTES.items():
            for path, params, body, headers, expected in samples:
                for caller in CALLERS:
                    h = dict(headers or {})
                    if caller != "none":
                        h.update(bearer(tokens[caller]))
                    r = client.request(method, path, params=params, content=body, headers=h)
                    if r.status_code != expected[caller]:
                        failures.append(f"{method} {path} {params or ''} as {caller}: {r.status_code} "
                                        f"(expected {expected[caller]}) {r.text[:160]}")
                    if r.status_code >= 400:
                        err = r.json()["error"]
                        assert err["code"] and err["message"] and "Traceback" not in r.text
    assert not failures, "\n".join(failures)
    # the samples changed nothing an allowed caller could see
    versions = httpx.get(srv.url + f"{A}/prompts/sentiment/versions", headers=bearer(tokens["viewer"])).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert httpx.get(srv.url + f"{V}/sentiment@staging", headers=bearer(tokens["viewer"])).json()["version"] == 1


@pytest.mark.parametrize("bad", ["..", "a/../b", "a%2F..%2Fb", "x%00y", "sentiment@..", "sentiment:..",
                                 "sentiment%2Fx", "%2E%2E", "sentiment/x", "sentiment%00"])
def test_bad_refs_are_400_at_the_edge(matrix_server, bad):
    """Sent byte for byte (http.client: no client-side removal of dot segments): a reference or name
    with '..', '/' or NUL is answered 400 before anything is looked up."""
    import http.client
    from urllib.parse import urlsplit

    srv, tokens = matrix_server
    where = urlsplit(srv.url)
    for path in (f"{V}/{bad}", f"{V}/{bad}/manifest", f"{A}/prompts/{bad}/versions", f"{A}/prompts/{bad}/history"):
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        conn.request("GET", path, headers=bearer(tokens["viewer"]))
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        if r.status == 404:             # only a path no route matches at all: nothing was looked up
            assert body["error"]["message"].startswith("no such endpoint"), (path, body)
        else:
            assert (r.status, body["error"]["code"]) == (400, "invalid_input"), (path, r.status, body)


def test_prompt_globs_hide_other_prompts(matrix_server):
    srv, tokens = matrix_server
    from promptreg.registry.db import make_engine

    # a viewer limited to team-a.* sees no 'sentiment' anywhere
    db_url = srv.env["PROMPTREG_DB_URL"]
    scoped = TokenStore(make_engine(db_url)).create("m-team-a", "viewer", prompts=["team-a.*"], actor="t").token
    h = bearer(scoped)
    assert httpx.get(srv.url + f"{A}/prompts", headers=h).json() == []
    assert httpx.get(srv.url + f"{A}/schedules", headers=h).json() == []
    assert httpx.get(srv.url + f"{A}/events", headers=h).json() == []       # events are read like their prompts
    assert httpx.get(srv.url + f"{A}/events/1", headers=h).status_code == 404
    r = httpx.get(srv.url + f"{V}/sentiment:1", headers=h)
    assert r.status_code == 403 and "not in the token's prompts" in r.json()["error"]["message"]


def test_wrong_sha256_claim_is_refused_and_stores_nothing(matrix_server, tmp_path):
    srv, tokens = matrix_server
    from promptreg.artifact.transfer import pack

    folder = make_artifact(tmp_path / "a", seed=77)
    body = b"".join(pack(folder))
    h = {**bearer(tokens["contributor"]), **TAR}
    r = httpx.post(srv.url + f"{A}/prompts/sentiment/versions", content=body,
                   headers={**h, "X-Promptreg-Sha256": "0" * 64}, timeout=120)
    assert r.status_code == 422 and r.json()["error"]["code"] == "integrity", r.text
    assert "not the claimed sha256" in r.json()["error"]["message"]
    versions = httpx.get(srv.url + f"{A}/prompts/sentiment/versions", headers=bearer(tokens["viewer"])).json()
    assert [v["version"] for v in versions] == [1, 2]
    # a tar with a link inside: 400, nothing stored
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    r = httpx.post(srv.url + f"{A}/prompts/sentiment/versions", content=buf.getvalue(), headers=h)
    assert r.status_code == 400 and "not a regular file" in r.json()["error"]["message"]


def test_upload_over_the_limit_is_413_and_stores_nothing(tmp_path):
    """A server with a 0.01 MB push limit: a bigger artifact is refused with 413 (by Content-Length,
    and by counting when the length is not announced); no version, no stored content."""
    from promptreg.artifact.transfer import pack
    from promptreg.registry.db import dispose_engines
    from promptreg.services.registry import Registry
    from tests.cli_utils import run_cli

    tokens = run_cli("token", "create", "c", "--role", "contributor", "--json", cwd=tmp_path)
    token = tokens.json()["token"]
    srv = start_server(tmp_path, "--max-upload-mb", "0.01", "--sync-interval", "0")
    try:
        folder = make_artifact(tmp_path / "big", n=200, seed=5)          # ~ 50 KB of tensors
        body = b"".join(pack(folder))
        assert len(body) > 0.01 * 2**20
        h = {**bearer(token), **TAR}
        r = httpx.post(srv.url + f"{A}/prompts/big/versions", content=body, headers=h)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = httpx.post(srv.url + f"{A}/prompts/big/versions", content=iter([body[:4096], body[4096:]]), headers=h)
        assert r.status_code == 413
    finally:
        assert srv.stop() == 0
    reg = Registry(home=str(tmp_path / ".promptreg"))
    assert reg.list_prompts() == []
    stored = list((tmp_path / ".promptreg" / "artifacts").rglob("*")) if (tmp_path / ".promptreg" / "artifacts").exists() else []
    assert [p for p in stored if p.is_file()] == []
    dispose_engines()
