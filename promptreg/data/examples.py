"""Training / evaluation examples: loading a dataset file into :class:`Example` objects, and splitting.

Files are read with :func:`promptreg.fingerprints.dataset.read_rows` (``.jsonl``, ``.json`` list, ``.csv``
by suffix). A :class:`DataSpec` names the columns and the task:

* ``classification``: every row needs a non-empty string in ``text_column`` and in ``label_column``;
  with ``spec.labels`` declared, every label must be one of them. The answer the model is trained to
  produce for a label is ``spec.answer(label)`` (the verbalizer entry, by default ``" <label>"``).
* ``generation``: every row needs a non-empty string in ``text_column`` and in ``target_column``.

Every problem is an :class:`~promptreg.errors.InputError` with a one-line message naming the file and
the place (``line N`` for JSONL and CSV, ``item N`` for a JSON list) and, for a missing column, the
columns found. Other columns are ignored.

:func:`rows_for_fingerprint` gives the rows that :func:`~promptreg.fingerprints.dataset.dataset_fingerprint`
hashes: ``{"text", "label"}`` or ``{"text", "target"}`` per example, with these canonical key names
whatever the file's column names were (so the Rotten Tomatoes files give the fingerprints recorded in
their ``dataset.json``).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from promptreg.errors import InputError
from promptreg.fingerprints.dataset import read_rows

TASKS = ("classification", "generation")


def _fmt_list(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values) or "none"


@dataclass
class DataSpec:
    """How to read a dataset file and what the model answers.

    ``labels``: the declared label set (``None``: inferred from the training examples by
    :func:`resolve_labels`, sorted). ``verbalizer``: label -> answer text (e.g. ``{"positive": " great"}``);
    a label without an entry answers ``" <label>"``.
    """

    task: str = "classification"
    text_column: str = "text"
    label_column: str = "label"
    target_column: str = "target"
    labels: list[str] | None = None
    verbalizer: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"unknown task {self.task!r}: use {' or '.join(TASKS)}")
        for name in ("text_column", "label_column", "target_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a non-empty string, got {value!r}")
        if self.labels is not None:
            if isinstance(self.labels, str) or not isinstance(self.labels, (list, tuple)):
                raise InputError(f"labels must be a list of strings, got {type(self.labels).__name__}")
            self.labels = list(self.labels)
            bad = [x for x in self.labels if not isinstance(x, str) or not x]
            if bad:
                raise InputError(f"labels must be non-empty strings, got {bad[0]!r}")
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            if dupes:
                raise InputError(f"label {dupes[0]!r} is declared more than once")
            if not self.labels:
                raise InputError("labels is empty: declare at least one label (or None to infer them)")
        if self.verbalizer is not None:
            if not isinstance(self.verbalizer, Mapping):
                raise InputError(f"verbalizer must be a mapping label -> answer text, got "
                                 f"{type(self.verbalizer).__name__}")
            self.verbalizer = dict(self.verbalizer)
            for k, v in self.verbalizer.items():
                if not isinstance(k, str) or not isinstance(v, str) or not v:
                    raise InputError(f"verbalizer entries must map a label to a non-empty string, "
                                     f"got {k!r}: {v!r}")
            if self.labels is not None:
                unknown = [k for k in self.verbalizer if k not in self.labels]
                if unknown:
                    raise InputError(f"verbalizer has an entry for {unknown[0]!r}, which is not a declared "
                                     f"label ({_fmt_list(self.labels)})")

    def answer(self, label: str) -> str:
        """The answer text for ``label``: the verbalizer entry, else ``" " + label``."""
        if self.labels is not None and label not in self.labels:
            raise InputError(f"label {label!r} is not one of the declared labels ({_fmt_list(self.labels)})")
        return (self.verbalizer or {}).get(label, " " + label)


@dataclass
class Example:
    text: str
    label: str | None = None  # classification
    target: str | None = None  # generation


# --------------------------------------------------------------------------------------------------
# loading


def _locations(path: Path) -> list[str]:
    """Where each row of ``path`` sits ("line N" / "item N"), in read_rows order. Only used for errors."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):  # read_rows succeeded a moment ago; stay best-effort
        return []
    if suffix == ".jsonl":  # read_rows skips blank lines (LF-separated, CR stripped)
        return [f"line {n}" for n, line in enumerate(text.split("\n"), start=1)
                if line.removesuffix("\r").strip()]
    if suffix == ".csv":  # a record may span several lines: report the line it starts on
        out = []
        reader = csv.reader(io.StringIO(text, newline=""))
        start, header = 1, True
        try:
            for record in reader:
                if header:
                    header = False
                elif record:  # DictReader skips blank records
                    out.append(f"line {start}")
                start = reader.line_num + 1
        except csv.Error:
            pass
        return out
    return []


def load_examples(path: Path | str, spec: DataSpec) -> list[Example]:
    """The examples of a ``.jsonl`` / ``.json`` / ``.csv`` file, in file order (see the module docstring)."""
    path = Path(path)
    rows = read_rows(path)  # InputError for a missing/unreadable/malformed file
    if not rows:
        raise InputError(f"{path}: no rows (the dataset file is empty)")

    locs: list[str] | None = None

    def where(i: int) -> str:
        nonlocal locs
        if locs is None:
            locs = _locations(path)
        if path.suffix.lower() == ".json" or i >= len(locs):
            return f"item {i + 1}"
        return locs[i]

    is_cls = spec.task == "classification"
    needed = [spec.text_column, spec.label_column if is_cls else spec.target_column]
    for col in needed:
        if all(col not in r for r in rows):
            found = sorted({k for r in rows for k in r})
            what = "in the header " if path.suffix.lower() == ".csv" else ""
            raise InputError(f"{path}: missing column {col!r} {what}(columns found: {_fmt_list(found)})")
    declared = set(spec.labels) if (is_cls and spec.labels is not None) else None

    def value(i: int, row: dict, col: str, what: str) -> str:
        if col not in row:
            raise InputError(f"{path}: {where(i)}: missing column {col!r} "
                             f"(columns found on that row: {_fmt_list(sorted(row))})")
        v = row[col]
        if v is None:
            raise InputError(f"{path}: {where(i)}: {what} column {col!r} is null")
        if not isinstance(v, str):
            raise InputError(f"{path}: {where(i)}: {what} column {col!r} must be a string, "
                             f"got {type(v).__name__} {v!r}"[:300])
        if not v.strip():
            raise InputError(f"{path}: {where(i)}: {what} column {col!r} is empty")
        return v

    out: list[Example] = []
    for i, row in enumerate(rows):
        text = value(i, row, spec.text_column, "text")
        if is_cls:
            label = value(i, row, spec.label_column, "label")
            if declared is not None and label not in declared:
                raise InputError(f"{path}: {where(i)}: label {label!r} is not one of the declared labels "
                                 f"({_fmt_list(spec.labels or [])})")
            out.append(Example(text=text, label=label))
        else:
            out.append(Example(text=text, target=value(i, row, spec.target_column, "target")))
    return out


# --------------------------------------------------------------------------------------------------
# split, fingerprint rows, labels


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def seeded_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into ``(kept, held_out)``, deterministic for ``seed``, stratified by label.

    ``fraction`` (0 < fraction < 1) is the share that goes to ``held_out`` (e.g. the eval split).
    Procedure: the examples are grouped by label (one group for generation / unlabelled examples); each
    group is sorted by (text, label, target) -- so the result does not depend on the input order -- and
    shuffled with one ``random.Random(seed)`` (groups in sorted label order). From each group of ``n``
    examples, ``round(n * fraction)`` (halves round up), clamped to ``1 .. n-1`` when ``n >= 2``, are
    taken from the front for ``held_out``; a group of one example stays in ``kept``. Both lists keep the
    examples' input order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InputError(f"split fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not examples:
        raise InputError("no examples to split")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.label if ex.label is not None else "", []).append(i)
    held: set[int] = set()
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: (examples[i].text, examples[i].label or "",
                                                 examples[i].target or "", i))
        rng.shuffle(idx)
        n = len(idx)
        k = min(max(_round_half_up(n * fraction), 1), n - 1) if n >= 2 else 0
        held.update(idx[:k])
    kept = [ex for i, ex in enumerate(examples) if i not in held]
    out = [ex for i, ex in enumerate(examples) if i in held]
    return kept, out


def rows_for_fingerprint(examples: Iterable[Example]) -> list[dict]:
    """The rows :func:`~promptreg.fingerprints.dataset.dataset_fingerprint` hashes, in order:
    ``{"text", "label"}`` for a labelled example, ``{"text", "target"}`` for a generation one (both
    keys when both are set)."""
    rows = []
    for ex in examples:
        row: dict[str, Any] = {"text": ex.text}
        if ex.label is not None:
            row["label"] = ex.label
        if ex.target is not None:
            row["target"] = ex.target
        rows.append(row)
    return rows


def resolve_labels(spec: DataSpec, train: list[Example]) -> DataSpec:
    """A copy of ``spec`` with ``labels`` filled (declared ones kept; else the sorted set of the training
    labels) and ``verbalizer`` holding an entry for every label (default ``" <label>"``). Generation
    specs come back unchanged. Answers must be distinct (else the model's answer would be ambiguous)."""
    if spec.task != "classification":
        return replace(spec)
    labels = spec.labels
    if labels is None:
        missing = [i for i, ex in enumerate(train) if ex.label is None]
        if missing:
            raise InputError(f"training example {missing[0] + 1} has no label: cannot infer the label set")
        labels = sorted({ex.label for ex in train if ex.label is not None})
        if not labels:
            raise InputError("cannot infer the label set: there are no training examples")
    verbalizer = {lab: (spec.verbalizer or {}).get(lab, " " + lab) for lab in labels}
    unknown = [k for k in (spec.verbalizer or {}) if k not in verbalizer]
    if unknown:
        raise InputError(f"verbalizer has an entry for {unknown[0]!r}, which is not a label "
                         f"({_fmt_list(labels)})")
    seen: dict[str, str] = {}
    for lab, ans in verbalizer.items():
        if ans in seen:
            raise InputError(f"labels {seen[ans]!r} and {lab!r} have the same answer text {ans!r}")
        seen[ans] = lab
    return replace(spec, labels=list(labels), verbalizer=verbalizer)
