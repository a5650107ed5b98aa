"""Aligning a photo to the network input from its 68 landmarks (Deep3D's ``align_img``, ours).

Room: photo + landmarks -> a square crop where the face sits where the network expects it,
and the transform back. Shared by training-data preparation and inference, so both see the
same crops.

Like Deep3D (``util/preprocess.py: align_img``), five points derived from the 68 landmarks
(the two eye centres, the nose tip 30 and the mouth corners 48, 54) are fitted to a fixed
template by least squares, either with a scale and a translation (Deep3D; the network then
regresses the head's roll) or with a full 2D similarity (scale, in-plane rotation,
translation; Umeyama), which levels the eyes before the network sees them::

    crop = A image + t,  A = s R  (R = I without rotation)

A rotation of the photo about any point is a roll of the camera plus a shift of the
principal point, so the crop is still a pinhole image (whose principal point we take at the
crop centre, as Deep3D does).

The template is the projection of the ICT mean face's five points, frontal, at
``crop_distance`` metres from the network's camera (focal 1015 px per 224 px, centre at the
crop centre): a network whose coefficients are all zero renders the mean face exactly on
the template. Pixels are continuous coordinates (pixel centres at integer + 0.5) as in
:mod:`methods.render.camera`. Parts of the crop outside the photo are black and flagged
invalid (``valid`` mask), so losses can ignore them.

Example::

    tpl = template_points(96, crop_distance=0.9)
    tr = fit_similarity(five_points(landmarks), tpl, rotation=True)
    crop, valid = warp_image(image, tr, 96)       # (96, 96, 3) uint8, (96, 96) bool
    lmk_crop = tr.apply(landmarks)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from methods.landmarks.base import five_points as landmarks_five_points

if TYPE_CHECKING:
    from methods.elam_ldl.model import NetSpec

#: Deep3D's intrinsics: focal 1015 px for a 224 px image.
FOCAL_PER_224 = 1015.0


class ImageToCrop(NamedTuple):
    """``crop = A @ image + shift`` (pixels); ``A`` = scale (x rotation when aligned with one).

    Attributes:
        matrix: (2, 2) float64 ``A``.
        shift: (2,) float64.
    """

    matrix: np.ndarray
    shift: np.ndarray

    @property
    def scale(self) -> float:
        """The isotropic scale ``sqrt(|det A|)``."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix))))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> crop pixels."""
        return (np.asarray(points, np.float64) @ self.matrix.T + self.shift).astype(np.float32)

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> image pixels."""
        inv = np.linalg.inv(self.matrix)
        return ((np.asarray(points, np.float64) - self.shift) @ inv.T).astype(np.float32)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) eye centres (36-41, 42-47 means), nose tip (30), mouth corners (48, 54).

    Raises:
        ValueError: landmarks are not finite (..., 68, 2).
    """
    return landmarks_five_points(landmarks, eyes="ring")


@functools.lru_cache(maxsize=8)
def _template_unit(crop_distance: float) -> np.ndarray:
    """(5, 2) template for a 1-pixel crop (multiply by the crop side)."""
    from methods.elam_ldl.model import pivot_point
    from methods.facemodel import load_ict

    model = load_ict("narrow")
    lm = model.mean[model.landmark_ids].astype(np.float64) - pivot_point(model)
    cam = np.stack([lm[:, 0], -lm[:, 1], crop_distance - lm[:, 2]], 1)  # F = diag(1, -1, -1)
    f = FOCAL_PER_224 / 224.0
    px = cam[:, :2] / cam[:, 2:3] * f + 0.5
    return five_points(px)


def template_points(size: int, crop_distance: float) -> np.ndarray:
    """(5, 2) template of the five points in a ``size`` px crop (see the module docstring)."""
    return _template_unit(float(crop_distance)) * float(size)


def fit_similarity(points: np.ndarray, template: np.ndarray,
                   rotation: bool = False) -> ImageToCrop:
    """Least-squares map taking ``points`` (N, 2) onto ``template`` (N, 2).

    Args:
        points: image points.
        template: crop points.
        rotation: fit a rotation too (a full similarity, Umeyama); default scale + shift
            only, as Deep3D's ``align_img``.

    Raises:
        ValueError: shapes differ or the points are degenerate.
    """
    p = np.asarray(points, np.float64)
    q = np.asarray(template, np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points and template must both be (N, 2), got {p.shape}, {q.shape}.")
    pc, qc = p - p.mean(0), q - q.mean(0)
    den = float((pc**2).sum())
    if den < 1e-9 or not np.isfinite(den):
        raise ValueError("alignment points are degenerate (all at one place).")
    if rotation:
        u, sig, vt = np.linalg.svd(qc.T @ pc)
        d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
        r = u @ d @ vt
        s = float((sig * np.diag(d)).sum() / den)
        a = s * r
    else:
        s = float((pc * qc).sum() / den)
        a = s * np.eye(2)
    if s <= 0:
        raise ValueError("alignment points are mirrored or degenerate.")
    return ImageToCrop(a, q.mean(0) - a @ p.mean(0))


def warp_image(image: np.ndarray, tr: ImageToCrop, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` crop of an RGB image under ``tr``, and its validity mask.

    Downscaling is antialiased (an integer box reduction first, then bilinear), so small
    crops of large photos do not alias.

    Args:
        image: (H, W, 3) uint8 RGB.
        tr: image -> crop transform.
        size: crop side in pixels.

    Returns:
        ((size, size, 3) uint8 crop, black outside the photo; (size, size) bool mask of crop
        pixels whose centre falls inside the photo).
    """
    from PIL import Image

    h, w = image.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(image))
    s = tr.scale
    k = max(int(np.floor(1.0 / s)), 1) if s < 0.75 else 1
    red = np.eye(2)
    if k > 1:
        img = img.reduce(k)  # box filter: reduced pixel = original / k (exactly for W % k == 0)
        red = np.diag([img.width / w, img.height / h])
    # input (reduced) = red A^-1 (crop - shift)
    m = red @ np.linalg.inv(tr.matrix)
    c = -(m @ tr.shift)
    out = img.transform((size, size), Image.Transform.AFFINE,
                        (m[0, 0], m[0, 1], c[0], m[1, 0], m[1, 1], c[1]),
                        resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    u = np.arange(size) + 0.5
    grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)  # (x, y) per crop pixel
    src = tr.invert(grid).reshape(size, size, 2)
    valid = ((src[..., 0] >= 0) & (src[..., 0] <= w) & (src[..., 1] >= 0) & (src[..., 1] <= h))
    return np.asarray(out, np.uint8), valid


class NetworkInput(NamedTuple):
    """One photo prepared for a network (:func:`network_input`).

    Attributes:
        transform: photo -> crop pixels.
        crop: (S, S, 3) uint8 aligned crop.
        landmarks: (68, 2) float32 detected landmarks in crop pixels (the landmark identity
            branch's input).
        eye_crops: (2, s, s) canonical eye crops cut from the photo, or None for a network
            without an eye branch.
    """

    transform: ImageToCrop
    crop: np.ndarray
    landmarks: np.ndarray
    eye_crops: np.ndarray | None


def network_input(image: np.ndarray, landmarks: np.ndarray, spec: NetSpec,
                  template: np.ndarray) -> NetworkInput:
    """Everything a network of ``spec`` reads from one photo and its detected landmarks.

    Inference (``method.py``) and the ablation's speed measurement share it, so both time
    and run the same steps.

    Raises:
        ValueError: the five alignment points are degenerate (:func:`fit_similarity`).
    """
    from methods.elam.eye_crops import cut_eye_crops

    tr = fit_similarity(five_points(landmarks), template, spec.align_rotation)
    crop, _ = warp_image(image, tr, spec.input_size)
    eyes = (cut_eye_crops(image, landmarks, spec.eye_crop_size, spec.eye_enlarge)
            if spec.eye_branch else None)
    return NetworkInput(tr, crop, tr.apply(landmarks), eyes)
