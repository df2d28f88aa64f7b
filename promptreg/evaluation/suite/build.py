"""Building a :class:`Suite` from a validated file: data files loaded and fingerprinted, metrics checked
against the task, checks expanded, and :func:`load_suite`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from promptreg.data.examples import DataSpec, Example, load_examples, rows_for_fingerprint
from promptreg.errors import InputError
from promptreg.evaluation.perturb import Perturbation, get_perturbation
from promptreg.evaluation.suite.model import GoldenSet, Suite, _fmt
from promptreg.evaluation.suite.reading import _read_yaml, _SuiteError, _validation_message
from promptreg.evaluation.suite.spec import (
    _CHECK_MODELS,
    CHECK_TYPES,
    CLASSIFICATION_METRICS,
    DATA_SUFFIXES,
    GENERATION_METRICS,
    MAX_MFT_CASES,
    NO_DIRECTION_METRICS,
    Check,
    DirectionalCheck,
    InvarianceCheck,
    MetricRule,
    MftCheck,
    SuiteSpec,
    placeholders,
)
from promptreg.fingerprints.dataset import dataset_fingerprint, read_rows
from promptreg.refs import ALIAS_RE

# --------------------------------------------------------------------------------------------------
# loading


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
                keys = placeholders(c.template)
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
