"""A loaded suite: :class:`Suite` with its golden sets and expanded behavioural checks, and its content
sha256 (what it tests, not how the file is written)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptreg.data.examples import Example
from promptreg.errors import InputError
from promptreg.evaluation.perturb import Perturbation
from promptreg.evaluation.suite.spec import (
    SUITE_FORMAT,
    Check,
    DirectionalCheck,
    DriftPolicy,
    MftCheck,
    SuiteSpec,
    placeholders,
)

# --------------------------------------------------------------------------------------------------
# loaded objects


@dataclass
class GoldenSet:
    name: str
    path: Path                               # the data file (suite folder joined with the given path)
    examples: list[Example]                  # after `limit`
    fingerprint: str                         # dataset fingerprint of rows_for_fingerprint(examples)
    metrics: dict[str, dict[str, float | None]]  # metric -> {"margin", "min", "max"} (None: absent)
    limit: int | None = None

    @property
    def rows(self) -> int:
        return len(self.examples)


@dataclass
class CheckCase:
    text: str
    perturbed: str | None = None     # invariance / directional
    expected: str | None = None      # mft: the expected label (classification) or text (generation)
    source_index: int | None = None  # invariance / directional: the row's index in its data (0-based)


@dataclass
class ExpandedCheck:
    name: str
    type: str                         # mft | invariance | directional
    max_failure_rate: float
    cases: list[CheckCase]
    label: str | None = None          # mft (classification): expected label; directional: the scored label
    direction: str | None = None      # directional: decrease | increase
    tolerance: float | None = None    # directional
    perturbation: str | None = None   # invariance / directional: the perturbation's name
    data: str | None = None           # invariance / directional: golden set name or data file path


def _fmt(values: typing.Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values) or "none"


class Suite:
    """A loaded, validated regression suite (see the module docstring and docs/suites.md)."""

    def __init__(self, *, path: Path, spec: SuiteSpec, task_declared: bool, golden: list[GoldenSet],
                 checks: list[Check], check_data: dict[str, list[Example]],
                 check_files: dict[str, tuple[Path, str]], perturbations: dict[str, Perturbation]) -> None:
        self.path = path
        self.spec = spec
        self.name = spec.name
        self.task = spec.task
        self.task_declared = task_declared
        self.golden = golden
        self.checks = checks
        self.gate = spec.gate
        self.policies = {alias: p.require_gate for alias, p in spec.policies.items() if p.require_gate is not None}
        self.drift_policies = {alias: p.drift for alias, p in spec.policies.items() if p.drift is not None}
        self._check_data = check_data
        self._check_files = check_files  # check name -> (data file, fingerprint) for file-backed checks
        self._perturbations = perturbations
        self.sha256 = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"<Suite {self.name} ({self.task}) {len(self.golden)} golden, {len(self.checks)} checks>"

    # -- identity ----------------------------------------------------------------------------------

    def canonical_json(self) -> str:
        """The document :attr:`sha256` hashes (see the module docstring)."""
        doc = self.spec.model_dump(mode="json")
        by_name = {g.name: g for g in self.golden}
        for g in doc["golden"]:
            for key in ("path", "text_column", "label_column", "target_column"):
                g.pop(key, None)
            g["fingerprint"] = by_name[g["name"]].fingerprint
            g["rows"] = by_name[g["name"]].rows
        checks = []
        for c in self.checks:
            d = c.model_dump(mode="json")
            for key in ("text_column", "label_column", "target_column"):
                d.pop(key, None)
            if c.name in self._check_files:
                d["data"] = {"file_fingerprint": self._check_files[c.name][1],
                             "rows": len(self._check_data[c.name])}
            checks.append(d)
        doc["checks"] = checks
        return json.dumps({"format": SUITE_FORMAT, "suite": doc}, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)

    # -- what the evaluator uses -------------------------------------------------------------------

    def golden_set(self, name: str) -> GoldenSet:
        for g in self.golden:
            if g.name == name:
                return g
        raise KeyError(name)

    def thresholds(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """golden set name -> metric -> {"margin", "min", "max"} (None where absent)."""
        return {g.name: {m: dict(rule) for m, rule in g.metrics.items()} for g in self.golden}

    def policy(self, alias: str) -> dict[str, bool]:
        """{"require_gate": bool} for moving ``alias``: the suite's policy, else True for ``production``
        and False for any other alias."""
        if alias in self.policies:
            return {"require_gate": self.policies[alias]}
        return {"require_gate": alias == "production"}

    def drift_policy(self, alias: str) -> DriftPolicy | None:
        """The drift policy the suite declares for ``alias`` (None: not declared here)."""
        return self.drift_policies.get(alias)

    def validate_task(self, task: str) -> None:
        """InputError unless ``task`` (the version's task) is the suite's task."""
        if task != self.task:
            hint = "" if self.task_declared else " (the suite declares no task, so it defaults to classification)"
            raise InputError(f"{self.path}: the suite is for task {self.task!r} but the version's task is "
                             f"{task!r}{hint}")

    def validate_labels(self, labels: list[str]) -> None:
        """InputError when the suite uses a label that is not one of ``labels`` (the version's labels):
        a golden set's gold label, a ``recall_<label>`` metric, a check's ``label`` or ``only_labels``.
        Nothing to check for a generation suite."""
        if self.task != "classification":
            return
        known = set(labels)
        theirs = _fmt(labels)
        for g in self.golden:
            for i, ex in enumerate(g.examples):
                if ex.label not in known:
                    raise InputError(f"{self.path}: golden set {g.name!r} row {i + 1} has label {ex.label!r}, "
                                     f"which is not one of the version's labels ({theirs})")
            for metric in g.metrics:
                if metric.startswith("recall_") and metric[len("recall_"):] not in known:
                    raise InputError(f"{self.path}: golden set {g.name!r} metric {metric!r} names label "
                                     f"{metric[len('recall_'):]!r}, which is not one of the version's labels "
                                     f"({theirs})")
        for c in self.checks:
            wanted = [getattr(c, "label", None)] + list(getattr(c, "only_labels", None) or [])
            for lab in wanted:
                if lab is not None and lab not in known:
                    raise InputError(f"{self.path}: check {c.name!r} uses label {lab!r}, which is not one of "
                                     f"the version's labels ({theirs})")

    def expand_checks(self) -> list[ExpandedCheck]:
        """Every check turned into its cases (deterministic; see docs/suites.md)."""
        return [self._expand(c) for c in self.checks]

    def _expand(self, c: Check) -> ExpandedCheck:
        if isinstance(c, MftCheck):
            keys = placeholders(c.template)
            expected = c.label if self.task == "classification" else c.expect
            cases = [CheckCase(text=c.template.format_map(dict(zip(keys, combo, strict=True))),
                               expected=expected)
                     for combo in itertools.product(*(c.fill[k] for k in keys))]
            return ExpandedCheck(name=c.name, type=c.type, max_failure_rate=c.max_failure_rate, cases=cases,
                                 label=c.label)
        examples = self._check_data[c.name]
        pert = self._perturbations[c.name]
        allowed = set(c.only_labels) if c.only_labels is not None else None
        order = [i for i, ex in enumerate(examples) if allowed is None or ex.label in allowed]
        if c.samples is not None:
            random.Random(f"sample:{c.seed}").shuffle(order)
        cases: list[CheckCase] = []
        for i in order:
            if c.samples is not None and len(cases) >= c.samples:
                break
            perturbed = pert.apply(examples[i].text, f"{c.seed}:{i}")
            if perturbed is not None:
                cases.append(CheckCase(text=examples[i].text, perturbed=perturbed, source_index=i))
        cases.sort(key=lambda case: case.source_index or 0)
        directional = isinstance(c, DirectionalCheck)
        return ExpandedCheck(
            name=c.name, type=c.type, max_failure_rate=c.max_failure_rate, cases=cases,
            label=c.label if directional else None,
            direction=c.direction if directional else None,
            tolerance=c.tolerance if directional else None,
            perturbation=pert.name, data=c.data,
        )
