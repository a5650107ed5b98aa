"""The REALY region-wise protocol (Chai et al., ECCV 2022), plus an eye region of our own.

Room: pure functions that score one predicted mesh against ground-truth scan *regions* the
way the REALY benchmark does (github.com/czh-98/REALY @3f13e9a, ``main.py`` and ``utils/``),
and the per-region statistics REALY reports. Arrays in, NamedTuples out; nothing here reads
files or knows a dataset.

Protocol (for each subject; REALY scans are in their own unit, about 7-9.5 mm, and
``metrical_scale`` turns that unit into millimetres at the very end):

1. **gICP** (:func:`realy_keypoint_similarity`): a similarity from the prediction's 7
   keypoints (68-ids 36, 39, 42, 45, 33, 48, 54) onto the ground-truth ones. Rotation from
   the SVD of the cross-covariance, scale as REALY computes it: the ratio of the summed
   absolute centred coordinates, ``sum|y - mean y| / sum|R (x - mean x)|`` (an L1 ratio, not
   Umeyama's least-squares scale).
2. **rICP**, per region (:func:`region_icp`): rigid ICP without scale from the globally
   aligned prediction. Correspondences: the closest point on the predicted *surface* of every
   ground-truth region vertex, plus the region's keypoints (:data:`RIGID_KEYPOINTS`) repeated
   ``int(n_region_vertices / n_keypoints / d)`` times (``d`` = 4 for the cheek, 1 otherwise,
   :data:`KEYPOINT_REPEAT_DIVISOR`). At most 100 updates; it stops when the mean squared
   residual changes by less than 1e-6 (data unit squared) between iterations, without
   applying the last fit (as upstream).
3. **bICP** (:func:`region_error`): the ground-truth region is deformed by non-rigid ICP
   (:func:`nicp_deform`, per-vertex affine transforms with an edge stiffness term, Amberg et
   al. 2007) toward its closest points on the aligned prediction; nose, mouth, forehead (and
   our eye region) add keypoint terms: a first step of keypoints only with stiffness 150 and
   weights ``diag(2, 2, 3, 2)``, keypoint weight 50, then stiffness ``50 exp(-0.5 k)``,
   k = 0, 1, 2, with keypoint weight ``50 exp(-0.9 step) / 10``; the cheek uses no keypoints
   (three stages, same stiffness schedule). The deformed vertices' closest points on the
   prediction are the final correspondences.
4. **Error per region** = mean over the (cleaned) ground-truth region vertices of the
   distance from each vertex to its final correspondence, times ``metrical_scale`` (mm).
   REALY calls it "NMSE"; it is a mean Euclidean distance.
5. **Report** (:func:`realy_report`): mean, median and std (ddof 1) per region over the
   subjects, and ``all`` = the mean of the four regional means.

Keypoints: REALY's 85 "HIFI3D keypoints" are the iBUG 68 plus 17 cheek points (ids 68-84).
Our topologies (ICT, BFM, FLAME) place only the 68; with 68 predicted keypoints every
keypoint set keeps its ids below 68, so the nose's rigid set loses ids 70, 71 (9 of 11
left), the cheek's rigid set loses 76, 77 (25 of 27 left); gICP, the forehead, the mouth
and all bICP keypoint sets are unaffected.

Eye region (ours, REALY has none): the periocular region (eyelids, eye corners and the
skin around them) is scored the same way with the 12 eye-contour keypoints (68-ids 36-47)
for both rICP and bICP. On data in metres, convert to centimetres first: every threshold
above is in the data unit, and REALY's unit is closest to a centimetre.

Deliberate differences from upstream: closest points come from ``metrics.distance`` (exact
point-to-triangle, zero-area triangles ignored) instead of trimesh; the sparse normal
equations are solved with SciPy's sparse LU instead of CHOLMOD (same solution); rotations
never reflect (upstream's SVD fit has no determinant check; a reflection never wins on face
data); the cheek's non-rigid stages get a safety cap of :attr:`RealyParams.nicp_max_steps`
steps (upstream loops until convergence).

Example::

    from metrics.realy import realy_evaluate, realy_report
    res = realy_evaluate(verts, faces, pred_kp68, gt_kp85,
                         {"nose": (nv, nf), "mouth": (mv, mf), ...}, unit_mm=scale)
    res.errors_mm["nose"]
    report = realy_report([r.errors_mm for r in results])
    report.all_mm, report.regions["nose"].median_mm
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy.spatial import cKDTree

from metrics._checks import UNIT_TO_MM, as_faces, as_points
from metrics.alignment import SimilarityTransform, umeyama
from metrics.distance import DEFAULT_BACKEND, MeshSurface, SurfaceDistance

if TYPE_CHECKING:  # numba loads only when a BVH is built
    from metrics.bvh import NearestState

logger = logging.getLogger(__name__)

#: REALY's four scan regions, in its report order.
REALY_REGIONS = ("nose", "mouth", "forehead", "cheek")
#: Our periocular region, scored like REALY's.
EYE_REGION = "eyes"
#: Keypoints of the global similarity (iBUG-68 ids, NoW order).
SEVEN_KEYPOINTS = (36, 39, 42, 45, 33, 48, 54)

_FOREHEAD = tuple(range(36, 48)) + tuple(range(17, 27))
_MOUTH = tuple(range(48, 61)) + (64,)
_NOSE = tuple(range(27, 36))
_NOSE_RIGID = (27, 28, 29, 30, 31, 35, 32, 33, 34, 70, 71)
_CHEEK_RIGID = (tuple(range(48, 61)) + (64, 76, 77, 36, 41, 40, 39, 42, 47, 46, 45, 7, 8, 9))
_EYES = tuple(range(36, 48))

#: Keypoint ids (REALY's 85-point numbering; 0-67 are iBUG 68) that anchor each region's rigid
#: ICP. Eye keypoints 36-47 anchor the forehead and the cheek; REALY's nose uses a wider set
#: than its bICP step.
RIGID_KEYPOINTS: dict[str, tuple[int, ...]] = {
    "nose": _NOSE_RIGID,
    "mouth": _MOUTH,
    "forehead": _FOREHEAD,
    "cheek": _CHEEK_RIGID,
    EYE_REGION: _EYES,
}
#: Keypoint ids of each region's non-rigid (bICP) step; None: no keypoint term (cheek).
NICP_KEYPOINTS: dict[str, tuple[int, ...] | None] = {
    "nose": _NOSE,
    "mouth": _MOUTH,
    "forehead": _FOREHEAD,
    "cheek": None,
    EYE_REGION: _EYES,
}
#: rICP keypoint repetition = int(region vertices / keypoints / divisor).
KEYPOINT_REPEAT_DIVISOR: dict[str, float] = {"cheek": 4.0}


class RealyParams(NamedTuple):
    """Parameters of the protocol; the defaults are REALY's (``rICP.py``, ``eval.py``).

    Attributes:
        icp_max_iter: most rigid updates per region (100).
        icp_tol: stop when the mean squared residual changes by less than this (1e-6, in
            data units squared).
        nicp_epsilon: stop a non-rigid stage when ``||X - X_prev||_F`` falls to this (1.0),
            halved at each stage.
        nicp_gamma: weight of the translation column in the stiffness term (1).
        nicp_alpha: stiffness of the data stages (50), decayed by ``exp(-0.5 k)``.
        nicp_alpha_keypoints: stiffness of the keypoint-only first step (150).
        keypoint_weight: keypoint weight of the first step (50); later steps use
            ``keypoint_weight exp(-0.9 step) / 10``.
        nicp_max_keypoint_steps: a keypoint stage stops after this many steps plus one (10,
            upstream's ``step > 10``).
        nicp_max_steps: safety cap on steps of a stage without keypoints (upstream: none).
        nn_threshold_floor: data-term outlier threshold ``max(2 mean NN distance, this)``
            (1.0 data unit).
    """

    icp_max_iter: int = 100
    icp_tol: float = 1e-6
    nicp_epsilon: float = 1.0
    nicp_gamma: float = 1.0
    nicp_alpha: float = 50.0
    nicp_alpha_keypoints: float = 150.0
    keypoint_weight: float = 50.0
    nicp_max_keypoint_steps: int = 10
    nicp_max_steps: int = 200
    nn_threshold_floor: float = 1.0


#: REALY's parameters.
DEFAULT_PARAMS = RealyParams()


class RegionIcpResult(NamedTuple):
    """Rigid alignment of a prediction to one region.

    Attributes:
        vertices: (V, 3) float64 aligned predicted vertices.
        transform: rigid :class:`SimilarityTransform` applied (scale 1), input -> aligned.
        n_iter: rigid updates applied.
        residual: mean squared correspondence residual of the last fit, data unit squared.
    """

    vertices: np.ndarray
    transform: SimilarityTransform
    n_iter: int
    residual: float


class NicpResult(NamedTuple):
    """Non-rigid deformation of a source mesh toward target points.

    Attributes:
        vertices: (N, 3) float64 deformed source vertices.
        n_steps: linear solves done (all stages).
        capped: whether a stage stopped on :attr:`RealyParams.nicp_max_steps`.
    """

    vertices: np.ndarray
    n_steps: int
    capped: bool


class RegionError(NamedTuple):
    """REALY error of one region.

    Attributes:
        error: mean distance of the ground-truth region vertices to their correspondences,
            data unit (multiply by the metrical scale for mm).
        distances: (N,) float64 per-vertex distances, data unit.
        region_vertices: (N, 3) the cleaned ground-truth vertices the error is taken over.
        deformed: (N, 3) the ground-truth region after bICP.
        nicp_steps: linear solves of bICP.
    """

    error: float
    distances: np.ndarray
    region_vertices: np.ndarray
    deformed: np.ndarray
    nicp_steps: int


class RealyResult(NamedTuple):
    """REALY errors of one prediction.

    Attributes:
        errors_mm: region -> mean distance in mm (error x ``unit_mm``).
        distances_mm: region -> (N,) per-vertex distances in mm.
        aligned: region -> (V, 3) predicted vertices after gICP + rICP, data unit.
        icp_iters: region -> rigid updates used.
        seconds: region -> wall time of rICP + bICP, plus ``"global"`` for gICP.
    """

    errors_mm: dict[str, float]
    distances_mm: dict[str, np.ndarray]
    aligned: dict[str, np.ndarray]
    icp_iters: dict[str, int]
    seconds: dict[str, float]


class RegionStats(NamedTuple):
    """Statistics of one region's per-subject errors (mm)."""

    mean_mm: float
    median_mm: float
    std_mm: float
    n: int


class RealyReport(NamedTuple):
    """What REALY reports over a set of subjects.

    Attributes:
        regions: region -> :class:`RegionStats` (std with ddof 1, as REALY).
        all_mm: mean of the regional means over REALY's four regions (NaN unless all four
            are present).
    """

    regions: dict[str, RegionStats]
    all_mm: float


# ----------------------------------------------------------------------------------------
# Keypoints and rigid fits
# ----------------------------------------------------------------------------------------


def usable_keypoints(ids: Sequence[int], n_pred: int, n_gt: int) -> list[int]:
    """The ids of a keypoint set that both keypoint arrays hold (ids < both lengths).

    With 68 predicted keypoints (our topologies) REALY's cheek ids 68-84 drop out.
    """
    limit = min(n_pred, n_gt)
    return [i for i in ids if i < limit]


def realy_keypoint_similarity(
    source: np.ndarray, target: np.ndarray, with_scale: bool = True
) -> SimilarityTransform:
    """REALY's keypoint fit (``fit_icp_RT``): SVD rotation, L1-ratio scale, mean translation.

    Args:
        source: (K, 3) points to move (predicted keypoints), K >= 3.
        target: (K, 3) fixed points (ground-truth keypoints).
        with_scale: estimate the scale ``sum|target - mean| / sum|R (source - mean)|``;
            False gives a rigid fit.

    Returns:
        :class:`SimilarityTransform` mapping ``source`` toward ``target``.

    Raises:
        ValueError: shape mismatch, fewer than 3 points or degenerate point sets.
    """
    src = as_points(source, "source keypoints")
    dst = as_points(target, "target keypoints")
    rigid = umeyama(src, dst, with_scale=False)
    rot = rigid.rotation
    xs = src - src.mean(axis=0)
    xd = dst - dst.mean(axis=0)
    scale = float(np.abs(xd).sum() / np.abs(xs @ rot.T).sum()) if with_scale else 1.0
    trans = (dst - scale * src @ rot.T).mean(axis=0)
    return SimilarityTransform(rot, trans, scale)


def region_icp(
    vertices: np.ndarray,
    faces: np.ndarray,
    region_points: np.ndarray,
    pred_keypoints: np.ndarray,
    gt_keypoints: np.ndarray,
    repeat_divisor: float = 1.0,
    params: RealyParams = DEFAULT_PARAMS,
    backend: str = DEFAULT_BACKEND,
    surface: MeshSurface | None = None,
) -> RegionIcpResult:
    """REALY's rICP: rigid ICP of a prediction onto one ground-truth region.

    Args:
        vertices: (V, 3) predicted vertices (after gICP).
        faces: (F, 3) predicted triangles, 0-based.
        region_points: (N, 3) ground-truth region vertices.
        pred_keypoints: (K, 3) the region's keypoints on the prediction (same frame as
            ``vertices``), K may be 0.
        gt_keypoints: (K, 3) the same keypoints on the ground truth.
        repeat_divisor: keypoints are repeated ``int(N / K / repeat_divisor)`` times.
        params: iteration cap and stopping tolerance.
        backend: closest-point backend of ``metrics.distance``.
        surface: a prebuilt :class:`MeshSurface` of (vertices, faces) to reuse.

    Returns:
        :class:`RegionIcpResult`.
    """
    verts = as_points(vertices, "predicted vertices")
    pts = as_points(region_points, "region points")
    kp_p = np.asarray(pred_keypoints, np.float64).reshape(-1, 3)
    kp_g = np.asarray(gt_keypoints, np.float64).reshape(-1, 3)
    if kp_p.shape != kp_g.shape:
        raise ValueError(f"keypoint count mismatch: {kp_p.shape[0]} predicted vs "
                         f"{kp_g.shape[0]} ground-truth.")
    reps = int(pts.shape[0] / kp_p.shape[0] / repeat_divisor) if kp_p.shape[0] else 0
    kp_p = np.tile(kp_p, (reps, 1))
    kp_g = np.tile(kp_g, (reps, 1))
    target = np.vstack([pts, kp_g])
    base = surface or MeshSurface(verts, faces, backend=backend)
    total = SimilarityTransform.identity()
    prev, n_iter, residual = 0.0, 0, float("nan")
    state = None  # ICP asks for the same points again after a small motion (metrics.bvh)
    while True:
        res, state = _TransformedSurface(base, total).query_tracked(pts, state)
        corr = np.vstack([res.closest_points, total.apply(kp_p)])
        step = umeyama(corr, target, with_scale=False)
        residual = float(np.mean(np.sum((step.apply(corr) - target) ** 2, axis=1)))
        if abs(residual - prev) < params.icp_tol or n_iter >= params.icp_max_iter:
            break
        n_iter += 1
        prev = residual
        total = step.compose(total)
    return RegionIcpResult(total.apply(verts), total, n_iter, residual)


# ----------------------------------------------------------------------------------------
# Non-rigid ICP (bICP)
# ----------------------------------------------------------------------------------------


def _edge_laplacian(faces: np.ndarray, n: int) -> scipy.sparse.csr_matrix:
    """``M^T M`` of the edge-vertex incidence matrix M (unique undirected edges)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [0, 2]], faces[:, [1, 2]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    ne = e.shape[0]
    m = scipy.sparse.csr_matrix(
        (np.r_[np.ones(ne), -np.ones(ne)], (np.r_[np.arange(ne), np.arange(ne)],
                                            np.r_[e[:, 0], e[:, 1]])), shape=(ne, n))
    return (m.T @ m).tocsr()


def _point_blocks(points: np.ndarray, weight_sq: np.ndarray) -> scipy.sparse.csr_matrix:
    """``D^T diag(w^2) D``: per-vertex 4x4 blocks ``w_i^2 h_i h_i^T``, ``h_i = [p_i, 1]``."""
    n = points.shape[0]
    h = np.hstack([points, np.ones((n, 1))])
    blocks = weight_sq[:, None, None] * h[:, :, None] * h[:, None, :]  # (n, 4, 4)
    rows = (4 * np.arange(n))[:, None, None] + np.arange(4)[None, :, None]
    cols = (4 * np.arange(n))[:, None, None] + np.arange(4)[None, None, :]
    rows, cols = np.broadcast_to(rows, blocks.shape), np.broadcast_to(cols, blocks.shape)
    return scipy.sparse.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())),
                                   shape=(4 * n, 4 * n))


def _point_rhs(points: np.ndarray, weight_sq: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``D^T diag(w^2) T``: (4n, 3)."""
    n = points.shape[0]
    h = np.hstack([points, np.ones((n, 1))])
    return (weight_sq[:, None, None] * h[:, :, None] * targets[:, None, :]).reshape(4 * n, 3)


def _solve_spd(a: scipy.sparse.spmatrix, b: np.ndarray) -> np.ndarray:
    """Solves the symmetric positive (semi-)definite system ``a x = b`` (sparse LU).

    A vanishing ridge toward the identity maps (``1e-13`` of the largest diagonal entry)
    only matters in a null space (a connected piece with neither data nor keypoint term,
    which CHOLMOD would refuse); those vertices then stay where they are.
    """
    n = a.shape[0]
    ridge = 1e-13 * max(float(abs(a.diagonal()).max()), 1.0)
    ident = np.tile(np.vstack([np.eye(3), np.zeros((1, 3))]), (n // 4, 1))
    # SuperLU in symmetric mode (diagonal pivots, minimum degree on A^T + A): safe for a
    # symmetric positive definite matrix, and 20x faster here than partial pivoting.
    lu = scipy.sparse.linalg.splu((a + ridge * scipy.sparse.identity(n)).tocsc(),
                                  permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                  options={"SymmetricMode": True})
    return lu.solve(b + ridge * ident)


def nicp_deform(
    source: np.ndarray,
    source_faces: np.ndarray,
    target_points: np.ndarray,
    keypoint_index: Sequence[int] | None = None,
    keypoint_targets: np.ndarray | None = None,
    params: RealyParams = DEFAULT_PARAMS,
) -> NicpResult:
    """REALY's non-rigid ICP: deforms a mesh toward a point set (optionally with keypoints).

    Each step solves, for per-vertex affine maps ``X_i`` (4x3) applied to the current
    vertices ``h_i = [v_i, 1]``, the least-squares system
    ``alpha^2 ||(M (x) G) X||^2 + sum_i w_i^2 ||h_i X_i - t_i||^2 + sum_k c^2 ||h_k X_k - q_k||^2``
    where M is the edge-vertex incidence matrix, ``G = diag(1, 1, 1, gamma)``, ``t_i`` the
    nearest target point of ``v_i`` and ``w_i`` 1 when its distance is below
    ``max(2 mean distance, 1)``, else 0. The stage schedule is REALY's (see the module
    docstring); a stage ends when ``||X - X_prev||_F`` reaches its epsilon.

    Args:
        source: (N, 3) source vertices (the ground-truth region).
        source_faces: (F, 3) its triangles, 0-based.
        target_points: (P, 3) points to deform toward (closest points on the prediction).
        keypoint_index: source vertex ids with keypoint targets, or None for no keypoints.
        keypoint_targets: (K, 3) their targets; a repeated id keeps its last target.
        params: the schedule.

    Returns:
        :class:`NicpResult`.
    """
    src = as_points(source, "source vertices")
    faces = as_faces(source_faces, src.shape[0], "source faces")
    tgt = as_points(target_points, "target points")
    n = src.shape[0]
    tree = cKDTree(tgt)
    lap = _edge_laplacian(faces, n)
    with_kp = keypoint_index is not None and len(keypoint_index) > 0
    kp_idx = np.zeros(0, np.int64)
    kp_tgt = np.zeros((0, 3))
    if with_kp:
        kp_idx = np.asarray(keypoint_index, np.int64)
        kp_q = as_points(keypoint_targets, "keypoint targets")
        if kp_q.shape[0] != kp_idx.shape[0]:
            raise ValueError(f"{kp_idx.shape[0]} keypoint ids but {kp_q.shape[0]} targets.")
        # numpy fancy assignment keeps the last value of a repeated id, as upstream
        full = np.zeros((n, 3))
        full[kp_idx] = kp_q
        kp_idx = np.unique(kp_idx)
        kp_tgt = full[kp_idx]

    def stiffness(g: tuple[float, ...]) -> scipy.sparse.csr_matrix:
        return scipy.sparse.kron(lap, scipy.sparse.diags(np.square(g))).tocsr()

    g_data = (1.0, 1.0, 1.0, params.nicp_gamma)
    k_data = stiffness(g_data)
    cur = src.copy()
    x = np.ones((4 * n, 3))
    x_prev = np.zeros((4 * n, 3))
    n_steps, capped = 0, False

    def step(alpha: float, k_stiff: scipy.sparse.spmatrix, data: bool, kp_w: float) -> None:
        nonlocal cur, x, x_prev, n_steps
        x_prev = x
        a = (alpha * alpha) * k_stiff
        b = np.zeros((4 * n, 3))
        if data:
            dist, nn = tree.query(cur)
            thr = max(2.0 * float(np.mean(dist)), params.nn_threshold_floor)
            w2 = (dist < thr).astype(np.float64)
            a = a + _point_blocks(cur, w2)
            b += _point_rhs(cur, w2, tgt[nn])
        if kp_w > 0 and kp_idx.size:
            wk = np.zeros(n)
            wk[kp_idx] = kp_w * kp_w
            targets = np.zeros((n, 3))
            targets[kp_idx] = kp_tgt
            a = a + _point_blocks(cur, wk)
            b += _point_rhs(cur, wk, targets)
        x = _solve_spd(a, b)
        h = np.hstack([cur, np.ones((n, 1))])
        cur = np.einsum("na,nad->nd", h, x.reshape(n, 4, 3))
        n_steps += 1

    if with_kp:
        count = 0
        for decay in range(4):
            eps = params.nicp_epsilon * 0.5 ** (decay - 1)
            if decay == 0:
                # keypoints only, stiffer: one step (upstream breaks after it)
                if np.linalg.norm(x - x_prev) > eps:
                    g_kp = (2.0, 2.0, 3.0, 2.0 * params.nicp_gamma)
                    step(params.nicp_alpha_keypoints, stiffness(g_kp), False,
                         params.keypoint_weight)
                    count += 1
                continue
            alpha = params.nicp_alpha * np.exp(-0.5 * (decay - 1))
            s = 0
            while np.linalg.norm(x - x_prev) > eps and s <= params.nicp_max_keypoint_steps:
                step(alpha, k_data, True, params.keypoint_weight * np.exp(-0.9 * count) / 10.0)
                s += 1
                count += 1
    else:
        for decay in range(3):
            eps = params.nicp_epsilon * 0.5**decay
            alpha = params.nicp_alpha * np.exp(-0.5 * decay)
            s = 0
            while np.linalg.norm(x - x_prev) > eps:
                if s >= params.nicp_max_steps:
                    capped = True
                    logger.warning("non-rigid ICP stage %d stopped after %d steps", decay, s)
                    break
                step(alpha, k_data, True, 0.0)
                s += 1
    return NicpResult(cur, n_steps, capped)


def clean_region_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops unreferenced vertices and merges coincident ones (to 1e-8), keeping first order.

    REALY loads each ground-truth region with trimesh's ``process=True``, which does this;
    the error is then averaged over the remaining vertices.

    Returns:
        (vertices (N', 3) float64, faces (F, 3) int64 re-indexed).
    """
    v = as_points(vertices, "region vertices")
    f = as_faces(faces, v.shape[0], "region faces")
    used = np.unique(f)
    key = np.round(v[used], 8)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)            # unique rows in first-occurrence order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    remap = np.full(v.shape[0], -1, np.int64)
    remap[used] = rank[inverse.reshape(-1)]
    return v[used[first[order]]], remap[f]


def region_error(
    vertices: np.ndarray,
    faces: np.ndarray,
    region_vertices: np.ndarray,
    region_faces: np.ndarray,
    pred_keypoints: np.ndarray | None = None,
    gt_keypoints: np.ndarray | None = None,
    params: RealyParams = DEFAULT_PARAMS,
    backend: str = DEFAULT_BACKEND,
    surface: MeshSurface | None = None,
) -> RegionError:
    """REALY's bICP error of one region (after rICP).

    Args:
        vertices: (V, 3) region-aligned predicted vertices.
        faces: (F, 3) predicted triangles (REALY passes the masked template faces here).
        region_vertices: (N, 3) ground-truth region vertices.
        region_faces: (M, 3) ground-truth region triangles, 0-based.
        pred_keypoints: (K, 3) region keypoints on the aligned prediction, or None (cheek).
        gt_keypoints: (K, 3) the same keypoints on the ground truth, or None.
        params: bICP schedule.
        backend: closest-point backend.
        surface: a prebuilt :class:`MeshSurface` of (vertices, faces) to reuse.

    Returns:
        :class:`RegionError` in the data unit.
    """
    gt_v, gt_f = clean_region_mesh(region_vertices, region_faces)
    surf = surface or MeshSurface(vertices, faces, backend=backend)
    corr = surf.query(gt_v).closest_points
    idx, kp_t = None, None
    if pred_keypoints is not None and gt_keypoints is not None and len(gt_keypoints):
        _, idx = cKDTree(gt_v).query(np.asarray(gt_keypoints, np.float64))
        kp_t = np.asarray(pred_keypoints, np.float64)
    deformed = nicp_deform(gt_v, gt_f, corr, idx, kp_t, params)
    final = surf.query(deformed.vertices).closest_points
    d = np.linalg.norm(final - gt_v, axis=1)
    return RegionError(float(d.mean()), d, gt_v, deformed.vertices, deformed.n_steps)


# ----------------------------------------------------------------------------------------
# One subject, and the report
# ----------------------------------------------------------------------------------------


def realy_evaluate(
    vertices: np.ndarray,
    faces: np.ndarray,
    pred_keypoints: np.ndarray,
    gt_keypoints: np.ndarray,
    regions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    unit_mm: float = 1.0,
    params: RealyParams = DEFAULT_PARAMS,
    backend: str = DEFAULT_BACKEND,
    error_faces: np.ndarray | None = None,
) -> RealyResult:
    """Scores one predicted mesh against ground-truth regions (REALY protocol).

    Args:
        vertices: (V, 3) predicted vertices, any frame, in (roughly) the scan's unit scale
            (gICP estimates the scale).
        faces: (F, 3) predicted triangles, 0-based.
        pred_keypoints: (68, 3) or (85, 3) keypoints of the prediction (same frame).
        gt_keypoints: (85, 3) REALY keypoints (or (68, 3)) of the ground truth.
        regions: region name -> (vertices (N, 3), faces (M, 3) 0-based), in the scan unit;
            names from :data:`RIGID_KEYPOINTS` (REALY's four and/or ``"eyes"``).
        unit_mm: millimetres per scan unit (REALY: the subject's metrical scale).
        params: protocol parameters.
        backend: closest-point backend of ``metrics.distance``.
        error_faces: triangles of the prediction used by bICP (REALY's optional template
            mask); default ``faces``.

    Returns:
        :class:`RealyResult`.

    Raises:
        ValueError: an unknown region, bad shapes, too few keypoints.
    """
    verts = as_points(vertices, "predicted vertices")
    faces = as_faces(faces, verts.shape[0], "predicted faces")
    kp_p = as_points(pred_keypoints, "predicted keypoints")
    kp_g = as_points(gt_keypoints, "ground-truth keypoints")
    for name in regions:
        if name not in RIGID_KEYPOINTS:
            raise ValueError(f"unknown region {name!r}; known: {', '.join(RIGID_KEYPOINTS)}.")
    seven = usable_keypoints(SEVEN_KEYPOINTS, len(kp_p), len(kp_g))
    if len(seven) < 7:
        raise ValueError(f"gICP needs keypoints {SEVEN_KEYPOINTS}; got {len(kp_p)} predicted "
                         f"and {len(kp_g)} ground-truth keypoints.")
    t0 = time.perf_counter()
    glob = realy_keypoint_similarity(kp_p[seven], kp_g[seven], with_scale=True)
    v_glob = glob.apply(verts)
    kp_glob = glob.apply(kp_p)
    surface = MeshSurface(v_glob, faces, backend=backend)
    seconds = {"global": time.perf_counter() - t0}
    out_err, out_d, out_v, out_it = {}, {}, {}, {}
    for name, (rv, rf) in regions.items():
        t1 = time.perf_counter()
        rigid = usable_keypoints(RIGID_KEYPOINTS[name], len(kp_p), len(kp_g))
        icp = region_icp(v_glob, faces, rv, kp_glob[rigid], kp_g[rigid],
                         KEYPOINT_REPEAT_DIVISOR.get(name, 1.0), params, backend, surface)
        kp_ids = NICP_KEYPOINTS[name]
        kp_pred = kp_gt = None
        if kp_ids is not None:
            ids = usable_keypoints(kp_ids, len(kp_p), len(kp_g))
            kp_pred, kp_gt = icp.transform.apply(kp_glob[ids]), kp_g[ids]
        if error_faces is None:
            surf = _TransformedSurface(surface, icp.transform)
        else:
            surf = MeshSurface(icp.vertices, error_faces, backend=backend)
        err = region_error(icp.vertices, faces, rv, rf, kp_pred, kp_gt, params, backend, surf)
        out_err[name] = err.error * unit_mm
        out_d[name] = err.distances * unit_mm
        out_v[name] = icp.vertices
        out_it[name] = icp.n_iter
        seconds[name] = time.perf_counter() - t1
    return RealyResult(out_err, out_d, out_v, out_it, seconds)


class _TransformedSurface:
    """``MeshSurface``-like view of a prebuilt surface under a similarity transform T.

    Answers for ``T(mesh)`` without rebuilding its search tree: closest points on ``T(mesh)``
    of ``q`` are ``T(closest on mesh of T^-1 q)`` (a similarity keeps nearest points
    nearest). Search states live in the base surface's frame, so one carries over between
    views of the same surface under different transforms (ICP).
    """

    def __init__(self, surface: MeshSurface | _TransformedSurface,
                 transform: SimilarityTransform) -> None:
        self.surface = surface
        self.transform = transform
        self._inverse = transform.inverse()

    def query(self, points: np.ndarray) -> SurfaceDistance:
        return self.query_tracked(points)[0]

    def query_tracked(self, points: np.ndarray, state: NearestState | None = None
                      ) -> tuple[SurfaceDistance, NearestState | None]:
        pts = as_points(points, "query points")
        res, state = self.surface.query_tracked(self._inverse.apply(pts), state)
        closest = self.transform.apply(res.closest_points)
        return SurfaceDistance(np.linalg.norm(pts - closest, axis=1), closest, res.face_ids), state


def realy_report(per_subject: Sequence[Mapping[str, float]]) -> RealyReport:
    """REALY's report over subjects: per region mean, median, std (ddof 1); ``all``.

    Args:
        per_subject: one mapping region -> error (mm) per subject (or image); a region
            missing or NaN for a subject is left out of that region's figures.

    Returns:
        :class:`RealyReport`; ``all_mm`` = mean of the four REALY regional means.
    """
    names: list[str] = []
    for errs in per_subject:
        names += [n for n in errs if n not in names]
    stats: dict[str, RegionStats] = {}
    for name in names:
        vals = np.array([e[name] for e in per_subject if e.get(name) is not None], np.float64)
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            continue
        std = float(vals.std(ddof=1)) if vals.size > 1 else float("nan")
        stats[name] = RegionStats(float(vals.mean()), float(np.median(vals)), std, int(vals.size))
    have = all(r in stats for r in REALY_REGIONS)
    all_mm = float(np.mean([stats[r].mean_mm for r in REALY_REGIONS])) if have else float("nan")
    return RealyReport(stats, all_mm)


class EyeRegionResult(NamedTuple):
    """Periocular shape error of one prediction (rICP on the eye region, then S2M).

    Attributes:
        mean_mm: mean distance of the ground-truth eye-region points to the aligned
            predicted surface, mm.
        median_mm: their median, mm.
        distances_mm: (N,) per-point distances, mm.
        n_iter: rigid updates of the region ICP.
    """

    mean_mm: float
    median_mm: float
    distances_mm: np.ndarray
    n_iter: int


def eye_region_s2m(
    vertices: np.ndarray,
    faces: np.ndarray,
    pred_keypoints: np.ndarray,
    region_points: np.ndarray,
    gt_keypoints: np.ndarray,
    unit: str = "m",
    params: RealyParams = DEFAULT_PARAMS,
    backend: str = DEFAULT_BACKEND,
    surface: MeshSurface | None = None,
) -> EyeRegionResult:
    """Eye-region error: REALY's gICP and rICP on the periocular region, then scan-to-mesh.

    The prediction is aligned as REALY aligns it to a region (7-keypoint similarity, then
    rigid ICP on the region's points plus the 12 eye-contour keypoints 36-47, repeated in
    proportion); the error is the mean unsigned distance of every ground-truth region point
    to the aligned predicted surface. A prediction with open eyes where the truth is closed
    leaves the closed lid's points far from its surface (its lid margins), so the error
    separates methods that close eyes from those that do not. Without bICP, which would cost
    seconds per sample; :func:`realy_evaluate` with region ``"eyes"`` gives the full REALY
    error where that is wanted.

    Args:
        vertices: (V, 3) predicted vertices, any frame.
        faces: (F, 3) predicted triangles, 0-based.
        pred_keypoints: (68, 3) predicted landmarks (same frame as ``vertices``).
        region_points: (N, 3) ground-truth points of the eye region (e.g. the GT mesh's
            vertices in its ``eyes`` mask).
        gt_keypoints: (68, 3) ground-truth landmarks.
        unit: unit of all inputs (``m``, ``cm``, ``mm``); computations run in centimetres,
            the metric unit nearest REALY's, so REALY's tolerances keep their meaning.
        params: rICP parameters.
        backend: closest-point backend of ``metrics.distance``.
        surface: a prebuilt :class:`MeshSurface` of (vertices, faces) in ``unit`` to reuse
            (e.g. the one scan-to-mesh scoring built); the alignment moves a view of it.

    Returns:
        :class:`EyeRegionResult`.
    """
    if unit not in UNIT_TO_MM:
        raise ValueError(f"unit must be one of {sorted(UNIT_TO_MM)}, got {unit!r}.")
    to_cm = UNIT_TO_MM[unit] / 10.0
    verts = as_points(vertices, "predicted vertices") * to_cm
    kp_p = as_points(pred_keypoints, "predicted keypoints") * to_cm
    kp_g = as_points(gt_keypoints, "ground-truth keypoints") * to_cm
    pts = as_points(region_points, "eye-region points") * to_cm
    faces = as_faces(faces, verts.shape[0], "predicted faces")
    seven = usable_keypoints(SEVEN_KEYPOINTS, len(kp_p), len(kp_g))
    eyes = usable_keypoints(RIGID_KEYPOINTS[EYE_REGION], len(kp_p), len(kp_g))
    if len(seven) < 7 or len(eyes) < len(RIGID_KEYPOINTS[EYE_REGION]):
        raise ValueError("the eye region needs the 68 landmarks on both meshes.")
    glob = realy_keypoint_similarity(kp_p[seven], kp_g[seven], with_scale=True)
    v_glob = glob.apply(verts)
    if surface is None:
        surface = MeshSurface(vertices, faces, backend=backend)
    # the surface is in the input unit and frame; the view answers in the cm frame of v_glob
    view = _TransformedSurface(surface, glob.compose(SimilarityTransform(np.eye(3), np.zeros(3),
                                                                          to_cm)))
    icp = region_icp(v_glob, faces, pts, glob.apply(kp_p)[eyes], kp_g[eyes], 1.0, params,
                     backend, view)
    d = _TransformedSurface(view, icp.transform).query(pts).distances * 10.0
    return EyeRegionResult(float(d.mean()), float(np.median(d)), d, icp.n_iter)
