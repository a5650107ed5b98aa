"""The synthetic expression term of the ELAM+LDL training: targets, mirror, Gram, loss.

Issue 16 (shape): the network's non-eye expression made its meshes worse than no expression
at all on the synthetic test faces; the term supervises those blendshapes on synthetic rows
and leaves the eyelid and gaze shapes to the weak signals (ELAM, LDL, landmarks).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from methods.elam_ldl.config import TrainConfig
from methods.elam_ldl.data import (
    ShapeBasis,
    TrainingData,
    augment_batch,
    expression_mirror,
    make_batch,
    similarity_directions,
)
from methods.elam_ldl.losses import expression_loss
from methods.elam_ldl.model import EYE_SHAPES, eye_shape_indices
from methods.elam_ldl.train import expression_gram
from methods.facemodel.ict import load_ict


@pytest.fixture(scope="module")
def names() -> tuple[str, ...]:
    return tuple(load_ict("narrow").exp_names)


def test_mirror_swaps_sides_and_is_an_involution(names):
    m = expression_mirror(names)
    np.testing.assert_array_equal(m[m], np.arange(len(names)))
    for a, b in (("eyeBlink_L", "eyeBlink_R"), ("jawLeft", "jawRight"),
                 ("mouthLeft", "mouthRight"), ("mouthSmile_L", "mouthSmile_R")):
        assert names[m[names.index(a)]] == b and names[m[names.index(b)]] == a
    for fixed in ("jawOpen", "mouthFunnel", "mouthPucker"):
        assert m[names.index(fixed)] == names.index(fixed)
    with pytest.raises(ValueError, match="no mirror"):
        expression_mirror(("browDown_L", "jawOpen"))


def test_expression_gram_measures_face_displacement_without_similarity_and_eyes(names):
    basis = ShapeBasis(1)
    gram = basis.exp_gram_aligned
    assert gram.shape == (len(names), len(names))
    assert np.linalg.eigvalsh(gram).min() > -1e-9  # positive semi-definite
    # one blendshape at weight 1: the Gram's diagonal is its mean squared displacement over
    # the face region, in mm^2, after removing its similarity part
    model = load_ict("narrow")
    j = names.index("jawOpen")
    region = basis.region
    disp = model.exp_basis[j, region].astype(np.float64).ravel()
    q = np.linalg.qr(similarity_directions(model.mean[region].astype(np.float64)))[0]
    resid = disp - q @ (q.T @ disp)
    assert gram[j, j] == pytest.approx((resid @ resid) / len(region) * 1e6, rel=1e-9)
    assert gram[j, j] > 1.0  # jawOpen moves the face by millimetres
    g = expression_gram().numpy()
    eyes = eye_shape_indices().reshape(-1).numpy()
    assert {names[i].rsplit("_", 1)[0] for i in eyes} == set(EYE_SHAPES)
    assert np.all(g[eyes] == 0) and np.all(g[:, eyes] == 0)
    keep = np.setdiff1d(np.arange(len(names)), eyes)
    np.testing.assert_allclose(g[np.ix_(keep, keep)], gram[np.ix_(keep, keep)], rtol=1e-6)


def test_joint_gram_measures_identity_and_expression_together():
    # the whole-mesh error of scripts/shape_error_parts.py: the identity and expression
    # blocks are the training Grams, and the cross terms make d^T G d the mean squared
    # face-region displacement of both differences at once, after the similarity part
    basis = ShapeBasis(4)
    k, j = basis.n_id, basis.n_exp
    g = basis.joint_gram_aligned
    assert g.shape == (k + j, k + j)
    np.testing.assert_array_equal(g[:k, :k], basis.gram_aligned)
    np.testing.assert_array_equal(g[k:, k:], basis.exp_gram_aligned)
    model = load_ict("narrow")
    region = basis.region
    rng = np.random.default_rng(0)
    d_id, d_exp = rng.normal(size=k), rng.uniform(-0.5, 0.5, size=j)
    disp = (np.tensordot(d_id, model.id_basis[:k, region].astype(np.float64), 1)
            + np.tensordot(d_exp, model.exp_basis[:, region].astype(np.float64), 1)).ravel()
    q = np.linalg.qr(similarity_directions(model.mean[region].astype(np.float64)))[0]
    resid = disp - q @ (q.T @ disp)
    v = np.concatenate([d_id, d_exp])
    assert v @ g @ v == pytest.approx((resid @ resid) / len(region) * 1e6, rel=1e-9)
    blocks = d_id @ g[:k, :k] @ d_id + d_exp @ g[k:, k:] @ d_exp
    assert abs(v @ g @ v - blocks) > 1e-6 * blocks  # the cross terms are not zero


def test_expression_loss_is_zero_at_target_ignores_eyes_and_rows_without_target(names):
    gram = expression_gram()
    target = torch.rand(3, len(names))
    target[2] = float("nan")
    exp = target.clone()
    exp[2] = 5.0  # a row without target: never counted
    assert float(expression_loss(exp, target, gram)) == pytest.approx(0.0, abs=1e-9)
    eyes = eye_shape_indices().reshape(-1)
    moved_eyes = exp.clone()
    moved_eyes[:2, eyes] += 0.7
    assert float(expression_loss(moved_eyes, target, gram)) == pytest.approx(0.0, abs=1e-9)
    moved_jaw = exp.clone()
    moved_jaw[0, names.index("jawOpen")] += 0.5
    expected = 0.25 * float(gram[names.index("jawOpen"), names.index("jawOpen")]) / 2
    assert float(expression_loss(moved_jaw, target, gram)) == pytest.approx(expected, rel=1e-5)
    assert float(expression_loss(exp, None, gram)) == 0.0
    none = torch.full_like(target, float("nan"))
    assert float(expression_loss(exp, none, gram)) == 0.0


def _data(n: int, exp_target: np.ndarray) -> TrainingData:
    rng = np.random.default_rng(0)
    return TrainingData(
        images=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
        valid=np.ones((n, 32, 32), bool),
        landmarks=rng.uniform(8, 24, (n, 68, 2)).astype(np.float32),
        p_closed=rng.uniform(0, 1, (n, 2)).astype(np.float32),
        source=np.zeros(n, np.int8), dev=np.zeros(n, bool),
        eye_label=-np.ones((n, 2), np.int8), ids=np.array([f"t:{i}" for i in range(n)]),
        counts={}, key="t", exp_target=exp_target)


def test_flips_mirror_expression_targets(names):
    n = 16
    target = np.random.default_rng(1).uniform(0, 1, (n, len(names))).astype(np.float32)
    target[3] = np.nan
    data = _data(n, target)
    batch = make_batch(data, np.arange(n))
    np.testing.assert_array_equal(batch.exp_target.numpy(), target)
    cfg = dataclasses.replace(TrainConfig(), aug_flip=True)
    out = augment_batch(batch, cfg, seed=5)
    # a flipped row's landmarks are re-indexed: find the flipped rows from P(closed)
    flipped = ~np.isclose(out.p_closed.numpy()[:, 0], batch.p_closed.numpy()[:, 0])
    assert 0 < flipped.sum() < n
    m = expression_mirror(names)
    got = out.exp_target.numpy()
    np.testing.assert_array_equal(got[flipped], target[flipped][:, m])
    np.testing.assert_array_equal(got[~flipped], target[~flipped])
    no_flip = augment_batch(batch, dataclasses.replace(cfg, aug_flip=False), seed=5)
    np.testing.assert_array_equal(no_flip.exp_target.numpy(), target)
