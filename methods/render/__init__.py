"""Rendering: camera conventions, a differentiable rasteriser (PyTorch; nvdiffrast optional).

Room: images from meshes. See ``camera.py`` for the frames every part of the suite shares,
``renderer.py`` for the interface (:class:`Renderer`, :func:`render`), ``rasterizer.py`` for
the built-in backend and ``shading.py`` for Deep3D's SH lighting.
"""

from methods.render.camera import (
    PinholeCamera,
    camera_to_clip,
    euler_to_matrix,
    model_to_camera,
    project,
)
from methods.render.rasterizer import (
    Fragments,
    interpolate_torch,
    rasterize_torch,
    vertex_visibility,
)
from methods.render.renderer import Renderer, RenderOutput, render
from methods.render.shading import sh_basis, sh_shading, vertex_normals

__all__ = [
    "Fragments", "PinholeCamera", "RenderOutput", "Renderer", "camera_to_clip",
    "euler_to_matrix", "interpolate_torch", "model_to_camera", "project", "rasterize_torch",
    "render", "sh_basis", "sh_shading", "vertex_normals", "vertex_visibility",
]
