"""``synthetic``: the embedded default benchmark, generated on first use and cached.

Room: the loader the runner sees. Generation lives in ``benchmark/synthetic/`` (parameters
and seeding in ``config.py``, faces in ``scene.py``, cache in ``store.py``); the card is
``data_cards/synthetic.md``.

Options (``--dataset-option synthetic.<name>=<value>``; strings are converted):

* ``n``: samples (default 300 for ``test``, 2000 for ``train``; sample ``i`` is the same for
  every ``n``, so growing a split only generates the new samples);
* ``seed`` (0), ``image_size`` (224) and any other :class:`SyntheticConfig` field;
* ``scans``: generate NoW-style scans (default: ``test`` yes, ``train`` no);
* ``workers``: generation processes (default 2); ``progress``: show a progress bar;
* ``cache_dir``: cache root (default ``$EYEBENCH_CACHE`` or ``<project>/.cache``).

Example::

    ds = SyntheticDataset(split="test", n=30)
    s = ds.load_sample(ds.sample_ids()[0])    # generates the 30 samples on first use
    s.eye_state, s.eye_openness, s.scan.points.shape, s.meta["eye_category"]
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets.base import Dataset, DatasetCard
from benchmark.synthetic.config import (
    DEFAULT_N,
    GENERATOR_VERSION,
    SyntheticConfig,
    sample_id,
    subject_of,
)
from benchmark.synthetic.store import CorruptSample, SyntheticStore
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN, FaceSample, Scan

logger = logging.getLogger(__name__)

_LOADER_OPTIONS = ("n", "scans", "workers", "progress", "cache_dir")
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(SyntheticConfig)}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}.")
    return bool(value)


def _coerce(name: str, value: Any) -> Any:
    default = _CONFIG_FIELDS[name].default
    if isinstance(default, tuple):
        parts = value.split(",") if isinstance(value, str) else list(value)
        return tuple(type(d)(p) for d, p in zip(default, parts, strict=True))
    return type(default)(value)


class SyntheticDataset(Dataset):
    """The synthetic eye-state benchmark (see the module docstring for options).

    Raises:
        ValueError: an unknown option or a value that does not parse.
    """

    card = DatasetCard(
        name="synthetic",
        description="embedded synthetic faces (ICT-FaceKit) with per-eye states, GT meshes, "
                    "scans; generated on first use",
        card_file="synthetic.md",
        license="MIT (generated from ICT-FaceKit, MIT)",
        citation="Li et al., Learning Formation of Physically-Based Face Attributes, CVPR 2020 "
                 "(ICT-FaceKit)",
        splits=("test", "train"),
        default_split="test",
        has_scans=True,
        has_eye_labels=True,
        has_gt_mesh=True,
        redistributable=True,
        gt_face_model="ict",
        revision=GENERATOR_VERSION,
    )
    option_keys = (*_LOADER_OPTIONS, *_CONFIG_FIELDS, "root")

    def __init__(self, split: str | None = None, root: str | Path | None = None,
                 **options: Any) -> None:
        super().__init__(split=split, root=root, **options)
        unknown = sorted(set(options) - set(_LOADER_OPTIONS) - set(_CONFIG_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown synthetic dataset option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted((*_LOADER_OPTIONS, *_CONFIG_FIELDS)))}."
            )
        try:
            cfg = {k: _coerce(k, v) for k, v in options.items() if k in _CONFIG_FIELDS}
            self.config = SyntheticConfig(**cfg)
            self.n = int(options.get("n", DEFAULT_N[self.split]))
            with_scans = _as_bool(options.get("scans", self.split == "test"))
            self.workers = int(options.get("workers", min(2, os.cpu_count() or 1)))
            self.progress = _as_bool(options.get("progress", True))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad synthetic dataset option: {exc}") from exc
        if self.n < 1:
            raise ValueError(f"synthetic dataset option n must be at least 1, got {self.n}.")
        cache_dir = options.get("cache_dir") or root
        self.store = SyntheticStore(self.config, self.split,
                                    Path(cache_dir).expanduser() if cache_dir else None,
                                    with_scans=with_scans)
        self._ready = False

    # ------------------------------------------------------------------ contract

    def sample_ids(self) -> list[str]:
        """``<split>-000000`` ... in generation order."""
        return [sample_id(self.split, i) for i in range(self.n)]

    def revision(self) -> str:
        """Generation key (parameters, generator version, ICT hash) plus the sample count."""
        return f"{self.store.key}-n{self.n}"

    def prepare(self) -> None:
        """Generates the missing samples (parallel, with a progress bar); idempotent."""
        if not self._ready:
            self.store.ensure(self.n, workers=self.workers, progress=self.progress)
            self._ready = True

    def load_sample(self, sample_id: str) -> FaceSample:
        """Loads one sample, generating the split first if needed.

        Raises:
            KeyError: the id is not in this split (or beyond ``n``).
        """
        index = self._generated(sample_id)
        try:
            d, png = self.store.read(index)
            subj = self._subject(subject_of(self.config, index))
        except CorruptSample as exc:
            logger.warning("synthetic cache damaged (%s); regenerating %s", exc, sample_id)
            self.store.discard_subject(subject_of(self.config, index))
            self._subject.cache_clear()
            self._ready = False
            self.prepare()
            d, png = self.store.read(index)
            subj = self._subject(subject_of(self.config, index))
        return self._sample(sample_id, d, png, subj)

    def neutral_vertices(self, sample_id: str) -> np.ndarray:
        """The sample's subject without expression: (V, 3) float32 metres, full ICT mesh.

        Raises:
            KeyError: the id is not in this split (or beyond ``n``).
        """
        from benchmark.synthetic.scene import gt_vertices
        from methods.facemodel.ict import load_ict

        index = self._generated(sample_id)
        subj = self._subject(subject_of(self.config, index))
        model = load_ict("full")
        return gt_vertices(model, subj["id_coeffs"], np.zeros(model.n_exp),
                           subj["displacement"])

    def expression_coeffs(self, sample_id: str) -> np.ndarray:
        """The sample's (53,) float32 ICT expression weights (blinks included).

        Raises:
            KeyError: the id is not in this split (or beyond ``n``).
        """
        index = self._generated(sample_id)
        d, _ = self.store.read(index)
        return np.asarray(d["exp_coeffs"], np.float32)

    # ------------------------------------------------------------------ helpers

    def _generated(self, sid: str) -> int:
        """The sample's index, generating the split first if its file is missing."""
        index = self._index(sid)
        if not self.store.npz_path(index).is_file():
            self.prepare()
        return index

    def _index(self, sid: str) -> int:
        prefix = f"{self.split}-"
        try:
            index = int(sid[len(prefix):]) if sid.startswith(prefix) else -1
        except ValueError:
            index = -1
        if not 0 <= index < self.n or sample_id(self.split, index) != sid:
            raise KeyError(f"no sample {sid!r} in synthetic/{self.split} (n={self.n}).")
        return index

    @functools.lru_cache(maxsize=16)  # noqa: B019 - per-instance subjects, bounded
    def _subject(self, subject: int) -> dict[str, np.ndarray]:
        return self.store.read_subject(subject)

    def _sample(self, sid: str, d: dict[str, Any], png: Path,
                subj: dict[str, np.ndarray]) -> FaceSample:
        from benchmark.synthetic.scene import gt_vertices
        from methods.facemodel.ict import load_ict

        model = load_ict("full")
        verts = gt_vertices(model, subj["id_coeffs"], d["exp_coeffs"], subj["displacement"])
        states = d["eye_state"].astype(np.int8)
        if (states == EYE_CLOSED).all():
            image_state = EYE_CLOSED
        elif (states == EYE_OPEN).all():
            image_state = EYE_OPEN
        else:
            image_state = EYE_UNKNOWN
        scan = None
        if "scan_points" in d:
            scan = Scan(points=d["scan_points"].astype(np.float32),
                        landmarks7=d["landmarks7"].astype(np.float32), cropped=True)
        meta = dict(d["meta"])
        meta["landmarks3d"] = d["landmarks3d"].astype(np.float32)
        meta["rotation"] = d["rotation"].astype(np.float32)
        meta["translation"] = d["translation"].astype(np.float32)
        return FaceSample(
            id=sid,
            subject=d["subject"],
            image=functools.partial(_read_png, png),
            landmarks2d=d["landmarks2d"].astype(np.float32),
            eye_state=states,
            eye_openness=d["eye_openness"].astype(np.float32),
            image_state=image_state,
            scan=scan,
            gt_vertices=verts,
            gt_topology="ict-full",
            meta=meta,
        )


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
