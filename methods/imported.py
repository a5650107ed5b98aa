"""``import``: any method's meshes from a folder, in the NoW submission layout.

Room: bringing results of methods the suite cannot run (PRNet, UMDFA, 3DMM-CNN, your own)
onto the leaderboard. Nothing is reconstructed here; files are read per sample.

Layout under the folder (option ``root`` or ``$EYEBENCH_IMPORT_ROOT``), for a sample id
``<id>`` (NoW: ``<subject>/<challenge>/<image>``; synthetic: ``test_00012``)::

    <id>.obj | <id>.ply          the predicted mesh
    <id>.npy | <id>.txt          its 7 NoW landmarks (7, 3), NoW order, same unit
    <id>_lmk68.npy               optional (68, 3) iBUG landmarks on the mesh: needed for the
                                 eye-state columns (the 7 NoW points do not include eyelids)

Options: ``unit`` = ``m`` | ``dm`` | ``cm`` | ``mm`` | ``auto`` (default ``auto``: the
decade of the mesh's bounding-box diagonal decides, a face being 0.1-1 m across).
A sample without a mesh is recorded as an error naming the file it looked for; a sample id
that would lead outside the folder (absolute, or with ``..``) is refused, never read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from benchmark.types import Availability, FaceSample, Prediction, Topology
from methods.base import Method, MethodCard

UNITS_TO_M = {"m": 1.0, "dm": 0.1, "cm": 0.01, "mm": 0.001}

CARD = MethodCard(
    name="import",
    description="meshes of any method read from a folder (NoW submission layout + 68 "
                "landmarks for eye metrics)",
    topology="per-file",
    license="as the imported method's",
    reference="https://github.com/soubhiksanyal/now_evaluation",
)


def guess_unit(vertices: np.ndarray) -> str:
    """The unit whose decade puts the bounding-box diagonal of a face in [0.1, 1) m."""
    diag = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    for unit, scale in UNITS_TO_M.items():
        if 0.1 <= diag * scale < 1.0:
            return unit
    raise ValueError(
        f"cannot tell the unit of a mesh {diag:g} units across; give the option unit=m|cm|mm."
    )


def barycentric_landmarks(vertices: np.ndarray, faces: np.ndarray,
                          points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Places 3D points on a mesh: nearest triangle and barycentric weights of each point.

    Args:
        vertices: (V, 3) mesh vertices.
        faces: (F, 3) triangles.
        points: (L, 3) points near the surface.

    Returns:
        (L,) int64 triangle ids and (L, 3) float32 barycentric weights of the closest
        surface points.
    """
    from metrics import point_to_mesh_distance

    res = point_to_mesh_distance(points, vertices, faces, backend="brute")
    tri = vertices[faces[res.face_ids]].astype(np.float64)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, res.closest_points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1.0 - w1 - w2, w1, w2], axis=1)
    return res.face_ids.astype(np.int64), bary.astype(np.float32)


class ImportedMeshes(Method):
    """Reads one mesh (+ landmarks) per sample from a folder."""

    card = CARD
    option_keys: ClassVar[tuple[str, ...]] = ("root", "unit")

    def _root(self) -> Path | None:
        value = self.options.get("root") or os.environ.get("EYEBENCH_IMPORT_ROOT")
        return Path(value).expanduser() if value else None

    def availability(self) -> Availability:
        """Available when a folder is given and exists."""
        root = self._root()
        if root is None:
            return Availability(
                False, "needs a folder of predicted meshes (NoW submission layout)",
                "--method-option import.root=/path or EYEBENCH_IMPORT_ROOT=/path")
        if not root.is_dir():
            return Availability(False, f"import folder {str(root)!r} does not exist",
                                "point import.root at the folder of meshes")
        unit = self.options.get("unit", "auto")
        if unit != "auto" and unit not in UNITS_TO_M:
            return Availability(False, f"unknown unit {unit!r}", "use unit=m|dm|cm|mm|auto")
        return Availability(True)

    def revision(self) -> str:
        """Changes when the folder's files change (names, sizes, modification times)."""
        import hashlib

        h = hashlib.sha256(super().revision().encode())
        root = self._root()
        for p in sorted(root.rglob("*")) if root else []:
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:12]

    def load(self, device: str) -> None:
        """Nothing to load."""

    def _find(self, sample_id: str, suffixes: tuple[str, ...]) -> Path | None:
        from benchmark.datasets.base import relative_path

        rel = relative_path(sample_id, f"sample id {sample_id!r}",
                            f"the import folder {str(self._root())!r}")
        base = self._root() / rel
        for suffix in suffixes:
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path
        return None

    def predict(self, sample: FaceSample) -> Prediction:
        """The sample's mesh from the folder, converted to metres."""
        from benchmark.meshio import read_landmarks, read_mesh

        mesh_path = self._find(sample.id, (".obj", ".ply"))
        if mesh_path is None:
            raise FileNotFoundError(
                f"no mesh {self._root() / sample.id}.obj or .ply for sample {sample.id}")
        verts, faces = read_mesh(mesh_path)
        unit = self.options.get("unit", "auto")
        unit = guess_unit(verts) if unit == "auto" else unit
        scale = UNITS_TO_M[unit]
        verts_m = (verts * scale).astype(np.float32)
        lmk7_path = self._find(sample.id, (".npy", ".txt"))
        lmk7 = None if lmk7_path is None else (read_landmarks(lmk7_path) * scale).astype(
            np.float32)
        lmk68_path = self._find(sample.id, ("_lmk68.npy",))
        topo_kwargs: dict = {}
        if lmk68_path is not None:
            lmk68 = np.load(lmk68_path, allow_pickle=False).reshape(-1, 3)
            if lmk68.shape != (68, 3):
                raise ValueError(f"{lmk68_path} must hold (68, 3) landmarks, got {lmk68.shape}")
            tri_ids, bary = barycentric_landmarks(verts_m, faces, lmk68 * scale)
            topo_kwargs = {"landmark_faces": tri_ids, "landmark_bary": bary}
        if lmk7 is None and not topo_kwargs:
            raise FileNotFoundError(
                f"no landmarks for {sample.id}: need {sample.id}.npy/.txt (7 NoW points) or "
                f"{sample.id}_lmk68.npy")
        topology = Topology(name=f"import:{mesh_path.suffix[1:]}", faces=faces, **topo_kwargs)
        return Prediction(status="ok", vertices=verts_m, topology=topology, landmarks7=lmk7,
                          extras={"unit": unit, "file": str(mesh_path)})
