"""Similarity alignment: landmark Procrustes (Umeyama) and scan-to-mesh refinement.

Room: rigid/similarity registration of a predicted mesh onto a reference scan, as the NoW
protocol needs it. Arrays in, NamedTuples out; no knowledge of datasets or methods.

Convention: a :class:`SimilarityTransform` maps source points ``x`` (row vectors) to
``s * x @ R.T + t``, i.e. ``y = s R x + t`` for column vectors.

Example::

    from metrics import umeyama, refine_alignment
    init = umeyama(pred_lmk7, scan_lmk7)                  # pred -> scan, with scale
    ref = refine_alignment(scan_pts, verts, faces, init)  # minimise scan-to-surface distance
    aligned = ref.transform.apply(verts)

References:
    S. Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991.
    NoW evaluation, ``scan2mesh_computations.py`` (soubhiksanyal/now_evaluation): landmark
    Procrustes, then (s, r, t) minimising ScanToMesh distances.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from metrics._checks import as_points
from metrics.distance import DEFAULT_BACKEND, MeshSurface, cross_rows

if TYPE_CHECKING:  # numba loads only when a BVH is built
    from metrics.bvh import NearestState

logger = logging.getLogger(__name__)

# Singular-value ratio below which a landmark set counts as collinear (or a single point).
_DEGENERATE_RATIO = 1e-6


class SimilarityTransform(NamedTuple):
    """``y = scale * R x + t`` (row vectors: ``scale * x @ R.T + t``).

    Attributes:
        rotation: (3, 3) float64 rotation matrix R (det +1 unless a reflection was allowed).
        translation: (3,) float64 translation t, in the destination unit.
        scale: float scale s (dimensionless; 1.0 for a rigid transform).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Maps (..., 3) points: ``scale * points @ rotation.T + translation``."""
        # einsum, not ``@``: OpenBLAS is ~10x slower on (N, 3) x (3, 3) products.
        m = self.scale * np.asarray(self.rotation, np.float64)
        return np.einsum("...j,ij->...i", np.asarray(points, np.float64), m) + self.translation

    def inverse(self) -> SimilarityTransform:
        """The transform that undoes this one."""
        r_inv = self.rotation.T
        s_inv = 1.0 / self.scale
        return SimilarityTransform(r_inv, -s_inv * (self.translation @ r_inv.T), s_inv)

    def compose(self, first: SimilarityTransform) -> SimilarityTransform:
        """``self o first``: apply ``first``, then ``self``."""
        return SimilarityTransform(
            self.rotation @ first.rotation,
            self.scale * (first.translation @ self.rotation.T) + self.translation,
            self.scale * first.scale,
        )

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix for column vectors."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    @classmethod
    def identity(cls) -> SimilarityTransform:
        """The identity transform."""
        return cls(np.eye(3), np.zeros(3), 1.0)


def umeyama(
    src: np.ndarray,
    dst: np.ndarray,
    with_scale: bool = True,
    allow_reflection: bool = False,
) -> SimilarityTransform:
    """Least-squares similarity (or rigid) transform mapping ``src`` onto ``dst``.

    Minimises ``sum_i ||dst_i - (s R src_i + t)||^2`` over R in SO(3) (O(3) with
    ``allow_reflection``), t, and s > 0 (s = 1 without ``with_scale``). Closed form from the
    SVD of the cross-covariance (Umeyama 1991).

    Args:
        src: (K, 3) source points (e.g. the predicted mesh's 7 NoW landmarks), K >= 3.
        dst: (K, 3) corresponding destination points (e.g. the scan's landmarks).
        with_scale: estimate the scale; False gives a rigid fit (NoW "metrical").
        allow_reflection: allow det(R) = -1 when it fits better (NoW's Procrustes uses
            ``reflection='best'``; a reflection only wins for mirrored landmark orders, so
            the default refuses it).

    Returns:
        :class:`SimilarityTransform` with ``apply(src) ~= dst``.

    Raises:
        ValueError: shapes differ, fewer than 3 points, NaN/inf, or collinear/coincident
            points in ``src`` or ``dst`` (the rotation would be undetermined).
    """
    src = as_points(src, "source landmarks")
    dst = as_points(dst, "destination landmarks")
    if src.shape != dst.shape:
        raise ValueError(
            f"landmark count mismatch: {src.shape[0]} source vs {dst.shape[0]} destination points."
        )
    if src.shape[0] < 3:
        raise ValueError(f"a 3D similarity needs at least 3 landmarks, got {src.shape[0]}.")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    for name, x in (("source", xs), ("destination", xd)):
        sv = np.linalg.svd(x, compute_uv=False)
        if sv[0] == 0.0 or sv[1] / sv[0] < _DEGENERATE_RATIO:
            raise ValueError(
                f"{name} landmarks are degenerate (collinear or coincident), so the rotation "
                f"is undetermined."
            )
    n = src.shape[0]
    cov = xd.T @ xs / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = (u * sign) @ vt
    if with_scale:
        var_s = (xs**2).sum() / n
        scale = float((d * sign).sum() / var_s)
    else:
        scale = 1.0
    trans = mu_d - scale * rot @ mu_s
    return SimilarityTransform(rot, trans, scale)


class RefineResult(NamedTuple):
    """Outcome of :func:`refine_alignment`.

    Attributes:
        transform: refined mesh -> scan :class:`SimilarityTransform`.
        n_iter: linearisations solved (accepted and rejected steps, all stages).
        converged: True when the stopping test was met before ``max_iter``.
        rmse: root-mean-square scan-to-surface distance over all scan points at
            ``transform``, in the input unit.
        rmse_init: root-mean-square distance at the initial transform over the points of
            the first stage (the subsample when one is used), input unit.
        distances: (N,) unsigned scan-to-surface distances at ``transform``, input unit.
    """

    transform: SimilarityTransform
    n_iter: int
    converged: bool
    rmse: float
    rmse_init: float
    distances: np.ndarray


def _rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of rotation vector ``w`` (radians)."""
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        return np.eye(3) + k
    k = w / theta
    km = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * km + (1 - np.cos(theta)) * km @ km


class _Eval(NamedTuple):
    cost: float  # sum of squared distances
    d: np.ndarray  # (M,) distances in the scan frame
    closest: np.ndarray  # (M, 3) closest points in the scan frame
    direction: np.ndarray  # (M, 3) unit gradient of the distance w.r.t. the closest point
    state: NearestState | None  # the search's state for the next query of the same points


def _evaluate(surface: MeshSurface, pts: np.ndarray, tf: SimilarityTransform,
              state: NearestState | None = None) -> _Eval:
    # The BVH is built once in the mesh's own frame; move the scan into it instead of moving
    # the mesh. Distances scale by s, directions rotate by R. The previous evaluation's
    # search state lets points that barely moved skip the search (exact, see metrics.bvh).
    q = tf.inverse().apply(pts)
    res, state = surface.query_tracked(q, state)
    d = tf.scale * res.distances
    closest = tf.apply(res.closest_points)
    diff = pts - closest
    tiny = d <= 1e-12 * max(1.0, float(np.abs(pts).max()))
    with np.errstate(invalid="ignore", divide="ignore"):
        direction = diff / d[:, None]
    # On the surface the distance is 0 and its direction undefined; the face normal gives
    # the point-to-plane linearisation there (the residual is 0, so the sign is irrelevant).
    if tiny.any():
        direction[tiny] = surface.normals[res.face_ids[tiny]] @ tf.rotation.T
    return _Eval(float(d @ d), d, closest, direction, state)


def refine_alignment(
    scan_points: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    init: SimilarityTransform | None = None,
    optimise_scale: bool = True,
    max_iter: int = 50,
    tol: float = 1e-6,
    n_sample: int | None = 10000,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
    surface: MeshSurface | None = None,
) -> RefineResult:
    """Refines a mesh -> scan similarity by minimising scan-to-surface distances.

    Objective (NoW's ``ScanToMesh`` least squares): ``E(s, R, t) = sum_i d(p_i, s R M + t)^2``
    with ``d`` the unsigned distance from scan point ``p_i`` to the transformed mesh
    *surface*. Solved by Levenberg-Marquardt on the exact first-order model of ``d``: moving
    the surface by a small similarity ``delta`` changes ``d_i`` by
    ``-u_i . (delta(c_i) - c_i)`` with ``c_i`` the closest surface point and
    ``u_i = (p_i - c_i) / d_i`` (the face normal for interior closest points, so
    point-to-plane ICP; the edge/vertex direction otherwise). Updates are left-composed,
    ``T <- delta o T``, with ``delta`` a rotation vector, a log-scale (so s stays positive,
    as NoW's ``100 (|s| - s)`` term ensures) and a translation about the scan centroid.

    Stages: with ``n_sample`` set and more scan points than that, the solver first converges
    on a seeded random subsample, then continues on all points until the same stopping test
    holds there; the subsample only buys a cheaper start, the answer is the all-points
    optimum.

    Stopping: the Gauss-Newton model promises a relative decrease of ``E`` below ``tol``
    (first-order stationarity), or an accepted step lowers ``E`` by less than ``tol``
    relative, or a step is smaller than ``tol`` (radians + relative scale + translation /
    scan radius), or no step lowers ``E`` even with heavy damping. ``max_iter`` caps the
    linearisations over all stages; reaching it leaves ``converged=False`` (logged).

    Args:
        scan_points: (N, 3) scan points (already cropped), same unit as ``vertices``.
        vertices: (V, 3) predicted mesh vertices, any frame.
        faces: (F, 3) int triangles.
        init: initial mesh -> scan transform (e.g. :func:`umeyama` on landmarks);
            identity if None.
        optimise_scale: refine s too (NoW); False keeps ``init.scale`` (NoW "metrical":
            rotation and translation only).
        max_iter: cap on linearisations over all stages.
        tol: stopping tolerance (relative decrease of E, and step size).
        n_sample: subsample size of the first stage; None uses all points throughout.
        seed: seed of the subsample.
        backend: distance backend, ``"bvh"``, ``"open3d"`` or ``"brute"`` (see
            :mod:`metrics.distance`).
        surface: a prebuilt :class:`MeshSurface` of (vertices, faces) to reuse.

    Returns:
        :class:`RefineResult` (transform, n_iter, converged, rmse, rmse_init, distances).

    Raises:
        ValueError: invalid points/mesh (NaN/inf, empty, face indices out of range), or
            ``max_iter < 1``.
    """
    pts = as_points(scan_points, "scan points")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}.")
    if surface is None:
        surface = MeshSurface(vertices, faces, backend=backend)
    tf = init if init is not None else SimilarityTransform.identity()
    tf = SimilarityTransform(
        np.asarray(tf.rotation, np.float64), np.asarray(tf.translation, np.float64), float(tf.scale)
    )

    n = pts.shape[0]
    stages = [np.arange(n)]
    if n_sample is not None and n > n_sample:
        rng = np.random.default_rng(seed)
        stages.insert(0, np.sort(rng.choice(n, size=n_sample, replace=False)))

    n_iter = 0
    converged = False
    rmse_init = float("nan")
    ev = None
    for k, stage_idx in enumerate(stages):
        sub = pts[stage_idx]
        ev = _evaluate(surface, sub, tf)
        if k == 0:
            rmse_init = float(np.sqrt(ev.cost / sub.shape[0]))
        tf, ev, used, converged = _lm(surface, sub, tf, ev, optimise_scale, max_iter - n_iter, tol)
        n_iter += used
        if n_iter >= max_iter and not converged:
            break
    if ev is None or ev.d.shape[0] != n:
        ev = _evaluate(surface, pts, tf)
    if not converged:
        logger.warning(
            "scan-to-mesh refinement stopped at max_iter=%d before converging (tol=%g).",
            max_iter,
            tol,
        )
    return RefineResult(tf, n_iter, converged, float(np.sqrt(ev.cost / n)), rmse_init, ev.d)


def _lm(
    surface: MeshSurface,
    pts: np.ndarray,
    tf: SimilarityTransform,
    ev: _Eval,
    optimise_scale: bool,
    budget: int,
    tol: float,
) -> tuple[SimilarityTransform, _Eval, int, bool]:
    """Levenberg-Marquardt iterations on one point set; returns (tf, eval, iterations, conv)."""
    mu = pts.mean(axis=0)
    radius = float(np.sqrt(((pts - mu) ** 2).sum(axis=1).mean())) or 1.0
    lam = 1e-6
    used = 0
    if ev.cost <= (1e-12 * radius) ** 2 * pts.shape[0]:
        return tf, ev, used, True
    fresh = True
    while used < budget:
        used += 1
        if fresh:
            rel = (ev.closest - mu) / radius  # lever arms in units of the scan radius
            cols = []
            if optimise_scale:
                cols.append(np.einsum("ij,ij->i", ev.direction, rel))
            cols.extend(cross_rows(rel, ev.direction).T)
            cols.extend(ev.direction.T)
            # d residual / d (log s, w, t / radius): all three blocks in length units.
            jac = -radius * np.stack(cols, axis=1)
            jtj = jac.T @ jac
            jtr = jac.T @ ev.d
            diag = np.diag(jtj).copy()
            diag[diag <= 0] = 1.0
            # Decrease of E the undamped Gauss-Newton model promises; when even that is
            # below tol the point is stationary to tolerance, and the step need not be
            # evaluated (saves a distance query per stage).
            gn = _solve(jtj, -jtr)
            predicted = float(-(jtr @ gn)) / ev.cost
            logger.debug(
                "LM iteration %d on %d points: rms %.6g, predicted decrease %.3g",
                used, pts.shape[0], np.sqrt(ev.cost / pts.shape[0]), predicted,
            )
            if predicted < tol:
                return tf, ev, used, True
            fresh = False
        step = _solve(jtj + lam * np.diag(diag), -jtr)
        if optimise_scale:
            log_s, w, tr = step[0], step[1:4], step[4:7] * radius
        else:
            log_s, w, tr = 0.0, step[0:3], step[3:6] * radius
        rot = _rodrigues(w)
        s = float(np.exp(log_s))
        # delta(x) = s * rot (x - mu) + mu + tr, left-composed onto tf.
        delta = SimilarityTransform(rot, mu + tr - s * rot @ mu, s)
        cand = delta.compose(tf)
        cev = _evaluate(surface, pts, cand, ev.state)
        step_size = abs(log_s) + float(np.linalg.norm(w)) + float(np.linalg.norm(tr)) / radius
        if cev.cost < ev.cost:
            decrease = (ev.cost - cev.cost) / ev.cost
            tf, ev = cand, cev
            fresh = True
            lam = max(lam / 10.0, 1e-12)
            if decrease < tol or step_size < tol:
                return tf, ev, used, True
        else:
            if step_size < tol:
                return tf, ev, used, True
            lam *= 10.0
            if lam > 1e8:
                # No damping makes E drop: a minimum to working precision.
                return tf, ev, used, True
    return tf, ev, used, False



def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solves the small normal equations, least-squares when singular."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]
