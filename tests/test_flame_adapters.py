"""FLAME, the safe pickle reader, and the DECA / MICA adapters on stand-in files.

The stand-ins have the official file structure (field names, key names, pickled chumpy
values, torch tensors inside the landmark embedding) at a small size; no official weights
or FLAME files exist here.
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from methods.flame import FlameData, FlameLayer, batch_rodrigues
from methods.safe_pickle import ChumpyStub, UnsafePickleError, as_array, load_restricted
from tests.upstream_standins import grid_faces

N_V, N_J = 200, 5


def _grid_mesh() -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.linspace(-0.08, 0.08, 20), np.linspace(-0.1, 0.1, 10))
    verts = np.stack([xs.ravel(), ys.ravel(), 0.02 * np.cos(xs.ravel() * 20)], 1)
    return verts.astype(np.float64), grid_faces(10, 20)


def _flame_fields(rng: np.random.Generator, jaw_lower_half: bool = True) -> dict:
    import scipy.sparse as sp

    verts, faces = _grid_mesh()
    weights = np.zeros((N_V, N_J))
    weights[:, 0] = 1.0
    if jaw_lower_half:
        lower = verts[:, 1] < 0
        weights[lower, 0], weights[lower, 2] = 0.0, 1.0
    jreg = np.zeros((N_J, N_V))
    for j in range(N_J):
        jreg[j, rng.choice(N_V, 4, replace=False)] = 0.25
    return {
        "v_template": verts,
        "shapedirs": rng.normal(scale=1e-3, size=(N_V, 3, 400)),
        "posedirs": rng.normal(scale=1e-4, size=(N_V, 3, 9 * (N_J - 1))),
        "J_regressor": sp.csc_matrix(jreg),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "f": faces.astype(np.uint32),
    }


def _embedding(faces: np.ndarray) -> dict:
    lmk_faces = np.arange(68) * 4 % len(faces)
    bary = np.tile([[0.2, 0.3, 0.5]], (68, 1))
    return {
        "static_lmk_faces_idx": lmk_faces[17:], "static_lmk_bary_coords": bary[17:],
        "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long),
        "dynamic_lmk_bary_coords": torch.zeros(79, 17, 3),
        "full_lmk_faces_idx": lmk_faces[None], "full_lmk_bary_coords": bary[None],
    }


@pytest.fixture()
def fake_chumpy(monkeypatch):
    """A module named chumpy.ch whose Ch pickles like chumpy's (state dict with 'x')."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch_mod.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    return Ch


@pytest.fixture()
def flame_files(tmp_path, fake_chumpy):
    """generic_model.pkl (chumpy shapedirs, sparse J_regressor) + landmark_embedding.npy."""
    fields = _flame_fields(np.random.default_rng(0))
    fields["shapedirs"] = fake_chumpy(fields["shapedirs"])
    with open(tmp_path / "generic_model.pkl", "wb") as fh:
        pickle.dump(fields, fh, protocol=2)
    np.save(tmp_path / "landmark_embedding.npy", _embedding(fields["f"]), allow_pickle=True)
    return tmp_path / "generic_model.pkl", tmp_path / "landmark_embedding.npy"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_pickle_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v": _Evil()}))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        load_restricted(path)


def test_restricted_pickle_reads_flame_structure(flame_files):
    model = load_restricted(flame_files[0])
    assert isinstance(model["shapedirs"], ChumpyStub)
    assert as_array(model["shapedirs"]).shape == (N_V, 3, 400)
    assert as_array(model["J_regressor"]).shape == (N_J, N_V)
    emb = load_restricted(flame_files[1])
    assert as_array(emb["dynamic_lmk_faces_idx"]).shape == (79, 17)


def test_flame_rest_pose_is_the_shaped_template(flame_files):
    data = FlameData.from_official(*flame_files)
    layer = FlameLayer(data, n_shape=10, n_exp=5)
    shape = torch.randn(2, 10, dtype=torch.float32)
    exp = torch.randn(2, 5)
    verts = layer(shape, exp)
    dirs = np.concatenate([data.shapedirs[:, :, :10], data.shapedirs[:, :, 300:305]], 2)
    expected = data.v_template + np.einsum("vkl,l->vk", dirs, np.r_[shape[0], exp[0]])
    np.testing.assert_allclose(verts[0].numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="expects 10 shape"):
        layer(torch.zeros(1, 9), torch.zeros(1, 5))


def test_flame_global_rotation_is_rigid_about_the_root_joint():
    rng = np.random.default_rng(1)
    fields = _flame_fields(rng, jaw_lower_half=False)
    emb = _embedding(fields["f"])
    data = FlameData(
        v_template=fields["v_template"].astype(np.float32),
        shapedirs=fields["shapedirs"].astype(np.float32),
        posedirs=np.zeros((36, 3 * N_V), np.float32),
        j_regressor=fields["J_regressor"].toarray().astype(np.float32),
        parents=np.array([-1, 0, 1, 1, 1]), weights=fields["weights"].astype(np.float32),
        faces=fields["f"].astype(np.int64), lmk_faces=emb["full_lmk_faces_idx"][0],
        lmk_bary=emb["full_lmk_bary_coords"][0].astype(np.float32))
    layer = FlameLayer(data, n_shape=0, n_exp=0)
    pose = torch.zeros(1, 15)
    pose[0, :3] = torch.tensor([0.1, 0.7, -0.2])
    out = layer(torch.zeros(1, 0), None, pose)[0].numpy()
    rot = batch_rodrigues(pose[:, :3])[0].numpy()
    j0 = data.j_regressor[0] @ data.v_template
    np.testing.assert_allclose(out, (data.v_template - j0) @ rot.T + j0, atol=1e-6)


def test_flame_jaw_moves_only_jaw_weighted_vertices(flame_files):
    data = FlameData.from_official(*flame_files)
    data.posedirs[:] = 0.0
    layer = FlameLayer(data, n_shape=0, n_exp=0)
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.3  # jaw opens about x
    out = layer(torch.zeros(1, 0), None, pose)[0].numpy()
    upper = data.v_template[:, 1] >= 0
    np.testing.assert_allclose(out[upper], data.v_template[upper], atol=1e-6)
    assert np.abs(out[~upper] - data.v_template[~upper]).max() > 1e-3


def test_flame_topology_places_68_barycentric_landmarks(flame_files):
    data = FlameData.from_official(*flame_files)
    topo = data.topology()
    lmk = topo.landmarks(data.v_template)
    tri = data.v_template[data.faces[data.lmk_faces]]
    np.testing.assert_allclose(lmk, np.einsum("lk,lkd->ld", data.lmk_bary, tri), atol=1e-6)


def test_flame_file_with_missing_field_is_named(tmp_path, fake_chumpy):
    fields = _flame_fields(np.random.default_rng(0))
    del fields["weights"]
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump(fields, fh, protocol=2)
    np.save(tmp_path / "e.npy", _embedding(fields["f"]), allow_pickle=True)
    with pytest.raises(ValueError, match="'weights'"):
        FlameData.from_official(tmp_path / "m.pkl", tmp_path / "e.npy")


@pytest.fixture()
def synthetic_sample():
    """One synthetic test image with a frontal-ish face (dlib finds it)."""
    from benchmark.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="test", n=6, workers=0, progress=False)
    return ds.load_sample(ds.sample_ids()[0])


def test_deca_adapter_on_stand_in_files(tmp_path, flame_files, synthetic_sample):
    from methods.deca import DECA, SPLIT
    from methods.nets.resnet import ResNet

    enc = ResNet(10, 8)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    head = torch.nn.Sequential(torch.nn.Linear(enc.feature_dim, 1024), torch.nn.ReLU(),
                               torch.nn.Linear(1024, sum(SPLIT.values())))
    torch.nn.init.zeros_(head[2].weight)
    with torch.no_grad():
        head[2].bias.zero_()
        head[2].bias[sum(list(SPLIT.values())[:4])] = 5.0  # cam scale
    state.update({f"layers.{k}": v for k, v in head.state_dict().items()})
    torch.save({"E_flame": state, "E_detail": {}, "D_detail": {}}, tmp_path / "deca_model.tar")
    method = DECA({"checkpoint": str(tmp_path / "deca_model.tar"), "flame": str(flame_files[0]),
                   "embedding": str(flame_files[1])})
    assert method.availability().ok
    method.ensure_loaded("cpu")
    pred = method.predict(synthetic_sample)
    assert pred.status == "ok", pred.error
    data = FlameData.from_official(*flame_files)
    np.testing.assert_allclose(pred.vertices, data.v_template, atol=1e-5)  # zero codes
    assert pred.topology.landmark_faces is not None
    assert np.isfinite(pred.landmarks2d).all() and pred.vertices_image.shape == (N_V, 3)


def test_mica_adapter_on_stand_in_checkpoint(tmp_path, flame_files, synthetic_sample):
    from methods.mica import MICA
    from methods.nets.iresnet import iresnet

    data = FlameData.from_official(*flame_files)
    flame_state = {
        "generator.v_template": torch.as_tensor(data.v_template),
        "generator.shapedirs": torch.as_tensor(data.shapedirs[:, :, :300]),
        "generator.posedirs": torch.as_tensor(data.posedirs),
        "generator.J_regressor": torch.as_tensor(data.j_regressor),
        "generator.parents": torch.as_tensor(data.parents),
        "generator.lbs_weights": torch.as_tensor(data.weights),
        "generator.faces_tensor": torch.as_tensor(data.faces),
        "generator.full_lmk_faces_idx": torch.as_tensor(data.lmk_faces)[None],
        "generator.full_lmk_bary_coords": torch.as_tensor(data.lmk_bary)[None],
    }
    dims = [512, 300, 300, 300, 300]
    for i in range(4):
        flame_state[f"regressor.network.{i}.weight"] = torch.randn(dims[i + 1], dims[i]) * 0.01
        flame_state[f"regressor.network.{i}.bias"] = torch.zeros(dims[i + 1])
    flame_state["regressor.output.weight"] = torch.randn(300, 300) * 0.01
    flame_state["regressor.output.bias"] = torch.zeros(300)
    arc = {k: (v.half() if v.is_floating_point() else v)
           for k, v in iresnet(18).state_dict().items()}
    torch.save({"arcface": arc, "flameModel": flame_state}, tmp_path / "mica.tar")
    method = MICA({"checkpoint": str(tmp_path / "mica.tar")})
    method.ensure_loaded("cpu")
    pred = method.predict(synthetic_sample)
    assert pred.status == "ok", pred.error
    assert pred.vertices.shape == (N_V, 3) and np.isfinite(pred.vertices).all()
    assert method.card.eyes_open_by_construction


def test_adapters_are_skipped_without_files(monkeypatch):
    from methods.deca import DECA
    from methods.mica import MICA

    for env in ("DECA_CHECKPOINT", "FLAME_MODEL", "DECA_LANDMARK_EMBEDDING", "MICA_CHECKPOINT"):
        monkeypatch.delenv(env, raising=False)
    assert "DECA_CHECKPOINT" in DECA().availability().fix
    assert "MICA_CHECKPOINT" in MICA().availability().fix


def test_arcface_crop_maps_five_points_onto_the_template():
    from methods.mica import arcface_crop
    from methods.nets.iresnet import ARCFACE_TEMPLATE

    image = np.zeros((200, 200, 3), np.uint8)
    five = np.asarray(ARCFACE_TEMPLATE) * 1.5 + [20, 10]
    for x, y in five.astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255
    crop = arcface_crop(image, five)
    for x, y in np.asarray(ARCFACE_TEMPLATE).round().astype(int):
        assert crop[y - 2:y + 3, x - 2:x + 3].max() > 100
