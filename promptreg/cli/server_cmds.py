"""server, token create/list/revoke, login, logout.

``promptreg server`` runs against the stores directly (it is the one process that holds their
credentials); the token commands work directly on the server host (the first admin token) or
remotely with an admin token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from promptreg.cli.output import emit_json, table


def _app_kwargs(config) -> dict:
    kw = {"host": config.host, "port": config.port, "log_level": "warning", "lifespan": "on",
          "server_header": False, "timeout_keep_alive": 5, "timeout_graceful_shutdown": 30,
          "proxy_headers": bool(config.forwarded_allow_ips),
          "forwarded_allow_ips": config.forwarded_allow_ips or None}
    if config.tls:
        kw.update(ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile)
    return kw


@click.command("server")
@click.option("--host", help="Interface to listen on (default 127.0.0.1; another one needs TLS or --insecure).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8080).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default 1).")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--insecure", is_flag=True, default=None,
              help="Allow a non-loopback --host without TLS (only behind a TLS-terminating proxy).")
@click.option("--sync-interval", "sync_interval_s", type=click.FloatRange(0), help="Seconds between MLflow syncs "
              "(default 300; 0: off).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), help="Largest push (default 256).")
@click.option("--forwarded-allow-ips", help="Trust X-Forwarded-For from these proxy addresses (default: none).")
@click.pass_obj
def server_cmd(obj, host, port, workers, ssl_certfile, ssl_keyfile, insecure, sync_interval_s, max_upload_mb,
               forwarded_allow_ips):
    """The registry as a service: REST API under /api/v1/, /healthz, /readyz, /metrics (see docs/server.md)."""
    from promptreg.cli.serve_cmds import _check_port, _quiet_after_shutdown
    from promptreg.errors import InputError
    from promptreg.registry.db import mask_url
    from promptreg.server.config import load_server_config

    if obj.remote:
        raise InputError("promptreg server opens the stores itself: unset --url / PROMPTREG_URL / url")
    config = load_server_config(Path.cwd(), host=host, port=port, workers=workers, ssl_certfile=ssl_certfile,
                                ssl_keyfile=ssl_keyfile, insecure=insecure, sync_interval_s=sync_interval_s,
                                max_upload_mb=max_upload_mb, forwarded_allow_ips=forwarded_allow_ips).check()
    registry = obj.get()
    _check_port(config.host, config.port)
    from promptreg.server.tokens import TokenStore

    tokens = TokenStore(registry.engine, protected=config.protected_aliases)   # the schema is at head now
    if not any(t.role == "admin" for t in tokens.list(include_inactive=False)):
        click.echo("warning: no active admin token: create one on this host with "
                   "`promptreg token create admin --role admin`", err=True)
    scheme = "https" if config.tls else "http"
    click.echo(f"promptreg server on {scheme}://{config.host}:{config.port} ({config.workers} worker"
               f"{'s' if config.workers > 1 else ''}; registry {mask_url(registry.settings.db_url)}; protected "
               f"aliases: {', '.join(config.protected_aliases) or 'none'})", err=True)
    import uvicorn

    kwargs = _app_kwargs(config)
    with _quiet_after_shutdown():
        if config.workers == 1:
            from promptreg.server.app import create_app

            server = uvicorn.Server(uvicorn.Config(create_app(registry, config, tokens=tokens), **kwargs))
            server.run()
            if not server.started:
                raise InputError(f"the server on {config.host}:{config.port} did not start (port in use?)")
            return 0
        import tempfile

        with tempfile.TemporaryDirectory(prefix="promptreg-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            os.environ["PROMPTREG_SERVER_CONFIG"] = config.to_json()
            os.environ["PROMPTREG_SERVER_FLAGS"] = json.dumps(obj.flags)
            uvicorn.run("promptreg.server.app:app_from_env", factory=True, workers=config.workers, **kwargs)
    return 0


def _token_api(obj):
    """Tokens over HTTP in remote mode, else straight from the registry database."""
    if obj.remote:
        from promptreg.client.tokens import RemoteTokens

        return RemoteTokens(obj.api())
    from promptreg.server.config import load_server_config
    from promptreg.server.tokens import TokenStore

    return TokenStore(obj.get().engine, protected=load_server_config(Path.cwd()).protected_aliases)


@click.group("token")
def token_group():
    """API tokens of promptreg server (admin; the first one directly on the server host)."""


@token_group.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "contributor", "promoter", "admin"]))
@click.option("--prompts", "prompts", multiple=True, help="Prompt glob this token applies to (repeatable; "
              "default: every prompt), e.g. 'team-a.*'.")
@click.option("--aliases", "aliases", multiple=True, help="Alias it may move (repeatable; glob). Protected aliases "
              "(production) only by name and only for a promoter.")
@click.option("--expires", default="90d", show_default=True, help="30m, 12h, 90d, 2w or 'never'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the token included).")
@click.pass_obj
def token_create(obj, name, role, prompts, aliases, expires, as_json):
    """Create a token. Its secret is printed once and stored nowhere (only its hash)."""
    from promptreg.server.tokens import parse_expiry

    api = _token_api(obj)
    created = api.create(name, role, prompts=prompts, aliases=aliases, expires=parse_expiry(expires),
                         actor=obj.settings.user)
    if as_json:
        emit_json(created.to_dict())
        return 0
    info = created.info
    click.echo(f"created token {info.token_id} ({info.name}, {info.role}; prompts {', '.join(info.prompts)}; "
               f"aliases {', '.join(info.aliases) or 'unprotected'}; expires {info.expires_at or 'never'})")
    click.echo("the token (shown once, store it now):", err=True)
    click.echo(created.token)
    return 0


@token_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also expired and revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def token_list(obj, show_all, as_json):
    """List tokens (never their secrets)."""
    infos = _token_api(obj).list(include_inactive=show_all)
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return 0
    table(["id", "name", "role", "prompts", "aliases", "state", "expires", "last used", "created by"],
          [[i.token_id, i.name, i.role, ",".join(i.prompts), ",".join(i.aliases), i.state, i.expires_at or "never",
            i.last_used_at or "-", i.created_by] for i in infos])
    return 0


@token_group.command("revoke")
@click.argument("token")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def token_revoke(obj, token, as_json):
    """Revoke TOKEN (its id, or a name exactly one active token carries)."""
    info = _token_api(obj).revoke(token, actor=obj.settings.user)
    if as_json:
        emit_json(info.to_dict())
    else:
        click.echo(f"revoked token {info.token_id} ({info.name})")
    return 0


@click.command("login")
@click.option("--url", "login_url", help="The server (default: --url / PROMPTREG_URL / url in promptreg.toml).")
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print the principal and the token file as JSON.")
@click.pass_obj
def login_cmd(obj, login_url, token_stdin, as_json):
    """Check a token against the server and keep it in a 0600 file in your config folder."""
    import sys

    from promptreg.client.credentials import save_token
    from promptreg.client.http import ApiClient
    from promptreg.client.tokens import RemoteTokens
    from promptreg.errors import InputError

    url = login_url or obj.settings.url
    if not url:
        raise InputError("login needs a server: --url URL, PROMPTREG_URL or url in promptreg.toml")
    token = sys.stdin.readline().strip() if token_stdin else click.prompt("token", hide_input=True).strip()
    if not token:
        raise InputError("no token given")
    api = ApiClient(url, token)
    try:
        me = RemoteTokens(api).whoami()
    finally:
        api.close()
    path = save_token(url, token)
    if as_json:
        emit_json({"url": api.url, "name": me["name"], "role": me["role"], "token_file": str(path)})
    else:
        click.echo(f"logged in to {api.url} as {me['name']} ({me['role']}); token kept in {path}")
    return 0


@click.command("logout")
@click.option("--url", "logout_url", help="The server (default: --url / PROMPTREG_URL / url in promptreg.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print whether a token was forgotten as JSON.")
@click.pass_obj
def logout_cmd(obj, logout_url, as_json):
    """Forget the token kept for a server."""
    from promptreg.client.credentials import remove_token
    from promptreg.errors import InputError

    url = logout_url or obj.settings.url
    if not url:
        raise InputError("logout needs a server: --url URL, PROMPTREG_URL or url in promptreg.toml")
    removed = remove_token(url)
    if as_json:
        emit_json({"url": url, "removed": removed})
    else:
        click.echo(f"logged out of {url}" if removed else f"no token kept for {url}")
    return 0
