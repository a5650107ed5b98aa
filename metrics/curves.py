"""Cumulative error curves and their normalised area.

Room: turning a bag of errors into "fraction with error <= t" over a threshold grid.
Arrays in, NamedTuples out.

Two variants, one function: pass per-sample errors (e.g. each image's median scan-to-mesh
distance) for the *per-sample* curve, or all distances pooled over the images
(:func:`pooled_curve`) for the *per-point* curve NoW plots (0-8 mm, ``cumulative_errors.py``).

Example::

    from metrics import cumulative_curve, curve_auc, pooled_curve, NOW_THRESHOLDS_MM
    per_point = pooled_curve([r.distances_mm for r in results])        # NoW's curve
    per_sample = cumulative_curve([r.median_mm for r in results])
    auc = curve_auc(per_point, limit=4.0)       # in [0, 1]; 1 = every error is 0
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

#: NoW's plotting range, 0-8 mm, on a 0.01 mm grid (801 thresholds).
NOW_THRESHOLDS_MM = np.round(np.linspace(0.0, 8.0, 801), 10)
NOW_THRESHOLDS_MM.flags.writeable = False


class CumulativeCurve(NamedTuple):
    """A cumulative error curve.

    Attributes:
        thresholds: (T,) increasing error thresholds (e.g. mm).
        fraction: (T,) fraction in [0, 1] of errors <= each threshold.
        n: number of errors the curve counts (inf errors, e.g. failed samples, included).
    """

    thresholds: np.ndarray
    fraction: np.ndarray
    n: int


def cumulative_curve(
    errors: np.ndarray | Sequence[float], thresholds: np.ndarray | None = None
) -> CumulativeCurve:
    """Fraction of errors at or below each threshold, ``F(t) = #{e_i <= t} / n``.

    Args:
        errors: (n,) non-negative errors. ``inf`` is allowed and counts as above every
            threshold: give failed samples ``np.inf`` so that they lower the curve instead of
            silently vanishing.
        thresholds: (T,) increasing thresholds; default :data:`NOW_THRESHOLDS_MM`.

    Returns:
        :class:`CumulativeCurve`.

    Raises:
        ValueError: no errors, NaN or negative errors, or thresholds not increasing.
    """
    e = np.asarray(errors, np.float64).ravel()
    if e.size == 0:
        raise ValueError("cumulative_curve needs at least one error.")
    if np.isnan(e).any():
        raise ValueError("errors contain NaN; give failed samples np.inf so they count as misses.")
    if (e < 0).any():
        raise ValueError("errors must be non-negative (unsigned distances or error magnitudes).")
    t = NOW_THRESHOLDS_MM if thresholds is None else np.asarray(thresholds, np.float64).ravel()
    if t.size == 0 or not np.isfinite(t).all() or (np.diff(t) <= 0).any():
        raise ValueError("thresholds must be a non-empty, finite, strictly increasing array.")
    # #{e_i <= t_j}: an error lies at or below t_j exactly when fewer than j + 1 thresholds
    # lie below it (no sort of the errors: a pooled dataset holds millions)
    below = np.bincount(np.searchsorted(t, e, side="left"), minlength=t.size + 1)
    frac = np.cumsum(below[: t.size]) / e.size
    return CumulativeCurve(t.copy(), frac, int(e.size))


def pooled_curve(
    errors_per_sample: Sequence[np.ndarray], thresholds: np.ndarray | None = None
) -> CumulativeCurve:
    """Per-point cumulative curve over errors pooled across samples (NoW's curve).

    Args:
        errors_per_sample: per-sample (N_i,) error arrays, e.g. ``NowResult.distances_mm``.
        thresholds: as in :func:`cumulative_curve`.

    Returns:
        :class:`CumulativeCurve` over all points.

    Raises:
        ValueError: as :func:`cumulative_curve`, or no samples.
    """
    if len(errors_per_sample) == 0:
        raise ValueError("pooled_curve needs at least one sample's errors.")
    pooled = np.concatenate([np.asarray(e, np.float64).ravel() for e in errors_per_sample])
    return cumulative_curve(pooled, thresholds)


def curve_auc(curve: CumulativeCurve, limit: float) -> float:
    """Area under a cumulative curve from 0 to ``limit``, divided by ``limit``.

    ``AUC = (1 / limit) * integral_0^limit F(t) dt`` by the trapezoid rule on the curve's
    grid (the curve is linearly interpolated at ``limit``). 1.0 means every error is 0; 0.0
    means none is below ``limit``. On the default 0.01 mm grid the trapezoid differs from
    the exact step-function area by at most half a grid step relative to ``limit``.

    Args:
        curve: a :class:`CumulativeCurve` whose thresholds start at 0 and reach ``limit``.
        limit: upper integration limit, same unit as the thresholds, > 0.

    Returns:
        The normalised area in [0, 1].

    Raises:
        ValueError: ``limit`` not positive, or the curve's grid does not cover [0, limit].
    """
    t = np.asarray(curve.thresholds, np.float64)
    f = np.asarray(curve.fraction, np.float64)
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit}.")
    if t[0] != 0.0 or t[-1] < limit:
        raise ValueError(
            f"the curve's thresholds cover [{t[0]:g}, {t[-1]:g}] but the area needs "
            f"[0, {limit:g}]."
        )
    keep = t < limit
    tt = np.append(t[keep], limit)
    ff = np.append(f[keep], np.interp(limit, t, f))
    # Explicit trapezoid: np.trapz/np.trapezoid differ across numpy 1.x/2.x.
    return float(np.sum(np.diff(tt) * (ff[1:] + ff[:-1]) / 2.0) / limit)
