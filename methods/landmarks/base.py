"""The landmark-provider contract, its result record and input normalisation.

Room: turning one photo into iBUG-68 landmarks. Providers (``dlib``, ground truth) sit
behind :class:`LandmarkProvider`; callers never see a detector's own types. A photo without
a usable face is a :class:`LandmarkResult` with status ``no_face``; an unreadable input is
status ``error``. Neither raises.

Example::

    from methods.landmarks import DlibProvider
    result = DlibProvider().detect(image)          # (H, W, 3) uint8 RGB, or a path
    if result.ok:
        eye0 = result.landmarks[36:42]             # subject's right eye, pixels
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from benchmark.datasets.images import ImageError, as_image, read_image, to_rgb_uint8
from benchmark.types import FaceSample

__all__ = [
    "Box", "ImageError", "LandmarkProvider", "LandmarkResult", "LandmarkStatus", "as_image",
    "check_landmarks", "five_points", "read_image", "to_rgb_uint8",
]

logger = logging.getLogger(__name__)

LandmarkStatus = Literal["ok", "no_face", "error"]

#: (x0, y0, x1, y1) face box in pixels, x right, y down.
Box = tuple[float, float, float, float]


@dataclasses.dataclass
class LandmarkResult:
    """What a provider returns for one image.

    Attributes:
        status: ``ok``; ``no_face`` when no (usable) face was found; ``error`` when the input
            could not be read (``error`` holds the reason).
        landmarks: (68, 2) float32 pixel landmarks (iBUG order, 0-based, x right, y down), or
            None unless ``status == "ok"``.
        box: the face box used, (x0, y0, x1, y1) pixels, or None.
        score: detector confidence of the chosen face (provider-specific scale), or None.
        error: one-line reason when ``status != "ok"``.
        n_faces: number of faces the detector found (the largest is used).
    """

    status: LandmarkStatus
    landmarks: np.ndarray | None = None
    box: Box | None = None
    score: float | None = None
    error: str | None = None
    n_faces: int = 0

    @property
    def ok(self) -> bool:
        """True when landmarks are available."""
        return self.status == "ok"

    @classmethod
    def failed(cls, status: LandmarkStatus, error: str, n_faces: int = 0) -> LandmarkResult:
        """A result that carries only a failure status and its reason."""
        return cls(status=status, error=error, n_faces=n_faces)


def check_landmarks(
    landmarks: np.ndarray, image_shape: tuple[int, ...], max_outside: float = 0.5,
    margin: float = 0.25,
) -> str | None:
    """Why a landmark set is unusable for an image, or None when it is usable.

    Landmarks may lie slightly outside tight crops; a set is rejected when it is not
    (68, 2) and finite, or when more than ``max_outside`` of the points (or any eye point)
    fall more than ``margin`` times the image size outside the image.

    Args:
        landmarks: (68, 2) pixel landmarks.
        image_shape: (H, W, ...) of the image.
        max_outside: largest allowed fraction of far-outside points.
        margin: how far outside (fraction of the image size) still counts as inside.

    Returns:
        A one-line reason, or None.
    """
    lm = np.asarray(landmarks)
    if lm.shape != (68, 2):
        return f"landmarks must be (68, 2), got {lm.shape}"
    if not np.isfinite(lm).all():
        return "landmarks contain NaN or infinite values"
    h, w = image_shape[:2]
    mx, my = margin * w, margin * h
    outside = (lm[:, 0] < -mx) | (lm[:, 0] > w + mx) | (lm[:, 1] < -my) | (lm[:, 1] > h + my)
    if outside.mean() > max_outside or outside[36:48].any():
        return (
            f"{int(outside.sum())} of 68 landmarks lie outside the {w}x{h} image "
            f"(eye landmarks outside: {int(outside[36:48].sum())})"
        )
    return None


class LandmarkProvider(abc.ABC):
    """Base class of every 68-point landmark provider.

    Subclasses implement :meth:`detect` and :meth:`identity`. :meth:`detect_sample`
    reads a :class:`FaceSample` (ground truth overrides it to use the sample's landmarks).
    """

    #: Short registry-style name (``dlib``, ``gt``).
    name: str = "provider"

    @abc.abstractmethod
    def detect(self, image: np.ndarray | str | Path, box: Box | None = None) -> LandmarkResult:
        """Landmarks of the main face in ``image``.

        Args:
            image: (H, W, C) image array (any dtype/channels :func:`to_rgb_uint8` accepts) or
                an image file path.
            box: optional (x0, y0, x1, y1) face box in pixels; when given, no face detection
                is run.

        Returns:
            A :class:`LandmarkResult`; never raises for bad input.
        """

    @abc.abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the provider's output could change (cache key)."""

    def detect_sample(self, sample: FaceSample, box: Box | None = None) -> LandmarkResult:
        """Landmarks for a dataset sample (its image, loaded lazily)."""
        try:
            image = as_image(sample.load_image())
        except Exception as exc:  # a lazy loader may raise anything; it is data here
            return LandmarkResult.failed("error", _one_line(exc))
        return self.detect(image, box)

    def image_and_landmarks(self, sample: FaceSample) -> tuple[np.ndarray | None, LandmarkResult]:
        """The sample's image (read once; ``None`` when unreadable) and its landmarks.

        The ground-truth provider answers with the sample's own landmarks, every other one
        detects on the image. Never raises for bad data: the result carries the status.
        """
        try:
            image = as_image(sample.load_image())
        except Exception as exc:  # a lazy loader may raise anything; it is data here
            return None, LandmarkResult.failed("error", f"cannot read image: {exc}")
        res = self.detect_sample(sample) if self.name == "gt" else self.detect(image)
        return image, res


def five_points(landmarks: np.ndarray, eyes: str = "corners") -> np.ndarray:
    """(..., 5, D) alignment points from (..., 68, D) landmarks, D = 2 or 3.

    The points: the two eye centres (image left first), nose tip (30), mouth corners (48, 54).

    Args:
        landmarks: (..., 68, D) finite landmarks.
        eyes: ``"corners"``: eye centre = mean of the two corners (36/39, 42/45), as Deep3D's
            ``extract_5p`` and insightface's five points; ``"ring"``: mean of all six eye
            points (36-41, 42-47), the ELAM+LDL crops' convention.

    Raises:
        ValueError: wrong shape, non-finite values or unknown ``eyes``.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim < 2 or lm.shape[-2] != 68 or lm.shape[-1] not in (2, 3) \
            or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite (68, 2) or (68, 3), got shape {lm.shape}.")
    if eyes == "corners":
        left, right = lm[..., [36, 39], :].mean(-2), lm[..., [42, 45], :].mean(-2)
    elif eyes == "ring":
        left, right = lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2)
    else:
        raise ValueError(f"eyes must be 'corners' or 'ring', got {eyes!r}.")
    return np.stack([left, right, lm[..., 30, :], lm[..., 48, :], lm[..., 54, :]], axis=-2)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(exc).__name__}: {msg}" if not isinstance(exc, ImageError) else msg
