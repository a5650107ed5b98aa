"""Counterfactual training batches (issue 16): eye swaps, source balancing, degradations, and
the synthetic identity targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from methods.elam.rule import EYE_CORNERS
from methods.elam_ldl.config import TrainConfig
from methods.elam_ldl.counterfactual import (
    EYE_POINTS,
    balanced_indices,
    degrade,
    eye_blend_weight,
    row_groups,
    swap_eyes,
)
from methods.elam_ldl.data import ShapeBasis, TrainingData, make_batch
from methods.elam_ldl.losses import shape_loss

S = 64


def _face_landmarks(shift: float = 0.0) -> np.ndarray:
    lm = np.random.default_rng(0).uniform(10, 54, (68, 2)).astype(np.float32)
    eyes = {36: (14, 24), 39: (28, 24), 42: (36, 24), 45: (50, 24)}
    for k, v in eyes.items():
        lm[k] = (v[0] + shift, v[1])
    for e, (a, b) in enumerate(EYE_CORNERS):
        x0, x1 = lm[a, 0], lm[b, 0]
        lm[37 + 6 * e] = (x0 + (x1 - x0) / 3, 22)
        lm[38 + 6 * e] = (x0 + 2 * (x1 - x0) / 3, 22)
        lm[40 + 6 * e] = (x0 + 2 * (x1 - x0) / 3, 26)
        lm[41 + 6 * e] = (x0 + (x1 - x0) / 3, 26)
    return lm


def make_data() -> TrainingData:
    """Eight grey faces: 4 'closed-source' rows (P closed) and 4 'open-source' rows (P open);
    every face has a distinct eye colour so swaps can be traced."""
    n = 8
    images = np.zeros((n, S, S, 3), np.uint8)
    lms = []
    for i in range(n):
        images[i] = 120
        lm = _face_landmarks(shift=float(i % 2))
        for e in (0, 1):
            c = lm[list(EYE_CORNERS[e])].mean(0).astype(int)
            images[i, c[1] - 2:c[1] + 3, c[0] - 3:c[0] + 4] = (10 * i + 5, 100, 20 * e)
        lms.append(lm)
    p = np.array([[0.95, 0.9]] * 4 + [[0.05, 0.1]] * 4, np.float32)
    ids = [f"real-faces:closed/{i}.jpg" for i in range(4)] + \
        [f"real-faces:open/{i}.jpg" for i in range(4)]
    return TrainingData(images=images, valid=np.ones((n, S, S), bool),
                        landmarks=np.stack(lms), p_closed=p, source=np.ones(n, np.int8),
                        dev=np.zeros(n, bool), eye_label=np.full((n, 2), -1, np.int8),
                        ids=np.array(ids), counts={}, key="t")


def cfg(**kw) -> TrainConfig:
    """The recipe's setting: eye swaps need the face-only network (no eye branch)."""
    return TrainConfig.preset("elam-ldl", **{"eye_branch": False, **kw})


def test_row_groups_split_the_pool_by_source_folder():
    d = make_data()
    d.ids[0] = "synthetic:train-00000"
    d.ids[1] = "folder:x.png"
    np.testing.assert_array_equal(row_groups(d), [0, 3, 1, 1, 2, 2, 2, 2])


def test_every_swapped_eye_takes_the_other_state_from_the_other_source():
    d = make_data()
    rows = np.arange(8)
    images, lm, p = swap_eyes(d, rows, cfg(aug_eye_swap=1.0), seed=3)
    assert ((p > 0.5) != (d.p_closed > 0.5)).all()  # every eye changed state
    for i in rows:
        for e in (0, 1):
            a, b = EYE_CORNERS[e]
            # corners stay where they were (the donor's corners are mapped onto them)
            np.testing.assert_allclose(lm[i, [a, b]], d.landmarks[i, [a, b]], atol=1e-4)
            # the eye centre's pixels come from a donor of the other source
            c = d.landmarks[i, [a, b]].mean(0).astype(int)
            red = int(images[i, c[1], c[0], 0])
            donor = (red - 5) // 10
            assert abs(red - (10 * donor + 5)) <= 2 and (donor < 4) != (i < 4), (i, e, red)
    # far from the eyes nothing changed
    np.testing.assert_array_equal(images[:, 50:, :], d.images[:, 50:, :])
    assert images is not d.images and d.images[0, 24, 21, 0] == 5  # the data is untouched


def test_the_swapped_eye_takes_the_new_faces_skin_tone():
    d = make_data()
    d.images[4:] = np.where(d.images[4:] == 120, 200, d.images[4:])  # bright open faces
    images, _, _ = swap_eyes(d, np.array([0]), cfg(aug_eye_swap=1.0), seed=3)
    w = eye_blend_weight(S, d.landmarks[0, [36, 39]].astype(np.float64))
    ring = (w > 0.1) & (w < 0.5)
    assert abs(images[0][ring].mean() - 120) < 3  # no bright seam around the pasted eye


def test_swap_probability_zero_is_the_identity_and_one_eye_makes_a_wink():
    d = make_data()
    images, lm, p = swap_eyes(d, np.arange(8), cfg(aug_eye_swap=0.0), seed=0)
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(lm, d.landmarks)
    # over many draws at 0.3 per eye, some faces end with one eye of each state
    winks = 0
    for seed in range(40):
        _, _, p = swap_eyes(d, np.arange(8), cfg(aug_eye_swap=0.3), seed=seed)
        winks += int(((p[:, 0] > 0.5) != (p[:, 1] > 0.5)).sum())
    assert 0.25 < winks / (40 * 8) < 0.6  # 2 * 0.3 * 0.7 = 0.42 expected


def test_swapped_landmarks_are_the_donors_mapped_by_a_similarity():
    d = make_data()
    d.landmarks[4:, 37:42:1] += 0.0
    images, lm, p = swap_eyes(d, np.array([0]), cfg(aug_eye_swap=1.0), seed=5)
    for e in (0, 1):
        pts = list(EYE_POINTS[e])
        a, b = EYE_CORNERS[e]
        width_new = np.linalg.norm(lm[0, b] - lm[0, a])
        gaps_new = np.linalg.norm(lm[0, pts[1]] - lm[0, pts[5]]) / width_new
        # the donor's gap in eye widths is kept (a similarity keeps ratios)
        donors = range(4, 8)
        ratios = [np.linalg.norm(d.landmarks[j, pts[1]] - d.landmarks[j, pts[5]])
                  / np.linalg.norm(d.landmarks[j, b] - d.landmarks[j, a]) for j in donors]
        assert min(abs(gaps_new - r) for r in ratios) < 1e-4


def test_blend_weight_is_one_on_the_eye_and_zero_far_away():
    w = eye_blend_weight(S, np.array([[14.0, 24.0], [28.0, 24.0]]))
    assert w[24, 21] > 0.99 and w[60, 60] < 1e-3 and w[5, 21] < 0.05


def test_balanced_indices_follow_the_group_weights_and_are_reproducible():
    d = make_data()
    d.ids[:2] = ["synthetic:a", "synthetic:b"]  # groups: 2 synthetic, 2 closed, 4 open
    c = cfg(synthetic_share=0.5, batch_size=4000)
    rows = balanced_indices(d, 0, 4000, c)
    g = row_groups(d)[rows]
    assert abs((g == 0).mean() - 0.5) < 0.03
    assert abs((g == 1).mean() - 0.25) < 0.03 and abs((g == 2).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(rows, balanced_indices(d, 0, 4000, c))
    assert not np.array_equal(rows, balanced_indices(d, 1, 4000, c))
    d.dev[0] = True  # dev rows are never drawn
    assert 0 not in balanced_indices(d, 2, 500, c)


def test_degrade_is_seeded_and_off_at_zero():
    d = make_data()
    off = cfg(aug_degrade=0.0, aug_grey=0.0, aug_jpeg=0.0)
    np.testing.assert_array_equal(degrade(d.images, off, 1), d.images)
    on = cfg(aug_degrade=1.0, aug_grey=1.0, aug_jpeg=1.0)
    a, b = degrade(d.images, on, 1), degrade(d.images, on, 1)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == d.images.shape
    np.testing.assert_array_equal(a[..., 0], a[..., 1])  # greyscale
    assert not np.array_equal(a, d.images)


def test_shape_basis_projects_faces_in_span_exactly_and_measures_mm():
    from methods.facemodel.ict import load_ict

    basis = ShapeBasis(10)
    model = load_ict("narrow")
    x = np.random.default_rng(0).normal(size=10)
    face = model.mean + np.tensordot(x, model.id_basis[:10], axes=1)
    np.testing.assert_allclose(basis.project(face), x, atol=1e-4)
    # d^T G d equals the mean squared vertex distance over the region, in mm^2
    d = np.random.default_rng(1).normal(size=10)
    diff = np.tensordot(d, model.id_basis[:10], axes=1)[basis.region] * 1000.0
    np.testing.assert_allclose(d @ basis.gram @ d, (diff ** 2).sum(-1).mean(), rtol=1e-5)


def test_aligned_gram_is_the_error_left_after_a_similarity_alignment():
    from methods.facemodel.ict import load_ict
    from metrics import umeyama

    basis = ShapeBasis(50)
    model = load_ict("narrow")
    rng = np.random.default_rng(2)
    for _ in range(3):
        d = rng.normal(size=50) * 0.1
        mean = model.mean[basis.region].astype(np.float64)
        face = mean + np.tensordot(d, model.id_basis[:50], axes=1)[basis.region]
        tr = umeyama(face, mean)  # the best similarity taking the face onto the mean face
        err = ((tr.apply(face) - mean) * 1000.0) ** 2
        # first order in the (small) difference: the same mm^2 as a full alignment
        np.testing.assert_allclose(d @ basis.gram_aligned @ d, err.sum(-1).mean(), rtol=0.05)
        assert d @ basis.gram_aligned @ d < d @ basis.gram @ d
    # a face that is only a scaled mean face (as far as the modes can express one) costs
    # almost nothing aligned, and its full plain error otherwise
    c = model.mean[basis.region] - model.mean[basis.region].mean(0)
    s = basis._pinv @ (0.05 * c).ravel()
    assert s @ basis.gram_aligned @ s < 0.1 * (s @ basis.gram @ s)


def test_shape_loss_uses_only_rows_with_a_target():
    gram = torch.eye(3)
    pred = torch.tensor([[1.0, 0, 0], [5.0, 5, 5]])
    target = torch.tensor([[0.0, 0, 0], [float("nan")] * 3])
    assert float(shape_loss(pred, target, gram)) == pytest.approx(1.0)
    assert float(shape_loss(pred, torch.full((2, 3), float("nan")), gram)) == 0.0
    assert float(shape_loss(pred, None, gram)) == 0.0


def test_make_batch_carries_replacement_rows_and_shape_targets():
    d = dataclasses.replace(make_data(), shape_target=np.arange(16, dtype=np.float32)
                            .reshape(8, 2))
    imgs = np.zeros((2, S, S, 3), np.uint8)
    b = make_batch(d, np.array([1, 2]), images=imgs)
    assert float(b.images.abs().sum()) == 0.0
    np.testing.assert_array_equal(b.shape_target.numpy(), [[2, 3], [4, 5]])
