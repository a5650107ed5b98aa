"""NoW (Sanyal et al., CVPR 2019): shape from images, scored against neutral 3dMD scans.

Room: reading a user's copy of the NoW validation set in its official layout (see
``data_cards/now.md``); the suite cannot download or ship it.

Layout under the root (``$NOW_ROOT`` or ``--dataset-option now.root=...``)::

    imagepathsvalidation.txt                 lines <subject>/<challenge>/<image>.jpg
    NoW_Dataset/final_release_version/iphone_pictures/<subject>/<challenge>/<image>.jpg
    scans/<subject>/<scan>.obj               neutral scan, millimetres
    scans_lmks_onlypp/<subject>/<scan>.pp    its 7 landmarks (MeshLab picked points), mm

Sample ids are the image paths without extension (``<subject>/<challenge>/<image>``).
Split ``test`` reads ``imagepathstest.txt`` and has no scans (NoW scores the test split on
submission): run a method on it, then ``python -m benchmark export --format
now-submission`` writes the files to send.
Scans are converted to metres; they are not pre-cropped (the metric crops them). NoW has
no eye labels: only the scan-to-mesh columns apply. Images are read with their EXIF
orientation applied (iPhone photos).

Problems are reported where they belong: a list line that is absolute or holds ``..`` makes
the dataset unavailable (file and line named); a subject without its scan or ``.pp``, or
with a malformed one, and an unreadable image are per-sample ``error`` rows naming the file
(the other subjects are scored).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np

from benchmark.datasets.base import LOAD_ERROR, Dataset, DatasetCard, relative_path
from benchmark.datasets.images import read_image
from benchmark.meshio import read_landmarks, read_mesh
from benchmark.types import Availability, FaceSample, Scan

logger = logging.getLogger(__name__)

IMAGE_DIR = Path("NoW_Dataset") / "final_release_version" / "iphone_pictures"
LIST_FILES = {"val": "imagepathsvalidation.txt", "test": "imagepathstest.txt"}
#: Splits whose scans are public (the test scans stay with the NoW maintainers).
SCANNED_SPLITS = ("val",)
MM_TO_M = 1e-3

CARD = DatasetCard(
    name="now",
    description="NoW validation images (20 subjects) scored against neutral 3dMD scans.",
    card_file="now.md",
    license="NoW licence (non-commercial research; registration at now.is.tue.mpg.de)",
    citation="Sanyal, Bolkart, Feng, Black. Learning to Regress 3D Face Shape and Expression "
             "from an Image without 3D Supervision. CVPR 2019.",
    splits=("val", "test"),  # test: images only, for a submission (``export``)
    default_split="val",
    has_scans=True,
    scans_neutral=True,  # neutral 3dMD scans: scan-to-mesh scores the neutral mesh
    root_env="NOW_ROOT",
    instance_keyed=True,
    layout="<root>/imagepathsvalidation.txt, NoW_Dataset/final_release_version/"
           "iphone_pictures/, scans/, scans_lmks_onlypp/",
    revision="2",  # 2: EXIF orientation applied; per-sample scan errors
)


class NowDataset(Dataset):
    """The NoW validation split from a user's copy."""

    card = CARD

    def availability(self) -> Availability:
        """Checks the root and the official layout."""
        base = super().availability()
        if not base.ok:
            return base
        needed = (LIST_FILES[self.split], IMAGE_DIR) + (
            ("scans", "scans_lmks_onlypp") if self.split in SCANNED_SPLITS else ())
        missing = [p for p in needed if not (self.root / p).exists()]
        if missing:
            return Availability(False, f"{self.root} lacks {', '.join(map(str, missing))}",
                                f"point NOW_ROOT at a folder laid out as: {CARD.layout}")
        try:
            n = len(self._index)
        except (ValueError, OSError) as exc:
            return Availability(False, str(exc), f"fix the image list ({CARD.layout})")
        if n == 0:
            return Availability(False, f"{self.root / LIST_FILES[self.split]} lists no image",
                                f"expected lines <subject>/<challenge>/<image>.jpg ({CARD.layout})")
        return Availability(True)

    @functools.cached_property
    def _index(self) -> dict[str, str]:
        """Sample id -> image path relative to the image folder, in list order.

        Raises:
            ValueError: a line is absolute, leaves the image folder, or lacks the
                ``<subject>/<challenge>/<image>`` form (file:line named). A repeated line is
                evaluated once (with a warning).
        """
        list_file = self.root / LIST_FILES[self.split]
        out: dict[str, str] = {}
        text = list_file.read_text(encoding="utf-8-sig")
        for lineno, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{list_file}:{lineno}"
            rel = relative_path(raw, where)
            parts = Path(rel).parts
            if len(parts) < 3:
                raise ValueError(f"{where}: {raw.strip()!r} is not "
                                 f"<subject>/<challenge>/<image>.")
            sid = str(Path(rel).with_suffix(""))
            if sid in out:
                logger.warning("%s: %r is listed twice; evaluated once.", where, raw.strip())
                continue
            out[sid] = rel
        return out

    def sample_ids(self) -> list[str]:
        """``<subject>/<challenge>/<image>`` for every listed image."""
        return list(self._index)

    def revision(self) -> str:
        """Hash of the image list, the listed images' sizes and the scan and landmark files'."""
        h = hashlib.sha256(f"{CARD.revision}:".encode())
        h.update((self.root / LIST_FILES[self.split]).read_bytes())
        for rel in self._index.values():
            img = self.root / IMAGE_DIR / rel
            h.update(f"{rel}:{img.stat().st_size if img.is_file() else -1}".encode())
        for folder in ("scans", "scans_lmks_onlypp") if self.split in SCANNED_SPLITS else ():
            for p in sorted((self.root / folder).glob("*/*")):
                h.update(f"{p.relative_to(self.root)}:{p.stat().st_size}".encode())
        return h.hexdigest()[:12]

    @functools.lru_cache(maxsize=32)  # noqa: B019 - one scan serves all images of a subject
    def _scan(self, subject: str) -> Scan:
        """The subject's scan in metres; raises ``FileNotFoundError``/``ValueError`` naming it."""
        for folder, pattern, what in (("scans", "*.obj", "scan"),
                                      ("scans_lmks_onlypp", "*.pp", "scan landmarks")):
            if not any((self.root / folder / subject).glob(pattern)):
                raise FileNotFoundError(f"NoW subject {subject!r} has no {what}: no "
                                        f"{self.root / folder / subject / pattern}.")
        scans = sorted((self.root / "scans" / subject).glob("*.obj"))
        lmks = sorted((self.root / "scans_lmks_onlypp" / subject).glob("*.pp"))
        verts, faces = read_mesh(scans[0], allow_points=True)
        return Scan(
            points=(verts * MM_TO_M).astype(np.float32),
            landmarks7=(read_landmarks(lmks[0]) * MM_TO_M).astype(np.float32),
            faces=faces if len(faces) else None,
            cropped=False,
        )

    def load_sample(self, sample_id: str) -> FaceSample:
        """One image with its subject's scan (images load lazily).

        A scan that is missing or unreadable does not raise: the sample carries the reason
        under ``meta[LOAD_ERROR]`` (no scan), which the runner records as an ``error`` row.
        """
        line = self._index.get(sample_id)
        if line is None:
            raise KeyError(f"NoW {self.split} has no image {sample_id!r}.")
        subject, challenge = Path(line).parts[0], Path(line).parts[1]
        path = self.root / IMAGE_DIR / line
        meta = {"challenge": challenge, "path": str(path)}
        scan = None
        if self.split in SCANNED_SPLITS:
            try:
                scan = self._scan(subject)
            except (OSError, ValueError) as exc:
                meta[LOAD_ERROR] = str(exc)
        return FaceSample(
            id=sample_id,
            subject=subject,
            image=functools.partial(read_image, path),
            scan=scan,
            meta=meta,
        )
