"""2D landmark error normalised by face size (NME).

Room: image-space landmark accuracy of a reconstruction's projected 68 landmarks. Arrays in,
arrays out.

``NME = mean_k ||pred_k - gt_k|| / d_norm`` per image, with ``d_norm`` by default the
distance between the *outer* eye corners (iBUG 36 and 45): the "inter-ocular"
normalisation of the 300-W challenge (Sagonas et al. 2016). Other literature uses the
pupil distance ("inter-pupil": centres of points 36-41 and 42-47, a larger error for the
same landmarks) or the square root of the ground-truth box area; both are offered, the
leaderboard states which it uses.

Example::

    from metrics import nme_2d
    nme = nme_2d(pred_lmk2d, gt_lmk2d)          # (B,) or a float for one image
    print(nme.mean() * 100, "%")
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

NORMS = ("inter_ocular", "inter_pupil", "bbox")


def nme_2d(pred: np.ndarray, gt: np.ndarray, norm: str = "inter_ocular") -> np.ndarray | float:
    """Normalised mean error of 68 2D landmarks.

    Args:
        pred: (68, 2) or (B, 68, 2) predicted landmarks, pixels.
        gt: same shape, ground-truth landmarks, pixels.
        norm: ``inter_ocular`` (outer eye corners 36-45, 300-W; default), ``inter_pupil``
            (centres of the two eyes' six points) or ``bbox`` (sqrt of the ground-truth
            landmarks' bounding-box area).

    Returns:
        A float for one image, else (B,) float64 per-image NME (fractions, not percent).

    Raises:
        ValueError: shapes differ or are not (..., 68, 2), NaN/inf, unknown ``norm``, or a
            zero normalising distance.
    """
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim not in (2, 3) or p.shape[-2:] != (68, 2):
        raise ValueError(
            f"pred and gt must both be (68, 2) or (B, 68, 2), got {p.shape} and {g.shape}."
        )
    if not (np.isfinite(p).all() and np.isfinite(g).all()):
        raise ValueError("landmarks contain NaN or inf values.")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
    single = p.ndim == 2
    if single:
        p, g = p[None], g[None]
    if norm == "inter_ocular":
        d = np.linalg.norm(g[:, 36] - g[:, 45], axis=-1)
    elif norm == "inter_pupil":
        d = np.linalg.norm(g[:, 36:42].mean(axis=1) - g[:, 42:48].mean(axis=1), axis=-1)
    else:
        wh = g.max(axis=1) - g.min(axis=1)
        d = np.sqrt(wh[:, 0] * wh[:, 1])
    if (d <= 0).any():
        raise ValueError(f"the {norm} normalising distance is zero for some image.")
    err = np.linalg.norm(p - g, axis=-1).mean(axis=-1) / d
    return float(err[0]) if single else err
