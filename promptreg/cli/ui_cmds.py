"""``promptreg ui``: open the MLflow UI on the registry's mirror.

* Tracking on a server (``http(s)://…``, the team's MLflow): nothing is started; the URL is printed
  (credentials removed) and the command exits 0.
* Tracking on the embedded SQLite database (or a ``file:`` store): ``mlflow ui`` is started as a child
  process in its own process group, on ``--host``/``--port`` (loopback by default), with the project's
  ``mlartifacts`` folder as artifact root. ``MLflow UI: <url>`` is printed on stdout once ``/health``
  answers; the server's own log goes to ``<home>/mlflow-ui.log``. SIGINT (Ctrl-C) and SIGTERM are
  forwarded to the child's process group; the command exits 0 after a requested stop, or with an error
  line if the server dies or never answers.

Start-up cost: only the standard library and click are imported here (the CLI imports this module).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from promptreg.errors import InputError, StoreUnavailableError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOG_FILE = "mlflow-ui.log"


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri


def _browse_host(host: str) -> str:
    """The host to put in the printed URL (a wildcard bind is browsed on loopback)."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _artifact_root(settings) -> str | None:
    root = settings.mlflow_artifact_uri
    if not root:
        return None
    if len(urlsplit(root).scheme) <= 1:       # a plain path (or a Windows drive letter)
        path = Path(root).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()
    return root


def ui_command(settings, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line for the embedded tracking store of ``settings``."""
    tracking = settings.tracking_uri
    if not (tracking.startswith("sqlite:") or tracking.startswith("file:")):
        raise InputError(f"cannot start an MLflow UI for tracking URI {_redact(tracking)!r}: "
                         "expected sqlite:///…, file:… or an http(s) server URL")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking,
           "--host", host, "--port", str(port), "--workers", "1"]
    root = _artifact_root(settings)
    if root:
        # new experiments (none: promptreg creates its own, with explicit locations) and proxied uploads
        # land in the project's folder, never in the current directory
        cmd += ["--default-artifact-root", root, "--artifacts-destination", root]
    return cmd


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server does: TIME_WAIT is free
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never via a proxy


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _last_line(log: Path) -> str:
    try:
        lines = [x.strip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if "Error" in x or "error" in x]
    return " ".join((errors or lines or ["no output"])[-1].split())[:300]


def _stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            # the group may outlive its leader (uvicorn workers): make sure it is gone too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def run_ui(settings, *, host: str = "127.0.0.1", port: int = 5000, open_browser: bool = True,
           start_timeout: float = START_TIMEOUT_S) -> int:
    """Print the UI's URL (tracking server) or start ``mlflow ui`` and serve until stopped."""
    tracking = settings.tracking_uri
    if tracking.startswith(("http://", "https://")):
        url = _redact(tracking).rstrip("/")
        click.echo(f"MLflow UI: {url}")
        return 0
    cmd = ui_command(settings, host, port)
    if not _port_free(host, port):
        raise InputError(f"port {port} on {host} is already in use: pass --port")
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    log = home / LOG_FILE
    url = f"http://{_browse_host(host)}:{port}"

    stop = {"signal": None}

    def forward(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        with open(log, "ab") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    # no MLflow job runner (huey consumers for GenAI scorers: unused here)
                                    env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ,
                                         "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            if stop["signal"] is not None:
                return 0
            if proc.poll() is not None:
                raise StoreUnavailableError(f"the MLflow UI exited during start-up (code {proc.returncode}): "
                                            f"{_last_line(log)} (log: {log})")
            if time.monotonic() > deadline:
                raise StoreUnavailableError(f"the MLflow UI did not answer on {url} within {start_timeout:.0f} s "
                                            f"(log: {log})")
            time.sleep(0.3)
        click.echo(f"MLflow UI: {url}")
        click.echo(f"serving {_redact(tracking)} (log: {log}); Ctrl-C to stop", err=True)
        sys.stdout.flush()
        if open_browser:
            try:
                import webbrowser

                webbrowser.open(url)
            except Exception:  # noqa: BLE001 - no browser here: the URL is printed
                pass
        while stop["signal"] is None:
            if proc.poll() is not None:
                raise StoreUnavailableError(f"the MLflow UI stopped (code {proc.returncode}): {_last_line(log)} "
                                            f"(log: {log})")
            time.sleep(0.2)
        return 0
    finally:
        if proc is not None:
            _stop_group(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)


@click.command("ui")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (keep loopback unless others must reach it).")
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@click.pass_obj
def ui_cmd(obj, port, host, no_browser):
    """Browse the MLflow mirror: start the MLflow UI on the embedded store (or print the server's URL)."""
    return run_ui(obj.get().settings, host=host, port=port, open_browser=not no_browser)
