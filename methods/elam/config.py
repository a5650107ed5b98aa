"""Light-weight settings of ELAM's eye-state detector: weights location and training options.

Room: what the CLI and the method cards need without importing torch (``python -m benchmark
--help`` and ``ls methods`` stay fast). The network and training code read these.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

#: Folder of the shipped weights (see its README.md).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped checkpoint.
DEFAULT_WEIGHTS = WEIGHTS_DIR / "eye_state_cnn.pt"
#: Environment variable that may point at another weights file.
WEIGHTS_ENV = "EYEBENCH_EYE_DETECTOR"
#: The command that reproduces the shipped weights (from a user's copy of the real pool).
TRAIN_COMMAND = (
    "python -m benchmark train-eye-detector --real-faces ../shared/data/real-faces "
    "--seed 0 --output methods/elam/weights/eye_state_cnn.pt"
)


def resolve_weights(path: str | Path | None = None) -> Path:
    """The weights path: argument, then ``$EYEBENCH_EYE_DETECTOR``, then the shipped file."""
    import os

    if path:
        return Path(path).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS


#: Crop rule defaults (stored in every weights file, which wins at load time).
CROP_SIZE = 32
ENLARGE = 1.8
#: Training data sources.
SOURCES = ("synthetic", "real")


@dataclasses.dataclass
class TrainConfig:
    """Options of :func:`train_eye_detector` (CLI flags of the same names, kebab-case).

    Attributes:
        sources: ``synthetic`` and/or ``real``.
        real_faces: root of the real-photo pool (default ``$EYEBENCH_REAL_FACES`` or the
            shared workspace copy).
        pool_seed: seed of the pool split (must stay 0 for the shipped weights and
            ``real-faces-val``).
        val_fraction: held-out fraction of the pool.
        synthetic_limit: use at most this many synthetic train samples (None: all).
        synthetic_options: options passed to the synthetic dataset loader.
        epochs: passes over an epoch of balanced samples.
        samples_per_epoch: crops drawn (with replacement) per epoch; 0 = the number of crops.
        batch_size: crops per step.
        lr: AdamW peak learning rate (cosine decay).
        weight_decay: AdamW weight decay.
        width: channels of the first conv block.
        crop_size: crop side in pixels.
        seed: seed of initialisation, sampling and augmentation.
        output: weights file to write.
        report: JSON report file (default: ``output`` with ``.json``).
        threads: torch threads (1 on shared machines).
        context_swap: probability that a training crop's eye region is pasted into the
            context of a crop from another source (label follows the eye; issue 16).
    """

    sources: tuple[str, ...] = SOURCES
    real_faces: str | None = None
    pool_seed: int = 0
    val_fraction: float = 0.2
    synthetic_limit: int | None = None
    synthetic_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 20
    samples_per_epoch: int = 0
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    crop_size: int = CROP_SIZE
    seed: int = 0
    output: str = str(DEFAULT_WEIGHTS)
    report: str | None = None
    threads: int = 1
    context_swap: float = 0.5
    occlude: float = 0.1
