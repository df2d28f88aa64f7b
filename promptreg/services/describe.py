"""What a reviewer reads in the MLflow UI: the registered-model and model-version descriptions.

MLflow renders both as markdown. They are written from promptreg's database (the source of truth) and
rewritten whenever what they show changes: after a push (mirror), an alias move (promote, rollback —
both the new and the old holder), an evaluation, a gate, a drift check or flag, and by ``promptreg
sync``, which compares them with MLflow's and rewrites only those that differ (idempotent).

* Registered model (one per prompt): task, method(s), verbalizer (label -> answer), template, owner
  (the prompt's ``created_by``), versions, current aliases, base model(s), the prompt's description.
* Model version: title with ``name:version`` and its aliases; status; metrics table; base-model and
  dataset fingerprints; the Great Expectations validation summary (manifest ``validation``); the latest
  gate verdict against ``production`` with every gated metric (candidate, baseline, diff, CI, margin)
  and its failures — or "no gate run yet"; the latest evaluations; the last drift decision; links to
  the source run, the eval runs and the drift run (``#/experiments/<id>/runs/<run>``, relative links
  that the MLflow UI resolves).

Besides the texts, :func:`wanted_tags` gives the model-version tags derived from the same facts
(``promptreg.gate.production*``, ``promptreg.drift``), so ``sync`` repairs those too.

The builders (:func:`model_markdown`, :func:`version_markdown`) are pure functions of the facts
dataclasses; the collectors read the database; :func:`refresh_descriptions` writes to MLflow and never
raises a PromptregError (it returns warnings: MLflow is a mirror, ``sync`` repairs a miss).
MLflow keeps descriptions in ``VARCHAR(5000)`` columns: texts are shortened to fit
(:data:`MAX_DESCRIPTION`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptreg.errors import MirrorError, PromptregError
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

MAX_DESCRIPTION = 5000          # mlflow: registered_models/model_versions.description VARCHAR(5000)
MAX_CELL = 120                  # one table cell
GATE_ALIAS = "production"
MAX_EVALS = 5                   # latest evaluations listed per version
TRUNCATED = "\n\n*(shortened to fit MLflow's description limit: `promptreg show` has everything)*"


# ----------------------------------------------------------------------------------------- facts


@dataclass
class RunLink:
    label: str
    run_id: str
    experiment_id: str | None = None

    @property
    def href(self) -> str | None:
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}" if self.experiment_id else None


@dataclass
class ModelFacts:
    name: str
    description: str = ""
    task_type: str | None = None
    owner: str = ""
    created_at: str = ""
    methods: dict[str, list[int]] = field(default_factory=dict)       # method -> [first, last] version
    versions: int = 0
    latest: int | None = None
    verbalizer: dict[str, list[str]] | None = None
    template: str | None = None
    aliases: dict[str, int] = field(default_factory=dict)             # alias -> version number
    base_models: list[tuple[str, str | None]] = field(default_factory=list)   # (fingerprint, name)


@dataclass
class GateFacts:
    id: int
    against: str
    passed: bool
    baseline: int | None
    created_at: str
    report: dict[str, Any]


@dataclass
class EvalFacts:
    id: int
    suite: str
    suite_sha256: str
    metrics: dict[str, dict[str, float]]          # golden set -> metric -> value
    checks_failed: list[str]
    created_at: str
    link: RunLink | None = None


@dataclass
class DriftFacts:
    id: int
    decision: str
    action: str
    data_uri: str
    created_at: str
    drifted: list[str] = field(default_factory=list)   # names of the tests that found drift
    performance: dict[str, Any] | None = None
    alias: str | None = None
    link: RunLink | None = None


@dataclass
class VersionFacts:
    name: str
    version: int
    sha256: str
    method: str
    num_virtual_tokens: int = 0
    task_type: str | None = None
    status: str = "active"
    aliases: list[str] = field(default_factory=list)
    created_by: str = ""
    created_at: str = ""
    base_model_fingerprint: str = ""
    base_model_name: str | None = None
    dataset: dict[str, Any] | None = None               # manifest ``dataset``: fingerprint, name, source, rows
    metrics: dict[str, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None            # manifest ``validation``
    description: str = ""                               # the version's own text (push --description)
    gate: GateFacts | None = None                       # latest gate against production
    other_gate: GateFacts | None = None                 # latest gate against anything else, if newer
    evals: list[EvalFacts] = field(default_factory=list)
    drift: DriftFacts | None = None
    source_run: RunLink | None = None
    mlflow_model_version: str | None = None


# ----------------------------------------------------------------------------------------- markdown helpers


def _cell(value: Any, limit: int = MAX_CELL) -> str:
    text = " ".join(("" if value is None else str(value)).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _code(value: Any, limit: int = MAX_CELL) -> str:
    text = _cell(value, limit).replace("`", "'")
    return f"`{text}`" if text else "`none`"


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return _cell(x)
    if math.isnan(f):
        return "nan"
    return f"{f:.{digits}g}" if abs(f) >= 1e-3 or f == 0 else f"{f:.2e}"


def _f3(x: Any) -> str:
    return "–" if x is None else f"{float(x):.3f}"


def _signed(x: Any) -> str:
    return "–" if x is None else f"{float(x):+.3f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _link(link: RunLink | None) -> str:
    if link is None:
        return ""
    return f"[{link.label}]({link.href})" if link.href else f"{link.label} (run `{link.run_id}`)"


def _fit(render: Callable[[int], str], levels: int) -> str:
    """The most detailed rendering (level 0 = everything) that fits MAX_DESCRIPTION, else a cut one."""
    text = ""
    for level in range(levels):
        text = render(level)
        if len(text) <= MAX_DESCRIPTION:
            return text
    cut = text[: MAX_DESCRIPTION - len(TRUNCATED)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + TRUNCATED


# ----------------------------------------------------------------------------------------- registered model


def model_markdown(f: ModelFacts) -> str:
    def render(level: int) -> str:
        first = (f.description or "").strip()
        lines = [first[: 1500 if level else 3000] or f"Soft prompt {f.name} ({f.task_type or 'unknown task'})", ""]
        rows: list[list[str]] = [["task", _cell(f.task_type or "unknown")]]
        if f.methods:
            rows.append(["method" + ("s" if len(f.methods) > 1 else ""), ", ".join(
                f"{_cell(m)} ({_span(v)})" for m, v in sorted(f.methods.items()))])
        if f.verbalizer:
            items = sorted(f.verbalizer.items())[: 20 if level else 100]
            rows.append(["verbalizer", "; ".join(
                f"{_cell(label, 40)} → " + ", ".join(_code(json.dumps(a), 40) for a in (answers or [])[:5])
                for label, answers in items) + (" …" if len(f.verbalizer) > len(items) else "")])
        if f.template:
            rows.append(["template", _code(f.template, 200)])
        rows.append(["owner", _cell(f.owner or "unknown")])
        rows.append(["versions", f"{f.versions}" + (f" (latest v{f.latest})" if f.latest is not None else "")])
        rows.append(["aliases", ", ".join(f"**{_cell(a)}** → v{v}" for a, v in sorted(f.aliases.items()))
                     or "none"])
        if f.base_models:
            shown = f.base_models[: 3 if level else 10]
            rows.append(["base model" + ("s" if len(f.base_models) > 1 else ""), "; ".join(
                f"{_cell(name or 'unnamed', 60)} {_code(fp[:16])}" for fp, name in shown)
                + (" …" if len(f.base_models) > len(shown) else "")])
        if f.created_at:
            rows.append(["created", _cell(f.created_at)])
        lines += _table(["", ""], rows)
        lines += ["", "*Mirrored by promptreg (its database is the source of truth; `promptreg sync` rewrites "
                      "this text). Tags: `promptreg.*`, see docs/mlflow-ui.md.*"]
        return "\n".join(lines)

    return _fit(render, 3)


def _span(v: list[int]) -> str:
    return f"v{v[0]}" if v[0] == v[-1] else f"v{v[0]}–v{v[-1]}"


# ----------------------------------------------------------------------------------------- model version


def version_markdown(f: VersionFacts) -> str:
    def render(level: int) -> str:
        lines = [summary_line(f), ""]
        head = [f"**status:** {f.status}", f"**method:** {_cell(f.method)}"
                + (f" ({f.num_virtual_tokens} virtual tokens)" if f.num_virtual_tokens else "")]
        if f.task_type:
            head.append(f"**task:** {_cell(f.task_type)}")
        if f.created_by or f.created_at:
            head.append(f"**created** {_cell(f.created_at)} by {_cell(f.created_by or 'unknown')}")
        lines += [" · ".join(head), ""]
        if f.description and level < 2:
            lines += [f.description.strip()[:800], ""]

        lines += ["**Metrics**", ""]
        if f.metrics:
            items = sorted(f.metrics.items())
            cap = (None, 40, 15, 8)[min(level, 3)]
            shown = items if cap is None else items[:cap]
            lines += _table(["metric", "value"], [[_cell(k), _num(v)] for k, v in shown])
            if len(shown) < len(items):
                lines.append(f"*… {len(items) - len(shown)} more in the source run*")
        else:
            lines.append("no metrics recorded")

        lines += ["", "**Lineage**", ""]
        lines.append(f"- **base model:** {_cell(f.base_model_name or 'unnamed', 200)} — fingerprint "
                     f"{_code(f.base_model_fingerprint)}")
        ds = f.dataset or {}
        if ds.get("fingerprint"):
            extra = []
            if ds.get("rows") is not None:
                extra.append(f"{ds['rows']} rows")
            if ds.get("source"):
                extra.append(f"source {_code(ds['source'], 200)}")
            lines.append(f"- **dataset:** {_cell(ds.get('name') or 'unnamed', 120)} — fingerprint "
                         f"{_code(ds['fingerprint'])}" + (f" ({', '.join(extra)})" if extra else ""))
        else:
            lines.append("- **dataset:** not recorded")
        lines.append(f"- **artifact sha256:** {_code(f.sha256)}")

        lines += ["", "**Data validation (Great Expectations)**", ""]
        lines += _validation_lines(f.validation, level)

        lines += ["", f"**Gate vs {GATE_ALIAS}**", ""]
        lines += _gate_lines(f, level)

        lines += ["", "**Evaluations**", ""]
        lines += _eval_lines(f.evals, level)

        lines += ["", "**Drift**", ""]
        lines += _drift_lines(f.drift)

        links = [_link(f.source_run)] + [_link(e.link) for e in f.evals[:MAX_EVALS] if e.link]
        if f.drift and f.drift.link:
            links.append(_link(f.drift.link))
        links = list(dict.fromkeys(x for x in links if x))
        lines += ["", "**Links**", ""]
        lines += [f"- {x}" for x in links] if links else ["- no MLflow run yet (`promptreg sync`)"]
        return "\n".join(lines)

    return _fit(render, 4)


def summary_line(f: VersionFacts) -> str:
    """The first line: plain text, because MLflow's version list shows it unrendered."""
    parts = [f"{f.name}:{f.version}", "aliases: " + (", ".join(f.aliases) or "none"), f"status: {f.status}"]
    if f.gate is not None:
        parts.append(f"gate vs {GATE_ALIAS}: {'passed' if f.gate.passed else 'FAILED'}")
    else:
        parts.append(f"gate vs {GATE_ALIAS}: none")
    if f.drift is not None:
        parts.append(f"drift: {f.drift.decision}")
    return " · ".join(parts)


def _validation_lines(v: dict[str, Any] | None, level: int) -> list[str]:
    if not v:
        return ["not recorded (the artifact was not trained by `promptreg train`)"]
    failures, warnings = list(v.get("failures") or []), list(v.get("warnings") or [])
    stats = v.get("stats") or {}
    success = v.get("success")
    verdict = "**PASSED**" if success else ("**FAILED**" if success is not None else "**unknown**")
    evaluated, failed = _expectation_counts(v)
    parts = []
    if evaluated is not None:
        parts.append(f"{evaluated} expectations evaluated, {failed or 0} failed")
    parts.append(f"{len(failures)} critical failure(s)")
    parts.append(f"{len(warnings)} warning(s)")
    splits = stats.get("splits") or {}
    if splits:
        parts.append("splits " + ", ".join(f"{_cell(k, 20)} {s.get('rows', '?')} rows" for k, s in splits.items()))
    lines = [f"{verdict} — " + "; ".join(parts)]
    cap = (5, 3, 1, 0)[min(level, 3)]
    for label, items in (("failure", failures), ("warning", warnings)):
        for item in items[:cap]:
            lines.append(f"- {label}: {_cell(item, 200)}")
        if len(items) > cap and cap:
            lines.append(f"- … {len(items) - cap} more {label}(s): `validation/summary.txt` in the training run")
    return lines


def _expectation_counts(v: dict[str, Any]) -> tuple[int | None, int | None]:
    """(evaluated, failed) expectations: from ``stats.expectations`` if present, else from per-split GX
    statistics when the manifest kept them; (None, None) when neither is there."""
    stats = v.get("stats") or {}
    exp = stats.get("expectations")
    if isinstance(exp, dict) and "evaluated" in exp:
        return int(exp.get("evaluated") or 0), int(exp.get("failed") or 0)
    gx = v.get("gx") or {}
    evaluated = failed = 0
    found = False
    for res in gx.values() if isinstance(gx, dict) else []:
        st = (res or {}).get("statistics") or {}
        if "evaluated_expectations" in st:
            found = True
            evaluated += int(st.get("evaluated_expectations") or 0)
            failed += int(st.get("unsuccessful_expectations") or 0)
    return (evaluated, failed) if found else (None, None)


def _gate_lines(f: VersionFacts, level: int) -> list[str]:
    lines: list[str] = []
    g = f.gate
    if g is None:
        lines.append("no gate run yet against production")
    else:
        lines += _gate_block(f.name, g, level)
        if f.source_run is not None:
            suite = _cell((g.report or {}).get("suite_name"), 60)
            lines.append(f"- report, summary and comparison plot: {_link(f.source_run)}, artifacts "
                         f"`gate/{suite}/{GATE_ALIAS}/`")
    og = f.other_gate
    if og is not None:
        verdict = "PASSED" if og.passed else "FAILED"
        vs = f"{f.name}:{og.baseline}" if og.baseline is not None else "no baseline"
        lines.append(f"- latest other gate: against `{_cell(og.against, 40)}` ({vs}) **{verdict}**, "
                     f"gate #{og.id}, {_cell(og.created_at)}")
    return lines


def _gate_block(name: str, g: GateFacts, level: int) -> list[str]:
    r = g.report or {}
    verdict = "**PASSED**" if g.passed else "**FAILED**"
    vs = f"{name}:{g.baseline}" if g.baseline is not None else "no baseline (production was not set)"
    suite = f"suite `{_cell(r.get('suite_name'), 60)}` ({_cell((r.get('suite_sha256') or '')[:12])})"
    lines = [f"{verdict} vs {vs} — {suite}, gate #{g.id}, {_cell(g.created_at)}", ""]
    metrics = r.get("metrics") or []
    if metrics:
        rows = []
        for m in metrics[: (None, 20, 10, 5)[min(level, 3)]]:
            ci = (f"[{_signed(m.get('ci_low'))}, {_signed(m.get('ci_high'))}]"
                  if m.get("ci_low") is not None else "–")
            rows.append([_cell(m.get("id") or f"{m.get('dataset')}/{m.get('metric')}", 60), _f3(m.get("candidate")),
                         _f3(m.get("baseline")), _signed(m.get("diff")), ci,
                         "–" if m.get("margin") is None else _num(m.get("margin")),
                         "pass" if m.get("passed", True) else "**FAIL**"])
        lines += _table(["metric", "candidate", "baseline", "diff", "CI", "margin", "result"], rows)
    checks = r.get("checks") or []
    if checks and level < 3:
        lines.append("")
        rows = []
        for c in checks[: (None, 10, 5)[min(level, 2)]]:
            cases = int(c.get("cases") or 0)
            rate = (c.get("failures") or 0) / cases if cases else 0.0
            passed = c.get("passed", cases > 0 and rate <= float(c.get("max_failure_rate") or 0))
            rows.append([_cell(c.get("name"), 50), _cell(c.get("type"), 20),
                         f"{rate:.3f} ({c.get('failures', 0)}/{cases})", _f3(c.get("max_failure_rate")),
                         "pass" if passed else "**FAIL**"])
        lines += _table(["check", "type", "failure rate", "max", "result"], rows)
    lines.append("")
    for mc in (r.get("mcnemar") or [])[:3]:
        lines.append(f"- McNemar exact ({_cell(mc.get('dataset'), 40)}): candidate-only correct {mc.get('b')}, "
                     f"baseline-only correct {mc.get('c')}, p = {_num(mc.get('p_value'))}")
    failures = list(r.get("failures") or [])
    if failures:
        cap = (10, 5, 3, 2)[min(level, 3)]
        lines.append("")
        lines.append("Failures:")
        lines += [f"- {_cell(x, 240)}" for x in failures[:cap]]
        if len(failures) > cap:
            lines.append(f"- … {len(failures) - cap} more")
    return lines


def _eval_lines(evals: list[EvalFacts], level: int) -> list[str]:
    if not evals:
        return ["no evaluation yet (`promptreg eval`)"]
    lines = []
    for e in evals[: (MAX_EVALS, 3, 2, 1)[min(level, 3)]]:
        parts = []
        for ds, values in sorted(e.metrics.items()):
            keys = [k for k in ("accuracy", "macro_f1", "ece", "exact_match", "token_f1", "rouge_l") if k in values]
            keys = keys or sorted(values)[:3]
            parts.append(f"{_cell(ds, 40)}: " + ", ".join(f"{k} {_num(values[k], 3)}" for k in keys))
        failed = f"; checks failed: {', '.join(_cell(c, 40) for c in e.checks_failed[:5])}" if e.checks_failed else ""
        link = f" — {_link(e.link)}" if e.link else ""
        lines.append(f"- suite `{_cell(e.suite, 60)}` ({_cell(e.suite_sha256[:12])}), {_cell(e.created_at)}: "
                     + ("; ".join(parts) or "no golden sets") + failed + link)
    if len(evals) > MAX_EVALS:
        lines.append(f"- … {len(evals) - MAX_EVALS} older evaluation(s)")
    return lines


def _drift_lines(d: DriftFacts | None) -> list[str]:
    if d is None:
        return ["no drift check yet"]
    what = ", ".join(_cell(x, 60) for x in d.drifted) or "nothing drifted"
    line = (f"last check {_cell(d.created_at)}" + (f" (as `{_cell(d.alias, 40)}`)" if d.alias else "")
            + f" on {_code(d.data_uri, 160)}: decision **{_cell(d.decision)}**, action **{_cell(d.action)}** — {what}")
    lines = [line]
    p = d.performance or {}
    if p.get("metric") is not None and p.get("value") is not None:
        lines.append(f"- {_cell(p['metric'], 40)} {_num(p['value'], 3)}"
                     + (f" vs recorded {_num(p['recorded'], 3)}" if p.get("recorded") is not None else "")
                     + (" (ESTIMATE)" if p.get("estimated") else ""))
    if d.link:
        lines.append(f"- {_link(d.link)}")
    return lines


# ----------------------------------------------------------------------------------------- wanted tags


def wanted_tags(f: VersionFacts) -> dict[str, str]:
    """Model-version tags derived from the same facts as the description (sync repairs them)."""
    tags: dict[str, str] = {}
    if f.gate is not None:
        tags[f"promptreg.gate.{GATE_ALIAS}"] = "passed" if f.gate.passed else "failed"
        tags[f"promptreg.gate.{GATE_ALIAS}.baseline"] = str(f.gate.baseline if f.gate.baseline is not None else "none")
        tags[f"promptreg.gate.{GATE_ALIAS}.id"] = str(f.gate.id)
    if f.drift is not None:
        tags["promptreg.drift"] = f.drift.decision
    return tags


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
            facts = GateFacts(int(g.id), g.against, bool(g.passed), numbers_by_id.get(g.baseline_version_id),
                              _iso(g.created_at), dict(g.report or {}))
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
                drift=drifts.get(v.id),
                source_run=RunLink("source run", v.mlflow_run_id) if v.mlflow_run_id else None,
                mlflow_model_version=v.mlflow_model_version))
    if experiment_of is not None:
        for f in versions:
            for link in [f.source_run, f.drift.link if f.drift else None] + [e.link for e in f.evals]:
                if link is not None and link.experiment_id is None:
                    link.experiment_id = experiment_of(link.run_id)
    return model, versions


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


__all__ = [
    "MAX_DESCRIPTION",
    "DriftFacts",
    "EvalFacts",
    "GateFacts",
    "ModelFacts",
    "RunLink",
    "VersionFacts",
    "collect",
    "model_markdown",
    "refresh_descriptions",
    "summary_line",
    "sync_descriptions",
    "version_markdown",
    "wanted_tags",
]
