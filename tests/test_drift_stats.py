"""Drift statistics on synthetic distributions with known answers (issue 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptreg.errors import InputError
from promptreg.evaluation.drift_stats import (
    DriftTest,
    categorical_drift,
    confidence_drift,
    length_drift,
    mmd_permutation_test,
    psi_drift,
)

ALPHA = 0.05
SEEDS = 200
# 200 seeds at alpha 0.05: 10 alarms expected, sd ~3.1; <= 20 alarms (0.10) is ~3.2 sd above
MAX_FALSE_ALARM_RATE = 0.10


def _rate(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


# ---- (a) no drift: false-positive rate over repeated seeds ------------------------------------------

def test_ks_false_positive_rate():
    def alarm(seed):
        rng = np.random.default_rng(seed)
        return length_drift(rng.normal(50, 10, 100), rng.normal(50, 10, 80), alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate <= MAX_FALSE_ALARM_RATE, rate


def test_ks_false_positive_rate_integer_lengths():
    # token lengths are integers: ties make KS conservative, never liberal
    def alarm(seed):
        rng = np.random.default_rng(10_000 + seed)
        return length_drift(rng.poisson(30, 150), rng.poisson(30, 120), alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate <= MAX_FALSE_ALARM_RATE, rate


def test_chi_square_false_positive_rate():
    cats, probs = np.array(["positive", "negative", "neutral"]), [0.5, 0.3, 0.2]

    def alarm(seed):
        rng = np.random.default_rng(seed)
        return categorical_drift(rng.choice(cats, 100, p=probs), rng.choice(cats, 100, p=probs),
                                 alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate <= MAX_FALSE_ALARM_RATE, rate


def test_mmd_false_positive_rate():
    def alarm(seed):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
        return mmd_permutation_test(x, y, n_permutations=100, seed=seed, alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate <= MAX_FALSE_ALARM_RATE, rate


def test_confidence_false_positive_rate():
    def alarm(seed):
        rng = np.random.default_rng(seed)
        return confidence_drift(rng.beta(8, 2, 100), rng.beta(8, 2, 100), alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate <= MAX_FALSE_ALARM_RATE, rate


# ---- (b) shifted distributions: power -------------------------------------------------------------

def test_ks_detects_one_sd_mean_shift():
    def alarm(seed):
        rng = np.random.default_rng(seed)
        return length_drift(rng.normal(0, 1, 200), rng.normal(1, 1, 200), alpha=ALPHA).drift

    rate = _rate(alarm(s) for s in range(SEEDS))
    assert rate >= 0.95, rate


def test_chi_square_detects_mix_change():
    def result(seed):
        rng = np.random.default_rng(seed)
        ref = rng.choice(["pos", "neg"], 100, p=[0.5, 0.5])
        cur = rng.choice(["pos", "neg"], 100, p=[0.8, 0.2])
        return categorical_drift(ref, cur, alpha=ALPHA)

    results = [result(s) for s in range(50)]
    assert _rate(r.drift for r in results) >= 0.95
    # PSI of 50/50 -> 80/20 is 0.42 in expectation: mostly "significant"
    assert _rate(r.detail["psi_drift"] for r in results) >= 0.8


def test_mmd_detects_shift_in_every_dimension():
    def alarm(seed):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(100, 16)), rng.normal(size=(100, 16)) + 0.5
        return mmd_permutation_test(x, y, n_permutations=200, seed=seed, alpha=ALPHA)

    results = [alarm(s) for s in range(20)]
    assert all(r.drift for r in results)
    assert all(r.p_value == pytest.approx(1 / 201) for r in results)  # no permutation reaches it


def test_confidence_detects_drop_and_estimates_it():
    rng = np.random.default_rng(0)
    res = confidence_drift(rng.beta(9, 1, 300), rng.beta(3, 2, 300))
    assert res.drift and res.method == "confidence_ks"
    assert res.detail["estimate"] is True
    assert res.detail["estimated_accuracy_ref"] == pytest.approx(0.9, abs=0.02)
    assert res.detail["estimated_accuracy_cur"] == pytest.approx(0.6, abs=0.05)
    assert res.detail["estimated_accuracy_change"] < -0.25
    line = res.explain()
    assert "\n" not in line and "ESTIMATED" in line and "-> drift" in line


def test_confidence_accepts_probability_matrix():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    res = confidence_drift(probs, probs)
    assert res.detail["estimated_accuracy_ref"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.7 + 0.5) / 5)
    assert not res.drift and res.p_value == pytest.approx(1.0)


# ---- (c) PSI by hand --------------------------------------------------------------------------------

def test_psi_hand_computed():
    ref = ["a"] * 50 + ["b"] * 50
    cur = ["a"] * 80 + ["b"] * 20
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)  # 0.4159
    res = psi_drift(ref, cur)
    assert res.statistic == pytest.approx(expected, rel=1e-12)
    assert res.statistic == pytest.approx(0.4159, abs=1e-4)
    assert res.drift and res.detail["level"] == "significant" and res.p_value is None
    assert res.explain() == "labels: PSI=0.416 >= 0.2 -> drift"
    assert categorical_drift(ref, cur).detail["psi"] == pytest.approx(expected, rel=1e-12)


def test_psi_empty_bin_uses_epsilon():
    ref = ["a"] * 60 + ["b"] * 40
    cur = ["a"] * 50 + ["b"] * 40 + ["c"] * 10  # "c" never seen in the reference
    eps = 1e-4
    expected = ((0.5 - 0.6) * math.log(0.5 / 0.6) + (0.4 - 0.4) * 0.0
                + (0.1 - eps) * math.log(0.1 / eps))
    res = psi_drift(ref, cur)
    assert res.statistic == pytest.approx(expected, rel=1e-12)
    assert res.detail["categories"] == ["a", "b", "c"]
    assert res.detail["ref_counts"] == [60, 40, 0] and res.detail["cur_counts"] == [50, 40, 10]


def test_psi_levels():
    same = psi_drift(["x", "y"] * 10, ["x", "y"] * 10)
    assert same.statistic == 0.0 and not same.drift and same.detail["level"] == "none"
    # 50/50 -> 60/40: PSI = 0.1 ln(1.2) - 0.1 ln(0.8) = 0.0405 (none);
    # 50/50 -> 70/30: PSI = 0.2 ln(1.4) - 0.2 ln(0.6) = 0.1695 (moderate)
    r60 = psi_drift(["x"] * 50 + ["y"] * 50, ["x"] * 60 + ["y"] * 40)
    r70 = psi_drift(["x"] * 50 + ["y"] * 50, ["x"] * 70 + ["y"] * 30)
    assert r60.statistic == pytest.approx(0.1 * math.log(1.2) - 0.1 * math.log(0.8))
    assert r60.detail["level"] == "none"
    assert r70.statistic == pytest.approx(0.2 * math.log(1.4) - 0.2 * math.log(0.6))
    assert r70.detail["level"] == "moderate" and not r70.drift


def test_chi_square_known_table_and_single_category():
    ref = ["a"] * 30 + ["b"] * 20
    cur = ["a"] * 10 + ["b"] * 40
    # Pearson chi-square by hand on [[30, 20], [10, 40]], expected [[20, 30], [20, 30]]
    chi2 = (10**2 / 20 + 10**2 / 30) * 2
    res = categorical_drift(ref, cur)
    assert res.statistic == pytest.approx(chi2)
    assert res.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))  # chi2 with 1 dof
    assert res.drift and res.detail["dof"] == 1 and res.detail["low_expected_cells"] == 0

    single = categorical_drift(["pos"] * 10, ["pos"] * 7)
    assert (single.statistic, single.p_value, single.drift) == (0.0, 1.0, False)
    assert single.explain() == "labels: chi-square chi2=0, p=1 >= 0.05 -> no drift"


def test_categorical_integer_labels_and_new_category():
    res = categorical_drift(np.array([0, 1] * 20), np.array([0, 1, 2, 2] * 10))
    assert res.detail["categories"] == [0, 1, 2] and res.drift
    assert all(type(c) is int for c in res.detail["categories"])


# ---- (d) large reference: normed Wasserstein --------------------------------------------------------

def test_wasserstein_path_for_large_reference():
    rng = np.random.default_rng(0)
    ref = rng.normal(40, 8, 2000)
    # cur = ref shifted by 0.2 sd: W1 is exactly the shift, so the normed distance is 0.2
    shifted = length_drift(ref, ref + 0.2 * ref.std())
    assert shifted.method == "wasserstein_normed" and shifted.p_value is None
    assert shifted.statistic == pytest.approx(0.2, rel=1e-9)
    assert shifted.drift and shifted.threshold == 0.1
    assert shifted.explain() == "input length: normed Wasserstein=0.2 >= 0.1 -> drift"

    same = length_drift(ref, rng.normal(40, 8, 500))
    assert same.method == "wasserstein_normed" and not same.drift and same.statistic < 0.1

    # the switch is on the reference size: 1000 rows -> KS, 1001 -> Wasserstein
    assert length_drift(ref[:1000], ref[:50]).method == "ks"
    assert length_drift(ref[:1001], ref[:50]).method == "wasserstein_normed"
    assert length_drift(ref[:1001], ref[:50], large_ref=5000).method == "ks"


def test_wasserstein_constant_reference_guard():
    ref = np.full(1500, 12.0)
    assert length_drift(ref, np.full(50, 12.0)).statistic == 0.0
    moved = length_drift(ref, np.full(50, 13.0))
    assert math.isfinite(moved.statistic) and moved.drift and moved.detail["scale"] == 1e-3


def test_ks_explain_format():
    res = DriftTest(name="input length", statistic=0.31, p_value=0.0004, threshold=0.05, method="ks",
                    drift=True, detail={})
    assert res.explain() == "input length: KS D=0.31, p=0.0004 < 0.05 -> drift"
    rng = np.random.default_rng(1)
    real = length_drift(rng.normal(0, 1, 50), rng.normal(0, 1, 50))
    assert real.explain().startswith("input length: KS D=") and real.explain().endswith("-> no drift")
    assert real.to_dict()["method"] == "ks"


# ---- (e) determinism -----------------------------------------------------------------------------------

def test_mmd_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(35, 8)) + 0.15
    a = mmd_permutation_test(x, y, n_permutations=300, seed=7)
    b = mmd_permutation_test(x, y, n_permutations=300, seed=7)
    assert a == b
    c = mmd_permutation_test(x, y, n_permutations=300, seed=8)
    assert c.statistic == a.statistic  # the statistic does not depend on the seed, only the p-value
    assert 1 / 301 <= c.p_value <= 1


def test_mmd_statistic_matches_direct_unbiased_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3)) + 0.3
    res = mmd_permutation_test(x, y, n_permutations=10, bandwidth=1.5)

    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * 1.5**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    direct = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
              - 2 * kxy.mean())
    assert res.statistic == pytest.approx(direct, rel=1e-9, abs=1e-12)
    assert res.detail["bandwidth"] == 1.5


def test_mmd_median_bandwidth_and_identical_samples():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 2))
    res = mmd_permutation_test(x, x.copy(), n_permutations=50)
    assert not res.drift
    z = np.concatenate([x, x])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(40, 1)]
    assert res.detail["bandwidth"] == pytest.approx(np.median(d))
    same_rows = mmd_permutation_test(np.ones((6, 3)), np.ones((7, 3)), n_permutations=20)
    assert math.isfinite(same_rows.statistic) and not same_rows.drift


def test_length_and_categorical_are_deterministic():
    rng = np.random.default_rng(6)
    ref, cur = rng.normal(size=60), rng.normal(size=60)
    assert length_drift(ref, cur) == length_drift(ref.tolist(), cur.tolist())
    labels = rng.choice(["a", "b", "c"], 60)
    assert categorical_drift(labels, labels[::-1]) == categorical_drift(list(labels), list(labels[::-1]))


# ---- (f) bad input: one-line InputError ---------------------------------------------------------------

def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: length_drift([1, 2, 3], [1, 2, 3, 4, 5]), "at least 5"),
        (lambda: length_drift([1, 2, 3, 4, 5], [1, 2, 3, 4]), "at least 5"),
        (lambda: length_drift([1, 2, float("nan"), 4, 5], [1, 2, 3, 4, 5]), "NaN"),
        (lambda: length_drift([1, 2, 3, 4, 5], [1, 2, 3, 4, float("inf")]), "NaN/inf"),
        (lambda: length_drift([[1, 2]] * 5, [1, 2, 3, 4, 5]), "1-D"),
        (lambda: length_drift(["a", "b", "c", "d", "e"], [1, 2, 3, 4, 5]), "numbers"),
        (lambda: length_drift([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], alpha=1.5), "alpha"),
        (lambda: categorical_drift(["a", "b"], ["a", "b", "a", "b", "a"]), "at least 5"),
        (lambda: categorical_drift(["a", None, "b", "a", "b"], ["a"] * 5), "missing label"),
        (lambda: categorical_drift([1.0, float("nan"), 2.0, 1.0, 2.0], [1.0] * 5), "missing label"),
        (lambda: categorical_drift("abcdef", ["a"] * 5), "single string"),
        (lambda: psi_drift(["a"] * 5, ["a"] * 3), "at least 5"),
        (lambda: mmd_permutation_test(np.ones((3, 2)), np.ones((10, 2))), "at least 5"),
        (lambda: mmd_permutation_test(np.ones((6, 2)), np.ones((6, 3))), "dimension"),
        (lambda: mmd_permutation_test(np.full((6, 2), np.nan), np.ones((6, 2))), "NaN"),
        (lambda: mmd_permutation_test(np.ones((6, 2)), np.ones((6, 2)), kernel="poly"), "kernel"),
        (lambda: mmd_permutation_test(np.ones((6, 2)), np.ones((6, 2)), bandwidth="scott"), "bandwidth"),
        (lambda: mmd_permutation_test(np.ones((6, 2)), np.ones((6, 2)), n_permutations=0), "n_permutations"),
        (lambda: confidence_drift([0.5, 0.6, 1.2, 0.7, 0.8], [0.5] * 5), "[0, 1]"),
        (lambda: confidence_drift([0.5, float("nan"), 0.6, 0.7, 0.8], [0.5] * 5), "NaN"),
    ],
)
def test_bad_input_is_one_line_input_error(call, fragment):
    with pytest.raises(InputError) as excinfo:
        call()
    assert fragment in _one_line(excinfo)


# ---- (g) mean-pooled hidden states of the tiny model ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, tokenizer


TEXTS = [
    "the acting was terrible and the plot was boring , i would never recommend this movie",
    "good movie",
    "a brilliant film with beautiful music and a great cast",
    "bad",
]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_mean_pooled_hidden_states_padding_invariant(tiny_lm, padding_side):
    from promptreg.evaluation.embeddings import mean_pooled_hidden_states

    model, tokenizer = tiny_lm
    batch = mean_pooled_hidden_states(model, tokenizer, TEXTS, padding_side=padding_side)
    assert batch.shape == (len(TEXTS), model.config.hidden_size) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    for i, text in enumerate(TEXTS):
        alone = mean_pooled_hidden_states(model, tokenizer, [text])
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-5, rtol=0)
    # in input order, whatever the batching
    one_by_one = mean_pooled_hidden_states(model, tokenizer, TEXTS, batch_size=1)
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5, rtol=0)
    # different texts give different vectors
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_mean_pooled_hidden_states_is_the_masked_mean(tiny_lm):
    import torch

    from promptreg.evaluation.embeddings import mean_pooled_hidden_states

    model, tokenizer = tiny_lm
    ids = tokenizer([TEXTS[2]], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
    got = mean_pooled_hidden_states(model, tokenizer, [TEXTS[2]])[0]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    truncated = mean_pooled_hidden_states(model, tokenizer, [TEXTS[0]], max_tokens=3)[0]
    with torch.no_grad():
        ids3 = tokenizer([TEXTS[0]], return_tensors="pt")["input_ids"][:, :3]
        np.testing.assert_allclose(truncated, model.model(input_ids=ids3).last_hidden_state[0].mean(0).numpy(),
                                   atol=1e-5, rtol=0)


def test_mean_pooled_hidden_states_edge_cases(tiny_lm):
    from promptreg.evaluation.embeddings import mean_pooled_hidden_states

    model, tokenizer = tiny_lm
    model.train()
    empty = mean_pooled_hidden_states(model, tokenizer, [])
    assert empty.shape == (0, model.config.hidden_size)
    mean_pooled_hidden_states(model, tokenizer, ["good"])
    assert model.training  # mode restored
    model.eval()
    with pytest.raises(InputError) as excinfo:
        mean_pooled_hidden_states(model, tokenizer, "good movie")
    _one_line(excinfo)
    with pytest.raises(InputError) as excinfo:
        mean_pooled_hidden_states(model, tokenizer, ["good", 3])
    _one_line(excinfo)


def test_embedding_drift_end_to_end_on_tiny_model(tiny_lm):
    """Embeddings of a different text population drift; a resample of the same population does not."""
    from promptreg.evaluation.embeddings import mean_pooled_hidden_states

    model, tokenizer = tiny_lm
    rng = np.random.default_rng(0)
    reviews = ["good", "great", "bad", "terrible", "movie", "film", "plot", "acting", "boring", "fun"]
    questions = ["question", "answer", "text", "label", "input", "output", "true", "false", "classify", "?"]

    def sample(words, n):
        return [" ".join(rng.choice(words, rng.integers(4, 9))) for _ in range(n)]

    ref = mean_pooled_hidden_states(model, tokenizer, sample(reviews, 40))
    same = mean_pooled_hidden_states(model, tokenizer, sample(reviews, 40))
    other = mean_pooled_hidden_states(model, tokenizer, sample(questions, 40))
    assert not mmd_permutation_test(ref, same, n_permutations=200).drift
    assert mmd_permutation_test(ref, other, n_permutations=200).drift
