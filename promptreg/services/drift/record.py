"""Writing a drift check down: the version's status flag, the content-addressed report (JSON + plot),
the drift_report row with its audit event, and the MLflow run of the check.

Invariants: the report, the flag and the alias move commit in ONE transaction with their audit events
(:func:`report_rows` and :func:`status_rows` run inside it); MLflow logging is best effort (a warning).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import PromptregError
from promptreg.evaluation.drift import DriftOutcome
from promptreg.registry import queries as q
from promptreg.services.mirroring import mirror_state_tags

if TYPE_CHECKING:
    from sqlmodel import Session

    from promptreg.services.registry import Registry
    from promptreg.services.views import VersionInfo

REPORT_FILE = "drift_report.json"
PLOT_FILE = "drift_report.png"


def set_status(registry: Registry, info: VersionInfo, status: str, *, reason: str, details: dict,
               action: str = "flag") -> None:
    """Flag the version (its own transaction and audit event), then copy the status to MLflow."""
    with registry.session() as s:
        status_rows(s, registry, info, status, reason=reason, details=details, action=action)
    mirror_state_tags(registry, info.name, {info.version})
    from promptreg.services.describe import refresh_descriptions

    refresh_descriptions(registry, info.name, {info.version}, model=False)  # status; best effort


def status_rows(s: Session, registry: Registry, info: VersionInfo, status: str, *, reason: str, details: dict,
                action: str = "flag") -> None:
    """The status change and its audit event, in the caller's transaction (a no-op if unchanged)."""
    v = q.version_of(s, info.name, info.version)
    if v.status == status:
        return
    previous = q.set_version_status(s, v, status)
    q.add_event(s, actor=registry.settings.user, action=action, prompt_id=v.prompt_id, to_version=info.version,
                reason=reason[:1000], details={"status": status, "previous_status": previous, **details})


def upload_report(registry: Registry, out: DriftOutcome, plot: dict) -> tuple[str, str]:
    """The report files (JSON + PNG), content-addressed in the artifact store; (uri, sha256)."""
    from promptreg.artifact.hashing import folder_sha256
    from promptreg.reporting.figures import drift_figure

    with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
        folder = Path(tmp) / "report"
        folder.mkdir()
        (folder / REPORT_FILE).write_text(json.dumps(out.to_dict(), sort_keys=True, indent=1, default=str),
                                          encoding="utf-8")
        try:
            drift_figure(out, plot).savefig(folder / PLOT_FILE, dpi=90)
        except Exception as exc:  # noqa: BLE001 - the plot is a convenience; the JSON is the report
            out.warnings.append(f"drift plot not drawn: {type(exc).__name__}: {exc}")
        sha = folder_sha256(folder)
        uri = registry.store.put_folder(folder, sha)
    out.report_sha256 = sha
    return uri, sha


def report_rows(s: Session, registry: Registry, info: VersionInfo, out: DriftOutcome, schedule_run_id: int | None,
                uri: str, sha: str) -> None:
    """The drift_report row and its audit event, in the caller's transaction."""
    user = registry.settings.user
    v = q.version_of(s, info.name, info.version)
    row = q.add_drift_report(s, prompt_id=v.prompt_id, version_id=v.id, alias=out.alias,
                             data_fingerprint=out.data_fingerprint, data_uri=out.data_uri[:4000],
                             base_model_fingerprint=out.base_model_fingerprint,
                             statistics={"tests": out.tests, "performance": out.performance,
                                         "data": {"source": out.source, "rows": out.rows,
                                                  "labelled_rows": out.labelled_rows, "window": out.window}},
                             decision=out.decision, action=out.action, action_detail=out.action_detail,
                             report_uri=uri, report_sha256=sha, schedule_run_id=schedule_run_id, created_by=user)
    q.add_event(s, actor=user, action="drift", prompt_id=v.prompt_id, alias=out.alias, to_version=info.version,
                reason=out.summary() if out.drift else None,
                details={"drift_report_id": row.id, "decision": out.decision, "action": out.action,
                         "data_uri": out.data_uri, "data_fingerprint": out.data_fingerprint})
    out.report_id = int(row.id)


def log_mlflow(registry: Registry, info: VersionInfo, out: DriftOutcome) -> None:
    """A run in ``promptreg/<name>/drift`` with the statistics as metrics and the report files."""
    mirror = registry.mirror
    try:
        run_id = mirror.start_run(f"promptreg/{info.name}/drift", f"drift-v{info.version}-{out.report_id}",
                                  prompt=info.name, tags={"promptreg.prompt": info.name,
                                                          "promptreg.version": str(info.version),
                                                          "promptreg.sha256": info.sha256,
                                                          "promptreg.job": "drift",
                                                          "promptreg.drift.decision": out.decision,
                                                          "promptreg.drift.action": out.action})
        metrics = []
        for t in out.tests:
            key = "drift/" + t["name"].split(" (")[0].replace(" ", "_")
            metrics.append((f"{key}/statistic", float(t["statistic"]), 0))
            if t.get("p_value") is not None:
                metrics.append((f"{key}/p_value", float(t["p_value"]), 0))
            metrics.append((f"{key}/drift", 1.0 if t["drift"] else 0.0, 0))
        if out.performance:
            metrics.append((f"drift/performance/{out.performance['metric']}", out.performance["value"], 0))
        metrics.append(("drift/detected", 1.0 if out.drift else 0.0, 0))
        mirror.log_metrics(run_id, metrics)
        mirror.log_params(run_id, {"data_uri": out.data_uri, "data_fingerprint": out.data_fingerprint,
                                   "rows": out.rows, "data_source": out.source, "labelled_rows": out.labelled_rows, "reference": out.reference, "policy": json.dumps(out.policy)})
        mirror.log_dataset(run_id, out.data_fingerprint, name=Path(out.data_uri).name or "fresh", source=out.data_uri,
                           rows=out.rows, context="drift")
        with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
            folder = registry.store.fetch(registry.store.uri_for(out.report_sha256), Path(tmp) / "r",
                                          out.report_sha256)
            for f in (REPORT_FILE, PLOT_FILE):
                if (folder / f).is_file():
                    if f.endswith(".json"):
                        mirror.log_dict(run_id, json.loads((folder / f).read_text()), f"drift/{f}")
                    else:
                        mirror.log_artifact(run_id, folder / f, "drift")
        mirror.end_run(run_id)
        out.mlflow_run_id = run_id
        _set_report_run(registry, out.report_id, run_id)
    except PromptregError as exc:
        out.warnings.append(f"MLflow: drift report not logged: {exc}")


def _set_report_run(registry: Registry, report_id: int, run_id: str) -> None:
    with registry.session() as s:
        q.set_drift_report_mlflow(s, report_id, run_id)
