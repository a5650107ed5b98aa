"""Landmark providers: input normalisation, dlib's failure statuses, ground truth, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.types import FaceSample
from methods.landmarks import (
    CachedProvider,
    GroundTruthProvider,
    ImageError,
    LandmarkProvider,
    LandmarkResult,
    check_landmarks,
    read_image,
    to_rgb_uint8,
)


# -- input normalisation ------------------------------------------------------------------------
def test_grayscale_rgba_16bit_and_float_become_rgb_uint8():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_rgb_uint8(g)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], g)
    np.testing.assert_array_equal(out[..., 2], g)

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 0
    out = to_rgb_uint8(rgba)
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 200 and out[0, 1, 0] == 0  # composited over black

    u16 = np.array([[0, 65535, 32896]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(u16)[0, :, 0], [0, 255, 128])
    f = np.array([[0.0, 1.0, 2.0, -1.0]], np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(f)[0, :, 1], [0, 255, 255, 0])


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2)), np.zeros((0, 5, 3)), np.zeros(5),
                                 np.full((2, 2), np.nan)])
def test_bad_arrays_raise_image_error(bad):
    with pytest.raises(ImageError):
        to_rgb_uint8(bad)


def test_read_image_handles_modes_and_corrupt_files(tmp_path):
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "g.png")
    rgba = np.full((5, 6, 4), 90, np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(tmp_path / "d.png")
    assert read_image(tmp_path / "g.png").shape == (5, 6, 3)
    assert read_image(tmp_path / "a.png")[0, 0, 0] == 90
    assert read_image(tmp_path / "d.png")[0, 0, 0] == 255
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError):
        read_image(tmp_path / "trunc.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_check_landmarks_rejects_far_outside_and_nan():
    lm = np.tile(np.array([[50.0, 50.0]], np.float32), (68, 1))
    assert check_landmarks(lm, (100, 100, 3)) is None
    lm2 = lm.copy()
    lm2[:4] = -20  # a few slightly outside: fine
    assert check_landmarks(lm2, (100, 100, 3)) is None
    lm3 = lm.copy()
    lm3[36] = (500, 50)  # an eye point far outside
    assert "outside" in check_landmarks(lm3, (100, 100, 3))
    lm4 = lm.copy()
    lm4[0, 0] = np.nan
    assert "NaN" in check_landmarks(lm4, (100, 100, 3))
    assert "(68, 2)" in check_landmarks(lm[:5], (100, 100, 3))


# -- ground truth -------------------------------------------------------------------------------
def test_ground_truth_provider():
    lm = np.random.default_rng(0).uniform(20, 80, (68, 2)).astype(np.float32)
    s = FaceSample(id="a", subject="a", image=np.zeros((100, 100, 3), np.uint8), landmarks2d=lm)
    r = GroundTruthProvider().detect_sample(s)
    assert r.ok and r.n_faces == 1
    np.testing.assert_array_equal(r.landmarks, lm)
    s2 = FaceSample(id="b", subject="b", image=np.zeros((100, 100, 3), np.uint8))
    assert GroundTruthProvider().detect_sample(s2).status == "error"
    assert GroundTruthProvider().detect(np.zeros((10, 10, 3), np.uint8)).status == "error"
    lm_out = lm.copy()
    lm_out[36:48] += 1000
    s3 = FaceSample(id="c", subject="c", image=np.zeros((100, 100, 3), np.uint8),
                    landmarks2d=lm_out)
    r3 = GroundTruthProvider().detect_sample(s3)
    assert r3.status == "error" and "outside" in r3.error


# -- cache --------------------------------------------------------------------------------------
class CountingProvider(LandmarkProvider):
    """Returns fixed landmarks for bright images, no_face for dark ones, error for 1-px ones."""

    name = "counting"

    def __init__(self):
        self.calls = 0

    def identity(self):
        return "counting-1"

    def detect(self, image, box=None):
        self.calls += 1
        img = to_rgb_uint8(image)
        if img.shape[0] == 1:
            return LandmarkResult.failed("error", "too small")
        if img.mean() < 50:
            return LandmarkResult.failed("no_face", "dark")
        lm = np.full((68, 2), 3.0 + (box[0] if box else 0), np.float32)
        return LandmarkResult("ok", lm, (0.0, 0.0, 9.0, 9.0), 1.5, None, 1)


def test_cache_detects_once_per_image_and_box(tmp_path):
    inner = CountingProvider()
    p = CachedProvider(inner, root=tmp_path)
    bright = np.full((10, 10, 3), 200, np.uint8)
    r1 = p.detect(bright)
    r2 = p.detect(bright.copy())
    assert inner.calls == 1 and r2.ok and r2.score == 1.5 and r2.box == (0.0, 0.0, 9.0, 9.0)
    np.testing.assert_array_equal(r1.landmarks, r2.landmarks)
    r3 = p.detect(bright, box=(4, 4, 8, 8))
    assert inner.calls == 2 and r3.landmarks[0, 0] == 7.0
    # no_face is cached, errors are not
    dark = np.zeros((10, 10, 3), np.uint8)
    assert p.detect(dark).status == "no_face" and p.detect(dark).status == "no_face"
    assert inner.calls == 3
    tiny = np.full((1, 1, 3), 200, np.uint8)
    p.detect(tiny)
    p.detect(tiny)
    assert inner.calls == 5
    # a grayscale copy of the same pixels is the same image after normalisation
    p.detect(np.full((10, 10), 200, np.uint8))
    assert inner.calls == 5


def test_cache_recovers_from_a_damaged_entry_and_rejects_bad_input(tmp_path):
    inner = CountingProvider()
    p = CachedProvider(inner, root=tmp_path)
    bright = np.full((10, 10, 3), 200, np.uint8)
    p.detect(bright)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and "counting-1" in str(files[0])
    files[0].write_bytes(b"garbage")
    assert p.detect(bright).ok
    assert inner.calls == 2
    assert p.detect(np.zeros((3, 3, 2))).status == "error"


def test_cache_root_follows_environment(tmp_path, monkeypatch):
    from methods.landmarks import cache_root

    monkeypatch.setenv("EYEBENCH_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    p = CachedProvider(CountingProvider())
    p.detect(np.full((4, 4, 3), 200, np.uint8))
    assert list((tmp_path / "c" / "landmarks").rglob("*.npz"))


# -- dlib ---------------------------------------------------------------------------------------
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def synthetic_face():
    """A 224-px synthetic render (ICT, MIT; generated by benchmark.synthetic.scene) + its GT
    landmarks: sample 0 of the test split with yaw/pitch/roll limited to 10/5/5 degrees."""
    image = read_image(DATA / "synthetic_face_224.png")
    return image, np.load(DATA / "synthetic_face_224_landmarks.npy")


@pytest.fixture(scope="module")
def dlib_provider():
    from methods.landmarks import DlibProvider, dlib_available

    reason = dlib_available()
    if reason:
        pytest.skip(reason)
    return DlibProvider()


def test_dlib_blank_image_is_no_face_not_an_exception(dlib_provider):
    r = dlib_provider.detect(np.full((120, 120, 3), 128, np.uint8))
    assert r.status == "no_face" and r.landmarks is None and "no face" in r.error


def test_dlib_bad_inputs_give_statuses(dlib_provider, tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = dlib_provider.detect(tmp_path / "x.png")
    assert r.status == "error" and "x.png" in r.error
    assert dlib_provider.detect(np.zeros((5, 5, 7))).status == "error"
    r = dlib_provider.detect(np.full((100, 100, 3), 128, np.uint8), box=(10, 10, 20, 20))
    assert r.status == "no_face" and "too small" in r.error
    r = dlib_provider.detect(np.full((100, 100, 3), 128, np.uint8), box=(10, 10, 5, 5))
    assert r.status == "error" and "box" in r.error


def test_dlib_given_box_returns_68_points(dlib_provider):
    img = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    r = dlib_provider.detect(img, box=(40, 40, 160, 160))
    # any box gives a shape; it lies inside the box region (+-margin) and is (68, 2) float32
    assert r.status == "ok" and r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float32
    assert r.box == (40.0, 40.0, 161.0, 161.0)


def test_dlib_finds_a_face_in_a_rendered_synthetic_face(dlib_provider, synthetic_face):
    image, gt = synthetic_face
    r = dlib_provider.detect(image)
    assert r.ok, r.error
    iod = np.linalg.norm(gt[36:42].mean(0) - gt[42:48].mean(0))
    err = np.linalg.norm(r.landmarks - gt, axis=1).mean() / iod
    assert err < 0.15
    # RGBA and grayscale versions of the same photo work too
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert dlib_provider.detect(rgba).ok
    assert dlib_provider.detect(image.mean(axis=2).astype(np.uint8)).status in ("ok", "no_face")
