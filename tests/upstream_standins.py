"""Seeded stand-in inputs and weights shared by the upstream-parity fixtures and their tests.

Room: test support. ``scripts/upstream_parity/`` feeds these to the upstream code (DECA,
MICA, Deep3DFaceRecon_pytorch, run from an upstream checkout outside the repository) to
write the golden files in ``tests/fixtures/upstream/``; ``tests/test_upstream_parity.py``
feeds the very same values to our adapters. Everything is a pure function of numpy's
``default_rng`` and the key names, so both sides rebuild identical numbers without
sharing files, and no torch random state is involved.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np

#: Version of the recipes below; stored in every fixture and checked by the tests.
STANDIN_VERSION = 1
IMAGE_HW = (480, 640)
N_FLAME_V = 200  # 20 x 10 grid
N_FLAME_J = 5


def _key_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def fill_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for a conv/linear/batch-norm network, keyed by name.

    The value of a key depends only on (seed, key, shape), not on the order of the keys, so
    two implementations with the same key names get the same numbers. Weights are
    fan-in scaled so activations stay O(1) through deep residual stacks (BN in eval mode).

    Args:
        shapes: key -> tensor shape (from either implementation's ``state_dict``).
        seed: the stand-in's seed.

    Returns:
        key -> array (float32, or int64 for ``num_batches_tracked``).
    """
    out = {}
    for key, shape in shapes.items():
        rng = _key_rng(seed, key)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
            continue
        if leaf == "running_mean":
            v = rng.normal(0.0, 0.05, shape)
        elif leaf == "running_var":
            v = rng.uniform(0.8, 1.25, shape)
        elif len(shape) >= 2:  # conv / linear weight
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif ".prelu" in key or key.startswith("prelu"):
            v = rng.uniform(0.2, 0.3, shape)
        elif leaf == "weight":  # batch-norm scale
            v = rng.uniform(0.6, 0.9, shape)
        else:  # biases
            v = rng.normal(0.0, 0.02, shape)
        out[key] = v.astype(np.float32)
    return out


def fixed_image(seed: int = 7) -> np.ndarray:
    """(480, 640, 3) uint8 RGB: smooth noise with fine detail, so half a pixel shows."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    coarse = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3))
    yy, xx = np.mgrid[0:h, 0:w] / 8.0
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    smooth = (coarse[y0, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1, x0] * fy * (1 - fx)
              + coarse[y0, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1, x0 + 1] * fy * fx)
    fine = rng.uniform(-40, 40, (h, w, 3))
    return np.clip(smooth + fine, 0, 255).astype(np.uint8)


def fixed_landmarks(seed: int = 8) -> np.ndarray:
    """(68, 2) float64 image landmarks (y down) of a face in :func:`fixed_image`.

    The ICT face's 68 landmarks, scaled to about 350 px (so DECA's crop scale is far from
    1 and half a pixel shows), turned 6 degrees and jittered by about 3 px, so a
    five-point similarity fit has a residual (its direction then matters).
    """
    from methods.facemodel import load_ict

    ict = load_ict("narrow")
    lm = ict.mean[ict.landmark_ids][:, :2] * np.array([2500.0, -2500.0])
    a = np.deg2rad(6.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = lm @ rot.T + np.array([331.3, 236.6])
    return lm + np.random.default_rng(seed).normal(0.0, 3.0, lm.shape)


def grid_faces(rows: int, cols: int) -> np.ndarray:
    """(2 (rows-1) (cols-1), 3) int64 triangles of a row-major ``rows`` x ``cols`` vertex grid."""
    faces = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            i = r * cols + c
            faces += [(i, i + 1, i + cols), (i + 1, i + cols + 1, i + cols)]
    return np.array(faces, np.int64)


def flame_arrays(seed: int = 3) -> dict[str, np.ndarray]:
    """A tiny FLAME (200-vertex grid, 5 joints) with the official field names, numpy only.

    Returns ``generic_model.pkl`` fields (``v_template``, ``shapedirs`` (V, 3, 400),
    ``posedirs`` (V, 3, 36), dense ``J_regressor``, ``kintree_table``, ``weights``, ``f``).
    """
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(-0.08, 0.08, 20), np.linspace(-0.1, 0.1, 10))
    verts = np.stack([xs.ravel(), ys.ravel(), 0.03 * np.cos(xs.ravel() * 15)], 1)
    faces = grid_faces(10, 20)
    weights = rng.uniform(0.0, 1.0, (N_FLAME_V, N_FLAME_J)) ** 4
    weights[:, 0] += 0.5
    weights[verts[:, 1] < -0.02, 2] += 2.0  # the jaw
    weights /= weights.sum(1, keepdims=True)
    jreg = np.zeros((N_FLAME_J, N_FLAME_V))
    for j in range(N_FLAME_J):
        jreg[j, rng.choice(N_FLAME_V, 4, replace=False)] = 0.25
    return {
        "v_template": verts,
        "shapedirs": rng.normal(scale=1e-3, size=(N_FLAME_V, 3, 400)),
        "posedirs": rng.normal(scale=1e-3, size=(N_FLAME_V, 3, 9 * (N_FLAME_J - 1))),
        "J_regressor": jreg,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "f": faces,
    }


def flame_embedding(n_faces: int, seed: int = 4) -> dict[str, np.ndarray]:
    """DECA's ``landmark_embedding.npy`` fields: static 51, dynamic (79, 17), full 68.

    The three sets differ on purpose, so a reader that mixes them up fails.
    """
    rng = np.random.default_rng(seed)

    def bary(n: int) -> np.ndarray:
        b = rng.uniform(0.1, 1.0, (n, 3))
        return b / b.sum(-1, keepdims=True)

    return {
        "static_lmk_faces_idx": rng.integers(0, n_faces, 51),
        "static_lmk_bary_coords": bary(51),
        "dynamic_lmk_faces_idx": rng.integers(0, n_faces, (79, 17)),
        "dynamic_lmk_bary_coords": bary(79 * 17).reshape(79, 17, 3),
        "full_lmk_faces_idx": rng.integers(0, n_faces, (1, 68)),
        "full_lmk_bary_coords": bary(68)[None],
    }


def write_flame_files(folder: Path) -> tuple[Path, Path]:
    """Writes the stand-in FLAME model and landmark embedding in the official file formats.

    ``generic_model.pkl`` (a protocol-2 pickle of plain arrays) and ``landmark_embedding.npy``
    (a pickled dict whose dynamic contour is stored as torch tensors, as DECA ships it).

    Returns:
        The paths of the model file and of the embedding file.
    """
    import torch

    fields = flame_arrays()
    model = Path(folder) / "generic_model.pkl"
    with open(model, "wb") as fh:
        pickle.dump(fields, fh, protocol=2)
    emb = flame_embedding(len(fields["f"]))
    emb["dynamic_lmk_faces_idx"] = torch.as_tensor(emb["dynamic_lmk_faces_idx"])
    emb["dynamic_lmk_bary_coords"] = torch.as_tensor(emb["dynamic_lmk_bary_coords"])
    embedding = Path(folder) / "landmark_embedding.npy"
    np.save(embedding, emb, allow_pickle=True)
    return model, embedding


def encoder_input(size: int, seed: int = 11) -> np.ndarray:
    """(size, size, 3) uint8 RGB network input for the encoder-only parity checks."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.uint8)


def deca_encoder_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """DECA's ``E_flame`` stand-in: seeded weights, with the last layer's bias moved so the
    236 codes look like DECA's (shape/expression O(1), orthographic scale about 8)."""
    state = fill_state_dict(shapes, 5)
    bias = state["layers.2.bias"].astype(np.float64)
    rng = np.random.default_rng(6)
    bias[0:100] += rng.normal(0.0, 1.5, 100)   # shape
    bias[150:200] += rng.normal(0.0, 1.0, 50)  # expression
    bias[203:206] += [0.15, 0.0, 0.0]          # jaw open a little
    bias[206:209] += [8.0, 0.01, -0.02]        # cam: scale, tx, ty
    state["layers.2.bias"] = bias.astype(np.float32)
    return state


def deep3d_bfm_fields(seed: int = 12) -> dict[str, np.ndarray]:
    """A ``BFM_model_front.mat`` stand-in: the ICT face in decimetres, 1-based ids.

    Geometry fields (``meanshape``, ``idBase``, ``exBase``, ``tri``, ``keypoints``) are the
    ICT model's; ``meantex``/``texBase`` are seeded; ``point_buf`` lists up to 8 faces per
    vertex, padded with F + 1 as in the official file.
    """
    from methods.facemodel import load_ict

    ict = load_ict("narrow")
    n, dm = ict.n_vertices, 10.0
    rng = np.random.default_rng(seed)
    faces = ict.faces.astype(np.int64)
    point_buf = np.full((n, 8), len(faces) + 1, np.int64)
    fill = np.zeros(n, np.int64)
    for f, tri in enumerate(faces):
        for v in tri:
            if fill[v] < 8:
                point_buf[v, fill[v]] = f + 1
                fill[v] += 1
    exp = np.concatenate([ict.exp_basis, ict.exp_basis[:11] * 0.5])
    return {
        "meanshape": (ict.mean * dm).reshape(1, -1),
        "idBase": (ict.id_basis[:80] * dm).reshape(80, -1).T,
        "exBase": (exp * dm).reshape(64, -1).T,
        "meantex": np.full((1, 3 * n), 150.0),
        "texBase": rng.normal(size=(3 * n, 80)),
        "point_buf": point_buf.astype(np.float64),
        "tri": (faces + 1).astype(np.float64),
        "keypoints": (ict.landmark_ids + 1).reshape(1, 68).astype(np.float64),
    }


def deep3d_lm3d() -> np.ndarray:
    """``similarity_Lm3D_all.mat``'s ``lm`` stand-in: the ICT mean's 68 landmarks, dm."""
    from methods.facemodel import load_ict

    ict = load_ict("narrow")
    return ict.mean[ict.landmark_ids] * 10.0


def deep3d_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``net_recon`` stand-in: seeded backbone and heads; the pose heads are damped so the
    face stays in front of Deep3D's camera (angles about 0.1 rad, translation about 0.1)."""
    state = fill_state_dict(shapes, 13)
    for i, gain in ((0, 3.0), (1, 2.0), (3, 0.1), (5, 0.1), (6, 0.1)):
        state[f"final_layers.{i}.weight"] = state[f"final_layers.{i}.weight"] * np.float32(gain)
    return state


#: Vertices of the Deep3D stand-in kept in its fixture (every 37th of the ICT face's 6706).
DEEP3D_VERTEX_STEP = 37
