"""Which drift policy applies (the suite's for the alias, else ``promptreg.toml`` ``[drift]``, else the
defaults) and the performance a version was recorded with (its promotion gate, else its latest eval run,
else its manifest metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import InputError
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.evaluation.suite import DriftPolicy, Suite
    from promptreg.services.registry import Registry
    from promptreg.services.views import VersionInfo


def resolve_policy(alias: str | None, suite: Suite | None, action: str | None) -> DriftPolicy:
    """The suite's drift policy for the alias, else promptreg.toml ``[drift]``, else the defaults."""
    from promptreg.evaluation.suite import DriftPolicy

    policy = suite.drift_policy(alias) if (suite is not None and alias) else None
    if policy is None:
        policy = DriftPolicy(**_toml_policy(alias))
    if action is not None:
        policy = policy.model_copy(update={"action": action})
    return policy


def _toml_policy(alias: str | None) -> dict:
    """``[drift]`` (defaults) and ``[drift.<alias>]`` tables of promptreg.toml in the working directory."""
    import tomllib

    from pydantic import ValidationError

    from promptreg.artifact.manifest import format_validation_error
    from promptreg.evaluation.suite import DriftPolicy

    path = Path("promptreg.toml")
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("drift") or {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    base = {k: v for k, v in data.items() if not isinstance(v, dict)}
    merged = {**base, **(data.get(alias) or {} if alias else {})}
    try:
        DriftPolicy(**merged)
    except ValidationError as exc:
        raise InputError(f"{path}: [drift]: {format_validation_error(exc)}") from None
    return merged


def recorded_metric(registry: Registry, info: VersionInfo, alias: str | None, metric: str) -> tuple[float | None, str]:
    """The metric recorded for the version: promotion gate > latest eval run > manifest metrics."""
    if alias:
        for e in reversed(registry.history(info.name)):
            if e.alias == alias and e.action == "promote" and e.to_version == info.version:
                gate_id = (e.details or {}).get("gate_id")
                if gate_id:
                    with registry.session() as s:
                        row = q.find_gate(s, gate_id)
                        report = dict(row.report) if row else {}
                    for m in report.get("metrics", []):
                        if m.get("metric") == metric:
                            return float(m["candidate"]), f"promotion gate {gate_id} ({m['dataset']})"
                break
    with registry.session() as s:
        row = q.latest_eval_run(s, q.version_of(s, info.name, info.version).id)
        metrics = dict(row.metrics) if row else {}
        run_id = row.id if row else None
    for name, values in metrics.items():
        if metric in values:
            return float(values[metric]), f"eval run {run_id} ({name})"
    for key in (f"test_{metric}", f"eval_{metric}", metric):
        if key in info.metrics:
            return float(info.metrics[key]), f"manifest metric {key}"
    return None, "none"
