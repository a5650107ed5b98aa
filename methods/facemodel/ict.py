"""The ICT-FaceKit face model (MIT), the suite's embedded default morphable model.

Room: reading ``assets/ict-facekit/ict_face_model.npz`` into :class:`MorphableModel`
(centimetres -> metres) plus its eyeballs. See that folder's README for the arrays and the
licence that must stay beside any copy.

Two regions are exposed as topologies: ``ict-full`` (9409 vertices: face, ears, upper neck;
the synthetic ground truth) and ``ict-narrow`` (the first 6706 vertices, 13120 triangles:
the face mask that reconstruction methods of this suite output).

Expression weights are ARKit-style blendshapes in [0, 1]; ``eyeBlink_L`` (index 10) closes
the subject's left eye (landmarks 42-47), ``eyeBlink_R`` (11) the right eye (36-41). A
weight of 1.0 leaves a hairline slit; about 1.1 closes the lid fully.
"""

from __future__ import annotations

import dataclasses
import functools
import zipfile
from pathlib import Path

import numpy as np

from methods.facemodel.model import MorphableModel
from methods.facemodel.regions import face_regions

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "ict-facekit"
ICT_PATH = ASSET_DIR / "ict_face_model.npz"
ICT_SHA256 = "5cd12e37b9d38f8b47e83df434c930363591386ffe9d3fe360f24b626ed733b9"
CM_TO_M = 0.01

BLINK_LEFT = "eyeBlink_L"   # subject's left eye: landmarks 42-47 (eye index 1)
BLINK_RIGHT = "eyeBlink_R"  # subject's right eye: landmarks 36-41 (eye index 0)

_REQUIRED = {
    "face_mean": 2, "face_id_basis": 3, "face_ex_basis": 3, "face_faces": 2, "lmk68": 1,
    "narrow_nv": 0, "ex_names": 1,
}


@dataclasses.dataclass(eq=False)
class Eyeball:
    """One eyeball mesh of the ICT model (expressions never move it; identity does).

    Attributes:
        mean: (E, 3) float32 metres.
        id_basis: (K, E, 3) float32 metres.
        faces: (G, 3) int64.
        iris_start: first vertex id of the iris (vertices before it are sclera).
    """

    mean: np.ndarray
    id_basis: np.ndarray
    faces: np.ndarray
    iris_start: int

    def vertices(self, id_coeffs: np.ndarray | None = None) -> np.ndarray:
        """(E, 3) eyeball vertices for identity coefficients."""
        out = self.mean.astype(np.float64)
        if id_coeffs is not None:
            a = np.asarray(id_coeffs, np.float64)
            out = out + np.tensordot(a, self.id_basis[: a.shape[0]], axes=1)
        return out.astype(np.float32)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(
            f"ICT face model file {str(path)!r} is missing; it ships with the project in "
            f"{ASSET_DIR} (restore it with `git checkout -- {ASSET_DIR}`)."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"ICT face model file {str(path)!r} is corrupt or not an .npz ({exc})."
        ) from exc
    for key, ndim in _REQUIRED.items():
        if key not in arrays:
            raise ValueError(f"ICT face model file {str(path)!r} lacks the field {key!r}.")
        if arrays[key].ndim != ndim:
            raise ValueError(
                f"ICT face model file {str(path)!r}: field {key!r} has {arrays[key].ndim} "
                f"dimensions, expected {ndim}."
            )
    return arrays


@functools.lru_cache(maxsize=4)
def _load(path: str, region: str) -> MorphableModel:
    d = _read_npz(Path(path))
    mean = d["face_mean"].astype(np.float32) * CM_TO_M
    faces = d["face_faces"].astype(np.int64)
    lmk = d["lmk68"].astype(np.int64)
    model = MorphableModel(
        name="ict-full",
        mean=mean,
        id_basis=d["face_id_basis"].astype(np.float32) * CM_TO_M,
        exp_basis=d["face_ex_basis"].astype(np.float32) * CM_TO_M,
        faces=faces,
        landmark_ids=lmk,
        exp_names=tuple(str(n) for n in d["ex_names"]),
        source=str(path),
    )
    # Region masks (face, eyes, eyelid margin, brows, lips, nose, skin) from landmark geometry
    # on the mean shape, after the model has validated its arrays; see regions.py.
    model.regions = face_regions(model.mean, model.faces, model.landmark_ids)
    if region == "full":
        return model
    if region == "narrow":
        return model.restrict(int(d["narrow_nv"]), name="ict-narrow")
    raise ValueError(f"unknown ICT region {region!r}; use 'narrow' or 'full'.")


def load_ict(region: str = "narrow", path: str | Path | None = None) -> MorphableModel:
    """Loads the ICT face model in metres.

    Args:
        region: ``narrow`` (face mask, 6706 vertices) or ``full`` (9409 vertices).
        path: model file; defaults to the shipped asset.

    Returns:
        The model; cached, so treat its arrays as read-only.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is corrupt or lacks a field.
    """
    return _load(str(Path(path) if path else ICT_PATH), region)


@functools.lru_cache(maxsize=2)
def load_ict_eyeballs(path: str | Path | None = None) -> tuple[Eyeball, Eyeball]:
    """The (subject's right, subject's left) eyeballs in metres, eye-index order."""
    d = _read_npz(Path(path) if path else ICT_PATH)
    out = []
    # eyeball_right_* sits at -x (the subject's right), matching eye index 0 (landmarks 36-41).
    for side in ("right", "left"):
        out.append(
            Eyeball(
                mean=d[f"eyeball_{side}_mean"].astype(np.float32) * CM_TO_M,
                id_basis=d[f"eyeball_{side}_id_basis"].astype(np.float32) * CM_TO_M,
                faces=d[f"eyeball_{side}_faces"].astype(np.int64),
                iris_start=int(d[f"eyeball_{side}_iris_start"]),
            )
        )
    return out[0], out[1]
