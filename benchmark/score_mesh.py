"""Score one predicted mesh against one scan with the NoW protocol (files in, figures out).

Room: the file-reading shell around :func:`metrics.now_scan_to_mesh` and the
``score-mesh`` subcommand. No CLI logic in :func:`score_mesh`; :func:`add_subcommand` and
:func:`main` are the thin argparse wrapper the CLI mounts.

Files are read by :mod:`benchmark.meshio` (meshes: .obj with or without vertex colours,
.ply/.off/.stl/.glb, point clouds; landmarks: .npy, .txt, MeshLab .pp). A file with NaN or
infinite coordinates is refused with its name and the count of bad vertices (one line,
exit 2), before any size check could report a meaningless "nan m" extent.

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
from pathlib import Path

import numpy as np

from benchmark.meshio import read_landmarks, read_mesh, write_obj
from metrics import UNIT_TO_M, check_unit
from metrics.distance import BACKENDS, DEFAULT_BACKEND
from metrics.now import NOW_CENTRE_RATIO, NOW_RADIUS_FACTOR, NowResult, now_scan_to_mesh

logger = logging.getLogger(__name__)

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
    backend: str = DEFAULT_BACKEND,
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
        backend: ``bvh`` (default), ``open3d`` or ``brute`` distances.
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
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="distance backend (default: %(default)s; brute: slow exact reference)")
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
        write_obj(args.aligned_out, res.aligned_vertices.astype(np.float64) * scale, faces)
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
