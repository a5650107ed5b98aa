"""``oracle``: returns the ground-truth mesh of synthetic samples (a ceiling, not a method).

Room: a sanity reference for the metrics. Its scan-to-mesh error is the scan noise floor and
its eye-state scores show what the openness threshold gives on perfect geometry. It only
runs on datasets whose samples carry the ground-truth mesh.
"""

from __future__ import annotations

import numpy as np

from benchmark.types import Availability, FaceSample, Prediction
from methods.base import Method, MethodCard

CARD = MethodCard(
    name="oracle",
    description="ground-truth mesh of synthetic samples (metric ceiling; uses the answers)",
    topology="ict-full",
    license="MIT",
    reference="docs/metrics.md",
)


class Oracle(Method):
    """Returns ``sample.gt_vertices`` with its topology."""

    card = CARD

    def supports(self, dataset) -> Availability:
        """Only datasets with ground-truth meshes."""
        if getattr(dataset.card, "has_gt_mesh", False):
            return Availability(True)
        return Availability(False, f"{dataset.card.name} has no ground-truth meshes")

    def load(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, sample: FaceSample) -> Prediction:
        """The ground truth, or an error when the sample has none."""
        from methods.topology import get_topology

        if sample.gt_vertices is None or sample.gt_topology is None:
            raise ValueError(f"sample {sample.id} has no ground-truth mesh")
        return Prediction(
            status="ok",
            vertices=np.asarray(sample.gt_vertices, np.float32),
            topology=get_topology(sample.gt_topology),
            landmarks2d=sample.landmarks2d,
        )
