"""What a reviewer reads in the MLflow UI: the registered-model and model-version descriptions, built
from facts (plain dataclasses that ``promptreg.services.describe.collect`` reads from the database).

MLflow renders both as markdown. They are rewritten whenever what they show changes (after a push, an
alias move, an evaluation, a gate, a drift check or flag) and by ``promptreg sync``.

* Registered model (one per prompt): task, method(s), verbalizer (label -> answer), template, owner
  (the prompt's ``created_by``), versions, current aliases, base model(s), the prompt's description.
* Model version: title with ``name:version`` and its aliases; status; metrics table; base-model and
  dataset fingerprints; the Great Expectations validation summary (manifest ``validation``); the latest
  gate verdict against ``production`` with every gated metric (candidate, baseline, diff, CI, margin)
  and its failures — or "no gate run yet"; the latest evaluations; the last drift decision; the latest
  ``promptreg inspect`` summary (nearest tokens, with the waywardness caveat) when there is one; links to
  the source run, the eval runs and the drift run (``#/experiments/<id>/runs/<run>``, relative links
  that the MLflow UI resolves).

Invariants: pure functions of the facts; the gate block is rendered from the stored
:class:`GateReport` (never from its raw dict); :func:`wanted_tags` derives the version's gate/drift tags
through :func:`promptreg.reporting.mlflow.version_tags`, so ``sync`` repairs those too. MLflow keeps
descriptions in ``VARCHAR(5000)`` columns: texts are shortened to fit (:data:`MAX_DESCRIPTION`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptreg.evaluation.results import GateReport
from promptreg.reporting import markdown as md
from promptreg.reporting.inspection import inspection_markdown
from promptreg.reporting.markdown import cell, code, f3, num, signed, table
from promptreg.reporting.mlflow import version_tags
from promptreg.reporting.summaries import check_rate

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
    """A stored gate verdict: the report (its ``gate_id`` and ``baseline`` set from the database row) and
    when it was recorded, as shown."""

    report: GateReport
    created_at: str

    @property
    def id(self) -> int | None:
        return self.report.gate_id

    @property
    def against(self) -> str:
        return self.report.against

    @property
    def passed(self) -> bool:
        return self.report.passed

    @property
    def baseline(self) -> int | None:
        return self.report.baseline


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
    inspection: dict[str, Any] | None = None            # the latest `promptreg inspect` summary (audit details)


# ----------------------------------------------------------------------------------------- helpers


def _link(link: RunLink | None) -> str:
    return "" if link is None else md.link(link.label, link.href, link.run_id)


def _fit(render: Callable[[int], str], levels: int) -> str:
    return md.fit(render, levels, MAX_DESCRIPTION, TRUNCATED)


# ----------------------------------------------------------------------------------------- registered model


def model_markdown(f: ModelFacts) -> str:
    def render(level: int) -> str:
        first = (f.description or "").strip()
        lines = [first[: 1500 if level else 3000] or f"Soft prompt {f.name} ({f.task_type or 'unknown task'})", ""]
        rows: list[list[str]] = [["task", cell(f.task_type or "unknown", MAX_CELL)]]
        if f.methods:
            rows.append(["method" + ("s" if len(f.methods) > 1 else ""), ", ".join(
                f"{cell(m, MAX_CELL)} ({_span(v)})" for m, v in sorted(f.methods.items()))])
        if f.verbalizer:
            items = sorted(f.verbalizer.items())[: 20 if level else 100]
            rows.append(["verbalizer", "; ".join(
                f"{cell(label, 40)} → " + ", ".join(code(json.dumps(a), 40) for a in (answers or [])[:5])
                for label, answers in items) + (" …" if len(f.verbalizer) > len(items) else "")])
        if f.template:
            rows.append(["template", code(f.template, 200)])
        rows.append(["owner", cell(f.owner or "unknown", MAX_CELL)])
        rows.append(["versions", f"{f.versions}" + (f" (latest v{f.latest})" if f.latest is not None else "")])
        rows.append(["aliases", ", ".join(f"**{cell(a, MAX_CELL)}** → v{v}" for a, v in sorted(f.aliases.items()))
                     or "none"])
        if f.base_models:
            shown = f.base_models[: 3 if level else 10]
            rows.append(["base model" + ("s" if len(f.base_models) > 1 else ""), "; ".join(
                f"{cell(name or 'unnamed', 60)} {code(fp[:16], MAX_CELL)}" for fp, name in shown)
                + (" …" if len(f.base_models) > len(shown) else "")])
        if f.created_at:
            rows.append(["created", cell(f.created_at, MAX_CELL)])
        lines += table(["", ""], rows)
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
        head = [f"**status:** {f.status}", f"**method:** {cell(f.method, MAX_CELL)}"
                + (f" ({f.num_virtual_tokens} virtual tokens)" if f.num_virtual_tokens else "")]
        if f.task_type:
            head.append(f"**task:** {cell(f.task_type, MAX_CELL)}")
        if f.created_by or f.created_at:
            head.append(f"**created** {cell(f.created_at, MAX_CELL)} by {cell(f.created_by or 'unknown', MAX_CELL)}")
        lines += [" · ".join(head), ""]
        if f.description and level < 2:
            lines += [f.description.strip()[:800], ""]

        lines += ["**Metrics**", ""]
        if f.metrics:
            items = sorted(f.metrics.items())
            cap = (None, 40, 15, 8)[min(level, 3)]
            shown = items if cap is None else items[:cap]
            lines += table(["metric", "value"], [[cell(k, MAX_CELL), num(v)] for k, v in shown])
            if len(shown) < len(items):
                lines.append(f"*… {len(items) - len(shown)} more in the source run*")
        else:
            lines.append("no metrics recorded")

        lines += ["", "**Lineage**", ""]
        lines.append(f"- **base model:** {cell(f.base_model_name or 'unnamed', 200)} — fingerprint "
                     f"{code(f.base_model_fingerprint, MAX_CELL)}")
        ds = f.dataset or {}
        if ds.get("fingerprint"):
            extra = []
            if ds.get("rows") is not None:
                extra.append(f"{ds['rows']} rows")
            if ds.get("source"):
                extra.append(f"source {code(ds['source'], 200)}")
            lines.append(f"- **dataset:** {cell(ds.get('name') or 'unnamed', 120)} — fingerprint "
                         f"{code(ds['fingerprint'], MAX_CELL)}" + (f" ({', '.join(extra)})" if extra else ""))
        else:
            lines.append("- **dataset:** not recorded")
        lines.append(f"- **artifact sha256:** {code(f.sha256, MAX_CELL)}")

        lines += ["", "**Data validation (Great Expectations)**", ""]
        lines += _validation_lines(f.validation, level)

        lines += ["", f"**Gate vs {GATE_ALIAS}**", ""]
        lines += _gate_lines(f, level)

        lines += ["", "**Evaluations**", ""]
        lines += _eval_lines(f.evals, level)

        lines += ["", "**Drift**", ""]
        lines += _drift_lines(f.drift)
        if f.inspection:
            lines += ["", "**Inspection (nearest vocabulary tokens)**", ""]
            lines += inspection_markdown(f.inspection, level)

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
        parts.append("splits " + ", ".join(f"{cell(k, 20)} {s.get('rows', '?')} rows" for k, s in splits.items()))
    lines = [f"{verdict} — " + "; ".join(parts)]
    cap = (5, 3, 1, 0)[min(level, 3)]
    for label, items in (("failure", failures), ("warning", warnings)):
        for item in items[:cap]:
            lines.append(f"- {label}: {cell(item, 200)}")
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
            lines.append(f"- report, summary and comparison plot: {_link(f.source_run)}, artifacts "
                         f"`gate/{cell(g.report.suite_name, 60)}/{GATE_ALIAS}/`")
    og = f.other_gate
    if og is not None:
        verdict = "PASSED" if og.passed else "FAILED"
        vs = f"{f.name}:{og.baseline}" if og.baseline is not None else "no baseline"
        lines.append(f"- latest other gate: against `{cell(og.against, 40)}` ({vs}) **{verdict}**, "
                     f"gate #{og.id}, {cell(og.created_at, MAX_CELL)}")
    return lines


def _gate_block(name: str, g: GateFacts, level: int) -> list[str]:
    r = g.report
    verdict = "**PASSED**" if r.passed else "**FAILED**"
    vs = f"{name}:{r.baseline}" if r.baseline is not None else "no baseline (production was not set)"
    suite = f"suite `{cell(r.suite_name, 60)}` ({cell(r.suite_sha256[:12], MAX_CELL)})"
    lines = [f"{verdict} vs {vs} — {suite}, gate #{r.gate_id}, {cell(g.created_at, MAX_CELL)}", ""]
    if r.metrics:
        rows = [[cell(m.id, 60), f3(m.candidate), f3(m.baseline), signed(m.diff),
                 f"[{signed(m.ci_low)}, {signed(m.ci_high)}]" if m.ci_low is not None else md.MISSING,
                 num(m.margin), "pass" if m.passed else "**FAIL**"]
                for m in r.metrics[: (None, 20, 10, 5)[min(level, 3)]]]
        lines += table(["metric", "candidate", "baseline", "diff", "CI", "margin", "result"], rows)
    if r.checks and level < 3:
        rows = [[cell(c.name, 50), cell(c.type, 20), check_rate(c), f3(c.max_failure_rate),
                 "pass" if c.passed else "**FAIL**"] for c in r.checks[: (None, 10, 5)[min(level, 2)]]]
        lines += ["", *table(["check", "type", "failure rate", "max", "result"], rows)]
    lines.append("")
    for mc in r.mcnemar[:3]:
        lines.append(f"- McNemar exact ({cell(mc.dataset, 40)}): candidate-only correct {mc.b}, "
                     f"baseline-only correct {mc.c}, p = {num(mc.p_value)}")
    failures = r.failures()
    if failures:
        cap = (10, 5, 3, 2)[min(level, 3)]
        lines += ["", "Failures:", *(f"- {cell(x, 240)}" for x in failures[:cap])]
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
            parts.append(f"{cell(ds, 40)}: " + ", ".join(f"{k} {num(values[k], 3)}" for k in keys))
        failed = f"; checks failed: {', '.join(cell(c, 40) for c in e.checks_failed[:5])}" if e.checks_failed else ""
        link = f" — {_link(e.link)}" if e.link else ""
        lines.append(f"- suite `{cell(e.suite, 60)}` ({cell(e.suite_sha256[:12], MAX_CELL)}), {cell(e.created_at, MAX_CELL)}: "
                     + ("; ".join(parts) or "no golden sets") + failed + link)
    if len(evals) > MAX_EVALS:
        lines.append(f"- … {len(evals) - MAX_EVALS} older evaluation(s)")
    return lines


def _drift_lines(d: DriftFacts | None) -> list[str]:
    if d is None:
        return ["no drift check yet"]
    what = ", ".join(cell(x, 60) for x in d.drifted) or "nothing drifted"
    line = (f"last check {cell(d.created_at, MAX_CELL)}" + (f" (as `{cell(d.alias, 40)}`)" if d.alias else "")
            + f" on {code(d.data_uri, 160)}: decision **{cell(d.decision, MAX_CELL)}**, action **{cell(d.action, MAX_CELL)}** — {what}")
    lines = [line]
    p = d.performance or {}
    if p.get("metric") is not None and p.get("value") is not None:
        lines.append(f"- {cell(p['metric'], 40)} {num(p['value'], 3)}"
                     + (f" vs recorded {num(p['recorded'], 3)}" if p.get("recorded") is not None else "")
                     + (" (ESTIMATE)" if p.get("estimated") else ""))
    if d.link:
        lines.append(f"- {_link(d.link)}")
    return lines


# ----------------------------------------------------------------------------------------- wanted tags


def wanted_tags(f: VersionFacts) -> dict[str, str]:
    """Model-version tags derived from the same facts as the description (sync repairs them): the gate
    against production and the last drift decision."""
    return version_tags(gate=f.gate.report if f.gate is not None else None,
                        drift=f.drift.decision if f.drift is not None else None)
