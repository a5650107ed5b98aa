"""ELAM's adjustment rule on hand-made landmark sets (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.elam.rule import EYE_CORNERS, EYE_PAIRS, VARIANTS, elam_adjust, pair_distances

LIDS = [i for pairs in EYE_PAIRS for pair in pairs for i in pair]
CORNERS = [i for c in EYE_CORNERS for i in c]


def hand_made() -> np.ndarray:
    """68 points; eye 0: corners (0, 5), (30, 5); upper lid y=0, lower y=10 (gap 10 px);
    eye 1: the same shifted by 50 px, with a tilted lower lid."""
    lm = np.arange(136, dtype=np.float32).reshape(68, 2) * 3.0  # distinct filler points
    lm[36], lm[39] = (0, 5), (30, 5)
    lm[37], lm[38] = (10, 0), (20, 0)
    lm[41], lm[40] = (10, 10), (20, 10)
    lm[42], lm[45] = (50, 5), (80, 5)
    lm[43], lm[44] = (60, 0), (70, 0)
    lm[47], lm[46] = (62, 12), (72, 8)
    return lm


@pytest.mark.parametrize("variant", VARIANTS)
def test_p_zero_leaves_landmarks_unchanged(variant):
    lm = hand_made()
    out = elam_adjust(lm, [0.0, 0.0], variant)
    np.testing.assert_array_equal(out, lm)
    assert out is not lm


def test_soft_p_one_closes_pairs_onto_their_midpoints():
    lm = hand_made()
    out = elam_adjust(lm, [1.0, 1.0], "soft")
    np.testing.assert_allclose(out[37], (10, 5))
    np.testing.assert_allclose(out[41], (10, 5))
    np.testing.assert_allclose(out[38], (20, 5))
    np.testing.assert_allclose(out[40], (20, 5))
    np.testing.assert_allclose(out[43], (61, 6))
    np.testing.assert_allclose(out[47], (61, 6))
    np.testing.assert_allclose(pair_distances(out), 0.0, atol=1e-6)


def test_hard_closes_only_above_threshold():
    lm = hand_made()
    out = elam_adjust(lm, [0.51, 0.49], "hard")
    np.testing.assert_allclose(pair_distances(out)[0], 0.0, atol=1e-6)
    np.testing.assert_array_equal(out[42:48], lm[42:48])
    out = elam_adjust(lm, [0.7, 0.7], "hard", threshold=0.8)
    np.testing.assert_array_equal(out, lm)


def test_target_lowers_the_upper_lid_onto_the_lower_lid():
    lm = hand_made()
    out = elam_adjust(lm, [1.0, 0.25], "target")
    np.testing.assert_allclose(out[37], lm[41])
    np.testing.assert_allclose(out[38], lm[40])
    np.testing.assert_array_equal(out[[40, 41, 46, 47]], lm[[40, 41, 46, 47]])
    np.testing.assert_allclose(pair_distances(out)[1], 0.75 * pair_distances(lm)[1], rtol=1e-6)


@pytest.mark.parametrize("variant", ["soft", "target"])
def test_gap_shrinks_to_one_minus_p(variant):
    lm = hand_made()
    out = elam_adjust(lm, [0.3, 0.6], variant)
    ratio = pair_distances(out) / pair_distances(lm)
    np.testing.assert_allclose(ratio[0], 0.7, rtol=1e-5)
    np.testing.assert_allclose(ratio[1], 0.4, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_corners_and_other_landmarks_never_move(variant):
    rng = np.random.default_rng(0)
    for _ in range(20):
        lm = rng.uniform(0, 200, (68, 2)).astype(np.float32)
        out = elam_adjust(lm, rng.uniform(0, 1, 2), variant)
        keep = [i for i in range(68) if i not in LIDS]
        np.testing.assert_array_equal(out[keep], lm[keep])
        np.testing.assert_array_equal(out[CORNERS], lm[CORNERS])


def test_eyes_are_independent_and_eye0_is_36_to_41():
    lm = hand_made()
    out = elam_adjust(lm, [1.0, 0.0], "soft")
    assert not np.allclose(out[36:42], lm[36:42])
    np.testing.assert_array_equal(out[42:48], lm[42:48])


def test_probabilities_are_clipped():
    lm = hand_made()
    np.testing.assert_allclose(elam_adjust(lm, [1.7, -0.4]), elam_adjust(lm, [1.0, 0.0]))


def test_works_in_3d_and_with_batches():
    rng = np.random.default_rng(1)
    lm = rng.normal(size=(4, 3, 68, 3))
    p = rng.uniform(size=(4, 3, 2))
    out = elam_adjust(lm, p)
    assert out.shape == lm.shape
    for i in range(4):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], elam_adjust(lm[i, j], p[i, j]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_matches_numpy_and_is_differentiable(variant):
    rng = np.random.default_rng(2)
    lm = rng.uniform(0, 100, (5, 68, 2)).astype(np.float32)
    p = rng.uniform(size=(5, 2)).astype(np.float32)
    t_lm = torch.tensor(lm, requires_grad=True)
    t_p = torch.tensor(p, requires_grad=True)
    out = elam_adjust(t_lm, t_p, variant)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), elam_adjust(lm, p, variant), atol=1e-5)
    pair_distances(out).sum().backward()
    assert t_lm.grad is not None and torch.isfinite(t_lm.grad).all()
    if variant not in ("hard", "two-way-hard"):  # they threshold P: no gradient by design
        assert t_p.grad is not None and (t_p.grad.abs() > 0).all()
    np.testing.assert_array_equal(t_lm.detach().numpy(), lm)  # input untouched


def test_bad_arguments_raise_value_error():
    lm = hand_made()
    with pytest.raises(ValueError, match="variant"):
        elam_adjust(lm, [0, 0], "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="68"):
        elam_adjust(lm[:60], [0, 0])
    with pytest.raises(ValueError, match="per eye"):
        elam_adjust(lm, [0.5])


def test_two_way_widens_a_gap_the_landmarks_closed_on_an_open_eye():
    lm = hand_made()  # eye width 30 px; eye 0 gap 10 px (open), eye 1 about 10 px
    lm[37], lm[41] = (10, 4.5), (10, 5.5)  # eye 0, first pair: 1 px, below 0.18 * 30 = 5.4
    lm[38], lm[40] = (20, 5.0), (20, 5.0)  # second pair closed to a point
    out = elam_adjust(lm, [0.0, 0.0], "two-way", open_floor=0.18)
    d = pair_distances(out)
    np.testing.assert_allclose(d[0], [5.4, 5.4], rtol=1e-6)
    # around the pair's midpoint; the upper lid (37, 38) above the lower one (image y down)
    np.testing.assert_allclose(0.5 * (out[37] + out[41]), (10, 5), atol=1e-6)
    assert out[37, 1] < out[41, 1] and out[38, 1] < out[40, 1]
    np.testing.assert_allclose(out[[38, 40], 0], 20, atol=1e-6)  # along the axis normal
    np.testing.assert_array_equal(out[42:48], lm[42:48])  # eye 1 open and wide: unchanged
    # the detector saying closed: the same pairs close as with soft
    shut = elam_adjust(lm, [1.0, 1.0], "two-way")
    np.testing.assert_allclose(pair_distances(shut), 0.0, atol=1e-6)
    half = elam_adjust(lm, [0.5, 0.0], "two-way", open_floor=0.18)
    np.testing.assert_allclose(pair_distances(half)[0], [2.7, 2.7], rtol=1e-6)


def test_two_way_equals_soft_on_gaps_above_the_floor():
    lm = hand_made()
    for p in ([0.3, 0.6], [0.9, 0.1]):
        np.testing.assert_allclose(elam_adjust(lm, p, "two-way", open_floor=0.1),
                                   elam_adjust(lm, p, "soft"), atol=1e-6)


def test_two_way_hard_closes_above_the_threshold_and_never_narrows_part_way():
    lm = hand_made()
    lm[37], lm[41] = (10, 4.5), (10, 5.5)  # eye 0, first pair: 1 px (too narrow for open)
    out = elam_adjust(lm, [0.4, 0.6], "two-way-hard", threshold=0.5, open_floor=0.18)
    d, d0 = pair_distances(out), pair_distances(lm)
    np.testing.assert_allclose(d[0], [5.4, 10.0], rtol=1e-6)  # widened, kept: not 0.6x
    np.testing.assert_allclose(d[1], 0.0, atol=1e-6)  # P 0.6 > 0.5: closed
    assert (pair_distances(elam_adjust(lm, [0.4, 0.6], "two-way", open_floor=0.18))[0]
            < d[0]).all()  # the soft two-way narrows an uncertain eye part-way
    assert d0[0, 1] == pytest.approx(10.0)


def test_two_way_needs_2d_landmarks():
    with pytest.raises(ValueError, match="2D"):
        elam_adjust(np.zeros((68, 3)), [0, 0], "two-way")
