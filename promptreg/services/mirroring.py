"""The MLflow mirror of the registry: mirror one version, copy alias/status tags, and ``sync``
(make MLflow match the database again after any failure).

Invariants: the database is the truth and is never changed here except for a version's
``mirror_status``/run ids; every MLflow write is best effort for the operation that caused it
(a warning, never a failure of a committed move) and ``sync`` repairs whatever was missed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import MirrorError, PromptregError
from promptreg.registry import queries as q
from promptreg.reporting.mlflow import version_tags
from promptreg.services.views import SyncReport

if TYPE_CHECKING:
    from promptreg.services.registry import Registry


def mirror_version(registry: Registry, version_id: int, folder: Path, run_id: str | None = None) -> list[str]:
    """Mirror one version into MLflow and record the outcome. Returns warnings."""
    from promptreg.registry.mirror import VersionRecord
    from promptreg.reporting.markdown import pushed_version_markdown

    with registry.session() as s:
        v = q.version_by_id(s, version_id)
        p = q.prompt_by_id(s, v.prompt_id)
        manifest = v.manifest
        params = {"method": v.method, "num_virtual_tokens": manifest.get("num_virtual_tokens"),
                  "task_type": (manifest.get("task") or {}).get("type"),
                  "base_model_name": v.base_model_name}
        params.update({f"method.{k}": val for k, val in (v.method_config or {}).items()})
        ds = manifest.get("dataset") or {}
        rec = VersionRecord(
            prompt=p.name, prompt_description=p.description or "", version=v.number, sha256=v.sha256,
            method=v.method, folder=Path(folder), params=params, metrics=dict(v.metrics or {}),
            base_model_fingerprint=v.base_model_fingerprint, base_model_name=v.base_model_name,
            dataset_fingerprint=v.dataset_fingerprint, dataset_name=ds.get("name"),
            dataset_source=ds.get("source"), dataset_rows=ds.get("rows"), created_by=v.created_by,
            run_id=run_id or v.mlflow_run_id, description=pushed_version_markdown(p.name, v),
        )
    try:
        result = registry.mirror.mirror_version(rec)
    except PromptregError as exc:
        _set_mirror_state(registry, version_id, "failed", str(exc))
        return [f"MLflow mirror failed ({exc}); the version is registered: the events worker retries the mirror "
                "(`promptreg events run`), `promptreg sync` repairs it at once"]
    _set_mirror_state(registry, version_id, "ok", None, result.run_id, result.model_version)
    from promptreg.services.describe import refresh_descriptions

    refresh_descriptions(registry, rec.prompt, {rec.version})  # best effort (run links); sync repairs
    return []


def _set_mirror_state(registry: Registry, version_id: int, status: str, error: str | None,
                      run_id: str | None = None, model_version: str | None = None) -> None:
    with registry.session() as s:
        q.set_mirror_state(s, q.version_by_id(s, version_id), status, error, run_id, model_version)


# ----------------------------------------------------------------------------------------- state tags


def state_tags(registry: Registry, name: str,
               numbers: set[int] | None = None) -> dict[str, tuple[int, dict[str, str]]]:
    """MLflow model version -> (version number, the ``promptreg.aliases`` / ``promptreg.status`` tags the
    database says it should carry); only versions that are mirrored (and in ``numbers`` if given)."""
    with registry.session() as s:
        prompt = q.get_prompt(s, name)
        rows = q.state_rows(s, prompt, numbers)
        held = q.alias_holders(s, prompt)
    return {str(mv): (number, version_tags(aliases=held.get(vid, []), status=status))
            for vid, number, status, mv in rows}


def mirror_state_tags(registry: Registry, name: str, numbers: set[int], keys: tuple[str, ...] | None = None) -> None:
    """Best effort: copy the alias/status tags (only ``keys`` if given) of these versions to MLflow
    (sync repairs misses)."""
    try:
        for mv, (_number, tags) in state_tags(registry, name, numbers).items():
            registry.mirror.set_version_tags(name, mv, {k: v for k, v in tags.items() if keys is None or k in keys})
    except PromptregError:
        pass


# ----------------------------------------------------------------------------------------- sync


def awaited_run_id(registry: Registry, name: str, number: int, run_id: str | None, *,
                   timeout_s: float = 60.0, poll_s: float = 0.25) -> str | None:
    """The version's MLflow run id. When the outbox's consumer does the mirroring
    (``registry.mirror_inline`` is False, as in ``promptreg server``) and has not mirrored this version
    yet, wait for it, at most ``timeout_s``: an evaluation sent right after its push is then logged on
    the version's run as in direct mode, instead of only in the database. ``None`` when there is no run
    (the mirror failed, or did not come in time): the caller says so in a warning."""
    import time

    if run_id or registry.mirror_inline:
        return run_id
    from promptreg.registry import delivery_queue as dq

    deadline = time.monotonic() + timeout_s
    while True:
        with registry.session() as s:
            prompt = q.get_prompt(s, name)
            version = q.get_version(s, prompt, number)
            if version.mlflow_run_id or not dq.mlflow_work_pending(s, prompt.id):
                return version.mlflow_run_id
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def sync(registry: Registry, *, grace_s: float = 0.0) -> SyncReport:
    """Make MLflow match the database, prompt by prompt (:func:`sync_prompt`). Each failure is one
    line of the report. An alias MLflow holds otherwise (changed there by hand) is restored, and each
    overwrite is an audit event ``alias.restore``: MLflow is the browsing UI, not the authority."""
    registry.mirror.check()  # MLflow down: one clear error now, not one retried timeout per item
    report = SyncReport()
    with registry.session() as s:
        names = q.prompt_names(s)
    for name in names:
        sync_prompt(registry, name, report, grace_s=grace_s, audit_restores=True)
    return report


def sync_prompt(registry: Registry, name: str, report: SyncReport | None = None, *,
                mlmodels: bool = True, grace_s: float = 0.0, audit_restores: bool = False) -> SyncReport:
    """Make MLflow match the database for one prompt: mirror its versions whose mirror is missing,
    then its aliases, the pyfunc MLmodel of older mirrors (``mlmodels``), the alias/status tags and
    the descriptions. Failures are collected in ``report.failed``. ``promptreg sync`` runs it for every
    prompt; the outbox's MLflow consumer (promptreg.services.events.mirror) for each prompt with new
    events, in order.

    ``grace_s``: leave alone versions pushed and aliases moved less than that many seconds ago, and a
    prompt whose outbox events the MLflow consumer has not delivered yet (their writer is still
    mirroring them: a background sync beside live writers, as in ``promptreg server``, must not race
    it). ``audit_restores``: record each MLflow alias it overwrites (``alias.restore``)."""
    import datetime as dt

    from promptreg.registry import delivery_queue as dq
    from promptreg.registry.models import utcnow

    report = report if report is not None else SyncReport()
    settled = utcnow() - dt.timedelta(seconds=grace_s)
    with registry.session() as s:
        prompt = q.get_prompt(s, name)
        if grace_s > 0 and dq.mlflow_work_pending(s, prompt.id):
            return report       # the outbox's MLflow consumer is on it (a background sync must not race it)
        pending = [(v.id, v.number, v.sha256, v.artifact_uri) for v, _ in q.versions_not_mirrored(s, prompt)
                   if v.created_at <= settled]
    for version_id, number, sha, uri in pending:
        with tempfile.TemporaryDirectory(prefix="promptreg-sync-") as tmp:
            try:
                folder = registry.store.fetch(uri, Path(tmp) / "artifact", sha)
            except PromptregError as exc:
                report.failed.append(f"{name}:{number}: {exc}")
                continue
            warnings = mirror_version(registry, version_id, folder)
        (report.failed if warnings else report.mirrored).append(
            f"{name}:{number}" + (f": {warnings[0]}" if warnings else ""))
    with registry.session() as s:
        prompt = q.get_prompt(s, name)
        moving = q.aliases_moved_since(s, prompt, settled) if grace_s > 0 else set()
        aliases = {alias: mv for _, alias, mv in q.mlflow_aliases(s, prompt) if mv and alias not in moving}
        mirrored = [(v.number, v.mlflow_run_id, v.sha256, dict(v.manifest))
                    for v, _ in q.versions_mirrored(s, prompt)] if mlmodels else []
    _sync_aliases(registry, name, aliases, report, skip=moving, audit=audit_restores)
    _sync_mlmodels(registry, name, mirrored, report)
    _sync_tags(registry, name, report)
    from promptreg.services.describe import sync_descriptions

    try:  # descriptions and the gate/drift tags derived from the database
        report.descriptions_set += sync_descriptions(registry, name)
    except PromptregError as exc:
        report.failed.append(f"{name} descriptions: {exc}")
    return report


def _sync_aliases(registry: Registry, pname: str, aliases: dict[str, str], report: SyncReport, *,
                  skip: set[str] = frozenset(), audit: bool = False) -> None:
    """MLflow's aliases of ``pname`` := ``aliases`` (alias -> MLflow version); ``skip``: aliases being
    moved right now (left as they are); ``audit``: each overwrite is an ``alias.restore`` audit event."""
    try:
        current = {a: v for a, v in registry.mirror.get_aliases(pname).items() if a not in skip}
        for alias, mv in aliases.items():
            if current.get(alias) != mv:
                registry.mirror.set_alias(pname, alias, mv)
                report.aliases_set.append(f"{pname}@{alias}")
                if audit:
                    _audit_restore(registry, pname, alias, current.get(alias), mv)
        for alias in set(current) - set(aliases):
            registry.mirror.delete_alias(pname, alias)
            report.aliases_removed.append(f"{pname}@{alias}")
            if audit:
                _audit_restore(registry, pname, alias, current[alias], None)
    except (MirrorError, PromptregError) as exc:
        report.failed.append(f"{pname} aliases: {exc}")


def _audit_restore(registry: Registry, name: str, alias: str, mlflow_had: str | None, restored: str | None) -> None:
    """The audit event of an MLflow alias that sync overwrote (changed, set or deleted by hand in
    MLflow, or a mirror write that was lost): versions by number where MLflow's versions are ours."""
    with registry.session() as s:
        prompt = q.get_prompt(s, name)
        numbers = q.numbers_of_mlflow_versions(s, prompt, (mlflow_had, restored))
        q.add_event(s, actor=registry.settings.user, action="alias.restore", prompt_id=prompt.id, alias=alias,
                    from_version=numbers.get(mlflow_had), to_version=numbers.get(restored),
                    reason="MLflow differed from the registry database; sync restored the database's value",
                    details={"mlflow_had": mlflow_had, "restored": restored})


def _sync_mlmodels(registry: Registry, pname: str, mirrored: list[tuple], report: SyncReport) -> None:
    """Versions mirrored before the pyfunc flavour get their MLmodel: ``mirrored`` holds
    (number, run id, sha256, manifest) rows."""
    for number, run_id, sha, manifest in mirrored:
        try:
            if registry.mirror.ensure_mlmodel(run_id, sha, manifest):
                report.models_added.append(f"{pname}:{number}")
        except PromptregError as exc:
            report.failed.append(f"{pname}:{number} MLmodel: {exc}")


def _sync_tags(registry: Registry, pname: str, report: SyncReport) -> None:
    try:
        wanted_tags = state_tags(registry, pname)
        if not wanted_tags:
            return
        current_tags = registry.mirror.version_tags(pname)
        for mv, (number, tags) in wanted_tags.items():
            have = current_tags.get(mv, {})
            diff = {k: v for k, v in tags.items() if have.get(k) != v}
            if diff:
                registry.mirror.set_version_tags(pname, mv, diff)
                report.tags_set.append(f"{pname}:{number} " + ",".join(sorted(diff)))
    except (MirrorError, PromptregError) as exc:
        report.failed.append(f"{pname} tags: {exc}")
