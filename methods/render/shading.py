"""Vertex normals and Deep3D's spherical-harmonics Lambertian shading (torch, batched).

Room: per-vertex colour from albedo, normals and lighting; the rasteriser interpolates it.

Lighting follows Deep3D (``models/bfm.py: SH``, ``compute_color``): 9 real SH bands per
colour channel, ``gamma`` laid out (B, 27) = 3 channels x 9 coefficients (channel-major),
``init_lit`` (0.8) added to band 0 of every channel, and

    colour_c(n) = albedo_c * sum_k Y_k(n) * gamma_{c,k}

with ``Y_k`` the band-0/1/2 SH basis pre-multiplied by the Lambertian kernel constants
``a = (pi, 2 pi / sqrt 3, 2 pi / sqrt 8)`` and normalisation constants
``c = (1 / sqrt(4 pi), sqrt 3 / sqrt(4 pi), 3 sqrt 5 / sqrt(12 pi))``. Normals enter in
Deep3D's world frame (+y up, +z towards the camera), i.e. the suite's camera-frame normals
with y and z flipped (:func:`camera_to_world_normals`), so a Deep3D ``gamma`` lights a face
here exactly as it does in Deep3D.
"""

from __future__ import annotations

import math

import torch

#: Deep3D's SH constants (``models/bfm.py: SH``).
SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
#: Deep3D's default band-0 light added to ``gamma``.
INIT_LIT = 0.8


def vertex_adjacency(faces: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(V, K) ids of the faces around each vertex, padded with F (Deep3D's ``point_buf``).

    Args:
        faces: (F, 3) int64 triangles.
        n_vertices: V.
    """
    f = faces.shape[0]
    vf = faces.reshape(-1)
    order = torch.argsort(vf, stable=True)
    counts = torch.bincount(vf, minlength=n_vertices)
    k = max(int(counts.max()) if counts.numel() else 0, 1)
    first = torch.cumsum(counts, 0) - counts
    sorted_v = vf[order]
    slot = torch.arange(vf.numel(), device=faces.device) - first[sorted_v]
    adj = torch.full((n_vertices, k), f, dtype=torch.int64, device=faces.device)
    adj[sorted_v, slot] = torch.div(order, 3, rounding_mode="floor")
    return adj


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor,
                   adjacency: torch.Tensor | None = None) -> torch.Tensor:
    """Unit area-weighted vertex normals.

    Face normals ``(v1 - v0) x (v2 - v0)`` (length = twice the area, so larger faces weigh
    more) are summed over each vertex's faces with a gather (deterministic on every device)
    and normalised. Outward for counter-clockwise winding.

    Args:
        verts: (B, V, 3) vertices (any frame; the normals are in the same frame).
        faces: (F, 3) int64 triangles.
        adjacency: optional precomputed :func:`vertex_adjacency`.

    Returns:
        (B, V, 3) unit normals (zero vectors for unreferenced vertices).
    """
    b_sz, n_v = verts.shape[0], verts.shape[1]
    tri = verts.index_select(1, faces.reshape(-1)).view(b_sz, -1, 3, 3)
    v0, v1, v2 = tri.unbind(2)
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    fn = torch.cat([fn, fn.new_zeros(b_sz, 1, 3)], 1)  # pad row for the F sentinel
    adj = vertex_adjacency(faces, n_v) if adjacency is None else adjacency
    vn = fn.index_select(1, adj.reshape(-1)).view(b_sz, n_v, -1, 3).sum(2)
    return vn / vn.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def camera_to_world_normals(normals_cam: torch.Tensor) -> torch.Tensor:
    """Camera-frame normals (+y down, +z forward) in Deep3D's lighting frame (+y up, +z back)."""
    return normals_cam * normals_cam.new_tensor([1.0, -1.0, -1.0])


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 9) Deep3D's kernel-weighted SH basis ``Y`` of unit normals (..., 3) (world frame)."""
    a, c = SH_A, SH_C
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return torch.stack([
        a[0] * c[0] * torch.ones_like(x),
        -a[1] * c[1] * y,
        a[1] * c[1] * z,
        -a[1] * c[1] * x,
        a[2] * c[2] * x * y,
        -a[2] * c[2] * y * z,
        0.5 * a[2] * c[2] / math.sqrt(3.0) * (3.0 * z * z - 1.0),
        -a[2] * c[2] * x * z,
        0.5 * a[2] * c[2] * (x * x - y * y),
    ], -1)


def sh_shading(albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor | None,
               init_lit: float = INIT_LIT) -> torch.Tensor:
    """Lambertian SH shading, Deep3D's ``compute_color``.

    Args:
        albedo: (B, V, 3) RGB albedo in [0, 1].
        normals: (B, V, 3) unit normals in Deep3D's world frame (see
            :func:`camera_to_world_normals`).
        gamma: (B, 27) SH coefficients, channel-major (R's 9, G's 9, B's 9), or None for
            zeros (only ``init_lit``: uniform ambient light).
        init_lit: added to band 0 of every channel (Deep3D: 0.8).

    Returns:
        (B, V, 3) shaded colour (not clipped).
    """
    b_sz = albedo.shape[0]
    if gamma is None:
        gamma = albedo.new_zeros(b_sz, 27)
    if gamma.ndim != 2 or gamma.shape[1] != 27 or gamma.shape[0] != b_sz:
        raise ValueError(f"gamma must be (B, 27) with B = {b_sz}, got {tuple(gamma.shape)}.")
    g = gamma.reshape(b_sz, 3, 9).to(albedo.dtype)
    g = g + g.new_tensor([init_lit] + [0.0] * 8)
    y = sh_basis(normals)  # (B, V, 9)
    light = torch.einsum("bvk,bck->bvc", y, g)
    return light * albedo
