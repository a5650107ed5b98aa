"""The NoW scan-to-mesh protocol: crop, landmark alignment, refinement, distances in mm.

Room: one function that scores one predicted mesh against one reference scan the way the
NoW benchmark does, plus the dataset-level pooling NoW reports. Arrays in, NamedTuples out.

Protocol (NoW ``scan2mesh_computations.py`` / ``..._metrical.py``, DESIGN.md section 5):

1. Crop the scan to a sphere: centre ``c = nose_bottom + 0.3 (nose_bridge - nose_bottom)``
   with ``nose_bridge`` the mean of the inner eye corners; radius
   ``1.4 (||outer_r - outer_l|| + ||nose_bridge - nose_bottom||) / 2``; keep points with
   ``||p - c|| <= radius``.
2. Similarity from the 7 predicted landmarks onto the 7 scan landmarks (Umeyama with scale;
   rigid for the metrical variant).
3. Refine by minimising the sum of squared scan-to-surface distances over scale, rotation
   and translation (rotation and translation only for the metrical variant), stopping at
   NoW's relative tolerance 1e-4.
4. Error = unsigned distance from every cropped scan point to the aligned mesh surface, mm.
5. Dataset figures: median, mean and std (numpy ``ddof=0``) of all distances pooled over the
   images (:func:`pooled_now_stats`).

Example::

    from metrics import now_scan_to_mesh, pooled_now_stats
    res = now_scan_to_mesh(verts, faces, lmk7, scan.points, scan.landmarks7)   # metres in
    print(res.median_mm, res.mean_mm, res.std_mm)
    stats = pooled_now_stats([r.distances_mm for r in results])

Differences from the official code, all deliberate: the refinement is Levenberg-Marquardt
on the exact point-to-surface model (NoW: chumpy dogleg) and first converges on a
subsample of the scan before polishing on all points; the landmark fit refuses reflections
(NoW's Procrustes allows ``reflection='best'``); the metrical variant uses a rigid landmark
fit (NoW reuses the translation of the scaled fit, which its refinement then corrects).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from metrics._checks import UNIT_TO_MM, as_faces, as_points, check_unit
from metrics.alignment import SimilarityTransform, refine_alignment, umeyama
from metrics.distance import DEFAULT_BACKEND, MeshSurface

logger = logging.getLogger(__name__)

#: NoW crop: the sphere centre sits this far from the nose bottom towards the nose bridge.
NOW_CENTRE_RATIO = 0.3
#: NoW crop: radius = this factor times half of (outer-eye distance + nose length).
NOW_RADIUS_FACTOR = 1.4
#: NoW's stopping tolerance: its chumpy dogleg stops once an accepted step lowers the
#: objective by less than ``e_3 = 1e-4`` relative (``scan2mesh_computations.py``); ours uses
#: the same value for the same test (see :func:`metrics.alignment.refine_alignment`).
NOW_TOL = 1e-4
#: The 7 NoW landmarks as iBUG-68 ids, in NoW order (outer/inner corner of the subject's
#: right eye, inner/outer corner of the left eye, nose bottom, mouth corners).
NOW_LANDMARK_NAMES = (
    "right_eye_outer",
    "right_eye_inner",
    "left_eye_inner",
    "left_eye_outer",
    "nose_bottom",
    "mouth_right",
    "mouth_left",
)


class NowResult(NamedTuple):
    """Scan-to-mesh error of one prediction under the NoW protocol.

    Attributes:
        distances_mm: (N,) float64 unsigned distance of every cropped scan point to the
            aligned predicted surface, mm.
        median_mm: median of ``distances_mm``.
        mean_mm: mean of ``distances_mm``.
        std_mm: standard deviation (ddof=0, as numpy/NoW) of ``distances_mm``.
        transform: refined prediction -> scan :class:`SimilarityTransform` in the input unit.
        aligned_vertices: (V, 3) float32 predicted vertices in the scan frame, input unit.
        n_points: N, cropped scan points scored.
        converged: whether the refinement met its stopping test.
        n_iter: refinement linearisations used.
        init_transform: the landmark (Umeyama) transform before refinement.
        crop_mask: (M,) bool, which of the input scan points were scored.
        landmark_error_mm: (7,) distance between the scan landmarks and the predicted
            landmarks after the final transform, mm (a large value flags a bad landmark).
    """

    distances_mm: np.ndarray
    median_mm: float
    mean_mm: float
    std_mm: float
    transform: SimilarityTransform
    aligned_vertices: np.ndarray
    n_points: int
    converged: bool
    n_iter: int
    init_transform: SimilarityTransform
    crop_mask: np.ndarray
    landmark_error_mm: np.ndarray


class NowStats(NamedTuple):
    """NoW dataset figures over distances pooled across samples.

    Attributes:
        median_mm: median of all pooled distances.
        mean_mm: mean of all pooled distances.
        std_mm: standard deviation (ddof=0) of all pooled distances.
        n_points: number of pooled distances.
        n_samples: number of samples pooled.
    """

    median_mm: float
    mean_mm: float
    std_mm: float
    n_points: int
    n_samples: int


def _check_landmarks7(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, np.float64)
    if arr.shape != (7, 3):
        raise ValueError(
            f"{name} must be the 7 NoW landmarks as a (7, 3) array, got shape {arr.shape}."
        )
    return as_points(arr, name)


def now_crop_centre_radius(
    landmarks7: np.ndarray,
    centre_ratio: float = NOW_CENTRE_RATIO,
    radius_factor: float = NOW_RADIUS_FACTOR,
) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of the NoW crop sphere from the scan's 7 landmarks.

    Args:
        landmarks7: (7, 3) scan landmarks in NoW order.
        centre_ratio: fraction of the way from the nose bottom to the nose bridge.
        radius_factor: radius = factor * (outer-eye distance + nose length) / 2.

    Returns:
        (centre, radius) in the landmarks' unit.

    Raises:
        ValueError: landmarks not (7, 3) or not finite.
    """
    lmk = _check_landmarks7(landmarks7, "scan landmarks")
    nose_bottom = lmk[4]
    nose_bridge = (lmk[1] + lmk[2]) / 2.0
    centre = nose_bottom + centre_ratio * (nose_bridge - nose_bottom)
    outer_eye = float(np.linalg.norm(lmk[0] - lmk[3]))
    nose = float(np.linalg.norm(nose_bridge - nose_bottom))
    return centre, radius_factor * (outer_eye + nose) / 2.0


def now_crop_mask(
    points: np.ndarray,
    landmarks7: np.ndarray,
    centre_ratio: float = NOW_CENTRE_RATIO,
    radius_factor: float = NOW_RADIUS_FACTOR,
) -> np.ndarray:
    """Which scan points lie inside the NoW crop sphere.

    See :func:`now_crop_centre_radius` for the sphere; points on the sphere are kept
    (``<=``, as NoW).

    Args:
        points: (N, 3) scan points, same unit and frame as ``landmarks7``.
        landmarks7: (7, 3) scan landmarks in NoW order.
        centre_ratio: see :func:`now_crop_centre_radius`.
        radius_factor: see :func:`now_crop_centre_radius`.

    Returns:
        (N,) bool mask.

    Raises:
        ValueError: malformed points or landmarks.
    """
    pts = as_points(points, "scan points", allow_empty=True)
    centre, radius = now_crop_centre_radius(landmarks7, centre_ratio, radius_factor)
    return np.linalg.norm(pts - centre, axis=1) <= radius


def now_scan_to_mesh(
    pred_vertices: np.ndarray,
    pred_faces: np.ndarray,
    pred_landmarks7: np.ndarray,
    scan_points: np.ndarray,
    scan_landmarks7: np.ndarray,
    unit: str = "m",
    metrical: bool = False,
    crop: bool = True,
    scan_cropped: bool = False,
    centre_ratio: float = NOW_CENTRE_RATIO,
    radius_factor: float = NOW_RADIUS_FACTOR,
    max_iter: int = 50,
    tol: float = NOW_TOL,
    n_sample: int | None = 10000,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
    check_units: bool = True,
    n_threads: int = 0,
    surface: MeshSurface | None = None,
) -> NowResult:
    """Scores one predicted mesh against one scan with the NoW protocol.

    Direction: scan -> mesh (every cropped scan point to the predicted surface). The
    prediction is moved onto the scan; the scan is never moved.

    Args:
        pred_vertices: (V, 3) predicted mesh vertices, any frame.
        pred_faces: (F, 3) int triangles of the predicted mesh.
        pred_landmarks7: (7, 3) the prediction's 7 NoW landmarks, in the mesh's frame.
        scan_points: (M, 3) reference scan vertices.
        scan_landmarks7: (7, 3) scan landmarks, NoW order, in the scan's frame.
        unit: the one unit all four inputs share: ``m`` (default, the suite's), ``cm`` or
            ``mm`` (NoW scans). Outputs are in mm whatever it is.
        metrical: rigid fit only (rotation, translation); the prediction's size is taken as
            given in ``unit``. Default: similarity fit (scale too), as NoW's main table.
        crop: apply the NoW sphere crop (False scores every scan point).
        scan_cropped: the scan is already cropped (``Scan.cropped``); skips the crop.
        centre_ratio: crop-sphere centre position, see :func:`now_crop_centre_radius`.
        radius_factor: crop-sphere radius factor, see :func:`now_crop_centre_radius`.
        max_iter: refinement iteration cap, see :func:`refine_alignment`.
        tol: refinement stopping tolerance; default NoW's (:data:`NOW_TOL`).
        n_sample: first-stage subsample size of the refinement (None: all points).
        seed: subsample seed.
        backend: ``"bvh"`` (default, fast), ``"open3d"`` or ``"brute"`` (reference)
            distances, see :mod:`metrics.distance`.
        check_units: reject inputs whose extent is not face-sized in ``unit``.
        n_threads: threads for open3d's distance queries (0: all cores).
        surface: a prebuilt :class:`MeshSurface` of (pred_vertices, pred_faces) to use
            (and to reuse afterwards, e.g. for the eye-region error); built when None.

    Returns:
        :class:`NowResult`.

    Raises:
        ValueError: NaN/inf coordinates, empty scan, empty crop, face indices out of range,
            landmarks not (7, 3), degenerate landmarks, or an input whose size says another
            unit than ``unit`` (the message names the unit it looks like).
    """
    if unit not in UNIT_TO_MM:
        raise ValueError(f"unit must be one of {sorted(UNIT_TO_MM)}, got {unit!r}.")
    verts = as_points(pred_vertices, "predicted vertices")
    faces = as_faces(pred_faces, verts.shape[0], "predicted faces")
    pred_lmk = _check_landmarks7(pred_landmarks7, "predicted landmarks")
    scan = as_points(scan_points, "scan points")
    scan_lmk = _check_landmarks7(scan_landmarks7, "scan landmarks")
    if check_units:
        check_unit(verts, unit, "predicted vertices")
        check_unit(pred_lmk, unit, "predicted landmarks", kind="landmarks")
        check_unit(scan_lmk, unit, "scan landmarks", kind="landmarks")
        if scan.shape[0] >= 100:
            check_unit(scan, unit, "scan points")

    if crop and not scan_cropped:
        mask = now_crop_mask(scan, scan_lmk, centre_ratio, radius_factor)
        if not mask.any():
            raise ValueError(
                "no scan point lies inside the NoW crop sphere; the scan landmarks are probably "
                "not in the scan's frame or unit."
            )
    else:
        mask = np.ones(scan.shape[0], bool)
    cropped = scan[mask]

    init = umeyama(pred_lmk, scan_lmk, with_scale=not metrical)
    if surface is None:
        surface = MeshSurface(verts, faces, backend=backend, n_threads=n_threads)
    ref = refine_alignment(
        cropped,
        verts,
        faces,
        init,
        optimise_scale=not metrical,
        max_iter=max_iter,
        tol=tol,
        n_sample=n_sample,
        seed=seed,
        surface=surface,
    )
    to_mm = UNIT_TO_MM[unit]
    dist_mm = ref.distances * to_mm
    lmk_err = np.linalg.norm(ref.transform.apply(pred_lmk) - scan_lmk, axis=1) * to_mm
    return NowResult(
        distances_mm=dist_mm,
        median_mm=float(np.median(dist_mm)),
        mean_mm=float(np.mean(dist_mm)),
        std_mm=float(np.std(dist_mm)),
        transform=ref.transform,
        aligned_vertices=ref.transform.apply(verts).astype(np.float32),
        n_points=int(dist_mm.shape[0]),
        converged=ref.converged,
        n_iter=ref.n_iter,
        init_transform=init,
        crop_mask=mask,
        landmark_error_mm=lmk_err,
    )


def pooled_now_stats(distances_mm: list[np.ndarray] | tuple[np.ndarray, ...]) -> NowStats:
    """NoW's dataset figures: median, mean, std over all distances pooled across samples.

    Every point weighs the same, so scans with more cropped points weigh more (as NoW's
    ``np.hstack`` of per-image distances).

    Args:
        distances_mm: per-sample (N_i,) distance arrays in mm (e.g.
            ``[r.distances_mm for r in results]``).

    Returns:
        :class:`NowStats`.

    Raises:
        ValueError: no samples, no distances at all, or non-finite distances.
    """
    if len(distances_mm) == 0:
        raise ValueError("pooled_now_stats needs at least one sample's distances.")
    arrays = [np.asarray(d, np.float64).ravel() for d in distances_mm]
    pooled = np.concatenate(arrays)
    if pooled.size == 0:
        raise ValueError("pooled_now_stats got only empty distance arrays.")
    if not np.isfinite(pooled).all():
        raise ValueError("pooled distances contain NaN or inf values.")
    return NowStats(
        median_mm=float(np.median(pooled)),
        mean_mm=float(np.mean(pooled)),
        std_mm=float(np.std(pooled)),
        n_points=int(pooled.size),
        n_samples=len(arrays),
    )
