"""The perceptual identity loss: an ArcFace iResNet (user-supplied weights) on aligned faces.

Room: Deep3D's ``w_feat`` term. No face-recognition weights can ship with the project, so the
loss is *inactive* unless the user points ``identity_weights`` at a state dict. The network
is :mod:`methods.nets.iresnet`, with the module and state-dict key names of insightface's
``recognition/arcface_torch/backbones/iresnet.py`` (``conv1``, ``bn1``, ``prelu``,
``layer1.0.bn1`` ... ``layer4``, ``bn2``, ``fc``, ``features``), so the official
``backbone.pth`` files (e.g. ms1mv3 r50, the one Deep3D uses) load with
``load_state_dict(strict=True)``; depth (18/34/50/100) is read from the keys. Files are read
with ``torch.load(..., weights_only=True)``.

Loss (Deep3D ``RecogNetWrapper`` + ``perceptual_loss``): the rendered face is composited over
the photo (``R * mask + I * (1 - mask)``); photo and composite are warped to ArcFace's
112 x 112 crop by the similarity taking the five landmark-derived points (eye centres,
nose tip, mouth corners of the *target* landmarks) onto insightface's template; inputs are
scaled to [-1, 1]; ``L = mean(1 - cos(f(I), f(C)))`` with L2-normalised features.

Example::

    ident = IdentityLoss("~/arcface/ms1mv3_r50/backbone.pth")
    loss = ident(images, rendered, mask, target_landmarks)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from methods.nets.iresnet import ARCFACE_SIZE, ARCFACE_TEMPLATE, iresnet, load_iresnet

logger = logging.getLogger(__name__)

__all__ = ["ARCFACE_SIZE", "ARCFACE_TEMPLATE", "IdentityLoss", "iresnet", "load_iresnet",
           "similarity_2d", "warp_to_arcface"]


def similarity_2d(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched least-squares 2D similarity (Umeyama) ``dst ~ A src + b``.

    Args:
        src: (B, N, 2) points.
        dst: (N, 2) or (B, N, 2) points.

    Returns:
        (B, 2, 3) matrices ``[A | b]``.
    """
    dst = dst.expand_as(src)
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s0, d0 = src - ms, dst - md
    cov = d0.transpose(1, 2) @ s0 / src.shape[1]
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 1] = torch.sign(torch.det(u @ vt))
    rot = u @ torch.diag_embed(d) @ vt
    var = s0.pow(2).sum((1, 2)) / src.shape[1]
    scale = (sig * d).sum(1) / var.clamp(min=1e-12)
    a = rot * scale[:, None, None]
    b = md[:, 0] - (a @ ms[:, 0, :, None])[..., 0]
    return torch.cat([a, b[:, :, None]], 2)


def warp_to_arcface(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) crops -> (B, 3, 112, 112) ArcFace crops by their landmarks' five points.

    Args:
        images: (B, H, W, 3) in [0, 1].
        landmarks: (B, 68, 2) pixel landmarks of those crops.
    """
    b, h, w, _ = images.shape
    lm = landmarks.detach()
    five = torch.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48],
                        lm[:, 54]], 1)
    m = similarity_2d(five, torch.tensor(ARCFACE_TEMPLATE, dtype=lm.dtype, device=lm.device))
    a, t = m[:, :, :2], m[:, :, 2]
    ainv = torch.linalg.inv(a)
    # out pixel o = (o_n + 1) * 56; in = A^-1 (o - t); in_n = 2 in / (W, H) - 1
    half = ARCFACE_SIZE / 2.0
    sz = torch.tensor([w, h], dtype=lm.dtype, device=lm.device)
    theta_a = (2.0 / sz)[None, :, None] * ainv * half
    theta_b = (2.0 / sz)[None] * (ainv @ (half - t)[..., None])[..., 0] - 1.0
    grid = F.affine_grid(torch.cat([theta_a, theta_b[:, :, None]], 2),
                         (b, 3, ARCFACE_SIZE, ARCFACE_SIZE), align_corners=False)
    return F.grid_sample(images.permute(0, 3, 1, 2), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=False)


class IdentityLoss(nn.Module):
    """``1 - cos`` between ArcFace embeddings of the photo and of the composited render.

    Args:
        weights: insightface-layout iResNet state dict file.
        device: torch device.
    """

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        super().__init__()
        self.net = load_iresnet(weights).to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 512) L2-normalised embeddings of (B, H, W, 3) crops in [0, 1]."""
        x = warp_to_arcface(images, landmarks) * 2.0 - 1.0
        return F.normalize(self.net(x), dim=-1)

    def forward(self, images: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor,
                landmarks: torch.Tensor) -> torch.Tensor:
        """Scalar ``mean(1 - cos(f(photo), f(render over photo)))``."""
        self.net.eval()
        comp = rendered * mask[..., None] + images * (1.0 - mask[..., None])
        with torch.no_grad():
            f_img = self.embed(images, landmarks)
        f_pred = self.embed(comp, landmarks)
        return (1.0 - (f_img * f_pred).sum(-1)).mean()
