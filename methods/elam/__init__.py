"""ELAM, the Eye Landmark Adjustment Module (first half of Wang & Liu 2024, DESIGN.md s. 2).

Room: the eye-state detector (crop rule, CNN, shipped weights, training) and the rule that
moves detected eyelid landmarks by P(closed). Consumers: ``fit-landmarks-elam`` and the
ELAM+LDL network's landmark targets.

Modules:

* :mod:`methods.elam.rule` -- ``elam_adjust(landmarks, p_closed, variant)`` (numpy/torch).
* :mod:`methods.elam.eye_crops` -- ``cut_eye_crops(image, landmarks)`` (the crop rule).
* :mod:`methods.elam.eye_detector` -- ``EyeStateDetector().predict(image, landmarks)``.
* :mod:`methods.elam.train_eye_detector` -- training, evaluation, the
  ``train-eye-detector`` subcommand.

Example::

    from methods.elam import EyeStateDetector, elam_adjust
    p = EyeStateDetector().predict(image, landmarks)    # (2,) P(closed), eye 0 then eye 1
    targets = elam_adjust(landmarks, p, variant="soft")
"""

from __future__ import annotations

from typing import Any

from methods.elam.rule import VARIANTS, elam_adjust, pair_distances

__all__ = ["VARIANTS", "EyeStateDetector", "cut_eye_crops", "elam_adjust", "pair_distances"]


def __getattr__(name: str) -> Any:
    # torch-backed parts load on first use, so importing the rule stays cheap
    if name == "EyeStateDetector":
        from methods.elam.eye_detector import EyeStateDetector

        return EyeStateDetector
    if name == "cut_eye_crops":
        from methods.elam.eye_crops import cut_eye_crops

        return cut_eye_crops
    raise AttributeError(f"module 'methods.elam' has no attribute {name!r}")
