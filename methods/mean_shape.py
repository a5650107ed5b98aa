"""``mean-shape``: the ICT template with open eyes, whatever the photo shows.

Room: the floor every method must beat; it ignores its input entirely.
"""

from __future__ import annotations

import numpy as np

from benchmark.types import FaceSample, Prediction
from methods.base import Method, MethodCard

CARD = MethodCard(
    name="mean-shape",
    description="ICT-FaceKit mean face, eyes open, ignores the image (a floor for every metric)",
    topology="ict-narrow",
    license="MIT (ICT-FaceKit)",
    reference="https://github.com/ICT-VGL/ICT-FaceKit",
    citation="Li et al., Learning Formation of Physically-Based Face Attributes, CVPR 2020",
)


class MeanShape(Method):
    """Returns the mean ICT face (narrow face mask) for every sample."""

    card = CARD

    def load(self, device: str) -> None:
        """Loads the shipped ICT model."""
        from methods.facemodel import load_ict

        model = load_ict("narrow")
        self._vertices = model.mean.astype(np.float32)
        self._topology = model.topology()

    def predict(self, sample: FaceSample) -> Prediction:
        """The template, unchanged."""
        return Prediction(status="ok", vertices=self._vertices.copy(), topology=self._topology)
