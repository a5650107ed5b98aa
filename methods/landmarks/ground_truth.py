"""Ground-truth landmarks (synthetic data, annotated datasets) behind :class:`LandmarkProvider`.

Room: an oracle provider, so every consumer of landmarks (ELAM, fitting) can be run with the
detector taken out of the loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.types import FaceSample
from methods.landmarks.base import (
    Box,
    LandmarkProvider,
    LandmarkResult,
    as_image,
    check_landmarks,
)


class GroundTruthProvider(LandmarkProvider):
    """Returns ``sample.landmarks2d``; a sample without landmarks is an ``error``.

    Only :meth:`detect_sample` is meaningful: a bare image carries no ground truth, so
    :meth:`detect` returns an ``error`` result unless ``landmarks`` are given.
    """

    name = "gt"

    def identity(self) -> str:
        """Constant: the output depends on the sample only."""
        return "gt-1"

    def detect(
        self,
        image: np.ndarray | str | Path,
        box: Box | None = None,
        landmarks: np.ndarray | None = None,
    ) -> LandmarkResult:
        """Wraps given ``landmarks`` for ``image`` (checked against the image size)."""
        if landmarks is None:
            return LandmarkResult.failed(
                "error", "the ground-truth provider needs a sample with landmarks2d."
            )
        try:
            shape = as_image(image).shape
        except ValueError as exc:
            return LandmarkResult.failed("error", str(exc))
        lm = np.asarray(landmarks, dtype=np.float32)
        reason = check_landmarks(lm, shape)
        if reason is not None:
            return LandmarkResult.failed("error", reason, n_faces=1)
        x0, y0 = lm.min(axis=0)
        x1, y1 = lm.max(axis=0)
        return LandmarkResult(
            status="ok", landmarks=lm.copy(), box=(float(x0), float(y0), float(x1), float(y1)),
            score=None, n_faces=1,
        )

    def detect_sample(self, sample: FaceSample, box: Box | None = None) -> LandmarkResult:
        """The sample's own ``landmarks2d``."""
        if sample.landmarks2d is None:
            return LandmarkResult.failed(
                "error", f"sample {sample.id!r} has no ground-truth landmarks2d."
            )
        try:
            image = sample.load_image()
        except Exception as exc:
            return LandmarkResult.failed("error", f"{type(exc).__name__}: {exc}")
        return self.detect(image, landmarks=sample.landmarks2d)
