"""Cumulative error curves and their area."""

from __future__ import annotations

import numpy as np
import pytest

from metrics import NOW_THRESHOLDS_MM, cumulative_curve, curve_auc, pooled_curve


def test_known_fractions():
    c = cumulative_curve([0.5, 1.0, 1.0, 3.0], thresholds=[0.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(c.fraction, [0, 0.25, 0.75, 0.75, 1.0, 1.0])
    assert c.n == 4


def test_default_grid_is_now_range():
    assert NOW_THRESHOLDS_MM[0] == 0.0 and NOW_THRESHOLDS_MM[-1] == 8.0
    assert len(NOW_THRESHOLDS_MM) == 801
    c = cumulative_curve(np.array([2.0]))
    assert c.fraction[NOW_THRESHOLDS_MM < 2.0].max() == 0.0
    assert c.fraction[NOW_THRESHOLDS_MM >= 2.0].min() == 1.0


def test_failed_samples_count_as_misses():
    c = cumulative_curve([0.1, np.inf], thresholds=[0.0, 1.0, 100.0])
    np.testing.assert_allclose(c.fraction, [0.0, 0.5, 0.5])


def test_matches_brute_force_on_random_errors():
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 0.7, size=3000)
    c = cumulative_curve(e)
    want = [(e <= t).mean() for t in NOW_THRESHOLDS_MM]
    np.testing.assert_allclose(c.fraction, want)
    assert np.all(np.diff(c.fraction) >= 0)


def test_pooled_is_per_point():
    a, b = np.array([1.0, 1.0, 1.0]), np.array([5.0])
    c = pooled_curve([a, b], thresholds=[0.0, 2.0, 6.0])
    np.testing.assert_allclose(c.fraction, [0.0, 0.75, 1.0])
    per_sample = cumulative_curve([np.median(a), np.median(b)], thresholds=[0.0, 2.0, 6.0])
    np.testing.assert_allclose(per_sample.fraction, [0.0, 0.5, 1.0])


def test_auc_known_answers():
    zero = cumulative_curve(np.zeros(10))
    assert curve_auc(zero, 4.0) == pytest.approx(1.0)
    far = cumulative_curve(np.full(10, 9.0))
    assert curve_auc(far, 4.0) == 0.0
    # uniform errors on [0, 4]: F(t) = t / 4, area / limit = 0.5
    u = cumulative_curve(np.linspace(0, 4, 40001))
    assert curve_auc(u, 4.0) == pytest.approx(0.5, abs=1e-3)
    # exact identity: normalised area = mean(max(0, L - e)) / L for the step function
    rng = np.random.default_rng(1)
    e = rng.uniform(0, 6, 500)
    want = np.mean(np.maximum(0.0, 3.0 - e)) / 3.0
    assert curve_auc(cumulative_curve(e), 3.0) == pytest.approx(want, abs=0.01 / 3.0)
    # a limit between grid points is interpolated
    c = cumulative_curve([1.0], thresholds=[0.0, 1.0, 2.0])
    assert curve_auc(c, 1.5) == pytest.approx((0.5 * 1.0 * 1.0 + 0.5 * 1.0) / 1.5)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        cumulative_curve([])
    with pytest.raises(ValueError, match="NaN"):
        cumulative_curve([1.0, np.nan])
    with pytest.raises(ValueError, match="non-negative"):
        cumulative_curve([-1.0])
    with pytest.raises(ValueError, match="increasing"):
        cumulative_curve([1.0], thresholds=[0.0, 2.0, 1.0])
    c = cumulative_curve([1.0], thresholds=[0.5, 1.0])
    with pytest.raises(ValueError, match="cover"):
        curve_auc(c, 1.0)
    with pytest.raises(ValueError, match="cover"):
        curve_auc(cumulative_curve([1.0]), 10.0)
    with pytest.raises(ValueError, match="positive"):
        curve_auc(cumulative_curve([1.0]), 0.0)
    with pytest.raises(ValueError, match="at least one"):
        pooled_curve([])


def test_cumulative_curve_counts_equal_a_sorted_count_with_ties_and_misses():
    """Counted without sorting the errors: the same fractions as counting in sorted errors,
    errors equal to a threshold included at it, inf never."""
    rng = np.random.default_rng(0)
    t = np.round(np.linspace(0, 8, 81), 4)
    for _ in range(10):
        e = np.abs(rng.normal(1, 2, 3000))
        e[::97] = np.inf
        e[:40] = t[rng.integers(0, 81, 40)]
        want = np.searchsorted(np.sort(e), t, side="right") / e.size
        np.testing.assert_array_equal(cumulative_curve(e, t).fraction, want)
