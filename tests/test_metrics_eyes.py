"""Eye openness, open/closed decisions on ICT blink shapes, and the binary scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN
from methods.facemodel import load_ict
from metrics import (
    DEFAULT_CLOSED_THRESHOLD,
    binary_scores,
    confusion_matrix,
    eye_openness,
    eye_state_from_openness,
    eye_state_scores,
    image_state,
    openness_error,
    openness_from_points,
)


def ict_openness(right: float, left: float, seed: int | None, expr_seed: int | None = None):
    """Openness (eye 0, eye 1) of an ICT narrow mesh with the given blink weights."""
    m = load_ict("narrow")
    ids = None if seed is None else np.random.default_rng(seed).normal(size=m.n_id)
    ex = np.zeros(m.n_exp)
    if expr_seed is not None:
        r = np.random.default_rng(expr_seed)
        ex = r.uniform(0, 0.3, m.n_exp) * (r.uniform(size=m.n_exp) < 0.3)
    ex[m.exp_index("eyeBlink_R")] = right  # closes eye 0 (landmarks 36-41)
    ex[m.exp_index("eyeBlink_L")] = left  # closes eye 1 (landmarks 42-47)
    verts = m.vertices(ids, ex)
    return eye_openness(m.topology().landmarks(verts))


def test_openness_from_points_known_values():
    up = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    lo = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    assert openness_from_points(up, lo, [-1, 0, 0], [3, 0, 0]) == pytest.approx(1.5 / 4)
    # batched, 2D
    up2 = np.stack([up[:, :2], up[:, :2] * 2])
    lo2 = np.stack([lo[:, :2], lo[:, :2] * 2])
    got = openness_from_points(up2, lo2, np.array([[-1, 0], [-2, 0]]), np.array([[3, 0], [6, 0]]))
    np.testing.assert_allclose(got, [1.5 / 4, 1.5 / 4])
    with pytest.raises(ValueError, match="zero eye width"):
        openness_from_points(up, lo, [1, 0, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        openness_from_points(up * np.nan, lo, [0, 0, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="must both be"):
        openness_from_points(up, lo[:1], [0, 0, 0], [1, 0, 0])


def test_eye_openness_uses_ibug_pairs():
    lmk = np.zeros((68, 3))
    lmk[36], lmk[39] = [0, 0, 0], [4, 0, 0]
    lmk[37], lmk[41] = [1, 1, 0], [1, -1, 0]  # gap 2
    lmk[38], lmk[40] = [3, 0.5, 0], [3, -0.5, 0]  # gap 1
    lmk[42], lmk[45] = [10, 0, 0], [12, 0, 0]
    lmk[43], lmk[47] = [10.5, 0.1, 0], [10.5, 0, 0]
    lmk[44], lmk[46] = [11.5, 0.1, 0], [11.5, 0, 0]
    np.testing.assert_allclose(eye_openness(lmk), [1.5 / 4, 0.1 / 2])
    np.testing.assert_allclose(eye_openness(np.stack([lmk, lmk]))[1], [1.5 / 4, 0.1 / 2])
    np.testing.assert_allclose(eye_openness(lmk[:, :2]), [1.5 / 4, 0.1 / 2])
    # a topology declaring its own eyelid ids (one pair per eye here)
    got = eye_openness(lmk, upper=[[37], [43]], lower=[[41], [47]], corners=[[36, 39], [42, 45]])
    np.testing.assert_allclose(got, [2 / 4, 0.1 / 2])
    with pytest.raises(ValueError, match="outside"):
        eye_openness(lmk[:40])
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        eye_openness(np.zeros(68))


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3, 4, 5])
def test_ict_blink_zero_open_and_1_1_closed_per_eye(seed):
    thr = DEFAULT_CLOSED_THRESHOLD
    both_open = eye_state_from_openness(ict_openness(0.0, 0.0, seed))
    both_closed = eye_state_from_openness(ict_openness(1.1, 1.1, seed))
    wink_right = eye_state_from_openness(ict_openness(1.1, 0.0, seed))  # eye 0 shut
    wink_left = eye_state_from_openness(ict_openness(0.0, 1.1, seed))  # eye 1 shut
    assert both_open.tolist() == [EYE_OPEN, EYE_OPEN], thr
    assert both_closed.tolist() == [EYE_CLOSED, EYE_CLOSED]
    assert wink_right.tolist() == [EYE_CLOSED, EYE_OPEN]
    assert wink_left.tolist() == [EYE_OPEN, EYE_CLOSED]


def test_ict_blink_with_random_expression():
    for seed in range(3):
        o = ict_openness(1.1, 0.0, seed, expr_seed=seed + 100)
        assert eye_state_from_openness(o).tolist() == [EYE_CLOSED, EYE_OPEN]


def test_default_threshold_separates_ict_blinks():
    # the measurement behind DEFAULT_CLOSED_THRESHOLD, on fewer identities (docs/metrics.md)
    m = load_ict("narrow")
    lmk = m.landmark_ids
    rng = np.random.default_rng(123)
    ids = rng.normal(size=(300, m.n_id))
    base = m.mean[lmk].astype(np.float64) + np.einsum(
        "nk,kvd->nvd", ids, m.id_basis[:, lmk].astype(np.float64))
    blink = m.exp_basis[[m.exp_index("eyeBlink_R"), m.exp_index("eyeBlink_L")]][:, lmk]
    blink = blink.sum(axis=0).astype(np.float64)
    op = {w: eye_openness(base + w * blink) for w in (0.0, 0.5, 1.0, 1.1)}
    thr = DEFAULT_CLOSED_THRESHOLD
    assert (op[0.0] < thr).mean() < 0.01  # open eyes called closed
    assert (op[1.0] >= thr).mean() < 0.01 and (op[1.1] >= thr).mean() < 0.01
    # the threshold sits near the half blink's median ("more than half shut")
    assert abs(np.median(op[0.5]) - thr) < 0.02
    # openness decreases with the blink weight
    assert np.median(op[0.0]) > np.median(op[0.5]) > np.median(op[1.0])


def test_eye_state_from_openness_nan_is_unknown():
    got = eye_state_from_openness(np.array([[0.3, np.nan], [0.05, 0.18]]))
    assert got.tolist() == [[EYE_OPEN, EYE_UNKNOWN], [EYE_CLOSED, EYE_OPEN]]
    assert got.dtype == np.int8
    assert eye_state_from_openness([0.1], threshold=0.05).tolist() == [EYE_OPEN]


@pytest.mark.parametrize("seed", range(8))
def test_binary_scores_equal_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    y_true = rng.choice([-1, 0, 1], size=n, p=[0.2, 0.5, 0.3])
    y_pred = rng.choice([0, 1], size=n)
    s = binary_scores(y_true, y_pred)
    k = y_true != -1
    t, p = y_true[k], y_pred[k]
    assert s.accuracy == pytest.approx(accuracy_score(t, p))
    assert s.precision == pytest.approx(precision_score(t, p, zero_division=0))
    assert s.recall == pytest.approx(recall_score(t, p, zero_division=0))
    assert s.f1 == pytest.approx(f1_score(t, p, zero_division=0))
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred),
                                  sk_confusion_matrix(t, p, labels=[0, 1]))
    assert s.n == k.sum() and s.tp + s.fp + s.tn + s.fn == s.n


@pytest.mark.parametrize(
    ("t", "p"),
    [([0, 0, 0], [0, 0, 0]), ([1, 1], [0, 0]), ([0, 0], [1, 1]), ([1, 1], [1, 1])],
)
def test_binary_scores_zero_division_like_sklearn(t, p):
    s = binary_scores(np.array(t), np.array(p))
    assert s.precision == precision_score(t, p, zero_division=0)
    assert s.recall == recall_score(t, p, zero_division=0)
    assert s.f1 == f1_score(t, p, zero_division=0)


def test_binary_scores_edge_cases():
    s = binary_scores(np.array([-1, -1]), np.array([0, 1]))
    assert s.n == 0 and np.isnan(s.accuracy) and s.f1 == 0.0
    with pytest.raises(ValueError, match="unknown"):
        binary_scores(np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="differ in size"):
        binary_scores(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="labels in"):
        binary_scores(np.array([0, 2]), np.array([0, 1]))
    # an unknown prediction where the truth is unknown is fine
    assert binary_scores(np.array([-1, 1]), np.array([-1, 1])).tp == 1


def test_image_state_and_scores():
    per_eye = np.array([[1, 1], [1, 0], [0, 0], [-1, 1], [0, -1]])
    assert image_state(per_eye).tolist() == [1, 0, 0, -1, -1]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        image_state(np.array([1, 0]))
    truth = np.array([[1, 1], [1, 0], [0, 0], [-1, 1]])
    pred = np.array([[1, 1], [0, 0], [0, 1], [1, 1]])
    sc = eye_state_scores(truth, pred)
    # per eye: known pairs (1,1),(1,1),(1,0),(0,0),(0,0),(0,1),(1,1) -> tp 3, fn 1, tn 2, fp 1
    assert (sc.per_eye.tp, sc.per_eye.fn, sc.per_eye.tn, sc.per_eye.fp) == (3, 1, 2, 1)
    assert (sc.right.tp, sc.right.fn, sc.right.tn) == (1, 1, 1)
    assert (sc.left.tp, sc.left.tn, sc.left.fp) == (2, 1, 1)
    # image: truth [1, 0, 0, -1], prediction [1, 0, 0, 1] -> perfect on the known three
    assert sc.image.n == 3 and sc.image.accuracy == 1.0 and sc.image.f1 == 1.0
    # image labels supplied by a dataset that labels images only
    sc2 = eye_state_scores(np.full((4, 2), -1), pred, true_image_states=np.array([1, 1, 0, 0]))
    assert sc2.per_eye.n == 0 and sc2.image.n == 4 and sc2.image.tp == 1


def test_openness_error_ignores_nan():
    pred = np.array([[0.3, 0.1], [0.2, 0.05]])
    gt = np.array([[0.25, np.nan], [0.3, 0.05]])
    e = openness_error(pred, gt)
    assert e.n == 3
    assert e.mean_abs == pytest.approx((0.05 + 0.1 + 0.0) / 3)
    assert e.median_abs == pytest.approx(0.05)
    assert np.isnan(e.abs_errors[0, 1])
    assert openness_error(pred, np.full((2, 2), np.nan)).n == 0
    with pytest.raises(ValueError, match="shape"):
        openness_error(pred, gt[0])
