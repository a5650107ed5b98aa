"""The eye-crop rule, the eye-state CNN and its weights file, and a tiny training run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.elam.cli import add_subcommand
from methods.elam.eye_crops import ENLARGE, cut_eye_crops, eye_boxes
from methods.elam.eye_detector import (
    DEFAULT_WEIGHTS,
    EyeStateDetector,
    EyeStateNet,
    WeightsMissingError,
    load_checkpoint,
)
from methods.elam.train_eye_detector import (
    CONTEXT,
    CropSet,
    TrainConfig,
    _balanced_weights,
    augment,
    center_crop,
    evaluate_sets,
    fit_network,
    save_checkpoint,
)


def eye_landmarks(c0=(60.0, 50.0), c1=(140.0, 50.0), w=30.0, h=10.0) -> np.ndarray:
    lm = np.zeros((68, 2), np.float32)
    lm[:] = (100, 120)
    for start, (cx, cy) in ((36, c0), (42, c1)):
        lm[start + 0] = (cx - w / 2, cy)          # corner
        lm[start + 1] = (cx - w / 6, cy - h / 2)  # upper
        lm[start + 2] = (cx + w / 6, cy - h / 2)
        lm[start + 3] = (cx + w / 2, cy)          # corner
        lm[start + 4] = (cx + w / 6, cy + h / 2)  # lower
        lm[start + 5] = (cx - w / 6, cy + h / 2)
    return lm


def test_eye_boxes_follow_the_rule():
    boxes = eye_boxes(eye_landmarks())
    np.testing.assert_allclose(boxes[0], (60, 50, 30 * ENLARGE))
    np.testing.assert_allclose(boxes[1], (140, 50, 30 * ENLARGE))
    with pytest.raises(ValueError):
        eye_boxes(np.full((68, 2), np.nan))


def test_crops_are_centred_and_eye1_is_mirrored():
    img = np.full((100, 200, 3), 255, np.uint8)
    img[45:55, 50:60] = 0  # dark block left of eye 0's centre (outer side, image-left)
    img[45:55, 140:150] = 0  # dark block right of eye 1's centre (its outer side)
    crops = cut_eye_crops(img, eye_landmarks())
    assert crops.shape == (2, 32, 32) and crops.dtype == np.float32
    assert 0.0 <= crops.min() and crops.max() <= 1.0
    # both blocks land left of centre after mirroring eye 1: one canonical orientation
    for c in crops:
        assert c[16, 11:15].mean() < 0.1 and c[16, 18:26].mean() > 0.9
    np.testing.assert_allclose(crops[0], crops[1], atol=0.02)


def test_crops_outside_the_image_repeat_its_border():
    img = np.zeros((50, 50, 3), np.uint8)
    img[:, -1] = 255
    lm = eye_landmarks(c0=(45.0, 25.0), c1=(400.0, -300.0))
    crops = cut_eye_crops(img, lm)
    assert crops.shape == (2, 32, 32) and np.isfinite(crops).all()
    assert crops[0][:, -1].mean() > 0.9  # right of the image: the white last column repeats


def test_context_crop_centre_equals_plain_crop():
    rng = np.random.default_rng(0)
    img = (rng.uniform(size=(120, 200, 3)) * 255).astype(np.uint8)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, (2, 2, 0))
    plain = cut_eye_crops(img, eye_landmarks())
    ctx = cut_eye_crops(img, eye_landmarks(), context=CONTEXT)
    assert ctx.shape == (2, 48, 48)
    np.testing.assert_allclose(center_crop(torch.tensor(ctx)).numpy(), plain, atol=0.03)


def test_network_shapes_and_photometric_invariance():
    torch.manual_seed(0)
    net = EyeStateNet().eval()
    x = torch.rand(4, 1, 32, 32) * 0.5 + 0.2
    out = net(x)
    assert out.shape == (4,)
    np.testing.assert_allclose(net(0.5 * x + 0.1).detach(), out.detach(), atol=1e-4)
    assert sum(p.numel() for p in net.parameters()) < 250_000


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(WeightsMissingError) as exc:
        EyeStateDetector(missing)
    assert "none.pt" in str(exc.value) and "train-eye-detector" in str(exc.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an eyebench"):
        load_checkpoint(tmp_path / "other.pt")


class _Evil:
    pass


def test_checkpoints_load_with_weights_only(tmp_path):
    torch.save({"format": "eyebench-eye-detector", "state_dict": {}, "x": _Evil()},
               tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(tmp_path / "evil.pt")


def _toy_crop(rng: np.random.Generator, closed: bool, size: int = 48) -> np.ndarray:
    """An open eye (dark iris disc in a bright almond) or a closed one (a dark lid line)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2 + rng.normal(0, 1.0, 2)
    img = np.full((size, size), 0.6 + rng.normal(0, 0.05), np.float32)
    if closed:
        img -= 0.4 * np.exp(-((yy - c[0] - 0.1 * (xx - c[1]) ** 2 / 8) ** 2) / 2.0) * \
            (np.abs(xx - c[1]) < 9)
    else:
        almond = ((xx - c[1]) / 9) ** 2 + ((yy - c[0]) / 4.5) ** 2 < 1
        img[almond] = 0.9
        img -= 0.7 * (((xx - c[1]) ** 2 + (yy - c[0]) ** 2) < 12)
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _toy_set(n: int, seed: int, name: str) -> CropSet:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int8)
    crops = np.stack([_toy_crop(rng, bool(lab)) for lab in labels])
    return CropSet(name, crops, labels, (np.arange(n) // 2 % 2).astype(np.int8))


def test_training_learns_open_versus_closed_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    train = _toy_set(160, 0, "toy-train")
    test = _toy_set(80, 1, "toy-test")
    cfg = TrainConfig(epochs=4, batch_size=32, samples_per_epoch=640, width=8, seed=0)
    net, history = fit_network([train], cfg)
    scores = evaluate_sets(net, [test])["toy-test"]
    assert scores["all"]["accuracy"] > 0.9, scores
    assert set(scores) == {"all", "eye0", "eye1"}
    path = save_checkpoint(net, tmp_path / "toy.pt", cfg, {"trained_on": ["toy"], "seed": 0})
    det = EyeStateDetector(path)
    assert det.meta["trained_on"] == ["toy"]
    p = det.predict_crops(center_crop(torch.tensor(test.crops[:6]).float()[:, None] / 255))
    assert p.shape == (6,) and ((p > 0.5) == test.labels[:6].astype(bool)).mean() >= 5 / 6
    # a face-sized image and landmarks go through the crop rule
    img = np.full((100, 200, 3), 128, np.uint8)
    out = det.predict(img, eye_landmarks())
    assert out.shape == (2,) and ((0 <= out) & (out <= 1)).all()


def test_augmentation_is_seeded_and_keeps_range():
    x = torch.rand(6, 1, 48, 48)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == (6, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4)))


def test_balanced_sampling_weights():
    s1 = CropSet("a", np.zeros((10, 4, 4), np.uint8), np.array([1] * 2 + [0] * 8, np.int8),
                 np.zeros(10, np.int8))
    s2 = CropSet("b", np.zeros((4, 4, 4), np.uint8), np.array([0] * 4, np.int8),
                 np.zeros(4, np.int8))
    w = _balanced_weights([s1, s2])
    np.testing.assert_allclose([w[:2].sum(), w[2:10].sum(), w[10:].sum()], [0.25, 0.25, 0.5])


def test_cli_subcommand_registers_with_examples():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    p = add_subcommand(sub)
    assert "examples:" in p.epilog and "train-eye-detector" in p.epilog
    args = parser.parse_args(["train-eye-detector", "--sources", "synthetic", "--epochs", "2"])
    assert args.sources == "synthetic" and args.epochs == 2 and callable(args.func)


def test_shipped_weights_are_small_and_load_safely():
    path = Path(DEFAULT_WEIGHTS)
    if not path.is_file():
        pytest.fail(f"the shipped eye-state weights {path} are missing")
    assert path.stat().st_size < 1_000_000
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "eyebench-eye-detector"
    assert ckpt["meta"]["trained_on"] and ckpt["meta"]["command"]
    det = EyeStateDetector(path)
    assert det.crop_size == 32 and det.enlarge == ENLARGE
    assert (path.parent / "README.md").is_file()


def test_shipped_detector_on_rendered_open_and_closed_faces():
    """The shipped weights tell the two committed synthetic renders apart (GT landmarks)."""
    from methods.landmarks import read_image

    data = Path(__file__).resolve().parent / "data"
    det = EyeStateDetector()
    p_open = det.predict(read_image(data / "synthetic_face_224.png"),
                         np.load(data / "synthetic_face_224_landmarks.npy"))
    p_closed = det.predict(read_image(data / "synthetic_face_closed_224.png"),
                           np.load(data / "synthetic_face_closed_224_landmarks.npy"))
    assert (p_open < 0.5).all(), p_open
    assert (p_closed > 0.5).all(), p_closed


def test_context_swap_keeps_the_eye_and_takes_the_context_of_another_group():
    from methods.elam.train_eye_detector import eye_region_weight, swap_context

    s = 48
    x = torch.zeros(4, 1, s, s)
    x[0], x[1], x[2], x[3] = 0.2, 0.2, 0.8, 0.8  # groups 0, 0, 1, 1 (flat contexts)
    x[:, :, 22:26, 20:28] += torch.tensor([0.1, 0.15, 0.05, 0.12])[:, None, None, None]  # eyes
    group = torch.tensor([0, 0, 1, 1])
    out = swap_context(x, group, torch.Generator().manual_seed(0), 1.0)
    w = eye_region_weight(s)
    assert w[24, 24] > 0.99 and w[0, 0] < 1e-3
    for i in range(4):
        other = 0.8 if i < 2 else 0.2
        assert abs(float(out[i, 0, 0, 0]) - other) < 1e-5  # the context is the other group's
        # the eye keeps its contrast over the (new) skin
        eye_step = float(x[i, 0, 24, 24] - x[i, 0, 10, 24])
        assert abs(float(out[i, 0, 24, 24] - out[i, 0, 10, 24]) - eye_step) < 0.02
    same = swap_context(x, torch.zeros(4, dtype=torch.long), torch.Generator(), 1.0)
    torch.testing.assert_close(same, x)  # no donor of another group: unchanged


def test_occluders_cover_the_eye_and_label_it_open():
    from methods.elam.train_eye_detector import occlude

    x = torch.rand(16, 1, 48, 48)
    y = torch.ones(16)
    out, lab = occlude(x, y, torch.Generator().manual_seed(1), 1.0)
    assert (lab == 0).all() and (y == 1).all()
    centre = out[:, 0, 20:28, 16:32]
    assert float(centre.std(dim=(1, 2)).max()) < 0.02  # flat over the eye
    torch.testing.assert_close(out[:, :, :3, :3], x[:, :, :3, :3], atol=0.01, rtol=0)  # corners
    none, lab0 = occlude(x, y, torch.Generator(), 0.0)
    assert none is x and (lab0 == 1).all()
