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
   too). Values: ``open``/``0``, ``closed``/``1``, anything else (``half``, ``unknown``,
   ``-1``, empty) is unknown and kept out of the binary scores. An optional ``subject``
   column groups images for bootstrap intervals.
3. A plain folder of images: no labels (landmark and fitting runs only).

A ``labels.csv`` wins over ``closed/``/``open/`` when both exist. Unreadable images (corrupt,
truncated) are listed and fail at load time, which the runner records as a per-sample
error; the run goes on.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets.base import Dataset, DatasetCard
from benchmark.datasets.images import IMAGE_EXTENSIONS, read_image
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN, Availability, FaceSample

logger = logging.getLogger(__name__)

ROOT_ENV = "EYEBENCH_PHOTO_FOLDER"
LABELS_FILE = "labels.csv"

_VALUES = {"open": EYE_OPEN, "0": EYE_OPEN, "o": EYE_OPEN,
           "closed": EYE_CLOSED, "close": EYE_CLOSED, "1": EYE_CLOSED, "c": EYE_CLOSED}
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
    layout=(
        "DIR/closed/*.jpg + DIR/open/*.jpg, or DIR/labels.csv "
        "(file,label | file,right_eye,left_eye)"
    ),
    revision="1",
)


def parse_state(value: str | None) -> int:
    """An eye label from a CSV cell: 0 open, 1 closed, -1 anything else."""
    if value is None:
        return EYE_UNKNOWN
    return _VALUES.get(str(value).strip().lower(), EYE_UNKNOWN)


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
            with open(labels, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                cols = [c.strip().lower() for c in (reader.fieldnames or [])]
                if "file" not in cols:
                    raise ValueError(f"{labels} has no 'file' column (columns: {', '.join(cols)}).")
                eye_cols = next((p for p in _EYE_COLUMNS if p[0] in cols and p[1] in cols), None)
                if "label" not in cols and eye_cols is None:
                    raise ValueError(
                        f"{labels} needs a 'label' column or 'right_eye' and 'left_eye' columns."
                    )
                for line, raw in enumerate(reader, start=2):
                    row = {k.strip().lower(): (v or "") for k, v in raw.items() if k}
                    rel = row["file"].strip()
                    if not rel:
                        raise ValueError(f"{labels}:{line}: empty file name.")
                    if eye_cols is not None:
                        state = np.array([parse_state(row[eye_cols[0]]),
                                          parse_state(row[eye_cols[1]])], np.int8)
                    else:
                        state = np.full(2, parse_state(row["label"]), np.int8)
                    sid = _sample_id(rel)
                    if sid in out:
                        raise ValueError(f"{labels}:{line}: {rel!r} is listed twice.")
                    out[sid] = (rel, state, row.get("subject", "").strip() or sid)
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
