"""The nvdiffrast backend (optional; CUDA only): the same fragments from NVIDIA's rasteriser.

Room: adapting nvdiffrast (``dr.RasterizeCudaContext``, ``dr.rasterize``, ``dr.interpolate``,
``dr.antialias``) to :class:`~methods.render.rasterizer.Fragments`. nvdiffrast is not on
PyPI; install it from source on a CUDA machine
(``pip install git+https://github.com/NVlabs/nvdiffrast``).

nvdiffrast's ``rast`` output is ``(u, v, z/w, triangle_id + 1)`` per pixel, with
``attr = u * a0 + v * a1 + (1 - u - v) * a2`` (perspective-correct); the first image row is
clip-space ``y = -1``, which :func:`~methods.render.camera.camera_to_clip` maps to the top
row of the suite's images, so both backends return images in the same orientation.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from methods.render.camera import PinholeCamera, camera_to_clip
from methods.render.rasterizer import Fragments, check_mesh

INSTALL_HINT = (
    "the nvdiffrast backend needs NVIDIA's nvdiffrast and a CUDA device: "
    "pip install git+https://github.com/NVlabs/nvdiffrast (or use backend='torch')"
)


def import_nvdiffrast() -> Any:
    """``nvdiffrast.torch``, or an ImportError that says how to install it."""
    try:
        import nvdiffrast.torch as dr
    except ImportError as exc:
        if "nvdiffrast" not in str(exc):
            raise
        raise ImportError(INSTALL_HINT) from exc
    return dr


def available() -> bool:
    """Whether nvdiffrast imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import_nvdiffrast()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _context(device: str) -> Any:
    dr = import_nvdiffrast()
    return dr.RasterizeCudaContext(device=torch.device(device))


def rasterize_nvdiffrast(verts_cam: torch.Tensor, faces: torch.Tensor, camera: PinholeCamera,
                         znear: float = 1e-3, zfar: float = 100.0) -> Fragments:
    """Rasterises with nvdiffrast; same contract as :func:`rasterize_torch`.

    Args:
        verts_cam: (B, V, 3) float32 camera-frame vertices on a CUDA device.
        faces: (F, 3) triangles.
        camera: intrinsics and image size.
        znear: near clip plane in metres (nvdiffrast clips, the torch backend drops).
        zfar: far clip plane in metres.

    Returns:
        :class:`Fragments`; ``raw`` holds ``(rast, clip_positions, int32 faces)``.
    """
    check_mesh(verts_cam, faces)
    if verts_cam.device.type != "cuda":
        raise ValueError("the nvdiffrast backend needs vertices on a CUDA device.")
    dr = import_nvdiffrast()
    ctx = _context(str(verts_cam.device))
    h, w = camera.height, camera.width
    clip = camera_to_clip(verts_cam.float(), camera, znear, zfar).contiguous()
    tri = faces.to(device=verts_cam.device, dtype=torch.int32).contiguous()
    rast, _ = dr.rasterize(ctx, clip, tri, resolution=[h, w])
    tri_id = rast[..., 3].to(torch.int64) - 1
    mask = tri_id >= 0
    u, v = rast[..., 0], rast[..., 1]
    bary = torch.stack([u, v, 1.0 - u - v], -1) * mask[..., None]
    depth, _ = dr.interpolate(verts_cam[..., 2:3].float().contiguous(), rast, tri)
    depth = depth[..., 0] * mask
    pix = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
    faces64 = faces.to(device=verts_cam.device, dtype=torch.int64)
    return Fragments(
        tri_id=tri_id,
        bary=bary,
        depth=depth,
        mask=mask,
        pix=pix,
        pix_bary=bary.reshape(-1, 3)[pix],
        pix_faces=faces64[tri_id.reshape(-1)[pix]],
        pix_batch=torch.div(pix, h * w, rounding_mode="floor"),
        raw=(rast, clip, tri),
    )


def interpolate_nvdiffrast(attrs: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """``dr.interpolate`` of (B or 1, V, C) attributes; zeros on background pixels."""
    dr = import_nvdiffrast()
    rast, _, tri = fragments.raw
    out, _ = dr.interpolate(attrs.float().contiguous(), rast, tri)
    return out * fragments.mask[..., None]


def antialias_nvdiffrast(image: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """``dr.antialias`` of a (B, H, W, C) image rendered from ``fragments``.

    Unlike the other steps it also gives silhouette gradients.
    """
    dr = import_nvdiffrast()
    rast, clip, tri = fragments.raw
    return dr.antialias(image.contiguous(), rast, clip, tri)
