"""One rendering interface over two backends: built-in PyTorch (default) and nvdiffrast.

Room: the user-facing renderer: rasterise (``rasterizer.py`` or ``nvdiffrast_backend.py``),
shade per vertex (``shading.py``: Deep3D's SH Lambertian model), interpolate, composite,
and optionally supersample for anti-aliasing.

Usage::

    from methods.render import PinholeCamera, Renderer, model_to_camera, euler_to_matrix

    renderer = Renderer(PinholeCamera(), backend="auto")   # nvdiffrast on CUDA if installed
    verts_cam = model_to_camera(verts, euler_to_matrix(angles), trans)   # (B, V, 3)
    out = renderer.render(verts_cam, faces, albedo, gamma)                # albedo (B, V, 3)
    out.image   # (B, H, W, 3), out.mask (B, H, W) coverage, out.depth, out.tri_id

Backends agree to within rasterisation tolerance (pixels whose centre lies on a shared
edge may pick a different triangle). The torch backend is deterministic: the same inputs
give bit-identical outputs and, on CPU, bit-identical gradients.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F

from methods.render import nvdiffrast_backend as nvd
from methods.render.camera import PinholeCamera
from methods.render.rasterizer import (
    MAX_CANDIDATES,
    Fragments,
    interpolate_torch,
    rasterize_torch,
)
from methods.render.shading import (
    INIT_LIT,
    camera_to_world_normals,
    sh_shading,
    vertex_normals,
)

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "nvdiffrast")


class RenderOutput(NamedTuple):
    """What :meth:`Renderer.render` returns (output resolution unless stated).

    Attributes:
        image: (B, H, W, 3) colour, composited over the background when one is given.
        mask: (B, H, W) float coverage in [0, 1] (fractional at edges when supersampled).
        depth: (B, H, W) camera-frame depth in metres, 0 on background (the mean over
            covered sub-samples when supersampled).
        tri_id: (B, H, W) int64 visible triangle, -1 background (centre sub-sample).
        fragments: the rasteriser's fragments at the rendering (supersampled) resolution.
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    tri_id: torch.Tensor
    fragments: Fragments


class Renderer:
    """A differentiable mesh renderer with a perspective camera.

    Args:
        camera: intrinsics and output size (default Deep3D's 224 px, focal 1015).
        backend: ``torch`` (built-in, CPU and GPU), ``nvdiffrast`` (CUDA, optional extra),
            or ``auto`` (nvdiffrast when importable and the vertices are on CUDA, else torch).
        znear: near plane in metres.
        zfar: far plane in metres (nvdiffrast's depth range).
        supersample: render at this integer factor and box-downsample (anti-aliasing).
        cull_backfaces: drop back-facing triangles (torch backend only).
        max_candidates: torch backend memory cap (see ``rasterize_torch``).

    Raises:
        ValueError: unknown backend or a non-positive supersampling factor.
    """

    def __init__(
        self,
        camera: PinholeCamera | None = None,
        backend: str = "auto",
        znear: float = 1e-3,
        zfar: float = 100.0,
        supersample: int = 1,
        cull_backfaces: bool = False,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown renderer backend {backend!r}; use one of {BACKENDS}.")
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample!r}.")
        self.camera = camera or PinholeCamera()
        self.backend = backend
        self.znear, self.zfar = znear, zfar
        self.supersample = int(supersample)
        self.cull_backfaces = cull_backfaces
        self.max_candidates = max_candidates

    def backend_for(self, device: torch.device) -> str:
        """The backend used for tensors on ``device``.

        Raises:
            ImportError: ``nvdiffrast`` was asked for and is not installed.
            ValueError: ``nvdiffrast`` was asked for with CPU tensors.
        """
        if self.backend == "torch":
            return "torch"
        if self.backend == "nvdiffrast":
            nvd.import_nvdiffrast()
            if device.type != "cuda":
                raise ValueError("the nvdiffrast backend needs CUDA tensors; use backend='torch'.")
            return "nvdiffrast"
        return "nvdiffrast" if device.type == "cuda" and nvd.available() else "torch"

    def rasterize(self, verts_cam: torch.Tensor, faces: torch.Tensor,
                  camera: PinholeCamera | None = None) -> Fragments:
        """Fragments of (B, V, 3) camera-frame vertices at ``camera``'s resolution."""
        camera = camera or self.camera
        if self.backend_for(verts_cam.device) == "nvdiffrast":
            return nvd.rasterize_nvdiffrast(verts_cam, faces, camera, self.znear, self.zfar)
        return rasterize_torch(verts_cam, faces, camera, znear=self.znear,
                               cull_backfaces=self.cull_backfaces,
                               max_candidates=self.max_candidates)

    @staticmethod
    def interpolate(attrs: torch.Tensor, fragments: Fragments) -> torch.Tensor:
        """(B, H, W, C) per-pixel attributes from (B or 1, V, C) vertex attributes."""
        if fragments.raw is not None:
            return nvd.interpolate_nvdiffrast(attrs, fragments)
        return interpolate_torch(attrs, fragments)

    def render(
        self,
        verts_cam: torch.Tensor,
        faces: torch.Tensor,
        albedo: torch.Tensor,
        gamma: torch.Tensor | None = None,
        init_lit: float = INIT_LIT,
        shading: bool = True,
        normals: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        antialias: bool = False,
    ) -> RenderOutput:
        """Renders shaded meshes.

        Args:
            verts_cam: (B, V, 3) camera-frame vertices, metres (see ``camera.py``).
            faces: (F, 3) int64 triangles (counter-clockwise seen from outside).
            albedo: (B or 1, V, 3) per-vertex albedo in [0, 1] (or final colour when
                ``shading`` is False).
            gamma: (B, 27) Deep3D SH lighting (see ``shading.py``); None = ambient only.
            init_lit: band-0 light added to ``gamma`` (Deep3D: 0.8).
            shading: False renders ``albedo`` as unlit per-vertex colour.
            normals: optional (B, V, 3) camera-frame unit normals (default: area-weighted
                vertex normals of the mesh).
            background: optional (B, H, W, 3) or (3,) colour behind the mesh.
            antialias: apply ``dr.antialias`` (nvdiffrast backend only; the torch backend
                anti-aliases by ``supersample``).

        Returns:
            :class:`RenderOutput` at the camera's resolution.
        """
        b_sz = verts_cam.shape[0]
        if albedo.ndim != 3 or albedo.shape[-1] != 3 or albedo.shape[1] != verts_cam.shape[1]:
            raise ValueError(
                f"albedo must be (B, {verts_cam.shape[1]}, 3), got {tuple(albedo.shape)}."
            )
        if shading:
            if normals is None:
                normals = vertex_normals(verts_cam, faces.to(verts_cam.device))
            colour = sh_shading(albedo.expand(b_sz, -1, -1), camera_to_world_normals(normals),
                                gamma, init_lit)
        else:
            colour = albedo
        s = self.supersample
        cam_hi = self.camera.scaled(s) if s > 1 else self.camera
        frags = self.rasterize(verts_cam, faces, cam_hi)
        image = self.interpolate(colour, frags)
        mask = frags.mask.to(image.dtype)
        depth = frags.depth
        if antialias and frags.raw is not None:
            image = nvd.antialias_nvdiffrast(torch.cat([image, mask[..., None]], -1), frags)
            image, mask = image[..., :3], image[..., 3]
        tri_id = frags.tri_id
        if s > 1:
            image = _box_down(image, s)
            cov = _box_down(mask[..., None], s)[..., 0]
            depth = _box_down((depth * mask)[..., None], s)[..., 0] / cov.clamp(min=1e-12)
            mask = cov
            tri_id = tri_id[:, s // 2 :: s, s // 2 :: s]
        if background is not None:
            bg = background.to(image)
            if bg.ndim == 1:
                bg = bg.view(1, 1, 1, 3)
            image = image + bg * (1.0 - mask[..., None])
        return RenderOutput(image=image, mask=mask, depth=depth, tri_id=tri_id, fragments=frags)


def _box_down(x: torch.Tensor, s: int) -> torch.Tensor:
    """(B, H*s, W*s, C) -> (B, H, W, C) mean over s x s blocks."""
    return F.avg_pool2d(x.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)


def render(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    albedo: torch.Tensor,
    gamma: torch.Tensor | None = None,
    camera: PinholeCamera | None = None,
    backend: str = "auto",
    **kwargs,
) -> RenderOutput:
    """Functional shortcut for one call.

    Same as ``Renderer(camera, backend).render(verts_cam, faces, albedo, gamma, **kwargs)``.
    """
    return Renderer(camera, backend=backend).render(verts_cam, faces, albedo, gamma, **kwargs)
