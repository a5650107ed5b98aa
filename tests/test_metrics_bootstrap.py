"""Bootstrap confidence intervals over subjects."""

from __future__ import annotations

import numpy as np
import pytest

from metrics import binary_scores, bootstrap_ci


def test_deterministic_and_contains_estimate():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(20), 5)
    values = rng.normal(1.0, 0.3, size=100) + np.repeat(rng.normal(0, 0.2, 20), 5)
    a = bootstrap_ci(values, subjects, n_boot=300, seed=3)
    b = bootstrap_ci(values, subjects, n_boot=300, seed=3)
    assert a == b
    assert a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(values.mean())
    assert a.n_subjects == 20 and a.n_boot == 300
    c = bootstrap_ci(values, subjects, n_boot=300, seed=4)
    assert c != a


def test_resamples_subjects_not_samples():
    # subject "a" has 99 samples of 0, subject "b" one sample of 1: a replicate can only be
    # mean 0 (a, a), 1 (b, b) or 1/100 (a, b); resampling images would give values near 0.01
    values = np.r_[np.zeros(99), 1.0]
    subjects = np.array(["a"] * 99 + ["b"])
    seen = set()
    ci = bootstrap_ci(values, subjects, statistic=lambda v: seen.add(round(v.mean(), 6)) or 0.0,
                      n_boot=200)
    assert seen <= {0.0, 1.0, 0.01} and len(seen) == 3
    assert ci.n_subjects == 2


def test_single_subject_collapses():
    ci = bootstrap_ci(np.array([1.0, 2.0, 3.0]), ["s"] * 3, n_boot=50)
    assert ci.low == ci.high == ci.estimate == 2.0


def test_index_statistic_for_f1_and_pooled_median():
    rng = np.random.default_rng(1)
    n = 60
    subjects = np.repeat(np.arange(12), 5)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.uniform(size=n) < 0.8, y_true, 1 - y_true)
    f1 = bootstrap_ci(None, subjects, lambda idx: binary_scores(y_true[idx], y_pred[idx]).f1,
                      n_boot=200)
    assert f1.estimate == pytest.approx(binary_scores(y_true, y_pred).f1)
    assert 0 <= f1.low <= f1.estimate <= f1.high <= 1
    # rows of (y_true, y_pred) as values work too
    pairs = np.c_[y_true, y_pred]
    f1b = bootstrap_ci(pairs, subjects, lambda v: binary_scores(v[:, 0], v[:, 1]).f1, n_boot=200)
    assert f1b == f1
    dists = [rng.gamma(2, 0.5, size=rng.integers(50, 150)) for _ in range(n)]
    med = bootstrap_ci(None, subjects,
                       lambda idx: np.median(np.concatenate([dists[i] for i in idx])),
                       n_boot=100)
    assert med.estimate == pytest.approx(np.median(np.concatenate(dists)))
    assert med.low < med.estimate < med.high


def test_nonfinite_replicates_dropped(caplog):
    values = np.array([1.0, np.nan, 2.0])
    ci = bootstrap_ci(values, [0, 1, 2], statistic=np.mean, n_boot=200)
    assert ci.n_boot < 200 and np.isfinite(ci.low)
    assert "non-finite" in caplog.text


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="samples but subjects"):
        bootstrap_ci(np.ones(3), [0, 1])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(np.ones(3), [0, 1, 2], alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), [0, 1, 2], n_boot=0)
    with pytest.raises(ValueError, match="not finite"):
        bootstrap_ci(np.full(3, np.nan), [0, 1, 2], n_boot=5)


def test_index_function_as_values():
    subjects = np.repeat(np.arange(10), 3)
    x = np.random.default_rng(2).normal(size=30)
    a = bootstrap_ci(lambda idx: x[idx].mean(), subjects, n_boot=100)
    b = bootstrap_ci(None, subjects, lambda idx: x[idx].mean(), n_boot=100)
    c = bootstrap_ci(x, subjects, n_boot=100)
    assert a == b == c
    with pytest.raises(ValueError, match="not both"):
        bootstrap_ci(lambda idx: 0.0, subjects, statistic=np.median)


def test_bootstrap_of_sums_draws_the_same_replicates_as_the_loop():
    """Counts give the very same interval as bootstrap_ci's replicate loop; float sums the
    same to rounding."""
    from metrics import bootstrap_ci, bootstrap_ci_of_sums

    rng = np.random.default_rng(3)
    subjects = np.repeat([f"s{k}" for k in rng.permutation(17)], rng.integers(1, 6, 17))
    hits = rng.integers(0, 2, subjects.size).astype(float)
    values = rng.normal(2.0, 1.0, subjects.size)
    for seed, alpha in ((0, 0.05), (7, 0.2)):
        loop = bootstrap_ci(hits, subjects, n_boot=300, alpha=alpha, seed=seed)
        fast = bootstrap_ci_of_sums(np.stack([np.ones_like(hits), hits], 1), subjects,
                                    lambda s: s[..., 1] / s[..., 0], n_boot=300,
                                    alpha=alpha, seed=seed)
        assert fast == loop
        loop = bootstrap_ci(values, subjects, n_boot=300, alpha=alpha, seed=seed)
        fast = bootstrap_ci_of_sums(np.stack([np.ones_like(values), values], 1), subjects,
                                    lambda s: s[..., 1] / s[..., 0], n_boot=300,
                                    alpha=alpha, seed=seed)
        np.testing.assert_allclose(fast[:3], loop[:3], rtol=1e-12)
        assert fast[3:] == loop[3:]
    with pytest.raises(ValueError, match="parts"):
        bootstrap_ci_of_sums(np.ones((3, 2)), subjects, lambda s: s[..., 0])
