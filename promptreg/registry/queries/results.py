"""Queries on what checks produce: eval runs, gate results, drift reports, deployment environments,
and the content addresses they (and versions) reference (for ``gc``).

Invariants: as in :mod:`promptreg.registry.queries.catalog`: a session first, typed not-found errors
from ``get_*``, None from ``find_*``/``latest_*``, nothing commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from promptreg.errors import EnvironmentNotFoundError
from promptreg.registry.models import (
    DriftReport,
    EnvironmentModel,
    EvalRun,
    GateResult,
    Prompt,
    PromptVersion,
    utcnow,
)

# ----------------------------------------------------------------------------------------- eval runs


def latest_eval_run(s: Session, version_id: int, suite_sha256: str | None = None,
                    base_model_fingerprint: str | None = None) -> EvalRun | None:
    """The newest eval run of a version (on this suite and base model, if given)."""
    q = select(EvalRun).where(EvalRun.version_id == version_id)
    if suite_sha256 is not None:
        q = q.where(EvalRun.suite_sha256 == suite_sha256)
    if base_model_fingerprint is not None:
        q = q.where(EvalRun.base_model_fingerprint == base_model_fingerprint)
    return s.exec(q.order_by(EvalRun.id.desc())).first()


def eval_runs_of(s: Session, version_ids: Iterable[int]) -> list[EvalRun]:
    """The eval runs of these versions, newest first."""
    ids = list(version_ids)
    if not ids:
        return []
    return list(s.exec(select(EvalRun).where(EvalRun.version_id.in_(ids)).order_by(EvalRun.id.desc())).all())


def add_eval_run(s: Session, **fields: Any) -> EvalRun:
    row = EvalRun(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


def set_eval_run_mlflow(s: Session, eval_run_id: int, run_id: str) -> None:
    """Link an eval run to its MLflow run (a no-op if the eval run is gone)."""
    row = s.get(EvalRun, eval_run_id)
    if row is not None:
        row.mlflow_run_id = run_id
        s.add(row)


# ----------------------------------------------------------------------------------------- gates


def latest_gate(s: Session, candidate_sha256: str, baseline_sha256: str, suite_sha256: str | None = None,
                base_model_fingerprint: str | None = None) -> GateResult | None:
    """The newest gate verdict of this candidate against this baseline ("" for none), by content (on
    this suite and base model, if given)."""
    q = select(GateResult).where(GateResult.candidate_sha256 == candidate_sha256,
                                 GateResult.baseline_sha256 == baseline_sha256)
    if suite_sha256 is not None:
        q = q.where(GateResult.suite_sha256 == suite_sha256)
    if base_model_fingerprint is not None:
        q = q.where(GateResult.base_model_fingerprint == base_model_fingerprint)
    return s.exec(q.order_by(GateResult.id.desc())).first()


def find_gate(s: Session, gate_id: int) -> GateResult | None:
    return s.get(GateResult, gate_id)


def gates_of(s: Session, prompt: Prompt, candidate_shas: Iterable[str]) -> list[GateResult]:
    """The gate verdicts of ``prompt`` whose candidate has one of these contents, oldest first."""
    shas = sorted(set(candidate_shas))
    if not shas:
        return []
    return list(s.exec(select(GateResult).where(GateResult.prompt_id == prompt.id,
                                                GateResult.candidate_sha256.in_(shas))
                       .order_by(GateResult.id)).all())


def add_gate_result(s: Session, **fields: Any) -> GateResult:
    row = GateResult(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


# ----------------------------------------------------------------------------------------- drift reports


def drift_reports_of(s: Session, version_ids: Iterable[int]) -> list[DriftReport]:
    """The drift reports of these versions, oldest first."""
    ids = list(version_ids)
    if not ids:
        return []
    return list(s.exec(select(DriftReport).where(DriftReport.version_id.in_(ids)).order_by(DriftReport.id)).all())


def drift_report_of_run(s: Session, schedule_run_id: int) -> int | None:
    """The id of the newest drift report written for this schedule run."""
    return s.exec(select(DriftReport.id).where(DriftReport.schedule_run_id == schedule_run_id)
                  .order_by(DriftReport.id.desc()).limit(1)).first()


def add_drift_report(s: Session, **fields: Any) -> DriftReport:
    row = DriftReport(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


def set_drift_report_mlflow(s: Session, report_id: int, run_id: str) -> None:
    row = s.get(DriftReport, report_id)
    row.mlflow_run_id = run_id
    s.add(row)


# ----------------------------------------------------------------------------------------- environments


def find_environment(s: Session, name: str) -> EnvironmentModel | None:
    return s.exec(select(EnvironmentModel).where(EnvironmentModel.name == name)).first()


def get_environment(s: Session, name: str) -> EnvironmentModel:
    row = find_environment(s, name)
    if row is None:
        raise EnvironmentNotFoundError(f"no base model recorded for environment {name!r} "
                                       f"(promptreg env set-base-model {name} PATH)")
    return row


def environments(s: Session) -> list[EnvironmentModel]:
    return list(s.exec(select(EnvironmentModel).order_by(EnvironmentModel.name)).all())


def put_environment(s: Session, name: str, fingerprint: str, path: str, user: str) -> tuple[EnvironmentModel, str | None]:
    """Record the base model of environment ``name``; returns the row and the previous fingerprint."""
    row = find_environment(s, name)
    previous = row.base_model_fingerprint if row else None
    if row is None:
        row = EnvironmentModel(name=name, base_model_fingerprint=fingerprint, base_model_path=path,
                               updated_by=user, updated_at=utcnow())
    else:
        row.base_model_fingerprint, row.base_model_path = fingerprint, path
        row.updated_by, row.updated_at = user, utcnow()
    s.add(row)
    s.flush()
    return row, previous


# ----------------------------------------------------------------------------------------- references (gc)


def content_references(s: Session, shas: set[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """sha256 -> [(what references it, its URI)]: versions, eval-run outcomes and drift reports
    (restricted to ``shas`` when given)."""
    out: dict[str, list[tuple[str, str]]] = {}

    def add(sha, what, uri):
        if sha:
            out.setdefault(sha, []).append((what, uri or ""))

    wanted = sorted(shas) if shas is not None else None
    q = (select(Prompt.name, PromptVersion.number, PromptVersion.sha256, PromptVersion.artifact_uri)
         .join(Prompt, Prompt.id == PromptVersion.prompt_id))
    if wanted is not None:
        q = q.where(PromptVersion.sha256.in_(wanted))
    for name, number, sha, uri in s.exec(q).all():
        add(sha, f"{name}:{number}", uri)
    q = select(EvalRun.id, EvalRun.outcomes_sha256, EvalRun.outcomes_uri)
    if wanted is not None:
        q = q.where(EvalRun.outcomes_sha256.in_(wanted))
    for rid, sha, uri in s.exec(q).all():
        add(sha, f"eval_run {rid}", uri)
    q = select(DriftReport.id, DriftReport.report_sha256, DriftReport.report_uri).where(
        DriftReport.report_sha256.is_not(None))
    if wanted is not None:
        q = q.where(DriftReport.report_sha256.in_(wanted))
    for rid, sha, uri in s.exec(q).all():
        add(sha, f"drift_report {rid}", uri)
    return out


def lock_references(s: Session) -> None:
    """Block new references until the transaction ends (PostgreSQL: a SHARE lock on the referencing
    tables; SQLite: every registry transaction already starts with BEGIN IMMEDIATE, the write lock)."""
    if s.get_bind().dialect.name == "postgresql":
        s.exec(text("LOCK TABLE prompt_version, eval_run, drift_report IN SHARE MODE"))


__all__ = [
    "add_drift_report",
    "add_eval_run",
    "add_gate_result",
    "content_references",
    "drift_report_of_run",
    "drift_reports_of",
    "environments",
    "eval_runs_of",
    "find_environment",
    "find_gate",
    "gates_of",
    "get_environment",
    "latest_eval_run",
    "latest_gate",
    "lock_references",
    "put_environment",
    "set_drift_report_mlflow",
    "set_eval_run_mlflow",
]
