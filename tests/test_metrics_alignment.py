"""Umeyama similarity fits and the scan-to-surface refinement (ICP)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from methods.facemodel import load_ict
from metrics import SimilarityTransform, refine_alignment, umeyama


def random_similarity(rng: np.random.Generator, scale: bool = True) -> SimilarityTransform:
    rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    s = float(rng.uniform(0.2, 5.0)) if scale else 1.0
    return SimilarityTransform(rot, rng.normal(size=3), s)


def rotation_angle(r: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """ICT narrow face of a random identity with an expression, metres, float64."""
    m = load_ict("narrow")
    rng = np.random.default_rng(7)
    ex = np.zeros(m.n_exp)
    ex[m.exp_index("jawOpen")] = 0.3
    ex[m.exp_index("mouthSmile_L")] = 0.5
    return m.vertices(rng.normal(size=m.n_id), ex).astype(np.float64), m.faces


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_random_similarity(seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(7, 3)) * 0.05
    tf = random_similarity(rng)
    est = umeyama(src, tf.apply(src))
    np.testing.assert_allclose(est.rotation, tf.rotation, atol=1e-6)
    np.testing.assert_allclose(est.translation, tf.translation, atol=1e-6)
    assert est.scale == pytest.approx(tf.scale, abs=1e-6)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)


def test_umeyama_rigid_ignores_scale():
    rng = np.random.default_rng(11)
    src = rng.normal(size=(10, 3))
    tf = random_similarity(rng, scale=False)
    est = umeyama(src, tf.apply(src), with_scale=False)
    assert est.scale == 1.0
    np.testing.assert_allclose(est.apply(src), tf.apply(src), atol=1e-9)
    # with a true scale of 2, the rigid fit keeps s = 1 but still finds the rotation
    tf2 = tf._replace(scale=2.0)
    est2 = umeyama(src, tf2.apply(src), with_scale=False)
    assert est2.scale == 1.0
    np.testing.assert_allclose(est2.rotation, tf.rotation, atol=1e-9)


def test_umeyama_least_squares_with_noise():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(50, 3))
    tf = random_similarity(rng)
    dst = tf.apply(src) + rng.normal(scale=1e-3, size=src.shape)
    est = umeyama(src, dst)
    # any perturbation of the optimum increases the residual
    base = np.sum((est.apply(src) - dst) ** 2)
    for k in range(6):
        d = np.zeros(3)
        d[k % 3] = 1e-4
        moved = est._replace(translation=est.translation + d)
        assert np.sum((moved.apply(src) - dst) ** 2) > base
    assert np.sum((est._replace(scale=est.scale * 1.001).apply(src) - dst) ** 2) > base


def test_umeyama_reflection():
    rng = np.random.default_rng(5)
    src = rng.normal(size=(7, 3))
    mirror = src * np.array([-1.0, 1.0, 1.0])
    proper = umeyama(src, mirror)
    assert np.linalg.det(proper.rotation) == pytest.approx(1.0)
    refl = umeyama(src, mirror, allow_reflection=True)
    assert np.linalg.det(refl.rotation) == pytest.approx(-1.0)
    np.testing.assert_allclose(refl.apply(src), mirror, atol=1e-9)


@pytest.mark.parametrize(
    ("src", "dst", "match"),
    [
        (np.zeros((7, 3)), np.zeros((6, 3)), "count mismatch"),
        (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3"),
        (np.outer(np.arange(7.0), [1, 2, 3]), np.random.default_rng(0).normal(size=(7, 3)),
         "collinear"),
        (np.random.default_rng(0).normal(size=(7, 3)), np.outer(np.arange(7.0), [1, 2, 3]),
         "collinear"),
        (np.ones((7, 3)), np.random.default_rng(0).normal(size=(7, 3)), "collinear"),
        (np.full((7, 3), np.nan), np.zeros((7, 3)), "NaN"),
        (np.zeros((7, 2)), np.zeros((7, 2)), r"\(N, 3\)"),
    ],
)
def test_umeyama_bad_input(src, dst, match):
    with pytest.raises(ValueError, match=match):
        umeyama(src, dst)


def test_similarity_inverse_and_compose():
    rng = np.random.default_rng(9)
    a, b = random_similarity(rng), random_similarity(rng)
    x = rng.normal(size=(20, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(x)), x, atol=1e-9)
    np.testing.assert_allclose(b.compose(a).apply(x), b.apply(a.apply(x)), atol=1e-9)
    h = np.c_[x, np.ones(20)] @ a.matrix().T
    np.testing.assert_allclose(h[:, :3], a.apply(x), atol=1e-9)


@pytest.mark.parametrize("optimise_scale", [False, True])
def test_icp_recovers_small_rigid_perturbation_of_face(face, optimise_scale):
    verts, faces = face
    rng = np.random.default_rng(0)
    # perturbation: 3 degrees about a random axis, ~4 mm, applied to the mesh; the scan is
    # the unperturbed surface (its vertices), so the refinement must undo it
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    pert = SimilarityTransform(
        Rotation.from_rotvec(np.deg2rad(3.0) * axis).as_matrix(), np.array([0.003, -0.002, 0.002]),
        1.0,
    )
    moved = pert.apply(verts)
    res = refine_alignment(verts, moved, faces, optimise_scale=optimise_scale, tol=1e-12,
                           n_sample=2000)
    truth = pert.inverse()
    assert res.converged
    assert rotation_angle(res.transform.rotation @ truth.rotation.T) < 1e-6
    np.testing.assert_allclose(res.transform.apply(moved), verts, atol=1e-6)
    assert res.transform.scale == pytest.approx(1.0, abs=1e-6)
    assert res.rmse < 1e-7 < res.rmse_init
    assert res.distances.shape == (len(verts),)


def test_icp_recovers_scale_from_landmark_init(face):
    verts, faces = face
    rng = np.random.default_rng(1)
    truth = SimilarityTransform(Rotation.from_rotvec([0.02, -0.03, 0.01]).as_matrix(),
                                np.array([0.002, 0.001, -0.003]), 1.04)
    # scan = surface samples of the truth-transformed mesh (not its vertices)
    tri = verts[faces[rng.integers(0, len(faces), 6000)]]
    w = rng.dirichlet(np.ones(3), size=6000)
    scan = truth.apply(np.einsum("nk,nkd->nd", w, tri))
    res = refine_alignment(scan, verts, faces, init=SimilarityTransform.identity(), tol=1e-12)
    assert res.transform.scale == pytest.approx(1.04, abs=1e-5)
    np.testing.assert_allclose(res.transform.apply(verts), truth.apply(verts), atol=2e-5)
    assert res.rmse < 1e-6


def test_metrical_refinement_keeps_scale(face):
    verts, faces = face
    init = SimilarityTransform(np.eye(3), np.zeros(3), 1.1)
    res = refine_alignment(verts, verts, faces, init=init, optimise_scale=False)
    assert res.transform.scale == 1.1


def test_iteration_cap_reports_not_converged(face, caplog):
    verts, faces = face
    pert = SimilarityTransform(Rotation.from_rotvec([0.05, 0.0, 0.0]).as_matrix(),
                               np.array([0.004, 0, 0]), 1.0)
    res = refine_alignment(verts, pert.apply(verts), faces, max_iter=1, tol=1e-14, n_sample=None)
    assert res.n_iter == 1
    assert not res.converged
    assert "max_iter" in caplog.text
    with pytest.raises(ValueError, match="max_iter"):
        refine_alignment(verts, verts, faces, max_iter=0)


def test_refinement_brute_backend_agrees(face):
    verts, faces = face
    sub = np.arange(0, len(faces), 10)
    used = np.unique(faces[sub])
    remap = -np.ones(len(verts), np.int64)
    remap[used] = np.arange(len(used))
    v, f = verts[used], remap[faces[sub]]
    pert = SimilarityTransform(Rotation.from_rotvec([0.0, 0.02, 0.0]).as_matrix(),
                               np.array([0.001, 0, 0]), 1.0)
    scan = v[::5]
    b = refine_alignment(scan, pert.apply(v), f, backend="brute", n_sample=None)
    for backend in ("bvh", "open3d"):
        a = refine_alignment(scan, pert.apply(v), f, backend=backend, n_sample=None)
        np.testing.assert_allclose(a.transform.apply(v), b.transform.apply(v), atol=1e-7)
