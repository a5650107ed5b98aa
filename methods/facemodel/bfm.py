"""Deep3D's Basel Face Model file (``BFM_model_front.mat``) read into :class:`MorphableModel`.

Room: reading a user-supplied BFM file (it cannot be shipped: BFM needs a registration).
The file is the one ``Deep3DFaceRecon_pytorch/util/load_mats.py: transferBFM09`` writes; its
fields, with N = 35709 vertices and F = 70789 triangles in the official file:

==================  ============  ===================================================
field               shape         meaning
==================  ============  ===================================================
``meanshape``       (1, 3N)       mean shape, decimetres, xyz interleaved
``idBase``          (3N, 80)      identity basis (PCA x std, decimetres)
``exBase``          (3N, 64)      expression basis (decimetres)
``meantex``         (1, 3N)       mean albedo, 0-255, RGB interleaved
``texBase``         (3N, 80)      albedo basis, 0-255 units
``tri``             (F, 3)        triangles, **1-based**
``point_buf``       (N, 8)        faces around each vertex, 1-based (F + 1 pads)
``tri_mask2``       (F2, 3)       triangles of the photometric-loss region, 1-based
``keypoints``       (1, 68)       landmark vertex ids, 1-based
``frontmask2_idx``  (N2, 1)       vertices of the photometric-loss region, 1-based
``skinmask``        (1, N)        skin vertices for the albedo regulariser (0/1)
==================  ============  ===================================================

Units become metres (x 0.1) and ids 0-based. As Deep3D's ``ParametricFaceModel`` does by
default, the mean shape is re-centred on its centroid (``recenter=True``) so Deep3D's pose
coefficients mean the same here. Deep3D's frame matches the suite's model frame (+x the
subject's left, +y up, +z towards the camera).

Usage::

    bfm = read_bfm("~/BFM/BFM_model_front.mat")
    model = bfm.model                  # MorphableModel, name "bfm-front", metres
    albedo = bfm.texture.albedo(tex)   # (V, 3) in [0, 1]
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from methods.facemodel.model import MorphableModel
from methods.facemodel.regions import face_regions

logger = logging.getLogger(__name__)

DM_TO_M = 0.1

#: (field, required) in the order they are checked.
BFM_FIELDS = (
    ("meanshape", True), ("idBase", True), ("exBase", True), ("tri", True),
    ("keypoints", True), ("meantex", False), ("texBase", False), ("point_buf", False),
    ("tri_mask2", False), ("frontmask2_idx", False), ("skinmask", False),
)


@dataclasses.dataclass(eq=False)
class LinearTexture:
    """A linear per-vertex albedo model.

    Attributes:
        mean: (V, 3) float32 mean albedo in [0, 1] (RGB).
        basis: (T, V, 3) float32 albedo basis in [0, 1] units per coefficient.
    """

    mean: np.ndarray
    basis: np.ndarray

    @property
    def n_tex(self) -> int:
        """Number of albedo components T."""
        return int(self.basis.shape[0])

    def albedo(self, coeffs: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) float32 albedo for (T,) or fewer coefficients (not clipped)."""
        out = self.mean.astype(np.float64)
        if coeffs is not None:
            c = np.asarray(coeffs, np.float64)
            if c.ndim != 1 or c.shape[0] > self.n_tex:
                raise ValueError(
                    f"albedo coefficients must be a vector of at most {self.n_tex} values, "
                    f"got shape {c.shape}."
                )
            out = out + np.tensordot(c, self.basis[: c.shape[0]], axes=1)
        return out.astype(np.float32)


@dataclasses.dataclass(eq=False)
class BFMFile:
    """Everything read from a ``BFM_model_front.mat``.

    Attributes:
        model: geometry as :class:`MorphableModel` (``bfm-front``, metres, 0-based ids;
            ``regions`` holds the file's ``skin`` and ``front`` masks plus the
            landmark-derived regions of :mod:`methods.facemodel.regions`).
        texture: albedo model, or None when the file has no ``meantex``/``texBase``.
        point_buf: (V, 8) int64 faces around each vertex, 0-based; the value F (one past
            the last face) pads, as in Deep3D (or None).
        front_faces: (F2, 3) int64 triangles of the photometric region, 0-based (or None).
    """

    model: MorphableModel
    texture: LinearTexture | None = None
    point_buf: np.ndarray | None = None
    front_faces: np.ndarray | None = None


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"BFM file {str(path)!r}: {what}")


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(
            f"BFM file {str(path)!r} is missing; build it with Deep3DFaceRecon_pytorch's "
            "util/load_mats.py (transferBFM09) from the registered BFM09 download."
        )
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise _fail(path, f"is a MATLAB v7.3 file, re-save it as v5 with scipy.io.savemat "
                          f"({exc}).") from exc
    except Exception as exc:  # truncated or not a .mat at all
        raise _fail(path, f"is corrupt or not a MATLAB .mat file ({type(exc).__name__}: "
                          f"{exc}).") from exc
    return {k: v for k, v in data.items() if not k.startswith("__")}


def _ids(path: Path, d: dict[str, np.ndarray], key: str, limit: int, shape: tuple) -> np.ndarray:
    """1-based integer ids -> 0-based int64, checked against ``limit`` (exclusive)."""
    arr = np.asarray(d[key])
    if not np.issubdtype(arr.dtype, np.number) or arr.size == 0:
        raise _fail(path, f"field {key!r} must hold numeric ids, got dtype {arr.dtype}.")
    ids = np.rint(arr.astype(np.float64)).astype(np.int64).reshape(shape) - 1
    if ids.min() < 0 or ids.max() >= limit:
        raise _fail(path, f"field {key!r} holds ids outside 1..{limit} (they must be 1-based).")
    return ids


def read_bfm(path: str | Path, recenter: bool = True) -> BFMFile:
    """Reads Deep3D's ``BFM_model_front.mat``.

    Args:
        path: the .mat file.
        recenter: subtract the mean shape's centroid (Deep3D's default).

    Returns:
        The model (metres), texture, and Deep3D's auxiliary tables.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is corrupt, lacks a field, or a field has the wrong shape.
    """
    path = Path(path).expanduser()
    d = _load_mat(path)
    for key, required in BFM_FIELDS:
        if required and key not in d:
            raise _fail(path, f"lacks the field {key!r} (is it Deep3D's BFM_model_front.mat?).")
    mean = np.asarray(d["meanshape"], np.float64).reshape(-1)
    if mean.size == 0 or mean.size % 3:
        raise _fail(path, f"field 'meanshape' must hold 3N values, got {mean.size}.")
    n3 = mean.size
    n = n3 // 3

    def basis(key: str) -> np.ndarray:
        arr = np.asarray(d[key])
        if arr.ndim != 2 or arr.shape[0] != n3:
            raise _fail(path, f"field {key!r} has shape {arr.shape}, expected ({n3}, K).")
        # (3N, K) -> (K, N, 3)
        return arr.astype(np.float64).T.reshape(arr.shape[1], n, 3)

    id_basis = basis("idBase")
    exp_basis = basis("exBase")
    tri_raw = np.asarray(d["tri"])
    if tri_raw.ndim != 2 or tri_raw.shape[1] != 3:
        raise _fail(path, f"field 'tri' has shape {tri_raw.shape}, expected (F, 3).")
    faces = _ids(path, d, "tri", n, (-1, 3))
    if np.asarray(d["keypoints"]).size != 68:
        raise _fail(path, f"field 'keypoints' has {np.asarray(d['keypoints']).size} ids, "
                          "expected 68.")
    keypoints = _ids(path, d, "keypoints", n, (68,))

    mean = mean.reshape(n, 3)
    if recenter:
        mean = mean - mean.mean(axis=0, keepdims=True)
    model = MorphableModel(
        name="bfm-front",
        mean=(mean * DM_TO_M).astype(np.float32),
        id_basis=(id_basis * DM_TO_M).astype(np.float32),
        exp_basis=(exp_basis * DM_TO_M).astype(np.float32),
        faces=faces,
        landmark_ids=keypoints,
        exp_names=None,
        source=str(path),
    )
    regions = face_regions(model.mean, model.faces, model.landmark_ids)
    if "skinmask" in d:
        skin = np.asarray(d["skinmask"]).reshape(-1)
        if skin.size != n:
            raise _fail(path, f"field 'skinmask' has {skin.size} values, expected {n}.")
        regions["skin"] = skin.astype(np.float64) > 0.5
    if "frontmask2_idx" in d:
        front = np.zeros(n, bool)
        front[_ids(path, d, "frontmask2_idx", n, (-1,))] = True
        regions["front"] = front
    model.regions = regions

    texture = None
    if "meantex" in d and "texBase" in d:
        meantex = np.asarray(d["meantex"], np.float64).reshape(-1)
        if meantex.size != n3:
            raise _fail(path, f"field 'meantex' has {meantex.size} values, expected {n3}.")
        texture = LinearTexture(
            mean=(meantex.reshape(n, 3) / 255.0).astype(np.float32),
            basis=(basis("texBase") / 255.0).astype(np.float32),
        )
    point_buf = None
    if "point_buf" in d:
        pb = np.asarray(d["point_buf"])
        if pb.ndim != 2 or pb.shape[0] != n:
            raise _fail(path, f"field 'point_buf' has shape {pb.shape}, expected ({n}, 8).")
        point_buf = np.rint(pb.astype(np.float64)).astype(np.int64) - 1
    front_faces = _ids(path, d, "tri_mask2", n, (-1, 3)) if "tri_mask2" in d else None
    logger.info("read BFM %s: %d vertices, %d triangles, %d id / %d exp components", path, n,
                len(faces), model.n_id, model.n_exp)
    return BFMFile(model=model, texture=texture, point_buf=point_buf, front_faces=front_faces)


def load_bfm(path: str | Path, recenter: bool = True) -> MorphableModel:
    """The geometry of Deep3D's ``BFM_model_front.mat`` as a :class:`MorphableModel`.

    See :func:`read_bfm` (which also returns the albedo model).
    """
    return read_bfm(path, recenter=recenter).model
