"""Shortcut probes and fair coverage: closed-call rates per photo source, common sample sets.

Room: the pure arithmetic behind the leaderboard's shortcut checks (issue 16). A pool whose
closed eyes come from one photo source and open eyes from another lets a method score by
recognising the source; these functions measure that from per-sample labels:

* :func:`closed_call_rates` - per group (photo source), how many of the given faces or eyes
  a method called closed. On photos whose eyes are masked, a method that reads eyes calls
  both sources closed at the same rate; :func:`rate_gap_pp` is the difference in
  percentage points.
* :func:`per_source_scores` - closed-eye recall on the closed source and false-close rate
  on the open source, the two halves of a pooled F1.
* :func:`common_ids` - the samples every compared method covered, so that a method never
  gains by failing on hard images.

Labels follow :mod:`benchmark.types`: 0 open, 1 closed, -1 unknown (left out of every rate).

Example::

    from metrics.probes import closed_call_rates, rate_gap_pp
    rates = closed_call_rates(image_pred, sources)          # {"cew": Rate, "utk": Rate}
    gap = rate_gap_pp(rates["cew"], rates["utk"])            # +31.0 = CEW called closed more
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN

#: A method's own eye-state belief is read as *closed* at or above this probability.
OWN_READOUT_THRESHOLD = 0.5


class Rate(NamedTuple):
    """``k`` of ``n`` items called closed.

    Attributes:
        n: items with a known call.
        k: items called closed.
        rate: ``k / n``, NaN when ``n`` is 0.
    """

    n: int
    k: int
    rate: float


class SourceScores(NamedTuple):
    """Eye-state scores split by photo source.

    Attributes:
        recall: closed calls among closed-labelled items of the closed source.
        false_close: closed calls among open-labelled items of the open source.
    """

    recall: Rate
    false_close: Rate


def _labels(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, np.float64).reshape(-1)
    arr = np.where(np.isfinite(arr), arr, EYE_UNKNOWN)
    bad = ~np.isin(arr, (EYE_OPEN, EYE_CLOSED, EYE_UNKNOWN))
    if bad.any():
        raise ValueError(f"{name} holds {arr[bad][0]!r}; eye labels are 0, 1 or -1 (or NaN).")
    return arr.astype(np.int64)


def _rate(calls: np.ndarray) -> Rate:
    known = calls[calls != EYE_UNKNOWN]
    k = int((known == EYE_CLOSED).sum())
    return Rate(int(known.size), k, k / known.size if known.size else float("nan"))


def states_from_prob(prob_closed: object,
                     threshold: float = OWN_READOUT_THRESHOLD) -> np.ndarray:
    """Open/closed labels from a method's own closed probability (NaN -> unknown).

    Args:
        prob_closed: probabilities in [0, 1], any shape; NaN where the method gave none.
        threshold: closed at or above this.

    Returns:
        int64 labels of the same shape: 1 closed, 0 open, -1 unknown.
    """
    p = np.asarray(prob_closed, np.float64)
    out = np.where(p >= threshold, EYE_CLOSED, EYE_OPEN).astype(np.int64)
    return np.where(np.isfinite(p), out, EYE_UNKNOWN)


def closed_call_rates(
    calls: object, groups: Sequence[str] | np.ndarray, truth: object | None = None,
    truth_value: int | None = None,
) -> dict[str, Rate]:
    """Share of items called closed, per group.

    Args:
        calls: (N,) predicted labels (1 closed, 0 open, -1 or NaN unknown: left out).
        groups: (N,) group names (e.g. the photo source of each item).
        truth: optional (N,) true labels; with ``truth_value`` only items whose label is
            ``truth_value`` count.
        truth_value: the true label to keep (``EYE_CLOSED`` for recall, ``EYE_OPEN`` for the
            false-close rate).

    Returns:
        ``{group: Rate}`` for every group present, in sorted order.

    Raises:
        ValueError: mismatched lengths, labels other than 0/1/-1, or ``truth`` without
            ``truth_value``.
    """
    c = _labels(calls, "calls")
    g = np.asarray(groups, dtype=str).reshape(-1)
    if g.size != c.size:
        raise ValueError(f"calls has {c.size} items but groups has {g.size}.")
    keep = np.ones(c.size, bool)
    if truth is not None or truth_value is not None:
        if truth is None or truth_value is None:
            raise ValueError("truth and truth_value go together.")
        t = _labels(truth, "truth")
        if t.size != c.size:
            raise ValueError(f"calls has {c.size} items but truth has {t.size}.")
        keep = t == truth_value
    return {name: _rate(c[keep & (g == name)]) for name in sorted(set(g.tolist()))}


def rate_gap_pp(a: Rate, b: Rate) -> float:
    """``a.rate - b.rate`` in percentage points (NaN when either rate is undefined)."""
    return 100.0 * (a.rate - b.rate)


def per_source_scores(
    truth: object, calls: object, groups: Sequence[str] | np.ndarray, closed_source: str,
    open_source: str,
) -> SourceScores:
    """Closed-eye recall on the closed source and false-close rate on the open source.

    Args:
        truth: (N,) true labels (per eye or per image).
        calls: (N,) predicted labels, same items.
        groups: (N,) source of each item.
        closed_source: the group whose closed-labelled items give the recall.
        open_source: the group whose open-labelled items give the false-close rate.

    Returns:
        :class:`SourceScores` (rates are NaN where a source has no such item).
    """
    recall = closed_call_rates(calls, groups, truth, EYE_CLOSED)
    false_close = closed_call_rates(calls, groups, truth, EYE_OPEN)
    empty = Rate(0, 0, float("nan"))
    return SourceScores(recall.get(closed_source, empty), false_close.get(open_source, empty))


def common_ids(covered: Mapping[str, Iterable[str]]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The samples covered by every method that covered anything.

    Args:
        covered: method -> ids of its successfully predicted samples.

    Returns:
        (ids covered by all methods with a non-empty set, methods left out because they
        covered nothing). Methods that cover everything (a floor) are kept: they are scored
        on the common set too.
    """
    sets = {m: frozenset(ids) for m, ids in covered.items()}
    excluded = tuple(sorted(m for m, s in sets.items() if not s))
    kept = [s for s in sets.values() if s]
    if not kept:
        return frozenset(), excluded
    return frozenset.intersection(*kept), excluded
