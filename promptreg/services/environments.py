"""Deployment environments and the base model each runs (``promptreg env``): drift checks with
``--env`` compare its fingerprint with each version's.

Invariants: every change is one transaction with its audit event.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from promptreg.registry import queries as q
from promptreg.services.views import EnvironmentInfo

if TYPE_CHECKING:
    from promptreg.services.registry import Registry


def set_environment_model(registry: Registry, env: str, model: str) -> EnvironmentInfo:
    """Record the base model deployed in ``env`` (its fingerprint and path); an audit event. The result
    lists every aliased version bound to another base model, with the ``migrate`` command for each."""
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.refs import check_alias
    from promptreg.runtime.loader import resolve_model_path

    check_alias(env)
    path = resolve_model_path(model)
    fp = model_fingerprint(path).fingerprint
    user = registry.settings.user
    with registry.session() as s:
        row, previous = q.put_environment(s, env, fp, str(path.resolve()), user)
        q.add_event(s, actor=user, action="env.set_base_model", details={
            "environment": env, "fingerprint": fp, "previous": previous, "path": str(path.resolve())})
        out = _environment_info(row, previous)
        out.incompatible = [
            {"prompt": name, "alias": alias, "version": number, "fingerprint": vfp, "status": status,
             "suggest": f"promptreg migrate {name}@{alias} --to-model {shlex.quote(str(path.resolve()))}"}
            for name, alias, number, vfp, status in q.aliased_versions_off_model(s, fp)]
        return out


def _environment_info(row, previous: str | None = None) -> EnvironmentInfo:
    return EnvironmentInfo(environment=row.name, fingerprint=row.base_model_fingerprint, path=row.base_model_path,
                           updated_by=row.updated_by, updated_at=row.updated_at.isoformat(timespec="seconds"),
                           previous=previous)


def list_environments(registry: Registry) -> list[EnvironmentInfo]:
    """Every environment with a recorded base model, by name."""
    with registry.session() as s:
        return [_environment_info(r) for r in q.environments(s)]


def environment_model(registry: Registry, env: str) -> str:
    with registry.session() as s:
        return q.get_environment(s, env).base_model_path
