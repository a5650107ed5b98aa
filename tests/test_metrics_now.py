"""The NoW protocol: crop, alignment, distances in mm, pooling, units and contracts.

The case builders here are reused by ``tests/benchmarks/bench_scan_to_mesh.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from benchmark.types import NOW7_FROM_68
from methods.facemodel import load_ict
from metrics import (
    SimilarityTransform,
    now_crop_centre_radius,
    now_crop_mask,
    now_scan_to_mesh,
    pooled_now_stats,
)

pytest.importorskip("open3d")


def sample_surface(
    verts: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` points uniformly distributed (by area) on a triangle mesh."""
    tri = verts[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    fid = rng.choice(len(faces), size=n, p=area / area.sum())
    w = rng.dirichlet(np.ones(3), size=n)
    return np.einsum("nk,nkd->nd", w, tri[fid])


def subdivide_midpoint(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1-to-4 midpoint subdivision (same surface, 4x the triangles)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.ravel()
    mids = (verts[uniq[:, 0]] + verts[uniq[:, 1]]) / 2.0
    nv = len(verts)
    f = len(faces)
    ab, bc, ca = inv[:f] + nv, inv[f : 2 * f] + nv, inv[2 * f :] + nv
    a, b, c = faces.T
    new = np.concatenate([np.c_[a, ab, ca], np.c_[b, bc, ab], np.c_[c, ca, bc], np.c_[ab, bc, ca]])
    return np.concatenate([verts, mids]), new


def make_now_case(
    n_scan: int = 5000,
    region: str = "narrow",
    subdivide: int = 0,
    seed: int = 0,
    noise_m: float = 1e-4,
    pose: bool = True,
) -> dict[str, np.ndarray]:
    """A NoW-like case from the ICT model, in metres.

    Scan: the surface of a random full-head ICT identity, sampled uniformly, with Gaussian
    noise, cropped with the NoW sphere and cut to ``n_scan`` points (all of them scored).
    Prediction: another identity near it (so the error is a few tenths of a mm), optionally
    subdivided, moved by a random similarity (its own frame), with its 7 landmarks.
    """
    rng = np.random.default_rng(seed)
    full = load_ict("full")
    pred_model = load_ict(region)
    ids = rng.normal(size=full.n_id)
    gt = full.vertices(ids).astype(np.float64)
    scan_lmk = gt[full.landmark_ids[list(NOW7_FROM_68)]]
    centre, radius = now_crop_centre_radius(scan_lmk)
    pts = np.zeros((0, 3))
    while len(pts) < n_scan:
        cand = sample_surface(gt, full.faces, 3 * n_scan, rng)
        cand = cand + rng.normal(scale=noise_m, size=cand.shape)
        cand = cand[np.linalg.norm(cand - centre, axis=1) <= radius]
        pts = np.concatenate([pts, cand])
    scan = pts[:n_scan]
    pv = pred_model.vertices(0.8 * ids + 0.3 * rng.normal(size=full.n_id)).astype(np.float64)
    plmk = pv[pred_model.landmark_ids[list(NOW7_FROM_68)]]
    pf = pred_model.faces
    for _ in range(subdivide):
        pv, pf = subdivide_midpoint(pv, pf)
    if pose:
        tf = SimilarityTransform(
            Rotation.from_rotvec(rng.normal(scale=0.4, size=3)).as_matrix(),
            rng.normal(scale=0.2, size=3),
            float(rng.uniform(0.7, 1.3)),
        )
        pv, plmk = tf.apply(pv), tf.apply(plmk)
    return {"pred_vertices": pv, "pred_faces": pf, "pred_landmarks7": plmk,
            "scan_points": scan, "scan_landmarks7": scan_lmk}


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    """A 5000-point NoW-like case (metres)."""
    return make_now_case()


def test_crop_matches_now_definition():
    rng = np.random.default_rng(0)
    lmk = rng.normal(size=(7, 3))
    pts = rng.normal(size=(4000, 3)) * 2
    bridge = (lmk[1] + lmk[2]) / 2
    centre = lmk[4] + 0.3 * (bridge - lmk[4])
    radius = 1.4 * (np.linalg.norm(lmk[0] - lmk[3]) + np.linalg.norm(bridge - lmk[4])) / 2
    want = np.linalg.norm(pts - centre, axis=1) <= radius
    np.testing.assert_array_equal(now_crop_mask(pts, lmk), want)
    assert 0 < want.sum() < len(pts)
    # parameters are honoured
    smaller = now_crop_mask(pts, lmk, radius_factor=1.0)
    assert smaller.sum() < want.sum() and not (smaller & ~want).any()
    c2, _ = now_crop_centre_radius(lmk, centre_ratio=0.0)
    np.testing.assert_allclose(c2, lmk[4])


def test_now_case_error_and_alignment(case):
    res = now_scan_to_mesh(**case)
    assert res.converged
    assert res.n_points == len(case["scan_points"])
    assert res.crop_mask.all()
    # a nearby identity: a few tenths of a millimetre
    assert 0.05 < res.median_mm < 1.5
    assert res.mean_mm == pytest.approx(np.mean(res.distances_mm))
    assert res.std_mm == pytest.approx(np.std(res.distances_mm))
    assert res.median_mm == pytest.approx(np.median(res.distances_mm))
    # landmarks land near the scan's after the fit
    assert np.median(res.landmark_error_mm) < 5.0
    # aligned vertices are in the scan frame: recomputing the distances agrees
    from metrics import point_to_mesh_distance

    some = np.arange(0, len(case["scan_points"]), 25)
    d = point_to_mesh_distance(case["scan_points"][some], res.aligned_vertices.astype(np.float64),
                               case["pred_faces"], backend="brute").distances * 1000
    np.testing.assert_allclose(d, res.distances_mm[some], atol=1e-4)  # float32 vertices
    # refinement never ends worse than the landmark fit
    init = point_to_mesh_distance(case["scan_points"], res.init_transform.apply(
        case["pred_vertices"]), case["pred_faces"]).distances * 1000
    assert np.sqrt(np.mean(res.distances_mm**2)) <= np.sqrt(np.mean(init**2))


def test_identical_surface_scores_zero():
    c = make_now_case(n_scan=3000, region="full", noise_m=0.0, seed=3)
    # predict the scan's own surface: rebuild it from the same identity
    full = load_ict("full")
    ids = np.random.default_rng(3).normal(size=full.n_id)
    gt = full.vertices(ids).astype(np.float64)
    tf = SimilarityTransform(Rotation.from_rotvec([0.1, 0.5, -0.2]).as_matrix(),
                             np.array([0.3, -0.1, 0.2]), 1.7)
    res = now_scan_to_mesh(tf.apply(gt), full.faces, tf.apply(c["scan_landmarks7"]),
                           c["scan_points"], c["scan_landmarks7"], tol=1e-12)
    assert res.mean_mm < 1e-4
    assert res.transform.scale == pytest.approx(1 / 1.7, rel=1e-6)


def test_metrical_sphere_offset_is_d_and_similarity_absorbs_it():
    from tests.test_metrics_distance import icosphere

    r, d = 0.1, 0.002
    v, f = icosphere(r, 4)
    # landmarks: the 6 axis directions and the centre, so the landmark fit of the concentric
    # sphere is exact (R = I, t = 0; s = (r + d) / r with scale)
    dirs = np.r_[np.eye(3), -np.eye(3), np.zeros((1, 3))]
    # scan = every vertex direction at radius r + d: exactly d from the mesh (see the
    # distance tests), and by symmetry no rigid motion brings it closer
    scan = v / r * (r + d)
    res_m = now_scan_to_mesh(v, f, dirs * r, scan, dirs * (r + d), metrical=True, crop=False)
    np.testing.assert_allclose(res_m.distances_mm, d * 1000, atol=1e-6)
    assert res_m.transform.scale == 1.0
    assert res_m.converged
    # the similarity protocol absorbs a uniform offset of a sphere into the scale
    res_s = now_scan_to_mesh(v, f, dirs * r, scan, dirs * (r + d), crop=False)
    assert res_s.transform.scale == pytest.approx((r + d) / r, rel=1e-9)
    assert res_s.distances_mm.max() < 1e-6


def test_unit_invariance(case):
    res_m = now_scan_to_mesh(**case, unit="m")
    mm = {k: (v * 1000 if k != "pred_faces" else v) for k, v in case.items()}
    res_mm = now_scan_to_mesh(**mm, unit="mm")
    cm = {k: (v * 100 if k != "pred_faces" else v) for k, v in case.items()}
    res_cm = now_scan_to_mesh(**cm, unit="cm")
    # the same figures to 0.1 um (float32 BVH ties may pick another, equally close triangle)
    for other in (res_mm, res_cm):
        np.testing.assert_allclose(other.distances_mm, res_m.distances_mm, atol=1e-4)
        assert other.transform.scale == pytest.approx(res_m.transform.scale, rel=1e-6)


def test_metrical_variant_runs_rigid(case):
    res = now_scan_to_mesh(**case, metrical=True)
    assert res.transform.scale == 1.0
    assert res.init_transform.scale == 1.0
    # the case's prediction is posed with a random scale, so a rigid fit is much worse
    assert res.median_mm > now_scan_to_mesh(**case).median_mm


def test_crop_and_precropped_scan(case):
    big = dict(case)
    rng = np.random.default_rng(0)
    far = case["scan_landmarks7"][4] + rng.normal(size=(500, 3)) * 0.2
    far = far[np.linalg.norm(far - case["scan_landmarks7"][4], axis=1) > 0.2]
    big["scan_points"] = np.concatenate([case["scan_points"], far])
    res = now_scan_to_mesh(**big)
    assert res.n_points == len(case["scan_points"])
    assert not res.crop_mask[len(case["scan_points"]):].any()
    res_pre = now_scan_to_mesh(**case, scan_cropped=True)
    np.testing.assert_allclose(res_pre.distances_mm, res.distances_mm, atol=1e-6)
    res_all = now_scan_to_mesh(**big, crop=False)
    assert res_all.n_points == len(big["scan_points"])


def test_pooled_stats_pool_points_not_samples():
    a = np.array([1.0, 1.0, 1.0, 1.0])
    b = np.array([3.0])
    s = pooled_now_stats([a, b])
    assert s.median_mm == 1.0
    assert s.mean_mm == pytest.approx(7 / 5)
    assert s.std_mm == pytest.approx(np.std([1, 1, 1, 1, 3]))
    assert (s.n_points, s.n_samples) == (5, 2)
    with pytest.raises(ValueError, match="at least one"):
        pooled_now_stats([])
    with pytest.raises(ValueError, match="NaN"):
        pooled_now_stats([np.array([np.nan])])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.update(scan_points=np.zeros((0, 3))), "empty"),
        (lambda c: c["pred_vertices"].__setitem__((3, 1), np.nan), "NaN"),
        (lambda c: c["scan_points"].__setitem__((3, 1), np.inf), "inf"),
        (lambda c: c.update(pred_faces=c["pred_faces"] + 100000), "index vertices"),
        (lambda c: c.update(pred_landmarks7=c["pred_landmarks7"][:6]), r"\(7, 3\)"),
        (lambda c: c.update(scan_landmarks7=np.r_[c["scan_landmarks7"], [[0, 0, 0]]]),
         r"\(7, 3\)"),
        (lambda c: c.update(pred_landmarks7=np.outer(np.linspace(0, 0.1, 7), [1, 1, 0])),
         "collinear"),
        (lambda c: c.update(scan_points=c["scan_points"] + 5.0), "crop sphere"),
    ],
)
def test_bad_input(case, change, match):
    c = {k: np.array(v, copy=True) for k, v in case.items()}
    change(c)
    with pytest.raises(ValueError, match=match):
        now_scan_to_mesh(**c)


def test_unit_mismatch_is_reported(case):
    # a prediction in millimetres where metres are expected
    c = dict(case)
    c["pred_vertices"] = case["pred_vertices"] * 1000
    with pytest.raises(ValueError, match="predicted vertices: .* looks like mm"):
        now_scan_to_mesh(**c, unit="m")
    # a scan in metres where millimetres are expected (the rest in mm)
    mm = {k: (v * 1000 if k != "pred_faces" else v) for k, v in case.items()}
    mm["scan_points"] = case["scan_points"]
    mm["scan_landmarks7"] = case["scan_landmarks7"]
    with pytest.raises(ValueError, match="scan landmarks: .* looks like m\\b"):
        now_scan_to_mesh(**mm, unit="mm")
    # centimetres stated as metres
    cm = {k: (v * 100 if k != "pred_faces" else v) for k, v in case.items()}
    with pytest.raises(ValueError, match="looks like cm"):
        now_scan_to_mesh(**cm, unit="m")
    with pytest.raises(ValueError, match="unit must be one of"):
        now_scan_to_mesh(**case, unit="inch")
    # the check can be switched off (scale-free protocol still works on any unit)
    now_scan_to_mesh(**cm, unit="m", check_units=False)
