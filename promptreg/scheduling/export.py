"""Ready-made snippets that call ``promptreg schedule run-due`` periodically: a crontab line, a
Kubernetes CronJob, a GitHub Actions workflow.

Invariants: secrets (the database URL, S3 keys; in remote mode the API token) are referenced, never
written out; a local path other machines cannot see is flagged CHANGE-ME. In remote mode (``url``
set) the job needs only the server's URL and a token: the server runs the checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from promptreg.errors import InputError
from promptreg.scheduling.cron import parse_cron
from promptreg.scheduling.runner import DEFAULT_GRACE_S

EXPORT_FORMATS = ("crontab", "k8s", "github")


@dataclass
class _Env:
    name: str
    value: str | None  # None: a secret
    secret_key: str = ""
    note: str = ""


def _is_remote(uri: str | None) -> bool:
    return bool(uri) and "://" in uri and not uri.startswith(("sqlite", "file:"))


def _env_plan(settings) -> list[_Env]:
    if getattr(settings, "url", None):      # remote mode: the job calls the server, which runs the checks
        return [_Env("PROMPTREG_URL", settings.url),
                _Env("PROMPTREG_TOKEN", None, "token", "an admin token: run-due is admin only")]
    env = [_Env("PROMPTREG_DB_URL", None, "db-url", "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")]
    for name, value in (("PROMPTREG_ARTIFACT_URI", settings.artifact_uri),
                        ("MLFLOW_TRACKING_URI", settings.tracking_uri),
                        ("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url),
                        ("PROMPTREG_MLFLOW_ARTIFACT_URI", settings.mlflow_artifact_uri)):
        if value is None:
            continue
        if _is_remote(value):
            env.append(_Env(name, value))
        elif name in ("PROMPTREG_ARTIFACT_URI", "MLFLOW_TRACKING_URI"):
            env.append(_Env(name, f"CHANGE-ME (here: {value}, a local path other machines cannot see)"))
    if any(str(v or "").startswith("s3://") for v in (settings.artifact_uri, settings.mlflow_artifact_uri)):
        env.append(_Env("AWS_ACCESS_KEY_ID", None, "aws-access-key-id"))
        env.append(_Env("AWS_SECRET_ACCESS_KEY", None, "aws-secret-access-key"))
    if settings.base_model:
        env.append(_Env("PROMPTREG_BASE_MODEL", settings.base_model, note="the deployed base model folder"))
    env.append(_Env("PROMPTREG_USER", "promptreg-scheduler"))
    return env


def _yaml_str(value: str) -> str:
    return json.dumps(value)


def export_snippet(fmt: str, registry_settings, every: str = "*/5 * * * *", workdir: str = "/srv/app",
                   image: str = "ghcr.io/OWNER/promptreg:latest", name: str = "promptreg-run-due",
                   log_file: str = "/var/log/promptreg.log") -> str:
    """A ready-made snippet that calls ``promptreg schedule run-due`` every ``every`` (cron, UTC).

    ``fmt``: ``crontab`` (a crontab line), ``k8s`` (a Kubernetes CronJob) or ``github`` (a GitHub
    Actions workflow). Secrets (the database URL, S3 keys) are referenced, never written out."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}: expected {', '.join(EXPORT_FORMATS)}")
    expr = parse_cron(every)
    env = _env_plan(registry_settings)
    if fmt == "crontab":
        lines = [
            f"# promptreg: run due drift checks ({expr.text}, UTC). Safe on several machines at once:",
            "# a database lease runs each due check exactly once. Settings come from",
            f"# {workdir}/promptreg.toml or the environment; cron's PATH is minimal, so give",
            "# the full path of promptreg (e.g. /srv/app/.venv/bin/promptreg) if it is not on it.",
            "# Environment the registry needs (export it, or put it in promptreg.toml):",
        ]
        for e in env:
            value = e.value if e.value is not None else f"<secret{': ' + e.note if e.note else ''}>"
            lines.append(f"#   {e.name}={value}")
        lines.append(f"{expr.text} cd {workdir} && promptreg schedule run-due >> {log_file} 2>&1")
        return "\n".join(lines) + "\n"
    if fmt == "k8s":
        env_lines = []
        for e in env:
            env_lines.append(f"                - name: {e.name}")
            if e.value is None:
                env_lines += ["                  valueFrom:", "                    secretKeyRef:",
                              "                      name: promptreg", f"                      key: {e.secret_key}"]
            else:
                env_lines.append(f"                  value: {_yaml_str(e.value)}")
        return "\n".join([
            f"# promptreg: run due drift checks ({expr.text}, UTC).",
            "# concurrencyPolicy Forbid is NOT needed: each due check is claimed through a database lease,",
            "# so overlapping jobs (or other machines) never run a check twice. The secret 'promptreg'",
            f"# holds {', '.join(e.secret_key for e in env if e.value is None)}.",
            "# kubectl create secret generic promptreg "
            + " ".join(f"--from-literal={e.secret_key}='...'" for e in env if e.value is None),
            "apiVersion: batch/v1",
            "kind: CronJob",
            "metadata:",
            f"  name: {name}",
            "spec:",
            f"  schedule: {_yaml_str(expr.text)}",
            '  timeZone: "Etc/UTC"',
            "  concurrencyPolicy: Allow",
            "  startingDeadlineSeconds: 600",
            "  successfulJobsHistoryLimit: 3",
            "  failedJobsHistoryLimit: 3",
            "  jobTemplate:",
            "    spec:",
            "      backoffLimit: 1",
            "      template:",
            "        spec:",
            "          restartPolicy: Never",
            f"          # SIGTERM lets the running check finish for up to {DEFAULT_GRACE_S:g} s, then it is",
            "          # interrupted cleanly and retried by the next run",
            "          terminationGracePeriodSeconds: 30",
            "          containers:",
            "            - name: run-due",
            f"              image: {image}",
            '              command: ["promptreg", "schedule", "run-due"]',
            "              env:",
            *env_lines,
        ]) + "\n"
    # github
    env_lines = []
    for e in env:
        value = f"${{{{ secrets.{e.name} }}}}" if e.value is None else _yaml_str(e.value)
        env_lines.append(f"      {e.name}: {value}")
    return "\n".join([
        "# .github/workflows/promptreg-drift.yml",
        f"# promptreg: run due drift checks ({expr.text}, UTC). GitHub may start scheduled runs late or",
        "# skip them when busy: a missed slot runs once at the next run. No `concurrency:` group is needed:",
        "# a database lease runs each due check exactly once. Secrets: Settings > Secrets and variables.",
        "name: promptreg scheduled drift checks",
        "on:",
        "  schedule:",
        f"    - cron: {_yaml_str(expr.text)}",
        "  workflow_dispatch: {}",
        "jobs:",
        "  run-due:",
        "    runs-on: ubuntu-latest",
        "    timeout-minutes: 60",
        "    env:",
        *env_lines,
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - uses: actions/setup-python@v5",
        "        with:",
        '          python-version: "3.12"',
        "      - run: pip install .",
        "      - run: promptreg schedule run-due",
    ]) + "\n"
