"""Face models: ICT regions and landmark tables, Deep3D's BFM reader on a stand-in file, and
the one-sentence errors for bad model files and coefficients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.types import NOW7_FROM_68
from methods.facemodel import MorphableModelLayer, load_ict
from methods.facemodel.bfm import load_bfm, read_bfm
from methods.facemodel.regions import (
    EYELID_PAIRS,
    LIP_PAIRS,
    REGION_NAMES,
    boundary_loops,
    face_regions,
    landmark_tables,
)
from methods.topology import get_topology

# --------------------------------------------------------------------------- ICT regions


def test_ict_regions_are_attached_and_sensible():
    full = load_ict("full")
    regions = full.regions
    assert set(REGION_NAMES) <= set(regions)
    for name, mask in regions.items():
        assert mask.dtype == bool and mask.shape == (full.n_vertices,), name
        assert mask.sum() > 20, name
    v = full.mean
    # eye 0 is the subject's right eye: -x in the model frame.
    assert v[regions["eye_right"], 0].max() < 0 < v[regions["eye_left"], 0].min()
    assert not (regions["eye_right"] & regions["eye_left"]).any()
    for a, b in [("brows", "lips"), ("brows", "eyes"), ("lips", "eyes"), ("skin", "lips"),
                 ("skin", "brows"), ("skin", "eyelid_margin")]:
        assert not (regions[a] & regions[b]).any(), (a, b)
    assert not (regions["skin"] & ~regions["face"]).any()
    assert not (regions["eyelid_margin_upper"] & ~regions["eyelid_margin"]).any()
    lmk = full.landmark_ids
    assert regions["eyes"][lmk[36:48]].all()
    assert regions["lips"][lmk[[50, 51, 52, 57, 58]]].all()
    assert regions["nose"][lmk[[30, 33]]].all()
    assert regions["face"][lmk[[30, 33, 8 - 1, 27]]].all()
    # brows sit above the eyes, lips below the nose.
    assert v[regions["brows"], 1].min() > v[lmk[36:48], 1].max()
    assert v[regions["lips"], 1].max() < v[lmk[33], 1]
    # the ICT eye holes are found: the upper margin is above the eye corners.
    assert v[regions["eyelid_margin_upper"], 1].mean() > v[lmk[[36, 39, 42, 45]], 1].mean()


def test_regions_survive_restriction_and_reach_topology():
    narrow = load_ict("narrow")
    full = load_ict("full")
    for name in REGION_NAMES:
        np.testing.assert_array_equal(narrow.regions[name], full.regions[name][:6706])
    topo = get_topology("ict-narrow")
    assert set(REGION_NAMES) <= set(topo.regions)


def test_ict_boundary_loops_are_eyes_mouth_and_outline():
    full = load_ict("full")
    loops = boundary_loops(full.faces)
    assert sorted(len(lp) for lp in loops) == [42, 42, 74, 204]


def test_landmark_tables_follow_the_68_ids():
    ids = load_ict().landmark_ids
    t = landmark_tables(ids)
    np.testing.assert_array_equal(t.now7, ids[list(NOW7_FROM_68)])
    assert t.eyelid_pairs.shape == (2, 2, 2)
    assert t.eyelid_pairs[0, 0, 0] == ids[37] and t.eyelid_pairs[0, 0, 1] == ids[41]
    assert t.eyelid_pairs[1, 1, 0] == ids[44] and t.eyelid_pairs[1, 1, 1] == ids[46]
    np.testing.assert_array_equal(t.lip_pairs, ids[np.asarray(LIP_PAIRS)])
    assert EYELID_PAIRS == (((37, 41), (38, 40)), ((43, 47), (44, 46)))
    with pytest.raises(ValueError, match="68 vertex ids"):
        landmark_tables(ids[:60])


def test_regions_need_no_eye_holes():
    """A closed surface (a dense grid, like BFM's) still gets every region, margin included."""
    full = load_ict("full")
    v = full.mean[full.landmark_ids]
    xs, ys = np.meshgrid(np.linspace(-0.08, 0.08, 81), np.linspace(-0.08, 0.1, 91))
    grid = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 0.1)], 1)
    nx = xs.shape[1]
    quads = np.array([[r * nx + c, r * nx + c + 1, (r + 1) * nx + c + 1, (r + 1) * nx + c]
                      for r in range(xs.shape[0] - 1) for c in range(nx - 1)])
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    lmk_ids = np.argmin(((grid[None, :, :2] - v[:, None, :2]) ** 2).sum(-1), axis=1)
    regions = face_regions(grid, faces, lmk_ids)
    assert regions["eyelid_margin"].sum() > 10
    assert regions["face"].sum() > regions["skin"].sum() > 100


# --------------------------------------------------------------------------- BFM reader

N_V, N_ID, N_EXP, N_TEX = 120, 80, 64, 80


def _bfm_fields(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A small stand-in with the official field names, shapes (N scaled down) and 1-based ids."""
    verts = rng.normal(size=(N_V, 3)) + np.array([0.3, -0.2, 0.5])  # decimetres, off-centre
    tri = np.stack([rng.permutation(N_V)[:3] for _ in range(200)])
    point_buf = rng.integers(1, 201, size=(N_V, 8))
    return {
        "meanshape": verts.reshape(1, -1).astype(np.float32),
        "idBase": rng.normal(size=(3 * N_V, N_ID)).astype(np.float32) * 0.01,
        "exBase": rng.normal(size=(3 * N_V, N_EXP)).astype(np.float32) * 0.01,
        "meantex": rng.uniform(50, 200, size=(1, 3 * N_V)).astype(np.float32),
        "texBase": rng.normal(size=(3 * N_V, N_TEX)).astype(np.float32),
        "tri": (tri + 1).astype(np.float64),  # Deep3D stores doubles
        "point_buf": point_buf.astype(np.float64),
        "tri_mask2": (tri[:50] + 1).astype(np.float64),
        "keypoints": (rng.permutation(N_V)[:68] + 1).reshape(1, 68).astype(np.float64),
        "frontmask2_idx": (np.arange(0, N_V, 2) + 1).reshape(-1, 1).astype(np.float64),
        "skinmask": (np.arange(N_V) % 3 == 0).reshape(1, -1).astype(np.float64),
    }


@pytest.fixture
def bfm_file(tmp_path):
    """A tiny BFM_model_front.mat stand-in and the fields written into it."""
    from scipy.io import savemat

    fields = _bfm_fields(np.random.default_rng(0))
    path = tmp_path / "BFM_model_front.mat"
    savemat(path, fields)
    return path, fields


def test_bfm_reader_converts_units_ids_and_layout(bfm_file):
    path, f = bfm_file
    bfm = read_bfm(path)
    m = bfm.model
    assert m.name == "bfm-front" and m.n_vertices == N_V
    assert m.n_id == N_ID and m.n_exp == N_EXP
    mean_dm = f["meanshape"].reshape(N_V, 3).astype(np.float64)
    np.testing.assert_allclose(m.mean, (mean_dm - mean_dm.mean(0)) * 0.1, atol=1e-6)
    np.testing.assert_allclose(m.id_basis[7], f["idBase"][:, 7].reshape(N_V, 3) * 0.1, atol=1e-7)
    np.testing.assert_allclose(m.exp_basis[63], f["exBase"][:, 63].reshape(N_V, 3) * 0.1,
                               atol=1e-7)
    np.testing.assert_array_equal(m.faces, f["tri"].astype(np.int64) - 1)
    np.testing.assert_array_equal(m.landmark_ids, f["keypoints"].ravel().astype(np.int64) - 1)
    assert m.faces.dtype == np.int64 and m.mean.dtype == np.float32
    np.testing.assert_array_equal(m.regions["skin"], np.arange(N_V) % 3 == 0)
    np.testing.assert_array_equal(np.flatnonzero(m.regions["front"]), np.arange(0, N_V, 2))
    assert bfm.texture is not None and bfm.texture.n_tex == N_TEX
    np.testing.assert_allclose(bfm.texture.mean, f["meantex"].reshape(N_V, 3) / 255, atol=1e-6)
    assert bfm.point_buf.min() == 0 and bfm.front_faces.shape == (50, 3)
    # no recentring keeps Deep3D's raw frame
    raw = load_bfm(path, recenter=False)
    np.testing.assert_allclose(raw.mean, mean_dm * 0.1, atol=1e-6)
    # the shared torch layer runs it with Deep3D's coefficient sizes
    layer = MorphableModelLayer(m)
    out = layer(torch.zeros(2, N_ID), torch.zeros(2, N_EXP))
    assert out.shape == (2, N_V, 3)
    torch.testing.assert_close(out[0], torch.from_numpy(m.mean))
    alpha = torch.randn(1, N_ID)
    ref = m.vertices(alpha[0].numpy())
    torch.testing.assert_close(layer(alpha, torch.zeros(1, N_EXP))[0], torch.from_numpy(ref),
                               atol=1e-6, rtol=1e-5)


def test_bfm_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_bfm(tmp_path / "nope.mat")


def test_bfm_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 3)
    with pytest.raises(ValueError, match="broken.mat.*corrupt"):
        load_bfm(path)


@pytest.mark.parametrize("drop", ["meanshape", "idBase", "exBase", "tri", "keypoints"])
def test_bfm_missing_field_names_it(tmp_path, drop):
    from scipy.io import savemat

    fields = _bfm_fields(np.random.default_rng(1))
    del fields[drop]
    savemat(tmp_path / "m.mat", fields)
    with pytest.raises(ValueError, match=f"lacks the field '{drop}'"):
        load_bfm(tmp_path / "m.mat")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("idBase", np.zeros((3 * N_V - 3, N_ID)), "field 'idBase' has shape"),
        ("exBase", np.zeros((5,)), "field 'exBase' has shape"),
        ("tri", np.zeros((10, 4)), "field 'tri' has shape"),
        ("tri", np.zeros((10, 3)), "field 'tri' holds ids outside"),  # 0-based by mistake
        ("keypoints", np.ones((1, 51)), "field 'keypoints' has 51 ids"),
        ("meanshape", np.zeros((1, 3 * N_V + 1)), "field 'meanshape' must hold 3N"),
        ("skinmask", np.ones((1, 7)), "field 'skinmask' has 7 values"),
    ],
)
def test_bfm_wrong_field_shape_names_it(tmp_path, field, value, match):
    from scipy.io import savemat

    fields = _bfm_fields(np.random.default_rng(2))
    fields[field] = value
    savemat(tmp_path / "m.mat", fields)
    with pytest.raises(ValueError, match=match):
        load_bfm(tmp_path / "m.mat")


# --------------------------------------------------------------------------- ICT bad input


def test_ict_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_ict(path=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="bad.npz.*corrupt"):
        load_ict(path=bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, face_mean=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="lacks the field 'face_id_basis'"):
        load_ict(path=wrong)


def test_wrong_coefficient_sizes_raise_one_sentence():
    model = load_ict("narrow")
    layer = MorphableModelLayer(model, n_id=50, n_exp=53)
    with pytest.raises(ValueError, match=r"id_coeffs must be \(B, 50\)"):
        layer(torch.zeros(2, 49), torch.zeros(2, 53))
    with pytest.raises(ValueError, match=r"exp_coeffs must be \(B, 53\)"):
        layer(torch.zeros(2, 50), torch.zeros(2, 52))
    with pytest.raises(ValueError, match="same batch size"):
        layer(torch.zeros(2, 50), torch.zeros(3, 53))
    with pytest.raises(ValueError, match="at most 100"):
        model.vertices(np.zeros(101))
    with pytest.raises(ValueError, match="asked for 120"):
        MorphableModelLayer(model, n_id=120)
