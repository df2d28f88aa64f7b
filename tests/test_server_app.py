"""promptreg server as a real uvicorn process on loopback: authentication (tokens, OIDC with a locally
generated key pair), 401/403/404/405/413/429 as JSON, TLS with a self-signed certificate, host
refusal, token commands over HTTP, login stored 0600, metrics across two workers."""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.cli_utils import assert_one_line_error
from tests.fixtures.server import PROMPTREG, bearer, clean_env, start_server
from tests.fixtures.services import free_port

ISSUER = "https://idp.test/"


def _cli(cwd, *args, env=None, stdin=None, timeout=120):
    from tests.cli_utils import Result

    p = subprocess.run([PROMPTREG, *args], cwd=cwd, env=clean_env(env), input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def _admin_token(cwd) -> str:
    res = _cli(cwd, "token", "create", "root-admin", "--role", "admin", "--json")
    assert res.code == 0, res.err
    return res.json()["token"]


class Jwks:
    """An RSA key pair, a JWKS endpoint on loopback, and a JWT minter."""

    def __init__(self):
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if self.path == "/jwks.json" else b"{}")

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/jwks.json"

    def mint(self, *, key=None, alg="RS256", kid="k1", **claims):
        import jwt

        now = dt.datetime.now(dt.UTC)
        payload = {"iss": ISSUER, "aud": "promptreg", "email": "alice@example.com", "groups": ["ml-admins"],
                   "iat": now, "exp": now + dt.timedelta(minutes=5), **claims}
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key or self.key, algorithm=alg,
                          headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks():
    j = Jwks()
    yield j
    j.http.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, jwks):
    cwd = tmp_path_factory.mktemp("server")
    (cwd / "promptreg.toml").write_text(f"""
[server]
auth_failures = 20
auth_window_s = 600
sync_interval_s = 0
max_body_kb = 64

[server.oidc]
issuer = "{ISSUER}"
audience = "promptreg"
jwks_url = "{jwks.url}"
name_claim = "email"
roles_claim = "groups"
[server.oidc.roles]
ml-admins = {{ role = "admin" }}
release = {{ role = "promoter", aliases = ["production"] }}
""")
    admin = _admin_token(cwd)
    srv = start_server(cwd)
    srv.admin = admin
    yield srv
    assert srv.stop() == 0, srv.log_text()[-2000:]
    assert "Traceback" not in srv.log_text()


def test_public_and_guarded_routes_answer_json(server):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    for method, path in [("GET", "/api/v1/whoami"), ("GET", "/metrics"), ("GET", "/api/v1/openapi.json")]:
        r = httpx.request(method, server.url + path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
    h = bearer(server.admin)
    assert httpx.get(server.url + "/api/v1/whoami", headers=h).json()["name"] == "root-admin"
    schema = httpx.get(server.url + "/api/v1/openapi.json", headers=h).json()
    assert schema["paths"]["/api/v1/tokens"]["post"]["x-promptreg"]["permission"] == "admin"
    r = httpx.get(server.url + "/api/v1/nowhere", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.put(server.url + "/api/v1/whoami", headers=h)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.post(server.url + "/api/v1/tokens", headers={**h, "Content-Type": "application/json"},
                   content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"
    metrics = httpx.get(server.url + "/metrics", headers=h)
    assert metrics.status_code == 200 and "promptreg_server_requests_total" in metrics.text
    assert 'route="/api/v1/whoami"' in metrics.text
    assert httpx.get(server.url + "/docs").status_code == 404          # no interactive docs (CDN scripts)
    r = httpx.options(server.url + "/api/v1/whoami", headers={"Origin": "https://evil.test",
                                                               "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers             # CORS off


def test_body_over_the_limit_is_413_and_creates_nothing(server):
    h = bearer(server.admin)
    before = httpx.get(server.url + "/api/v1/tokens", headers=h).json()
    big = json.dumps({"name": "big", "role": "viewer", "prompts": ["x" * 100] * 1000})
    r = httpx.post(server.url + "/api/v1/tokens", headers={**h, "Content-Type": "application/json"}, content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def chunks():                                       # no Content-Length: counted as it arrives
        yield big.encode()

    r = httpx.post(server.url + "/api/v1/tokens", headers={**h, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413
    assert httpx.get(server.url + "/api/v1/tokens", headers=h).json() == before


def test_bad_tokens_from_one_client_get_429_while_another_client_is_unaffected(server):
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), base_url=server.url)
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"), base_url=server.url)
    codes = [attacker.get("/api/v1/whoami", headers=bearer(f"prt_{i:012d}_{'x' * 40}")).status_code
             for i in range(1000)]
    assert codes[:20] == [401] * 20 and codes[20:] == [429] * 980
    r = attacker.get("/api/v1/whoami", headers=bearer(server.admin))
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0     # locked out, even with a good token
    assert other.get("/api/v1/whoami", headers=bearer(server.admin)).status_code == 200
    assert other.get("/api/v1/whoami", headers=bearer("prt_" + "0" * 12 + "_" + "y" * 40)).status_code == 401
    assert other.get("/api/v1/whoami").status_code == 401                 # a missing token is not counted
    metrics = other.get("/metrics", headers=bearer(server.admin)).text
    assert "promptreg_server_rate_limited_total 981.0" in metrics


def test_token_commands_over_http_and_permission_denied(server, tmp_path):
    remote = {"PROMPTREG_URL": server.url, "PROMPTREG_TOKEN": server.admin}
    res = _cli(tmp_path, "token", "create", "viewer-bot", "--role", "viewer", "--json", env=remote)
    assert res.code == 0, res.err
    viewer = res.json()["token"]
    assert res.json()["role"] == "viewer"
    res = _cli(tmp_path, "token", "list", env=remote)
    assert res.code == 0 and "viewer-bot" in res.out and viewer not in res.out
    res = _cli(tmp_path, "token", "create", "x", "--role", "admin", env={**remote, "PROMPTREG_TOKEN": viewer})
    assert_one_line_error(res, 2, "permission denied: token viewer-bot may not create tokens (role viewer; needs admin)")
    res = _cli(tmp_path, "token", "list", env={"PROMPTREG_URL": server.url})
    assert_one_line_error(res, 2, "not logged in")
    res = _cli(tmp_path, "token", "revoke", "viewer-bot", env=remote)
    assert res.code == 0 and "revoked token" in res.out
    res = _cli(tmp_path, "token", "list", env={**remote, "PROMPTREG_TOKEN": viewer})
    assert_one_line_error(res, 2, "not authenticated: token ")
    assert "is revoked" in res.err and viewer not in res.err
    history = httpx.get(server.url + "/api/v1/tokens", headers=bearer(server.admin)).json()
    assert [t["state"] for t in history if t["name"] == "viewer-bot"] == ["revoked"]


def test_login_keeps_the_token_in_a_0600_file_and_never_prints_it(server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PROMPTREG_URL": server.url}
    res = _cli(tmp_path, "login", "--token-stdin", env=env, stdin=server.admin + "\n")
    assert res.code == 0, res.err
    assert "logged in to" in res.out and "root-admin (admin)" in res.out
    assert server.admin not in res.out + res.err
    path = tmp_path / "cfg" / "promptreg" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    res = _cli(tmp_path, "token", "list", env=env)                  # uses the stored token
    assert res.code == 0 and "root-admin" in res.out
    path.chmod(0o644)
    assert_one_line_error(_cli(tmp_path, "token", "list", env=env), 2, "readable by other users")
    path.chmod(0o600)
    res = _cli(tmp_path, "login", "--token-stdin", env=env, stdin="prt_" + "a" * 12 + "_" + "b" * 40 + "\n")
    assert_one_line_error(res, 2, "not authenticated: invalid token")
    assert _cli(tmp_path, "logout", env=env).code == 0
    assert_one_line_error(_cli(tmp_path, "token", "list", env=env), 2, "not logged in")


def test_oidc_jwt_validated_against_a_local_jwks(server, jwks):
    def whoami(token):
        return httpx.get(server.url + "/api/v1/whoami", headers=bearer(token))

    r = whoami(jwks.mint())
    assert r.status_code == 200, r.text
    assert r.json() | {} == {"name": "oidc:alice@example.com", "token_id": None, "kind": "oidc", "role": "admin",
                             "prompts": ["*"], "aliases": []}
    r = whoami(jwks.mint(groups=["release", "unrelated"], email="bob@example.com"))
    assert (r.json()["role"], r.json()["aliases"]) == ("promoter", ["production"])
    r = whoami(jwks.mint(groups=["unrelated"]))
    assert r.status_code == 403 and "has no promptreg role" in r.json()["error"]["message"]
    now = dt.datetime.now(dt.UTC)
    bad = {
        "expired": jwks.mint(exp=now - dt.timedelta(minutes=5), iat=now - dt.timedelta(minutes=10)),
        "audience": jwks.mint(aud="someone-else"),
        "issuer": jwks.mint(iss="https://evil.test/"),
        "other key": jwks.mint(key=jwks.other),
        "unknown kid": jwks.mint(kid="k9"),
        "no exp": jwks.mint(exp=None),
    }
    for what, token in bad.items():
        r = whoami(token)
        assert r.status_code == 401, (what, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
    from cryptography.hazmat.primitives import serialization

    pem = jwks.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode()) + "." + b64(json.dumps(
        {"iss": ISSUER, "aud": "promptreg", "email": "m", "groups": ["ml-admins"],
         "exp": int((now + dt.timedelta(minutes=5)).timestamp())}).encode())
    forged = signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert whoami(forged).status_code == 401                       # alg confusion: HMAC keyed with the public key


def _self_signed(dirpath):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "promptreg test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = dirpath / "cert.pem", dirpath / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


def test_tls_with_a_self_signed_certificate_and_host_refusal(tmp_path):
    certfile, keyfile = _self_signed(tmp_path)
    res = _cli(tmp_path, "server", "--host", "0.0.0.0", "--port", str(free_port()))
    assert_one_line_error(res, 2, "refusing to listen on 0.0.0.0 without TLS")
    res = _cli(tmp_path, "server", "--ssl-certfile", str(certfile), "--port", str(free_port()))
    assert_one_line_error(res, 2, "TLS needs both --ssl-certfile and --ssl-keyfile")
    import ssl

    admin = _admin_token(tmp_path)
    trust = ssl.create_default_context(cafile=str(certfile))
    srv = start_server(tmp_path, "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile),
                       "--sync-interval", "0", scheme="https", verify=trust)
    try:
        assert httpx.get(srv.url + "/api/v1/whoami", headers=bearer(admin), verify=trust).status_code == 200
        with pytest.raises(httpx.ConnectError):                      # an unknown CA is refused by default
            httpx.get(srv.url + "/healthz")
        env = {"PROMPTREG_URL": srv.url, "PROMPTREG_TOKEN": admin}
        res = _cli(tmp_path, "token", "list", env=env)
        assert_one_line_error(res, 2, f"promptreg server {srv.url} unreachable")
        assert "CERTIFICATE_VERIFY_FAILED" in res.err or "certificate" in res.err.lower()
        res = _cli(tmp_path, "token", "list", env={**env, "PROMPTREG_CA_BUNDLE": str(certfile)})
        assert res.code == 0 and "root-admin" in res.out
        res = _cli(tmp_path, "token", "list", env={**env, "PROMPTREG_URL": srv.url.replace("https", "http")})
        assert_one_line_error(res, 2, "unreachable")                 # plain http to a TLS port
    finally:
        assert srv.stop() == 0


def test_two_workers_share_one_metrics_view(tmp_path):
    admin = _admin_token(tmp_path)
    srv = start_server(tmp_path, "--workers", "2", "--sync-interval", "0")
    try:
        for _ in range(40):
            with httpx.Client() as c:          # new connections, spread over the workers
                assert c.get(srv.url + "/api/v1/whoami", headers=bearer(admin)).status_code == 200
        text = httpx.get(srv.url + "/metrics", headers=bearer(admin)).text
        line = next(ln for ln in text.splitlines() if ln.startswith("promptreg_server_requests_total{")
                    and 'route="/api/v1/whoami"' in ln and 'status="200"' in ln)
        assert float(line.rsplit(" ", 1)[1]) == 40.0
    finally:
        assert srv.stop() == 0


def test_openapi_schema_checked_into_docs_is_current():
    import sys

    from tests.fixtures.server import clean_env

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "openapi.py"), "--check"], cwd=root,
                       env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
