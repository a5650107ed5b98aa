"""``real-faces-val-eyes-masked``: the held-out real photos with both eye regions masked.

Room: the masked-eye shortcut probe's data (issue 16). The same samples, labels and
subjects as ``real-faces-val`` (:mod:`benchmark.datasets.real_faces`), but every photo has
both eye regions painted over before any method sees it. A method that reads eyes has
nothing left to read, so it must call masked faces from the closed source (CEW) and from
the open source (UTKFace) closed at the same rate; a gap between the two rates is what the
method learnt from the rest of the photo (crop, framing, colour, compression). The
leaderboard prints the rates per source and their gap (``docs/metrics.md``).

The masking (fixed; :func:`eye_mask` and :func:`mask_eyes`):

1. dlib's 68 landmarks on the *unmasked* photo (the project's cached provider,
   :func:`methods.landmarks.get_provider`); a photo without a face raises
   :class:`MaskingError` when its image is read, so every method records an error row for
   it (methods that never read the image, such as ``mean-shape``, still predict).
2. Per eye, a rectangle aligned with the eye-corner axis (landmarks 36-39, 42-45), centred
   on the midpoint of the two corners, :data:`MASK_WIDTH` eye widths long and
   :data:`MASK_HEIGHT` eye widths tall (eye width = corner distance). The size depends on
   the corners only, never on the eyelid points: a box fitted to the eyelid landmarks would
   be flatter on closed eyes and hand the label to the method through the mask's shape.
3. Filled with one flat colour: the per-channel median of two cheek patches (below each
   eye, :func:`cheek_colour`), with hard edges. Skin keeps a face a face for the methods'
   own detectors (a grey box is a foreign object in the middle of the face); hard edges
   leave no eye pixel at partial weight. The fill is a property of the photo, not of the
   label.

Example::

    from benchmark.datasets.masked import MaskedRealFacesDataset
    ds = MaskedRealFacesDataset()                     # the pool from $EYEBENCH_REAL_FACES
    img = ds.load_sample(ds.sample_ids()[0]).load_image()   # eyes painted over
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets.images import read_image
from benchmark.datasets.real_faces import CARD as REAL_CARD
from benchmark.datasets.real_faces import RealFacesDataset
from benchmark.types import EYE_CORNERS, FaceSample

#: Mask length along the eye-corner axis, in eye widths (corner distance): 0.4 eye widths
#: beyond each corner.
MASK_WIDTH = 1.8
#: Mask height across the eye axis, in eye widths: 0.55 above and below the corner line,
#: which holds an open eye's lids (aperture about 0.3 eye widths) and the upper-lid fold
#: with room for detector error; the brows mostly stay visible.
MASK_HEIGHT = 1.1
#: Cheek patch: centred on the mean of landmarks (lower lid, nostril side, jaw) per side,
#: half-size in eye widths.
CHEEK_POINTS = ((40, 41, 31, 2), (46, 47, 35, 14))
CHEEK_HALF = 0.2
#: Bumped whenever the masking changes (part of the dataset revision).
MASK_REVISION = "1"


class MaskingError(RuntimeError):
    """No face (or no usable landmarks) to place the eye masks on."""


def _corners(landmarks: np.ndarray, eye: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = EYE_CORNERS[eye]
    return landmarks[a].astype(np.float64), landmarks[b].astype(np.float64)


def eye_mask(shape: tuple[int, ...], landmarks: np.ndarray, width: float = MASK_WIDTH,
             height: float = MASK_HEIGHT) -> np.ndarray:
    """Boolean (H, W) mask covering both eyes.

    Args:
        shape: the image shape (H, W[, C]).
        landmarks: (68, 2) iBUG landmarks in pixels (continuous frame: pixel ``(i, j)``
            covers ``[j, j+1] x [i, i+1]``, its centre is ``(j + 0.5, i + 0.5)``).
        width: rectangle length along the eye axis, in eye widths.
        height: rectangle height across the eye axis, in eye widths.

    Returns:
        True where a pixel centre lies in either eye's rectangle.

    Raises:
        ValueError: landmarks not (68, 2) finite, or an eye with coincident corners.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite (68, 2), got shape {lm.shape}.")
    h, w = int(shape[0]), int(shape[1])
    ys, xs = np.mgrid[0:h, 0:w]
    px = np.stack([xs + 0.5, ys + 0.5], axis=-1)
    mask = np.zeros((h, w), bool)
    for eye in range(2):
        a, b = _corners(lm, eye)
        span = float(np.linalg.norm(b - a))
        if span <= 1e-6:
            raise ValueError(f"eye {eye} has coincident corners; cannot place its mask.")
        axis = (b - a) / span
        normal = np.array([-axis[1], axis[0]])
        rel = px - (a + b) / 2.0
        u, v = rel @ axis, rel @ normal
        mask |= (np.abs(u) <= width * span / 2.0) & (np.abs(v) <= height * span / 2.0)
    return mask


def cheek_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Per-channel median colour of two cheek patches (below each eye).

    Args:
        image: (H, W, 3) uint8 RGB.
        landmarks: (68, 2) pixel landmarks.

    Returns:
        (3,) uint8 colour; the whole image's median when both patches fall outside it.
    """
    lm = np.asarray(landmarks, np.float64)
    h, w = image.shape[:2]
    pixels = []
    for eye, ids in enumerate(CHEEK_POINTS):
        a, b = _corners(lm, eye)
        half = CHEEK_HALF * float(np.linalg.norm(b - a))
        cx, cy = lm[list(ids)].mean(axis=0)
        x0, x1 = int(np.clip(np.floor(cx - half), 0, w)), int(np.clip(np.ceil(cx + half), 0, w))
        y0, y1 = int(np.clip(np.floor(cy - half), 0, h)), int(np.clip(np.ceil(cy + half), 0, h))
        if x1 > x0 and y1 > y0:
            pixels.append(image[y0:y1, x0:x1].reshape(-1, 3))
    source = np.concatenate(pixels) if pixels else image.reshape(-1, 3)
    return np.median(source, axis=0).round().astype(np.uint8)


def mask_eyes(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with both eye rectangles filled with the cheek colour.

    Args:
        image: (H, W, 3) uint8 RGB.
        landmarks: (68, 2) pixel landmarks of that image.

    Returns:
        The masked (H, W, 3) uint8 image; the input is not modified.
    """
    out = np.array(image, np.uint8, copy=True)
    out[eye_mask(out.shape, landmarks)] = cheek_colour(out, landmarks)
    return out


def interleave_by_source(ids: list[str], sources: list[str]) -> list[str]:
    """``ids`` reordered so that every prefix holds each source in proportion.

    Item ``k`` of a source with ``n`` items gets the key ``(k + 0.5) / n``; ids are sorted
    by that key, then by source and by their original order (deterministic).

    Args:
        ids: sample ids.
        sources: the source of each id, same length.

    Returns:
        The reordered ids.
    """
    if len(ids) != len(sources):
        raise ValueError(f"{len(ids)} ids but {len(sources)} sources.")
    totals: dict[str, int] = {}
    for s in sources:
        totals[s] = totals.get(s, 0) + 1
    seen: dict[str, int] = {}
    keyed = []
    for pos, (sid, s) in enumerate(zip(ids, sources)):
        k = seen.get(s, 0)
        seen[s] = k + 1
        keyed.append(((k + 0.5) / totals[s], s, pos, sid))
    return [sid for *_, sid in sorted(keyed)]


CARD = dataclasses.replace(
    REAL_CARD,
    name="real-faces-val-eyes-masked",
    description=(
        "real-faces-val with both eye regions painted over (shortcut probe: a method that "
        "reads eyes calls both sources closed at the same rate)"
    ),
    card_file="real-faces-eyes-masked.md",
    revision=f"1-mask{MASK_REVISION}",
)


class MaskedRealFacesDataset(RealFacesDataset):
    """``real-faces-val`` with the eyes masked (same ids, labels, subjects and options).

    The labels stay those of the unmasked photo (the source's label), so the eye metrics of
    this dataset measure how much of the label survives without the eyes.
    """

    card = CARD

    def __init__(
        self, split: str | None = None, root: str | Path | None = None, **options: Any
    ) -> None:
        super().__init__(split=split, root=root, **options)
        self._provider = None

    def sample_ids(self) -> list[str]:
        """The ``real-faces-val`` ids, sources interleaved in proportion.

        Every prefix (``--limit N``) then holds both sources in the split's ratio, which a
        probe needs; the unmasked dataset lists its closed source first.
        """
        return interleave_by_source(super().sample_ids(),
                                    [it.group.split(":")[0] for it in self._index().values()])

    def _landmarks(self, image: np.ndarray) -> np.ndarray:
        if self._provider is None:
            from methods.landmarks import get_provider

            self._provider = get_provider("dlib")
        res = self._provider.detect(image)
        if res.status != "ok" or res.landmarks is None:
            raise MaskingError(f"no face to mask the eyes on ({res.status}: {res.error})")
        return np.asarray(res.landmarks, np.float64)

    def masked_image(self, path: Path) -> np.ndarray:
        """The photo at ``path`` with both eyes masked (raises :class:`MaskingError`)."""
        image = read_image(path)
        return mask_eyes(image, self._landmarks(image))

    def load_sample(self, sample_id: str) -> FaceSample:
        """The photo of ``real-faces-val`` with a lazy, masked image."""
        sample = super().load_sample(sample_id)
        path = self.root / sample.meta["file"]  # type: ignore[operator]
        return dataclasses.replace(sample, image=lambda p=path: self.masked_image(p),
                                   meta={**sample.meta, "masked": True})

    def revision(self) -> str:
        """The split's revision plus the masking's (geometry, fill, detector)."""
        from methods.landmarks import get_provider

        text = (f"{super().revision()}:{MASK_REVISION}:{MASK_WIDTH}:{MASK_HEIGHT}:"
                f"{CHEEK_POINTS}:{CHEEK_HALF}:{get_provider('dlib').identity()}")
        return hashlib.sha256(text.encode()).hexdigest()[:12]
