"""Reading and writing meshes and landmark files (OBJ/PLY/..., NoW .npy/.txt/.pp).

Room: file formats only; arrays come out in the file's own unit (callers convert). Files
holding NaN or infinite coordinates are rejected here, with the file and the count, so no
later step reports a meaningless size or distance.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

_OPEN3D_MESH_SUFFIXES = (".ply", ".off", ".stl", ".glb", ".gltf")
_POINT_CLOUD_SUFFIXES = (".ply", ".xyz", ".xyzn", ".xyzrgb", ".pcd", ".pts")


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads vertices and triangles of a Wavefront OBJ file.

    Only ``v`` and ``f`` records matter: extra numbers on ``v`` lines (vertex colours, as
    Deep3D writes them) are ignored, ``f`` entries may carry ``/vt/vn`` parts and negative
    (relative) indices, polygons are fan-triangulated. Vertex order is the file's (open3d's
    reader reorders vertices when faces carry normals and drops non-triangle faces, hence
    this reader).

    Args:
        path: the ``.obj`` file.

    Returns:
        (V, 3) float64 vertices and (F, 3) int64 triangles (F may be 0 for a point set).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed ``v``/``f`` record, or no vertices.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {str(path)!r} does not exist.")
    verts: list[list[float]] = []
    tris: list[tuple[int, int, int]] = []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith("v "):
                parts = line.split()
                try:
                    verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
                except (IndexError, ValueError) as exc:
                    raise ValueError(
                        f"{path}:{lineno}: vertex record needs 3 numbers, got {line.strip()!r}."
                    ) from exc
            elif line.startswith("f "):
                try:
                    idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                except ValueError as exc:
                    raise ValueError(
                        f"{path}:{lineno}: malformed face record {line.strip()!r}."
                    ) from exc
                if len(idx) < 3:
                    raise ValueError(f"{path}:{lineno}: a face needs at least 3 vertices.")
                n = len(verts)
                idx = [i - 1 if i > 0 else n + i for i in idx]  # negative: relative to here
                tris.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    if not verts:
        raise ValueError(f"mesh file {str(path)!r} has no vertex ('v') records.")
    return np.asarray(verts, np.float64), np.asarray(tris, np.int64).reshape(-1, 3)


def read_mesh(path: str | Path, allow_points: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reads a mesh (or, with ``allow_points``, a point cloud) file.

    Args:
        path: ``.obj`` (own reader, see :func:`read_obj`) or a format open3d reads.
        allow_points: accept a file without triangles (scans are scored by vertex only).

    Returns:
        (V, 3) float64 vertices and (F, 3) int64 triangles (F = 0 for a point cloud).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, empty, or without triangles when they are needed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        verts, faces = read_obj(path)
    else:
        try:
            import open3d as o3d
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"reading {suffix} files needs open3d: `pip install open3d-cpu` (x86_64) or "
                f"`pip install open3d`; .obj files are read without it."
            ) from exc
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        verts = np.zeros((0, 3))
        faces = np.zeros((0, 3), np.int64)
        if suffix in _OPEN3D_MESH_SUFFIXES:
            mesh = o3d.io.read_triangle_mesh(str(path))
            verts = np.asarray(mesh.vertices, np.float64)
            faces = np.asarray(mesh.triangles, np.int64)
        if verts.shape[0] == 0 and suffix in _POINT_CLOUD_SUFFIXES:
            verts = np.asarray(o3d.io.read_point_cloud(str(path)).points, np.float64)
        if verts.shape[0] == 0:
            raise ValueError(
                f"could not read any vertex from {str(path)!r} (supported: .obj, "
                f"{', '.join(sorted(set(_OPEN3D_MESH_SUFFIXES + _POINT_CLOUD_SUFFIXES)))})."
            )
    if faces.shape[0] == 0 and not allow_points:
        raise ValueError(f"mesh file {str(path)!r} has no triangles; a prediction needs a surface.")
    _check_finite(verts, path, "vertices")
    if faces.shape[0] and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"mesh file {str(path)!r} has faces indexing vertices outside "
                         f"1..{len(verts)}.")
    return verts, faces


def _check_finite(points: np.ndarray, path: Path, what: str) -> None:
    """Raises ``ValueError`` naming the file when some points have NaN/infinite coordinates."""
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:3] + 1
        raise ValueError(
            f"{str(path)!r}: {int(bad.sum())} of {len(points)} {what} have NaN or infinite "
            f"coordinates (first: {', '.join(map(str, first))}; 1-based)."
        )


def read_landmarks(path: str | Path) -> np.ndarray:
    """Reads the 7 NoW landmarks from ``.npy``, ``.txt`` or MeshLab ``.pp``.

    Args:
        path: landmark file.

    Returns:
        (7, 3) float64 landmarks in file order (NoW order expected).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, unparsable content, or not 7 points of 3 coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".txt", ".pp"):
        raise ValueError(
            f"landmark file {str(path)!r}: unknown format {suffix!r}; use .npy, .txt or .pp."
        )
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".txt":
            arr = np.loadtxt(path, dtype=np.float64, delimiter=None, ndmin=2)
        else:
            root = ET.parse(path).getroot()
            arr = np.array(
                [
                    [float(p.attrib["x"]), float(p.attrib["y"]), float(p.attrib["z"])]
                    for p in root.iter("point")
                ]
            )
    except KeyError as exc:
        raise ValueError(f"could not parse landmark file {str(path)!r}: a <point> lacks its "
                         f"{exc} attribute.") from exc
    except (OSError, ET.ParseError, ValueError, EOFError) as exc:
        raise ValueError(f"could not parse landmark file {str(path)!r}: {exc}.") from exc
    try:
        arr = np.asarray(arr, np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"landmark file {str(path)!r} does not hold numbers: {exc}.") from exc
    if arr.shape != (7, 3):
        raise ValueError(
            f"landmark file {str(path)!r} holds shape {arr.shape}; the NoW protocol needs 7 "
            f"points of 3 coordinates."
        )
    _check_finite(arr, path, "landmarks")
    return arr


def write_obj(path: str | Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Writes a triangle mesh as OBJ (1-based faces, 6 decimals)."""
    with open(path, "w", encoding="utf-8") as fh:
        np.savetxt(fh, verts, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, faces + 1, fmt="f %d %d %d")
