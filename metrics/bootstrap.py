"""Bootstrap confidence intervals that resample subjects, not images.

Room: uncertainty of every headline number. Images of one subject are correlated (same
face, same scan), so the resampling unit is the subject: a drawn subject brings all of its
samples along (cluster bootstrap, percentile interval).

The statistic sees the selected data in one of two ways:

* ``values`` given, shape (N, ...): ``statistic(values[idx])``, e.g. ``np.mean`` of
  per-sample medians, or a function of (N, 2) rows of (y_true, y_pred) pairs;
* ``values=None``: ``statistic(idx)`` receives the (M,) index array of the selected samples
  (repeats included) and may look up anything: ragged distance arrays, label pairs, ...;
  passing that index function itself as ``values`` (``bootstrap_ci(fn, subjects)``) is the
  same thing.

Example::

    from metrics import bootstrap_ci, binary_scores
    ci = bootstrap_ci(per_sample_median_mm, subjects)                    # mean of medians
    f1 = bootstrap_ci(None, subjects,
                      lambda idx: binary_scores(y_true[idx], y_pred[idx]).f1)
    med = bootstrap_ci(None, subjects,
                       lambda idx: np.median(np.concatenate([dists[i] for i in idx])))
    print(f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)


class ConfidenceInterval(NamedTuple):
    """A point estimate with a bootstrap percentile interval.

    Attributes:
        estimate: the statistic on all samples (not the bootstrap mean).
        low: lower bound, the ``alpha / 2`` quantile of the bootstrap statistics.
        high: upper bound, the ``1 - alpha / 2`` quantile.
        n_subjects: distinct subjects resampled.
        n_boot: bootstrap replicates whose statistic was finite.
    """

    estimate: float
    low: float
    high: float
    n_subjects: int
    n_boot: int


def bootstrap_ci(
    values: np.ndarray | Sequence[Any] | Callable[[np.ndarray], float] | None,
    subjects: np.ndarray | Sequence[Any],
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of ``statistic``, resampling subjects with replacement.

    Each replicate draws as many subjects as there are, with replacement, and pools all
    samples of each drawn subject (a subject drawn twice contributes its samples twice).

    Args:
        values: (N, ...) per-sample values; or None to hand ``statistic`` the index array;
            or a function of the index array, used as the statistic.
        subjects: (N,) subject id of every sample (any hashable values).
        statistic: maps the selected values (or indices) to a float; default ``np.mean``.
        n_boot: number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        seed: random seed (results are deterministic for a seed).

    Returns:
        :class:`ConfidenceInterval`. With a single subject the interval collapses to the
        estimate.

    Raises:
        ValueError: no samples, ``subjects`` and ``values`` of different length, ``alpha``
            outside (0, 1), ``n_boot < 1``, a callable ``values`` together with a
            ``statistic``, or a statistic that is never finite.
    """
    subj = np.asarray(subjects)
    if subj.ndim != 1 or subj.size == 0:
        raise ValueError(f"subjects must be a non-empty (N,) array, got shape {subj.shape}.")
    n = subj.size
    vals = None
    if callable(values):
        if statistic is not np.mean:
            raise ValueError("give the index function as values or as statistic, not both.")
        statistic, values = values, None
    if values is not None:
        vals = np.asarray(values)
        if vals.shape[0] != n:
            raise ValueError(f"values has {vals.shape[0]} samples but subjects has {n}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}.")

    def stat(idx: np.ndarray) -> float:
        return float(statistic(idx if vals is None else vals[idx]))

    _, inverse = np.unique(subj, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    groups = [order[s : s + c] for s, c in zip(starts, counts)]
    n_subj = len(groups)

    estimate = stat(np.arange(n))
    draws = _draws(n_subj, n_boot, seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        boots[b] = stat(np.concatenate([groups[k] for k in draws[b]]))
    return _interval(estimate, boots, n_subj, alpha)


def bootstrap_ci_of_sums(
    parts: np.ndarray,
    subjects: np.ndarray | Sequence[Any],
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> ConfidenceInterval:
    """:func:`bootstrap_ci` for a statistic of sums over the samples, all replicates at once.

    Counts (true positives, ...), sums and histograms add up over samples, so a replicate's
    sums are ``draw counts per subject @ per-subject sums``: one matrix product instead of a
    loop over replicates. The replicates are the ones :func:`bootstrap_ci` draws for the same
    subjects and seed (integer parts give the very same values; float parts may differ in
    the last bits, being added in another order).

    Args:
        parts: (N, K) per-sample parts whose sums the statistic reads.
        subjects: (N,) subject id of every sample.
        statistic: maps sums of shape (..., K) to values of shape (...), vectorised (NaN
            where undefined).
        n_boot: number of bootstrap replicates.
        alpha: 1 - confidence level.
        seed: random seed.

    Returns:
        :class:`ConfidenceInterval`, the estimate being ``statistic(parts.sum(0))``.

    Raises:
        ValueError: as :func:`bootstrap_ci`.
    """
    subj = np.asarray(subjects)
    if subj.ndim != 1 or subj.size == 0:
        raise ValueError(f"subjects must be a non-empty (N,) array, got shape {subj.shape}.")
    parts = np.asarray(parts, np.float64)
    if parts.ndim != 2 or parts.shape[0] != subj.size:
        raise ValueError(f"parts must be (N, K) with N = {subj.size}, got {parts.shape}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}.")
    _, inverse = np.unique(subj, return_inverse=True)
    n_subj = int(inverse.max()) + 1
    per_subject = np.zeros((n_subj, parts.shape[1]))
    np.add.at(per_subject, inverse, parts)
    draws = _draws(n_subj, n_boot, seed)
    times = np.zeros((n_boot, n_subj))
    np.add.at(times, (np.arange(n_boot)[:, None], draws), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = float(statistic(parts.sum(axis=0)))
        boots = np.asarray(statistic(times @ per_subject), np.float64)
    return _interval(estimate, boots, n_subj, alpha)


def _draws(n_subj: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_subj) subject indices drawn with replacement, replicate by replicate."""
    return np.random.default_rng(seed).integers(0, n_subj, size=(n_boot, n_subj))


def _interval(estimate: float, boots: np.ndarray, n_subj: int, alpha: float
              ) -> ConfidenceInterval:
    n_boot = boots.size
    finite = boots[np.isfinite(boots)]
    if finite.size == 0:
        raise ValueError("the statistic was not finite on any bootstrap replicate.")
    if finite.size < n_boot:
        logger.warning(
            "bootstrap: %d of %d replicates gave a non-finite statistic and were dropped.",
            n_boot - finite.size,
            n_boot,
        )
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(float(estimate), float(low), float(high), n_subj, int(finite.size))
