"""``promptreg eval`` and ``promptreg gate``: evaluate versions on a regression suite, compare a
candidate with the version it would replace, store and cache the results, log them to MLflow.

Caching (both keyed by content, never by name):
- an evaluation is reused when an eval_run exists for (version, suite sha256, base-model
  fingerprint); its per-example outcomes live in the artifact store as a content-addressed JSON
  document, verified by sha256 when read back;
- a gate is reused when a gate_result exists for (candidate sha256, baseline sha256 — "" when there is
  no baseline —, suite sha256, base-model fingerprint). A cached gate does not even load the model:
  the base-model fingerprint comes from the fingerprint cache.

Which base model: ``model=`` (``--model``) > settings ``base_model`` (``PROMPTREG_BASE_MODEL``) >
the folder recorded in the candidate's manifest when it still exists. Every version evaluated must
have been trained on exactly that model (fingerprint), or the evaluation refuses to run.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import AliasNotFoundError, InputError, PromptregError
from promptreg.evaluation.results import CheckOutcome, DatasetEval, EvalResult, GateReport
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

OUTCOMES_FILE = "outcomes.json"
NO_BASELINE = ("none", "nothing", "-")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Evaluator:
    """Evaluates versions of one registry with one base model (loaded once, on first need)."""

    def __init__(self, registry: Registry, *, model: str | Path | None = None, device: str = "auto", use_cache: bool = True,
                 max_new_tokens: int = 64, batch_size: int = 32, log_mlflow: bool = True):
        self.registry = registry
        self.model_arg = str(model) if model else registry.settings.base_model
        self.device = device
        self.use_cache = use_cache
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.log_mlflow = log_mlflow
        self.warnings: list[str] = []
        self._model_path: Path | None = None
        self._fingerprint: str | None = None
        self._base = None

    # ----- base model ---------------------------------------------------------------------------
    def model_path(self, hint=None) -> Path:
        """The base-model folder; ``hint``: a VersionInfo whose manifest may name it."""
        if self._model_path is None:
            from promptreg.runtime.loader import resolve_model_path

            if self.model_arg:
                self._model_path = resolve_model_path(self.model_arg)
            else:
                recorded = self.registry.manifest(f"{hint.name}:{hint.version}").get("base_model", {}).get(
                    "name_or_path") if hint is not None else None
                if not recorded or not Path(recorded).is_dir():
                    raise InputError("no base model to evaluate with: pass --model PATH (or 'smollm2') "
                                     "or set PROMPTREG_BASE_MODEL")
                self._model_path = Path(recorded)
        return self._model_path

    def fingerprint(self, hint=None) -> str:
        if self._fingerprint is None:
            from promptreg.fingerprints.model import model_fingerprint

            self._fingerprint = model_fingerprint(self.model_path(hint)).fingerprint
        return self._fingerprint

    def base(self, hint=None):
        if self._base is None:
            from promptreg.runtime.loader import load_base_model

            self._base = load_base_model(self.model_path(hint), device=self.device)
            self._fingerprint = self._base.fingerprint
        return self._base

    def load(self, info, *, check_base: bool = True):
        """A verified version applied to the base model (refused on a fingerprint mismatch unless
        ``check_base=False``: drift re-evaluation on a new base model)."""
        from promptreg.artifact.manifest import MANIFEST_FILE
        from promptreg.runtime.loader import check_compatible, load_soft_prompt

        label = f"{info.name}:{info.version}"
        if check_base:
            check_compatible({"base_model": {"fingerprint": info.base_model_fingerprint}},
                             _FingerprintOnly(self.model_path(info), self.fingerprint(info)), label)
        info, folder = self.registry.fetch_verified(label)
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return load_soft_prompt(folder, manifest, self.base(info), label=label, sha256=info.sha256,
                                check_base=check_base)

    # ----- database -----------------------------------------------------------------------------
    def _ids(self, info) -> tuple[int, int]:
        """(prompt id, version id) of a version."""
        with self.registry.session() as s:
            v = q.version_of(s, info.name, info.version)
            return int(v.prompt_id), int(v.id)

    def _cached_eval(self, info, suite, fingerprint: str) -> EvalResult | None:
        _, version_id = self._ids(info)
        with self.registry.session() as s:
            row = q.latest_eval_run(s, version_id, suite.sha256, fingerprint)
            if row is None:
                return None
            row = dict(id=row.id, metrics=dict(row.metrics), checks=list(row.checks), uri=row.outcomes_uri,
                       sha=row.outcomes_sha256, fps=dict(row.dataset_fingerprints), seconds=row.seconds)
        with tempfile.TemporaryDirectory(prefix="promptreg-eval-") as tmp:
            folder = self.registry.store.fetch(row["uri"], Path(tmp) / "o", row["sha"])
            doc = json.loads((folder / OUTCOMES_FILE).read_text(encoding="utf-8"))
        datasets = [DatasetEval(name, row["fps"][name], len(doc["outcomes"].get(name, [])), m)
                    for name, m in row["metrics"].items()]
        checks = [CheckOutcome(**{k: v for k, v in c.items() if k not in ("passed", "failure_rate")})
                  for c in row["checks"]]
        return EvalResult(info.name, info.version, info.sha256, doc["task"], suite.name, suite.sha256, fingerprint,
                          datasets, checks, doc["outcomes"], row["seconds"], row["id"], cached=True)

    def _save_eval(self, info, result: EvalResult) -> int:
        from promptreg.artifact.hashing import folder_sha256

        prompt_id, version_id = self._ids(info)
        doc = {"format": 1, "prompt": info.name, "version": info.version, "sha256": info.sha256,
               "task": result.task, "suite_sha256": result.suite_sha256,
               "base_model_fingerprint": result.base_model_fingerprint, "outcomes": result.outcomes}
        with tempfile.TemporaryDirectory(prefix="promptreg-eval-") as tmp:
            folder = Path(tmp) / "outcomes"
            folder.mkdir()
            (folder / OUTCOMES_FILE).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")),
                                                encoding="utf-8")
            sha = folder_sha256(folder)
            uri = self.registry.store.put_folder(folder, sha)
        user = self.registry.settings.user
        with self.registry.session() as s:
            row = q.add_eval_run(s, version_id=version_id, suite_name=result.suite_name,
                                 suite_sha256=result.suite_sha256, base_model_fingerprint=result.base_model_fingerprint,
                                 dataset_fingerprints={d.name: d.fingerprint for d in result.datasets},
                                 metrics={d.name: d.metrics for d in result.datasets},
                                 checks=[c.to_dict() for c in result.checks], outcomes_uri=uri, outcomes_sha256=sha,
                                 mlflow_run_id=info.mlflow_run_id, seconds=result.seconds, created_by=user)
            q.add_event(s, actor=user, action="eval", prompt_id=prompt_id,
                        to_version=info.version, details={
                                 "eval_run_id": row.id, "suite": result.suite_name,
                                 "suite_sha256": result.suite_sha256,
                                 "base_model_fingerprint": result.base_model_fingerprint,
                                 "metrics": {d.name: d.metrics for d in result.datasets},
                                 "checks_failed": [c.name for c in result.checks if not c.passed]})
            return int(row.id)

    # ----- evaluate -----------------------------------------------------------------------------
    def evaluate_version(self, info, suite) -> EvalResult:
        from promptreg.evaluation.evaluators import run_suite

        fingerprint = self.fingerprint(info)
        if self.use_cache:
            cached = self._cached_eval(info, suite, fingerprint)
            if cached is not None:
                return cached
        loaded = self.load(info)
        if suite.task != loaded.task:
            raise InputError(f"suite {suite.name!r} is for {suite.task}, {info.name}:{info.version} is a "
                             f"{loaded.task} prompt")
        t0 = time.perf_counter()
        datasets, outcomes, checks = run_suite(loaded, suite, task=loaded.task, labels=loaded.labels,
                                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        result = EvalResult(info.name, info.version, info.sha256, loaded.task, suite.name, suite.sha256,
                            fingerprint, datasets, checks, outcomes, time.perf_counter() - t0)
        result.eval_run_id = self._save_eval(info, result)
        return result

    def evaluate(self, ref: str, suite, *, against: str | None = "production") -> tuple[EvalResult, EvalResult | None]:
        """Evaluate ``ref``; also the ``against`` version (for the comparison plot) when it exists."""
        info = self.registry.show(ref)
        result = self.evaluate_version(info, suite)
        baseline_info = self.resolve_baseline(info, against)
        baseline = None
        if baseline_info is not None and baseline_info.version != info.version:
            try:
                baseline = self.evaluate_version(baseline_info, suite)
            except PromptregError as exc:
                self.warnings.append(f"{info.name}:{baseline_info.version} ({against}) not evaluated for the "
                                     f"comparison: {exc}")
        if self.log_mlflow and not result.cached:
            self._log_eval(info, result, baseline)
            self._describe(info)
        return result, baseline

    @staticmethod
    def baseline_ref(info, against: str | None):
        """``against`` parsed by the one ref grammar (``V``, ``ALIAS``, ``NAME:V``, ``NAME@ALIAS``) for
        ``info``'s prompt; None for 'none'."""
        from promptreg.refs import parse_version_ref

        if against is None or against.lower() in NO_BASELINE:
            return None
        return parse_version_ref(against, info.name, what="--against")

    def resolve_baseline(self, info, against: str | None):
        ref = self.baseline_ref(info, against)
        if ref is None:
            return None
        try:
            return self.registry.show(ref)
        except AliasNotFoundError:
            return None  # the alias is not set yet: nothing to compare with (a missing version raises)

    # ----- gate ---------------------------------------------------------------------------------
    def _cached_gate(self, cand, baseline, suite, fingerprint: str) -> GateReport | None:
        with self.registry.session() as s:
            row = q.latest_gate(s, cand.sha256, baseline.sha256 if baseline else "", suite.sha256, fingerprint)
            if row is None:
                return None
            report = GateReport.from_dict(dict(row.report))
            report.gate_id, report.cached = int(row.id), True
        # the same content may be registered under other numbers: report the numbers asked about
        report.prompt, report.candidate = cand.name, cand.version
        report.baseline = baseline.version if baseline else None
        return report

    def gate(self, ref: str, suite, *, against: str = "production") -> GateReport:
        from promptreg.evaluation.gate import compare

        cand = self.registry.show(ref)
        bref = self.baseline_ref(cand, against)
        # the report, its cache key and its MLflow tags name the baseline as the alias or the number
        against = "none" if bref is None else bref.alias or str(bref.version)
        baseline = self.resolve_baseline(cand, against)
        fingerprint = self.fingerprint(cand)
        if self.use_cache:
            cached = self._cached_gate(cand, baseline, suite, fingerprint)
            if cached is not None:
                return cached
        t0 = time.perf_counter()
        cand_eval = self.evaluate_version(cand, suite)
        base_eval = self.evaluate_version(baseline, suite) if baseline is not None else None
        labels = None
        if cand_eval.task == "classification":
            labels = self.base_labels(cand)
            if baseline is not None and self.base_labels(baseline) != labels:
                raise InputError(f"{cand.name}:{baseline.version} has labels {self.base_labels(baseline)}, "
                                 f"{cand.name}:{cand.version} has {labels}: they cannot be compared")
        gate_opts = suite.gate
        report = compare(cand_eval, base_eval, suite.thresholds(), against=against, confidence=gate_opts.confidence,
                         n_resamples=gate_opts.resamples, seed=gate_opts.seed, labels=labels)
        if baseline is None:
            report.notes.append(f"{cand.name}@{against} is not set: only absolute floors and behavioural checks apply"
                                if bref is not None and bref.alias else "no baseline")
        elif baseline.version == cand.version:
            report.notes.append(f"{cand.name}:{cand.version} already is {against}: compared with itself")
        report.candidate_eval_id = cand_eval.eval_run_id
        report.baseline_eval_id = base_eval.eval_run_id if base_eval else None
        report.created_at = _now()
        report.seconds = time.perf_counter() - t0
        report.gate_id = self._save_gate(cand, baseline, report)
        if self.log_mlflow:
            self._log_gate(cand, cand_eval, base_eval, report)
            self._describe(cand)
        return report

    def record_gate(self, cand, baseline, cand_eval: EvalResult, base_eval: EvalResult | None,
                    report: GateReport) -> GateReport:
        """Store and log a gate report computed outside :meth:`gate` (``migrate``: the baseline evaluated
        on its own base model by another Evaluator), exactly as :meth:`gate` stores its own."""
        report.candidate_eval_id = cand_eval.eval_run_id
        report.baseline_eval_id = base_eval.eval_run_id if base_eval else None
        report.created_at = _now()
        report.gate_id = self._save_gate(cand, baseline, report)
        if self.log_mlflow:
            self._log_gate(cand, cand_eval, base_eval, report)
            self._describe(cand)
        return report

    def base_labels(self, info) -> list[str]:
        verbalizer = ((self.registry.manifest(f"{info.name}:{info.version}").get("task") or {}).get("verbalizer")
                      or {})
        return list(verbalizer)

    def _save_gate(self, cand, baseline, report: GateReport) -> int:
        prompt_id, cand_id = self._ids(cand)
        base_id = self._ids(baseline)[1] if baseline is not None else None
        user = self.registry.settings.user
        with self.registry.session() as s:
            row = q.add_gate_result(
                s, prompt_id=prompt_id, candidate_version_id=cand_id, baseline_version_id=base_id,
                candidate_sha256=cand.sha256, baseline_sha256=baseline.sha256 if baseline else "",
                suite_sha256=report.suite_sha256, base_model_fingerprint=report.base_model_fingerprint,
                against=report.against[:64], passed=report.passed,
                report={k: v for k, v in report.to_dict().items() if k != "warnings"}, created_by=user)
            q.add_event(s, actor=user, action="gate", prompt_id=prompt_id,
                        from_version=baseline.version if baseline else None, to_version=cand.version,
                        details={"gate_id": row.id, "passed": report.passed, "against": report.against,
                                 "suite": report.suite_name, "suite_sha256": report.suite_sha256,
                                 "failures": report.failures()})
            return int(row.id)

    # ----- MLflow (best effort: the database holds the results) ---------------------------------
    def _mlflow(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except PromptregError as exc:
            self.warnings.append(f"MLflow: could not {what}: {exc}")

    def _log_eval(self, info, result: EvalResult, baseline: EvalResult | None, prefix: str | None = None) -> None:
        from promptreg.reporting.figures import comparison_figure
        from promptreg.reporting.mlflow import eval_table
        from promptreg.services.mirroring import awaited_run_id

        run_id = awaited_run_id(self.registry, info.name, info.version, info.mlflow_run_id)
        if not run_id:
            self.warnings.append(f"{info.name}:{info.version} has no MLflow run yet (run `promptreg sync`): "
                                 "evaluation not logged there")
            return
        mirror = self.registry.mirror
        key = prefix or f"eval/{result.suite_name}"
        rows = [(f"{key}/{d.name}/{m}", v, 0) for d in result.datasets for m, v in d.metrics.items()]
        rows += [(f"{key}/check/{c.name}/failure_rate", c.failure_rate, 0) for c in result.checks]
        self._mlflow("log evaluation metrics", mirror.log_metrics, run_id, rows)
        self._mlflow("log the evaluation table", mirror.log_table, run_id, eval_table(result),
                     f"{key}/outcomes.json")
        self._mlflow("log the evaluation summary", mirror.log_dict, run_id, result.to_dict(), f"{key}/result.json")
        figure = comparison_figure(result, baseline)
        self._mlflow("log the comparison plot", mirror.log_figure, run_id, figure, f"{key}/comparison.png")
        self._log_eval_run(info, result, baseline, key, rows)

    def _log_eval_run(self, info, result: EvalResult, baseline: EvalResult | None, key: str, rows: list) -> None:
        """The evaluation as a run of its own in ``promptreg/<name>/eval`` (the same metrics, table, summary
        and plot as on the version's run), tagged with the version and linked to the version's source run;
        it becomes the eval_run row's MLflow run (the version's description links it)."""
        from promptreg.reporting.figures import comparison_figure
        from promptreg.reporting.mlflow import eval_table
        from promptreg.reporting.summaries import eval_markdown

        mirror = self.registry.mirror
        source = info.mlflow_run_id
        try:
            source_exp = mirror.run_experiment_id(source) if source else None
            vs = f" vs {baseline.prompt}:{baseline.version}" if baseline is not None else ""
            note = [f"Evaluation of **{info.name}:{info.version}** on suite `{result.suite_name}` "
                    f"(`{result.suite_sha256[:12]}`){vs}."]
            if source_exp:
                note.append(f"Source run of the version: [{source}](#/experiments/{source_exp}/runs/{source})")
            note.append(eval_markdown(result))
            tags = {"promptreg.prompt": info.name, "promptreg.version": str(info.version),
                    "promptreg.sha256": info.sha256, "promptreg.job": "eval", "promptreg.suite": result.suite_name,
                    "promptreg.suite_sha256": result.suite_sha256,
                    "promptreg.base_model": result.base_model_fingerprint, "promptreg.source_run": source or "none",
                    "promptreg.eval_run_id": str(result.eval_run_id), "mlflow.note.content": "\n\n".join(note)[:7000]}
            run_id = mirror.start_run(f"promptreg/{info.name}/eval", f"v{info.version}-{result.suite_name}",
                                      prompt=info.name, tags=tags)
        except PromptregError as exc:
            self.warnings.append(f"MLflow: could not create the eval run: {exc}")
            return
        self._mlflow("log eval run params", mirror.log_params, run_id,
                     {"version": info.version, "suite": result.suite_name, "suite_sha256": result.suite_sha256,
                      "baseline": f"{baseline.prompt}:{baseline.version}" if baseline is not None else "none"})
        self._mlflow("log evaluation metrics", mirror.log_metrics, run_id, rows)
        for d in result.datasets:  # the golden sets, digests = their fingerprints
            self._mlflow("log a golden set", lambda d=d: mirror.log_dataset(
                run_id, d.fingerprint, name=f"{result.suite_name}/{d.name}", rows=d.rows, context="evaluation"))
        self._mlflow("log the evaluation table", mirror.log_table, run_id, eval_table(result), f"{key}/outcomes.json")
        self._mlflow("log the evaluation summary", mirror.log_dict, run_id, result.to_dict(), f"{key}/result.json")
        self._mlflow("log the comparison plot", mirror.log_figure, run_id, comparison_figure(result, baseline),
                     f"{key}/comparison.png")
        self._mlflow("end the eval run", mirror.end_run, run_id)
        if result.eval_run_id is not None:
            with self.registry.session() as s:
                q.set_eval_run_mlflow(s, result.eval_run_id, run_id)

    def _describe(self, info) -> None:
        """Refresh the version's MLflow description (latest evaluations, gate verdict); best effort."""
        from promptreg.services.describe import refresh_descriptions

        self.warnings += refresh_descriptions(self.registry, info.name, {info.version}, model=False)

    def _log_gate(self, cand, cand_eval: EvalResult, base_eval: EvalResult | None, report: GateReport) -> None:
        from promptreg.reporting.figures import comparison_figure
        from promptreg.reporting.mlflow import version_tags
        from promptreg.reporting.summaries import gate_markdown
        from promptreg.services.mirroring import awaited_run_id

        run_id = awaited_run_id(self.registry, cand.name, cand.version, cand.mlflow_run_id)
        if not run_id:
            self.warnings.append(f"{cand.name}:{cand.version} has no MLflow run yet (run `promptreg sync`): "
                                 "gate not logged there")
            return
        mirror = self.registry.mirror
        key = f"gate/{report.suite_name}/{report.against}"
        if not cand_eval.cached:
            self._log_eval(cand, cand_eval, base_eval)
        self._mlflow("log gate metrics", mirror.log_metrics, run_id,
                     [(f"{key}/passed", 1.0 if report.passed else 0.0, 0)]
                     + [(f"{key}/{m.id}/ci_low", m.ci_low, 0) for m in report.metrics if m.ci_low is not None])
        self._mlflow("log the gate report", mirror.log_dict, run_id, report.to_dict(), f"{key}/report.json")
        self._mlflow("log the gate summary", mirror.log_text, run_id, gate_markdown(report), f"{key}/summary.md")
        figure = comparison_figure(cand_eval, base_eval, report.metrics)
        self._mlflow("log the comparison plot", mirror.log_figure, run_id, figure, f"{key}/comparison.png")
        if cand.mlflow_model_version:
            self._mlflow("tag the model version", mirror.set_version_tags, cand.name, cand.mlflow_model_version,
                         version_tags(gate=report))


class _FingerprintOnly:
    """Enough of a loaded base model for check_compatible, without loading weights."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint


