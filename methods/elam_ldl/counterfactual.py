"""Training batches that cannot be solved by recognising the photo source (issue 16).

Room: what the ELAM+LDL training loop does to a batch *before* Deep3D's geometric
augmentation (``data.augment_batch``): which rows it draws (:func:`balanced_indices`), the
counterfactual eye swaps (:func:`swap_eyes`) and the photo degradations
(:func:`degrade`). Pure numpy/OpenCV on the prepared 112-px crops; reads
:class:`~methods.elam_ldl.data.TrainingData`, writes nothing.

Why: the real pool pairs closed eyes with one source (CEW: loose web crops) and open eyes
with another (UTKFace: tight aligned crops). A network trained on it can call eyes from
everything around them. Three counters, each a :class:`TrainConfig` field:

* **Source balancing** (``synthetic_share``, ``balance_sources``): each step draws
  ``synthetic_share`` of its rows from the synthetic faces (no source cue exists there) and
  splits the rest equally between the other row groups (:func:`row_groups`: the pool's
  closed-eye source, its open-eye source, user folders), whatever their sizes.
* **Counterfactual eye swaps** (``aug_eye_swap``, per eye): the eye region of a donor row
  whose eye is in the *other* state (detector P(closed) on the other side of 0.5), from
  another row group where there is one, is warped onto the eye (a 2D similarity mapping the
  donor's eye corners onto the recipient's), blended through a feathered ellipse around the
  eye, its colour shifted to the recipient's skin at the ellipse's edge. The labels follow
  the eye: that eye's six landmarks become the donor's (mapped), its P(closed) the donor's.
  A CEW face gets an open eye, a UTKFace face a closed one; one eye alone makes a wink, so
  the per-eye targets of ELAM and LDL differ between the eyes of one face.
* **Degradations** (``aug_degrade``, ``aug_grey``, ``aug_jpeg``): resolution loss and blur,
  greyscale, JPEG re-compression over the whole crop (the swapped eye and its new face get
  the same), so sharpness, colour and compression stop telling sources apart.

Example::

    rows = balanced_indices(data, step=0, batch_size=16, cfg=cfg)
    images, landmarks, p = swap_eyes(data, rows, cfg, seed=1)
    images = degrade(images, cfg, seed=2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from methods.elam.rule import EYE_CORNERS
from methods.elam_ldl.config import TrainConfig

#: Landmarks of each eye (eye-index order: 36-41, 42-47).
EYE_POINTS: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)))
#: Row groups (:func:`row_groups`).
GROUP_NAMES = ("synthetic", "real-closed-source", "real-open-source", "folder")
#: Blend ellipse around an eye, in eye widths (corner distance): half-length along the
#: corner axis and half-height across it, and the width of its feathered edge. It holds the
#: lids, lashes and lid fold of an open eye (aperture about 0.3 eye widths), not the brow.
SWAP_HALF_LENGTH = 0.8
SWAP_HALF_HEIGHT = 0.5
SWAP_EDGE = 0.1


def row_groups(data: Any) -> np.ndarray:
    """(N,) int8 group of every row.

    0 synthetic, 1 the pool's closed-eye source (CEW, folder ``closed/``), 2 its open-eye
    source (UTKFace, ``open/``), 3 anything else.
    """
    out = np.full(len(data.ids), 3, np.int8)
    for i, rid in enumerate(data.ids):
        source, _, name = str(rid).partition(":")
        if source == "synthetic":
            out[i] = 0
        elif source == "real-faces":
            out[i] = 1 if name.startswith("closed/") else 2 if name.startswith("open/") else 3
    return out


def balanced_indices(data: Any, step: int, batch_size: int, cfg: TrainConfig,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """Training rows of step ``step``, drawn with replacement by group weight (seeded).

    ``synthetic_share`` of the mass goes to synthetic rows (when there are any), the rest in
    equal parts to the other groups present; rows within a group are equally likely.
    """
    train = data.train_index
    g = row_groups(data)[train] if groups is None else groups[train]
    present = [k for k in range(len(GROUP_NAMES)) if (g == k).any()]
    others = [k for k in present if k != 0]
    mass = {}
    if 0 in present:
        mass[0] = cfg.synthetic_share if others else 1.0
    for k in others:
        mass[k] = (1.0 - mass.get(0, 0.0)) / len(others)
    w = np.zeros(len(train))
    for k, m in mass.items():
        sel = g == k
        w[sel] = m / sel.sum()
    rng = np.random.default_rng([cfg.seed, 104_729, step])
    return train[rng.choice(len(train), size=batch_size, replace=True, p=w / w.sum())]


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity mapping the two points ``src`` exactly onto ``dst``."""
    s = complex(*(src[1] - src[0]))
    d = complex(*(dst[1] - dst[0]))
    z = d / s if abs(s) > 1e-6 else 1.0 + 0j
    a, b = z.real, z.imag
    m = np.array([[a, -b], [b, a]])
    t = dst[0] - m @ src[0]
    return np.concatenate([m, t[:, None]], 1)


def eye_blend_weight(size: int, corners: np.ndarray) -> np.ndarray:
    """(size, size) feathered ellipse weight around the eye with ``corners`` (2, 2) px."""
    centre = corners.mean(0)
    axis = corners[1] - corners[0]
    width = max(float(np.linalg.norm(axis)), 1e-6)
    ux = axis / width
    uy = np.array([-ux[1], ux[0]])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    a = (dx * ux[0] + dy * ux[1]) / (SWAP_HALF_LENGTH * width)
    b = (dx * uy[0] + dy * uy[1]) / (SWAP_HALF_HEIGHT * width)
    r = np.sqrt(a * a + b * b)
    return 1.0 / (1.0 + np.exp(-(1.0 - r) / SWAP_EDGE))


def swap_eyes(data: Any, rows: np.ndarray, cfg: TrainConfig, seed: int,
              groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counterfactual eye swaps on rows ``rows`` (see the module docstring).

    Args:
        data: the :class:`~methods.elam_ldl.data.TrainingData`.
        rows: (B,) rows of the batch.
        cfg: ``aug_eye_swap`` (probability per eye).
        seed: seed of this batch's choices.
        groups: :func:`row_groups` of ``data`` (computed when not given).

    Returns:
        ``(images (B, S, S, 3) uint8, landmarks (B, 68, 2) float32, p_closed (B, 2)
        float32)``: copies, with the swapped eyes' pixels, landmarks and P replaced.
    """
    import cv2

    images = data.images[rows].copy()
    landmarks = data.landmarks[rows].astype(np.float32).copy()
    p_closed = data.p_closed[rows].astype(np.float32).copy()
    if cfg.aug_eye_swap <= 0:
        return images, landmarks, p_closed
    g = row_groups(data) if groups is None else groups
    train = data.train_index
    closed_train = data.p_closed[train] > 0.5  # (T, 2)
    rng = np.random.default_rng([cfg.seed, 7_919, seed])
    size = images.shape[1]
    for i, row in enumerate(rows):
        for eye in (0, 1):
            if rng.random() >= cfg.aug_eye_swap:
                continue
            want_closed = not bool(p_closed[i, eye] > 0.5)
            cand = train[closed_train[:, eye] == want_closed]
            other = cand[g[cand] != g[row]]
            if len(other):
                cand = other
            if not len(cand):
                continue
            donor = int(cand[rng.integers(len(cand))])
            a, b = EYE_CORNERS[eye]
            src_lm = data.landmarks[donor].astype(np.float64)
            dst_corners = landmarks[i, [a, b]].astype(np.float64)
            m = _similarity(src_lm[[a, b]], dst_corners)
            # pixel centres: cv2 maps integer coordinates; our landmarks are continuous
            shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
            unshift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
            mc = (shift @ np.vstack([m, [0, 0, 1]]) @ unshift)[:2]
            warped = cv2.warpAffine(data.images[donor], mc, (size, size),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            w = eye_blend_weight(size, dst_corners)
            ring = (w > 0.1) & (w < 0.5)
            host = images[i].astype(np.float64)
            patch = warped.astype(np.float64)
            if ring.any():
                patch += host[ring].mean(0) - patch[ring].mean(0)
            mixed = w[..., None] * patch + (1.0 - w[..., None]) * host
            images[i] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            pts = list(EYE_POINTS[eye])
            landmarks[i, pts] = (src_lm[pts] @ m[:, :2].T + m[:, 2]).astype(np.float32)
            p_closed[i, eye] = data.p_closed[donor, eye]
    return images, landmarks, p_closed


def degrade(images: np.ndarray, cfg: TrainConfig, seed: int) -> np.ndarray:
    """Resolution loss and blur, greyscale and JPEG re-compression, per image (seeded).

    Args:
        images: (B, S, S, 3) uint8 crops (not modified).
        cfg: ``aug_degrade``, ``aug_grey``, ``aug_jpeg`` probabilities.
        seed: seed of this batch's draws.

    Returns:
        (B, S, S, 3) uint8 degraded copies.
    """
    import cv2

    rng = np.random.default_rng([cfg.seed, 15_485_863, seed])
    out = images.copy()
    size = images.shape[1]
    for i in range(len(out)):
        im = out[i]
        if rng.random() < cfg.aug_degrade:
            f = rng.uniform(0.3, 0.9)
            n = max(8, int(round(size * f)))
            im = cv2.resize(cv2.resize(im, (n, n), interpolation=cv2.INTER_AREA), (size, size),
                            interpolation=cv2.INTER_LINEAR)
            sigma = rng.uniform(0.0, 1.0)
            if sigma > 0.3:
                im = cv2.GaussianBlur(im, (0, 0), sigma)
        if rng.random() < cfg.aug_grey:
            grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
            im = np.repeat(grey[..., None], 3, axis=2)
        if rng.random() < cfg.aug_jpeg:
            q = int(rng.integers(20, 90))
            ok, buf = cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                im = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out[i] = im
    return np.ascontiguousarray(out)

