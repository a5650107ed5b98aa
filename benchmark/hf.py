"""Hugging Face ``datasets`` glue: evaluation samples and per-sample results as HF datasets.

Room: conversion between the suite's :class:`~benchmark.types.FaceSample` (and run-record
rows) and HF ``datasets`` tables, and the ``export-dataset`` subcommand. ``datasets`` is an
optional extra (``pip install -e '.[hf]'``); nothing here touches a hub: every builder
reads local files.

``export-dataset`` writes a dataset split (``synthetic`` by default) in one of three forms:

* ``arrow`` (default): ``save_to_disk`` folder; read with ``datasets.load_from_disk(DIR)``.
* ``parquet``: ``DIR/data/<split>-00000-of-00001.parquet`` (features kept in the schema);
  read with ``datasets.load_dataset(DIR, split=SPLIT)`` or
  ``load_dataset("parquet", data_files=...)``.
* ``imagefolder``: ``DIR/<split>/<id>.png`` with ``DIR/<split>/metadata.jsonl`` (a
  ``file_name`` column + labels, landmarks, and paths of the ground-truth mesh
  ``<id>_gt.obj`` and scan ``<id>_scan.npy`` relative to the metadata file); read with
  ``datasets.load_dataset("imagefolder", data_dir=DIR)``, and evaluated by the suite with
  ``--datasets photo-folder --dataset-option photo-folder.root=DIR``.

Columns of the ``arrow``/``parquet`` forms (one row per sample, geometry in metres):

==================  ===============================  ==========================================
column              feature                          meaning
==================  ===============================  ==========================================
``id``, ``subject``  string                          sample id; subject (bootstrap unit)
``image``           Image (PNG bytes)                the input photo, RGB
``eye_state``       List(int8, 2)                    per eye: 0 open, 1 closed, -1 unknown;
                                                     eye 0 = subject's right (landmarks 36-41)
``eye_openness``    List(float32, 2)                 ground-truth aperture (NaN unknown)
``image_state``     int8                             image label (closed when both are)
``landmarks2d``     Array2D((68, 2), float32)        iBUG 68 pixel landmarks (null if none)
``gt_vertices``     Array2D((None, 3), float32)      ground-truth mesh vertices (null if none)
``gt_topology``     string                           its topology (``ict-full``: faces from
                                                     ``methods.topology.get_topology``)
``scan_points``     Array2D((None, 3), float32)      reference scan points (null if none)
``scan_landmarks7`` Array2D((7, 3), float32)         the scan's 7 NoW landmarks
``scan_cropped``    bool                             scan already cropped to the NoW sphere
``meta``            string                           the sample's extras as JSON
==================  ===============================  ==========================================

Python use::

    from benchmark.hf import to_hf_dataset, samples_from_hf
    hf = to_hf_dataset(SyntheticDataset(n=4))            # datasets.Dataset
    first = next(samples_from_hf(hf))                     # a FaceSample again
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import atomic_write_bytes
from benchmark.types import EYE_CLOSED, EYE_OPEN, FaceSample, Scan

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[hf]' (or pip install datasets)"
FORMATS = ("arrow", "parquet", "imagefolder")
_STATE_NAMES = {EYE_OPEN: "open", EYE_CLOSED: "closed"}


def require_datasets():
    """The ``datasets`` module, or ImportError naming the extra that installs it."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(f"this needs the Hugging Face datasets package: {INSTALL_HINT}."
                          ) from exc
    return datasets


def sample_features():
    """The ``datasets.Features`` of a sample table (see the module docstring)."""
    ds = require_datasets()
    return ds.Features({
        "id": ds.Value("string"),
        "subject": ds.Value("string"),
        "image": ds.Image(),
        "eye_state": ds.List(ds.Value("int8"), length=2),
        "eye_openness": ds.List(ds.Value("float32"), length=2),
        "image_state": ds.Value("int8"),
        "landmarks2d": ds.Array2D(shape=(68, 2), dtype="float32"),
        "gt_vertices": ds.Array2D(shape=(None, 3), dtype="float32"),
        "gt_topology": ds.Value("string"),
        "scan_points": ds.Array2D(shape=(None, 3), dtype="float32"),
        "scan_landmarks7": ds.Array2D(shape=(7, 3), dtype="float32"),
        "scan_cropped": ds.Value("bool"),
        "meta": ds.Value("string"),
    })


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding of an (H, W, 3) uint8 RGB image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _f32(value: np.ndarray | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, np.float32)


def sample_row(sample: FaceSample) -> dict[str, Any]:
    """One FaceSample as a row of :func:`sample_features` (the image encoded as PNG)."""
    scan = sample.scan
    return {
        "id": sample.id,
        "subject": sample.subject,
        "image": {"bytes": png_bytes(sample.load_image()), "path": f"{sample.id}.png"},
        "eye_state": [int(x) for x in sample.eye_state],
        "eye_openness": [float(x) for x in sample.eye_openness],
        "image_state": int(sample.image_state),
        "landmarks2d": _f32(sample.landmarks2d),
        "gt_vertices": _f32(sample.gt_vertices),
        "gt_topology": sample.gt_topology,
        "scan_points": None if scan is None else _f32(scan.points),
        "scan_landmarks7": None if scan is None else _f32(scan.landmarks7),
        "scan_cropped": None if scan is None else bool(scan.cropped),
        "meta": json.dumps(sample.meta, default=_json_default, sort_keys=True),
    }


def _array(value: Any, width: int) -> np.ndarray | None:
    """A stored array, or None for a null cell (HF returns null arrays as None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    arr = np.asarray(value, np.float32).reshape(-1, width)
    return None if arr.size == 0 or np.isnan(arr).all() else arr


def sample_from_row(row: dict[str, Any]) -> FaceSample:
    """A FaceSample from a row of an exported table (any HF format: python or numpy)."""
    image = row["image"]
    if isinstance(image, dict):  # undecoded: {"bytes", "path"}
        from PIL import Image

        with Image.open(io.BytesIO(image["bytes"])) as im:
            image = np.asarray(im.convert("RGB"))
    else:
        image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image,
                           np.uint8)
    points, lmk7 = _array(row.get("scan_points"), 3), _array(row.get("scan_landmarks7"), 3)
    scan = None if points is None or lmk7 is None else Scan(
        points=points, landmarks7=lmk7, cropped=bool(row.get("scan_cropped")))
    return FaceSample(
        id=str(row["id"]),
        subject=str(row["subject"]),
        image=image,
        landmarks2d=_array(row.get("landmarks2d"), 2),
        eye_state=np.asarray(row["eye_state"], np.int8),
        eye_openness=np.asarray(row["eye_openness"], np.float32),
        image_state=int(row["image_state"]),
        scan=scan,
        gt_vertices=_array(row.get("gt_vertices"), 3),
        gt_topology=row.get("gt_topology") or None,
        meta=json.loads(row["meta"]) if row.get("meta") else {},
    )


def samples_from_hf(table) -> Iterator[FaceSample]:
    """FaceSamples of an HF table written by :func:`to_hf_dataset` (or read back from disk)."""
    for row in table:
        yield sample_from_row(row)


def _rows(dataset, ids: Sequence[str]) -> Iterator[dict[str, Any]]:
    from benchmark.datasets.base import load_sample_or_error

    for sid in ids:
        yield sample_row(load_sample_or_error(dataset, sid, raise_errors=True))


def to_hf_dataset(dataset, ids: Sequence[str] | None = None, cache_dir: str | Path | None = None):
    """An evaluation dataset split as a ``datasets.Dataset`` (rows built one at a time).

    Args:
        dataset: a :class:`benchmark.datasets.base.Dataset`.
        ids: the sample ids to include (default: all, in dataset order).
        cache_dir: where the Arrow file is built; the table stays memory-mapped there (the
            caller keeps the folder). Default: a temporary folder, the table held in memory.

    Returns:
        A ``datasets.Dataset``.
    """
    hf = require_datasets()
    ids = list(dataset.sample_ids() if ids is None else ids)
    kwargs = {"features": sample_features(), "gen_kwargs": {"dataset": dataset, "ids": ids}}
    if cache_dir is not None:
        return hf.Dataset.from_generator(_rows, cache_dir=str(cache_dir), **kwargs)
    with tempfile.TemporaryDirectory(prefix="eyebench-hf-") as tmp:
        return hf.Dataset.from_generator(_rows, cache_dir=tmp, keep_in_memory=True, **kwargs)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Moves a finished folder into place, replacing what was there.

    The folder gets the permissions of an ordinary one under the user's umask (not the
    0700 of ``mkdtemp``).
    """
    from benchmark.cache import file_mode

    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    mode = file_mode()
    tmp.chmod(mode | (mode & 0o444) >> 2)
    tmp.rename(final)


def write_imagefolder(dataset, ids: Sequence[str], out: Path) -> Path:
    """Writes ``out/<split>/`` as an HF ``imagefolder`` with ``metadata.jsonl``.

    Returns:
        The metadata file.
    """
    from benchmark.datasets.base import load_sample_or_error
    from benchmark.export import obj_bytes

    folder = out / dataset.split
    lines = []
    for sid in ids:
        sample = load_sample_or_error(dataset, sid, raise_errors=True)
        stem = sid.replace("/", "--")
        atomic_write_bytes(folder / f"{stem}.png", png_bytes(sample.load_image()))
        entry: dict[str, Any] = {
            "file_name": f"{stem}.png",
            "id": sid,
            "subject": sample.subject,
            "right_eye": _STATE_NAMES.get(int(sample.eye_state[0]), "unknown"),
            "left_eye": _STATE_NAMES.get(int(sample.eye_state[1]), "unknown"),
            "eye_openness": [None if np.isnan(x) else float(x) for x in sample.eye_openness],
            "landmarks2d": None if sample.landmarks2d is None
            else np.asarray(sample.landmarks2d, np.float64).tolist(),
            "gt_mesh": None,
            "scan": None,
            "scan_landmarks7": None,
        }
        if sample.gt_vertices is not None and sample.gt_topology:
            from methods.topology import get_topology

            faces = get_topology(sample.gt_topology).faces
            atomic_write_bytes(folder / f"{stem}_gt.obj", obj_bytes(sample.gt_vertices, faces))
            entry["gt_mesh"] = f"{stem}_gt.obj"
        if sample.scan is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(sample.scan.points, np.float32))
            atomic_write_bytes(folder / f"{stem}_scan.npy", buf.getvalue())
            entry["scan"] = f"{stem}_scan.npy"
            entry["scan_landmarks7"] = np.asarray(sample.scan.landmarks7, np.float64).tolist()
        lines.append(json.dumps(entry, sort_keys=True))
    meta = folder / "metadata.jsonl"
    atomic_write_bytes(meta, ("\n".join(lines) + "\n").encode())
    return meta


def export_dataset(name: str, out: str | Path, fmt: str = "arrow", *, split: str | None = None,
                   limit: int | None = None, dataset_options: dict[str, str] | None = None,
                   overwrite: bool = False) -> Path:
    """Writes a registered dataset split as an HF dataset (see the module docstring).

    Returns:
        The folder to hand to ``load_from_disk`` (arrow) or ``load_dataset`` (others).

    Raises:
        ValueError: unknown format, dataset or option; a non-empty ``out`` without
            ``overwrite``; an unavailable dataset.
        ImportError: ``datasets`` is not installed (arrow, parquet).
    """
    from benchmark.config import RunConfig
    from benchmark.runner import check_options, make_dataset

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive number, got {limit}.")
    cfg = RunConfig(datasets=name, split=split, methods="",
                    dataset_options={name: dict(dataset_options)} if dataset_options else {})
    check_options(cfg, [], [name])
    dataset = make_dataset(name, cfg)
    avail = dataset.availability()
    if not avail.ok:
        raise ValueError(f"dataset {name}: {avail}")
    ids = dataset.sample_ids()
    ids = ids[:limit] if limit is not None else ids
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"--out {str(out)!r} exists and is not empty; choose a new folder or "
                         f"pass --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "imagefolder":
            write_imagefolder(dataset, ids, tmp)
        else:
            with tempfile.TemporaryDirectory(prefix="eyebench-hf-") as work:
                table = to_hf_dataset(dataset, ids, cache_dir=work)
                if fmt == "arrow":
                    table.save_to_disk(str(tmp))
                else:
                    table.to_parquet(
                        str(tmp / "data" / f"{dataset.split}-00000-of-00001.parquet"))
                del table
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- results rows

def rows_to_hf(frame):
    """A per-sample results frame (``samples.parquet``) as a ``datasets.Dataset``."""
    hf = require_datasets()
    return hf.Dataset.from_pandas(frame, preserve_index=False)


def save_rows(frame, folder: Path, fingerprint: str | None = None) -> None:
    """Writes a results frame with ``save_to_disk`` into ``folder`` (replaced whole).

    Args:
        frame: the per-sample rows.
        folder: the ``samples.hf`` folder.
        fingerprint: the dataset fingerprint to store (a content digest keeps the folder
            byte-identical when the rows are; default: a random one, as ``datasets`` does).
    """
    hf = require_datasets()
    table = rows_to_hf(frame)
    if fingerprint is not None:
        table = hf.Dataset(table.data, info=table.info, fingerprint=fingerprint)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    quiet = hf.is_progress_bar_enabled()
    try:
        if quiet:  # one record among many: no "Saving the dataset" bar per record
            hf.disable_progress_bars()
        table.save_to_disk(str(tmp / "ds"))
        _replace_dir(tmp / "ds", folder)
    finally:
        if quiet:
            hf.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- CLI

_EPILOG = """examples:
  python -m benchmark export-dataset --out synthetic_hf/            # whole test split, arrow
  python -m benchmark export-dataset --limit 20 --format parquet --out /tmp/syn_pq
  python -m benchmark export-dataset --format imagefolder --out /tmp/syn_if
Read back (offline):
  datasets.load_from_disk("synthetic_hf")
  datasets.load_dataset("/tmp/syn_pq", split="test")
  datasets.load_dataset("imagefolder", data_dir="/tmp/syn_if")
  python -m benchmark run --datasets photo-folder --dataset-option photo-folder.root=/tmp/syn_if
"""


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``export-dataset`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "export-dataset", help="write a dataset split as a Hugging Face dataset (offline)",
        usage="python -m benchmark export-dataset --out DIR [--dataset D] "
              "[--format arrow|parquet|imagefolder] [--limit N]",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    p.add_argument("--split", default=None, help="split (default: the dataset's default)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--format", default="arrow", choices=FORMATS, dest="fmt",
                   help="arrow (save_to_disk), parquet or imagefolder (default: arrow)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--dataset-option", action="append", default=None,
                   metavar="NAME.KEY=VALUE", help="the dataset's options (repeatable)")
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """The ``export-dataset`` subcommand: 0 written, 1 ``datasets`` missing."""
    from benchmark.config import options_for

    options = options_for(args.dataset_option, "dataset", args.dataset)
    try:
        out = export_dataset(args.dataset, args.out, args.fmt, split=args.split,
                             limit=args.limit, dataset_options=options,
                             overwrite=args.overwrite)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    how = {"arrow": f"datasets.load_from_disk({str(out)!r})",
           "parquet": f"datasets.load_dataset({str(out)!r}, split=...)",
           "imagefolder": f"datasets.load_dataset('imagefolder', data_dir={str(out)!r})"}
    print(f"{args.dataset} written to {out} ({args.fmt}); read it with {how[args.fmt]}")
    return 0
