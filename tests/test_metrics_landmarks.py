"""2D landmark NME."""

from __future__ import annotations

import numpy as np
import pytest

from metrics import nme_2d


def face68(rng: np.random.Generator) -> np.ndarray:
    pts = rng.uniform(0, 200, size=(68, 2))
    pts[36], pts[45] = [50.0, 100.0], [150.0, 100.0]  # outer eye corners 100 px apart
    return pts


def test_constant_shift_over_inter_ocular():
    rng = np.random.default_rng(0)
    gt = face68(rng)
    pred = gt + np.array([3.0, 4.0])  # 5 px everywhere
    assert nme_2d(pred, gt) == pytest.approx(0.05)
    assert isinstance(nme_2d(pred, gt), float)


def test_batch_and_norms():
    rng = np.random.default_rng(1)
    gt = np.stack([face68(rng), face68(rng) * 2])
    pred = gt + rng.normal(size=gt.shape)
    out = nme_2d(pred, gt)
    assert out.shape == (2,)
    for i in range(2):
        d = np.linalg.norm(pred[i] - gt[i], axis=1).mean()
        assert out[i] == pytest.approx(d / np.linalg.norm(gt[i, 36] - gt[i, 45]))
        pupil = np.linalg.norm(gt[i, 36:42].mean(0) - gt[i, 42:48].mean(0))
        assert nme_2d(pred, gt, norm="inter_pupil")[i] == pytest.approx(d / pupil)
        wh = gt[i].max(0) - gt[i].min(0)
        assert nme_2d(pred, gt, norm="bbox")[i] == pytest.approx(d / np.sqrt(wh[0] * wh[1]))
    assert nme_2d(gt, gt).max() == 0.0


def test_bad_input():
    gt = face68(np.random.default_rng(2))
    with pytest.raises(ValueError, match="must both be"):
        nme_2d(gt[:67], gt[:67])
    with pytest.raises(ValueError, match="NaN"):
        nme_2d(gt * np.nan, gt)
    with pytest.raises(ValueError, match="norm must be"):
        nme_2d(gt, gt, norm="iod")
    same = gt.copy()
    same[45] = same[36]
    with pytest.raises(ValueError, match="zero"):
        nme_2d(gt, same)
