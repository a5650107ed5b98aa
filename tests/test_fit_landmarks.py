"""The landmark-fitting baseline: recovery on projected ICT faces, ELAM's effect, statuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.types import EYE_CLOSED, EYE_OPEN, FaceSample
from methods.facemodel import load_ict
from methods.fit_landmarks import (
    FitConfig,
    FitLandmarks,
    FitLandmarksElam,
    LandmarkFitter,
    _project_batch,
    camera_for_image,
)
from methods.render.camera import euler_to_matrix, model_to_camera, project
from metrics.eyes import DEFAULT_CLOSED_THRESHOLD, eye_openness

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_ict("narrow")


def make_faces(model, blinks, seed=0, noise_px=0.5, size=224):
    """Projected landmarks of random ICT faces with given (right, left) blink weights."""
    rng = np.random.default_rng(seed)
    b = len(blinks)
    ids = rng.normal(size=(b, 60)).astype(np.float32) * 0.8
    exps = np.zeros((b, model.n_exp), np.float32)
    bl = [model.exp_index("eyeBlink_R"), model.exp_index("eyeBlink_L")]
    exps[:, bl] = np.asarray(blinks, np.float32)
    ang = np.radians(rng.uniform(-1, 1, (b, 3)) * [10, 25, 8]).astype(np.float32)
    t = np.stack([rng.uniform(-0.01, 0.01, b), rng.uniform(-0.01, 0.01, b),
                  rng.uniform(0.95, 1.1, b)], 1).astype(np.float32)
    verts = np.stack([model.vertices(ids[i], exps[i]) for i in range(b)])
    cam = camera_for_image(size, size)
    pts = model_to_camera(torch.tensor(verts[:, model.landmark_ids]),
                          euler_to_matrix(torch.tensor(ang)), torch.tensor(t))
    q = project(pts, cam).numpy()
    q += rng.normal(size=q.shape).astype(np.float32) * noise_px
    return q.astype(np.float32), verts, ang


def openness(model, verts):
    return eye_openness(verts[..., model.landmark_ids, :])


def test_projection_helper_matches_the_camera_module():
    cam = camera_for_image(300, 200)
    assert cam.focal == pytest.approx(1015 * 300 / 224) and cam.center == (150.0, 100.0)
    pts = torch.rand(2, 5, 3) + torch.tensor([0.0, 0.0, 1.0])
    want = project(pts, cam)
    got = _project_batch(pts, torch.full((2,), cam.focal), torch.tensor([cam.center] * 2))
    torch.testing.assert_close(got, want)


def test_fit_recovers_pose_landmarks_and_eye_state(model):
    blinks = [(0, 0), (1, 1), (1, 0), (0, 1)]
    q, verts, ang = make_faces(model, blinks)
    fitter = LandmarkFitter(model, FitConfig())
    res = fitter.fit(q, [(224, 224)] * len(q))
    assert (res.rmse_px.numpy() < 1.5).all(), res.rmse_px
    assert np.degrees(np.abs(res.angles.numpy() - ang)).max() < 4.0
    v, vimg = fitter.vertices(res)
    assert v.shape == (4, model.n_vertices, 3) and v.dtype == np.float32
    assert vimg.shape == (4, model.n_vertices, 3) and (vimg[..., 2] > 0.5).all()
    np.testing.assert_allclose(vimg[:, model.landmark_ids, :2], res.landmarks2d.numpy(), atol=1e-3)
    pred = openness(model, v) < DEFAULT_CLOSED_THRESHOLD
    want = np.asarray(blinks) == 1
    np.testing.assert_array_equal(pred, want)
    assert ((res.exp_coeffs >= 0) & (res.exp_coeffs <= 1)).all()


def test_elam_premise_open_landmarks_on_a_closed_eye(model):
    """Detectors keep closed lids open: fitting those lids gives open eyes; ELAM closes them."""
    from methods.elam.rule import elam_adjust

    q, _, _ = make_faces(model, [(0, 0)] * 3, seed=3)  # lids detected open
    fitter = LandmarkFitter(model, FitConfig())
    raw = openness(model, fitter.vertices(fitter.fit(q, [(224, 224)] * 3))[0])
    assert (raw > DEFAULT_CLOSED_THRESHOLD).all()
    adj = elam_adjust(q, np.array([[0.95, 0.05]] * 3))  # the detector says: eye 0 is closed
    fixed = openness(model, fitter.vertices(fitter.fit(adj, [(224, 224)] * 3))[0])
    assert (fixed[:, 0] < DEFAULT_CLOSED_THRESHOLD).all()
    assert (fixed[:, 1] > DEFAULT_CLOSED_THRESHOLD).all()


def test_fit_rejects_bad_targets(model):
    fitter = LandmarkFitter(model, FitConfig(steps=5, pose_steps=2))
    with pytest.raises(ValueError):
        fitter.fit(np.zeros((2, 60, 2)), [(10, 10)] * 2)
    with pytest.raises(ValueError):
        fitter.fit(np.full((1, 68, 2), np.nan), [(10, 10)])
    with pytest.raises(ValueError):
        LandmarkFitter(model, FitConfig(n_id=500))


def _sample(model, sid, blink=(0, 0), image=None, seed=0):
    q, _, _ = make_faces(model, [blink], seed=seed)
    img = np.full((224, 224, 3), 90, np.uint8) if image is None else image
    return FaceSample(id=sid, subject=sid, image=img, landmarks2d=q[0],
                      eye_state=np.array([EYE_CLOSED if b else EYE_OPEN for b in blink], np.int8))


def test_method_with_ground_truth_landmarks_returns_a_full_prediction(model):
    from methods.topology import get_topology

    m = FitLandmarks({"landmarks": "gt"})
    m.ensure_loaded("cpu")
    samples = [_sample(model, "a", (1, 1)), _sample(model, "b", (0, 0), seed=1)]
    preds = m.predict_safe(samples)
    assert [p.status for p in preds] == ["ok", "ok"]
    p = preds[0]
    assert p.vertices.shape == (model.n_vertices, 3) and p.vertices.dtype == np.float32
    assert p.topology is get_topology("ict-narrow")
    assert p.landmarks2d.shape == (68, 2) and p.vertices_image.shape == (model.n_vertices, 3)
    assert p.eye_prob_closed is None and p.extras["rmse_px"] < 2.0
    assert "seconds" in p.extras
    op = eye_openness(p.topology.landmarks(p.vertices))
    assert (op < DEFAULT_CLOSED_THRESHOLD).all()
    assert (eye_openness(preds[1].topology.landmarks(preds[1].vertices)) > 0.18).all()


def test_method_failures_are_statuses_and_the_batch_goes_on(model):
    m = FitLandmarks({"landmarks": "gt"})
    m.ensure_loaded("cpu")

    def broken():
        raise ValueError("cannot read image 'x.jpg': truncated")

    good = _sample(model, "good")
    bad_img = FaceSample(id="bad", subject="bad", image=broken)
    no_lm = FaceSample(id="nolm", subject="nolm", image=np.zeros((50, 50), np.uint8))
    far = _sample(model, "far")
    far.landmarks2d = far.landmarks2d + 5000
    preds = m.predict_safe([good, bad_img, no_lm, far])
    assert [p.status for p in preds] == ["ok", "error", "error", "error"]
    assert "truncated" in preds[1].error and "outside" in preds[3].error


def test_dlib_on_a_blank_photo_is_no_face():
    from methods.landmarks import dlib_available

    if dlib_available():
        pytest.skip(dlib_available())
    m = FitLandmarks({"cache": "false"})
    m.ensure_loaded("cpu")
    p = m.predict(FaceSample(id="x", subject="x", image=np.full((150, 150, 4), 200, np.uint8)))
    assert p.status == "no_face" and p.vertices is None


def test_elam_method_needs_its_weights(tmp_path):
    from methods.elam.eye_detector import WeightsMissingError

    m = FitLandmarksElam({"eye_detector": str(tmp_path / "missing.pt")})
    av = m.availability()
    assert not av.ok and "missing.pt" in av.reason and "train-eye-detector" in av.fix
    with pytest.raises(WeightsMissingError):
        m.ensure_loaded("cpu")
    with pytest.raises(ValueError, match="elam_variant"):
        FitLandmarksElam({"elam_variant": "nope", "landmarks": "gt"}).ensure_loaded("cpu")


def test_elam_method_adjusts_with_detector_output(model, tmp_path, monkeypatch):
    """With a detector that always says 'closed', the ELAM entry closes both eyes."""
    import methods.elam.eye_detector as ed

    class AlwaysClosed:
        def __init__(self, *a, **k):
            pass

        def predict(self, image, landmarks):
            return np.array([0.97, 0.97], np.float32)

    monkeypatch.setattr(ed, "EyeStateDetector", AlwaysClosed)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    m = FitLandmarksElam({"landmarks": "gt", "eye_detector": str(weights)})
    m.ensure_loaded("cpu")
    p = m.predict(_sample(model, "o", (0, 0), seed=5))
    assert p.status == "ok"
    np.testing.assert_allclose(p.eye_prob_closed, [0.97, 0.97])
    assert p.extras["elam_variant"] == "soft"
    assert (eye_openness(p.topology.landmarks(p.vertices)) < DEFAULT_CLOSED_THRESHOLD).all()
    assert m.revision() != FitLandmarksElam({"landmarks": "gt", "eye_detector": str(weights),
                                             "elam_variant": "hard"}).revision()


def test_batched_fit_is_fast_enough(model):
    import time

    q, _, _ = make_faces(model, [(0, 0)] * 8, seed=7)
    fitter = LandmarkFitter(model)
    fitter.fit(q[:1], [(224, 224)])  # warm-up (first optimiser use imports torch internals)
    t0 = time.perf_counter()
    fitter.fit(q, [(224, 224)] * 8)
    per_image = (time.perf_counter() - t0) / 8
    assert per_image < 0.5, per_image


def test_a_fit_does_not_depend_on_its_batch(model):
    """Per-image parameters and Adam state: fitting 8 images at once gives each the numbers
    of fitting them 3 + 5, to float32 rounding (a matrix product may round a row differently
    for another number of rows), which lets the method take large batches by default."""
    q, _, _ = make_faces(model, [(0, 0), (1, 1), (0, 1), (0.5, 0)] * 2, seed=3)
    fitter = LandmarkFitter(model, FitConfig(pose_steps=10, steps=40))
    whole = fitter.fit(q, [(224, 224)] * 8)
    parts = [fitter.fit(q[:3], [(224, 224)] * 3), fitter.fit(q[3:], [(224, 224)] * 5)]
    for name in ("id_coeffs", "exp_coeffs", "angles", "translation", "landmarks2d"):
        joined = torch.cat([getattr(p, name) for p in parts])
        torch.testing.assert_close(getattr(whole, name), joined, rtol=1e-5, atol=1e-5)
    assert FitLandmarks.card.batch_size == FitLandmarksElam.card.batch_size == 64
    assert FitLandmarks({}).samples_per_call() == 64
    assert FitLandmarks({}).samples_per_call(5) == 5


def test_dlib_path_end_to_end_on_a_rendered_face(model):
    """Real detector -> fit on the shipped synthetic renders (open and closed eyes)."""
    from pathlib import Path

    from methods.landmarks import dlib_available, read_image

    if dlib_available():
        pytest.skip(dlib_available())
    data = Path(__file__).resolve().parent / "data"
    samples = []
    for name, state in (("synthetic_face_224", EYE_OPEN),
                        ("synthetic_face_closed_224", EYE_CLOSED)):
        samples.append(FaceSample(id=name, subject=name, image=read_image(data / f"{name}.png"),
                                  landmarks2d=np.load(data / f"{name}_landmarks.npy"),
                                  eye_state=np.array([state, state], np.int8)))
    m = FitLandmarks({"cache": "false"})
    m.ensure_loaded("cpu")
    preds = m.predict_batch(samples)
    assert [p.status for p in preds] == ["ok", "ok"]
    for s, p in zip(samples, preds):
        iod = np.linalg.norm(s.landmarks2d[36] - s.landmarks2d[45])
        assert np.linalg.norm(p.landmarks2d - s.landmarks2d, axis=1).mean() / iod < 0.08
    # the open face is fitted open
    assert (eye_openness(preds[0].topology.landmarks(preds[0].vertices)) > 0.18).all()
