"""The synthetic benchmark: determinism, disjoint splits, eye states and their look, scans,
landmarks, the cache (resume, damage), options and the card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.datasets import DATASETS
from benchmark.datasets.base import CARDS_DIR
from benchmark.datasets.synthetic import SyntheticDataset
from benchmark.synthetic.config import CATEGORIES, SyntheticConfig, split_code
from benchmark.synthetic.scene import (
    assets,
    gt_vertices,
    make_spec,
    make_subject,
    render_sample,
)
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN, NOW7_FROM_68
from methods.render import PinholeCamera, model_to_camera, project
from metrics import DEFAULT_CLOSED_THRESHOLD, eye_openness, now_crop_mask

N = 6


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A temporary cache root holding the first six test samples."""
    root = tmp_path_factory.mktemp("eyebench-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("EYEBENCH_CACHE", str(root))
    ds = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    ds.prepare()
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def samples(cache):
    """The six samples, loaded."""
    ds = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    return [ds.load_sample(sid) for sid in ds.sample_ids()]


# --------------------------------------------------------------------------- registry, card


def test_registered_as_default_dataset_with_its_card():
    cls = DATASETS.get("synthetic")
    assert cls is SyntheticDataset
    card = cls.card
    assert card.name == "synthetic" and card.splits == ("test", "train")
    assert card.default_split == "test" and card.has_scans and card.has_eye_labels
    text = (CARDS_DIR / card.card_file).read_text()
    for heading in ("Generation parameters", "Splits", "Licence", "Limitations", "dlib"):
        assert heading in text, heading


def test_options_are_checked_and_coerced(tmp_path):
    ds = SyntheticDataset(split="train", n="7", seed="3", yaw_deg="30", distance_m="1.0,1.1",
                          cache_dir=tmp_path)
    assert ds.n == 7 and ds.config.seed == 3 and ds.config.yaw_deg == 30.0
    assert ds.config.distance_m == (1.0, 1.1)
    assert not ds.store.with_scans  # train skips scans unless asked
    assert ds.sample_ids()[:2] == ["train-000000", "train-000001"]
    with pytest.raises(ValueError, match="unknown synthetic dataset option"):
        SyntheticDataset(split="test", n_samples=3)
    with pytest.raises(ValueError, match="bad synthetic dataset option"):
        SyntheticDataset(split="test", n="many")
    with pytest.raises(ValueError, match="at least 1"):
        SyntheticDataset(split="test", n=0)
    with pytest.raises(ValueError, match="no split 'val'"):
        SyntheticDataset(split="val")
    with pytest.raises(KeyError, match="no sample"):
        ds.load_sample("test-000000")
    # the revision names parameters and size
    assert SyntheticDataset(split="test", n=5, cache_dir=tmp_path).revision() != \
        SyntheticDataset(split="test", n=5, seed=1, cache_dir=tmp_path).revision()


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bits_other_seed_other_face():
    cfg = SyntheticConfig()
    a = render_sample(cfg, "test", 4, with_scan=True)
    b = render_sample(cfg, "test", 4, with_scan=True)
    assert np.array_equal(a.image, b.image)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key]), key
    c = render_sample(SyntheticConfig(seed=1), "test", 4, with_scan=False)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.subject.id_coeffs, c.subject.id_coeffs)


def test_splits_share_no_subject():
    cfg = SyntheticConfig()
    assert split_code("test") != split_code("train")
    test = [make_subject(cfg, "test", i) for i in range(6)]
    train = [make_subject(cfg, "train", i) for i in range(6)]
    assert not {s.id for s in test} & {s.id for s in train}
    for s in test:
        for t in train:
            assert np.abs(s.id_coeffs - t.id_coeffs).max() > 0.5
    # consecutive samples share a subject; the next block has a new one
    assert make_subject(cfg, "test", 0) is make_subject(cfg, "test", 0)
    ds = SyntheticDataset(split="test", n=12)
    from benchmark.synthetic.config import subject_of

    assert [subject_of(ds.config, i) for i in range(11)] == [0] * 5 + [1] * 5 + [2]


# --------------------------------------------------------------------------- eye states


def test_eye_states_are_balanced_and_match_the_blinks():
    cfg = SyntheticConfig()
    model = assets().model
    by_state = {EYE_OPEN: [], EYE_CLOSED: [], EYE_UNKNOWN: []}
    cats = []
    for i in range(60):
        spec = make_spec(cfg, "test", i)
        subject = make_subject(cfg, "test", i // cfg.samples_per_subject)
        verts = gt_vertices(model, subject.id_coeffs, spec.exp_coeffs, subject.displacement)
        op = eye_openness(verts[model.landmark_ids])
        cats.append(spec.category)
        for e, state in enumerate(spec.eye_states):
            by_state[{"open": EYE_OPEN, "closed": EYE_CLOSED, "half": EYE_UNKNOWN}[state]].append(
                op[e])
        if spec.category == "wink_left":
            assert spec.eye_states == ("open", "closed")
    assert {c: cats.count(c) for c in CATEGORIES} == {c: 10 for c in CATEGORIES}
    closed, opened, half = (np.array(by_state[k]) for k in (EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN))
    assert closed.max() < DEFAULT_CLOSED_THRESHOLD < opened.min()
    assert closed.max() < 0.13 and opened.min() > 0.2
    assert closed.mean() < half.mean() < opened.mean()


def test_closed_eyes_look_closed_and_half_eyes_half_covered(samples):
    for s in samples:
        shown = np.array(s.meta["eyeball_visible_px"])
        iris = np.array(s.meta["iris_visible_px"])
        for e in range(2):
            cat = s.meta["eye_categories"][e]
            if cat == "closed":
                # the lid covers the eyeball: at most a hairline seam (rendered dark), no iris
                assert shown[e] < 25.0 and iris[e] < 5.0, (s.id, e, shown, iris)
            else:
                assert shown[e] > 15.0 and iris[e] > 5.0, (s.id, e, shown, iris)
    # the same face rendered open, half and closed: less and less eyeball shows
    cfg = SyntheticConfig()
    seen = {}
    for i in range(6):  # one subject, categories open, half, closed, ...
        r = render_sample(cfg, "test", i, with_scan=False)
        seen[r.meta["eye_category"]] = sum(r.meta["iris_visible_px"])
        if r.meta["eye_category"] == "closed":
            # what a closed eye's seam shows is dark, not sclera
            ys, xs = np.round(r.arrays["landmarks2d"][36:48]).astype(int).T
            assert r.image[ys, xs].mean() < 200
    assert seen["closed"] < 5 < 0.8 * seen["open"] and seen["half"] < seen["open"]


def test_labels_follow_the_categories(samples):
    cats = [s.meta["eye_category"] for s in samples]
    assert cats == list(CATEGORIES)
    for s in samples:
        states = list(s.meta["eye_categories"])
        expect = [{"open": EYE_OPEN, "closed": EYE_CLOSED, "half": EYE_UNKNOWN}[x]
                  for x in states]
        assert s.eye_state.tolist() == expect
        assert s.eye_state.dtype == np.int8 and s.eye_openness.dtype == np.float32
        if states == ["closed", "closed"]:
            assert s.image_state == EYE_CLOSED
        elif states == ["open", "open"]:
            assert s.image_state == EYE_OPEN
        else:
            assert s.image_state == EYE_UNKNOWN
        np.testing.assert_allclose(s.eye_openness, eye_openness(s.meta["landmarks3d"]),
                                   rtol=1e-5)


# --------------------------------------------------------------------------- sample content


def test_images_landmarks_and_camera_are_consistent(samples):
    for s in samples:
        img = s.load_image()
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8 and img.std() > 10
        lm = s.landmarks2d
        assert lm.shape == (68, 2) and lm.dtype == np.float32
        assert (lm > 0).all() and (lm < 224).all()
        cam = s.meta["camera"]
        assert cam["focal"] == pytest.approx(1015.0) and cam["cx"] == pytest.approx(112.0)
        assert 0.9 < cam["distance_m"] < 1.25
        # landmarks2d is the projection of the posed GT landmarks
        lmk = torch.from_numpy(s.gt_vertices[None])
        rot = torch.from_numpy(s.meta["rotation"])[None]
        tr = torch.from_numpy(s.meta["translation"])[None]
        uv = project(model_to_camera(lmk, rot, tr), PinholeCamera())[0].numpy()
        from methods.facemodel import load_ict

        np.testing.assert_allclose(uv[load_ict("full").landmark_ids], lm, atol=1e-3)
        # the face is in the middle, the corners are background
        assert abs(lm[:, 0].mean() - 112) < 30 and abs(lm[:, 1].mean() - 112) < 30
        assert len(s.meta["landmarks_visible"]) == 68
        assert all(s.meta["landmarks_visible"][i] for i in range(27, 36))  # the nose is seen


def test_gt_mesh_landmarks_and_scan(samples):
    from methods.facemodel import load_ict

    full = load_ict("full")
    for s in samples:
        assert s.gt_topology == "ict-full" and s.gt_vertices.shape == (full.n_vertices, 3)
        lmk = s.gt_vertices[full.landmark_ids]
        np.testing.assert_allclose(lmk, s.meta["landmarks3d"], atol=1e-7)
        scan = s.scan
        assert scan is not None and scan.cropped
        np.testing.assert_allclose(scan.landmarks7, lmk[list(NOW7_FROM_68)], atol=1e-7)
        assert scan.points.dtype == np.float32 and 3000 < len(scan.points) < 20000
        # cropped: every point is inside the NoW sphere, and the sphere cut something away
        assert now_crop_mask(scan.points, scan.landmarks7).all()
        assert not now_crop_mask(s.gt_vertices, scan.landmarks7).all()
        # resampled surface with noise: near the GT surface, not on its vertices
        from scipy.spatial import cKDTree

        d, _ = cKDTree(s.gt_vertices).query(scan.points)
        assert np.median(d) > 1e-5 and np.percentile(d, 99) < 4e-3


def test_neutral_plus_expression_weights_rebuild_the_gt_mesh(cache, samples):
    from methods.facemodel import load_ict

    full = load_ict("full")
    ds = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    basis = full.exp_basis.reshape(full.n_exp, -1).astype(np.float64)
    for s in samples:
        w = ds.expression_coeffs(s.id)
        assert w.shape == (full.n_exp,) and w.dtype == np.float32 and w.min() >= 0
        rebuilt = ds.neutral_vertices(s.id) + (w.astype(np.float64) @ basis).reshape(-1, 3)
        np.testing.assert_allclose(rebuilt, s.gt_vertices, atol=2e-6)
    with pytest.raises(KeyError):
        ds.expression_coeffs("test-999999")


def test_subject_detail_goes_beyond_fifty_modes():
    cfg = SyntheticConfig()
    s = make_subject(cfg, "test", 0)
    assert np.abs(s.id_coeffs[50:]).max() > 0.5  # modes a 50-mode fit cannot express
    mm = np.linalg.norm(s.displacement, axis=1) * 1000
    assert 0.5 < mm.max() <= cfg.detail_max_mm + 1e-3 and mm.mean() > 0.3


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_resumed_and_repaired(cache, caplog):
    ds = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    store = ds.store
    assert store.is_complete(N)
    first = ds.load_sample("test-000002")
    stamp = store.npz_path(2).stat().st_mtime_ns
    ds2 = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    ds2.load_sample("test-000002")
    assert store.npz_path(2).stat().st_mtime_ns == stamp  # not regenerated

    # damage a photo: detected, the sample (and its subject) regenerated bit-identically
    png = store.png_path(2)
    png.write_bytes(png.read_bytes()[:200])
    ds3 = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    with caplog.at_level("WARNING"):
        again = ds3.load_sample("test-000002")
    assert "damaged" in caplog.text
    assert np.array_equal(again.load_image(), first.load_image())
    np.testing.assert_array_equal(again.gt_vertices, first.gt_vertices)

    # an interrupted run (a missing sample, no manifest) resumes with just that sample
    store.discard(5)
    assert store.missing(N) == [5] and not store.is_complete(N)
    untouched = store.npz_path(0).stat().st_mtime_ns
    SyntheticDataset(split="test", n=N, workers=1, progress=False).prepare()
    assert store.missing(N) == [] and store.is_complete(N)
    assert store.npz_path(0).stat().st_mtime_ns == untouched


def test_growing_a_split_keeps_existing_samples(cache):
    small = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    bigger = SyntheticDataset(split="test", n=N + 1, workers=1, progress=False)
    assert small.store.root == bigger.store.root
    assert bigger.store.missing(N + 1) == [N]
    assert small.revision() != bigger.revision()


def test_parallel_workers_write_the_same_samples(cache, tmp_path):
    """The subprocess workers (2 of them) produce exactly what in-process generation does."""
    par = SyntheticDataset(split="test", n=10, workers=2, progress=False, cache_dir=tmp_path)
    par.prepare()
    assert par.store.is_complete(10) and par.store.missing(10) == []
    ref = SyntheticDataset(split="test", n=N, workers=1, progress=False)
    for i in (0, 3, 5):
        assert par.store.png_path(i).read_bytes() == ref.store.png_path(i).read_bytes()
        a, _ = par.store.read(i)
        b, _ = ref.store.read(i)
        np.testing.assert_array_equal(a["scan_points"], b["scan_points"])
