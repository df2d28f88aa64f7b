"""Paired statistics for the gate: a paired-bootstrap CI of a metric difference and McNemar's test."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from promptreg.errors import InputError

# per-call memory bound: resamples evaluated at once * examples (index arrays, one column each)
_BATCH_ELEMENTS = 1_000_000


@dataclass
class PairedCI:
    diff: float          # statistic(candidate) - statistic(baseline) on the full data
    low: float
    high: float
    confidence: float
    method: str          # BCa | percentile | degenerate


def _columns(cols: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    if not cols:
        raise InputError(f"no {what} columns given")
    out = [np.asarray(c) for c in cols]
    for c in out:
        if c.ndim != 1:
            raise InputError(f"{what} columns must be 1-D per-example arrays, got shape {c.shape}")
    if len({len(c) for c in out}) != 1:
        raise InputError(f"{what} columns have different lengths: {[len(c) for c in out]}")
    return out


def paired_bootstrap_ci(statistic: Callable[..., np.ndarray], cand_cols: Sequence[np.ndarray],
                        base_cols: Sequence[np.ndarray], *, confidence: float = 0.95,
                        n_resamples: int = 2000, seed: int = 0) -> PairedCI:
    """BCa paired-bootstrap CI of ``statistic(*cand_cols) - statistic(*base_cols)``.

    The examples (index i of every column) are resampled jointly for candidate and baseline.
    Degenerate data (every resample gives the same difference, e.g. identical outcomes) gives
    method "degenerate" with low = high = diff; if BCa is otherwise undefined (NaN), the percentile
    interval of the same bootstrap distribution is returned (method "percentile").
    Deterministic for a seed.
    """
    from scipy import stats

    cand = _columns(cand_cols, "candidate")
    base = _columns(base_cols, "baseline")
    if len(cand) != len(base):
        raise InputError(f"candidate has {len(cand)} columns but baseline has {len(base)}")
    n = len(cand[0])
    if len(base[0]) != n:
        raise InputError(f"candidate has {n} examples but baseline has {len(base[0])}: "
                         f"a paired comparison needs the same examples")
    if n < 2:
        raise InputError(f"a paired bootstrap needs at least 2 examples, got {n}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) < 1:
        raise InputError(f"n_resamples must be a positive integer, got {n_resamples}")

    k = len(cand)

    def diff_statistic(*cols, axis=-1):
        return statistic(*cols[:k], axis=axis) - statistic(*cols[k:], axis=axis)

    diff = float(diff_statistic(*cand, *base))
    batch = max(1, min(int(n_resamples), _BATCH_ELEMENTS // n))
    with warnings.catch_warnings():
        # degenerate distributions make BCa divide by zero / produce NaN: handled below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap(
            data=(*cand, *base), statistic=diff_statistic, paired=True, vectorized=True,
            method="BCa", confidence_level=confidence, n_resamples=int(n_resamples), batch=batch,
            random_state=np.random.default_rng(seed))
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        method = "BCa"
        if np.all(dist == dist[0]) and np.isfinite(dist[0]):
            return PairedCI(diff=diff, low=diff, high=diff, confidence=confidence, method="degenerate")
        if not (np.isfinite(low) and np.isfinite(high)):
            # same resamples, percentile interval (no new resampling: n_resamples=0)
            res = stats.bootstrap(
                data=(*cand, *base), statistic=diff_statistic, paired=True, vectorized=True,
                method="percentile", confidence_level=confidence, n_resamples=0,
                bootstrap_result=res, random_state=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            method = "percentile"
    return PairedCI(diff=diff, low=low, high=high, confidence=confidence, method=method)


def mcnemar_exact(cand_correct: Sequence[bool] | np.ndarray,
                  base_correct: Sequence[bool] | np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test: (b, c, two-sided p).

    b = candidate right & baseline wrong, c = candidate wrong & baseline right,
    p = binomtest(b, b + c, 0.5).pvalue; no discordant pairs -> p = 1.0.
    """
    from scipy import stats

    cand = np.asarray(cand_correct, dtype=bool).reshape(-1)
    base = np.asarray(base_correct, dtype=bool).reshape(-1)
    if cand.shape != base.shape:
        raise InputError(f"candidate has {cand.size} examples but baseline has {base.size}")
    b = int(np.count_nonzero(cand & ~base))
    c = int(np.count_nonzero(~cand & base))
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(stats.binomtest(b, b + c, 0.5).pvalue)
