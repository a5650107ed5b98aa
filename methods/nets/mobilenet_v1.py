"""MobileNetV1 with a width factor, laid out like 3DDFA_V2's regressor checkpoints.

Room: the network 3DDFA_V2 (Guo et al., ECCV 2020) regresses its 62 parameters with. Our own
code, written so that its ``state_dict`` keys and shapes are those of the official files
``weights/mb1_120x120.pth`` (width 1.0) and ``weights/mb05_120x120.pth`` (width 0.5) once
the ``module.`` prefix of their multi-GPU training is removed:

====================  ==========================================================
key prefix            layer
====================  ==========================================================
``conv1``, ``bn1``    3x3 stride-2 convolution (no bias), 32 w channels
``dw<s>_<i>.*``       depthwise-separable block: ``conv_dw`` (3x3, groups=in) +
                      ``bn_dw``, ``conv_sep`` (1x1) + ``bn_sep``, ReLU after each BN
``fc_param``          linear head: 62 parameters (12 pose, 40 shape, 10 expression)
``fc_lm``             optional second head (136 = 68 x 2); present in the released
                      files but unused by the official inference code
====================  ==========================================================

Blocks (in -> out channels, times the width w, stride): dw2_1 32->64, dw2_2 64->128 s2,
dw3_1 128->128, dw3_2 128->256 s2, dw4_1 256->256, dw4_2 256->512 s2, dw5_1..5 512->512,
dw5_6 512->1024 s2, dw6 1024->1024; then global average pooling and the heads. Channel counts
are ``int(c * w)``. A 120 x 120 input gives a 4 x 4 final feature map.

Usage::

    state = strip_module_prefix(torch.load(path, weights_only=True)["state_dict"])
    net = MobileNetV1.from_state_dict(state).eval()
    params = net(x)        # (B, 62), still normalised by param_mean_std_62d_120x120.pkl
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: (name, in channels, out channels, stride) before the width factor.
BLOCKS = (
    ("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2),
    ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1), ("dw5_3", 512, 512, 1),
    ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the depthwise convolution.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in,
                                 bias=False)
        self.bn_dw = nn.BatchNorm2d(c_in)
        self.conv_sep = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """MobileNetV1 regressor with 3DDFA_V2's layer names.

    Args:
        width: channel width factor (1.0 for ``mb1``, 0.5 for ``mb05``).
        num_params: outputs of the ``fc_param`` head (62 for the released models).
        landmark_head: also build the ``fc_lm`` head (136 outputs) the released files hold.
        in_channels: input channels (3: BGR as 3DDFA_V2 reads images with OpenCV).
    """

    def __init__(self, width: float = 1.0, num_params: int = 62, landmark_head: bool = False,
                 in_channels: int = 3) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}.")
        self.width = float(width)
        c0 = int(32 * width)
        self.conv1 = nn.Conv2d(in_channels, c0, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        for name, c_in, c_out, stride in BLOCKS:
            self.add_module(name, DepthwiseSeparable(int(c_in * width), int(c_out * width),
                                                     stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = int(1024 * width)
        self.fc_param = nn.Linear(self.feature_dim, num_params)
        self.fc_lm = nn.Linear(self.feature_dim, 136) if landmark_head else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float input -> (B, feature_dim) pooled features."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in BLOCKS:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 120, 120) normalised input -> (B, num_params) normalised parameters."""
        return self.fc_param(self.features(x))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> MobileNetV1:
        """A network shaped like ``state`` (width and heads read from it), weights loaded.

        Raises:
            ValueError: ``state`` does not look like a 3DDFA_V2 MobileNetV1 state dict, or a
                key or shape does not fit (the message names them).
        """
        width, num_params, lm = mobilenet_spec(state)
        net = cls(width=width, num_params=num_params, landmark_head=lm)
        try:
            net.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"not a 3DDFA_V2 MobileNetV1 state dict: {exc}") from exc
        return net


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes ``module.`` (DataParallel) prefixes; renames upstream's ``fc.`` to ``fc_param.``.

    The released 3DDFA_V2 files store ``module.fc_param.*``; the upstream model class calls
    the head ``fc`` and its loader maps one onto the other, so either spelling is accepted.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("fc."):
            k = "fc_param." + k[len("fc."):]
        out[k] = value
    return out


def mobilenet_spec(state: Mapping[str, torch.Tensor]) -> tuple[float, int, bool]:
    """(width, num_params, has fc_lm) of a prefix-free 3DDFA_V2 MobileNetV1 state dict.

    Raises:
        ValueError: ``conv1.weight`` or ``fc_param.weight`` is missing or malformed.
    """
    conv1, fc = state.get("conv1.weight"), state.get("fc_param.weight")
    if conv1 is None or fc is None or conv1.ndim != 4 or fc.ndim != 2:
        raise ValueError("not a 3DDFA_V2 MobileNetV1 state dict: it needs 'conv1.weight' and "
                         "'fc_param.weight' (after removing the 'module.' prefix).")
    width = conv1.shape[0] / 32.0
    if int(1024 * width) != fc.shape[1]:
        raise ValueError(f"conv1 has {conv1.shape[0]} channels (width {width:g}) but "
                         f"fc_param reads {fc.shape[1]} features.")
    return width, int(fc.shape[0]), "fc_lm.weight" in state
