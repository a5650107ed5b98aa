"""The landmark identity branch of the ELAM+LDL network (issue 16, shape)."""

from __future__ import annotations

import pytest
import torch

from methods.elam_ldl.model import (
    LANDMARK_ID_POINTS,
    LandmarkIdentity,
    NetSpec,
    ReconNet,
    export_state,
    load_checkpoint,
)

torch.set_num_threads(1)
SPEC = NetSpec(depth=10, width=8, input_size=32, n_id=10, landmark_id=True)


def _landmarks(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 16 + 6 * torch.randn(b, 68, 2, generator=g)


def test_the_branch_reads_proportions_not_size_place_or_expression_points():
    lm = _landmarks(3)
    pts = torch.tensor(LANDMARK_ID_POINTS)
    base = LandmarkIdentity.geometry(lm, pts)
    moved = LandmarkIdentity.geometry(2.5 * lm + torch.tensor([7.0, -3.0]), pts)
    assert torch.allclose(base, moved, atol=1e-5)
    closed = lm.clone()
    closed[:, [37, 38, 40, 41, 43, 44, 46, 47]] += 4.0  # eyelids
    closed[:, 60:68] -= 3.0  # inner mouth
    assert torch.equal(LandmarkIdentity.geometry(closed, pts), base)
    jaw = lm.clone()
    jaw[:, 8, 1] += 3.0  # a longer chin changes the reading
    assert not torch.allclose(LandmarkIdentity.geometry(jaw, pts), base)


def test_an_untrained_branch_changes_nothing_and_a_trained_one_only_the_identity():
    torch.manual_seed(0)
    net = ReconNet(SPEC)
    for layer in net.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.1)
    plain = ReconNet(NetSpec(depth=10, width=8, input_size=32, n_id=10))
    plain.load_state_dict({k: v for k, v in net.state_dict().items()
                           if not k.startswith("landmark_id.")})
    net.eval(), plain.eval()
    images, lm = torch.rand(4, 3, 32, 32), _landmarks(4)
    with torch.no_grad():
        assert torch.allclose(net(images, landmarks=lm), plain(images), atol=1e-6)
        torch.nn.init.normal_(net.landmark_id.head[2].weight, std=0.5)
        a = net.coefficients(images, landmarks=lm)
        b = net.coefficients(images, landmarks=_landmarks(4, seed=1))
    assert not torch.allclose(a.id, b.id)
    for name in ("exp", "albedo", "angles", "gamma", "trans"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_a_branch_network_refuses_to_run_without_landmarks():
    with pytest.raises(ValueError, match="landmarks"):
        ReconNet(SPEC).eval()(torch.rand(1, 3, 32, 32))


def test_the_standardisation_learns_in_training_and_survives_export(tmp_path):
    torch.manual_seed(0)
    net = ReconNet(SPEC)
    torch.nn.init.normal_(net.landmark_id.head[2].weight, std=0.5)
    net.train()
    for s in range(20):
        net(torch.rand(8, 3, 32, 32), landmarks=_landmarks(8, seed=s))
    var = net.landmark_id.norm.running_var
    assert not torch.allclose(var, torch.ones_like(var))  # statistics moved off their init
    ckpt = export_state(net.eval(), {}, {})
    assert ckpt["state_dict"]["landmark_id.norm.running_var"].dtype == torch.float32
    assert ckpt["state_dict"]["landmark_id.head.0.weight"].dtype == torch.float16
    path = tmp_path / "lm.pt"
    torch.save(ckpt, path)
    loaded, _ = load_checkpoint(path)
    images, lm = torch.rand(2, 3, 32, 32), _landmarks(2, seed=99)
    with torch.no_grad():
        a, b = net.coefficients(images, landmarks=lm).id, loaded.coefficients(
            images, landmarks=lm).id
    assert loaded.spec.landmark_id
    assert float((a - b).abs().max()) < 1e-2  # float16 weights, float32 statistics
