"""One settings object, resolved in order: explicit flags, environment, ``promptreg.toml`` in the
working directory, then the embedded default (everything under ``./.promptreg/``).

Environment variables: PROMPTREG_HOME, PROMPTREG_DB_URL, MLFLOW_TRACKING_URI, PROMPTREG_ARTIFACT_URI,
MLFLOW_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL), PROMPTREG_USER, PROMPTREG_BASE_MODEL; AWS_* credentials are read by boto3.

``promptreg.toml`` keys (top level or under a ``[promptreg]`` table): home, db_url, tracking_uri,
artifact_uri, s3_endpoint_url, mlflow_artifact_uri, user, base_model (the base-model folder, or
``smollm2``, that eval/gate/promote load when no ``--model`` is given).
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from promptreg.errors import InputError

CONFIG_FILE = "promptreg.toml"
_KEYS = ("home", "db_url", "tracking_uri", "artifact_uri", "s3_endpoint_url", "mlflow_artifact_uri", "user",
         "base_model")
_ENV = {
    "home": ("PROMPTREG_HOME",),
    "db_url": ("PROMPTREG_DB_URL",),
    "tracking_uri": ("MLFLOW_TRACKING_URI",),
    "artifact_uri": ("PROMPTREG_ARTIFACT_URI",),
    "s3_endpoint_url": ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    "mlflow_artifact_uri": ("PROMPTREG_MLFLOW_ARTIFACT_URI",),
    "user": ("PROMPTREG_USER",),
    "base_model": ("PROMPTREG_BASE_MODEL",),
}


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    tracking_uri: str
    artifact_uri: str
    s3_endpoint_url: str | None
    mlflow_artifact_uri: str | None
    user: str
    base_model: str | None = None      # folder (or "smollm2") used by eval/gate/promote by default
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        """True when every store is the local embedded default (SQLite + local folders)."""
        return (
            self.db_url.startswith("sqlite")
            and self.tracking_uri.startswith("sqlite")
            and "://" not in self.artifact_uri.replace("file://", "")
        )

    @classmethod
    def load(cls, cwd: Path | None = None, env: dict[str, str] | None = None, **flags: str | None) -> Settings:
        cwd = Path(cwd or os.getcwd())
        env = os.environ if env is None else env
        unknown = set(flags) - set(_KEYS)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        file_values = _read_toml(cwd / CONFIG_FILE)
        values: dict[str, str] = {}
        sources: dict[str, str] = {}
        for key in _KEYS:
            if flags.get(key):
                values[key], sources[key] = str(flags[key]), "flag"
                continue
            for var in _ENV[key]:
                if env.get(var):
                    values[key], sources[key] = env[var], f"env {var}"
                    break
            else:
                if file_values.get(key):
                    values[key], sources[key] = str(file_values[key]), CONFIG_FILE
        home = Path(values.get("home", ".promptreg")).expanduser()
        if not home.is_absolute():
            home = (cwd / home).resolve()
        sources.setdefault("home", "default")
        defaults = {
            "db_url": f"sqlite:///{home / 'registry.db'}",
            "tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
            "artifact_uri": str(home / "artifacts"),
        }
        for key, default in defaults.items():
            if key not in values:
                values[key], sources[key] = default, "default"
        tracking = values["tracking_uri"]
        mlflow_artifacts = values.get("mlflow_artifact_uri")
        if mlflow_artifacts is None and (tracking.startswith("sqlite") or tracking.startswith("file")):
            mlflow_artifacts = str(home / "mlartifacts")
        artifact_uri = values["artifact_uri"]
        if "://" not in artifact_uri and not Path(artifact_uri).is_absolute():
            artifact_uri = str((cwd / artifact_uri).resolve())
        try:
            default_user = getpass.getuser()
        except Exception:  # no passwd entry (containers)
            default_user = "unknown"
        return cls(
            home=home,
            db_url=values["db_url"],
            tracking_uri=tracking,
            artifact_uri=artifact_uri,
            s3_endpoint_url=values.get("s3_endpoint_url"),
            mlflow_artifact_uri=mlflow_artifacts,
            user=values.get("user") or default_user,
            base_model=values.get("base_model"),
            sources=sources,
        )


def read_config_file(path: Path) -> dict:
    """The whole ``promptreg.toml`` at ``path`` as a dict ({} when there is none); InputError if invalid."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


def _read_toml(path: Path) -> dict:
    data = read_config_file(path)
    section = data.get("promptreg", data)
    if not isinstance(section, dict):
        raise InputError(f"{path}: [promptreg] must be a table")
    out = {}
    for key, value in section.items():
        if key in _KEYS:
            if not isinstance(value, str):
                raise InputError(f"{path}: '{key}' must be a string")
            out[key] = value
    return out
