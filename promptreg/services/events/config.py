"""Settings of event delivery, resolved like promptreg.settings: environment, then the ``[events]``
table of ``promptreg.toml`` in the working directory (or ``[promptreg.events]``), then the default.

=========================  ===========================================  =========
promptreg.toml key         environment variable                         default
=========================  ===========================================  =========
webhook_allow_private      PROMPTREG_WEBHOOK_ALLOW_PRIVATE (1/true)     false
max_attempts               PROMPTREG_EVENTS_MAX_ATTEMPTS                12
backoff_base_s             PROMPTREG_EVENTS_BACKOFF_BASE_S              5
backoff_max_s              PROMPTREG_EVENTS_BACKOFF_MAX_S               3600
mlflow_max_attempts        PROMPTREG_EVENTS_MLFLOW_MAX_ATTEMPTS         0 (never dead)
mlflow_backoff_max_s       PROMPTREG_EVENTS_MLFLOW_BACKOFF_MAX_S        30
mlflow_delay_s             PROMPTREG_EVENTS_MLFLOW_DELAY_S              10
timeout_s                  PROMPTREG_WEBHOOK_TIMEOUT_S                  10
=========================  ===========================================  =========

The key that encrypts webhook secrets at rest is read from the environment only:
``PROMPTREG_WEBHOOK_KEY`` (a Fernet key, ``promptreg webhook keygen``; several comma-separated keys
rotate: the first encrypts, all decrypt).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from promptreg.errors import InputError
from promptreg.services.events.policy import RetryPolicy
from promptreg.settings import CONFIG_FILE, read_config_file

KEY_ENV = "PROMPTREG_WEBHOOK_KEY"
_ENV = {
    "webhook_allow_private": "PROMPTREG_WEBHOOK_ALLOW_PRIVATE",
    "max_attempts": "PROMPTREG_EVENTS_MAX_ATTEMPTS",
    "backoff_base_s": "PROMPTREG_EVENTS_BACKOFF_BASE_S",
    "backoff_max_s": "PROMPTREG_EVENTS_BACKOFF_MAX_S",
    "mlflow_max_attempts": "PROMPTREG_EVENTS_MLFLOW_MAX_ATTEMPTS",
    "mlflow_backoff_max_s": "PROMPTREG_EVENTS_MLFLOW_BACKOFF_MAX_S",
    "mlflow_delay_s": "PROMPTREG_EVENTS_MLFLOW_DELAY_S",
    "timeout_s": "PROMPTREG_WEBHOOK_TIMEOUT_S",
}


@dataclass(frozen=True)
class EventSettings:
    webhook_allow_private: bool = False
    max_attempts: int = 12
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    mlflow_max_attempts: int = 0
    mlflow_backoff_max_s: float = 30.0
    mlflow_delay_s: float = 10.0
    timeout_s: float = 10.0

    @property
    def webhook_retry(self) -> RetryPolicy:
        return RetryPolicy(self.backoff_base_s, self.backoff_max_s, self.max_attempts)

    @property
    def mlflow_retry(self) -> RetryPolicy:
        return RetryPolicy(min(self.backoff_base_s, self.mlflow_backoff_max_s), self.mlflow_backoff_max_s,
                           self.mlflow_max_attempts)

    @classmethod
    def load(cls, cwd: Path | None = None, env: dict[str, str] | None = None,
             defaults: dict | None = None) -> EventSettings:
        """Environment, then promptreg.toml's [events], then ``defaults`` (a caller's own defaults,
        e.g. the server's), then the class defaults."""
        env = os.environ if env is None else env
        table = _read_table(Path(cwd or os.getcwd()) / CONFIG_FILE)
        values = dict(defaults or {})
        for f in fields(cls):
            raw = env.get(_ENV[f.name])
            where = f"environment variable {_ENV[f.name]}"
            if raw is None or raw == "":
                raw, where = table.get(f.name), f"{CONFIG_FILE} [events] {f.name}"
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, f.type, where)
        return cls(**values)


def _convert(name: str, raw, kind: str, where: str):
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{where}: expected true or false, got {raw!r}")
    try:
        value = int(raw) if kind == "int" else float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, got {raw!r}") from None
    if isinstance(raw, bool) or value < 0 or (name in ("timeout_s", "backoff_base_s", "backoff_max_s",
                                                       "mlflow_backoff_max_s") and value <= 0):
        raise InputError(f"{where}: {raw!r} is out of range")
    return value


def _read_table(path: Path) -> dict:
    data = read_config_file(path)
    table = data.get("events", (data.get("promptreg") or {}).get("events", {}))
    if not isinstance(table, dict):
        raise InputError(f"{path}: [events] must be a table")
    unknown = sorted(set(table) - set(_ENV))
    if unknown:
        raise InputError(f"{path}: unknown [events] setting(s): {', '.join(unknown)}")
    return table


__all__ = ["KEY_ENV", "EventSettings"]
