"""What promptreg writes to MLflow besides descriptions: the model-version tags (one function) and the
per-example evaluation table.

Invariants: pure; :func:`version_tags` is the only place a ``promptreg.*`` model-version tag value is
computed (the mirror, alias moves, gates, drift flags and ``sync`` all call it).
"""

from __future__ import annotations

from typing import Any

from promptreg.evaluation.results import EvalResult, GateReport

ALIASES_TAG = "promptreg.aliases"
STATUS_TAG = "promptreg.status"
DRIFT_TAG = "promptreg.drift"
MAX_TEXT_CHARS = 500            # the text column of eval_table


def gate_tag(against: str) -> str:
    return f"promptreg.gate.{against}"


def version_tags(*, aliases: list[str] | None = None, status: str | None = None, gate: GateReport | None = None,
                 drift: str | None = None) -> dict[str, str]:
    """The ``promptreg.*`` tags a model version carries, for the facts given (a fact left out: its tags are
    not part of the result): ``promptreg.aliases`` (comma-separated, ``none``), ``promptreg.status``,
    ``promptreg.gate.<against>`` (passed/failed) with ``.baseline`` and ``.id``, ``promptreg.drift``
    (the last drift decision)."""
    tags: dict[str, str] = {}
    if aliases is not None:
        tags[ALIASES_TAG] = ",".join(sorted(aliases)) or "none"
    if status is not None:
        tags[STATUS_TAG] = status
    if gate is not None:
        key = gate_tag(gate.against)
        tags[key] = "passed" if gate.passed else "failed"
        tags[f"{key}.baseline"] = str(gate.baseline if gate.baseline is not None else "none")
        tags[f"{key}.id"] = str(gate.gate_id)
    if drift is not None:
        tags[DRIFT_TAG] = drift
    return tags


_CLASSIFICATION_COLUMNS = ("dataset", "index", "text", "gold", "prediction", "correct", "confidence")
_GENERATION_COLUMNS = ("dataset", "index", "text", "reference", "output", "exact_match", "token_f1",
                       "rouge_l", "length_ratio")


def _truncate(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def eval_table(result: EvalResult) -> dict[str, list]:
    """Golden-set outcomes as equal-length columns, one row per example (for ``mlflow.log_table``).

    Classification: dataset, index, text, gold, prediction, correct, confidence. Generation: dataset,
    index, text, reference, output, exact_match, token_f1, rouge_l, length_ratio. ``text`` is "" when
    the outcome has none, truncated to 500 characters otherwise."""
    generation = result.task == "generation"
    columns = _GENERATION_COLUMNS if generation else _CLASSIFICATION_COLUMNS
    table: dict[str, list] = {c: [] for c in columns}
    for ds, outcomes in result.outcomes.items():
        for pos, o in enumerate(outcomes):
            row: dict[str, Any] = {"dataset": ds, "index": o.get("index", pos), "text": _truncate(o.get("text"))}
            if generation:
                row.update(reference=_truncate(o.get("reference")), output=_truncate(o.get("output")),
                           exact_match=o.get("exact_match"), token_f1=o.get("token_f1"),
                           rouge_l=o.get("rouge_l"), length_ratio=o.get("length_ratio"))
            else:
                gold, pred = o.get("gold"), o.get("pred")
                row.update(gold="" if gold is None else str(gold), prediction="" if pred is None else str(pred),
                           correct=o.get("correct"), confidence=o.get("confidence"))
            for c in columns:
                table[c].append(row[c])
    return table
