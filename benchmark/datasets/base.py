"""The dataset contract: a card (in ``data_cards/``) plus a loader of :class:`FaceSample`.

Room: what every evaluation dataset looks like to the runner. A loader lists sample ids
cheaply and loads one sample on demand, so runs can resume and stop early (``--limit``).
Real datasets read a user-supplied root (option, then environment variable); when it is
missing the dataset is *skipped* with the layout it expects, never a crash.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from benchmark.types import Availability, FaceSample

#: Folder of the dataset cards, relative to the project root.
CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"


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
        has_eye_labels: samples carry per-eye or per-image eye states.
        has_gt_mesh: samples carry the ground-truth mesh (synthetic data).
        redistributable: its images may appear in committed plots (false for research-only
            or licence-restricted photos: plots then show meshes only).
        root_env: environment variable holding the dataset root (real datasets).
        layout: one-line description of the expected folder layout (for error messages).
        revision: bump when the loader's output changes.
    """

    name: str
    description: str
    card_file: str
    license: str
    citation: str = ""
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    has_scans: bool = False
    has_eye_labels: bool = False
    has_gt_mesh: bool = False
    redistributable: bool = False
    root_env: str | None = None
    layout: str = ""
    revision: str = "1"


class Dataset(abc.ABC):
    """Base class of every dataset loader.

    Args:
        split: which split to load (defaults to the card's ``default_split``).
        root: dataset root for real datasets (else ``card.root_env`` is read).
        options: loader options (e.g. synthetic generation size and seed).
    """

    card: ClassVar[DatasetCard]

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
