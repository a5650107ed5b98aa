"""The eye branch of the ELAM+LDL network (issue 16): each eye's blendshapes from its own crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from methods.elam_ldl.config import TrainConfig
from methods.elam_ldl.data import TrainingData, augment_batch, make_batch
from methods.elam_ldl.model import (
    EYE_SHAPES,
    NetSpec,
    ReconNet,
    export_state,
    eye_shape_indices,
    load_checkpoint,
)

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parent / "data"
SPEC = NetSpec(depth=10, width=8, input_size=32, n_id=10, eye_branch=True)
EYE_COLS = eye_shape_indices()


def _net(seed: int = 0) -> ReconNet:
    """A branch network with the detector's trunk and non-zero heads (so outputs move)."""
    torch.manual_seed(seed)
    net = ReconNet(SPEC)
    net.eye_branch.load_detector()
    torch.nn.init.normal_(net.eye_branch.head[2].weight, std=0.5)
    for layer in net.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.1)
    return net.eval()


def _photo_crops(name: str) -> np.ndarray:
    from methods.elam.eye_crops import cut_eye_crops
    from methods.landmarks import read_image

    img = read_image(DATA / f"{name}.png")
    lm = np.load(DATA / f"{name}_landmarks.npy")
    return cut_eye_crops(img, lm)


def test_the_branch_drives_every_per_eye_ict_blendshape_of_its_eye():
    from methods.facemodel.ict import load_ict

    names = load_ict("narrow").exp_names
    for e, side in enumerate("RL"):  # eye 0 = landmarks 36-41 = the subject's right eye
        assert [names[i] for i in EYE_COLS[e]] == [f"{n}_{side}" for n in EYE_SHAPES]
    assert {n for n in names if n.startswith("eye")} == {names[i] for i in EYE_COLS.ravel()}


def test_an_untrained_branch_leaves_the_eyes_neutral():
    torch.manual_seed(0)
    net = ReconNet(SPEC)
    net.eye_branch.load_detector()
    c = net.coefficients(torch.rand(3, 3, 32, 32), torch.rand(3, 2, 32, 32))
    assert torch.count_nonzero(c.exp[:, EYE_COLS.ravel()]) == 0


def test_each_eye_is_read_from_its_own_crop_only():
    net = _net()
    images, eyes = torch.rand(2, 3, 32, 32), torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        base = net.coefficients(images, eyes).exp
        other_face = net.coefficients(torch.rand(2, 3, 32, 32), eyes).exp
        winked = eyes.clone()
        winked[:, 1] = torch.rand(2, 32, 32)
        wink = net.coefficients(images, winked).exp
    face_cols = [i for i in range(base.shape[1]) if i not in set(EYE_COLS.ravel().tolist())]
    assert (other_face[:, face_cols] - base[:, face_cols]).abs().max() > 1e-4  # face head moves
    torch.testing.assert_close(other_face[:, EYE_COLS.ravel()], base[:, EYE_COLS.ravel()])
    torch.testing.assert_close(wink[:, EYE_COLS[0]], base[:, EYE_COLS[0]])
    assert (wink[:, EYE_COLS[1]] - base[:, EYE_COLS[1]]).abs().max() > 1e-4


def test_the_encoder_is_the_shipped_eye_state_detector():
    from methods.elam.eye_detector import EyeStateDetector

    net = _net()
    crops = np.concatenate([_photo_crops("synthetic_face_224"),
                            _photo_crops("synthetic_face_closed_224")])
    branch = net.eye_branch
    with torch.no_grad():
        logit = branch.encoder.logit(branch.encoder.pooled(torch.from_numpy(crops)[:, None]))
    np.testing.assert_allclose(torch.sigmoid(logit).numpy(),
                               EyeStateDetector().predict_crops(crops), atol=1e-5)


def test_training_moves_the_head_and_never_the_frozen_encoder():
    net = _net().train()
    assert not net.eye_branch.encoder.training  # batch-norm statistics stay the detector's
    before = {k: v.clone() for k, v in net.eye_branch.state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        c = net.coefficients(torch.rand(4, 3, 32, 32), torch.rand(4, 2, 32, 32))
        loss = (c.exp[:, EYE_COLS.ravel()] - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.eye_branch.state_dict()
    for k, v in before.items():
        if k.startswith("encoder."):
            torch.testing.assert_close(after[k], v, msg=k)
    assert (after["head.2.weight"] - before["head.2.weight"]).abs().max() > 1e-4


def test_missing_eye_crops_are_a_clear_error():
    with pytest.raises(ValueError, match="eye crops"):
        _net()(torch.rand(1, 3, 32, 32))


def test_a_flipped_face_swaps_its_eye_crops():
    n, s = 16, 32
    eyes = np.zeros((n, 2, 32, 32), np.float16)
    eyes[:, 0], eyes[:, 1] = 0.25, 0.75  # eye 0 dark, eye 1 bright
    data = TrainingData(images=np.zeros((n, s, s, 3), np.uint8), valid=np.ones((n, s, s), bool),
                        landmarks=np.full((n, 68, 2), 16.0, np.float32),
                        p_closed=np.tile([[0.9, 0.1]], (n, 1)).astype(np.float32),
                        source=np.zeros(n, np.int8), dev=np.zeros(n, bool),
                        eye_label=-np.ones((n, 2), np.int8), ids=np.array([str(i) for i in
                                                                          range(n)]),
                        counts={}, key="x", eye_crops=eyes)
    out = augment_batch(make_batch(data, np.arange(n)), TrainConfig(), seed=1)
    flipped = out.p_closed[:, 0] < 0.5
    assert 0 < int(flipped.sum()) < n
    first = out.eye_crops[:, 0].mean(dim=(1, 2))
    np.testing.assert_allclose(first.numpy(), np.where(flipped.numpy(), 0.75, 0.25))


def test_eye_swaps_are_refused_with_the_branch():
    with pytest.raises(ValueError, match="eye_branch"):
        TrainConfig(aug_eye_swap=0.3).validate()
    TrainConfig(aug_eye_swap=0.3, eye_branch=False).validate()


def test_the_branch_survives_the_float16_checkpoint(tmp_path):
    net = _net()
    path = tmp_path / "net.pt"
    torch.save(export_state(net, {}, {}), path)
    loaded, _ = load_checkpoint(path)
    assert loaded.spec.eye_branch
    images, eyes = torch.rand(2, 3, 32, 32), torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        a = net.coefficients(images, eyes).exp[:, EYE_COLS.ravel()]
        b = loaded.coefficients(images, eyes).exp[:, EYE_COLS.ravel()]
    torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


def test_ablation_speed_measurement_feeds_the_eye_branch(tmp_path, monkeypatch):
    """The ablation's speed figures run the network as the method does (eye crops too)."""
    import benchmark.datasets.synthetic as synthetic
    from methods.elam_ldl.ablate import measure_speed
    from methods.landmarks import dlib_available, read_image

    if dlib_available():
        pytest.skip(dlib_available())

    class TwoPhotos:
        def __init__(self, **kwargs):
            pass

        def sample_ids(self):
            return ["synthetic_face_224", "synthetic_face_closed_224"]

        def load_sample(self, name):
            class Sample:
                def load_image(self, name=name):
                    return read_image(DATA / f"{name}.png")
            return Sample()

    monkeypatch.setattr(synthetic, "SyntheticDataset", TwoPhotos)
    path = tmp_path / "net.pt"
    torch.save(export_state(_net(), {}, {}), path)
    out = measure_speed(path, n_images=2, batch=2, repeats=1)
    assert out["detected"] == 2 and out["end_to_end_images_per_second"] > 0
