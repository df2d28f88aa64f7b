"""The drift check of one version (``promptreg drift``, and every scheduled slot): gather the numbers,
let :mod:`promptreg.evaluation.drift` decide, act by policy, write it down (:mod:`.record`).

Invariants: only the base-model ``incompatible`` flag is committed at once (a complete state by
itself); the report, the ``degraded`` flag and a rollback commit together at the end, so a check
killed before leaves nothing a retried slot would trip over.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError, PromptregError
from promptreg.evaluation import drift as decide
from promptreg.evaluation.drift import DriftOutcome
from promptreg.refs import parse_ref
from promptreg.services.drift.captured import is_captured, read_captured
from promptreg.services.drift.inputs import REFERENCE_CAP, fingerprint, read_data, reference_rows, sample
from promptreg.services.drift.policy import recorded_metric, resolve_policy
from promptreg.services.drift.record import log_mlflow as log_to_mlflow
from promptreg.services.drift.record import report_rows, set_status, status_rows, upload_report
from promptreg.services.environments import environment_model
from promptreg.services.mirroring import mirror_state_tags

if TYPE_CHECKING:
    from sqlmodel import Session

    from promptreg.evaluation.suite import DriftPolicy, Suite
    from promptreg.services.evaluate import Evaluator
    from promptreg.services.registry import Registry
    from promptreg.services.views import VersionInfo


MIN_LABELLED = 10     # captured rows with feedback labels needed to measure performance (else: the estimate)


@dataclass
class _Check:
    """What one check works with, gathered by :func:`_prepare`."""

    info: VersionInfo
    alias: str | None
    policy: DriftPolicy
    rows: list[dict]
    ref_rows: list[dict]
    evaluator: Evaluator
    deployed_fp: str
    out: DriftOutcome
    seed: int
    loaded: Any = None           # the version on the deployed base model (None: it cannot run there)
    probs: Any = None            # its predictions on the fresh / reference rows (classification)
    ref_probs: Any = None

    @property
    def labelled(self) -> bool:
        return self.out.labelled

    @property
    def labelled_idx(self) -> list[int]:
        """The fresh rows with a true label (all of them for a labelled file; captured: those with feedback)."""
        return [i for i, r in enumerate(self.rows) if "label" in r]


def check_drift(registry: Registry, ref: str, data_uri: str, *, suite: Suite | None = None, env: str | None = None,
                model: str | None = None, reference: str | None = None, action: str | None = None,
                text_column: str = "text", label_column: str = "label", seed: int = 0,
                schedule_run_id: int | None = None, log_mlflow: bool = True,
                since: dt.datetime | None = None, device: str = "auto") -> DriftOutcome:
    """Check ``ref`` for base-model, data and performance drift on ``data_uri`` (a file, an S3 prefix, or
    ``captured[:SINCE]``: the served traffic, see :mod:`.captured`; ``since``: a schedule's window start)
    and act by policy."""
    t0 = time.perf_counter()
    c = _prepare(registry, ref, data_uri, suite=suite, env=env, model=model, reference=reference, action=action,
                 text_column=text_column, label_column=label_column, seed=seed, since=since, device=device)
    out, info = c.out, c.info
    incompatible = c.deployed_fp != info.base_model_fingerprint
    if incompatible:
        out.notes.append(f"base model drift: deployed {c.deployed_fp[:12]} != version's "
                         f"{info.base_model_fingerprint[:12]}")
        set_status(registry, info, "incompatible", reason=f"deployed base model {c.deployed_fp[:12]} differs",
                   details={"deployed_fingerprint": c.deployed_fp})
    try:
        c.loaded = c.evaluator.load(info, check_base=False)
    except PromptregError as exc:
        out.notes.append(f"{info.name}:{info.version} cannot run on the deployed base model: {exc}")
    plot = _data_tests(c)
    _performance_test(registry, c)
    _decide(registry, c, incompatible)
    flag_status, target = _act(registry, c)
    out.seconds = time.perf_counter() - t0
    _record(registry, c, flag_status, target, plot, schedule_run_id)
    if log_mlflow:
        log_to_mlflow(registry, info, out)
    from promptreg.services.describe import refresh_descriptions

    # the MLflow description shows the status and the last drift decision (+ the drift run's link)
    out.warnings += refresh_descriptions(registry, info.name, {info.version}, model=False)
    return out


def _prepare(registry: Registry, ref: str, data_uri: str, *, suite: Suite | None, env: str | None,
             model: str | None, reference: str | None, action: str | None, text_column: str, label_column: str,
             seed: int, since: dt.datetime | None = None, device: str = "auto") -> _Check:
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.services.evaluate import Evaluator

    alias = parse_ref(ref).alias
    info = registry.show(ref)
    policy = resolve_policy(alias, suite, action)
    if policy.action == "rollback" and alias is None:
        raise InputError("a rollback policy needs NAME@ALIAS (which alias to move back)")
    window, source = None, "s3" if data_uri.startswith("s3://") else "file"
    if is_captured(data_uri):
        captured = read_captured(registry, ref, data_uri, since=since)
        rows, window, source = captured.rows, captured.window(), "captured"
    else:
        rows = read_data(data_uri, registry.settings, text_column=text_column, label_column=label_column)
    ev = Evaluator(registry, model=environment_model(registry, env) if env else model, device=device,
                   log_mlflow=False)
    deployed_fp = model_fingerprint(resolve_model_path(ev.model_path(info))).fingerprint
    ref_rows, ref_desc = reference_rows(registry, info, reference=reference, suite=suite, text_column=text_column,
                                        label_column=label_column)
    ref_rows = sample(ref_rows, REFERENCE_CAP, seed)
    labelled_rows = sum("label" in r for r in rows)
    out = DriftOutcome(info.name, alias, info.version, data_uri, fingerprint(rows), len(rows),
                       labelled_rows >= min(MIN_LABELLED, len(rows)), ref_desc, len(ref_rows), deployed_fp,
                       info.base_model_fingerprint, policy=policy.model_dump(), source=source,
                       labelled_rows=labelled_rows, window=window)
    if 0 < labelled_rows < MIN_LABELLED and labelled_rows < len(rows):
        out.notes.append(f"only {labelled_rows} captured rows have feedback labels (fewer than {MIN_LABELLED}): "
                         "performance is not measured on them")
    return _Check(info, alias, policy, rows, ref_rows, ev, deployed_fp, out, seed)


def _data_tests(c: _Check) -> dict[str, Any]:
    """Input lengths, labels, predictions, embeddings (and, unlabelled, confidence) tests; returns what the
    report's figure plots."""
    from promptreg.evaluation.drift_stats import categorical_drift, length_drift, mmd_permutation_test
    from promptreg.evaluation.embeddings import mean_pooled_hidden_states

    policy, loaded = c.policy, c.loaded
    base = c.evaluator.base(c.info)
    tok = base.tokenizer
    texts, ref_texts = [r["text"] for r in c.rows], [r["text"] for r in c.ref_rows]

    def lengths(ts):
        return [len(ids) for ids in tok(ts, add_special_tokens=False)["input_ids"]]

    ref_len, cur_len = lengths(ref_texts), lengths(texts)
    tests = [length_drift(ref_len, cur_len, alpha=policy.alpha, name="input length (tokens)")]
    if c.labelled and all("label" in r for r in c.ref_rows):
        tests.append(categorical_drift([r["label"] for r in c.ref_rows], [c.rows[i]["label"] for i in c.labelled_idx],
                                       alpha=policy.alpha, psi_threshold=policy.psi_threshold, name="labels"))
    if loaded is not None and loaded.task == "classification":
        c.probs, c.ref_probs = loaded.classify(texts), loaded.classify(ref_texts)
        tests.append(categorical_drift([loaded.labels[i] for i in c.ref_probs.argmax(-1)],
                                       [loaded.labels[i] for i in c.probs.argmax(-1)], alpha=policy.alpha,
                                       psi_threshold=policy.psi_threshold, name="predictions"))
    n = policy.embedding_sample
    emb_ref = mean_pooled_hidden_states(base.model, tok, sample(ref_texts, n, c.seed + 1))
    emb_cur = mean_pooled_hidden_states(base.model, tok, sample(texts, n, c.seed + 2))
    tests.append(mmd_permutation_test(emb_ref, emb_cur, n_permutations=policy.mmd_permutations, seed=c.seed,
                                      alpha=policy.alpha, name="embeddings (base-model hidden states)"))
    c.out.tests = [{**t.to_dict(), "explain": t.explain()} for t in tests]
    return {"ref_len": ref_len, "cur_len": cur_len, "probs": c.probs, "ref_probs": c.ref_probs,
            "labels": loaded.labels if loaded is not None else []}


def _performance_test(registry: Registry, c: _Check) -> None:
    """Labelled: the policy's metric against the recorded one. Unlabelled: an ESTIMATE from confidence."""
    from promptreg.evaluation.drift_stats import confidence_drift

    loaded, out = c.loaded, c.out
    if loaded is None or loaded.task != "classification":
        return
    if c.labelled:
        recorded, source = recorded_metric(registry, c.info, c.alias, c.policy.metric)
        idx = c.labelled_idx
        probs = None if c.probs is None else c.probs[idx]
        out.performance = _measure(loaded, [c.rows[i] for i in idx], probs, c.policy, recorded, c.seed)
        out.performance["recorded_source"] = source
        if len(idx) < len(c.rows):
            out.notes.append(f"performance measured on the {len(idx)} of {len(c.rows)} rows with feedback labels")
    else:
        conf = confidence_drift(c.ref_probs, c.probs, alpha=c.policy.alpha, name="confidence (no labels)")
        out.tests.append({**conf.to_dict(), "explain": conf.explain()})
        out.notes.append("no labels in the fresh data: performance is ESTIMATED from the verbalizer "
                         "confidence, not measured" + (" (POST /feedback adds true labels to captured rows)"
                                                       if out.source == "captured" else ""))


def _measure(loaded: Any, rows: list[dict], probs: Any, policy: DriftPolicy, recorded: float | None,
             seed: int) -> dict[str, Any]:
    return decide.performance(loaded.classify([r["text"] for r in rows]) if probs is None else probs,
                              [r["label"] for r in rows], loaded.labels, policy.metric, recorded, policy.margin,
                              seed=seed, who=loaded.label)


def _decide(registry: Registry, c: _Check, incompatible: bool) -> None:
    out, info = c.out, c.info
    perf = out.performance
    holds = False
    if incompatible:
        holds = decide.holds_on_new_base(runs=c.loaded is not None, labelled=c.labelled, perf=perf)
        out.action_detail["passes_on_new_base_model"] = holds
        if holds:
            set_status(registry, info, "active", action="unflag",
                       reason=f"passed re-evaluation on base model {c.deployed_fp[:12]}",
                       details={"deployed_fingerprint": c.deployed_fp})
            out.notes.append("the version passed re-evaluation on the new base model: it stays active")
    out.decision = decide.decide(data_drift=any(t["drift"] for t in out.tests),
                                 perf_drift=bool(perf and perf.get("drift")), incompatible=incompatible, holds=holds)


def _act(registry: Registry, c: _Check) -> tuple[str | None, int | None]:
    """The policy's action: (status to flag the version with, version to roll the alias back to)."""
    out = c.out
    out.action, flag_status = decide.planned_action(out.decision, c.policy.action)
    if out.action != "flag":
        return flag_status, None
    out.action_detail["flagged"] = "incompatible" if out.decision == "incompatible" else "degraded"
    if c.policy.action != "rollback":
        return flag_status, None
    target = _rollback_target(registry, c)
    if target is None:
        out.notes.append(f"no previous holder of {c.info.name}@{c.alias} passes on the new data: not rolled back")
    else:
        out.action = "rollback"
        out.action_detail.update(rolled_back_to=target, rolled_back_from=c.info.version)
    return flag_status, target


def _rollback_target(registry: Registry, c: _Check) -> int | None:
    """The newest previous holder of the alias that passes on the fresh data."""
    from promptreg.services.lifecycle import alias_stack

    info, out = c.info, c.out
    events = [e for e in registry.history(info.name) if e.alias == c.alias]
    tried = []
    for v in dict.fromkeys(v for v in reversed(alias_stack(events)[:-1]) if v != info.version):
        cand = registry.show(f"{info.name}:{v}")
        if cand.base_model_fingerprint != c.deployed_fp:
            tried.append({"version": v, "passes": False, "why": "trained on another base model"})
            continue
        if cand.status != "active":
            tried.append({"version": v, "passes": False, "why": f"status {cand.status}"})
            continue
        if c.labelled:
            recorded, _source = recorded_metric(registry, cand, c.alias, c.policy.metric)
            perf = _measure(c.evaluator.load(cand), [c.rows[i] for i in c.labelled_idx], None, c.policy, recorded,
                            c.seed)
            ok = not perf["drift"] and (out.performance is None or perf["value"] >= out.performance["value"])
            tried.append({"version": v, "passes": ok, "performance": perf["explain"]})
        else:
            ok = True
            tried.append({"version": v, "passes": True, "why": "compatible and active (no labels to measure)"})
        if ok:
            out.action_detail["candidates"] = tried
            return v
    out.action_detail["candidates"] = tried
    return None


def _record(registry: Registry, c: _Check, flag_status: str | None, target: int | None, plot: dict[str, Any],
            schedule_run_id: int | None) -> None:
    """Upload the report, then commit the flag, the report and the rollback (if any) together."""
    out, info, data_uri = c.out, c.info, c.out.data_uri
    uri, sha = upload_report(registry, out, plot)

    def record(s: Session) -> None:
        """Flag + report + audit events, in the SAME transaction as the alias move (if any): a check
        killed at any point leaves either all of it or none of it."""
        if flag_status:
            status_rows(s, registry, info, flag_status, reason="drift: " + out.summary(),
                        details={"data_uri": data_uri})
        report_rows(s, registry, info, out, schedule_run_id, uri, sha)

    if target is not None:
        from promptreg.services.lifecycle import rollback

        moved = rollback(registry, info.name, c.alias, to=target, action="drift.rollback",
                         reason=f"drift on {data_uri}: " + out.summary(), details={"data_uri": data_uri},
                         in_transaction=record)
        out.warnings += moved.warnings
    else:
        with registry.session() as s:
            record(s)
    if flag_status:
        mirror_state_tags(registry, info.name, {info.version})


def scheduled_check(registry: Registry, schedule: Any, *, schedule_run_id: int | None = None) -> int:
    """What ``schedule run-due`` / ``scheduler`` run for one due schedule: returns the report id."""
    from promptreg.evaluation.suite import load_suite

    suite = load_suite(schedule.suite_path) if getattr(schedule, "suite_path", None) else None
    policy = dict(getattr(schedule, "policy", None) or {})
    since = None
    if is_captured(schedule.data_uri) and schedule_run_id is not None and hasattr(schedule, "schedule_id"):
        from promptreg.registry import queries as q

        with registry.session() as s:   # captured traffic since the last successful run's window ended
            since = q.last_window_end(s, schedule.schedule_id, schedule_run_id)
    out = check_drift(registry, schedule.ref, schedule.data_uri, suite=suite, env=policy.get("env"),
                      model=policy.get("model"), reference=policy.get("reference"), action=policy.get("action"),
                      schedule_run_id=schedule_run_id, since=since)
    return int(out.report_id)
