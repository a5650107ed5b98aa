"""Generation parameters of the synthetic eye-state benchmark, and its seeding scheme.

Room: every number that shapes the synthetic data, in one frozen dataclass whose hash (with
:data:`GENERATOR_VERSION` and the ICT model's sha256) names the cache folder. Change a
default or the generator's output and the cache key changes with it; bump
``GENERATOR_VERSION`` whenever code changes what a given configuration produces.

Seeding: sample ``i`` of split ``s`` draws everything from
``SeedSequence([seed, split_code(s), 1, i])`` and its subject ``i // samples_per_subject``
from ``SeedSequence([seed, split_code(s), 0, subject])``, with ``split_code`` a hash of the
split name. Splits therefore never share a subject seed (disjoint identities by
construction), and sample ``i`` is the same whatever ``n`` is asked for, so a split grows
on demand without regenerating what exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

#: Bump when the generator's output for a fixed configuration changes.
GENERATOR_VERSION = "2"

#: Eye-state categories per image, cycled through the sample index (balanced splits).
#: ``wink_left`` closes the subject's left eye (eye index 1, landmarks 42-47).
CATEGORIES = ("open", "half", "closed", "wink_left", "wink_right", "mixed")

#: Per-eye state names and their labels (``benchmark.types``: 0 open, 1 closed, -1 half).
EYE_STATE_LABEL = {"open": 0, "closed": 1, "half": -1}

#: Default number of samples per split.
DEFAULT_N = {"test": 300, "train": 2000}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything the generator's output depends on (besides split and sample index).

    Attributes:
        seed: master seed.
        image_size: output images are square, this many pixels (Deep3D: 224).
        focal_224: focal length in pixels for a 224-px image (scaled with ``image_size``).
        supersample: anti-aliasing factor (render at ``image_size * supersample``, box filter).
        samples_per_subject: consecutive samples sharing one subject.
        distance_m: camera distance range of the face centre, metres.
        yaw_deg: head yaw is uniform in +-this; ``pitch_deg``/``roll_deg`` likewise.
        pitch_deg: see ``yaw_deg``.
        roll_deg: see ``yaw_deg``.
        jitter_m: face-centre offset from the optical axis, uniform in +-this (x and y).
        id_sigma: std of the 100 ICT identity coefficients (clipped at 2.5 sigma).
        detail_mm: amplitude (std) of the smooth per-subject displacement along normals.
        detail_max_mm: soft clip of the displacement.
        detail_centres: Gaussian bumps summed into the displacement field.
        blink_open: eyeBlink weight range of an open eye.
        blink_half: eyeBlink weight range of a half-closed eye.
        blink_closed: eyeBlink weight range of a closed eye.
        squint_closed: extra eyeSquint weight range of a closed eye.
        expr_prob: probability that each non-eye expression is active.
        expr_max: maximum weight of a non-eye expression.
        jaw_open_max: maximum jawOpen weight.
        scan_points: points sampled on the ground-truth surface before cropping.
        scan_noise_mm: std of the scan noise along the surface normal.
    """

    seed: int = 0
    image_size: int = 224
    focal_224: float = 1015.0
    supersample: int = 2
    samples_per_subject: int = 5
    distance_m: tuple[float, float] = (0.95, 1.2)
    yaw_deg: float = 45.0
    pitch_deg: float = 12.0
    roll_deg: float = 10.0
    jitter_m: float = 0.008
    id_sigma: float = 1.0
    detail_mm: float = 1.5
    detail_max_mm: float = 4.0
    detail_centres: int = 16
    blink_open: tuple[float, float] = (0.0, 0.15)
    blink_half: tuple[float, float] = (0.4, 0.6)
    blink_closed: tuple[float, float] = (1.05, 1.15)
    squint_closed: tuple[float, float] = (0.0, 0.2)
    expr_prob: float = 0.2
    expr_max: float = 0.5
    jaw_open_max: float = 0.3
    scan_points: int = 20000
    scan_noise_mm: float = 0.2

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}.")
        if self.samples_per_subject < 1:
            raise ValueError("samples_per_subject must be at least 1.")
        if self.supersample < 1:
            raise ValueError("supersample must be at least 1.")

    @property
    def focal(self) -> float:
        """Focal length in pixels at ``image_size``."""
        return self.focal_224 * self.image_size / 224.0

    def to_dict(self) -> dict:
        """JSON-able parameters."""
        return dataclasses.asdict(self)

    def key(self, model_sha256: str) -> str:
        """Short hash of the parameters, generator version and face model (cache folder)."""
        blob = json.dumps({"config": self.to_dict(), "generator": GENERATOR_VERSION,
                           "model": model_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def split_code(split: str) -> int:
    """A stable 32-bit integer for a split name (part of every seed)."""
    return int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)


def rng_for(config: SyntheticConfig, split: str, kind: int, index: int) -> np.random.Generator:
    """The generator of subject (``kind`` 0) or sample (``kind`` 1) ``index`` of a split."""
    return np.random.default_rng(
        np.random.SeedSequence([config.seed, split_code(split), kind, index])
    )


def subject_of(config: SyntheticConfig, index: int) -> int:
    """Subject index of sample ``index``."""
    return index // config.samples_per_subject


def sample_id(split: str, index: int) -> str:
    """File-safe id of sample ``index`` of a split."""
    return f"{split}-{index:06d}"


def subject_id(split: str, subject: int) -> str:
    """Id of subject ``subject`` of a split (unique across splits)."""
    return f"{split}-s{subject:05d}"
