"""Keeps what a reviewer reads in the MLflow UI current: reads the facts of a prompt and its versions
from the database (:func:`collect`) and writes the descriptions and derived tags that
:mod:`promptreg.reporting.descriptions` renders from them.

They are rewritten whenever what they show changes: after a push (mirror), an alias move (promote,
rollback — both the new and the old holder), an evaluation, a gate, a drift check or flag, and by
``promptreg sync``, which compares them with MLflow's and rewrites only those that differ (idempotent).

Invariants: :func:`refresh_descriptions` never raises a PromptregError (it returns warnings: MLflow
is a mirror, ``sync`` repairs a miss); :func:`sync_descriptions` raises one (sync reports it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from promptreg.errors import MirrorError, PromptregError
from promptreg.evaluation.results import GateReport
from promptreg.registry import queries as q
from promptreg.reporting.descriptions import (
    GATE_ALIAS,
    DriftFacts,
    EvalFacts,
    GateFacts,
    ModelFacts,
    RunLink,
    VersionFacts,
    model_markdown,
    version_markdown,
    wanted_tags,
)

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

# ----------------------------------------------------------------------------------------- collect (database)


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt is not None else ""


def collect(registry: Registry, name: str, numbers: Iterable[int] | None = None,
            experiment_of: Callable[[str], str | None] | None = None) -> tuple[ModelFacts, list[VersionFacts]]:
    """The facts of prompt ``name`` and of its versions ``numbers`` (all mirrored versions when None)."""
    wanted = None if numbers is None else {int(n) for n in numbers}
    with registry.session() as s:
        prompt = q.get_prompt(s, name)
        agg = q.version_methods(s, prompt)
        methods = {m: [int(lo), int(hi)] for m, lo, hi, _ in agg}
        count = sum(int(n) for *_, n in agg)
        latest_row = q.latest_version(s, prompt)
        bases = q.version_base_models(s, prompt)
        alias_numbers = q.alias_numbers(s, prompt).get(prompt.id, {})
        task = ((latest_row.manifest or {}).get("task") or {}) if latest_row is not None else {}
        model = ModelFacts(
            name=prompt.name, description=prompt.description or "", task_type=prompt.task_type or task.get("type"),
            owner=prompt.created_by or "", created_at=_iso(prompt.created_at), methods=methods, versions=count,
            latest=latest_row.number if latest_row is not None else None, verbalizer=task.get("verbalizer"),
            template=task.get("template"), aliases={a: int(n) for a, n in alias_numbers.items()},
            base_models=[(fp, nm) for fp, nm, _ in sorted(bases, key=lambda b: -int(b[2]))])
        if wanted is not None and not wanted:
            return model, []
        rows = q.versions(s, prompt, wanted, mirrored_only=wanted is None)
        ids = [v.id for v in rows]
        held = q.alias_holders(s, prompt)
        numbers_by_id = q.version_numbers(s, prompt)

        gates: dict[str, GateFacts] = {}
        others: dict[str, GateFacts] = {}
        for g in q.gates_of(s, prompt, {v.sha256 for v in rows}):
            report = GateReport.from_dict(dict(g.report or {}))
            report.gate_id, report.baseline = int(g.id), numbers_by_id.get(g.baseline_version_id)
            facts = GateFacts(report, _iso(g.created_at))
            (gates if g.against == GATE_ALIAS else others)[g.candidate_sha256] = facts

        evals: dict[int, list[EvalFacts]] = {}
        for e in q.eval_runs_of(s, ids):
            failed = [c.get("name") for c in (e.checks or []) if c.get("passed") is False]
            link = RunLink(f"eval run: {e.suite_name}", e.mlflow_run_id) if e.mlflow_run_id else None
            evals.setdefault(e.version_id, []).append(EvalFacts(
                int(e.id), e.suite_name, e.suite_sha256, {k: dict(v) for k, v in (e.metrics or {}).items()},
                [str(x) for x in failed], _iso(e.created_at), link))

        drifts: dict[int, DriftFacts] = {}
        for d in q.drift_reports_of(s, ids):
            stats = d.statistics or {}
            drifted = [str(t.get("name")) for t in (stats.get("tests") or []) if t.get("drift")]
            perf = stats.get("performance")
            link = RunLink("drift run", d.mlflow_run_id) if d.mlflow_run_id else None
            drifts[d.version_id] = DriftFacts(int(d.id), d.decision, d.action, d.data_uri, _iso(d.created_at),
                                              drifted, dict(perf) if isinstance(perf, dict) else None, d.alias, link)

        inspections = q.latest_events(s, prompt, "inspect", [v.number for v in rows])

        versions = []
        for v in rows:
            manifest = v.manifest or {}
            other = others.get(v.sha256)
            gate = gates.get(v.sha256)
            if other is not None and gate is not None and other.id < gate.id:
                other = None
            versions.append(VersionFacts(
                name=prompt.name, version=v.number, sha256=v.sha256, method=v.method,
                num_virtual_tokens=int(manifest.get("num_virtual_tokens") or 0),
                task_type=prompt.task_type or (manifest.get("task") or {}).get("type"), status=v.status,
                aliases=sorted(held.get(v.id, [])), created_by=v.created_by, created_at=_iso(v.created_at),
                base_model_fingerprint=v.base_model_fingerprint, base_model_name=v.base_model_name,
                dataset=manifest.get("dataset"), metrics=dict(v.metrics or {}), validation=manifest.get("validation"),
                description=v.description or "", gate=gate, other_gate=other, evals=evals.get(v.id, []),
                drift=drifts.get(v.id), inspection=_inspection(inspections.get(v.number)),
                source_run=RunLink("source run", v.mlflow_run_id) if v.mlflow_run_id else None,
                mlflow_model_version=v.mlflow_model_version))
    if experiment_of is not None:
        for f in versions:
            for link in [f.source_run, f.drift.link if f.drift else None] + [e.link for e in f.evals]:
                if link is not None and link.experiment_id is None:
                    link.experiment_id = experiment_of(link.run_id)
    return model, versions


def _inspection(event) -> dict | None:
    if event is None:
        return None
    return {**dict(event.details or {}), "at": _iso(event.at), "actor": event.actor}


# ----------------------------------------------------------------------------------------- write (MLflow)


def refresh_descriptions(registry: Registry, name: str, numbers: Iterable[int] | None = None, *, model: bool = True,
                         only_changed: bool = False) -> list[str]:
    """Rewrite the MLflow descriptions (and derived tags) of ``name`` and of its versions ``numbers``
    (None: every mirrored version) from the database. Best effort: returns warnings, never raises a
    PromptregError. With ``only_changed`` MLflow is read first and only differing texts are written."""
    try:
        _refresh(registry, name, numbers, model=model, only_changed=only_changed)
    except PromptregError as exc:
        return [f"MLflow: descriptions of {name} not updated ({exc}); `promptreg sync` repairs them"]
    except Exception as exc:  # noqa: BLE001 - a description must never fail the committed operation it follows
        return [f"MLflow: descriptions of {name} not updated ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); `promptreg sync` repairs them"]
    return []


def sync_descriptions(registry: Registry, name: str) -> list[str]:
    """For ``promptreg sync``: rewrite what differs; returns what was rewritten ("toy", "toy:2 ...").
    Raises PromptregError (sync reports it as failed)."""
    try:
        return _refresh(registry, name, None, model=True, only_changed=True)
    except PromptregError:
        raise
    except Exception as exc:  # noqa: BLE001 - sync reports one line per prompt, never a traceback
        raise MirrorError(f"descriptions not rewritten: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


def _any_mirrored(registry: Registry, name: str, numbers) -> bool:
    with registry.session() as s:
        return q.any_mirrored(s, q.get_prompt(s, name), numbers)


def _refresh(registry: Registry, name: str, numbers, *, model: bool, only_changed: bool) -> list[str]:
    mirror = registry.mirror
    if numbers is not None and not _any_mirrored(registry, name, numbers):
        return []       # nothing of it is in MLflow yet: the mirror writes the descriptions when it is
    model_facts, versions = collect(registry, name, numbers, experiment_of=mirror.run_experiment_id)
    versions = [v for v in versions if v.mlflow_model_version]
    model_md = model_markdown(model_facts) if model else None
    texts = {v.mlflow_model_version: version_markdown(v) for v in versions}
    tags = {v.mlflow_model_version: wanted_tags(v) for v in versions}
    done: list[str] = []
    if only_changed:
        have_model, have_versions = mirror.descriptions(name)
        if have_model is None:          # not mirrored (yet): nothing to describe
            return []
        have_tags = mirror.version_tags(name) if any(tags.values()) else {}
        if model_md is not None and (have_model or "") == model_md:
            model_md = None
        texts = {mv: md for mv, md in texts.items() if mv in have_versions and (have_versions[mv] or "") != md}
        tags = {mv: {k: val for k, val in t.items() if have_tags.get(mv, {}).get(k) != val}
                for mv, t in tags.items() if mv in have_versions}
    number = {v.mlflow_model_version: v.version for v in versions}
    if model_md is not None or texts:
        mirror.update_descriptions(name, model_md, texts)
    if model_md is not None:
        done.append(name)
    for mv, t in tags.items():
        if t:
            mirror.set_version_tags(name, mv, t)
    for mv in sorted(set(texts) | {mv for mv, t in tags.items() if t}, key=lambda m: number.get(m, 0)):
        what = (["description"] if mv in texts else []) + sorted(tags.get(mv) or {})
        done.append(f"{name}:{number.get(mv, mv)} " + ",".join(what))
    return done


__all__ = ["collect", "refresh_descriptions", "sync_descriptions"]
