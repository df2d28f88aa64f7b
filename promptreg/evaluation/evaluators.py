"""Run a regression suite against a predictor: golden-set metrics with per-example outcomes, and the
behavioural checks (CheckList: minimum functionality, invariance, directional).

A predictor is anything with ``classify(texts) -> ndarray [n, K]`` (probabilities over ``labels``, in
order) and ``generate(texts, max_new_tokens=...) -> list[str]`` — in practice a
:class:`promptreg.runtime.loader.LoadedPrompt`. Every distinct text of the suite (golden rows and
check cases) is scored ONCE, in one batched call.

Check semantics (classification):
- ``mft``: the predicted label must equal the expected label.
- ``invariance``: the predicted label must not change under the perturbation.
- ``directional``: the probability of ``label`` must move in ``direction``: for ``decrease`` a case
  fails unless ``p(perturbed) < p(original) + tolerance`` (with tolerance 0 the score must strictly
  drop); ``increase`` mirrors it.
Generation: ``mft`` compares the normalised output with ``expect`` (exact match after SQuAD
normalisation); ``invariance`` requires the same normalised output.
"""

from __future__ import annotations

from typing import Any

from promptreg.errors import InputError
from promptreg.evaluation.results import CheckOutcome, DatasetEval

MAX_FAILING_EXAMPLES = 5


def _unique(texts: list[str]) -> tuple[list[str], dict[str, int]]:
    index: dict[str, int] = {}
    for t in texts:
        if t not in index:
            index[t] = len(index)
    return list(index), index


def _check_texts(checks) -> list[str]:
    out = []
    for chk in checks:
        for case in chk.cases:
            out.append(case.text)
            if case.perturbed is not None:
                out.append(case.perturbed)
    return out


def run_suite(predictor, suite, *, task: str, labels: list[str] | None = None, max_new_tokens: int = 64,
              batch_size: int = 32) -> tuple[list[DatasetEval], dict[str, list[dict]], list[CheckOutcome]]:
    """Evaluate ``predictor`` on every golden set and check of ``suite``."""
    checks = suite.expand_checks()
    golden_texts = [ex.text for g in suite.golden for ex in g.examples]
    texts, index = _unique(golden_texts + _check_texts(checks))
    if not texts:
        raise InputError(f"suite {suite.name!r} has no examples to evaluate")
    if task == "classification":
        if not labels:
            raise InputError("a classification evaluation needs the version's labels")
        suite.validate_labels(labels)
        probs = predictor.classify(texts, batch_size=batch_size)
        return (*_classification_golden(suite, labels, probs, index),
                [_classification_check(c, labels, probs, index) for c in checks])
    if task == "generation":
        outputs = predictor.generate(texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return (*_generation_golden(suite, outputs, index), [_generation_check(c, outputs, index) for c in checks])
    raise InputError(f"unknown task {task!r}")


def _classification_golden(suite, labels, probs, index):
    from promptreg.evaluation.metrics import classification_metrics, classification_outcomes

    datasets, outcomes = [], {}
    pos = {lab: i for i, lab in enumerate(labels)}
    for g in suite.golden:
        texts = [ex.text for ex in g.examples]
        gold = [pos[ex.label] for ex in g.examples]
        rows = probs[[index[t] for t in texts]]
        outs = classification_outcomes(gold, rows, labels, texts)
        datasets.append(DatasetEval(g.name, g.fingerprint, len(outs), classification_metrics(outs, labels)))
        outcomes[g.name] = outs
    return datasets, outcomes


def _generation_golden(suite, outputs, index):
    from promptreg.evaluation.metrics import generation_metrics, generation_outcomes

    datasets, outcomes = [], {}
    for g in suite.golden:
        texts = [ex.text for ex in g.examples]
        outs = generation_outcomes([outputs[index[t]] for t in texts], [ex.target for ex in g.examples], texts)
        datasets.append(DatasetEval(g.name, g.fingerprint, len(outs), generation_metrics(outs)))
        outcomes[g.name] = outs
    return datasets, outcomes


def _classification_check(chk, labels, probs, index) -> CheckOutcome:
    failing: list[dict[str, Any]] = []
    failures = 0
    k = labels.index(chk.label) if getattr(chk, "label", None) in labels else None
    for case in chk.cases:
        p0 = probs[index[case.text]]
        pred0 = labels[int(p0.argmax())]
        detail: dict[str, Any] = {"text": case.text}
        if chk.type == "mft":
            ok = pred0 == case.expected
            detail.update(expected=case.expected, predicted=pred0, confidence=round(float(p0.max()), 4))
        else:
            p1 = probs[index[case.perturbed]]
            pred1 = labels[int(p1.argmax())]
            detail["perturbed"] = case.perturbed
            if chk.type == "invariance":
                ok = pred0 == pred1
                detail.update(predicted=pred0, predicted_perturbed=pred1)
            elif chk.type == "directional":
                before, after = float(p0[k]), float(p1[k])
                tol = float(chk.tolerance or 0.0)
                ok = after < before + tol if chk.direction == "decrease" else after > before - tol
                detail.update(label=chk.label, direction=chk.direction, score=round(before, 4),
                              score_perturbed=round(after, 4))
            else:
                raise InputError(f"check {chk.name}: unknown type {chk.type!r}")
        if not ok:
            failures += 1
            if len(failing) < MAX_FAILING_EXAMPLES:
                failing.append(detail)
    return CheckOutcome(chk.name, chk.type, len(chk.cases), failures, float(chk.max_failure_rate), failing)


def _generation_check(chk, outputs, index) -> CheckOutcome:
    from promptreg.evaluation.metrics import normalize_answer

    failing: list[dict[str, Any]] = []
    failures = 0
    for case in chk.cases:
        out0 = outputs[index[case.text]]
        detail: dict[str, Any] = {"text": case.text, "output": out0}
        if chk.type == "mft":
            ok = normalize_answer(out0) == normalize_answer(case.expected or "")
            detail["expected"] = case.expected
        elif chk.type == "invariance":
            out1 = outputs[index[case.perturbed]]
            ok = normalize_answer(out0) == normalize_answer(out1)
            detail.update(perturbed=case.perturbed, output_perturbed=out1)
        else:
            raise InputError(f"check {chk.name}: {chk.type} checks need a classification task")
        if not ok:
            failures += 1
            if len(failing) < MAX_FAILING_EXAMPLES:
                failing.append(detail)
    return CheckOutcome(chk.name, chk.type, len(chk.cases), failures, float(chk.max_failure_rate), failing)
