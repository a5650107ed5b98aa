"""REALY (Chai et al., ECCV 2022): region-wise shape error against LYHM/Headspace scans.

Room: reading a user's copy of the REALY benchmark in its official layout (see
``data_cards/realy.md``); the suite cannot download or ship it. Scoring is
``metrics.realy`` (called from ``benchmark.scoring``).

Layout under the root (``$REALY_ROOT`` or ``--dataset-option realy.root=...``)::

    REALY_image/<image set>/<subject>_<...>.jpg   images (default set: the frontal crops)
    REALY_HIFI3D_keypoints/<subject>.obj          85 keypoints (vertices only), scan unit
    REALY_scan_region/<subject>/nose.obj          the four ground-truth regions, scan unit
    REALY_scan_region/<subject>/mouth.obj
    REALY_scan_region/<subject>/forehead.obj
    REALY_scan_region/<subject>/cheek.obj
    metrical_scale.txt                            one mm-per-unit factor per line, subject 1..

The first three folders are the benchmark download; ``metrical_scale.txt`` ships with the
REALY code (``data/metrical_scale.txt``): copy it into the root or point
``realy.metrical_scale=`` at it. Options: ``root``, ``images`` (the image-set folder under
``REALY_image/``; default ``crop_image_frontal_512x512`` when present, else the only
folder there, else ``REALY_image/`` itself), ``metrical_scale``.

Sample ids are image paths under the image set without extension; the subject is the
number before the first ``_`` of the file name (REALY's own rule, subjects start at 1). A
subject whose region meshes, keypoints or scale are missing or malformed is loaded with the
reason (file named) under ``meta[LOAD_ERROR]``: an ``error`` row, the others are scored.
Scan geometry stays in REALY's unit (the protocol's thresholds are in it); the errors are
converted to mm by the subject's metrical scale.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np

from benchmark.datasets.base import LOAD_ERROR, Dataset, DatasetCard
from benchmark.datasets.images import IMAGE_EXTENSIONS, read_image
from benchmark.meshio import read_obj
from benchmark.types import Availability, FaceSample

IMAGE_DIR = "REALY_image"
KEYPOINT_DIR = "REALY_HIFI3D_keypoints"
REGION_DIR = "REALY_scan_region"
SCALE_FILE = "metrical_scale.txt"
DEFAULT_IMAGE_SET = "crop_image_frontal_512x512"
#: Region files of every subject, in REALY's report order.
REGION_FILES = ("nose", "mouth", "forehead", "cheek")
#: Keypoints per subject in ``REALY_HIFI3D_keypoints/<subject>.obj``.
N_KEYPOINTS = 85
#: ``meta`` key holding the subject's :class:`RealyTruth`.
META_KEY = "realy"

CARD = DatasetCard(
    name="realy",
    description="REALY frontal images (100 LYHM subjects) scored per region (nose, mouth, "
                "forehead, cheek) against scans.",
    card_file="realy.md",
    license="Headspace/LYHM agreement (research only; University of York); images and scans "
            "may not be redistributed",
    citation="Chai, Zhang, Ren, Kang, Xu, Zhe, Yuan, Bao. REALY: Rethinking the Evaluation of "
             "3D Face Reconstruction. ECCV 2022.",
    splits=("test",),
    default_split="test",
    has_scans=False,
    scans_neutral=True,  # LYHM scans are neutral: REALY scores the neutral mesh when given
    root_env="REALY_ROOT",
    instance_keyed=True,
    layout="<root>/REALY_image/<image set>/<subject>_*.jpg, REALY_HIFI3D_keypoints/"
           "<subject>.obj, REALY_scan_region/<subject>/{nose,mouth,forehead,cheek}.obj, "
           "metrical_scale.txt",
)


@dataclasses.dataclass(eq=False)
class RealyTruth:
    """The ground truth of one REALY subject, in the scan unit.

    Attributes:
        keypoints: (85, 3) float64 HIFI3D keypoints (68 iBUG + 17 cheek points).
        regions: region name -> ((N, 3) float64 vertices, (M, 3) int64 0-based triangles).
        metrical_scale: millimetres per scan unit.
    """

    keypoints: np.ndarray
    regions: dict[str, tuple[np.ndarray, np.ndarray]]
    metrical_scale: float


def subject_of(image_path: Path) -> int:
    """REALY's subject number of an image: the integer before the first ``_`` of its name.

    Raises:
        ValueError: the name does not start with a number.
    """
    head = image_path.stem.split("_")[0]
    if not head.isdigit() or int(head) < 1:
        raise ValueError(f"{image_path.name!r} does not start with a subject number "
                         f"(REALY names images <subject>_<...>).")
    return int(head)


class RealyDataset(Dataset):
    """REALY images with their subjects' region scans (see the module docstring)."""

    card = CARD
    option_keys = ("images", "metrical_scale")

    @property
    def image_dir(self) -> Path:
        """The image-set folder the samples come from."""
        base = self.root / IMAGE_DIR
        chosen = self.options.get("images")
        if chosen:
            return base / str(chosen)
        if (base / DEFAULT_IMAGE_SET).is_dir():
            return base / DEFAULT_IMAGE_SET
        subdirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return subdirs[0] if len(subdirs) == 1 else base

    @property
    def scale_path(self) -> Path:
        """Where ``metrical_scale.txt`` is read from."""
        given = self.options.get("metrical_scale")
        return Path(given).expanduser() if given else self.root / SCALE_FILE

    def availability(self) -> Availability:
        """Checks the root and the official layout; names the first missing path."""
        base = super().availability()
        if not base.ok:
            return base
        fix = f"point REALY_ROOT at a folder laid out as: {CARD.layout}"
        for path in (self.root / IMAGE_DIR, self.root / KEYPOINT_DIR, self.root / REGION_DIR):
            if not path.is_dir():
                return Availability(False, f"missing folder {path}", fix)
        if not self.scale_path.is_file():
            return Availability(False, f"missing file {self.scale_path}",
                                "copy data/metrical_scale.txt of the REALY code "
                                "(github.com/czh-98/REALY) into the root, or pass "
                                "--dataset-option realy.metrical_scale=/path")
        if not self.image_dir.is_dir():
            return Availability(False, f"missing image set {self.image_dir}",
                                f"choose one of the folders under {self.root / IMAGE_DIR} "
                                "with --dataset-option realy.images=<folder>")
        if not self._index:
            sets = sorted(p.name for p in (self.root / IMAGE_DIR).iterdir() if p.is_dir())
            hint = (f"; image sets there: {', '.join(sets)} (--dataset-option realy.images=)"
                    if sets else "")
            return Availability(False, f"no image in {self.image_dir}{hint}", fix)
        return Availability(True)

    @functools.cached_property
    def _index(self) -> dict[str, Path]:
        """Sample id -> image path, sorted by subject then name."""
        folder = self.image_dir
        paths = [p for p in folder.rglob("*")
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]

        def key(p: Path) -> tuple:
            try:
                return (subject_of(p), str(p.relative_to(folder)))
            except ValueError:
                return (10**9, str(p.relative_to(folder)))

        return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(paths, key=key)}

    def sample_ids(self) -> list[str]:
        """Image paths under the image set, without extension."""
        return list(self._index)

    def revision(self) -> str:
        """Hash of the image list and of the keypoint, region and scale files' names and sizes."""
        h = hashlib.sha256(f"{CARD.revision}:{self.image_dir.name}:".encode())
        for sid, p in self._index.items():
            h.update(f"{sid}:{p.stat().st_size}".encode())
        for folder, pattern in ((KEYPOINT_DIR, "*.obj"), (REGION_DIR, "*/*.obj")):
            for p in sorted((self.root / folder).glob(pattern)):
                h.update(f"{p.relative_to(self.root)}:{p.stat().st_size}".encode())
        h.update(self.scale_path.read_bytes())
        return h.hexdigest()[:12]

    @functools.cached_property
    def _scales(self) -> np.ndarray:
        try:
            values = np.loadtxt(self.scale_path, dtype=np.float64, ndmin=1)
        except ValueError as exc:
            raise ValueError(f"{self.scale_path} is not one number per line ({exc}).") from exc
        if values.ndim != 1 or not np.isfinite(values).all() or (values <= 0).any():
            raise ValueError(f"{self.scale_path} must hold one positive number per line.")
        return values

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one truth serves all images of a subject
    def truth(self, subject: int) -> RealyTruth:
        """The subject's keypoints, regions and scale.

        Raises:
            FileNotFoundError: a keypoint or region file is missing (named).
            ValueError: a malformed file, a wrong keypoint count, no scale for the subject.
        """
        kp_path = self.root / KEYPOINT_DIR / f"{subject}.obj"
        if not kp_path.is_file():
            raise FileNotFoundError(f"REALY subject {subject} has no keypoints: no {kp_path}.")
        keypoints, _ = read_obj(kp_path)
        if keypoints.shape[0] != N_KEYPOINTS:
            raise ValueError(f"{kp_path} holds {keypoints.shape[0]} vertices; REALY keypoint "
                             f"files hold {N_KEYPOINTS}.")
        regions = {}
        for name in REGION_FILES:
            path = self.root / REGION_DIR / str(subject) / f"{name}.obj"
            if not path.is_file():
                raise FileNotFoundError(f"REALY subject {subject} has no {name} region: "
                                        f"no {path}.")
            verts, faces = read_obj(path)
            if faces.shape[0] == 0:
                raise ValueError(f"{path} has no triangles; REALY regions are meshes.")
            regions[name] = (verts, faces)
        if subject > self._scales.shape[0]:
            raise ValueError(f"{self.scale_path} has {self._scales.shape[0]} lines, none for "
                             f"subject {subject}.")
        return RealyTruth(keypoints, regions, float(self._scales[subject - 1]))

    def load_sample(self, sample_id: str) -> FaceSample:
        """One image with its subject's ground truth under ``meta["realy"]``.

        A subject whose files are missing or malformed does not raise: the sample carries
        the reason under ``meta[LOAD_ERROR]``, which the runner records as an ``error`` row.
        """
        path = self._index.get(sample_id)
        if path is None:
            raise KeyError(f"REALY has no image {sample_id!r} in {self.image_dir}.")
        meta: dict = {"path": str(path), "image_set": self.image_dir.name}
        subject = sample_id
        try:
            number = subject_of(path)
            subject = str(number)
            meta[META_KEY] = self.truth(number)
        except (OSError, ValueError) as exc:
            meta[LOAD_ERROR] = str(exc)
        return FaceSample(
            id=sample_id,
            subject=subject,
            image=functools.partial(read_image, path),
            meta=meta,
        )
