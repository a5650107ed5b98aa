"""ELAM's eye-state detector: a small CNN on canonical eye crops -> P(closed) per eye.

Room: the network, its weights file and the inference wrapper. Training lives in
:mod:`methods.elam.train_eye_detector`; the crop rule in :mod:`methods.elam.eye_crops`.

The weights file is a plain ``torch.save`` dict of tensors and JSON-like values, loaded
with ``torch.load(..., weights_only=True)``::

    {"format": "eyebench-eye-detector", "version": 1, "state_dict": {...},
     "config": {"crop_size": 32, "enlarge": 1.8, "width": 16},
     "meta": {"trained_on": [...], "seed": 0, "command": "...", ...}}

Example::

    from methods.elam.eye_detector import EyeStateDetector
    detector = EyeStateDetector()                      # shipped weights
    p_closed = detector.predict(image, landmarks)      # (2,) float32, eye 0 then eye 1
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.base import read_torch_file
from methods.elam.config import (  # noqa: F401 - re-exported
    CROP_SIZE,
    DEFAULT_WEIGHTS,
    ENLARGE,
    TRAIN_COMMAND,
    WEIGHTS_DIR,
    WEIGHTS_ENV,
    resolve_weights,
)
from methods.elam.eye_crops import cut_eye_crops

logger = logging.getLogger(__name__)

FORMAT = "eyebench-eye-detector"


class EyeStateNet(nn.Module):
    """The eye-state CNN: crop -> logit of P(closed).

    Four 3x3 conv blocks (BN, ReLU; max-pool after the first three), global average
    pooling and a linear logit. About 60k parameters at ``width=16``.

    Input: (B, 1, S, S) grey crops in [0, 1] (S = 32 by default; any S >= 16 works). Each
    crop is standardised (zero mean, unit contrast) inside :meth:`forward`, which removes
    global brightness and contrast.

    Args:
        width: channels of the first block (doubled in the next two).
        dropout: dropout before the logit.
    """

    def __init__(self, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(1, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
            *block(4 * w, 4 * w, False),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, 1))

    @staticmethod
    def standardise(x: torch.Tensor) -> torch.Tensor:
        """Per-crop zero mean and unit standard deviation (floored at 0.05)."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp(min=0.05)
        return (x - mean) / std

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) crops -> (B, 4 width) pooled features (what the logit reads)."""
        return self.features(self.standardise(x)).mean(dim=(2, 3))

    def logit(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, 4 width) pooled features -> (B,) logits, without dropout."""
        return self.head[2](pooled)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) crops -> (B,) logits of P(closed)."""
        return self.head(self.pooled(x))[:, 0]


class WeightsMissingError(FileNotFoundError):
    """The eye-state detector's weights file is missing (message says how to train it)."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a detector weights file safely (``weights_only=True``) and checks its format.

    Raises:
        WeightsMissingError: the file does not exist.
        ValueError: the file is not an eye-detector checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(
            f"eye-state detector weights {str(path)!r} are missing; train them with "
            f"`{TRAIN_COMMAND}` (or set {WEIGHTS_ENV} to a weights file)."
        )
    return read_torch_file(path, "eye-state detector checkpoint", FORMAT)


class EyeStateDetector:
    """Inference wrapper: loads the weights and returns P(closed) per eye.

    Args:
        weights: weights file (default :func:`resolve_weights`).
        device: torch device.

    Raises:
        WeightsMissingError: the weights file is missing (names the training command).
        ValueError: the file is not a detector checkpoint.
    """

    def __init__(self, weights: str | Path | None = None, device: str = "cpu") -> None:
        self.path = resolve_weights(weights)
        ckpt = load_checkpoint(self.path)
        cfg = dict(ckpt.get("config", {}))
        self.crop_size = int(cfg.get("crop_size", CROP_SIZE))
        self.enlarge = float(cfg.get("enlarge", ENLARGE))
        self.meta = dict(ckpt.get("meta", {}))
        self.net = EyeStateNet(width=int(cfg.get("width", 16)))
        self.net.load_state_dict(ckpt["state_dict"])
        self.net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def predict_crops(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(closed) of canonical crops.

        Args:
            crops: (N, S, S) or (N, 1, S, S) grey crops in [0, 1] (from
                :func:`methods.elam.eye_crops.cut_eye_crops`).

        Returns:
            (N,) float32 probabilities.
        """
        x = torch.as_tensor(np.asarray(crops, np.float32) if not torch.is_tensor(crops) else crops,
                            dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"crops must be (N, S, S) or (N, 1, S, S), got {tuple(x.shape)}.")
        if x.shape[0] == 0:
            return np.zeros(0, np.float32)
        return torch.sigmoid(self.net(x.to(self.device))).cpu().numpy().astype(np.float32)

    def predict(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """P(closed) of both eyes of a photo.

        Args:
            image: (H, W, 3) uint8 RGB.
            landmarks: (68, 2) pixel landmarks of that photo.

        Returns:
            (2,) float32, eye 0 (landmarks 36-41) then eye 1.
        """
        crops = cut_eye_crops(image, landmarks, self.crop_size, self.enlarge)
        return self.predict_crops(crops)
