"""Data-drift statistics for drift re-evaluation (issue 5): input lengths, labels, embeddings, confidence.

Every test returns a :class:`DriftTest` carrying its statistic, its p-value (or ``None`` for a
distance compared with a threshold), the threshold used and a one-line ``explain()``.

Defaults follow Evidently 0.7's data-drift presets:

* numeric (input length): two-sample Kolmogorov-Smirnov, drift when p < 0.05, for a reference of
  at most 1000 rows; for a larger reference (where KS flags negligible differences) the normed
  Wasserstein distance (Wasserstein-1 / std of the reference), drift when >= 0.1;
* categorical (label / prediction): chi-square test of homogeneity, drift when p < 0.05; the
  population stability index (PSI) is reported beside it (>= 0.2 "significant", >= 0.1
  "moderate") and can be used on its own via :func:`psi_drift`;
* embeddings: unbiased MMD^2 with an RBF kernel and a permutation p-value;
* label-free performance: mean top-label confidence (an ESTIMATE of accuracy, valid only for a
  calibrated model) with a KS test on the confidence distributions.

numpy/scipy only (scipy imported inside the functions); no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from promptreg.errors import InputError

MIN_ROWS = 5
PSI_EPSILON = 1e-4  # proportion used for a category absent on one side (Evidently's choice)

# method -> (test label, statistic label) for explain()
_LABELS = {
    "ks": ("KS", "D"),
    "wasserstein_normed": ("", "normed Wasserstein"),
    "chi2": ("chi-square", "chi2"),
    "psi": ("", "PSI"),
    "mmd2_permutation": ("MMD permutation", "MMD^2"),
    "confidence_ks": ("KS", "D"),
}


@dataclass
class DriftTest:
    name: str                 # what was compared: "input length", "labels", "embedding", ...
    statistic: float
    p_value: float | None     # None for distances compared with a threshold (Wasserstein, PSI)
    threshold: float          # alpha when p_value is set, else the distance threshold
    method: str               # ks | wasserstein_normed | chi2 | psi | mmd2_permutation | confidence_ks
    drift: bool
    detail: dict = field(default_factory=dict)

    def explain(self) -> str:
        """One line, e.g. ``input length: KS D=0.31, p=0.0004 < 0.05 -> drift``."""
        test, stat = _LABELS.get(self.method, (self.method, "statistic"))
        verdict = "drift" if self.drift else "no drift"
        head = f"{self.name}: {test + ' ' if test else ''}{stat}={self.statistic:.3g}"
        if self.p_value is not None:
            cmp = "<" if self.p_value < self.threshold else ">="
            line = f"{head}, p={self.p_value:.2g} {cmp} {self.threshold:g} -> {verdict}"
        else:
            cmp = ">=" if self.statistic >= self.threshold else "<"
            line = f"{head} {cmp} {self.threshold:g} -> {verdict}"
        note = self.detail.get("note")
        return f"{line} ({note})" if note else line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- input checks ---------------------------------------------------------------------------------

def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if not 0.0 < a < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _check_positive(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number, got {value!r}")
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return v


def _numeric_1d(values: Any, what: str, *, min_rows: int = MIN_ROWS) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers")
    if arr.ndim != 1:
        raise InputError(f"{what} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size < min_rows:
        raise InputError(f"{what} has {arr.size} rows: a drift test needs at least {min_rows}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{what} has {bad.size} NaN/inf values (first at row {int(bad[0])})")
    return arr


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _labels(values: Any, what: str, *, min_rows: int = MIN_ROWS) -> list:
    if isinstance(values, str | bytes):
        raise InputError(f"{what} must be a sequence of labels, not a single string")
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InputError(f"{what} must be a 1-D sequence of labels, got shape {values.shape}")
        out = [_plain(v) for v in values.tolist()]
    else:
        try:
            out = [_plain(v) for v in values]
        except TypeError:
            raise InputError(f"{what} must be a sequence of labels")
    if len(out) < min_rows:
        raise InputError(f"{what} has {len(out)} rows: a drift test needs at least {min_rows}")
    for i, v in enumerate(out):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise InputError(f"{what} has a missing label (None/NaN) at row {i}")
        try:
            hash(v)
        except TypeError:
            raise InputError(f"{what} has an unhashable label at row {i}: {type(v).__name__}")
    return out


def _category_order(cats: Iterable) -> list:
    cats = list(cats)
    try:
        return sorted(cats)
    except TypeError:  # mixed types: a stable order by type then text
        return sorted(cats, key=lambda c: (type(c).__name__, str(c)))


# ---- numeric: input length ------------------------------------------------------------------------

def length_drift(ref_lengths: Sequence[float] | np.ndarray, cur_lengths: Sequence[float] | np.ndarray, *,
                 alpha: float = 0.05, large_ref: int = 1000, wasserstein_threshold: float = 0.1,
                 name: str = "input length") -> DriftTest:
    """Drift of a numeric distribution (input lengths): KS for small references, normed Wasserstein else.

    Reference of at most ``large_ref`` rows: two-sample KS (``scipy.stats.ks_2samp``, two-sided),
    drift when p < ``alpha``. Larger reference: Wasserstein-1 distance divided by the reference's
    standard deviation (floored at 0.001, Evidently's guard for a constant reference, so any change
    of a constant reference is drift), drift when >= ``wasserstein_threshold``; p_value is None.
    Fewer than 5 rows on either side, NaN/inf -> InputError.
    """
    from scipy import stats

    alpha = _check_alpha(alpha)
    wasserstein_threshold = _check_positive(wasserstein_threshold, "wasserstein_threshold")
    ref = _numeric_1d(ref_lengths, "reference lengths")
    cur = _numeric_1d(cur_lengths, "current lengths")
    detail: dict[str, Any] = {
        "n_ref": int(ref.size), "n_cur": int(cur.size),
        "ref_mean": float(ref.mean()), "cur_mean": float(cur.mean()),
        "ref_median": float(np.median(ref)), "cur_median": float(np.median(cur)),
    }
    if ref.size <= int(large_ref):
        res = stats.ks_2samp(ref, cur, alternative="two-sided")
        d, p = float(res.statistic), float(res.pvalue)
        return DriftTest(name=name, statistic=d, p_value=p, threshold=alpha, method="ks",
                         drift=bool(p < alpha), detail=detail)
    ref_std = float(ref.std())
    scale = max(ref_std, 1e-3)
    dist = float(stats.wasserstein_distance(ref, cur)) / scale
    detail.update(ref_std=ref_std, scale=scale)
    return DriftTest(name=name, statistic=dist, p_value=None, threshold=wasserstein_threshold,
                     method="wasserstein_normed", drift=bool(dist >= wasserstein_threshold), detail=detail)


# ---- categorical: labels / predictions ------------------------------------------------------------

def _counts(ref: list, cur: list) -> tuple[list, np.ndarray, np.ndarray]:
    cats = _category_order(set(ref) | set(cur))
    index = {c: i for i, c in enumerate(cats)}
    rc = np.zeros(len(cats), dtype=np.int64)
    cc = np.zeros(len(cats), dtype=np.int64)
    for v in ref:
        rc[index[v]] += 1
    for v in cur:
        cc[index[v]] += 1
    return cats, rc, cc


def _psi(rc: np.ndarray, cc: np.ndarray, eps: float) -> float:
    """PSI = sum_k (q_k - p_k) * ln(q_k / p_k); a zero proportion on either side is replaced by eps."""
    p = rc / rc.sum()
    q = cc / cc.sum()
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_drift(ref_labels: Sequence | np.ndarray, cur_labels: Sequence | np.ndarray, *,
              threshold: float = 0.2, moderate: float = 0.1, eps: float = PSI_EPSILON,
              name: str = "labels") -> DriftTest:
    """Population stability index of two categorical samples; drift when PSI >= ``threshold``.

    PSI = sum over the union of categories of (cur% - ref%) * ln(cur% / ref%), with a proportion
    of 0 (a category seen on one side only) replaced by ``eps`` (1e-4, as Evidently does) so the
    log stays finite. ``detail["level"]``: "significant" (>= threshold), "moderate" (>= moderate)
    or "none". No p-value.
    """
    threshold = _check_positive(threshold, "psi threshold")
    moderate = _check_positive(moderate, "psi moderate threshold")
    eps = _check_positive(eps, "psi eps")
    ref = _labels(ref_labels, "reference labels")
    cur = _labels(cur_labels, "current labels")
    cats, rc, cc = _counts(ref, cur)
    psi = _psi(rc, cc, eps)
    level = "significant" if psi >= threshold else "moderate" if psi >= moderate else "none"
    detail = {"categories": cats, "ref_counts": rc.tolist(), "cur_counts": cc.tolist(),
              "ref_proportions": (rc / rc.sum()).tolist(), "cur_proportions": (cc / cc.sum()).tolist(),
              "eps": eps, "level": level}
    return DriftTest(name=name, statistic=psi, p_value=None, threshold=threshold, method="psi",
                     drift=bool(psi >= threshold), detail=detail)


def categorical_drift(ref_labels: Sequence | np.ndarray, cur_labels: Sequence | np.ndarray, *,
                      alpha: float = 0.05, psi_threshold: float = 0.2,
                      name: str = "labels") -> DriftTest:
    """Chi-square test of homogeneity on the 2 x K counts (union of categories); drift when p < alpha.

    Pearson's statistic without Yates' correction (``chi2_contingency(..., correction=False)``;
    the correction makes a 2 x 2 test conservative). A category seen on one side only is a column
    like any other. A single category overall -> statistic 0, p 1, no drift (nothing to test).
    ``detail`` carries the counts, the PSI (eps 1e-4, see :func:`psi_drift`) and whether it is at or
    above ``psi_threshold``, and ``min_expected`` / ``low_expected_cells`` (cells with expected count
    < 5: the chi-square approximation is rough when they are many).
    """
    from scipy import stats

    alpha = _check_alpha(alpha)
    psi_threshold = _check_positive(psi_threshold, "psi_threshold")
    ref = _labels(ref_labels, "reference labels")
    cur = _labels(cur_labels, "current labels")
    cats, rc, cc = _counts(ref, cur)
    psi = _psi(rc, cc, PSI_EPSILON)
    detail: dict[str, Any] = {
        "categories": cats, "ref_counts": rc.tolist(), "cur_counts": cc.tolist(),
        "n_ref": len(ref), "n_cur": len(cur), "psi": psi, "psi_threshold": psi_threshold,
        "psi_drift": bool(psi >= psi_threshold),
    }
    if len(cats) < 2:
        detail.update(dof=0, min_expected=float(len(ref) + len(cur)), low_expected_cells=0)
        return DriftTest(name=name, statistic=0.0, p_value=1.0, threshold=alpha, method="chi2",
                         drift=False, detail=detail)
    res = stats.chi2_contingency(np.stack([rc, cc]), correction=False)
    expected = np.asarray(res.expected_freq)
    chi2, p = float(res.statistic), float(res.pvalue)
    detail.update(dof=int(res.dof), min_expected=float(expected.min()),
                  low_expected_cells=int(np.count_nonzero(expected < 5)))
    return DriftTest(name=name, statistic=chi2, p_value=p, threshold=alpha, method="chi2",
                     drift=bool(p < alpha), detail=detail)


# ---- embeddings: MMD permutation test -------------------------------------------------------------

_PERM_BATCH_ELEMENTS = 4_000_000  # permutations evaluated at once * pooled rows


def _matrix(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a numeric array [rows, dim]")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array [rows, dim], got shape {arr.shape}")
    if arr.shape[0] < MIN_ROWS:
        raise InputError(f"{what} has {arr.shape[0]} rows: a drift test needs at least {MIN_ROWS}")
    if arr.shape[1] < 1:
        raise InputError(f"{what} has no columns")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise InputError(f"{what} has NaN/inf values in {bad.size} rows (first at row {int(bad[0])})")
    return arr


def _mmd2_unbiased(k0: np.ndarray, in_x: np.ndarray, n: int, m: int,
                   row_sums: np.ndarray, total: float) -> np.ndarray:
    """Unbiased MMD^2 for each row of the 0/1 indicator matrix ``in_x`` [P, N] (1 = sample x).

    ``k0`` is the pooled kernel matrix with a zero diagonal. With a = in_x, b = 1 - a:
    sXX = a'K0a, sXY = a'K0b = a'K0 1 - sXX, sYY = 1'K0 1 - sXX - 2 sXY.
    """
    ka = in_x @ k0
    sxx = np.einsum("pn,pn->p", ka, in_x)
    sxy = in_x @ row_sums - sxx
    syy = total - sxx - 2.0 * sxy
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, *, n_permutations: int = 500, seed: int = 0,
                         alpha: float = 0.05, kernel: str = "rbf", bandwidth: str | float = "median",
                         name: str = "embedding") -> DriftTest:
    """Two-sample MMD permutation test on ``x`` [n, d] (reference) and ``y`` [m, d] (current).

    Statistic: the unbiased MMD^2 estimate with the RBF kernel k(a, b) = exp(-|a - b|^2 / (2 s^2)),
    s = ``bandwidth`` or, with "median", the median pairwise distance of the pooled sample (the
    median heuristic; mean positive distance, then 1, if that median is 0). The pooled kernel matrix
    is computed once; each permutation reassigns the pooled rows to the two samples.
    p = (1 + #{permuted MMD^2 >= observed}) / (1 + n_permutations), so it is never below
    1 / (1 + n_permutations) (``detail["min_p_value"]``); drift when p < alpha. Deterministic for a
    seed. Memory: O((n + m)^2) for the kernel matrix.
    """
    alpha = _check_alpha(alpha)
    if kernel != "rbf":
        raise InputError(f"unknown MMD kernel {kernel!r}: only 'rbf' is supported")
    try:
        n_perm = int(n_permutations)
    except (TypeError, ValueError):
        raise InputError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    if n_perm < 1 or n_perm != n_permutations:
        raise InputError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    xa = _matrix(x, "reference embeddings")
    ya = _matrix(y, "current embeddings")
    if xa.shape[1] != ya.shape[1]:
        raise InputError(f"reference embeddings have dimension {xa.shape[1]} "
                         f"but current embeddings have {ya.shape[1]}")
    n, m = xa.shape[0], ya.shape[0]
    z = np.concatenate([xa, ya])
    z = z - z.mean(axis=0)  # distances are shift-invariant; centring improves the Gram-trick accuracy
    sq = np.einsum("nd,nd->n", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    np.fill_diagonal(d2, 0.0)

    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise InputError(f"unknown MMD bandwidth {bandwidth!r}: use 'median' or a positive number")
        off = d2[np.triu_indices(n + m, k=1)]
        sigma = float(np.sqrt(np.median(off)))
        if sigma <= 0:
            pos = off[off > 0]
            sigma = float(np.sqrt(pos).mean()) if pos.size else 1.0
    else:
        sigma = _check_positive(bandwidth, "MMD bandwidth")

    k0 = np.exp(-d2 / (2.0 * sigma * sigma))
    np.fill_diagonal(k0, 0.0)
    row_sums = k0.sum(axis=1)
    total = float(row_sums.sum())

    observed_ind = np.zeros((1, n + m))
    observed_ind[0, :n] = 1.0
    observed = float(_mmd2_unbiased(k0, observed_ind, n, m, row_sums, total)[0])

    rng = np.random.default_rng(seed)
    batch = max(1, _PERM_BATCH_ELEMENTS // (n + m))
    exceed = 0
    tol = 1e-12 * max(1.0, abs(observed))  # ties with the observed value count as >=
    done = 0
    while done < n_perm:
        p = min(batch, n_perm - done)
        chosen = np.argsort(rng.random((p, n + m)), axis=1)[:, :n]
        ind = np.zeros((p, n + m))
        np.put_along_axis(ind, chosen, 1.0, axis=1)
        stats_ = _mmd2_unbiased(k0, ind, n, m, row_sums, total)
        exceed += int(np.count_nonzero(stats_ >= observed - tol))
        done += p
    p_value = (1 + exceed) / (1 + n_perm)
    detail = {"n_ref": n, "n_cur": m, "dim": int(xa.shape[1]), "kernel": kernel, "bandwidth": sigma,
              "bandwidth_rule": bandwidth if isinstance(bandwidth, str) else "given",
              "n_permutations": n_perm, "seed": int(seed), "min_p_value": 1.0 / (1 + n_perm)}
    return DriftTest(name=name, statistic=observed, p_value=float(p_value), threshold=alpha,
                     method="mmd2_permutation", drift=bool(p_value < alpha), detail=detail)


# ---- label-free performance estimate --------------------------------------------------------------

def _confidences(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers in [0, 1]")
    if arr.ndim == 2:  # class-probability matrix [n, K]: the top-label confidence per row
        if arr.shape[1] < 1:
            raise InputError(f"{what} has no classes")
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise InputError(f"{what} has NaN/inf values in {bad.size} rows (first at row {int(bad[0])})")
        arr = arr.max(axis=1)
    arr = _numeric_1d(arr, what)
    if arr.min() < 0 or arr.max() > 1:
        raise InputError(f"{what} must be probabilities in [0, 1], got values in "
                         f"[{arr.min():.3g}, {arr.max():.3g}]")
    return arr


def confidence_drift(ref_confidences: Sequence[float] | np.ndarray,
                     cur_confidences: Sequence[float] | np.ndarray, *, alpha: float = 0.05,
                     name: str = "confidence") -> DriftTest:
    """Label-free performance drift: KS test on top-label confidences plus an accuracy ESTIMATE.

    Inputs: the verbalizer's top-label probability per example (1-D), or class probabilities
    [n, K] (the row maximum is taken). The estimated accuracy of each sample is its mean top-label
    confidence (average-confidence estimate: it equals the expected accuracy only for a calibrated
    model; it is an ESTIMATE, not a measurement). ``detail``: estimated_accuracy_ref,
    estimated_accuracy_cur, estimated_accuracy_change (cur - ref; negative = estimated drop),
    ``estimate: True``. Drift when the KS p-value < alpha (the confidence distribution changed, in
    either direction).
    """
    from scipy import stats

    alpha = _check_alpha(alpha)
    ref = _confidences(ref_confidences, "reference confidences")
    cur = _confidences(cur_confidences, "current confidences")
    res = stats.ks_2samp(ref, cur, alternative="two-sided")
    d, p = float(res.statistic), float(res.pvalue)
    acc_ref, acc_cur = float(ref.mean()), float(cur.mean())
    detail = {
        "n_ref": int(ref.size), "n_cur": int(cur.size),
        "estimated_accuracy_ref": acc_ref, "estimated_accuracy_cur": acc_cur,
        "estimated_accuracy_change": acc_cur - acc_ref, "estimate": True,
        "note": f"ESTIMATED accuracy {acc_ref:.3f} -> {acc_cur:.3f} from verbalizer confidence, no labels",
    }
    return DriftTest(name=name, statistic=d, p_value=p, threshold=alpha, method="confidence_ks",
                     drift=bool(p < alpha), detail=detail)
