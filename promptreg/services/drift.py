"""``promptreg drift``: re-evaluate a deployed version on fresh production data and act by policy.

Three kinds of drift are checked:

1. **Base-model drift**: the base model deployed in an environment (``promptreg env set-base-model``,
   or ``--model`` at check time) has another fingerprint than the version's. The version is flagged
   ``incompatible`` at once (its own transaction and audit event); then, when the dimensions allow it,
   the version is evaluated on the new base model, and only if it passes there (performance on the
   labelled fresh data within the policy's margin of what was recorded at promotion) is it restored
   to ``active``. Otherwise the policy acts.
2. **Data drift**: the fresh inputs against the version's reference data (``--reference``, else its
   training file recorded in the manifest if it still exists, else the suite's golden sets):
   input length in tokens (KS, or normed Wasserstein for references > 1000 rows), the version's
   prediction distribution and, when labelled, the label distribution (chi-square, PSI beside it),
   and the mean-pooled hidden states of the frozen base model (unbiased MMD² permutation test).
3. **Performance drift**: with labels, the policy's metric on the fresh data with a BCa bootstrap
   CI (scipy.stats.bootstrap, the gate's machinery) against the value recorded at promotion (the
   promotion gate's verdict, else the version's latest eval run, else its manifest metrics): drift
   when the CI's upper bound is below recorded − margin. Without labels, an ESTIMATE from the
   verbalizer confidence (mean top-label probability, KS test), and the report says so.

Actions (``report`` | ``flag`` | ``rollback``): ``flag`` marks the version ``degraded`` (visible in
``list``/``show`` and as the MLflow tag ``promptreg.status``); ``rollback`` also moves the alias to the
newest previous holder (from the audit log) that passes on the new data, through the same
compare-and-swap as ``promptreg rollback``. Every action is an audit event. The report (statistics,
decision, action), the flag and the alias move are written at the END, in ONE transaction with their
audit events: a check killed before that leaves nothing (its content-addressed report files may
remain as an orphan for ``gc``), so a scheduled slot retried after a crash starts from the same
state. Only the base-model ``incompatible`` flag is committed at once, by itself (a complete state).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError, PromptregError
from promptreg.refs import parse_ref
from promptreg.registry import queries as q
from promptreg.services.mirroring import mirror_state_tags
from promptreg.services.views import EnvironmentInfo

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

REFERENCE_CAP = 1000          # reference rows used at most (seeded sample)
REPORT_FILE = "drift_report.json"
PLOT_FILE = "drift_report.png"


@dataclass
class DriftOutcome:
    prompt: str
    alias: str | None
    version: int
    data_uri: str
    data_fingerprint: str
    rows: int
    labelled: bool
    reference: str
    reference_rows: int
    base_model_fingerprint: str          # the deployed base model the check ran with
    version_base_model_fingerprint: str
    tests: list[dict] = field(default_factory=list)          # DriftTest.to_dict() + "explain"
    performance: dict | None = None
    decision: str = "none"               # none | drift | incompatible
    action: str = "none"                 # none | report | flag | rollback
    action_detail: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report_id: int | None = None
    report_sha256: str | None = None
    mlflow_run_id: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return self.decision != "none"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift
        return out


# ----- inputs ------------------------------------------------------------------------------------

def read_data(uri: str, settings, *, text_column: str = "text", label_column: str = "label") -> list[dict]:
    """Rows ``{"text", ("label")}`` of a local data file or of every .jsonl/.json/.csv under an S3 prefix."""
    from promptreg.fingerprints.dataset import read_rows

    if uri.startswith("s3://"):
        raw = _read_s3_prefix(uri, settings)
    else:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise InputError(f"data file not found: {uri}")
        raw = read_rows(path)
    if not raw:
        raise InputError(f"{uri}: no rows")
    rows = []
    for i, r in enumerate(raw):
        text = r.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{uri}: row {i + 1} has no text in column {text_column!r} "
                             f"(columns: {', '.join(sorted(map(str, r))) or 'none'})")
        row = {"text": text}
        if r.get(label_column) not in (None, ""):
            row["label"] = str(r[label_column])
        rows.append(row)
    labelled = sum("label" in r for r in rows)
    if 0 < labelled < len(rows):
        raise InputError(f"{uri}: {labelled} of {len(rows)} rows have a {label_column!r}: label all rows or none")
    return rows


def _read_s3_prefix(uri: str, settings) -> list[dict]:
    from promptreg.fingerprints.dataset import read_rows
    from promptreg.registry.store import open_store

    store = open_store(uri, s3_endpoint_url=settings.s3_endpoint_url)
    keys = [k for k in store.list_keys(f"list {uri}") if k.rsplit(".", 1)[-1].lower() in ("jsonl", "json", "csv")]
    if not keys:
        raise InputError(f"{uri}: no .jsonl/.json/.csv objects under this prefix")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
        for i, key in enumerate(keys):
            local = Path(tmp) / f"{i}.{key.rsplit('.', 1)[-1].lower()}"
            rows += read_rows(store.download(key, local))
    return rows


def _fingerprint(rows: list[dict]) -> str:
    from promptreg.fingerprints.dataset import dataset_fingerprint

    return dataset_fingerprint(rows)


def _sample(rows: list, n: int, seed: int) -> list:
    return rows if len(rows) <= n else random.Random(seed).sample(rows, n)


def reference_rows(registry: Registry, info, *, reference: str | None, suite, text_column: str, label_column: str):
    """(rows, description) of the data the version is compared against."""
    if reference:
        return read_data(reference, registry.settings, text_column=text_column, label_column=label_column), reference
    source = ((registry.manifest(f"{info.name}:{info.version}").get("dataset") or {}).get("source"))
    if source and Path(source).is_file():
        return read_data(source, registry.settings), f"training data {source}"
    if suite is not None and suite.golden:
        rows = [{"text": ex.text, **({"label": ex.label} if ex.label is not None else {})}
                for g in suite.golden for ex in g.examples]
        return rows, f"golden sets of suite {suite.name}"
    raise InputError(f"no reference data for {info.name}:{info.version}: its training file is not available "
                     "here; pass --reference FILE or --suite FILE (golden sets)")


def resolve_policy(registry: Registry, alias: str | None, suite, action: str | None):
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


# ----- environments ------------------------------------------------------------------------------

def set_environment_model(registry: Registry, env: str, model: str) -> EnvironmentInfo:
    """Record the base model deployed in ``env`` (its fingerprint and path); an audit event."""
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
        return _environment_info(row, previous)


def _environment_info(row, previous: str | None = None) -> EnvironmentInfo:
    return EnvironmentInfo(environment=row.name, fingerprint=row.base_model_fingerprint, path=row.base_model_path,
                           updated_by=row.updated_by, updated_at=row.updated_at.isoformat(timespec="seconds"),
                           previous=previous)


def list_environments(registry: Registry) -> list[EnvironmentInfo]:
    """Every environment with a recorded base model, by name."""
    with registry.session() as s:
        return [_environment_info(r) for r in q.environments(s)]


def _environment_model(registry: Registry, env: str) -> str:
    with registry.session() as s:
        return q.get_environment(s, env).base_model_path


# ----- statistics --------------------------------------------------------------------------------

def _performance(loaded, rows: list[dict], labels: list[str], metric: str, recorded: float | None, margin: float,
                 confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0, probs=None) -> dict:
    """The metric on labelled fresh rows with a bootstrap CI, against the recorded value."""
    import numpy as np
    from scipy import stats

    from promptreg.evaluation.metrics import (
        classification_metrics,
        classification_outcomes,
        metric_columns,
        metric_statistic,
    )

    unknown = sorted({r["label"] for r in rows} - set(labels))
    if unknown:
        raise InputError(f"fresh data has labels {unknown} that {loaded.label} does not know ({labels})")
    if probs is None:
        probs = loaded.classify([r["text"] for r in rows])
    gold = [labels.index(r["label"]) for r in rows]
    outcomes = classification_outcomes(gold, probs, labels)
    value = classification_metrics(outcomes, labels)[metric]
    cols = metric_columns("classification", metric, outcomes, labels)
    stat = metric_statistic("classification", metric, labels)
    if len({tuple(c) for c in zip(*cols, strict=True)}) == 1 or len(rows) < 2:
        low = high = float(value)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(cols, lambda *c, axis=-1: stat(*c, axis=axis), paired=True, vectorized=True,
                                  method="BCa", confidence_level=confidence, n_resamples=n_resamples,
                                  random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            low = high = float(value)
    from promptreg.evaluation.results import metric_direction

    higher = metric_direction(metric) is not False
    out = {"metric": metric, "value": float(value), "ci_low": low, "ci_high": high, "confidence": confidence,
           "recorded": recorded, "margin": margin, "rows": len(rows), "estimated": False}
    if recorded is None:
        out.update(drift=False, explain=f"{metric} {value:.3f} [{low:.3f}, {high:.3f}] on fresh data; nothing "
                                        "recorded at promotion to compare with")
    elif higher:
        out["drift"] = high < recorded - margin
        out["explain"] = (f"{metric} {value:.3f}, {confidence:.0%} CI [{low:.3f}, {high:.3f}] vs recorded "
                          f"{recorded:.3f}: upper bound {'<' if out['drift'] else '>='} {recorded - margin:.3f} "
                          f"(recorded - margin {margin})" + (" -> drift" if out["drift"] else ""))
    else:
        out["drift"] = low > recorded + margin
        out["explain"] = (f"{metric} {value:.3f}, CI [{low:.3f}, {high:.3f}] vs recorded {recorded:.3f}: lower "
                          f"bound {'>' if out['drift'] else '<='} {recorded + margin:.3f}"
                          + (" -> drift" if out["drift"] else ""))
    return out


def recorded_metric(registry: Registry, info, alias: str | None, metric: str) -> tuple[float | None, str]:
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


# ----- the check ---------------------------------------------------------------------------------

def check_drift(registry: Registry, ref: str, data_uri: str, *, suite=None, env: str | None = None, model: str | None = None,
                reference: str | None = None, action: str | None = None, text_column: str = "text",
                label_column: str = "label", seed: int = 0, schedule_run_id: int | None = None,
                log_mlflow: bool = True) -> DriftOutcome:
    from promptreg.evaluation.drift_stats import (
        categorical_drift,
        confidence_drift,
        length_drift,
        mmd_permutation_test,
    )
    from promptreg.evaluation.embeddings import mean_pooled_hidden_states
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.services.evaluate import Evaluator

    t0 = time.perf_counter()
    parsed = parse_ref(ref)
    alias = parsed.alias
    info = registry.show(ref)
    policy = resolve_policy(registry, alias, suite, action)
    if policy.action == "rollback" and alias is None:
        raise InputError("a rollback policy needs NAME@ALIAS (which alias to move back)")
    rows = read_data(data_uri, registry.settings, text_column=text_column, label_column=label_column)
    labelled = "label" in rows[0]
    model_arg = _environment_model(registry, env) if env else model
    ev = Evaluator(registry, model=model_arg, log_mlflow=False)
    model_path = ev.model_path(info)
    deployed_fp = model_fingerprint(resolve_model_path(model_path)).fingerprint
    ref_rows, ref_desc = reference_rows(registry, info, reference=reference, suite=suite, text_column=text_column,
                                        label_column=label_column)
    ref_rows = _sample(ref_rows, REFERENCE_CAP, seed)
    out = DriftOutcome(info.name, alias, info.version, data_uri, _fingerprint(rows), len(rows), labelled, ref_desc,
                       len(ref_rows), deployed_fp, info.base_model_fingerprint, policy=policy.model_dump())

    incompatible = deployed_fp != info.base_model_fingerprint
    if incompatible:
        out.notes.append(f"base model drift: deployed {deployed_fp[:12]} != version's {info.base_model_fingerprint[:12]}")
        _set_status(registry, info, "incompatible", reason=f"deployed base model {deployed_fp[:12]} differs",
                    details={"deployed_fingerprint": deployed_fp})
    loaded = None
    try:
        loaded = ev.load(info, check_base=False)
    except PromptregError as exc:
        out.notes.append(f"{info.name}:{info.version} cannot run on the deployed base model: {exc}")
    base = ev.base(info)
    texts, ref_texts = [r["text"] for r in rows], [r["text"] for r in ref_rows]
    tok = base.tokenizer

    def lengths(ts):
        return [len(ids) for ids in tok(ts, add_special_tokens=False)["input_ids"]]

    ref_len, cur_len = lengths(ref_texts), lengths(texts)
    tests = [length_drift(ref_len, cur_len, alpha=policy.alpha, name="input length (tokens)")]
    if labelled and all("label" in r for r in ref_rows):
        tests.append(categorical_drift([r["label"] for r in ref_rows], [r["label"] for r in rows], alpha=policy.alpha,
                                       psi_threshold=policy.psi_threshold, name="labels"))
    probs = ref_probs = None
    if loaded is not None and loaded.task == "classification":
        probs, ref_probs = loaded.classify(texts), loaded.classify(ref_texts)
        tests.append(categorical_drift([loaded.labels[i] for i in ref_probs.argmax(-1)],
                                       [loaded.labels[i] for i in probs.argmax(-1)], alpha=policy.alpha,
                                       psi_threshold=policy.psi_threshold, name="predictions"))
    n = policy.embedding_sample
    emb_ref = mean_pooled_hidden_states(base.model, tok, _sample(ref_texts, n, seed + 1))
    emb_cur = mean_pooled_hidden_states(base.model, tok, _sample(texts, n, seed + 2))
    tests.append(mmd_permutation_test(emb_ref, emb_cur, n_permutations=policy.mmd_permutations, seed=seed,
                                      alpha=policy.alpha, name="embeddings (base-model hidden states)"))

    if loaded is not None and loaded.task == "classification":
        if labelled:
            recorded, source = recorded_metric(registry, info, alias, policy.metric)
            out.performance = _performance(loaded, rows, loaded.labels, policy.metric, recorded, policy.margin,
                                           seed=seed, probs=probs)
            out.performance["recorded_source"] = source
        else:
            conf = confidence_drift(ref_probs, probs, alpha=policy.alpha, name="confidence (no labels)")
            tests.append(conf)
            out.notes.append("no labels in the fresh data: performance is ESTIMATED from the verbalizer "
                             "confidence, not measured")
    out.tests = [{**t.to_dict(), "explain": t.explain()} for t in tests]

    data_drift = any(t.drift for t in tests)
    perf_drift = bool(out.performance and out.performance.get("drift"))
    stays = None
    if incompatible:
        stays = loaded is not None and labelled and not perf_drift and out.performance is not None \
            and out.performance.get("recorded") is not None
        out.action_detail["passes_on_new_base_model"] = bool(stays)
        if stays:
            _set_status(registry, info, "active", action="unflag",
                        reason=f"passed re-evaluation on base model {deployed_fp[:12]}",
                        details={"deployed_fingerprint": deployed_fp})
            out.notes.append("the version passed re-evaluation on the new base model: it stays active")
        out.decision = "incompatible" if not stays else ("drift" if data_drift else "none")
    else:
        out.decision = "drift" if (data_drift or perf_drift) else "none"

    flag_status = None
    target = None
    if out.decision == "none":
        out.action = "none"
    elif policy.action == "report":
        out.action = "report"
    else:
        flag_status = "degraded" if out.decision == "drift" else None   # "incompatible" is already set
        out.action = "flag"
        out.action_detail["flagged"] = "incompatible" if out.decision == "incompatible" else "degraded"
        if policy.action == "rollback":
            target = _rollback_target(registry, ev, info, alias, rows, labelled, policy, deployed_fp, seed, out)
            if target is None:
                out.notes.append(f"no previous holder of {info.name}@{alias} passes on the new data: not rolled back")
            else:
                out.action = "rollback"
                out.action_detail.update(rolled_back_to=target, rolled_back_from=info.version)
    out.seconds = time.perf_counter() - t0
    plot = {"ref_len": ref_len, "cur_len": cur_len, "probs": probs, "ref_probs": ref_probs,
            "labels": loaded.labels if loaded is not None else []}
    uri, sha = _upload_report(registry, out, plot)

    def record(s) -> None:
        """Flag + report + audit events, in the SAME transaction as the alias move (if any): a check
        killed at any point leaves either all of it or none of it."""
        if flag_status:
            _status_rows(s, registry, info, flag_status, reason="drift: " + _summary(out),
                         details={"data_uri": data_uri})
        _report_rows(s, registry, info, out, schedule_run_id, uri, sha)

    if target is not None:
        from promptreg.services.lifecycle import rollback

        moved = rollback(registry, info.name, alias, to=target, action="drift.rollback",
                         reason=f"drift on {data_uri}: " + _summary(out), details={"data_uri": data_uri},
                         in_transaction=record)
        out.warnings += moved.warnings
    else:
        with registry.session() as s:
            record(s)
    if flag_status:
        mirror_state_tags(registry, info.name, {info.version})
    if log_mlflow:
        _log_mlflow(registry, info, out)
    from promptreg.services.describe import refresh_descriptions

    # the MLflow description shows the status and the last drift decision (+ the drift run's link)
    out.warnings += refresh_descriptions(registry, info.name, {info.version}, model=False)
    return out


def _summary(out: DriftOutcome) -> str:
    parts = [t["name"] for t in out.tests if t["drift"]]
    if out.performance and out.performance.get("drift"):
        parts.append(f"{out.performance['metric']} below recorded")
    if out.decision == "incompatible":
        parts.append("base model changed")
    return ", ".join(parts) or "none"


def _set_status(registry: Registry, info, status: str, *, reason: str, details: dict, action: str = "flag") -> None:
    with registry.session() as s:
        _status_rows(s, registry, info, status, reason=reason, details=details, action=action)
    mirror_state_tags(registry, info.name, {info.version})
    from promptreg.services.describe import refresh_descriptions

    refresh_descriptions(registry, info.name, {info.version}, model=False)  # status; best effort


def _status_rows(s, registry, info, status: str, *, reason: str, details: dict, action: str = "flag") -> None:
    v = q.version_of(s, info.name, info.version)
    if v.status == status:
        return
    previous = q.set_version_status(s, v, status)
    q.add_event(s, actor=registry.settings.user, action=action, prompt_id=v.prompt_id, to_version=info.version,
                reason=reason[:1000], details={"status": status, "previous_status": previous, **details})


def _rollback_target(registry: Registry, ev, info, alias, rows, labelled, policy, deployed_fp, seed, out) -> int | None:
    """The newest previous holder of the alias that passes on the fresh data."""
    from promptreg.services.lifecycle import alias_stack

    events = [e for e in registry.history(info.name) if e.alias == alias]
    candidates = [v for v in reversed(alias_stack(events)[:-1]) if v != info.version]
    tried = []
    for v in dict.fromkeys(candidates):
        cand = registry.show(f"{info.name}:{v}")
        if cand.base_model_fingerprint != deployed_fp:
            tried.append({"version": v, "passes": False, "why": "trained on another base model"})
            continue
        if cand.status != "active":
            tried.append({"version": v, "passes": False, "why": f"status {cand.status}"})
            continue
        if labelled:
            loaded = ev.load(cand)
            recorded, source = recorded_metric(registry, cand, alias, policy.metric)
            perf = _performance(loaded, rows, loaded.labels, policy.metric, recorded, policy.margin, seed=seed)
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


def _report_figure(out: DriftOutcome, plot: dict):
    """Reference vs current: token lengths, predicted-label shares, top-label confidence."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    length_test = next(t for t in out.tests if t["name"].startswith("input length"))
    axes[0].hist([plot["ref_len"], plot["cur_len"]], bins=20, density=True, label=["reference", "current"])
    axes[0].set_xlabel("tokens")
    axes[0].set_title(length_test["explain"][:70], fontsize=8)
    axes[0].legend(fontsize=8)
    probs, ref_probs, labels = plot["probs"], plot["ref_probs"], plot["labels"]
    if probs is not None and labels:
        import numpy as np

        k = len(labels)
        ref_share = np.bincount(ref_probs.argmax(-1), minlength=k) / len(ref_probs)
        cur_share = np.bincount(probs.argmax(-1), minlength=k) / len(probs)
        x = np.arange(k)
        axes[1].bar(x - 0.2, ref_share, 0.4, label="reference")
        axes[1].bar(x + 0.2, cur_share, 0.4, label="current")
        axes[1].set_xticks(x, labels)
        axes[1].set_title("predicted label share", fontsize=9)
        axes[1].legend(fontsize=8)
        axes[2].hist([ref_probs.max(-1), probs.max(-1)], bins=20, range=(0, 1), density=True,
                     label=["reference", "current"])
        axes[2].set_title("top-label confidence", fontsize=9)
    else:
        axes[1].axis("off")
        axes[2].axis("off")
    fig.suptitle(f"{out.prompt}:{out.version} drift on {Path(out.data_uri).name}: {out.decision}", fontsize=10)
    fig.tight_layout()
    return fig


def _upload_report(registry: Registry, out: DriftOutcome, plot: dict) -> tuple[str, str]:
    """The report files (JSON + PNG), content-addressed in the artifact store; (uri, sha256)."""
    from promptreg.artifact.hashing import folder_sha256

    with tempfile.TemporaryDirectory(prefix="promptreg-drift-") as tmp:
        folder = Path(tmp) / "report"
        folder.mkdir()
        (folder / REPORT_FILE).write_text(json.dumps(out.to_dict(), sort_keys=True, indent=1, default=str),
                                          encoding="utf-8")
        try:
            _report_figure(out, plot).savefig(folder / PLOT_FILE, dpi=90)
        except Exception as exc:  # noqa: BLE001 - the plot is a convenience; the JSON is the report
            out.warnings.append(f"drift plot not drawn: {type(exc).__name__}: {exc}")
        sha = folder_sha256(folder)
        uri = registry.store.put_folder(folder, sha)
    out.report_sha256 = sha
    return uri, sha


def _report_rows(s, registry, info, out: DriftOutcome, schedule_run_id, uri: str, sha: str) -> None:
    user = registry.settings.user
    v = q.version_of(s, info.name, info.version)
    row = q.add_drift_report(s, prompt_id=v.prompt_id, version_id=v.id, alias=out.alias,
                             data_fingerprint=out.data_fingerprint, data_uri=out.data_uri[:4000],
                             base_model_fingerprint=out.base_model_fingerprint,
                             statistics={"tests": out.tests, "performance": out.performance},
                             decision=out.decision, action=out.action, action_detail=out.action_detail,
                             report_uri=uri, report_sha256=sha, schedule_run_id=schedule_run_id, created_by=user)
    q.add_event(s, actor=user, action="drift", prompt_id=v.prompt_id, alias=out.alias, to_version=info.version,
                reason=_summary(out) if out.drift else None,
                details={"drift_report_id": row.id, "decision": out.decision, "action": out.action,
                         "data_uri": out.data_uri, "data_fingerprint": out.data_fingerprint})
    out.report_id = int(row.id)


def _log_mlflow(registry: Registry, info, out: DriftOutcome) -> None:
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
                                   "rows": out.rows, "reference": out.reference, "policy": json.dumps(out.policy)})
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


def scheduled_check(registry: Registry, schedule, *, schedule_run_id: int | None = None) -> int:
    """What ``schedule run-due`` / ``scheduler`` run for one due schedule: returns the report id."""
    from promptreg.evaluation.suite import load_suite

    suite = load_suite(schedule.suite_path) if getattr(schedule, "suite_path", None) else None
    policy = dict(getattr(schedule, "policy", None) or {})
    out = check_drift(registry, schedule.ref, schedule.data_uri, suite=suite, env=policy.get("env"),
                      model=policy.get("model"), reference=policy.get("reference"), action=policy.get("action"),
                      schedule_run_id=schedule_run_id)
    return int(out.report_id)
