"""NoW (Sanyal et al., CVPR 2019): shape from images, scored against neutral 3dMD scans.

Room: reading a user's copy of the NoW validation set in its official layout (see
``data_cards/now.md``); the suite cannot download or ship it.

Layout under the root (``$NOW_ROOT`` or ``--dataset-option now.root=...``)::

    imagepathsvalidation.txt                 lines <subject>/<challenge>/<image>.jpg
    NoW_Dataset/final_release_version/iphone_pictures/<subject>/<challenge>/<image>.jpg
    scans/<subject>/<scan>.obj               neutral scan, millimetres
    scans_lmks_onlypp/<subject>/<scan>.pp    its 7 landmarks (MeshLab picked points), mm

Sample ids are the image paths without extension (``<subject>/<challenge>/<image>``).
Scans are converted to metres; they are not pre-cropped (the metric crops them). NoW has
no eye labels: only the scan-to-mesh columns apply.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from benchmark.datasets.base import Dataset, DatasetCard
from benchmark.datasets.images import read_image
from benchmark.meshio import read_landmarks, read_mesh
from benchmark.types import Availability, FaceSample, Scan

IMAGE_DIR = Path("NoW_Dataset") / "final_release_version" / "iphone_pictures"
LIST_FILES = {"val": "imagepathsvalidation.txt"}
MM_TO_M = 1e-3

CARD = DatasetCard(
    name="now",
    description="NoW validation images (20 subjects) scored against neutral 3dMD scans.",
    card_file="now.md",
    license="NoW licence (non-commercial research; registration at now.is.tue.mpg.de)",
    citation="Sanyal, Bolkart, Feng, Black. Learning to Regress 3D Face Shape and Expression "
             "from an Image without 3D Supervision. CVPR 2019.",
    splits=("val",),
    default_split="val",
    has_scans=True,
    root_env="NOW_ROOT",
    layout="<root>/imagepathsvalidation.txt, NoW_Dataset/final_release_version/"
           "iphone_pictures/, scans/, scans_lmks_onlypp/",
)


class NowDataset(Dataset):
    """The NoW validation split from a user's copy."""

    card = CARD

    def availability(self) -> Availability:
        """Checks the root and the official layout."""
        base = super().availability()
        if not base.ok:
            return base
        missing = [p for p in (LIST_FILES[self.split], IMAGE_DIR, "scans", "scans_lmks_onlypp")
                   if not (self.root / p).exists()]
        if missing:
            return Availability(False, f"{self.root} lacks {', '.join(map(str, missing))}",
                                f"point NOW_ROOT at a folder laid out as: {CARD.layout}")
        return Availability(True)

    @functools.cached_property
    def _lines(self) -> list[str]:
        text = (self.root / LIST_FILES[self.split]).read_text(encoding="utf-8")
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    def sample_ids(self) -> list[str]:
        """``<subject>/<challenge>/<image>`` for every listed image."""
        return [str(Path(ln).with_suffix("")) for ln in self._lines]

    def revision(self) -> str:
        """Hash of the image list and of the scan and landmark files' names and sizes."""
        h = hashlib.sha256((self.root / LIST_FILES[self.split]).read_bytes())
        for folder in ("scans", "scans_lmks_onlypp"):
            for p in sorted((self.root / folder).glob("*/*")):
                h.update(f"{p.relative_to(self.root)}:{p.stat().st_size}".encode())
        return h.hexdigest()[:12]

    @functools.lru_cache(maxsize=32)  # noqa: B019 - one scan serves all images of a subject
    def _scan(self, subject: str) -> Scan:
        scans = sorted((self.root / "scans" / subject).glob("*.obj"))
        lmks = sorted((self.root / "scans_lmks_onlypp" / subject).glob("*.pp"))
        if not scans or not lmks:
            raise FileNotFoundError(
                f"NoW subject {subject!r} has no scan .obj or no .pp landmarks under {self.root}."
            )
        verts, faces = read_mesh(scans[0], allow_points=True)
        return Scan(
            points=(verts * MM_TO_M).astype(np.float32),
            landmarks7=(read_landmarks(lmks[0]) * MM_TO_M).astype(np.float32),
            faces=faces if len(faces) else None,
            cropped=False,
        )

    def load_sample(self, sample_id: str) -> FaceSample:
        """One image with its subject's scan (images load lazily)."""
        line = next((ln for ln in self._lines if str(Path(ln).with_suffix("")) == sample_id),
                    None)
        if line is None:
            raise KeyError(f"NoW {self.split} has no image {sample_id!r}.")
        subject, challenge = Path(line).parts[0], Path(line).parts[1]
        path = self.root / IMAGE_DIR / line
        return FaceSample(
            id=sample_id,
            subject=subject,
            image=functools.partial(read_image, path),
            scan=self._scan(subject),
            meta={"challenge": challenge, "path": str(path)},
        )
