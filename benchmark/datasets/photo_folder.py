"""``photo-folder``: any folder of face photos with eye-state labels (CEW-style or a CSV).

Room: the loader for photos a user brings. Landmarks come from each method's own detector;
the eye-state metrics read the labels. No scans, so no scan-to-mesh error.

Accepted layouts (the root is ``--dataset-option photo-folder.root=DIR``, the ``root`` key
of a config, or ``$EYEBENCH_PHOTO_FOLDER``):

1. CEW style: ``DIR/closed/`` and ``DIR/open/`` holding images (sub-folders allowed); both
   eyes of an image take its folder's label.
2. A labels file ``DIR/labels.csv`` with a ``file`` column (path relative to ``DIR``) and
   either a per-image ``label`` column or per-eye ``right_eye`` and ``left_eye`` columns
   (the *subject's* right eye is eye 0, landmarks 36-41; ``eye0``/``eye1`` are accepted
   too). Values (any case): ``open``/``o``/``0``, ``closed``/``close``/``c``/``1``, and
   ``half``/``unknown``/``?``/``-1``/``na``/``n/a``/empty for *unknown* (kept out of the
   binary scores); any other value (a typo such as ``closd``) is rejected with the file and
   line. File paths must be relative and stay under ``DIR`` (no ``..``, not absolute). An
   optional ``subject`` column groups images for bootstrap intervals.
3. A Hugging Face ``imagefolder``: ``metadata.csv`` or ``metadata.jsonl`` files (in ``DIR``
   or any sub-folder, e.g. ``DIR/test/``) with a ``file_name`` column (path relative to the
   metadata file's folder) and the label columns of layout 2 (``label`` or ``right_eye`` and
   ``left_eye``; JSON values may also be the numbers 0, 1, -1 or null), optional
   ``subject``; other columns are ignored. ``python -m benchmark export-dataset --format
   imagefolder`` writes this layout.
4. A plain folder of images: no labels (landmark and fitting runs only).

A ``labels.csv`` wins over ``metadata.*`` files, which win over ``closed/``/``open/``; a
malformed one makes the dataset unavailable with the reason (file and line), never a
partial run. Unreadable images (missing, empty, corrupt, truncated) are listed and fail at
load time, which the runner records as a per-sample error for every method; the run goes
on. EXIF orientation tags are applied (``benchmark.datasets.images.read_image``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets.base import Dataset, DatasetCard, relative_path
from benchmark.datasets.images import IMAGE_EXTENSIONS, read_image
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN, Availability, FaceSample

logger = logging.getLogger(__name__)

ROOT_ENV = "EYEBENCH_PHOTO_FOLDER"
LABELS_FILE = "labels.csv"
#: Metadata files of a Hugging Face ``imagefolder`` (``file_name`` column + labels).
METADATA_FILES = ("metadata.csv", "metadata.jsonl")

_VALUES = {"open": EYE_OPEN, "0": EYE_OPEN, "o": EYE_OPEN,
           "closed": EYE_CLOSED, "close": EYE_CLOSED, "1": EYE_CLOSED, "c": EYE_CLOSED,
           "": EYE_UNKNOWN, "half": EYE_UNKNOWN, "unknown": EYE_UNKNOWN, "?": EYE_UNKNOWN,
           "-1": EYE_UNKNOWN, "na": EYE_UNKNOWN, "n/a": EYE_UNKNOWN}
_EYE_COLUMNS = (("right_eye", "left_eye"), ("eye0", "eye1"), ("right", "left"))

CARD = DatasetCard(
    name="photo-folder",
    description="a folder of face photos with open/closed eye labels (CEW-style or labels.csv)",
    card_file="photo-folder.md",
    license="the user's own data (e.g. CEW: research use only)",
    citation=(
        "Layout of CEW: Song, Tan, Liu, Chen. Eyes closeness detection from still images with "
        "multi-scale histograms of principal oriented gradients. Pattern Recognition 2014."
    ),
    splits=("test",),
    default_split="test",
    has_scans=False,
    has_eye_labels=True,
    redistributable=False,
    root_env=ROOT_ENV,
    instance_keyed=True,
    layout=(
        "DIR/closed/*.jpg + DIR/open/*.jpg, DIR/labels.csv "
        "(file,label | file,right_eye,left_eye), or an HF imagefolder with metadata.csv/"
        "metadata.jsonl (file_name + the same label columns)"
    ),
    revision="2",  # 2: EXIF orientation applied
)


def parse_state(value: str | None) -> int:
    """An eye label from a CSV cell: 0 open, 1 closed, -1 unknown (half, ?, empty, ...).

    Raises:
        ValueError: a value that is none of the accepted ones (listed in the message).
    """
    if value is None:
        return EYE_UNKNOWN
    key = str(value).strip().lower()
    if key not in _VALUES:
        accepted = ", ".join(repr(v) for v in _VALUES if v)
        raise ValueError(f"unknown eye label {str(value).strip()!r} (accepted: {accepted}, "
                         f"or empty for unknown)")
    return _VALUES[key]


def image_state_of(eye_state: np.ndarray) -> int:
    """Image label from per-eye labels.

    Closed when both eyes are, open when both are known and not both closed, else unknown.
    """
    a, b = int(eye_state[0]), int(eye_state[1])
    if a == EYE_CLOSED and b == EYE_CLOSED:
        return EYE_CLOSED
    if EYE_UNKNOWN not in (a, b):
        return EYE_OPEN
    return EYE_UNKNOWN


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        and not path.name.startswith(".")
    )


def _sample_id(rel: str) -> str:
    return rel.replace("\\", "/").replace("/", "--")


Rows = list[tuple[int, dict[str, str]]]


def _csv_rows(path: Path) -> tuple[list[str], Rows]:
    """Columns (lower case) and (line, row) pairs of a CSV file with a header."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        rows = [(reader.line_num, {k.strip().lower(): (v or "") for k, v in raw.items() if k})
                for raw in reader]
    return cols, rows


def _cell(value: Any, where: str) -> str:
    """A JSON value as a label cell: strings as they are, null empty, whole numbers as text."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: {value!r} is not an eye label or subject (a string, 0, 1, "
                         f"-1 or null).")
    return str(value)


def _jsonl_rows(path: Path) -> tuple[list[str], Rows]:
    """Columns and (line, row) pairs of a JSON-lines file (one object a line, blanks skipped).

    The columns are the first object's keys, as ``datasets`` infers them; label and subject
    cells become strings (see :func:`_cell`), other columns are ignored.
    """
    cols: list[str] | None = None
    rows: Rows = []
    wanted = {"file_name", "label", "subject"} | {c for pair in _EYE_COLUMNS for c in pair}
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, text in enumerate(fh, 1):
            if not text.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: each line must be a JSON object.")
            row = {str(k).strip().lower(): v for k, v in obj.items()}
            cols = list(row) if cols is None else cols
            if "file_name" in row and not isinstance(row["file_name"], str):
                raise ValueError(f"{where}: 'file_name' must be a string, got "
                                 f"{row['file_name']!r}.")
            rows.append((lineno, {k: _cell(v, where) for k, v in row.items() if k in wanted}))
    return cols or [], rows


def _read_labels(path: Path, file_col: str, cols: list[str], rows: Rows, prefix: str,
                 out: dict[str, tuple[str, np.ndarray, str]]) -> None:
    """Adds the labelled rows of ``labels.csv`` or an imagefolder metadata file to ``out``.

    Args:
        path: the file (named in every error, with the line).
        file_col: ``file`` (labels.csv) or ``file_name`` (imagefolder metadata).
        cols: the file's columns, lower case.
        rows: (line, row) pairs.
        prefix: folder of the file relative to the root (``""`` or ``"test/"``).
        out: sample id -> (relative file, eye_state, subject), filled in file order.

    Raises:
        ValueError: a missing column, a bad path or label, a file listed twice (file:line).
    """
    if file_col not in cols:
        raise ValueError(f"{path} has no {file_col!r} column (columns: {', '.join(cols)}).")
    eye_cols = next((p for p in _EYE_COLUMNS if p[0] in cols and p[1] in cols), None)
    if "label" not in cols and eye_cols is None:
        raise ValueError(f"{path} needs a 'label' column or 'right_eye' and 'left_eye' columns.")
    for line, row in rows:
        rel = prefix + relative_path(row.get(file_col) or "", f"{path}:{line}")
        try:
            if eye_cols is not None:
                state = np.array([parse_state(row.get(eye_cols[0])),
                                  parse_state(row.get(eye_cols[1]))], np.int8)
            else:
                state = np.full(2, parse_state(row.get("label")), np.int8)
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: {exc}.") from exc
        sid = _sample_id(rel)
        if sid in out:
            raise ValueError(f"{path}:{line}: {rel!r} is listed twice.")
        out[sid] = (rel, state, (row.get("subject") or "").strip() or sid)


class PhotoFolderDataset(Dataset):
    """Labelled face photos from a user's folder (see the module docstring for layouts)."""

    card = CARD

    def __init__(
        self, split: str | None = None, root: str | Path | None = None, **options: Any
    ) -> None:
        super().__init__(split=split, root=root, **options)
        self._index_cache: dict[str, tuple[str, np.ndarray, str]] | None = None
        self._layout = ""

    # -- layout ---------------------------------------------------------------------------
    def _build_index(self) -> dict[str, tuple[str, np.ndarray, str]]:
        """Sample id -> (relative file, eye_state, subject)."""
        root = self.root
        if root is None:
            raise ValueError(f"photo-folder needs a root ({CARD.layout}).")
        out: dict[str, tuple[str, np.ndarray, str]] = {}
        labels = root / LABELS_FILE
        if labels.is_file():
            self._layout = "labels.csv"
            _read_labels(labels, "file", *_csv_rows(labels), "", out)
            return out
        metadata = sorted(p for p in root.rglob("metadata.*")
                          if p.name in METADATA_FILES and p.is_file())
        if metadata:
            self._layout = "imagefolder metadata"
            folders = [p.parent for p in metadata]
            twice = sorted({str(f) for f in folders if folders.count(f) > 1})
            if twice:
                raise ValueError(f"{twice[0]} holds both metadata.csv and metadata.jsonl; "
                                 f"keep one.")
            for meta in metadata:
                cols, rows = _jsonl_rows(meta) if meta.suffix == ".jsonl" else _csv_rows(meta)
                base = meta.parent.relative_to(root).as_posix()
                _read_labels(meta, "file_name", cols, rows, "" if base == "." else base + "/",
                             out)
            return out
        found_cew = False
        for name, label in (("closed", EYE_CLOSED), ("open", EYE_OPEN)):
            sub = root / name
            if sub.is_dir():
                found_cew = True
                for f in sorted(p for p in sub.rglob("*") if _is_image(p)):
                    rel = f.relative_to(root).as_posix()
                    out[_sample_id(rel)] = (rel, np.full(2, label, np.int8), _sample_id(rel))
        if found_cew:
            self._layout = "closed/ + open/"
            return out
        self._layout = "unlabelled folder"
        for f in sorted(p for p in root.rglob("*") if _is_image(p)):
            rel = f.relative_to(root).as_posix()
            out[_sample_id(rel)] = (rel, np.full(2, EYE_UNKNOWN, np.int8), _sample_id(rel))
        return out

    def _index(self) -> dict[str, tuple[str, np.ndarray, str]]:
        if self._index_cache is None:
            self._index_cache = self._build_index()
        return self._index_cache

    # -- Dataset contract ------------------------------------------------------------------
    def availability(self) -> Availability:
        """Root present, layout readable, at least one image listed."""
        base = super().availability()
        if not base.ok:
            return base
        try:
            n = len(self._index())
        except (ValueError, OSError) as exc:
            return Availability(False, str(exc), f"fix the folder layout ({CARD.layout})")
        if n == 0:
            return Availability(
                False, f"no images found under {str(self.root)!r}", f"expected {CARD.layout}"
            )
        return Availability(True)

    def sample_ids(self) -> list[str]:
        """Relative paths with ``/`` replaced by ``--``, sorted (labels.csv: file order)."""
        return list(self._index())

    def load_sample(self, sample_id: str) -> FaceSample:
        """One photo (image loaded lazily; a corrupt file raises when the image is read)."""
        index = self._index()
        if sample_id not in index:
            raise KeyError(f"photo-folder has no sample {sample_id!r}.")
        rel, state, subject = index[sample_id]
        path = self.root / rel  # type: ignore[operator]
        return FaceSample(
            id=sample_id,
            subject=subject,
            image=lambda p=path: read_image(p),
            eye_state=state.copy(),
            image_state=image_state_of(state),
            meta={"file": rel, "layout": self._layout},
        )

    def revision(self) -> str:
        """Hash of the listed files (names and sizes) and their labels."""
        h = hashlib.sha256(CARD.revision.encode())
        for sid, (rel, state, subject) in self._index().items():
            path = self.root / rel  # type: ignore[operator]
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{sid}:{size}:{state.tolist()}:{subject}".encode())
        return h.hexdigest()[:12]
