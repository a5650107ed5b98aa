"""ELAM+LDL training: every loss's gradient, exact resume, checkpoints, augmentation, iResNet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.elam_ldl.config import TrainConfig
from methods.elam_ldl.data import FLIP_68, TrainingData, augment_batch, batch_indices, make_batch
from methods.elam_ldl.model import FaceDecoder, ReconNet, export_state, load_checkpoint
from methods.elam_ldl.train import net_spec, step_losses, train

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parent / "data"
SIZE = 32


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    """A 32-px, ResNet-10 width-8 run on the in-memory data below."""
    base = dict(depth=10, width=8, input_size=SIZE, n_id=10, batch_size=4, steps=4,
                warmup_steps=1, checkpoint_every=2, dev_every=0, output_dir=str(tmp_path / "run"),
                sources=("synthetic",), lr=1e-3)
    base.update(kw)
    return TrainConfig.preset("elam-ldl", **base)


@pytest.fixture(scope="module")
def tiny_data() -> TrainingData:
    """Six aligned crops of the two shipped synthetic renders (open, closed), one dev row."""
    from methods.elam.eye_crops import cut_eye_crops
    from methods.elam_ldl.align import fit_similarity, five_points, template_points, warp_image
    from methods.landmarks import read_image

    rows = {k: [] for k in ("images", "valid", "landmarks", "eye_crops")}
    tpl = template_points(SIZE, 0.9)
    for name in ("synthetic_face_224", "synthetic_face_closed_224") * 3:
        img = read_image(DATA / f"{name}.png")
        lm = np.load(DATA / f"{name}_landmarks.npy").astype(np.float32)
        tr = fit_similarity(five_points(lm), tpl)
        crop, valid = warp_image(img, tr, SIZE)
        rows["images"].append(crop)
        rows["valid"].append(valid)
        rows["landmarks"].append(tr.apply(lm))
        rows["eye_crops"].append(cut_eye_crops(img, lm).astype(np.float16))
    n = len(rows["images"])
    return TrainingData(
        images=np.stack(rows["images"]), valid=np.stack(rows["valid"]),
        landmarks=np.stack(rows["landmarks"]),
        p_closed=np.array([[0.02, 0.03], [0.97, 0.96]] * 3, np.float32),
        source=np.zeros(n, np.int8), dev=np.array([False] * 5 + [True]),
        eye_label=np.array([[-1, -1]] * 5 + [[1, 1]], np.int8),
        ids=np.array([f"t:{i}" for i in range(n)]), counts={"test": {"kept": n}}, key="tiny",
        eye_crops=np.stack(rows["eye_crops"]),
    )


def test_every_loss_reaches_the_network(tiny_data, tmp_path):
    from methods.elam_ldl.identity import iresnet

    weights = tmp_path / "arc.pt"
    torch.save(iresnet(18).state_dict(), weights)
    cfg = tiny_config(tmp_path, identity_weights=str(weights))
    spec = net_spec(cfg)
    torch.manual_seed(0)
    net, dec = ReconNet(spec), FaceDecoder(spec, backend="torch")
    for layer in net.final_layers:  # leave the all-zero start so gradients reach the backbone
        torch.nn.init.normal_(layer.weight, std=1e-2)
    from methods.elam_ldl.identity import IdentityLoss

    ident = IdentityLoss(weights)
    batch = make_batch(tiny_data, np.arange(4))
    for term in ("photo", "lm", "ldl", "reg", "gamma", "reflc", "feat"):
        net.zero_grad()
        terms = step_losses(net, dec, batch, cfg, ident)
        assert float(terms[term].detach()) > 0, term
        terms[term].backward()
        head = sum(float(p.grad.abs().sum()) for p in net.final_layers.parameters())
        body = sum(float(p.grad.abs().sum()) for p in net.backbone.parameters()
                   if p.grad is not None)
        assert head > 0 and body > 0, term


def test_ldl_and_elam_switch_their_terms(tiny_data, tmp_path):
    spec = net_spec(tiny_config(tmp_path))
    net, dec = ReconNet(spec), FaceDecoder(spec, backend="torch")
    batch = make_batch(tiny_data, np.arange(4))
    with torch.no_grad():
        base = step_losses(net, dec, batch, tiny_config(tmp_path, use_ldl=False, use_elam=False))
        elam = step_losses(net, dec, batch, tiny_config(tmp_path, use_ldl=False, use_elam=True))
        ldl = step_losses(net, dec, batch, tiny_config(tmp_path, use_ldl=True, use_elam=False))
    assert float(base["ldl"]) == 0.0 and float(ldl["ldl"]) > 0
    # ELAM changes the landmark targets of the closed rows only (P ~ 0.97 there)
    assert float(elam["lm"]) != pytest.approx(float(base["lm"]))
    assert float(base["photo"]) == pytest.approx(float(elam["photo"]))


def test_resume_restores_exactly_the_same_state(tiny_data, tmp_path):
    full = train(tiny_config(tmp_path / "a"), progress=False, data=tiny_data)
    cfg_b = tiny_config(tmp_path / "b", steps=2)
    train(cfg_b, progress=False, data=tiny_data)
    resumed = train(dataclasses.replace(cfg_b, steps=4), progress=False, data=tiny_data)
    assert resumed.steps == 4
    sa = torch.load(full.checkpoint, weights_only=True)
    sb = torch.load(resumed.checkpoint, weights_only=True)
    assert sa["step"] == sb["step"] == 4
    for k, v in sa["net"].items():
        assert torch.equal(v, sb["net"][k]), k
    assert (tmp_path / "b" / "run" / "log.jsonl").is_file()
    # a different configuration refuses to resume in the same folder
    with pytest.raises(ValueError, match="other settings"):
        train(dataclasses.replace(cfg_b, steps=6, lr=0.5), progress=False, data=tiny_data)
    # and the dev row was measured
    assert resumed.dev["synthetic"]["n"] == 1


def test_checkpoint_round_trip_weights_only(tiny_data, tmp_path):
    res = train(tiny_config(tmp_path, steps=2, export=str(tmp_path / "small.pt")),
                progress=False, data=tiny_data)
    small = tmp_path / "small.pt"
    assert small in res.export and small.is_file()
    raw = torch.load(small, weights_only=True)
    assert raw["format"] == "eyebench-elam-ldl"
    assert all(v.dtype == (torch.float32 if k.startswith("landmark_id.norm.") else torch.float16)
               for k, v in raw["state_dict"].items() if v.is_floating_point())
    net, info = load_checkpoint(small)
    assert info["meta"]["steps"] == 2 and info["config"]["use_ldl"] is True
    assert net.spec == net_spec(tiny_config(tmp_path))
    # float16 export vs the float32 training weights: same coefficients to fp16 precision
    ref = ReconNet(net.spec)
    ref.load_state_dict(torch.load(res.checkpoint, weights_only=True)["net"])
    b = make_batch(tiny_data, np.arange(2))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(b.images, b.eye_crops, b.landmarks),
                                   ref.eval()(b.images, b.eye_crops, b.landmarks),
                                   atol=2e-2, rtol=2e-2)
    exported = export_state(ref, {}, {}, half=False)
    assert exported["state_dict"]["final_layers.0.weight"].dtype == torch.float32
    bad = tmp_path / "bad.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(ValueError, match="not an eyebench ELAM"):
        load_checkpoint(bad)


def test_batches_are_seeded_epoch_permutations():
    rows = np.arange(10) * 3
    first = np.concatenate([batch_indices(rows, s, 4, seed=1) for s in range(5)])
    assert sorted(first[:10].tolist()) == rows.tolist()  # one epoch = every row once
    again = batch_indices(rows, 3, 4, seed=1)
    assert np.array_equal(again, first[12:16])
    assert not np.array_equal(batch_indices(rows, 0, 4, seed=2), first[:4])


def test_augmentation_moves_landmarks_with_the_image(tmp_path):
    """A bright blob drawn at landmark 36 stays under landmark 36 (or 45 after a flip)."""
    s = 64
    img = np.zeros((s, s, 3), np.uint8)
    p = np.array([20.0, 24.0])
    img[22:26, 18:22] = 255  # centred on (20, 24) in continuous pixel coordinates
    lm = np.tile(np.array([[40.0, 40.0]], np.float32), (68, 1))
    lm[36] = p
    data = TrainingData(images=img[None].repeat(8, 0), valid=np.ones((8, s, s), bool),
                        landmarks=lm[None].repeat(8, 0), p_closed=np.tile([[0.9, 0.1]], (8, 1))
                        .astype(np.float32), source=np.zeros(8, np.int8),
                        dev=np.zeros(8, bool), eye_label=-np.ones((8, 2), np.int8),
                        ids=np.array([str(i) for i in range(8)]), counts={}, key="x")
    cfg = TrainConfig(aug_rot_deg=15.0, aug_scale=0.15, aug_shift=0.08, aug_colour=0.0)
    out = augment_batch(make_batch(data, np.arange(8)), cfg, seed=3)
    flipped = 0
    for b in range(8):
        w = out.images[b, 0].numpy()
        ys, xs = np.nonzero(w > 0.3)
        centre = np.array([(xs * w[ys, xs]).sum(), (ys * w[ys, xs]).sum()]) / w[ys, xs].sum()
        centre += 0.5
        k = 36 if np.linalg.norm(out.landmarks[b, 36].numpy() - centre) < 1.0 else 45
        assert np.linalg.norm(out.landmarks[b, k].numpy() - centre) < 1.0
        if k == 45:
            flipped += 1
            assert out.p_closed[b].tolist() == pytest.approx([0.1, 0.9])
    assert 0 < flipped < 8
    assert sorted(FLIP_68.tolist()) == list(range(68))
    assert np.array_equal(FLIP_68[FLIP_68], np.arange(68))


def test_identity_network_loads_an_official_layout_state_dict(tmp_path):
    from methods.elam_ldl.identity import IdentityLoss, iresnet, load_iresnet, warp_to_arcface

    ref = iresnet(18).eval()
    for m in ref.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    state = ref.state_dict()
    for key in ("conv1.weight", "prelu.weight", "layer1.0.bn1.running_var",
                "layer1.0.prelu.weight", "layer1.0.downsample.0.weight", "layer4.1.bn3.bias",
                "bn2.weight", "fc.weight", "features.running_mean"):
        assert key in state, key
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v
                for k, v in state.items()}, path)
    net = load_iresnet(path)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=5e-2, rtol=5e-2)
    # a photo against itself costs nothing
    ident = IdentityLoss(path)
    img = torch.rand(1, 64, 64, 3)
    lm = torch.from_numpy(np.load(DATA / "synthetic_face_224_landmarks.npy"))[None] * (64 / 224)
    assert warp_to_arcface(img, lm).shape == (1, 3, 112, 112)
    assert float(ident(img, img, torch.ones(1, 64, 64), lm)) == pytest.approx(0.0, abs=1e-5)
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an ArcFace"):
        load_iresnet(bad)


def test_prepare_data_from_a_photo_folder(tmp_path, monkeypatch):
    """dlib + eye-state detector + crop for a user folder; no-face photos are counted."""
    import shutil

    from methods.elam_ldl.data import prepare_data
    from methods.landmarks import dlib_available

    if dlib_available():
        pytest.skip(dlib_available())
    monkeypatch.setenv("EYEBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos" / "sub"
    folder.mkdir(parents=True)
    for name in ("synthetic_face_224", "synthetic_face_closed_224"):
        shutil.copy(DATA / f"{name}.png", folder / f"{name}.png")
    from PIL import Image

    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(folder / "blank.png")
    cfg = TrainConfig(sources=(), folders=(str(tmp_path / "photos"),), input_size=SIZE)
    data = prepare_data(cfg, 0.9, progress=False)
    assert data.counts["folder"] == {"photos": 3, "no_face": 1, "error": 0, "kept": 2}
    assert data.images.shape == (2, SIZE, SIZE, 3) and data.landmarks.shape == (2, 68, 2)
    assert not data.dev.any() and (data.eye_label == -1).all()
    # the closed render gets the higher P(closed) from the shipped detector
    assert data.p_closed[1].mean() > data.p_closed[0].mean()
    cached = list((tmp_path / "cache" / "elam_ldl" / "data").glob("*.npz"))
    assert len(cached) == 1
    again = prepare_data(cfg, 0.9, progress=False)
    assert np.array_equal(again.images, data.images) and again.key == data.key


def test_training_batches_are_seeded_and_swapped_eyes_carry_their_targets(tiny_data, tmp_path):
    from methods.elam.rule import pair_distances
    from methods.elam_ldl.losses import landmark_targets
    from methods.elam_ldl.train import training_batch

    cfg = tiny_config(tmp_path, aug_eye_swap=1.0, aug_flip=False, aug_rot_deg=0.0,
                      aug_scale=0.0, aug_shift=0.0)
    a, b = training_batch(tiny_data, 3, cfg), training_batch(tiny_data, 3, cfg)
    torch.testing.assert_close(a.images, b.images)
    torch.testing.assert_close(a.landmarks, b.landmarks)
    # every eye swapped for one of the other state: P flips, and ELAM's targets follow the
    # new P (a closed-P eye gets a closed target gap, an open-P eye keeps an open one)
    before = tiny_data.p_closed[a.index] > 0.5
    assert ((a.p_closed.numpy() > 0.5) != before).all()
    gaps = pair_distances(landmark_targets(a.landmarks, a.p_closed, cfg)).mean(-1)
    closed = a.p_closed > 0.5
    assert float(gaps[closed].max()) < 0.15 * float(gaps[~closed].min()) + 1e-3


def test_a_landmark_identity_network_trains_resumes_and_exports(tiny_data, tmp_path):
    """The branch gets the batch's detected landmarks in training and at the dev measure."""
    cfg = tiny_config(tmp_path, steps=4, dev_every=2,
                      export=str(tmp_path / "lm.pt"))
    res = train(cfg, progress=False, data=tiny_data)
    state = torch.load(res.checkpoint, weights_only=True)["net"]
    assert float(state["landmark_id.head.2.weight"].abs().sum()) > 0  # it learnt something
    assert not torch.allclose(state["landmark_id.norm.running_mean"],
                              torch.zeros_like(state["landmark_id.norm.running_mean"]))
    net, _ = load_checkpoint(tmp_path / "lm.pt")
    assert net.spec.landmark_id and res.dev["synthetic"]["n"] == 1
    b = make_batch(tiny_data, np.arange(2))
    with pytest.raises(ValueError, match="landmarks"):
        net(b.images, b.eye_crops)
