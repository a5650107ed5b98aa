"""The Deep3D adapter on stand-in files with the official structure (no official weights here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.deep3d import Deep3D, align_crop, five_points, pos_fit
from methods.nets.resnet import ResNet, backbone_spec


def test_pos_recovers_scale_and_translation():
    rng = np.random.default_rng(0)
    p3 = rng.normal(size=(5, 3))
    p2 = 2.5 * p3[:, :2] + np.array([10.0, -4.0])
    t, s = pos_fit(p2, p3)
    assert s == pytest.approx(2.5) and np.allclose(t, [10.0, -4.0])


def test_backbone_spec_reads_depth_and_width():
    assert backbone_spec(ResNet(50, 16).state_dict()) == (50, 16)
    assert backbone_spec(ResNet(18, 64).state_dict()) == (18, 64)
    bad = {k: v for k, v in ResNet(18, 8).state_dict().items() if not k.startswith("layer4.1")}
    with pytest.raises(ValueError, match="not a ResNet"):
        backbone_spec(bad)


@pytest.fixture()
def deep3d_files(tmp_path):
    """A stand-in BFM_model_front.mat built from the ICT face (decimetres, 1-based ids), a
    similarity_Lm3D_all.mat and an epoch_20.pth with the official key names (tiny ResNet)."""
    from scipy.io import savemat

    from methods.facemodel import load_ict

    ict = load_ict("narrow")
    n = ict.n_vertices
    dm = 10.0  # metres -> decimetres
    rng = np.random.default_rng(0)
    savemat(tmp_path / "BFM_model_front.mat", {
        "meanshape": (ict.mean * dm).reshape(1, -1),
        "idBase": (ict.id_basis[:80] * dm).reshape(80, -1).T,
        "exBase": (np.concatenate([ict.exp_basis, ict.exp_basis[:11]]) * dm).reshape(64, -1).T,
        "meantex": np.full((1, 3 * n), 150.0),
        "texBase": rng.normal(size=(3 * n, 80)),
        "tri": (ict.faces + 1).astype(np.float64),
        "keypoints": (ict.landmark_ids + 1).reshape(1, 68).astype(np.float64),
    })
    savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": ict.mean[ict.landmark_ids] * dm})
    net = ResNet(18, 8)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    for i, size in enumerate((80, 64, 80, 3, 27, 2, 1)):
        state[f"final_layers.{i}.weight"] = torch.zeros(size, net.feature_dim, 1, 1)
        state[f"final_layers.{i}.bias"] = torch.zeros(size)
    torch.save({"net_recon": state, "opt_00": {"state": {}}}, tmp_path / "epoch_20.pth")
    return {"checkpoint": str(tmp_path / "epoch_20.pth"),
            "bfm": str(tmp_path / "BFM_model_front.mat"),
            "lm3d": str(tmp_path / "similarity_Lm3D_all.mat")}


def test_deep3d_is_skipped_without_files(monkeypatch):
    for env in ("DEEP3D_CHECKPOINT", "DEEP3D_BFM", "DEEP3D_LM3D"):
        monkeypatch.delenv(env, raising=False)
    av = Deep3D().availability()
    assert not av.ok and "DEEP3D_CHECKPOINT" in av.fix


def test_deep3d_runs_on_stand_in_files(deep3d_files):
    from benchmark.datasets.synthetic import SyntheticDataset

    method = Deep3D(deep3d_files)
    assert method.availability().ok
    method.ensure_loaded("cpu")
    ds = SyntheticDataset(split="test", n=6, workers=0, progress=False)
    sample = ds.load_sample(ds.sample_ids()[0])
    pred = method.predict(sample)
    assert pred.status == "ok", pred.error
    # zero heads: the mean shape, in metres, on the BFM stand-in's topology
    assert np.allclose(pred.vertices.mean(axis=0), 0.0, atol=1e-4)  # recentred like Deep3D
    assert 0.1 < np.ptp(pred.vertices[:, 0]) < 0.3
    assert pred.topology.faces.shape[0] > 10000
    # the landmark overlay lands on the detected face, not somewhere else in the image
    assert pred.landmarks2d.shape == (68, 2)
    assert np.all((pred.landmarks2d > -50) & (pred.landmarks2d < 274))


def test_align_crop_centres_the_face():
    from methods.facemodel import load_ict

    ict = load_ict("narrow")
    lm3d = five_points(ict.mean[ict.landmark_ids] * 10)
    image = np.zeros((300, 400, 3), np.uint8)
    lm68 = ict.mean[ict.landmark_ids][:, :2] * np.array([1500.0, -1500.0]) + [250, 160]
    crop, params = align_crop(image, lm68, lm3d)
    assert crop.shape == (224, 224, 3)
    # the eye midpoint maps into the upper middle of the crop, as in Deep3D's examples
    mid = five_points(lm68)[:2].mean(axis=0)
    x, y = (mid[0] * params["scale"] - params["left"]), (mid[1] * params["scale"] - params["up"])
    assert 80 < x < 144 and 60 < y < 130
