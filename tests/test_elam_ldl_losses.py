"""ELAM+LDL losses on hand-made inputs: LDL values, ELAM targets, Deep3D terms, alignment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.elam_ldl.config import VARIANTS, TrainConfig
from methods.elam_ldl.losses import (
    K_EYE,
    K_LIP,
    gamma_regulariser,
    landmark_loss,
    landmark_targets,
    landmark_weights,
    ldl_loss,
    photometric_loss,
    reflectance_loss,
)

torch.set_num_threads(1)


def face_landmarks(gap_eye: float = 6.0, gap_lip: float = 4.0) -> torch.Tensor:
    """(1, 68, 2) landmarks: eyes 30 px wide with vertical gaps ``gap_eye``, mouth 50 px."""
    lm = torch.zeros(68, 2)
    lm[:, 0] = torch.linspace(0, 100, 68)
    lm[:, 1] = 50.0
    for x0, ids in ((20.0, range(36, 42)), (60.0, range(42, 48))):
        a, u1, u2, b, l2, l1 = ids
        lm[a] = torch.tensor([x0, 40.0])
        lm[b] = torch.tensor([x0 + 30.0, 40.0])
        lm[u1] = torch.tensor([x0 + 10.0, 40.0 - gap_eye / 2])
        lm[u2] = torch.tensor([x0 + 20.0, 40.0 - gap_eye / 2])
        lm[l1] = torch.tensor([x0 + 10.0, 40.0 + gap_eye / 2])
        lm[l2] = torch.tensor([x0 + 20.0, 40.0 + gap_eye / 2])
    lm[48] = torch.tensor([25.0, 80.0])
    lm[54] = torch.tensor([75.0, 80.0])
    for up, lo, x in ((61, 67, 40.0), (62, 66, 50.0), (63, 65, 60.0)):
        lm[up] = torch.tensor([x, 80.0 - gap_lip / 2])
        lm[lo] = torch.tensor([x, 80.0 + gap_lip / 2])
    return lm[None]


def test_ldl_pairs_are_the_design_pairs():
    assert K_EYE == ((37, 41), (38, 40), (43, 47), (44, 46))
    assert K_LIP == ((61, 67), (62, 66), (63, 65))


def test_ldl_is_zero_for_identical_distances_even_when_points_move():
    a = face_landmarks()
    b = a + torch.tensor([5.0, -3.0])  # translation keeps every pair distance
    assert float(ldl_loss(a, b, 1.0, 1.0, normalise=False)) == pytest.approx(0.0, abs=1e-6)
    assert float(ldl_loss(a, b, 1.0, 1.0, normalise=True)) == pytest.approx(0.0, abs=1e-6)


def test_ldl_known_values_raw_and_normalised():
    pred = face_landmarks(gap_eye=6.0, gap_lip=4.0)
    target = face_landmarks(gap_eye=0.0, gap_lip=10.0)
    # every eyelid pair differs by 6 px, every lip pair by 6 px
    raw = ldl_loss(pred, target, w_eye=2.0, w_lip=0.5, normalise=False)
    assert float(raw) == pytest.approx(2.0 * 6.0 + 0.5 * 6.0, rel=1e-5)
    # normalised: eye width 30 px, mouth width 50 px (target's)
    norm = ldl_loss(pred, target, w_eye=2.0, w_lip=0.5, normalise=True)
    assert float(norm) == pytest.approx(2.0 * 6.0 / 30.0 + 0.5 * 6.0 / 50.0, rel=1e-5)
    # the weights act separately
    assert float(ldl_loss(pred, target, 0.0, 1.0, False)) == pytest.approx(6.0, rel=1e-5)
    assert float(ldl_loss(pred, target, 1.0, 0.0, False)) == pytest.approx(6.0, rel=1e-5)


def test_ldl_gradient_closes_the_predicted_eye_towards_a_closed_target():
    pred = face_landmarks(gap_eye=6.0).requires_grad_(True)
    target = face_landmarks(gap_eye=0.5)
    ldl_loss(pred, target, 1.0, 0.0, normalise=True).backward()
    g = pred.grad[0]
    # upper-lid points are pushed down (+y), lower-lid points up (-y)
    assert (g[[37, 38, 43, 44], 1] < 0).all()  # descending y lowers the loss => grad < 0
    assert (g[[41, 40, 47, 46], 1] > 0).all()
    assert torch.count_nonzero(g[:36]) == 0


def test_elam_targets_used_when_on_raw_when_off():
    lm = face_landmarks(gap_eye=8.0).repeat(2, 1, 1)
    p = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    off = landmark_targets(lm, p, TrainConfig.preset("ldl"))
    assert torch.equal(off, lm)
    soft = dataclasses.replace(TrainConfig.preset("elam-ldl"), elam_variant="soft")
    on = landmark_targets(lm, p, soft)
    gaps = (on[:, [37, 38, 43, 44]] - on[:, [41, 40, 47, 46]]).norm(dim=-1)
    np.testing.assert_allclose(gaps[0].numpy(), [0, 0, 8, 8], atol=1e-5)  # eye 0 closed
    np.testing.assert_allclose(gaps[1].numpy(), [8, 8, 4, 4], atol=1e-5)  # eye 1 half
    # the shipped rule (two-way-hard): P 0.5 is not above the threshold, so eye 1 stays
    shipped = landmark_targets(lm, p, TrainConfig.preset("elam-ldl"))
    gaps = (shipped[:, [37, 38, 43, 44]] - shipped[:, [41, 40, 47, 46]]).norm(dim=-1)
    np.testing.assert_allclose(gaps.numpy(), [[0, 0, 8, 8], [8, 8, 8, 8]], atol=1e-5)
    # corners and non-eye points never move
    keep = [i for i in range(68) if i not in (37, 38, 40, 41, 43, 44, 46, 47)]
    assert torch.equal(on[:, keep], lm[:, keep])
    hard = landmark_targets(lm, p, dataclasses.replace(TrainConfig.preset("elam"),
                                                       elam_variant="hard"))
    assert torch.allclose((hard[1, 43] - hard[1, 47]).norm(), torch.tensor(8.0))  # 0.5 not > 0.5


def test_presets_differ_only_in_the_two_switches():
    base = dataclasses.asdict(TrainConfig.preset("deep3d-recipe"))
    for name, (elam, ldl) in VARIANTS.items():
        d = dataclasses.asdict(TrainConfig.preset(name))
        assert d["use_elam"] == elam and d["use_ldl"] == ldl and d["variant"] == name
        diff = {k for k in d if d[k] != base[k]}
        assert diff <= {"use_elam", "use_ldl", "variant"}
    with pytest.raises(ValueError, match="unknown variant"):
        TrainConfig.preset("nope")


def test_landmark_loss_matches_deep3d_at_224_and_is_size_invariant():
    w = landmark_weights(TrainConfig())
    assert w[28:31].tolist() == [20.0] * 3 and w[60:68].tolist() == [20.0] * 8
    assert w[0] == 1.0 and w[45] == 1.0
    target = torch.zeros(1, 68, 2)
    pred = target.clone()
    pred[0, 29, 0] = 2.0  # 2 px on a weight-20 point
    assert float(landmark_loss(pred, target, w, 224)) == pytest.approx(20 * 4 / 68)
    # the same relative error on a 112-px crop costs the same
    pred[0, 29, 0] = 1.0
    assert float(landmark_loss(pred, target, w, 112)) == pytest.approx(20 * 4 / 68)


def test_photometric_gamma_and_reflectance_terms():
    img = torch.zeros(1, 4, 4, 3)
    ren = torch.zeros(1, 4, 4, 3)
    ren[0, 0, 0] = torch.tensor([0.3, 0.4, 0.0])  # distance 0.5
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1.0
    assert float(photometric_loss(ren, img, mask, eps=0.0)) == pytest.approx(0.5 / 4)
    mono = torch.arange(9.0).repeat(3)[None]
    assert float(gamma_regulariser(mono)) == pytest.approx(0.0)
    assert float(gamma_regulariser(torch.randn(2, 27))) > 0
    alb = torch.full((1, 5, 3), 0.5)
    skin = torch.tensor([True, True, False, True, False])
    assert float(reflectance_loss(alb, skin)) == pytest.approx(0.0)
    alb[0, 2] = 0.9  # outside the skin: no effect
    assert float(reflectance_loss(alb, skin)) == pytest.approx(0.0)
    alb[0, 0] = 0.9
    assert float(reflectance_loss(alb, skin)) > 0


def test_zero_network_renders_the_mean_face_on_the_alignment_template():
    from methods.elam_ldl.align import five_points, template_points
    from methods.elam_ldl.model import FaceDecoder, NetSpec, ReconNet

    spec = NetSpec(depth=10, width=8, input_size=48, n_id=5)
    net, dec = ReconNet(spec), FaceDecoder(spec, backend="torch")
    with torch.no_grad():
        c = net.coefficients(torch.rand(2, 3, 48, 48))
        lm = dec.landmarks_only(c)
        geo = dec.geometry(c)
    assert torch.count_nonzero(c.exp) == 0 and torch.count_nonzero(c.id) == 0
    np.testing.assert_allclose(five_points(lm[0].numpy()), template_points(48, 0.9), atol=1e-3)
    torch.testing.assert_close(lm, geo.landmarks2d)


def test_alignment_round_trip_and_valid_mask():
    from methods.elam_ldl.align import fit_similarity, warp_image

    rng = np.random.default_rng(0)
    p = rng.uniform(20, 80, (5, 2))
    q = p * 0.5 + np.array([3.0, -2.0])
    tr = fit_similarity(p, q)
    assert tr.scale == pytest.approx(0.5) and np.allclose(tr.shift, [3.0, -2.0])
    np.testing.assert_allclose(tr.invert(tr.apply(p)), p, atol=1e-4)
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255
    crop, valid = warp_image(img, tr, 64)
    assert crop.shape == (64, 64, 3) and valid.shape == (64, 64)
    # the photo covers crop x in [3, 53], y in [-2, 48]
    assert valid[5, 5] and valid[45, 50] and not valid[50, 50] and not valid[5, 1]
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() + 0.5 - tr.apply(np.array([50.0, 50.0]))[0]) < 1.0
    with pytest.raises(ValueError, match="degenerate"):
        fit_similarity(np.ones((5, 2)), q)


def test_rotating_alignment_levels_a_tilted_face():
    from methods.elam_ldl.align import fit_similarity, five_points, template_points, warp_image

    lm = np.load(Path(__file__).resolve().parent / "data" / "synthetic_face_224_landmarks.npy")
    ang = np.radians(25.0)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    tilted = (lm - 112.0) @ rot.T + 112.0
    tpl = template_points(64, 0.9)
    plain = fit_similarity(five_points(tilted), tpl)
    level = fit_similarity(five_points(tilted), tpl, rotation=True)
    eyes = level.apply(five_points(tilted))[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.0  # the eyes are level in the crop
    assert abs(np.diff(plain.apply(five_points(tilted))[:2, 1])[0]) > 5.0
    np.testing.assert_allclose(level.invert(level.apply(tilted)), tilted, atol=1e-3)
    crop, valid = warp_image(np.zeros((120, 120, 3), np.uint8), level, 64)  # face overhangs
    assert crop.shape == (64, 64, 3) and valid.any() and not valid.all()
