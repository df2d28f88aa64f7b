"""``doctor``: which stores a registry uses and whether each one works, and the MLflow repair.

Invariants: ``doctor_checks`` creates nothing. A store of the embedded default that does not exist yet
(registry.db, mlflow.db, the artifact folder) is reported OK, "not initialised yet (created on first
use)", when its folder can be created, so that ``doctor`` in a folder nothing has used yet exits 0 and
leaves the folder as it was. A database found in a state the first use cannot fix (a half-migrated
mlflow.db) is one FAIL line that names the state and the command that repairs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import PromptregError
from promptreg.registry.db import mask_url, sqlite_file
from promptreg.services.views import Check

if TYPE_CHECKING:  # pragma: no cover
    from promptreg.registry.mlflow_db import RepairReport
    from promptreg.services.registry import Registry

FIRST_USE = "not initialised yet (created on first use)"


def _not_creatable(path: Path) -> str | None:
    """Why ``path`` could not be created on first use, or None when it can (nothing is written)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def _first_use(component: str, target: str, path: Path, source: str) -> Check:
    why = _not_creatable(path)
    return Check(component, target, why is None, why or FIRST_USE, source)


def _registry_database(reg: Registry) -> Check:
    from promptreg.registry.migrate import HEAD_REVISION, current_revision

    s = reg.settings
    target, source = mask_url(s.db_url), s.sources.get("db_url", "")
    path = sqlite_file(s.db_url)
    if path is not None and not path.exists():
        return _first_use("registry database", target, path, source)
    try:
        rev = current_revision(s.db_url)
    except PromptregError as exc:
        return Check("registry database", target, False, str(exc), source)
    if rev is None:   # ensure_schema creates the schema of an empty database on first use
        return Check("registry database", target, True, FIRST_USE, source)
    ok = rev == HEAD_REVISION
    detail = f"schema {rev}" if ok else f"schema {rev}, expected {HEAD_REVISION} (run `promptreg db upgrade`)"
    return Check("registry database", target, ok, detail, source)


def _artifact_store(reg: Registry) -> Check:
    from promptreg.registry.store import LocalStore

    s = reg.settings
    target, source = mask_url(s.artifact_uri), s.sources.get("artifact_uri", "")
    try:
        store = reg.store
        if isinstance(store, LocalStore) and not store.root.exists():
            return _first_use("artifact store", target, store.root, source)
        store.check()
    except PromptregError as exc:
        return Check("artifact store", target, False, str(exc), source)
    return Check("artifact store", target, True, "reachable", source)


def _mlflow_tracking(reg: Registry) -> Check:
    from promptreg.registry.mlflow_db import settled_state

    s = reg.settings
    target, source = mask_url(s.tracking_uri), s.sources.get("tracking_uri", "")
    path = sqlite_file(s.tracking_uri)
    if path is not None:
        try:
            state = settled_state(path)
        except PromptregError as exc:
            return Check("MLflow tracking", target, False, str(exc), source)
        if state.fresh:
            return _first_use("MLflow tracking", target, path, source)
        if not state.clean:
            return Check("MLflow tracking", target, False, state.describe(), source)
    try:
        reg.mirror.check()
    except PromptregError as exc:
        return Check("MLflow tracking", target, False, str(exc), source)
    return Check("MLflow tracking", target, True, "reachable", source)


def doctor_checks(reg: Registry) -> list[Check]:
    """One check per store: registry database, artifact store, MLflow tracking."""
    return [_registry_database(reg), _artifact_store(reg), _mlflow_tracking(reg)]


def repair_tracking(reg: Registry) -> RepairReport | None:
    """Rebuild the embedded MLflow database if it is half-migrated; None when there is nothing to
    repair (a tracking server, or a database that is clean or not created yet)."""
    from promptreg.registry.mlflow_db import repair_db

    path = sqlite_file(reg.settings.tracking_uri)
    if path is None:
        return None
    return repair_db(path)


__all__ = ["FIRST_USE", "doctor_checks", "repair_tracking"]
