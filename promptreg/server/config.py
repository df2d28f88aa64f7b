"""Settings of ``promptreg server`` (one frozen object): ``[server]`` in promptreg.toml, then flags.

``promptreg.toml``::

    [server]
    host = "127.0.0.1"           # a non-loopback host needs TLS (ssl_certfile/ssl_keyfile) or insecure = true
    port = 8080
    workers = 1
    protected_aliases = ["production"]
    max_upload_mb = 256          # push bodies (413 above)
    max_body_kb = 1024           # every other body
    request_timeout_s = 30       # reads and alias moves (504 after)
    long_request_timeout_s = 3600  # eval, gate, drift, gc, sync, run-due
    long_concurrency = 4         # push/eval/gate/drift/gc/sync bodies at once per worker (their own threads)
    auth_failures = 20           # failed authentications per client and window before 429
    auth_window_s = 60
    auth_cache_s = 2             # a verified token is re-checked in the database after this (revocation delay)
    sync_interval_s = 300        # periodic MLflow sync (0: off)
    sync_grace_s = 60            # ... leaves alone what changed less than this ago (its writer mirrors it)
    mirror = "outbox"            # MLflow written by the events worker after the answer; "inline": before it
    events_worker = true         # run the outbox delivery worker (MLflow mirror, webhooks) in each process
    cors_origins = []            # CORS stays off unless origins are listed
    forwarded_allow_ips = ""     # trust X-Forwarded-For only from these proxies

    [server.oidc]                # optional: JWT bearer tokens from an identity provider
    issuer = "https://login.example.com/"
    audience = "promptreg"
    jwks_url = ""                # default: the issuer's discovery document
    name_claim = "sub"
    roles_claim = "groups"
    [server.oidc.roles]
    ml-admins = { role = "admin" }
    release = { role = "promoter", aliases = ["production"] }
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from promptreg.errors import InputError
from promptreg.server.policy import DEFAULT_PROTECTED, Grant, make_grant


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None
    name_claim: str = "sub"
    roles_claim: str = "groups"
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)   # claim value -> {role, prompts, aliases}
    algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
    leeway_s: float = 30.0

    def grants(self, protected) -> dict[str, Grant]:
        out = {}
        for value, spec in self.roles.items():
            if not isinstance(spec, dict) or "role" not in spec:
                raise InputError(f"[server.oidc.roles] {value!r} must be a table with a 'role'")
            out[value] = make_grant(spec["role"], spec.get("prompts", ()), spec.get("aliases", ()), protected)
        return out


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    insecure: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    protected_aliases: tuple[str, ...] = DEFAULT_PROTECTED
    max_upload_mb: float = 256.0
    max_body_kb: float = 1024.0
    request_timeout_s: float = 30.0
    long_request_timeout_s: float = 3600.0
    long_concurrency: int = 4
    auth_failures: int = 20
    auth_window_s: float = 60.0
    auth_cache_s: float = 2.0
    sync_interval_s: float = 300.0
    sync_grace_s: float = 60.0
    mirror: str = "outbox"
    events_worker: bool = True
    cors_origins: tuple[str, ...] = ()
    forwarded_allow_ips: str = ""
    oidc: OidcConfig | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_kb * 2**10)

    @property
    def tls(self) -> bool:
        return bool(self.ssl_certfile)

    def check(self) -> ServerConfig:
        """Refuse what cannot run safely; returns self."""
        if self.workers < 1 or not 0 <= self.port <= 65535:
            raise InputError("workers must be at least 1 and port in 0..65535")
        if self.long_concurrency < 1:
            raise InputError("long_concurrency must be at least 1")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise InputError("TLS needs both --ssl-certfile and --ssl-keyfile")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path and not Path(path).is_file():
                raise InputError(f"TLS file not found: {path}")
        if not is_loopback(self.host) and not self.tls and not self.insecure:
            raise InputError(f"refusing to listen on {self.host} without TLS: tokens would cross the network in "
                             "clear text; pass --ssl-certfile/--ssl-keyfile (or --insecure behind a TLS proxy)")
        if self.max_upload_mb <= 0 or self.max_body_kb <= 0 or self.request_timeout_s <= 0 \
                or self.long_request_timeout_s <= 0 or self.auth_failures < 1 or self.auth_window_s <= 0 \
                or self.auth_cache_s < 0 \
                or self.sync_interval_s < 0 or self.sync_grace_s < 0:
            raise InputError("server limits must be positive (sync_interval_s may be 0: off)")
        if self.mirror not in ("outbox", "inline"):
            raise InputError(f"[server] mirror must be 'outbox' or 'inline', not {self.mirror!r}")
        if self.oidc is not None:
            self.oidc.grants(self.protected_aliases)
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data = json.loads(text)
        return _build(data)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build(values: dict[str, Any]) -> ServerConfig:
    known = {f.name for f in fields(ServerConfig)}
    unknown = set(values) - known
    if unknown:
        raise InputError(f"unknown [server] setting(s): {', '.join(sorted(unknown))}")
    values = dict(values)
    oidc = values.pop("oidc", None)
    if oidc is not None and not isinstance(oidc, OidcConfig):
        okeys = {f.name for f in fields(OidcConfig)}
        if not isinstance(oidc, dict) or set(oidc) - okeys or not {"issuer", "audience"} <= set(oidc):
            raise InputError("[server.oidc] needs 'issuer' and 'audience' and knows only: " + ", ".join(sorted(okeys)))
        oidc = OidcConfig(**{k: tuple(v) if k == "algorithms" else v for k, v in oidc.items()})
    for key in ("protected_aliases", "cors_origins"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return ServerConfig(**values, oidc=oidc)
    except TypeError as exc:
        raise InputError(f"invalid [server] settings: {exc}") from None


def load_server_config(cwd: Path, **flags: Any) -> ServerConfig:
    """``[server]`` from ``cwd/promptreg.toml``, overridden by the flags that are not None."""
    path = Path(cwd) / "promptreg.toml"
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid TOML: {exc}") from None
        section = data.get("server", (data.get("promptreg") or {}).get("server", {}))
        if not isinstance(section, dict):
            raise InputError(f"{path}: [server] must be a table")
        values.update(section)
    config = _build(values)
    return replace(config, **{k: v for k, v in flags.items() if v is not None})


__all__ = ["OidcConfig", "ServerConfig", "is_loopback", "load_server_config"]
