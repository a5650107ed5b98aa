"""Eye state from a mesh: per-eye openness, open/closed decision, and its scores.

Room: everything the eye-state columns of the leaderboard are computed from. Arrays in,
NamedTuples out; topologies only enter through the point ids they declare.

Openness of one eye (a 3D eye aspect ratio, DESIGN.md section 5)::

    openness = mean_k ||upper_k - lower_k|| / ||corner_a - corner_b||

over the eye's vertical eyelid pairs; iBUG-68 pairs (37, 41), (38, 40) with corners
(36, 39) for eye 0 (subject's right), (43, 47), (44, 46) with corners (42, 45) for eye 1
(:data:`benchmark.types.EYELID_UPPER` etc.). The same formula on 2D landmarks is the usual
eye aspect ratio (Soukupova & Cech 2016). An eye is *closed* when its openness is below
:data:`DEFAULT_CLOSED_THRESHOLD` (or the threshold a leaderboard states).

Labels follow :mod:`benchmark.types`: 0 open, 1 closed (the positive class), -1 unknown
(e.g. half-closed eyes, kept out of the binary scores).

Example::

    from metrics import eye_openness, eye_state_from_openness, eye_state_scores
    op = eye_openness(topology.landmarks(verts))          # (2,) for one mesh
    pred = eye_state_from_openness(op_batch)              # (N, 2) int8 labels
    scores = eye_state_scores(true_states, pred)          # per eye, per side, per image
    scores.per_eye.f1, scores.image.f1
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from benchmark.types import (
    EYE_CLOSED,
    EYE_CORNERS,
    EYE_OPEN,
    EYE_UNKNOWN,
    EYELID_LOWER,
    EYELID_UPPER,
)

logger = logging.getLogger(__name__)

#: Openness below which an eye counts as closed.
#:
#: Measured on the shipped ICT-FaceKit model (narrow face, its 68 landmark vertices), 2000
#: random identities (all 100 identity coefficients ~ N(0, 1)), both eyes, so 4000 eyes per
#: row; "random" adds random expressions (each of the 53 blendshapes active with
#: probability 0.3, weight ~ U(0, 0.5), eyeSquint/eyeWide included) before setting both
#: eyeBlink weights (see docs/metrics.md for the script):
#:
#: ====== ========= ===== ===== ====== ===== =====
#: expr.  eyeBlink  p1    p5    median p95   p99
#: ====== ========= ===== ===== ====== ===== =====
#: none   0.0       0.227 0.253 0.317  0.379 0.406
#: none   0.5       0.084 0.109 0.172  0.233 0.259
#: none   1.0       0.029 0.037 0.067  0.109 0.135
#: none   1.1       0.029 0.037 0.067  0.115 0.145
#: random 0.0       0.179 0.217 0.300  0.378 0.413
#: random 0.5       0.056 0.077 0.156  0.233 0.267
#: random 1.0       0.029 0.039 0.072  0.129 0.163
#: random 1.1       0.031 0.041 0.077  0.145 0.193
#: ====== ========= ===== ===== ====== ===== =====
#:
#: 0.18 is where the two error rates cross on the random-expression set (open eyes called
#: closed 1.1 %, closed eyes (blink 1.0 and 1.1) called open 0.9 %); without expressions it
#: makes no error on open eyes and 0.01 % on closed ones. It also sits just above the half
#: blink's median (0.17 neutral, 0.16 with expressions), so "closed" reads as "more than
#: half shut", and just below the 0.2 eye aspect ratio common for blinks on 2D landmarks.
#: A closed ICT lid does not reach 0: its landmark vertices keep a ~1 mm horizontal and
#: depth offset (0.04 on the mean face).
DEFAULT_CLOSED_THRESHOLD = 0.18


def openness_from_points(
    upper: np.ndarray, lower: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray
) -> np.ndarray:
    """Openness of one eye from its eyelid pairs and corners (any batch shape).

    ``mean_k ||upper_k - lower_k|| / ||corner_a - corner_b||``; 2D or 3D points.

    Args:
        upper: (..., K, D) upper-lid points, K >= 1 pairs, D = 2 or 3.
        lower: (..., K, D) lower-lid points paired row by row with ``upper``.
        corner_a: (..., D) one eye corner.
        corner_b: (..., D) the other eye corner.

    Returns:
        (...) openness, dimensionless.

    Raises:
        ValueError: shape mismatch, NaN/inf, or coincident eye corners.
    """
    up = np.asarray(upper, np.float64)
    lo = np.asarray(lower, np.float64)
    ca = np.asarray(corner_a, np.float64)
    cb = np.asarray(corner_b, np.float64)
    if up.ndim < 2 or up.shape != lo.shape:
        raise ValueError(
            f"upper and lower eyelid points must both be (..., K, D), got {up.shape} and "
            f"{lo.shape}."
        )
    if ca.shape != cb.shape or ca.shape != up.shape[:-2] + up.shape[-1:]:
        raise ValueError(
            f"eye corners must be (..., D) matching the eyelid points {up.shape}, got "
            f"{ca.shape} and {cb.shape}."
        )
    for name, arr in (("upper", up), ("lower", lo), ("corner_a", ca), ("corner_b", cb)):
        if not np.isfinite(arr).all():
            raise ValueError(f"eyelid point array {name} contains NaN or inf values.")
    width = np.linalg.norm(ca - cb, axis=-1)
    if (width <= 0).any():
        raise ValueError("eye corners coincide (zero eye width), so openness is undefined.")
    gap = np.linalg.norm(up - lo, axis=-1).mean(axis=-1)
    return gap / width


def eye_openness(
    points: np.ndarray,
    upper: Sequence[Sequence[int]] = EYELID_UPPER,
    lower: Sequence[Sequence[int]] = EYELID_LOWER,
    corners: Sequence[Sequence[int]] = EYE_CORNERS,
) -> np.ndarray:
    """Per-eye openness from 68 landmarks (or from any points and declared eyelid ids).

    With the defaults ``points`` are iBUG-68 landmarks (e.g. ``Topology.landmarks(verts)``)
    and the pairs are (37, 41), (38, 40) / (43, 47), (44, 46) with corners (36, 39) /
    (42, 45). A topology with denser eyelids passes its own ids: ``upper[e]`` and
    ``lower[e]`` are eye ``e``'s paired row ids, ``corners[e]`` its two corner ids.

    Args:
        points: (P, D) or (B, P, D) points, D = 2 or 3 (68 landmarks by default).
        upper: per eye, the upper-lid ids, paired with ``lower``.
        lower: per eye, the lower-lid ids.
        corners: per eye, the two corner ids.

    Returns:
        (E,) or (B, E) float64 openness, E eyes in the order of ``upper`` (2 by default:
        subject's right, subject's left).

    Raises:
        ValueError: wrong shapes, ids out of range, NaN/inf, coincident corners.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim not in (2, 3) or pts.shape[-1] not in (2, 3):
        raise ValueError(f"points must be (P, D) or (B, P, D) with D in (2, 3), got {pts.shape}.")
    if not (len(upper) == len(lower) == len(corners)):
        raise ValueError("upper, lower and corners must declare the same number of eyes.")
    out = []
    for e in range(len(upper)):
        ui = np.asarray(upper[e], np.int64)
        li = np.asarray(lower[e], np.int64)
        ci = np.asarray(corners[e], np.int64)
        if ui.shape != li.shape or ui.ndim != 1 or ci.shape != (2,):
            raise ValueError(
                f"eye {e}: upper/lower ids must be equal-length lists and corners two ids."
            )
        ids = np.concatenate([ui, li, ci])
        if ids.min() < 0 or ids.max() >= pts.shape[-2]:
            raise ValueError(
                f"eye {e}: point ids {ids.min()}..{ids.max()} fall outside the "
                f"{pts.shape[-2]} points given."
            )
        out.append(
            openness_from_points(
                pts[..., ui, :], pts[..., li, :], pts[..., ci[0], :], pts[..., ci[1], :]
            )
        )
    return np.stack(out, axis=-1)


def eye_state_from_openness(
    openness: np.ndarray, threshold: float = DEFAULT_CLOSED_THRESHOLD
) -> np.ndarray:
    """Open/closed labels from openness: closed (1) when ``openness < threshold``.

    Args:
        openness: any-shape openness values; NaN gives unknown (-1).
        threshold: closed below this value.

    Returns:
        int8 array of the same shape with 0 open, 1 closed, -1 unknown.
    """
    o = np.asarray(openness, np.float64)
    out = np.where(o < threshold, EYE_CLOSED, EYE_OPEN).astype(np.int8)
    out[np.isnan(o)] = EYE_UNKNOWN
    return out


def image_state(per_eye_states: np.ndarray) -> np.ndarray:
    """Image-level label from per-eye labels: closed iff both eyes are closed.

    Args:
        per_eye_states: (N, 2) labels (0 open, 1 closed, -1 unknown).

    Returns:
        (N,) int8: 1 when both eyes are closed, -1 when either eye is unknown (a
        half-closed eye makes the image ambiguous even if the other eye is open, so it is
        kept out of the image-level scores as it is out of the per-eye ones), 0 otherwise.

    Raises:
        ValueError: not (N, 2) or labels outside {-1, 0, 1}.
    """
    s = _labels(per_eye_states, "per-eye states")
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"per-eye states must be (N, 2), got {s.shape}.")
    out = np.where((s == EYE_CLOSED).all(axis=1), EYE_CLOSED, EYE_OPEN).astype(np.int8)
    out[(s == EYE_UNKNOWN).any(axis=1)] = EYE_UNKNOWN
    return out


class BinaryScores(NamedTuple):
    """Binary classification scores with *closed* as the positive class.

    Undefined ratios follow scikit-learn's ``zero_division=0``: precision is 0 without
    predicted positives, recall 0 without true positives, F1 = 2 tp / (2 tp + fp + fn) and 0
    when that denominator is 0. Accuracy is NaN when nothing is scored (n = 0).

    Attributes:
        accuracy: (tp + tn) / n.
        precision: tp / (tp + fp).
        recall: tp / (tp + fn).
        f1: harmonic mean of precision and recall.
        tp: closed eyes predicted closed.
        fp: open eyes predicted closed.
        tn: open eyes predicted open.
        fn: closed eyes predicted open.
        n: scored entries (true label known).
    """

    accuracy: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int
    n: int


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contain NaN; use -1 for unknown labels.")
    arr = arr.astype(np.int64)
    if not np.isin(arr, (EYE_UNKNOWN, EYE_OPEN, EYE_CLOSED)).all():
        raise ValueError(f"{name} must be labels in {{-1, 0, 1}} (unknown, open, closed).")
    return arr


def _known_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "true labels").ravel()
    p = _labels(y_pred, "predicted labels").ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted labels differ in size ({t.size} vs {p.size}).")
    keep = t != EYE_UNKNOWN
    if (p[keep] == EYE_UNKNOWN).any():
        raise ValueError(
            "predicted labels are unknown (-1) where the truth is known; score failed "
            "predictions explicitly (e.g. as open) before calling."
        )
    return t[keep], p[keep]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 confusion matrix, scikit-learn layout ``[[tn, fp], [fn, tp]]``.

    Rows are the truth (open, closed), columns the prediction; entries with unknown truth
    (-1) are left out.

    Args:
        y_true: any-shape labels in {-1, 0, 1}.
        y_pred: labels of the same size in {0, 1} where the truth is known.

    Returns:
        (2, 2) int64 counts.

    Raises:
        ValueError: sizes differ, labels outside {-1, 0, 1}, or an unknown prediction where
            the truth is known.
    """
    t, p = _known_pairs(y_true, y_pred)
    cm = np.zeros((2, 2), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> BinaryScores:
    """Accuracy, precision, recall and F1 with closed (1) as the positive class.

    Entries whose truth is unknown (-1) are ignored. Equal to scikit-learn's
    ``accuracy_score`` / ``precision_recall_fscore_support(..., pos_label=1,
    average="binary", zero_division=0)`` on the known entries.

    Args:
        y_true: any-shape labels in {-1, 0, 1} (per eye: flatten (N, 2); per image: (N,)).
        y_pred: labels of the same size in {0, 1} where the truth is known.

    Returns:
        :class:`BinaryScores`.

    Raises:
        ValueError: as :func:`confusion_matrix`.
    """
    (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred).tolist()
    n = tn + fp + fn + tp
    accuracy = (tp + tn) / n if n else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    return BinaryScores(
        float(accuracy), float(precision), float(recall), float(f1), tp, fp, tn, fn, n
    )


class EyeStateScores(NamedTuple):
    """Eye-state scores at the three levels the leaderboard reports.

    Attributes:
        per_eye: both eyes of every image pooled (winks count per eye).
        right: eye 0 only (landmarks 36-41, subject's right).
        left: eye 1 only (landmarks 42-47, subject's left).
        image: image level, an image being closed when both eyes are.
    """

    per_eye: BinaryScores
    right: BinaryScores
    left: BinaryScores
    image: BinaryScores


def eye_state_scores(
    true_states: np.ndarray,
    pred_states: np.ndarray,
    true_image_states: np.ndarray | None = None,
) -> EyeStateScores:
    """Eye-state scores per eye, per side and per image.

    Args:
        true_states: (N, 2) per-eye truth in {-1, 0, 1}.
        pred_states: (N, 2) per-eye predictions in {0, 1}.
        true_image_states: optional (N,) image-level truth (datasets labelled per image);
            default :func:`image_state` of ``true_states``.

    Returns:
        :class:`EyeStateScores`.

    Raises:
        ValueError: shapes not (N, 2) / (N,), or labels as in :func:`binary_scores`.
    """
    t = _labels(true_states, "true eye states")
    p = _labels(pred_states, "predicted eye states")
    if t.ndim != 2 or t.shape[1] != 2 or p.shape != t.shape:
        raise ValueError(
            f"eye states must both be (N, 2), got {t.shape} (truth) and {p.shape} (prediction)."
        )
    ti = image_state(t) if true_image_states is None else _labels(true_image_states, "image states")
    if ti.shape != (t.shape[0],):
        raise ValueError(f"image states must be ({t.shape[0]},), got {ti.shape}.")
    pi = np.where((p == EYE_CLOSED).all(axis=1), EYE_CLOSED, EYE_OPEN)
    return EyeStateScores(
        per_eye=binary_scores(t, p),
        right=binary_scores(t[:, 0], p[:, 0]),
        left=binary_scores(t[:, 1], p[:, 1]),
        image=binary_scores(ti, pi),
    )


class OpennessError(NamedTuple):
    """Absolute openness error where ground truth exists.

    Attributes:
        mean_abs: mean absolute error over finite entries (NaN when there are none).
        median_abs: median absolute error over finite entries.
        abs_errors: |pred - gt|, same shape as the inputs, NaN where gt (or pred) is NaN.
        n: number of finite entries.
    """

    mean_abs: float
    median_abs: float
    abs_errors: np.ndarray
    n: int


def openness_error(pred: np.ndarray, gt: np.ndarray) -> OpennessError:
    """Absolute error between predicted and ground-truth openness, ignoring NaN.

    Args:
        pred: any-shape predicted openness (e.g. (N, 2)).
        gt: same-shape ground-truth openness, NaN where unknown.

    Returns:
        :class:`OpennessError`.

    Raises:
        ValueError: shapes differ or values are infinite.
    """
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    if p.shape != g.shape:
        raise ValueError(f"predicted and true openness differ in shape ({p.shape} vs {g.shape}).")
    if np.isinf(p).any() or np.isinf(g).any():
        raise ValueError("openness values must be finite or NaN (unknown), not inf.")
    err = np.abs(p - g)
    finite = err[np.isfinite(err)]
    if finite.size == 0:
        return OpennessError(float("nan"), float("nan"), err, 0)
    return OpennessError(float(finite.mean()), float(np.median(finite)), err, int(finite.size))
