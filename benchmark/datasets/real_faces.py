"""The research-only real-photo pool: its seeded split and the ``real-faces-val`` dataset.

The pool is ``../shared/data/real-faces`` (or ``$EYEBENCH_REAL_FACES``).

Room: the *one* place where the pool is split into a training part and a held-out validation
part. The eye-state detector's training, the ELAM+LDL network's training and the
``real-faces-val`` evaluation dataset all call :func:`split_real_faces`, so they agree on
which photo is held out.

The split is by *group* (a source photo or a person), never by file: a CEW closed face and
its two CEW eye patches share a group (the patches were cut from those faces), CEW faces cut
from the same source photo share a group, LFW eye patches of one person share a group, each
UTKFace photo is its own group (no identity is given). A group goes to validation when
``sha256(f"{seed}:{group}")`` falls below ``val_fraction``: the assignment of a photo never
depends on which other photos are present.

The pool is never copied into the project and never committed (see data_cards/real-faces.md).

Example::

    from benchmark.datasets.real_faces import split_real_faces
    split = split_real_faces("../shared/data/real-faces")     # seed 0, 20 % validation
    val_faces = [it for it in split.val if it.kind == "face"]
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmark.datasets.base import Dataset, DatasetCard, relative_path
from benchmark.datasets.images import read_image
from benchmark.types import EYE_CLOSED, EYE_OPEN, Availability, FaceSample

logger = logging.getLogger(__name__)

ROOT_ENV = "EYEBENCH_REAL_FACES"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where the pool sits in the shared workspace (used when ``$EYEBENCH_REAL_FACES`` is unset).
DEFAULT_ROOT = PROJECT_ROOT.parent / "shared" / "data" / "real-faces"
DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2

_LABELS = {"closed": EYE_CLOSED, "open": EYE_OPEN}
#: CEW eye-patch side letter -> eye index. Checked by template matching the patches into
#: their source faces: "L" patches sit on the image's right, i.e. the subject's left eye
#: (landmarks 42-47, eye 1); "R" patches are eye 0.
PATCH_EYE = {"L": 1, "R": 0}


@dataclasses.dataclass(frozen=True)
class PoolItem:
    """One file of the pool.

    Attributes:
        file: path relative to the pool root (``closed/x.jpg``, ``eyes/open/y_L.jpg``).
        label: ``EYE_CLOSED`` or ``EYE_OPEN`` (the image's label: both eyes for faces).
        kind: ``face`` (a face photo) or ``eye`` (a 24x24 grey CEW eye patch).
        eye: eye index of a patch (0 = subject's right), None for faces.
        group: split unit (source photo or person), prefixed by its source.
    """

    file: str
    label: int
    kind: Literal["face", "eye"]
    eye: int | None
    group: str


@dataclasses.dataclass(frozen=True)
class PoolSplit:
    """The pool split into training and held-out validation items.

    Attributes:
        root: the pool root.
        seed: split seed.
        val_fraction: target fraction of groups held out.
        train: items used for training.
        val: held-out items (never train on these).
    """

    root: Path
    seed: int
    val_fraction: float
    train: tuple[PoolItem, ...]
    val: tuple[PoolItem, ...]

    def part(self, name: str) -> tuple[PoolItem, ...]:
        """``train`` or ``val`` items."""
        if name not in ("train", "val"):
            raise ValueError(f"pool part must be 'train' or 'val', got {name!r}.")
        return self.train if name == "train" else self.val


def default_root() -> Path | None:
    """``$EYEBENCH_REAL_FACES``, else the shared-workspace pool if it exists, else None."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT if DEFAULT_ROOT.is_dir() else None


def _group(kind: str, label: str, name: str) -> str:
    stem = Path(name).name
    if kind == "eye":
        stem = re.sub(r"_[LR]\.[A-Za-z]+$", "", stem)
    else:
        stem = re.sub(r"\.[A-Za-z]+$", "", stem)
    if stem.startswith("closed_eye_"):
        # CEW: "<source photo>_face_<k>"; faces cut from one source photo share a group.
        return "cew:" + re.sub(r"_face_\d+$", "", stem)
    if kind == "eye" and label == "open":
        # LFW eye patches "<First_Last>_<nnnn>": group by person.
        return "lfw:" + re.sub(r"_\d+$", "", stem)
    return "utk:" + stem


def _in_val(group: str, seed: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def _read_labels(root: Path, folder: str) -> list[dict[str, str]]:
    """Rows ``file``, ``label`` (``eye``) and ``where`` (``labels.csv:line`` for messages)."""
    path = root / folder / "labels.csv"
    if path.is_file():
        rows_csv = []
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            for raw in reader:
                where = f"{path}:{reader.line_num}"
                row = {k: (v or "") for k, v in raw.items() if k}
                if "file" not in row or "label" not in row:
                    raise ValueError(f"{where}: needs 'file' and 'label' columns.")
                row["file"] = relative_path(row["file"], where)
                row["where"] = where
                rows_csv.append(row)
        return rows_csv
    # no labels file: list the folder(s) (faces: closed/, open/; eyes: eyes/closed, eyes/open)
    rows = []
    base = root / folder
    for label in ("closed", "open"):
        sub = base if folder in ("closed", "open") else base / label
        if folder in ("closed", "open") and folder != label:
            continue
        if sub.is_dir():
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
                    row = {"file": f.relative_to(root).as_posix(), "label": label,
                           "where": str(f)}
                    m = re.search(r"_([LR])\.[A-Za-z]+$", f.name)
                    if m:
                        row["eye"] = m.group(1)
                    rows.append(row)
    return rows


def list_pool(root: str | Path) -> list[PoolItem]:
    """Every labelled file of the pool, in a fixed order.

    Args:
        root: the pool root (``closed/``, ``open/``, ``eyes/`` with their ``labels.csv``).

    Returns:
        Faces then eye patches, each sorted by file.

    Raises:
        ValueError: the root has none of the expected folders.
    """
    root = Path(root)
    items: list[PoolItem] = []
    for folder, kind in (("closed", "face"), ("open", "face"), ("eyes", "eye")):
        for row in _read_labels(root, folder):
            label = row["label"].strip().lower()
            if label not in _LABELS:
                raise ValueError(f"{row['where']}: unknown label {row['label']!r} (accepted: "
                                 f"{', '.join(map(repr, _LABELS))}).")
            eye = PATCH_EYE.get(row.get("eye", "").strip().upper()) if kind == "eye" else None
            if kind == "eye" and eye is None:
                raise ValueError(f"{row['where']}: eye patch {row['file']!r} has no L/R.")
            items.append(PoolItem(file=row["file"], label=_LABELS[label], kind=kind,  # type: ignore[arg-type]
                                  eye=eye, group=_group(kind, label, row["file"])))
    if not items:
        raise ValueError(
            f"{str(root)!r} holds no real-faces pool (expected closed/, open/ and eyes/ with "
            "labels.csv files)."
        )
    return sorted(items, key=lambda it: (it.kind != "face", it.file))


def split_real_faces(
    root: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> PoolSplit:
    """Splits the pool into training and held-out validation items (by group, seeded).

    Args:
        root: pool root (default :func:`default_root`).
        seed: split seed; the shipped detector and ``real-faces-val`` use 0.
        val_fraction: fraction of groups held out, in (0, 1).

    Returns:
        The :class:`PoolSplit`.

    Raises:
        ValueError: no root, or ``val_fraction`` outside (0, 1).
        FileNotFoundError: the root does not exist.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    root = Path(root) if root is not None else default_root()
    if root is None:
        raise ValueError(f"no real-faces pool: set {ROOT_ENV}=/path/to/real-faces.")
    if not root.is_dir():
        raise FileNotFoundError(f"real-faces pool {str(root)!r} is not a folder.")
    train, val = [], []
    for item in list_pool(root):
        (val if _in_val(item.group, seed, val_fraction) else train).append(item)
    return PoolSplit(root=root, seed=seed, val_fraction=val_fraction, train=tuple(train),
                     val=tuple(val))


CARD = DatasetCard(
    name="real-faces-val",
    description=(
        "held-out part of the research-only real-photo pool: CEW closed-eye and UTKFace "
        "open-eye faces (labels per image, no scans)"
    ),
    card_file="real-faces.md",
    license="research only (CEW: research use; UTKFace: non-commercial research); never shipped",
    citation=(
        "Song, Tan, Liu, Chen. Eyes closeness detection from still images with multi-scale "
        "histograms of principal oriented gradients. Pattern Recognition 2014 (CEW). "
        "Zhang, Song, Qi. Age progression/regression by conditional adversarial autoencoder. "
        "CVPR 2017 (UTKFace)."
    ),
    splits=("val", "train"),
    default_split="val",
    has_scans=False,
    has_eye_labels=True,
    redistributable=False,
    root_env=ROOT_ENV,
    layout="closed/*.jpg + open/*.jpg with labels.csv (and eyes/), see data_cards/real-faces.md",
    revision="1",
)


class RealFacesDataset(Dataset):
    """Face photos of one part of the pool split (default: the held-out ``val`` part).

    Every sample carries ``eye_state`` = (label, label) and ``image_state`` = label; there is
    no scan and no landmark annotation. Options: ``seed`` (default 0) and ``val_fraction``
    (default 0.2) of :func:`split_real_faces`.
    """

    card = CARD
    option_keys = ("seed", "val_fraction")

    def __init__(
        self, split: str | None = None, root: str | Path | None = None, **options: Any
    ) -> None:
        super().__init__(split=split, root=root, **options)
        if self.root is None:
            self.root = default_root()
        self.seed = int(options.get("seed", DEFAULT_SEED))
        self.val_fraction = float(options.get("val_fraction", DEFAULT_VAL_FRACTION))
        self._items: dict[str, PoolItem] | None = None

    def availability(self) -> Availability:
        """Skipped with the reason when the pool is absent."""
        if self.root is None:
            return Availability(
                False,
                "the research-only real-faces pool is not present",
                f"set {ROOT_ENV}=/path/to/real-faces (closed/, open/, eyes/ with labels.csv)",
            )
        if not (self.root / "closed").is_dir() or not (self.root / "open").is_dir():
            return Availability(
                False,
                f"{str(self.root)!r} lacks closed/ and open/",
                f"point {ROOT_ENV} at the real-faces pool folder",
            )
        try:
            self._index()
        except (ValueError, OSError) as exc:  # a malformed labels.csv: file and line named
            return Availability(False, str(exc), "fix the pool's labels.csv files")
        return Availability(True)

    def _index(self) -> dict[str, PoolItem]:
        if self._items is None:
            split = split_real_faces(self.root, self.seed, self.val_fraction)
            self._items = {
                _sample_id(it.file): it for it in split.part(self.split) if it.kind == "face"
            }
        return self._items

    def sample_ids(self) -> list[str]:
        """Face files of the chosen part, closed first, sorted."""
        return list(self._index())

    def load_sample(self, sample_id: str) -> FaceSample:
        """One labelled photo (lazy image)."""
        index = self._index()
        if sample_id not in index:
            raise KeyError(f"real-faces-val ({self.split}) has no sample {sample_id!r}.")
        item = index[sample_id]
        path = self.root / item.file  # type: ignore[operator]
        return FaceSample(
            id=sample_id,
            subject=item.group,
            image=lambda p=path: read_image(p),
            eye_state=np.full(2, item.label, np.int8),
            image_state=item.label,
            meta={"file": item.file, "source": item.group.split(":")[0]},
        )

    def revision(self) -> str:
        """Hash of the split (files, labels, sizes), seed and fraction."""
        h = hashlib.sha256(f"{self.card.revision}:{self.seed}:{self.val_fraction}".encode())
        for sid, item in self._index().items():
            path = self.root / item.file  # type: ignore[operator]
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{sid}:{item.label}:{size}".encode())
        return h.hexdigest()[:12]


def _sample_id(file: str) -> str:
    stem = file.rsplit(".", 1)[0] if file.lower().endswith((".jpg", ".jpeg", ".png")) else file
    return stem.replace("/", "-")
