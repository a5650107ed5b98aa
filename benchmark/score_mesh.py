"""Score one predicted mesh against one scan with the NoW protocol (files in, figures out).

Room: the file-reading shell around :func:`metrics.now_scan_to_mesh` and the
``score-mesh`` subcommand. No CLI logic in :func:`score_mesh`; :func:`add_subcommand` and
:func:`main` are the thin argparse wrapper the CLI mounts.

Files:
    meshes: ``.obj`` (read here: ``v x y z [r g b]`` lines, so Deep3D's vertex colours are
    fine, polygons fan-triangulated, vertex order kept) or ``.ply``/``.off``/``.stl``/
    ``.glb`` via open3d; a scan may also be a point cloud (``.ply``/``.xyz``/``.pcd``).
    landmarks: ``.npy`` (7, 3), ``.txt`` (7 rows of 3 numbers, NoW's prediction format) or
    ``.pp`` (MeshLab picked points, NoW's scan landmark format).

Python use::

    from benchmark.score_mesh import score_mesh
    res = score_mesh("pred.obj", "pred_lmk.npy", "scan.obj", "scan.pp", unit="m",
                     scan_unit="mm")
    print(res.median_mm, res.mean_mm, res.std_mm)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from metrics import UNIT_TO_M, check_unit
from metrics.now import NOW_CENTRE_RATIO, NOW_RADIUS_FACTOR, NowResult, now_scan_to_mesh

logger = logging.getLogger(__name__)

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
    return verts, faces


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
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".txt":
            arr = np.loadtxt(path, dtype=np.float64, delimiter=None, ndmin=2)
        elif suffix == ".pp":
            root = ET.parse(path).getroot()
            arr = np.array(
                [
                    [float(p.attrib["x"]), float(p.attrib["y"]), float(p.attrib["z"])]
                    for p in root.iter("point")
                ]
            )
        else:
            raise ValueError(
                f"landmark file {str(path)!r}: unknown format {suffix!r}; use .npy, .txt or .pp."
            )
    except (OSError, ET.ParseError, KeyError) as exc:
        raise ValueError(f"could not parse landmark file {str(path)!r}: {exc}.") from exc
    arr = np.asarray(arr, np.float64)
    if arr.shape != (7, 3):
        raise ValueError(
            f"landmark file {str(path)!r} holds shape {arr.shape}; the NoW protocol needs 7 "
            f"points of 3 coordinates."
        )
    return arr


def score_mesh(
    pred_mesh_path: str | Path,
    pred_lmk_path: str | Path,
    scan_path: str | Path,
    scan_lmk_path: str | Path,
    unit: str = "m",
    scan_unit: str = "mm",
    metrical: bool = False,
    crop: bool = True,
    centre_ratio: float = NOW_CENTRE_RATIO,
    radius_factor: float = NOW_RADIUS_FACTOR,
    max_iter: int = 50,
    backend: str = "open3d",
    check_units: bool = True,
) -> NowResult:
    """Scores one predicted mesh file against one scan file (NoW protocol).

    Both sides are converted to metres before scoring; results are in mm and the returned
    transform / aligned vertices are in metres in the scan's frame.

    Args:
        pred_mesh_path: predicted mesh (``.obj``/``.ply``...).
        pred_lmk_path: its 7 NoW landmarks (``.npy``/``.txt``/``.pp``), same unit and frame.
        scan_path: reference scan (mesh or point cloud).
        scan_lmk_path: the scan's 7 landmarks, same unit and frame as the scan.
        unit: unit of the prediction files (``m``, ``cm``, ``mm``); NoW's default is ``m``.
        scan_unit: unit of the scan files; NoW scans are in ``mm``.
        metrical: rigid alignment only (size taken from ``unit``).
        crop: apply the NoW crop sphere.
        centre_ratio: crop-sphere centre parameter (NoW 0.3).
        radius_factor: crop-sphere radius parameter (NoW 1.4).
        max_iter: refinement iteration cap.
        backend: ``open3d`` or ``brute`` distances.
        check_units: reject files whose extent contradicts the stated unit.

    Returns:
        :class:`metrics.NowResult`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unreadable files, wrong landmark count, unit mismatch, bad geometry.
    """
    for u, what in ((unit, "unit"), (scan_unit, "scan_unit")):
        if u not in UNIT_TO_M:
            raise ValueError(f"{what} must be one of {sorted(UNIT_TO_M)}, got {u!r}.")
    pv, pf = read_mesh(pred_mesh_path)
    plmk = read_landmarks(pred_lmk_path)
    sv, _ = read_mesh(scan_path, allow_points=True)
    slmk = read_landmarks(scan_lmk_path)
    if check_units:
        # Check in the stated units first, so the message names the file's own unit.
        check_unit(pv, unit, f"predicted mesh {Path(pred_mesh_path).name}")
        check_unit(plmk, unit, f"predicted landmarks {Path(pred_lmk_path).name}", "landmarks")
        check_unit(sv, scan_unit, f"scan {Path(scan_path).name}")
        check_unit(slmk, scan_unit, f"scan landmarks {Path(scan_lmk_path).name}", "landmarks")
    fp, fs = UNIT_TO_M[unit], UNIT_TO_M[scan_unit]
    return now_scan_to_mesh(
        pv * fp,
        pf,
        plmk * fp,
        sv * fs,
        slmk * fs,
        unit="m",
        metrical=metrical,
        crop=crop,
        centre_ratio=centre_ratio,
        radius_factor=radius_factor,
        max_iter=max_iter,
        backend=backend,
        check_units=False,
    )


_EPILOG = """examples:
  # NoW-style: prediction in metres, 3dMD scan and .pp landmarks in millimetres
  python -m benchmark score-mesh pred.obj pred_lmk.npy scan.obj scan.pp
  # metrical protocol (no scale fit), prediction in centimetres
  python -m benchmark score-mesh pred.ply pred_lmk.txt scan.obj scan.pp --unit cm --metrical
  # machine-readable output, keep the distances and the aligned mesh
  python -m benchmark score-mesh pred.obj pred.npy scan.ply scan.npy --scan-unit m \\
      --json --distances-out dists_mm.npy --aligned-out aligned.obj
"""


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``score-mesh`` on the CLI's subparsers (sets ``func=main``)."""
    p = subparsers.add_parser(
        "score-mesh",
        help="NoW scan-to-mesh error of one predicted mesh against one scan",
        description=(
            "Score one predicted mesh against one reference scan with the NoW protocol: crop "
            "the scan, align by the 7 landmarks, refine by scan-to-surface distance, print "
            "median / mean / std in mm."
        ),
        usage=(
            "python -m benchmark score-mesh PRED_MESH PRED_LMK SCAN SCAN_LMK "
            "[--unit m|cm|mm] [--scan-unit m|cm|mm] [--metrical] [--json]"
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred_mesh", help="predicted mesh (.obj or .ply)")
    p.add_argument("pred_lmk", help="its 7 NoW landmarks (.npy 7x3, .txt or .pp)")
    p.add_argument("scan", help="reference scan (.obj, .ply mesh or point cloud)")
    p.add_argument("scan_lmk", help="the scan's 7 landmarks (.pp, .npy or .txt)")
    p.add_argument("--unit", default="m", choices=sorted(UNIT_TO_M),
                   help="unit of the prediction files (default: m)")
    p.add_argument("--scan-unit", default="mm", choices=sorted(UNIT_TO_M),
                   help="unit of the scan files (default: mm, as NoW scans)")
    p.add_argument("--metrical", action="store_true",
                   help="rigid alignment only (rotation, translation), size from --unit")
    p.add_argument("--no-crop", action="store_true", help="score every scan point (no NoW crop)")
    p.add_argument("--max-iter", type=int, default=50, help="refinement iteration cap")
    p.add_argument("--backend", default="open3d", choices=("open3d", "brute"),
                   help="distance backend (brute: slow exact reference)")
    p.add_argument("--no-unit-check", action="store_true",
                   help="skip the face-size check of the stated units")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--distances-out", metavar="NPY",
                   help="save the per-point distances (mm) to this .npy")
    p.add_argument("--aligned-out", metavar="OBJ",
                   help="save the aligned prediction (scan frame, scan unit) to this .obj")
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4),
                   help="0 errors, 1 warnings (default), 2 info, 3 debug (refinement steps)")
    p.set_defaults(func=main)


#: Alias, for a CLI that mounts subcommands as ``add_parser``.
add_parser = add_subcommand


def _write_obj(path: str | Path, verts: np.ndarray, faces: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        np.savetxt(fh, verts, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, faces + 1, fmt="f %d %d %d")


def main(args: argparse.Namespace) -> int:
    """Runs ``score-mesh`` for parsed ``args``; prints the NoW figures.

    Returns:
        0 on success, 2 when an input is missing or invalid (one line on stderr).
    """
    try:
        res = score_mesh(
            args.pred_mesh,
            args.pred_lmk,
            args.scan,
            args.scan_lmk,
            unit=args.unit,
            scan_unit=args.scan_unit,
            metrical=args.metrical,
            crop=not args.no_crop,
            max_iter=args.max_iter,
            backend=args.backend,
            check_units=not args.no_unit_check,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"score-mesh: error: {exc}", file=sys.stderr)
        return 2
    if args.distances_out:
        np.save(args.distances_out, res.distances_mm.astype(np.float32))
    if args.aligned_out:
        _, faces = read_mesh(args.pred_mesh)
        scale = 1.0 / UNIT_TO_M[args.scan_unit]
        _write_obj(args.aligned_out, res.aligned_vertices.astype(np.float64) * scale, faces)
    summary = {
        "protocol": "now-metrical" if args.metrical else "now",
        "median_mm": res.median_mm,
        "mean_mm": res.mean_mm,
        "std_mm": res.std_mm,
        "n_points": res.n_points,
        "scale": res.transform.scale,
        "converged": res.converged,
        "n_iter": res.n_iter,
        "landmark_error_mm": [round(float(x), 4) for x in res.landmark_error_mm],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        status = "converged" if res.converged else "NOT converged"
        print(
            f"NoW scan-to-mesh ({summary['protocol']}): median {res.median_mm:.4f} mm, "
            f"mean {res.mean_mm:.4f} mm, std {res.std_mm:.4f} mm over {res.n_points} scan "
            f"points (scale {res.transform.scale:.4f}, {res.n_iter} iterations, {status})"
        )
    return 0
