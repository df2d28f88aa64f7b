"""The data an evaluation and a gate produce (plain dataclasses, JSON-ready via ``to_dict``).

An :class:`EvalResult` is one version evaluated on one suite with one base model: per-dataset metrics
and per-example outcomes, plus the behavioural checks. A :class:`GateReport` compares a candidate's
EvalResult with a baseline's (the version the candidate would replace) rule by rule.

Rules and their names (``RuleResult.rule``):
- ``non_inferiority``: the paired-bootstrap confidence interval of candidate - baseline must stay
  above ``-margin`` (lower bound) for higher-is-better metrics, below ``+margin`` (upper bound) for
  lower-is-better ones (ECE). Skipped (and said so) when there is no baseline.
- ``min`` / ``max``: absolute floors/ceilings on the candidate's value.
- ``max_failure_rate``: a behavioural check's failure rate must not exceed its maximum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# metric name -> True (higher is better), False (lower is better), None (no direction: bounds only)
METRIC_DIRECTIONS: dict[str, bool | None] = {
    "accuracy": True,
    "macro_f1": True,
    "ece": False,
    "exact_match": True,
    "token_f1": True,
    "rouge_l": True,
    "length_ratio": None,
}


def metric_direction(name: str) -> bool | None:
    """Direction of a metric; per-class recalls (``recall_<label>``) are higher-is-better."""
    if name.startswith("recall_"):
        return True
    return METRIC_DIRECTIONS.get(name, True)


@dataclass
class DatasetEval:
    name: str                       # the golden set's name in the suite
    fingerprint: str                # dataset fingerprint (sha256) of its rows
    rows: int
    metrics: dict[str, float]


@dataclass
class CheckOutcome:
    name: str
    type: str                       # mft | invariance | directional
    cases: int
    failures: int
    max_failure_rate: float
    failing_examples: list[dict[str, Any]] = field(default_factory=list)  # a few, for the report

    @property
    def failure_rate(self) -> float:
        return self.failures / self.cases if self.cases else 0.0

    @property
    def passed(self) -> bool:
        return self.cases > 0 and self.failure_rate <= self.max_failure_rate

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(failure_rate=self.failure_rate, passed=self.passed)
        return out


@dataclass
class EvalResult:
    prompt: str
    version: int
    sha256: str
    task: str                                   # classification | generation
    suite_name: str
    suite_sha256: str
    base_model_fingerprint: str
    datasets: list[DatasetEval]
    checks: list[CheckOutcome]
    # golden set name -> one dict per example, in file order (see evaluation.evaluators)
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    eval_run_id: int | None = None
    cached: bool = False
    warnings: list[str] = field(default_factory=list)  # non-fatal: MLflow logging, the comparison baseline

    def dataset(self, name: str) -> DatasetEval:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    def check(self, name: str) -> CheckOutcome:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self, *, outcomes: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("outcomes", "checks")}
        out["checks"] = [c.to_dict() for c in self.checks]
        if outcomes:
            out["outcomes"] = self.outcomes
        return out


@dataclass
class RuleResult:
    rule: str                      # non_inferiority | min | max | max_failure_rate
    passed: bool
    explanation: str               # one line with the numbers, e.g. "CI low -0.031 <= -margin -0.020"
    skipped: bool = False          # e.g. non_inferiority with no baseline
    bound: float | None = None     # min/max: the floor/ceiling; non_inferiority: -margin (or +margin)


@dataclass
class MetricDecision:
    dataset: str
    metric: str
    candidate: float
    baseline: float | None = None
    diff: float | None = None              # candidate - baseline on the full data
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    ci_method: str | None = None           # BCa | percentile | degenerate
    margin: float | None = None
    higher_is_better: bool | None = True
    rules: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(passed=self.passed, id=self.id)
        return out


@dataclass
class McNemar:
    dataset: str
    b: int          # candidate right, baseline wrong
    c: int          # candidate wrong, baseline right
    p_value: float  # exact two-sided (binomial test on the b + c discordant pairs)


@dataclass
class GateReport:
    prompt: str
    candidate: int                      # version number
    candidate_sha256: str
    baseline: int | None                # version number of the baseline (None: no baseline)
    baseline_sha256: str | None
    against: str                        # what the baseline was resolved from ("production", "3", ...)
    suite_name: str
    suite_sha256: str
    base_model_fingerprint: str
    metrics: list[MetricDecision]
    checks: list[CheckOutcome]
    mcnemar: list[McNemar] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    candidate_eval_id: int | None = None
    baseline_eval_id: int | None = None
    gate_id: int | None = None
    cached: bool = False
    created_at: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # non-fatal (MLflow logging); never stored

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.metrics) and all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        """One line per failed rule, naming the metric/check and the numbers."""
        out = []
        for m in self.metrics:
            for r in m.rules:
                if not r.passed:
                    out.append(f"{m.id} {r.rule}: {r.explanation}")
        for c in self.checks:
            if not c.passed:
                if c.cases == 0:
                    out.append(f"check {c.name}: no cases could be built")
                else:
                    out.append(f"check {c.name} ({c.type}) failure rate {c.failure_rate:.3f} "
                               f"({c.failures}/{c.cases}) > max {c.max_failure_rate:.3f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("metrics", "checks")}
        out["metrics"] = [m.to_dict() for m in self.metrics]
        out["checks"] = [c.to_dict() for c in self.checks]
        out["passed"] = self.passed
        out["failures"] = self.failures()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        data = dict(data)
        for key in ("passed", "failures"):
            data.pop(key, None)
        metrics = []
        for m in data.pop("metrics", []):
            m = {k: v for k, v in m.items() if k not in ("passed", "id")}
            m["rules"] = [RuleResult(**r) for r in m.get("rules", [])]
            metrics.append(MetricDecision(**m))
        checks = [CheckOutcome(**{k: v for k, v in c.items() if k not in ("passed", "failure_rate")})
                  for c in data.pop("checks", [])]
        mcn = [McNemar(**x) for x in data.pop("mcnemar", [])]
        return cls(metrics=metrics, checks=checks, mcnemar=mcn, **data)
