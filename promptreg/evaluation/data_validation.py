"""Data validation of training / evaluation splits with Great Expectations (1.x).

:func:`validate_splits` runs one GX expectation suite per split (a pandas dataframe with the columns
``text`` and ``label`` (classification) or ``target`` (generation), one row per :class:`Example`, in
order) through a ``ValidationDefinition`` and a ``Checkpoint`` of one in-memory (ephemeral) GX context,
created on first use and reused for every call. Each expectation carries ``meta={"critical": bool,
"check": name}`` (and the matching GX ``severity``); ``failures`` and ``warnings`` are derived from the GX
results: a failed critical expectation is a failure, a failed non-critical one a warning. An expectation
that GX could not evaluate counts as failed.

Expectations (per split; ``rows`` are numbered from 1 in the split's order):

critical
    ``rows``: at least 1 row; ``text_not_null``; ``text_is_string``; ``text_length``: between
    ``min_chars`` and ``max_chars`` characters; ``text_not_blank``: at least one non-whitespace
    character. Classification: ``label_not_null``; ``label_in_set``: the label is a declared label;
    ``labels_present`` (train split only): every declared label occurs. Generation:
    ``target_not_null``, ``target_is_string``, ``target_not_empty``.
non-critical
    ``text_unique``: texts are unique within the split; ``overlap:<other>``: texts of a non-train split
    that also occur in the train split (and in every earlier non-train split, e.g. test vs eval);
    ``labels_present`` on non-train splits.

Overlap: the dataframe of a non-train split gets a column ``text_also_in_<other>`` holding the row's text
where it also occurs in ``<other>`` (set membership computed in Python) and null elsewhere, checked with
``ExpectColumnValuesToBeNull``; GX counts and reports the overlapping rows and texts. (Passing the other
split's texts as the value set of ``ExpectColumnValuesToNotBeInSet`` gives the same answer, but GX
re-serialises an expectation's kwargs many times per run: with a 10k-text value set that costs about
1.3 s per expectation instead of about 0.02 s.)

Labels: ``spec.labels`` when declared, otherwise the sorted set of the train split's labels (a
classification spec without labels needs a ``train`` split).

``ValidationResult.gx`` holds, per split, the GX ``ExpectationSuiteValidationResult.to_json_dict()``;
value sets longer than 20 items (the other split's texts in the overlap checks) are cut to their first 5
items there, with ``value_set_size`` giving the full size. ``stats["seconds"]`` records the time spent.

GX is imported lazily (the import takes seconds). Progress bars are switched off through the context's
``progress_bars`` config; GX 1.24 has no usage-statistics code left (nothing reads
``GX_ANALYTICS_ENABLED``), the context is still created with ``analytics_enabled=False`` and the variable
defaults to ``false`` for GX versions that read it.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from promptreg.data.examples import DataSpec, Example
from promptreg.errors import InputError

_CONTEXT: Any = None
_LOCK = threading.Lock()
_EXAMPLES_SHOWN = 3
_VALUE_SET_KEEP = 5
_VALUE_SET_MAX = 20
_REFERENCE_SPLIT = "train"


@dataclass
class ValidationResult:
    success: bool  # False iff a critical expectation failed
    failures: list[str] = field(default_factory=list)  # "<split>: <expectation>: <what failed>"
    warnings: list[str] = field(default_factory=list)  # non-critical findings, same format
    stats: dict = field(default_factory=dict)
    gx: dict = field(default_factory=dict)  # per split: GX suite validation result (JSON)

    def summary(self) -> str:
        """A multi-line human summary."""
        splits = self.stats.get("splits", {})
        head = "PASSED" if self.success else "FAILED"
        lines = [f"data validation {head}: {len(splits)} split(s), {len(self.failures)} failure(s), "
                 f"{len(self.warnings)} warning(s)"]
        for name, s in splits.items():
            parts = [f"{s['rows']} rows"]
            if s.get("labels") is not None:
                parts.append("labels " + (", ".join(f"{k}={v}" for k, v in s["labels"].items()) or "none"))
            tl = s.get("text_length")
            if tl:
                parts.append(f"text length min/median/max {tl['min']}/{tl['median']:g}/{tl['max']}")
            parts.append(f"{s['duplicates']['extra_copies']} duplicate row(s)")
            lines.append(f"  {name}: " + ", ".join(parts))
        for key, o in self.stats.get("overlaps", {}).items():
            lines.append(f"  overlap {key}: {o['rows']} row(s), {o['texts']} distinct text(s)")
        if self.failures:
            lines.append("failures:")
            lines += [f"  - {f}" for f in self.failures]
        if self.warnings:
            lines.append("warnings:")
            lines += [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# GX context


def _gx_context() -> Any:
    """The process-wide ephemeral GX context of this module (created on first use)."""
    global _CONTEXT
    if _CONTEXT is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        _CONTEXT = gx.get_context(mode="ephemeral", project_config=config)
    return _CONTEXT


# --------------------------------------------------------------------------------------------------
# helpers


def _short(value: Any, limit: int = 60, with_len: bool = False) -> str:
    if isinstance(value, str):
        if len(value) > limit:
            return f"{value[:limit - 3]!r}... ({len(value)} chars)"
        return f"{value!r} ({len(value)} chars)" if with_len or not value.strip() else repr(value)
    text = repr(value)
    return (text if len(text) <= limit else text[:limit - 3] + "...") + f" ({type(value).__name__})"


def _rows(indexes: list | None) -> str:
    idx = [str(int(i) + 1) for i in (indexes or [])[:_EXAMPLES_SHOWN]]
    if not idx:
        return ""
    return f"; e.g. row{'s' if len(idx) > 1 else ''} {', '.join(idx)}"


def _examples(result: dict, with_len: bool = False) -> str:
    values = (result.get("partial_unexpected_list") or [])[:_EXAMPLES_SHOWN]
    idx = result.get("partial_unexpected_index_list") or []
    parts = []
    for i, v in enumerate(values):
        where = f"row {int(idx[i]) + 1}: " if i < len(idx) else ""
        parts.append(where + _short(v, with_len=with_len))
    return ("; e.g. " + "; ".join(parts)) if parts else ""


def _text_stats(texts: list[Any]) -> dict[str, Any]:
    strings = [t for t in texts if isinstance(t, str)]
    counts = Counter(strings)
    dup = {t: c for t, c in counts.items() if c > 1}
    lengths = [len(t) for t in strings]
    return {
        "duplicates": {"rows": sum(dup.values()), "texts": len(dup),
                       "extra_copies": sum(c - 1 for c in dup.values())},
        "text_length": ({"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}
                        if lengths else None),
    }


def _label_key(label: Any) -> str:
    return label if isinstance(label, str) else f"<{label!r}>"


def _jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON (non-finite floats -> None, unknown objects -> str), with long value sets cut."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k == "value_set" and isinstance(v, (list, tuple)) and len(v) > _VALUE_SET_MAX:
                out[str(k)] = _jsonable(list(v[:_VALUE_SET_KEEP]))
                out["value_set_size"] = len(v)
            else:
                out[str(k)] = _jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return str(obj)


def _check_inputs(splits: Any, spec: DataSpec, min_chars: Any, max_chars: Any) -> None:
    if not isinstance(spec, DataSpec):
        raise InputError(f"spec must be a DataSpec, got {type(spec).__name__}")
    if not isinstance(splits, Mapping) or not splits:
        raise InputError("splits must be a non-empty mapping of split name -> list of examples")
    for name, examples in splits.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"split names must be non-empty strings, got {name!r}")
        if not isinstance(examples, (list, tuple)):
            raise InputError(f"split {name!r} must be a list of Example, got {type(examples).__name__}")
        bad = next((i for i, ex in enumerate(examples) if not isinstance(ex, Example)), None)
        if bad is not None:
            raise InputError(f"split {name!r}: item {bad + 1} is a {type(examples[bad]).__name__}, not an Example")
    for name, v in (("min_chars", min_chars), ("max_chars", max_chars)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"{name} must be a non-negative integer, got {v!r}")
    if min_chars > max_chars:
        raise InputError(f"min_chars ({min_chars}) is above max_chars ({max_chars})")


# --------------------------------------------------------------------------------------------------
# expectations


def _expectations(split: str, spec: DataSpec, labels: list[str] | None, min_chars: int, max_chars: int,
                  others: list[str]) -> list[Any]:
    import great_expectations as gx

    E = gx.expectations

    def mk(cls: Any, check: str, critical: bool, **kwargs: Any) -> Any:
        return cls(**kwargs, meta={"critical": critical, "check": check, "split": split},
                   severity="critical" if critical else "warning")

    out = [
        mk(E.ExpectTableRowCountToBeBetween, "rows", True, min_value=1),
        mk(E.ExpectColumnValuesToNotBeNull, "text_not_null", True, column="text"),
        mk(E.ExpectColumnValuesToBeOfType, "text_is_string", True, column="text", type_="str"),
        mk(E.ExpectColumnValueLengthsToBeBetween, "text_length", True, column="text",
           min_value=min_chars, max_value=max_chars),
        mk(E.ExpectColumnValuesToMatchRegex, "text_not_blank", True, column="text", regex=r"\S"),
    ]
    if spec.task == "classification":
        out.append(mk(E.ExpectColumnValuesToNotBeNull, "label_not_null", True, column="label"))
        if labels:
            out.append(mk(E.ExpectColumnValuesToBeInSet, "label_in_set", True, column="label",
                          value_set=list(labels)))
            out.append(mk(E.ExpectColumnDistinctValuesToContainSet, "labels_present",
                          split == _REFERENCE_SPLIT, column="label", value_set=list(labels)))
    else:
        out += [
            mk(E.ExpectColumnValuesToNotBeNull, "target_not_null", True, column="target"),
            mk(E.ExpectColumnValuesToBeOfType, "target_is_string", True, column="target", type_="str"),
            mk(E.ExpectColumnValueLengthsToBeBetween, "target_not_empty", True, column="target", min_value=1),
        ]
    out.append(mk(E.ExpectColumnValuesToBeUnique, "text_unique", False, column="text"))
    for other in others:
        out.append(mk(E.ExpectColumnValuesToBeNull, f"overlap:{other}", False, column=_overlap_column(other)))
    return out


def _overlap_column(other: str) -> str:
    return f"text_also_in_{other}"


_CHECK_ORDER = ["rows", "text_not_null", "text_is_string", "text_length", "text_not_blank", "label_not_null",
                "label_in_set", "labels_present", "target_not_null", "target_is_string", "target_not_empty",
                "text_unique"]


def _order(check: str) -> tuple[int, str]:
    return (_CHECK_ORDER.index(check), "") if check in _CHECK_ORDER else (len(_CHECK_ORDER), check)


def _describe(check: str, res: Any, split: str, n: int, labels: list[str] | None, min_chars: int,
              max_chars: int, split_stats: dict) -> str:
    cfg = res.expectation_config
    column = cfg.kwargs.get("column")
    name = f"{cfg.type}({column})" if column else cfg.type
    if check.startswith("overlap:"):
        name = f"{cfg.type}({column})"
    r = res.result or {}
    if (res.exception_info or {}).get("raised_exception"):
        msg = str(res.exception_info.get("exception_message") or "unknown error").splitlines()[0][:200]
        return f"{split}: {name}: GX could not evaluate it: {msg}"
    uc = r.get("unexpected_count")
    of = f"{uc} of {n}"
    if check == "rows":
        what = f"expected at least 1 row, found {r.get('observed_value', n)}"
    elif check in ("text_not_null", "label_not_null", "target_not_null"):
        what = f"{of} rows have no {column} (null)" + _rows(r.get("partial_unexpected_index_list"))
    elif check in ("text_is_string", "target_is_string"):
        what = f"{of} {column} values are not strings" + _examples(r)
    elif check == "text_length":
        what = f"{of} texts are not {min_chars}..{max_chars} characters long" + _examples(r, with_len=True)
    elif check == "target_not_empty":
        what = f"{of} targets are empty" + _examples(r)
    elif check == "text_not_blank":
        what = f"{of} texts are blank (whitespace only)" + _examples(r)
    elif check == "label_in_set":
        counts = ", ".join(f"{_short(c['value'])} x{c['count']}" for c in (r.get("partial_unexpected_counts") or [])
                           [:_EXAMPLES_SHOWN])
        what = (f"{of} rows have a label outside the declared set [{', '.join(map(repr, labels or []))}]: "
                f"{counts}" + _rows(r.get("partial_unexpected_index_list")))
    elif check == "labels_present":
        missing = r.get("partial_missing_list") or sorted(set(labels or []) - set(split_stats.get("labels") or {}))
        what = f"declared label(s) absent from {split}: {', '.join(map(repr, missing))}"
    elif check == "text_unique":
        d = split_stats["duplicates"]
        top = ", ".join(f"{_short(c['value'])} x{c['count']}" for c in (r.get("partial_unexpected_counts") or [])
                        [:_EXAMPLES_SHOWN])
        what = (f"{of} rows carry a duplicated text ({d['texts']} distinct text(s), {d['extra_copies']} extra "
                f"cop{'y' if d['extra_copies'] == 1 else 'ies'})" + (f"; e.g. {top}" if top else "")
                + _rows(r.get("partial_unexpected_index_list")).replace("; e.g. row", ", at row"))
    elif check.startswith("overlap:"):
        what = f"{of} texts also appear in {check.split(':', 1)[1]}" + _examples(r)
    else:  # pragma: no cover - every check above is handled
        what = f"{of} unexpected values" + _examples(r)
    return f"{split}: {name}: {what}"


# --------------------------------------------------------------------------------------------------
# entry point


def validate_splits(splits: dict[str, list[Example]], spec: DataSpec, *, min_chars: int = 1,
                    max_chars: int = 4000) -> ValidationResult:
    """Validate the splits (see the module docstring); never raises for bad data, only for bad arguments."""
    t_start = time.perf_counter()
    _check_inputs(splits, spec, min_chars, max_chars)
    is_cls = spec.task == "classification"
    names = list(splits)

    labels: list[str] | None = None
    if is_cls:
        if spec.labels is not None:
            labels = list(spec.labels)
        elif _REFERENCE_SPLIT in splits:
            labels = sorted({ex.label for ex in splits[_REFERENCE_SPLIT] if isinstance(ex.label, str)})
        else:
            raise InputError(f"no declared labels and no {_REFERENCE_SPLIT!r} split to infer them from "
                             f"(splits: {', '.join(names)})")

    stats: dict[str, Any] = {"task": spec.task, "labels": labels, "labels_declared": spec.labels is not None,
                             "min_chars": min_chars, "max_chars": max_chars, "splits": {}, "overlaps": {}}
    texts = {s: [ex.text for ex in splits[s]] for s in names}
    text_sets = {s: {t for t in texts[s] if isinstance(t, str)} for s in names}
    for s in names:
        entry: dict[str, Any] = {"rows": len(splits[s])}
        if is_cls:
            entry["labels"] = dict(sorted(Counter(_label_key(ex.label) for ex in splits[s]).items()))
        entry.update(_text_stats(texts[s]))
        stats["splits"][s] = entry

    # overlap references: every non-train split against train, then against the earlier non-train splits
    non_ref = [s for s in names if s != _REFERENCE_SPLIT]
    others: dict[str, list[str]] = {s: [] for s in names}
    for i, s in enumerate(non_ref):
        refs = ([_REFERENCE_SPLIT] if _REFERENCE_SPLIT in splits else []) + non_ref[:i]
        for ref in refs:
            others[s].append(ref)
            shared = text_sets[s] & text_sets[ref]
            stats["overlaps"][f"{s}~{ref}"] = {
                "texts": len(shared), "rows": sum(1 for t in texts[s] if isinstance(t, str) and t in shared)}

    failures: list[tuple[int, tuple[int, str], str]] = []
    warnings: list[tuple[int, tuple[int, str], str]] = []
    gx_json: dict[str, Any] = {}
    t_gx = time.perf_counter()
    with _LOCK:
        context = _gx_context()
        t_ctx = time.perf_counter()
        import great_expectations as gx
        import pandas as pd

        run_id = uuid.uuid4().hex[:12]
        created: list[tuple[Any, str]] = []
        try:
            for si, s in enumerate(names):
                base = f"promptreg-{run_id}-{si}"
                columns: dict[str, list[Any]] = {"text": texts[s]}
                if is_cls:
                    columns["label"] = [ex.label for ex in splits[s]]
                else:
                    columns["target"] = [ex.target for ex in splits[s]]
                for ref in others[s]:  # the text where it also occurs in ref, else null
                    columns[_overlap_column(ref)] = [t if isinstance(t, str) and t in text_sets[ref] else None
                                                     for t in texts[s]]
                frame = pd.DataFrame(columns, dtype=object)

                source = context.data_sources.add_pandas(name=base)
                created.append((context.data_sources, base))
                batch = source.add_dataframe_asset(name="split").add_batch_definition_whole_dataframe("whole")
                suite = context.suites.add(gx.ExpectationSuite(name=base))
                created.append((context.suites, base))
                for expectation in _expectations(s, spec, labels, min_chars, max_chars, others[s]):
                    suite.add_expectation(expectation)
                definition = context.validation_definitions.add(
                    gx.ValidationDefinition(name=base, data=batch, suite=suite))
                created.append((context.validation_definitions, base))
                checkpoint = context.checkpoints.add(gx.Checkpoint(
                    name=base, validation_definitions=[definition],
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}))
                created.append((context.checkpoints, base))

                outcome = checkpoint.run(batch_parameters={"dataframe": frame})
                (suite_result,) = outcome.run_results.values()
                gx_json[s] = _jsonable(suite_result.to_json_dict())
                for res in suite_result.results:
                    meta = res.expectation_config.meta or {}
                    check = str(meta.get("check", res.expectation_config.type))
                    if res.success:
                        continue
                    line = _describe(check, res, s, len(splits[s]), labels, min_chars, max_chars,
                                     stats["splits"][s])
                    (failures if meta.get("critical") else warnings).append((si, _order(check), line))
        finally:
            for store, name in reversed(created):
                try:
                    store.delete(name=name)
                except Exception:  # noqa: BLE001 - best-effort clean-up of the shared in-memory context
                    pass
    t_end = time.perf_counter()
    stats["seconds"] = {"gx_context": round(t_ctx - t_gx, 4), "gx_validation": round(t_end - t_ctx, 4),
                        "total": round(t_end - t_start, 4)}
    return ValidationResult(
        success=not failures,
        failures=[line for *_, line in sorted(failures)],
        warnings=[line for *_, line in sorted(warnings)],
        stats=stats,
        gx=gx_json,
    )
