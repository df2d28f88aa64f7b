"""Regression suites: a declarative YAML file naming golden sets (with metric thresholds) and behavioural
checks (CheckList style) that a soft-prompt version must pass. The format is documented in
``docs/suites.md``.

:func:`load_suite` reads and validates a suite file, loads every data file it names and returns a
:class:`Suite`. Every problem is an :class:`~promptreg.errors.InputError` whose message is one line that
starts with the suite file's path and the place in it, e.g.
``suite.yaml: golden[0].metrics.accurcy: unknown metric 'accurcy' (known: accuracy, macro_f1, ece,
recall_<label>)``.

``Suite.sha256`` identifies what the suite tests, not how the file is written: it is the sha256 hex of
a canonical JSON document (``promptreg-suite-v1``) holding the parsed suite with every default filled in
(keys sorted), where each golden set's file path and column names are replaced by the dataset
fingerprint and row count of the rows it loaded (after ``limit``), and a check's data file path likewise
by that file's fingerprint. Comments, whitespace, key order, quoting, moving or renaming a data file
(with the suite updated to point at it) do not change it; changing a data row, a threshold, a check or
the gate settings does.

This module must import fast: no torch / transformers / mlflow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import string
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from promptreg.data.examples import DataSpec, Example, load_examples, rows_for_fingerprint
from promptreg.errors import InputError
from promptreg.evaluation.perturb import Perturbation, get_perturbation
from promptreg.fingerprints.dataset import dataset_fingerprint, read_rows
from promptreg.refs import ALIAS_RE

SUITE_FORMAT = "promptreg-suite-v1"
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "ece")  # plus recall_<label>
GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l", "length_ratio")
NO_DIRECTION_METRICS = ("length_ratio",)
CHECK_TYPES = ("mft", "invariance", "directional")
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
MAX_MFT_CASES = 10_000

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Text = Annotated[str, Field(min_length=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
# a fill value: a string; a YAML integer (`n: [1, 2, 3]`) is taken as its decimal text
FillValue = Annotated[str, BeforeValidator(lambda v: str(v) if type(v) is int else v)]


# --------------------------------------------------------------------------------------------------
# the file's schema (pydantic, strict: YAML gives real types; unknown keys are errors)


class MetricRule(BaseModel):
    model_config = _CONFIG
    margin: float | None = Field(default=None, ge=0.0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> MetricRule:
        if self.margin is None and self.min is None and self.max is None:
            raise ValueError("a metric rule needs at least one of margin, min, max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class GoldenSpec(BaseModel):
    model_config = _CONFIG
    name: Name
    path: Text
    text_column: Text = "text"
    label_column: Text = "label"
    target_column: Text = "target"
    limit: int | None = Field(default=None, ge=1)
    metrics: dict[str, MetricRule] = Field(min_length=1)


class _CheckBase(BaseModel):
    model_config = _CONFIG
    name: Name
    max_failure_rate: Rate = 0.0


class MftCheck(_CheckBase):
    type: Literal["mft"]
    template: Text
    fill: dict[str, Annotated[list[FillValue], Field(min_length=1)]] = Field(default_factory=dict)
    label: Text | None = None     # classification
    expect: Text | None = None    # generation


class _PerturbationCheck(_CheckBase):
    data: Text
    perturbation: Any
    samples: int | None = Field(default=None, ge=1)
    seed: int = 0
    only_labels: Annotated[list[Text], Field(min_length=1)] | None = None
    # only when `data` is a file path (a golden set brings its own columns)
    text_column: Text | None = None
    label_column: Text | None = None
    target_column: Text | None = None


class InvarianceCheck(_PerturbationCheck):
    type: Literal["invariance"]


class DirectionalCheck(_PerturbationCheck):
    type: Literal["directional"]
    label: Text
    direction: Literal["decrease", "increase"]
    tolerance: float = Field(default=0.0, ge=0.0)


Check = MftCheck | InvarianceCheck | DirectionalCheck
_CHECK_MODELS: dict[str, type[_CheckBase]] = {
    "mft": MftCheck, "invariance": InvarianceCheck, "directional": DirectionalCheck,
}


class GateConfig(BaseModel):
    model_config = _CONFIG
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    resamples: int = Field(default=2000, ge=100, le=1_000_000)
    seed: int = 0


class DriftPolicy(BaseModel):
    """What counts as drift for an alias and what to do about it (``promptreg drift``, schedules)."""

    model_config = _CONFIG
    action: Literal["report", "flag", "rollback"] = "report"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)            # KS / chi-square / MMD p-value threshold
    psi_threshold: float = Field(default=0.2, gt=0.0)
    mmd_permutations: int = Field(default=500, ge=50, le=100_000)
    embedding_sample: int = Field(default=200, ge=10, le=100_000)  # rows per side for the embedding test
    metric: str = "accuracy"                                      # performance metric (labelled data)
    margin: float = Field(default=0.05, ge=0.0)                   # allowed drop vs the recorded value


class Policy(BaseModel):
    model_config = _CONFIG
    require_gate: bool | None = None       # None: production requires the gate, other aliases do not
    drift: DriftPolicy | None = None


class SuiteSpec(BaseModel):
    model_config = _CONFIG
    name: Name
    task: Literal["classification", "generation"] = "classification"
    golden: list[GoldenSpec] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)  # each validated by its type's model
    gate: GateConfig = Field(default_factory=GateConfig)
    policies: dict[str, Policy] = Field(default_factory=dict)


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
            keys = _placeholders(c.template)
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


# --------------------------------------------------------------------------------------------------
# errors


def _loc(parts: typing.Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], parts: tuple[Any, ...]) -> type[BaseModel] | None:
    tp: Any = root
    for part in parts:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(part) if isinstance(part, str) else None
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict and isinstance(part, str):
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _validation_message(exc: ValidationError, root: type[BaseModel], prefix: tuple[Any, ...]) -> str:
    # a misspelt key gives "unknown key" and "missing required key": report the unknown one first
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    kind = err.get("type")
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model is not None else ""
        msg = f"unknown key {loc[-1]!r}{allowed}"
    elif kind == "missing":
        msg = "missing required key"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        msg = f"invalid name {shown}: use 1 to 64 letters, digits, '.', '_' or '-'"
    elif kind == "too_short":
        msg = "must not be empty"
    elif kind == "string_type" and isinstance(err.get("input"), bool):
        msg = (f"Input should be a valid string, got {err.get('input')!r} (YAML reads unquoted yes/no/true/false/"
               "on/off as booleans: quote the value)")
    elif kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err.get("msg")))
    else:
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f", got {got!r}"[:120]
        msg = f"{err.get('msg')}{shown}"
    more = len(errors) - 1
    where = _loc(prefix + loc)
    return (f"{where}: " if where else "") + msg + (f" (+{more} more problem{'s' * (more > 1)})" if more else "")


class _SuiteError(Exception):
    def __init__(self, loc: tuple[Any, ...] | str, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc if isinstance(loc, str) else _loc(loc)
        self.msg = msg


# --------------------------------------------------------------------------------------------------
# YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain safe_load keeps the last one silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: suite file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a suite file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the suite file: {e.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        raise InputError(f"{path}: {where}invalid YAML ({problem})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid YAML (nested too deeply)") from None


# --------------------------------------------------------------------------------------------------
# loading


def _placeholders(template: str) -> list[str]:
    """The template's placeholder names in order of first appearance (ValueError when malformed)."""
    names: list[str] = []
    for _, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ValueError(f"placeholder {{{field_name}}} must be a plain name (letters, digits, '_')")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field_name}}} may not have a conversion or format spec")
        if field_name not in names:
            names.append(field_name)
    return names


def _known_metrics(task: str) -> str:
    return ", ".join(CLASSIFICATION_METRICS + ("recall_<label>",)) if task == "classification" \
        else ", ".join(GENERATION_METRICS)


def _check_metric(task: str, metric: str, rule: MetricRule, loc: tuple[Any, ...]) -> None:
    if task == "classification":
        ok = metric in CLASSIFICATION_METRICS or (metric.startswith("recall_") and len(metric) > len("recall_"))
    else:
        ok = metric in GENERATION_METRICS
    if not ok:
        hint = ""
        other = "generation" if task == "classification" else "classification"
        if metric in (GENERATION_METRICS if other == "generation" else CLASSIFICATION_METRICS) or (
                other == "classification" and metric.startswith("recall_")):
            hint = f"; it is a {other} metric: set `task: {other}`"
        raise _SuiteError(loc, f"unknown metric {metric!r} for task {task} (known: {_known_metrics(task)}){hint}")
    if metric in NO_DIRECTION_METRICS and rule.margin is not None:
        raise _SuiteError(loc + ("margin",), f"{metric} has no better direction, so no margin: use min / max")


def _resolve(base: Path, given: str, loc: tuple[Any, ...]) -> Path:
    if "\x00" in given:
        raise _SuiteError(loc, "a path may not contain a NUL character")
    p = Path(given)
    return p if p.is_absolute() else base / p


def _load_check_file(file: Path, task: str, c: InvarianceCheck | DirectionalCheck) -> list[Example]:
    text_col = c.text_column or "text"
    label_col = c.label_column or "label"
    target_col = c.target_column or "target"
    if c.only_labels is not None:
        return load_examples(file, DataSpec(task="classification", text_column=text_col, label_column=label_col))
    rows = read_rows(file)
    answer_col = label_col if task == "classification" else target_col
    if any(answer_col in r for r in rows):
        return load_examples(file, DataSpec(task=task, text_column=text_col, label_column=label_col,
                                            target_column=target_col))
    # a text-only file: validate the text column with load_examples' messages, keep only the texts
    loaded = load_examples(file, DataSpec(task="generation", text_column=text_col, target_column=text_col))
    return [Example(text=ex.text) for ex in loaded]


def _build(path: Path, raw: Any) -> Suite:
    if raw is None:
        raise InputError(f"{path}: the suite file is empty")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a suite must be a YAML mapping (name, golden, checks, ...), "
                         f"got {type(raw).__name__}")
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        raise InputError(f"{path}: {_validation_message(e, SuiteSpec, ())}") from None
    task = spec.task
    base = path.parent
    if not spec.golden and not spec.checks:
        raise InputError(f"{path}: a suite needs at least one golden set or one check")

    for alias in spec.policies:
        if not ALIAS_RE.fullmatch(alias):
            raise _SuiteError(("policies", alias), f"invalid alias {alias!r}: use lowercase letters, digits, "
                                                   "'_' or '-', starting with a letter")

    # golden sets
    golden: list[GoldenSet] = []
    seen: set[str] = set()
    for i, g in enumerate(spec.golden):
        loc: tuple[Any, ...] = ("golden", i)
        if g.name in seen:
            raise _SuiteError(loc + ("name",), f"duplicate golden set name {g.name!r}")
        seen.add(g.name)
        wrong = "target_column" if task == "classification" else "label_column"
        if wrong in g.model_fields_set:
            raise _SuiteError(loc + (wrong,), f"{wrong} does not apply to task {task}")
        for metric, rule in g.metrics.items():
            _check_metric(task, metric, rule, loc + ("metrics", metric))
        file = _resolve(base, g.path, loc + ("path",))
        try:
            examples = load_examples(file, DataSpec(task=task, text_column=g.text_column,
                                                    label_column=g.label_column, target_column=g.target_column))
        except InputError as e:
            raise _SuiteError(loc + ("path",), str(e)) from None
        if g.limit is not None:
            examples = examples[:g.limit]
        golden.append(GoldenSet(
            name=g.name, path=file, examples=examples,
            fingerprint=dataset_fingerprint(rows_for_fingerprint(examples)),
            metrics={m: {"margin": r.margin, "min": r.min, "max": r.max} for m, r in g.metrics.items()},
            limit=g.limit,
        ))
    golden_by_name = {g.name: g for g in golden}

    # checks
    checks: list[Check] = []
    check_data: dict[str, list[Example]] = {}
    check_files: dict[str, tuple[Path, str]] = {}
    perturbations: dict[str, Perturbation] = {}
    seen = set()
    for i, rawc in enumerate(spec.checks):
        loc = ("checks", i)
        kind = rawc.get("type")
        if kind is None:
            raise _SuiteError(loc + ("type",), f"missing required key (one of: {', '.join(CHECK_TYPES)})")
        if not isinstance(kind, str) or kind not in _CHECK_MODELS:
            raise _SuiteError(loc + ("type",), f"unknown check type {kind!r} (known: {', '.join(CHECK_TYPES)})")
        model = _CHECK_MODELS[kind]
        try:
            c = model.model_validate(rawc)
        except ValidationError as e:
            raise InputError(f"{path}: {_validation_message(e, model, loc)}") from None
        if c.name in seen:
            raise _SuiteError(loc + ("name",), f"duplicate check name {c.name!r}")
        seen.add(c.name)

        if isinstance(c, MftCheck):
            if task == "classification":
                if c.expect is not None:
                    raise _SuiteError(loc + ("expect",), "expect is for generation suites: use label")
                if c.label is None:
                    raise _SuiteError(loc + ("label",), "missing required key (the expected label)")
            else:
                if c.label is not None:
                    raise _SuiteError(loc + ("label",), "label is for classification suites: use expect")
                if c.expect is None:
                    raise _SuiteError(loc + ("expect",), "missing required key (the expected text)")
            try:
                keys = _placeholders(c.template)
            except ValueError as e:
                raise _SuiteError(loc + ("template",), str(e)) from None
            for k in keys:
                if k not in c.fill:
                    raise _SuiteError(loc + ("fill",), f"placeholder {{{k}}} of the template has no fill list")
            for k in c.fill:
                if k not in keys:
                    raise _SuiteError(loc + ("fill", k), f"the template has no placeholder {{{k}}}")
            n = 1
            for k in keys:
                n *= len(c.fill[k])
            if n > MAX_MFT_CASES:
                raise _SuiteError(loc + ("fill",), f"the fill lists make {n} cases, more than {MAX_MFT_CASES}")
        else:
            if isinstance(c, DirectionalCheck) and task != "classification":
                raise _SuiteError(loc + ("type",), "directional checks need class scores: classification only")
            if c.only_labels is not None and task != "classification":
                raise _SuiteError(loc + ("only_labels",), "only_labels applies to classification suites only")
            try:
                perturbations[c.name] = get_perturbation(c.perturbation)
            except InputError as e:
                raise _SuiteError(loc + ("perturbation",), str(e)) from None
            if c.data in golden_by_name:
                for col in ("text_column", "label_column", "target_column"):
                    if getattr(c, col) is not None:
                        raise _SuiteError(loc + (col,), f"{col} applies only when data is a file path "
                                                        f"(golden set {c.data!r} has its own columns)")
                check_data[c.name] = golden_by_name[c.data].examples
            else:
                if Path(c.data).suffix.lower() not in DATA_SUFFIXES:
                    raise _SuiteError(loc + ("data",), f"{c.data!r} is neither a golden set name (golden sets: "
                                                       f"{_fmt(golden_by_name)}) nor a .jsonl, .json or .csv file")
                file = _resolve(base, c.data, loc + ("data",))
                try:
                    examples = _load_check_file(file, task, c)
                except InputError as e:
                    raise _SuiteError(loc + ("data",), str(e)) from None
                check_data[c.name] = examples
                check_files[c.name] = (file, dataset_fingerprint(rows_for_fingerprint(examples)))
        checks.append(c)

    return Suite(path=path, spec=spec, task_declared="task" in spec.model_fields_set, golden=golden,
                 checks=checks, check_data=check_data, check_files=check_files, perturbations=perturbations)


def load_suite(path: Path | str) -> Suite:
    """Read, validate and load the suite file ``path`` (InputError with a one-line message otherwise)."""
    path = Path(path)
    try:
        return _build(path, _read_yaml(path))
    except _SuiteError as e:
        message = f"{path}: {e.loc}: {e.msg}"
    except InputError as e:
        if "\n" not in str(e) and "\r" not in str(e):
            raise
        message = str(e)
    raise InputError(" ".join(message.splitlines()))
