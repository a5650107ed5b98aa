"""Pinhole camera and head pose (one convention everywhere).

Shared by the renderer, the fitting baselines, the network and the synthetic generator.

Room: coordinate frames and projection (torch, batched, differentiable).

Frames:

* **model frame** (face models): metres, +x the subject's left, +y up, +z out of the face
  towards a frontal camera.
* **camera frame** (OpenCV): +x right in the image, +y down, +z forward (depth > 0).
* A head pose is a rotation ``R`` applied in the model frame (Euler angles pitch about x,
  yaw about y, roll about z; ``R = Rz @ Ry @ Rx`` as in Deep3D) followed by the fixed flip
  ``diag(1, -1, -1)`` into the camera frame and a translation ``t`` (camera frame, metres):
  ``v_cam = F R v + t``. A frontal face at distance d has ``R = I``, ``t = (0, 0, d)``.
* Pixels: ``u = f x / z + cx``, ``v = f y / z + cy``; pixel centres at integer + 0.5 when
  the image is seen as covering [0, W] x [0, H].

Default intrinsics follow Deep3D's 224-px setting (focal 1015, centre 112).
"""

from __future__ import annotations

import dataclasses

import torch

_FLIP = torch.tensor([1.0, -1.0, -1.0])


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    """Square-pixel pinhole intrinsics.

    Attributes:
        focal: focal length in pixels.
        width: image width in pixels.
        height: image height in pixels.
        cx: principal point x (defaults to width / 2).
        cy: principal point y (defaults to height / 2).
    """

    focal: float = 1015.0
    width: int = 224
    height: int = 224
    cx: float | None = None
    cy: float | None = None

    @property
    def center(self) -> tuple[float, float]:
        """Principal point (cx, cy) in pixels."""
        return (
            self.width / 2.0 if self.cx is None else self.cx,
            self.height / 2.0 if self.cy is None else self.cy,
        )

    def scaled(self, factor: float) -> PinholeCamera:
        """The same camera for an image resized by ``factor`` (e.g. supersampling)."""
        cx, cy = self.center
        return PinholeCamera(
            focal=self.focal * factor,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
            cx=cx * factor,
            cy=cy * factor,
        )


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from Euler angles.

    Args:
        angles: (B, 3) radians (pitch about x, yaw about y, roll about z).

    Returns:
        (B, 3, 3) ``Rz @ Ry @ Rx``.
    """
    x, y, z = angles[:, 0], angles[:, 1], angles[:, 2]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def model_to_camera(
    vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    """Poses model-frame vertices into the camera frame: ``F R v + t``.

    Args:
        vertices: (B, V, 3) model-frame vertices, metres.
        rotation: (B, 3, 3) head rotation (model frame).
        translation: (B, 3) camera-frame translation, metres.

    Returns:
        (B, V, 3) camera-frame vertices.
    """
    rotated = vertices @ rotation.transpose(1, 2)
    return rotated * _FLIP.to(vertices) + translation[:, None, :]


def project(points_cam: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
    """Perspective projection of camera-frame points to pixels.

    Args:
        points_cam: (B, N, 3) camera-frame points with z > 0.
        camera: intrinsics.

    Returns:
        (B, N, 2) pixel coordinates (x right, y down).
    """
    cx, cy = camera.center
    z = points_cam[..., 2:3].clamp(min=1e-6)
    xy = points_cam[..., :2] / z * camera.focal
    return xy + xy.new_tensor([cx, cy])


def camera_to_clip(
    points_cam: torch.Tensor, camera: PinholeCamera, znear: float = 0.01, zfar: float = 10.0
) -> torch.Tensor:
    """OpenGL-style clip coordinates of camera-frame points (for nvdiffrast).

    ``x_ndc = 2 u / W - 1`` and ``y_ndc = 2 v / H - 1`` with ``(u, v)`` the pixel position of
    :func:`project`, so nvdiffrast's first image row (y_ndc = -1) is the image's top row, and
    ``w = z``; depth maps ``[znear, zfar]`` to ``[-1, 1]``.

    Args:
        points_cam: (B, N, 3) camera-frame points, metres.
        camera: intrinsics.
        znear: near plane, metres.
        zfar: far plane, metres.

    Returns:
        (B, N, 4) clip coordinates.
    """
    cx, cy = camera.center
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    xc = (2.0 * camera.focal / camera.width) * x + (2.0 * cx / camera.width - 1.0) * z
    yc = (2.0 * camera.focal / camera.height) * y + (2.0 * cy / camera.height - 1.0) * z
    zc = (zfar + znear) / (zfar - znear) * z - 2.0 * zfar * znear / (zfar - znear)
    return torch.stack([xc, yc, zc, z], -1)
