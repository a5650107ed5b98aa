"""Tests on the research-only real-photo pool (marker ``data``; skipped where it is absent).

Run with ``make test-all`` or ``pytest -m data``; ``.ci/run`` runs them when the pool sits at
``../shared/data/real-faces``. They check what only real photos can: that the held-out part
never leaks into training, and that the shipped eye-state detector and the ELAM+LDL
checkpoint behave on real faces as their records say.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.datasets.real_faces import default_root, split_real_faces

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def pool():
    root = default_root()
    if root is None or not root.is_dir():
        pytest.skip("the real-faces pool is not present (set EYEBENCH_REAL_FACES)")
    return split_real_faces(root)


def test_val_part_is_disjoint_from_training_by_group(pool):
    train_groups = {it.group for it in pool.train}
    val_groups = {it.group for it in pool.val}
    assert val_groups and train_groups
    assert not train_groups & val_groups
    assert not {it.file for it in pool.train} & {it.file for it in pool.val}
    # both labels are represented in the held-out faces
    labels = {it.label for it in pool.val if it.kind == "face"}
    assert labels == {0, 1}


def test_split_is_deterministic(pool):
    again = split_real_faces(pool.root)
    assert [it.file for it in again.val] == [it.file for it in pool.val]
    other = split_real_faces(pool.root, seed=1)
    assert [it.file for it in other.val] != [it.file for it in pool.val]


def _balanced_val_samples(n_per_label: int):
    from benchmark.datasets.real_faces import RealFacesDataset

    ds = RealFacesDataset()
    closed, opened = [], []
    for sid in ds.sample_ids():
        s = ds.load_sample(sid)
        (closed if s.image_state == 1 else opened).append(s)
    return closed[:n_per_label] + opened[:n_per_label]


def test_shipped_eye_detector_separates_real_closed_and_open_faces(pool):
    pytest.importorskip("dlib")
    from methods.elam.eye_detector import EyeStateDetector
    from methods.landmarks import get_provider

    provider = get_provider("dlib")
    detector = EyeStateDetector()
    right = total = 0
    for s in _balanced_val_samples(40):
        image, res = provider.image_and_landmarks(s)
        if res.status != "ok":
            continue
        p = detector.predict(image, res.landmarks)
        closed = bool(np.mean(p) > 0.5)
        right += closed == bool(s.image_state)
        total += 1
    assert total >= 60
    # The shipped detector's recorded real-val image accuracy is about 0.98.
    assert right / total >= 0.9


def test_elam_ldl_checkpoint_closes_eyes_on_real_closed_faces(pool):
    pytest.importorskip("dlib")
    from methods.elam_ldl.method import ElamLdl
    from metrics.eyes import eye_openness

    method = ElamLdl()
    if not method.availability().ok:
        pytest.skip(method.availability().reason)
    method.ensure_loaded("cpu")
    samples = _balanced_val_samples(24)
    preds = method.predict_batch(samples)
    by_label: dict[int, list[float]] = {0: [], 1: []}
    for s, pred in zip(samples, preds, strict=True):
        if pred.status != "ok":
            continue
        openness = eye_openness(pred.topology.landmarks(pred.vertices))
        by_label[int(s.image_state)].append(float(np.mean(openness)))
    assert len(by_label[0]) >= 15 and len(by_label[1]) >= 15
    assert np.median(by_label[1]) < np.median(by_label[0])
