"""The dataset contract: a card (in ``data_cards/``) plus a loader of :class:`FaceSample`.

Room: what every evaluation dataset looks like to the runner. A loader lists sample ids
cheaply and loads one sample on demand, so runs can resume and stop early (``--limit``).
Real datasets read a user-supplied root (option, then environment variable); when it is
missing the dataset is *skipped* with the layout it expects, never a crash.

Per-sample problems are data, as in the rest of the suite: a loader that cannot build one
sample's reference (a NoW subject without its scan, a malformed ``.pp``) returns the sample
with the reason under ``meta[LOAD_ERROR]``, and :func:`checked_input` (called by the runner
before any method sees a sample) turns that, or an image that does not decode, into a
:class:`SampleError`: an ``error`` row naming the file, for every method, including those that
never read the image. Paths read from a dataset's own files (``labels.csv``, image lists) must
stay under its root (:func:`relative_path`).
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import numpy as np

from benchmark.types import Availability, FaceSample

#: Folder of the dataset cards, relative to the project root.
CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"

#: ``FaceSample.meta`` key holding a per-sample loading problem (one line naming the file).
LOAD_ERROR = "load_error"
#: ``FaceSample.meta`` key: the sample's scan is a neutral face (see ``DatasetCard``).
SCANS_NEUTRAL = "scans_neutral"


class SampleError(ValueError):
    """A sample whose inputs cannot be used (unreadable image, missing or malformed reference)."""


def relative_path(value: str, where: str, root: str = "the dataset root") -> str:
    """Checks a path read from a dataset file: relative, and never leaving the dataset root.

    Args:
        value: the path as written (``/`` or backslash separators).
        where: ``file:line`` of the value, for the message.
        root: what the path is relative to, for the message.

    Returns:
        The path with ``/`` separators.

    Raises:
        ValueError: an empty, absolute (``/x``, ``C:/x``) or ``..``-containing path.
    """
    text = value.strip().replace("\\", "/")
    if not text:
        raise ValueError(f"{where}: empty file name.")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise ValueError(f"{where}: {value.strip()!r} is an absolute path; paths must be "
                         f"relative to {root}.")
    if ".." in PurePosixPath(text).parts:
        raise ValueError(f"{where}: {value.strip()!r} points outside {root} ('..').")
    return text


def load_sample_or_error(dataset: Dataset, sample_id: str,
                         raise_errors: bool = False) -> FaceSample:
    """``dataset.load_sample(sample_id)``; a loader exception becomes ``meta[LOAD_ERROR]``.

    Args:
        dataset: the loader.
        sample_id: one of its ids.
        raise_errors: let the loader's exception propagate instead (debugging).

    Returns:
        The sample, or a placeholder (no image, no labels, subject = id) carrying the
        loader's message under ``meta[LOAD_ERROR]``. A sample of a dataset whose card says
        ``scans_neutral`` carries ``meta[SCANS_NEUTRAL] = True`` (read by the scoring).
    """
    try:
        sample = dataset.load_sample(sample_id)
        if dataset.card.scans_neutral:
            sample.meta[SCANS_NEUTRAL] = True
        return sample
    except Exception as exc:
        if raise_errors:
            raise
        return FaceSample(id=sample_id, subject=sample_id, image=np.zeros((1, 1, 3), np.uint8),
                          meta={LOAD_ERROR: f"{type(exc).__name__}: {exc}"})


def checked_input(sample: FaceSample) -> FaceSample:
    """A sample ready for a method: its loading problem raised, its image decoded once.

    The runner calls this before predicting, so an unreadable image is an error for every
    method (also for those that never look at pixels), and methods that do read the image
    get the decoded array without a second decode.

    Args:
        sample: a sample from a loader (lazy or in-memory image).

    Returns:
        A copy whose ``image`` is the decoded array (the loader's own object is untouched).

    Raises:
        SampleError: ``meta[LOAD_ERROR]`` is set, or the image does not load (the message
            names the file).
    """
    if sample.meta.get(LOAD_ERROR):
        raise SampleError(str(sample.meta[LOAD_ERROR]))
    if not callable(sample.image):
        return sample
    try:
        image = sample.load_image()
    except Exception as exc:
        msg = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise SampleError(f"unreadable input: {msg}") from exc
    return dataclasses.replace(sample, image=image)


@dataclasses.dataclass(frozen=True)
class DatasetCard:
    """Metadata of a dataset, importable without loading it.

    Attributes:
        name: registry id (lower-kebab).
        description: one line for listings.
        card_file: file name of the full card in ``data_cards/``.
        license: licence of the data.
        citation: how to cite it.
        splits: available splits; ``default_split`` is evaluated by default.
        default_split: the split ``run`` uses unless told otherwise.
        has_scans: samples carry a reference scan (scan-to-mesh metrics apply).
        scans_neutral: the scans show a neutral face (NoW, REALY), so scan-to-mesh scores a
            prediction's ``neutral_vertices`` when it has them; False when the scans carry
            the photo's expression (the synthetic split). Eye metrics always read the
            expressive mesh.
        has_eye_labels: samples carry per-eye or per-image eye states.
        has_gt_mesh: samples carry the ground-truth mesh (synthetic data).
        redistributable: its images may appear in committed plots (false for research-only
            or licence-restricted photos: plots then show meshes only).
        root_env: environment variable holding the dataset root (real datasets).
        layout: one-line description of the expected folder layout (for error messages).
        revision: bump when the loader's output changes.
        gt_face_model: family of the face model the ground-truth meshes come from (``"ict"``
            for the synthetic set), or empty; methods whose topology belongs to the same
            family (``ict-narrow``: ``"ict"``) are marked on the leaderboard, since they can
            express most of the ground truth's shape.
        instance_keyed: records carry a digest of the root in their key (any folder of
            photos, NoW copies): two roots evaluated into one output folder never overwrite
            each other.
    """

    name: str
    description: str
    card_file: str
    license: str
    citation: str = ""
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    has_scans: bool = False
    scans_neutral: bool = False
    has_eye_labels: bool = False
    has_gt_mesh: bool = False
    redistributable: bool = False
    root_env: str | None = None
    layout: str = ""
    revision: str = "1"
    gt_face_model: str = ""
    instance_keyed: bool = False


class Dataset(abc.ABC):
    """Base class of every dataset loader.

    Args:
        split: which split to load (defaults to the card's ``default_split``).
        root: dataset root for real datasets (else ``card.root_env`` is read).
        options: loader options (e.g. synthetic generation size and seed).
    """

    card: ClassVar[DatasetCard]

    #: Option keys the loader reads (``--dataset-option NAME.KEY=VALUE``) besides ``root``
    #: (accepted when the card has a ``root_env``); the runner refuses any other key.
    option_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def accepted_options(cls) -> list[str]:
        """Every option key the loader accepts."""
        return sorted(set(cls.option_keys) | ({"root"} if cls.card.root_env else set()))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raises ``ValueError`` (one line, the valid keys listed) for an unknown key."""
        unknown = sorted(set(options) - set(cls.accepted_options()))
        if unknown:
            valid = ", ".join(cls.accepted_options()) or "none"
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset "
                             f"{cls.card.name!r}; valid keys: {valid}.")

    def __init__(
        self, split: str | None = None, root: str | Path | None = None, **options: Any
    ) -> None:
        self.split = split or self.card.default_split
        if self.split not in self.card.splits:
            raise ValueError(
                f"dataset {self.card.name!r} has no split {self.split!r}; "
                f"choose one of {', '.join(self.card.splits)}."
            )
        if root is None and self.card.root_env:
            root = os.environ.get(self.card.root_env)
        self.root = Path(root).expanduser() if root else None
        self.options = options

    @abc.abstractmethod
    def sample_ids(self) -> list[str]:
        """Ids of every sample in the split, in a fixed order."""

    @abc.abstractmethod
    def load_sample(self, sample_id: str) -> FaceSample:
        """Loads one sample by id."""

    @abc.abstractmethod
    def revision(self) -> str:
        """Identity of the data (content hash or generation-parameter hash), for caches."""

    def availability(self) -> Availability:
        """Whether the data is present; real datasets check their root and layout."""
        if self.card.root_env is None:
            return Availability(True)
        if self.root is None:
            return Availability(
                False,
                f"no data root given ({self.card.layout})" if self.card.layout else "no data root",
                f"set {self.card.root_env}=/path or --dataset-option {self.card.name}.root=/path",
            )
        if not self.root.is_dir():
            return Availability(
                False,
                f"data root {str(self.root)!r} is not a folder",
                f"point {self.card.root_env} at the dataset folder",
            )
        return Availability(True)

    def __iter__(self) -> Iterator[FaceSample]:
        for sid in self.sample_ids():
            yield self.load_sample(sid)

    def __len__(self) -> int:
        return len(self.sample_ids())
