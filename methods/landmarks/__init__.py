"""68-point landmark providers: dlib's detector and ground truth, behind one interface.

Room: photo -> iBUG-68 landmarks (pixels) for ELAM and the fitting baselines, with input
normalisation and an on-disk cache. See :mod:`methods.landmarks.base` for the contract.

Example::

    from methods.landmarks import CachedProvider, DlibProvider, get_provider
    provider = CachedProvider(DlibProvider())      # detect once per image, ever
    result = provider.detect_sample(sample)        # LandmarkResult(status, landmarks, box, ...)
"""

from __future__ import annotations

from methods.landmarks.base import (
    Box,
    ImageError,
    LandmarkProvider,
    LandmarkResult,
    as_image,
    check_landmarks,
    read_image,
    to_rgb_uint8,
)
from methods.landmarks.cache import CachedProvider, cache_root
from methods.landmarks.dlib_provider import DlibProvider, dlib_available, find_predictor_file
from methods.landmarks.ground_truth import GroundTruthProvider

PROVIDERS = {"dlib": DlibProvider, "gt": GroundTruthProvider}


def get_provider(name: str, cached: bool = True, **options: object) -> LandmarkProvider:
    """A provider by name (``dlib`` or ``gt``), wrapped in the on-disk cache by default."""
    if name not in PROVIDERS:
        raise ValueError(
            f"unknown landmark provider {name!r}; choose one of {', '.join(PROVIDERS)}."
        )
    provider = PROVIDERS[name](**options)  # type: ignore[arg-type]
    return CachedProvider(provider) if cached and name != "gt" else provider


__all__ = [
    "Box", "CachedProvider", "DlibProvider", "GroundTruthProvider", "ImageError",
    "LandmarkProvider", "LandmarkResult", "PROVIDERS", "as_image", "cache_root",
    "check_landmarks", "dlib_available", "find_predictor_file", "get_provider", "read_image",
    "to_rgb_uint8",
]
