"""Plain result objects returned by the Registry API (and printed by the CLI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class VersionInfo:
    name: str
    version: int
    sha256: str
    method: str
    num_virtual_tokens: int
    artifact_uri: str
    size_bytes: int
    base_model_fingerprint: str
    base_model_name: str | None
    dataset_fingerprint: str | None
    metrics: dict[str, float]
    method_config: dict[str, Any]
    task_type: str | None
    aliases: list[str]
    status: str
    mirror_status: str
    mirror_error: str | None
    mlflow_run_id: str | None
    mlflow_model_version: str | None
    description: str
    created_by: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso(when) -> str:
    """A datetime as the views show it: ISO 8601 to the second ('' for None)."""
    return when.isoformat(timespec="seconds") if when is not None else ""


def version_info(name: str, task_type: str | None, v, aliases: list[str], num_virtual_tokens: int | None) -> VersionInfo:
    """The view of one prompt_version row (an ORM object, a SQLAlchemy row or any object with the
    column attributes; JSON columns already decoded, ``created_at`` an aware datetime); ``aliases``:
    the names pointing at it, sorted; ``num_virtual_tokens``: from its manifest."""
    return VersionInfo(
        name=name, version=v.number, sha256=v.sha256, method=v.method,
        num_virtual_tokens=int(num_virtual_tokens or 0), artifact_uri=v.artifact_uri,
        size_bytes=v.size_bytes, base_model_fingerprint=v.base_model_fingerprint,
        base_model_name=v.base_model_name, dataset_fingerprint=v.dataset_fingerprint,
        metrics=dict(v.metrics or {}), method_config=dict(v.method_config or {}), task_type=task_type,
        aliases=aliases, status=v.status, mirror_status=v.mirror_status, mirror_error=v.mirror_error,
        mlflow_run_id=v.mlflow_run_id, mlflow_model_version=v.mlflow_model_version,
        description=v.description or "", created_by=v.created_by, created_at=iso(v.created_at),
    )


@dataclass
class PushResult:
    version: VersionInfo
    created: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "warnings": self.warnings, **self.version.to_dict()}


@dataclass
class PromptSummary:
    name: str
    task_type: str | None
    description: str
    versions: int
    latest: int | None
    aliases: dict[str, int]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    prompt: str | None
    alias: str | None
    from_version: int | None
    to_version: int | None
    reason: str | None
    details: dict[str, Any]
    token_id: str | None = None      # the API token of the principal (promptreg server), else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AliasInfo:
    name: str
    alias: str
    version: int
    previous: int | None
    row_version: int
    warnings: list[str] = field(default_factory=list)  # e.g. the MLflow alias mirror failed (sync repairs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Check:
    component: str
    target: str
    ok: bool
    detail: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncReport:
    mirrored: list[str] = field(default_factory=list)
    aliases_set: list[str] = field(default_factory=list)
    aliases_removed: list[str] = field(default_factory=list)
    tags_set: list[str] = field(default_factory=list)
    models_added: list[str] = field(default_factory=list)   # MLmodel (pyfunc) added to older mirrors
    failed: list[str] = field(default_factory=list)
    descriptions_set: list[str] = field(default_factory=list)  # MLflow descriptions / gate+drift tags rewritten

    @property
    def repaired(self) -> int:
        return (len(self.mirrored) + len(self.aliases_set) + len(self.aliases_removed) + len(self.tags_set)
                + len(self.models_added) + len(self.descriptions_set))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "repaired": self.repaired}


@dataclass
class EnvironmentInfo:
    """A deployment environment and the base model it runs (``promptreg env``)."""

    environment: str
    fingerprint: str
    path: str
    updated_by: str
    updated_at: str
    previous: str | None = None  # set_environment_model: the fingerprint recorded before (None: new)
    # set_environment_model: every aliased version bound to another base model (incompatible with this
    # environment's), each with the ``promptreg migrate`` command that would carry it over
    incompatible: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
