"""ArcFace iResNets with insightface ``arcface_torch`` module and state-dict key names.

Room: the face-recognition backbone used by MICA (its ``arcface`` weights) and by the
ELAM+LDL perceptual identity loss (a user's ``backbone.pth``). Keys match
``recognition/arcface_torch/backbones/iresnet.py`` (``conv1``, ``bn1``, ``prelu``,
``layer1.0.bn1`` ... ``layer4``, ``bn2``, ``fc``, ``features``), so official files load with
``strict=True``; depth (18/34/50/100) is read from the keys. Input: (B, 3, 112, 112) RGB in
[-1, 1], aligned to :data:`ARCFACE_TEMPLATE`.

Reference: Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition,
CVPR 2019; Duta et al. (iResNet), 2020.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from methods.base import read_torch_file

#: insightface's ArcFace alignment template for 112 x 112 crops (``arcface_dst``): eye
#: centres (image left, image right), nose tip, mouth corners.
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
    (70.7299, 92.2041),
)
ARCFACE_SIZE = 112
LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    """insightface's pre-activation basic block (BN-conv-BN-PReLU-conv-BN + shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, planes, H / stride, W / stride)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """insightface arcface_torch ``IResNet`` (112 x 112 input, 512-d embedding).

    Args:
        layers: blocks per stage (see :data:`LAYERS`).
        num_features: embedding size.
    """

    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False),
                                   nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) in [-1, 1] -> (B, num_features) embedding (not normalised)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(depth: int) -> IResNet:
    """An ``iresnet<depth>`` (18, 34, 50 or 100) with random weights.

    Raises:
        ValueError: unknown depth.
    """
    if depth not in LAYERS:
        raise ValueError(f"iResNet depth must be one of {sorted(LAYERS)}, got {depth}.")
    return IResNet(LAYERS[depth])


def load_iresnet(path: str | Path) -> IResNet:
    """An iResNet from an insightface-layout state dict file (depth inferred from its keys).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is not an iResNet state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"identity network weights {str(path)!r} do not exist.")
    state = read_torch_file(path, "identity network weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return iresnet_from_state_dict(state, str(path))


def iresnet_from_state_dict(state: object, source: str = "state dict") -> IResNet:
    """An iResNet holding ``state`` (insightface key names; depth read from the keys).

    Raises:
        ValueError: ``state`` is not an iResNet state dict.
    """
    if isinstance(state, dict):
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"{source!r} is not an ArcFace iResNet state dict (no fc.weight).")
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state
               if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(ids) + 1 if ids else 0)
    layers = tuple(blocks)
    depth = next((d for d, lay in LAYERS.items() if lay == layers), None)
    if depth is None:
        raise ValueError(f"{source!r}: blocks per stage {layers} match no iResNet "
                         f"({LAYERS}).")
    net = IResNet(LAYERS[depth], num_features=int(state["fc.weight"].shape[0]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                        strict=True)
    return net.eval()
