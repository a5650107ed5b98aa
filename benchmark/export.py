"""``export``: a method's cached predictions for a dataset written as mesh files.

Room: turning the prediction cache into files other tools read (OBJ/PLY meshes with their
landmarks, the NoW challenge submission layout). Nothing is predicted here: a sample
without a cached prediction stops the export with the ``run`` command that computes it
(exit 1); the export never mixes predictions of different method or data revisions.

Layouts under ``--out`` (``<id>`` is the sample id, NoW: ``<subject>/<challenge>/<image>``)::

    obj / ply:        <id>.obj | <id>.ply     the predicted mesh (unit: --unit, default m)
                      <id>.npy                its 7 NoW landmarks (7, 3), NoW order
                      <id>_lmk68.npy          its 68 iBUG landmarks (68, 3), when placed
                      <id>.txt, <id>_lmk68.txt  the same as text (--txt)
    now-submission:   <id>.obj + <id>.npy     mesh and 7 landmarks only, as the NoW
                                              evaluation reads them (--with-lmk68 adds the 68)
    export.json       what was written: method, dataset, revisions, unit, mesh kind,
                      samples written and samples skipped (no face, error) with the reason

Which mesh: ``--mesh auto`` writes what the suite scores against the dataset's scans (the
prediction's neutral mesh for datasets with neutral scans, NoW and REALY, when the method
gives one; else the expressive mesh); ``posed`` and ``neutral`` force one. The 7 landmarks
are those of the written mesh. Files are written at full float precision, so reading them
back through the ``import`` method (``--method-option import.root=<out>``) reproduces the
scores (2D landmark error aside: mesh files carry no camera).

NoW units: the official evaluation reads meshes and landmarks in the unit given by its
``--predicted_mesh_unit`` (default ``m``; only the metrical protocol uses it, the standard
protocol aligns with scale), so exports default to metres; ``--unit mm`` matches the scans.

Python use::

    from benchmark.export import export_predictions
    summary = export_predictions("mean-shape", "synthetic", "out/", fmt="obj", limit=4)
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import PredictionCache, atomic_write_bytes
from benchmark.types import NOW7_FROM_68, Prediction

logger = logging.getLogger(__name__)

FORMATS = ("obj", "ply", "now-submission")
MESH_CHOICES = ("auto", "posed", "neutral")
MANIFEST = "export.json"
UNITS = ("m", "cm", "mm")


class ExportError(Exception):
    """The export cannot be made as asked (missing predictions, unavailable method)."""


@dataclasses.dataclass
class ExportSummary:
    """What :func:`export_predictions` wrote.

    Attributes:
        out: the output folder.
        format: one of :data:`FORMATS`.
        written: sample ids whose files were written, in dataset order.
        skipped: sample id -> why no file was written (no face, error, no landmarks).
        unit: unit of the written coordinates.
        manifest: the ``export.json`` content.
    """

    out: Path
    format: str
    written: list[str]
    skipped: dict[str, str]
    unit: str
    manifest: dict[str, Any]


def _unit_scale(unit: str) -> float:
    from metrics import UNIT_TO_M

    if unit not in UNITS:
        raise ValueError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}.")
    return 1.0 / UNIT_TO_M[unit]


def obj_bytes(verts: np.ndarray, faces: np.ndarray) -> bytes:
    """A Wavefront OBJ of a triangle mesh (``v x y z`` at 9 significant digits, 1-based faces).

    Nine significant digits bring every float32 coordinate back exactly; no vertex colours
    (the NoW evaluation's loader rejects them).
    """
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(verts, np.float64), fmt="v %.9g %.9g %.9g")
    np.savetxt(buf, np.asarray(faces, np.int64) + 1, fmt="f %d %d %d")
    return buf.getvalue().encode("ascii")


def ply_bytes(verts: np.ndarray, faces: np.ndarray) -> bytes:
    """A binary little-endian PLY (double vertices, int triangle indices)."""
    verts = np.ascontiguousarray(verts, "<f8")
    faces = np.asarray(faces, np.int64)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by eyebench export\n"
        f"element vertex {len(verts)}\nproperty double x\nproperty double y\n"
        f"property double z\nelement face {len(faces)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    face_rec = np.zeros(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = faces
    return header + verts.tobytes() + face_rec.tobytes()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, np.float64))
    return buf.getvalue()


def _txt_bytes(arr: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(arr, np.float64), fmt="%.9g")
    return buf.getvalue().encode("ascii")


def mesh_to_export(pred: Prediction, neutral_scans: bool, mesh: str
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """The mesh an export writes for one prediction, with its landmarks (metres).

    Args:
        pred: an ``ok`` prediction.
        neutral_scans: the dataset's scans are neutral faces (``DatasetCard.scans_neutral``).
        mesh: ``auto`` (what the suite scores against the scans), ``posed`` or ``neutral``.

    Returns:
        (vertices, landmarks7 or None, landmarks68 or None, ``posed`` | ``neutral``).

    Raises:
        ValueError: ``neutral`` asked of a prediction without a neutral mesh.
    """
    topo = pred.topology
    use_neutral = pred.neutral_vertices is not None and (
        mesh == "neutral" or (mesh == "auto" and neutral_scans))
    if mesh == "neutral" and pred.neutral_vertices is None:
        raise ValueError("the prediction has no neutral mesh (--mesh neutral)")
    verts = np.asarray(pred.neutral_vertices if use_neutral else pred.vertices, np.float32)
    lmk68 = topo.landmarks(verts) if topo is not None and topo.has_landmarks else None
    if use_neutral and lmk68 is not None:
        lmk7 = lmk68[list(NOW7_FROM_68)]  # the 7 points of the mesh written, as scored
    elif pred.landmarks7 is not None:
        lmk7 = np.asarray(pred.landmarks7, np.float32)
    else:
        lmk7 = None if lmk68 is None else lmk68[list(NOW7_FROM_68)]
    return verts, lmk7, lmk68, "neutral" if use_neutral else "posed"


def run_command(method: str, dataset: str, split: str, *, root: Path | None = None,
                limit: int | None = None, cache_dir: str | None = None,
                method_options: dict[str, str] | None = None) -> str:
    """The ``python -m benchmark run`` command that caches the predictions an export needs."""
    cmd = f"python -m benchmark run --methods {method} --datasets {dataset} --split {split}"
    if root is not None:
        cmd += f" --dataset-option {dataset}.root={root}"
    for key, value in (method_options or {}).items():
        cmd += f" --method-option {method}.{key}={value}"
    if limit is not None:
        cmd += f" --limit {limit}"
    if cache_dir:
        cmd += f" --cache-dir {cache_dir}"
    return cmd


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Creates ``out``; refuses a non-empty folder unless ``overwrite`` (then clears it).

    Only a folder holding an ``export.json`` is cleared (the files it lists, then empty
    folders), so ``--overwrite`` never deletes files an export did not write.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"--out {str(out)!r} is not empty; choose a new folder or pass "
                             f"--overwrite to replace a previous export there.")
        manifest = out / MANIFEST
        if not manifest.is_file():
            raise ValueError(f"--out {str(out)!r} is not empty and holds no {MANIFEST}: it is "
                             f"not a previous export, so nothing is replaced there.")
        try:
            files = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{manifest} is unreadable ({exc}); remove the folder by hand."
                             ) from exc
        root = out.resolve()
        for rel in files:
            path = (out / rel).resolve()
            if path.is_relative_to(root) and path.is_file():
                path.unlink()
        manifest.unlink()
        for folder in sorted((p for p in out.rglob("*") if p.is_dir()),
                             key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def export_predictions(
    method: str,
    dataset: str,
    out: str | Path,
    fmt: str = "obj",
    *,
    split: str | None = None,
    limit: int | None = None,
    cache_dir: str | None = None,
    method_options: dict[str, str] | None = None,
    dataset_options: dict[str, str] | None = None,
    unit: str = "m",
    mesh: str = "auto",
    txt: bool = False,
    with_lmk68: bool | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Writes a method's cached predictions for a dataset split as files.

    Args:
        method: registered method name.
        dataset: registered dataset name.
        out: output folder (created; must be empty unless ``overwrite``).
        fmt: ``obj``, ``ply`` or ``now-submission`` (see the module docstring).
        split: dataset split (default: the dataset's default split).
        limit: the first N samples only, as ``run --limit N``.
        cache_dir: prediction cache root (default ``$EYEBENCH_CACHE`` or ``.cache``).
        method_options: the method's options, as given to ``run`` (they change its revision).
        dataset_options: the dataset's options (``root`` for real datasets).
        unit: ``m``, ``cm`` or ``mm``.
        mesh: ``auto``, ``posed`` or ``neutral`` (see the module docstring).
        txt: also write the landmarks as ``.txt``.
        with_lmk68: write ``<id>_lmk68.npy`` (default: yes for obj/ply, no for NoW).
        overwrite: replace a previous export in ``out``.

    Returns:
        What was written.

    Raises:
        ValueError: a bad argument (unknown name or option, non-empty folder).
        ExportError: the method or dataset is unavailable, or predictions are not cached
            (the message holds the ``run`` command that computes them).
    """
    from benchmark.config import RunConfig
    from benchmark.datasets.base import relative_path
    from benchmark.runner import check_options, make_dataset, make_method

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if mesh not in MESH_CHOICES:
        raise ValueError(f"--mesh must be one of {', '.join(MESH_CHOICES)}, got {mesh!r}.")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive number, got {limit}.")
    scale = _unit_scale(unit)
    with_lmk68 = fmt != "now-submission" if with_lmk68 is None else with_lmk68
    cfg = RunConfig(methods=method, datasets=dataset, split=split, limit=limit,
                    cache_dir=cache_dir,
                    method_options={method: dict(method_options)} if method_options else {},
                    dataset_options={dataset: dict(dataset_options)} if dataset_options else {})
    check_options(cfg, [method], [dataset])
    ds = make_dataset(dataset, cfg)
    avail = ds.availability()
    if not avail.ok:
        raise ExportError(f"dataset {dataset}: {avail}")
    meth = make_method(method, cfg)
    avail = meth.availability()
    if not avail.ok:
        raise ExportError(f"method {method}: {avail}")
    ids = ds.sample_ids()[:limit] if limit is not None else ds.sample_ids()
    if not ids:
        raise ExportError(f"dataset {dataset}/{ds.split} has no samples.")
    mrev, drev = meth.revision(), ds.revision()
    preds = PredictionCache(cfg.resolved_cache_dir() / "predictions" / ds.card.name / ds.split
                            / meth.card.name / f"{mrev}-{drev}")
    missing = [sid for sid in ids if not preds.has(sid)]
    if missing:
        cmd = run_command(method, dataset, ds.split,
                          root=ds.root if ds.card.root_env else None, limit=limit,
                          cache_dir=cache_dir, method_options=method_options)
        raise ExportError(
            f"{len(missing)} of {len(ids)} predictions of {method} on {dataset}/{ds.split} are "
            f"not cached (first: {', '.join(missing[:3])}; method revision {mrev}, data "
            f"revision {drev}); compute them with `{cmd}` and export again.")

    out = Path(out).expanduser()
    _prepare_out(out, overwrite)
    written: list[str] = []
    skipped: dict[str, str] = {}
    files: list[str] = []
    kinds: dict[str, int] = {}

    def put(rel: str, data: bytes) -> None:
        atomic_write_bytes(out / rel, data)
        files.append(rel)

    for sid in ids:
        rel = relative_path(sid, f"sample id {sid!r}", f"the export folder {str(out)!r}")
        pred = preds.get(sid)
        if pred.status != "ok" or pred.vertices is None or pred.topology is None:
            skipped[sid] = f"{pred.status}: {pred.error or 'no mesh'}"
            continue
        try:
            verts, lmk7, lmk68, kind = mesh_to_export(pred, ds.card.scans_neutral, mesh)
        except ValueError as exc:
            skipped[sid] = str(exc)
            continue
        if lmk7 is None and (fmt == "now-submission" or lmk68 is None):
            skipped[sid] = "the prediction places no landmarks (NoW needs its 7 points)"
            continue
        faces = pred.topology.faces
        if fmt == "ply":
            put(f"{rel}.ply", ply_bytes(verts.astype(np.float64) * scale, faces))
        else:
            put(f"{rel}.obj", obj_bytes(verts.astype(np.float64) * scale, faces))
        if lmk7 is not None:
            put(f"{rel}.npy", _npy_bytes(lmk7.astype(np.float64) * scale))
            if txt:
                put(f"{rel}.txt", _txt_bytes(lmk7.astype(np.float64) * scale))
        if lmk68 is not None and with_lmk68:
            put(f"{rel}_lmk68.npy", _npy_bytes(lmk68.astype(np.float64) * scale))
            if txt:
                put(f"{rel}_lmk68.txt", _txt_bytes(lmk68.astype(np.float64) * scale))
        kinds[kind] = kinds.get(kind, 0) + 1
        written.append(sid)

    manifest = {
        "format": fmt,
        "method": meth.card.name,
        "method_revision": mrev,
        "method_options": dict(method_options or {}),
        "dataset": ds.card.name,
        "split": ds.split,
        "dataset_revision": drev,
        "dataset_root": str(ds.root.expanduser().resolve()) if ds.root else None,
        "unit": unit,
        "mesh": mesh,
        "meshes_written": kinds,
        "limit": limit,
        "n_samples": len(ids),
        "n_written": len(written),
        "skipped": skipped,
        "files": files,
        "import_with": f"python -m benchmark run --methods import --datasets {ds.card.name} "
                       f"--split {ds.split} --method-option import.root={out} "
                       f"--method-option import.unit={unit}"
                       + (f" --dataset-option {ds.card.name}.root={ds.root}"
                          if ds.root is not None and ds.card.root_env else "")
                       + (f" --limit {limit}" if limit is not None else ""),
    }
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return ExportSummary(out, fmt, written, skipped, unit, manifest)


_EPILOG = """examples:
  python -m benchmark export --method fit-landmarks-elam --dataset synthetic --out meshes/
  python -m benchmark export --method mean-shape --dataset synthetic --limit 4 --format ply \\
      --out /tmp/ply --txt
  python -m benchmark export --method elam-ldl --dataset now --split val \\
      --dataset-option now.root=$NOW_ROOT --format now-submission --out now_val_submission/
The predictions must be cached: run the method first (the error message prints the
command). Read an export back with the import method:
  python -m benchmark run --methods import --method-option import.root=meshes/
exit codes: 0 written; 1 predictions missing or method/dataset unavailable; 2 usage error.
"""


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``export`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "export", help="write a method's cached predictions as OBJ/PLY or a NoW submission",
        usage="python -m benchmark export --method M --dataset D --out DIR "
              "[--format obj|ply|now-submission] [options]",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="registered method name")
    p.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    p.add_argument("--split", default=None, help="dataset split (default: its default split)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--format", default="obj", choices=FORMATS, dest="fmt",
                   help="obj, ply (with 7 and 68 landmarks) or now-submission (default: obj)")
    p.add_argument("--unit", default="m", choices=UNITS,
                   help="unit of the written coordinates (default: m)")
    p.add_argument("--mesh", default="auto", choices=MESH_CHOICES,
                   help="auto: the mesh the suite scores against the dataset's scans "
                        "(neutral for NoW/REALY when given); posed; neutral")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--txt", action="store_true", help="also write landmarks as .txt")
    p.add_argument("--with-lmk68", action=argparse.BooleanOptionalAction, default=None,
                   help="write <id>_lmk68.npy (default: yes for obj/ply, no for NoW)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous export in --out (only the files it wrote)")
    p.add_argument("--cache-dir", default=None, help="prediction cache root")
    p.add_argument("--method-option", action="append", default=None, metavar="NAME.KEY=VALUE",
                   help="the method's options as given to run (repeatable)")
    p.add_argument("--dataset-option", action="append", default=None,
                   metavar="NAME.KEY=VALUE", help="the dataset's options (repeatable)")
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """The ``export`` subcommand: 0 written, 1 cannot export (reason on stderr)."""
    from benchmark.config import options_for

    method_options = options_for(args.method_option, "method", args.method)
    dataset_options = options_for(args.dataset_option, "dataset", args.dataset)
    try:
        summary = export_predictions(
            args.method, args.dataset, args.out, args.fmt, split=args.split, limit=args.limit,
            cache_dir=args.cache_dir, method_options=method_options,
            dataset_options=dataset_options, unit=args.unit, mesh=args.mesh,
            txt=args.txt, with_lmk68=args.with_lmk68, overwrite=args.overwrite)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = summary.manifest
    print(f"{summary.format}: {m['n_written']} of {m['n_samples']} meshes of {m['method']} on "
          f"{m['dataset']}/{m['split']} written to {summary.out} (unit {summary.unit}; "
          f"{', '.join(f'{v} {k}' for k, v in m['meshes_written'].items()) or 'none'})")
    for sid, reason in list(summary.skipped.items())[:10]:
        print(f"  not written: {sid}: {reason}")
    if len(summary.skipped) > 10:
        print(f"  ... and {len(summary.skipped) - 10} more (see {MANIFEST})")
    print(f"read back with: {m['import_with']}")
    return 0


__all__ = ["FORMATS", "ExportError", "ExportSummary", "export_predictions", "mesh_to_export",
           "obj_bytes", "ply_bytes", "run_command"]
