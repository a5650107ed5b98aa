"""The built-in pure-PyTorch rasteriser (CPU and GPU): z-buffer, then differentiable barycentrics.

Room: turning camera-frame triangles into per-pixel fragments. Shading lives in
``shading.py``; backend choice and the user-facing ``render`` in ``renderer.py``.

Algorithm (what nvdiffrast's forward does, re-expressed as vectorised tensor ops):

1. *Visibility, without gradient.* Every triangle is projected (``camera.project``); the
   pixel centres inside its screen bounding box are enumerated as (triangle, pixel)
   candidates (in chunks, so one huge triangle or a big batch never allocates more than
   ``max_candidates`` at once); screen-space barycentrics and the inverse depth, affine
   functions of the pixel position per triangle, keep the candidates inside the triangle;
   a ``scatter_reduce(amin)`` over a packed int64 key
   ``(inverted float32 bits of the inverse depth) << 24 | triangle id`` keeps the nearest
   triangle per pixel. Positive float32 bit patterns order like the floats, and ties go to
   the lower triangle id, so the result is exact and deterministic on every device.
2. *Differentiable interpolation.* For the winning triangle of each covered pixel, the
   perspective-correct barycentrics ``b_i = (l_i / z_i) / sum_j (l_j / z_j)`` (``l`` the
   screen-space barycentrics of the pixel centre) and depth ``1 / sum_j (l_j / z_j)`` are
   recomputed with autograd from the vertex positions. Attributes interpolated with them
   get gradients with respect to vertex positions (through ``b``) and vertex attributes,
   as nvdiffrast's ``rasterize`` + ``interpolate`` give without ``antialias``: no
   silhouette (visibility) gradients, like Deep3D's training.

Conventions: camera frame and pixels as ``camera.py`` (pixel centres at integer + 0.5; a
pixel is covered when its centre is inside or on the edge of a triangle). No back-face
culling unless asked; triangles with a vertex nearer than ``znear`` are dropped (no
clipping). Background pixels have ``tri_id = -1``, zero barycentrics and zero depth.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from methods.render.camera import PinholeCamera

logger = logging.getLogger(__name__)

_TRI_BITS = 24
_TRI_MASK = (1 << _TRI_BITS) - 1
_KEY_EMPTY = torch.iinfo(torch.int64).max
#: Default cap on (triangle, pixel) candidates per chunk (about 100 MB of temporaries).
MAX_CANDIDATES = 1 << 21


@dataclasses.dataclass
class Fragments:
    """Per-pixel rasterisation output, dense and packed.

    Attributes:
        tri_id: (B, H, W) int64 index of the visible triangle, -1 for background.
        bary: (B, H, W, 3) perspective-correct barycentrics of the visible triangle
            (differentiable w.r.t. vertex positions), zeros for background.
        depth: (B, H, W) camera-frame depth z in metres (differentiable), 0 for background.
        mask: (B, H, W) bool, covered pixels.
        pix: (N,) int64 flat indices ``b * H * W + y * W + x`` of the covered pixels.
        pix_bary: (N, 3) barycentrics of the covered pixels (the rows of ``bary``).
        pix_faces: (N, 3) int64 vertex ids of each covered pixel's triangle.
        pix_batch: (N,) int64 batch index of each covered pixel.
        raw: backend-specific extra (nvdiffrast's ``rast`` tensor and clip positions).
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    pix: torch.Tensor
    pix_bary: torch.Tensor
    pix_faces: torch.Tensor
    pix_batch: torch.Tensor
    raw: Any = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, H, W)."""
        b, h, w = self.tri_id.shape
        return b, h, w


def check_mesh(verts_cam: torch.Tensor, faces: torch.Tensor) -> None:
    """Raises ValueError unless ``verts_cam`` is (B, V, 3) float and ``faces`` (F, 3) valid ids."""
    if verts_cam.ndim != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(verts_cam.shape)}.")
    if not verts_cam.is_floating_point():
        raise ValueError(f"vertices must be floating point, got {verts_cam.dtype}.")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"faces must be (F, 3) int64, got {tuple(faces.shape)} {faces.dtype}.")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_cam.shape[1]):
        raise ValueError(f"faces index vertices outside 0..{verts_cam.shape[1] - 1}.")
    if faces.shape[0] > _TRI_MASK:
        raise ValueError(f"at most {_TRI_MASK} triangles per mesh, got {faces.shape[0]}.")


def _project(points: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
    cx, cy = camera.center
    z = points[..., 2]
    return torch.stack(
        [points[..., 0] / z * camera.focal + cx, points[..., 1] / z * camera.focal + cy], -1
    )


def _edge(a: torch.Tensor, b: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Signed doubled area of (a, b, p): positive when p is left of a->b (x right, y down)."""
    return (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])


@torch.no_grad()
def _zbuffer(verts_cam: torch.Tensor, faces: torch.Tensor, camera: PinholeCamera, znear: float,
             cull_backfaces: bool, max_candidates: int) -> torch.Tensor:
    """(B * H * W,) int64 packed depth/triangle keys of the nearest triangle per pixel."""
    b_sz = verts_cam.shape[0]
    h, w = camera.height, camera.width
    dev = verts_cam.device
    v = verts_cam.detach().to(torch.float32)
    tri = v.index_select(1, faces.reshape(-1)).view(b_sz, -1, 3, 3)  # (B, F, 3, 3)
    uv = _project(tri, camera)  # (B, F, 3, 2)
    z = tri[..., 2]
    area = _edge(uv[..., 0, :], uv[..., 1, :], uv[..., 2, 0], uv[..., 2, 1])  # (B, F)
    valid = (z > znear).all(-1) & (area.abs() > 1e-9) & torch.isfinite(area)
    if cull_backfaces:
        # Front faces (counter-clockwise seen from outside, the suite's winding) have
        # negative signed area in pixel coordinates (y down).
        valid &= area < 0
    lo = uv.amin(-2)
    hi = uv.amax(-2)
    x0 = torch.ceil(lo[..., 0] - 0.5).clamp(0, w)
    x1 = torch.floor(hi[..., 0] - 0.5).clamp(-1, w - 1)
    y0 = torch.ceil(lo[..., 1] - 0.5).clamp(0, h)
    y1 = torch.floor(hi[..., 1] - 0.5).clamp(-1, h - 1)
    nx = (x1 - x0 + 1).clamp(min=0)
    ny = (y1 - y0 + 1).clamp(min=0)
    count = torch.where(valid, nx * ny, torch.zeros_like(nx)).reshape(-1).to(torch.int64)
    keep = torch.nonzero(count, as_tuple=True)[0]  # flat (b * F + f) ids, sorted
    zbuf = torch.full((b_sz * h * w,), _KEY_EMPTY, dtype=torch.int64, device=dev)
    if keep.numel() == 0:
        return zbuf
    n_faces = faces.shape[0]
    counts = count[keep]
    # Per kept triangle, affine functions of the pixel centre (x, y): the screen-space
    # barycentrics l0, l1 and the inverse depth sum_i l_i / z_i (affine in screen space).
    q = uv.reshape(-1, 3, 2)[keep].double()
    zk = z.reshape(-1, 3)[keep].double()
    inv_area = 1.0 / area.reshape(-1)[keep].double()
    a0 = (q[:, 1, 1] - q[:, 2, 1]) * inv_area  # l0 = edge(q1, q2, p) / area
    b0 = (q[:, 2, 0] - q[:, 1, 0]) * inv_area
    c0 = -(a0 * q[:, 1, 0] + b0 * q[:, 1, 1])
    a1 = (q[:, 2, 1] - q[:, 0, 1]) * inv_area  # l1 = edge(q2, q0, p) / area
    b1 = (q[:, 0, 0] - q[:, 2, 0]) * inv_area
    c1 = -(a1 * q[:, 2, 0] + b1 * q[:, 2, 1])
    iz0, iz1, iz2 = 1.0 / zk[:, 0], 1.0 / zk[:, 1], 1.0 / zk[:, 2]
    ai = a0 * (iz0 - iz2) + a1 * (iz1 - iz2)
    bi = b0 * (iz0 - iz2) + b1 * (iz1 - iz2)
    ci = c0 * (iz0 - iz2) + c1 * (iz1 - iz2) + iz2
    x0k = x0.reshape(-1)[keep].double()
    y0k = y0.reshape(-1)[keep].double()
    nxk = nx.reshape(-1)[keep].double()
    # Evaluate at the bounding box's first pixel centre; step per pixel in x and y.
    xc, yc = x0k + 0.5, y0k + 0.5
    coef = torch.stack([
        a0 * xc + b0 * yc + c0, a0, b0, a1 * xc + b1 * yc + c1, a1, b1,
        ai * xc + bi * yc + ci, ai, bi, nxk,
    ], 1).to(torch.float32)
    b_idx = torch.div(keep, n_faces, rounding_mode="floor")
    base = b_idx * (h * w) + y0.reshape(-1)[keep].to(torch.int64) * w + x0.reshape(-1)[
        keep].to(torch.int64)
    f_idx = keep - b_idx * n_faces
    # Chunk boundaries on the triangle list so each chunk has <= max_candidates candidates
    # (a single triangle larger than that is a chunk of its own).
    ends = torch.cumsum(counts, 0)
    bounds = [0]
    start_count = 0
    while bounds[-1] < len(counts):
        nxt = int(torch.searchsorted(ends, start_count + max_candidates, right=True))
        nxt = max(nxt, bounds[-1] + 1)
        bounds.append(nxt)
        start_count = int(ends[nxt - 1])
    logger.debug("z-buffer: %d triangles, %d candidates, %d chunks", len(counts),
                 int(ends[-1]), len(bounds) - 1)
    for c0_, c1_ in zip(bounds[:-1], bounds[1:]):
        cnt = counts[c0_:c1_]
        rep = torch.repeat_interleave(torch.arange(c0_, c1_, device=dev), cnt)
        first = (torch.cumsum(cnt, 0) - cnt).to(torch.float32)
        # Candidate k of its triangle sits at (k mod nx, k div nx) from the box corner;
        # float arithmetic is exact here (k < 2**24) and faster than integer division.
        k = torch.arange(int(cnt.sum()), device=dev, dtype=torch.float32) - first[rep - c0_]
        cf = coef.index_select(0, rep)
        nxt_ = cf[:, 9]
        dy = torch.floor((k + 0.5) / nxt_)
        dx = k - dy * nxt_
        l0 = cf[:, 0] + cf[:, 1] * dx + cf[:, 2] * dy
        l1 = cf[:, 3] + cf[:, 4] * dx + cf[:, 5] * dy
        inside = (l0 >= 0) & (l1 >= 0) & (l0 + l1 <= 1)
        inv_z = cf[:, 6] + cf[:, 7] * dx + cf[:, 8] * dy
        # Nearest = largest inverse depth: flip its (positive float) bits so amin finds it.
        # Candidates outside their triangle get the empty key (cheaper than compacting).
        zbits = 0x7F800000 - inv_z.clamp(min=1e-30).view(torch.int32).to(torch.int64)
        key = torch.where(inside, (zbits << _TRI_BITS) | f_idx.index_select(0, rep), _KEY_EMPTY)
        pix = base.index_select(0, rep) + dy.to(torch.int64) * w + dx.to(torch.int64)
        zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    return zbuf


def rasterize_torch(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    camera: PinholeCamera,
    znear: float = 1e-3,
    cull_backfaces: bool = False,
    max_candidates: int = MAX_CANDIDATES,
) -> Fragments:
    """Rasterises a batch of meshes sharing one triangle list.

    Args:
        verts_cam: (B, V, 3) camera-frame vertices in metres (+z forward); float32 or
            float64 (gradients flow to them through ``bary`` and ``depth``).
        faces: (F, 3) int64 triangles.
        camera: intrinsics and image size.
        znear: triangles with a vertex at depth <= ``znear`` (metres) are dropped.
        cull_backfaces: drop triangles facing away from the camera (outward normals with
            counter-clockwise winding, as ICT and BFM are wound).
        max_candidates: cap on (triangle, pixel) pairs processed at once (memory bound).

    Returns:
        :class:`Fragments` of shape (B, H, W).

    Raises:
        ValueError: bad shapes or face ids.
    """
    check_mesh(verts_cam, faces)
    faces = faces.to(device=verts_cam.device, dtype=torch.int64)
    b_sz = verts_cam.shape[0]
    h, w = camera.height, camera.width
    zbuf = _zbuffer(verts_cam, faces, camera, znear, cull_backfaces, max_candidates)
    covered = zbuf != _KEY_EMPTY
    pix = torch.nonzero(covered, as_tuple=True)[0]
    tri_flat = torch.full_like(zbuf, -1)
    tri_flat[pix] = zbuf[pix] & _TRI_MASK
    pix_batch = torch.div(pix, h * w, rounding_mode="floor")
    rem = pix - pix_batch * (h * w)
    py = torch.div(rem, w, rounding_mode="floor")
    px = rem - py * w
    pix_faces = faces.index_select(0, tri_flat.index_select(0, pix))  # (N, 3)

    # Differentiable part: barycentrics of the winning triangle at each covered pixel centre.
    # (index_select on flattened arrays: much faster than advanced indexing on CPU.)
    n_v = verts_cam.shape[1]
    flat_ids = (pix_batch[:, None] * n_v + pix_faces).reshape(-1)
    p = verts_cam.reshape(-1, 3).index_select(0, flat_ids).view(-1, 3, 3)  # (N, 3, 3)
    q = _project(p, camera)  # (N, 3, 2)
    pxc = px.to(verts_cam.dtype) + 0.5
    pyc = py.to(verts_cam.dtype) + 0.5
    area = _edge(q[:, 0], q[:, 1], q[:, 2, 0], q[:, 2, 1])
    l0 = _edge(q[:, 1], q[:, 2], pxc, pyc) / area
    l1 = _edge(q[:, 2], q[:, 0], pxc, pyc) / area
    l2 = 1.0 - l0 - l1
    lz = torch.stack([l0, l1, l2], -1) / p[..., 2]
    inv_z = lz.sum(-1, keepdim=True)
    pix_bary = lz / inv_z
    pix_depth = 1.0 / inv_z[:, 0]

    n_pix = b_sz * h * w
    bary = verts_cam.new_zeros(n_pix, 3).index_put((pix,), pix_bary)
    depth = verts_cam.new_zeros(n_pix).index_put((pix,), pix_depth)
    return Fragments(
        tri_id=tri_flat.view(b_sz, h, w),
        bary=bary.view(b_sz, h, w, 3),
        depth=depth.view(b_sz, h, w),
        mask=covered.view(b_sz, h, w),
        pix=pix,
        pix_bary=pix_bary,
        pix_faces=pix_faces,
        pix_batch=pix_batch,
    )


def interpolate_torch(attrs: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolates per-vertex attributes with the fragments' barycentrics.

    Args:
        attrs: (B, V, C) or (1, V, C) (broadcast over the batch) vertex attributes.
        fragments: output of a rasteriser for the same mesh.

    Returns:
        (B, H, W, C) attributes, zeros on background pixels; differentiable w.r.t.
        ``attrs`` and (through the barycentrics) the vertex positions.
    """
    b_sz, h, w = fragments.shape
    if attrs.ndim != 3 or attrs.shape[0] not in (1, b_sz):
        raise ValueError(f"attrs must be (B, V, C) with B = {b_sz} or 1, got {tuple(attrs.shape)}.")
    n_v, n_c = attrs.shape[1], attrs.shape[2]
    ids = fragments.pix_faces
    if attrs.shape[0] == b_sz and b_sz > 1:
        ids = fragments.pix_batch[:, None] * n_v + ids
    a = attrs.reshape(-1, n_c).index_select(0, ids.reshape(-1)).view(-1, 3, n_c)  # (N, 3, C)
    vals = (fragments.pix_bary.to(attrs.dtype)[..., None] * a).sum(1)
    out = attrs.new_zeros(b_sz * h * w, attrs.shape[-1]).index_put((fragments.pix,), vals)
    return out.view(b_sz, h, w, attrs.shape[-1])


def vertex_visibility(verts_cam: torch.Tensor, depth: torch.Tensor, camera: PinholeCamera,
                      tol: float = 2e-3) -> torch.Tensor:
    """Which vertices are visible: not behind the rendered surface at their pixel.

    Args:
        verts_cam: (B, N, 3) camera-frame points (e.g. landmarks), metres.
        depth: (B, H, W) depth map of the rendered scene (0 = background).
        camera: the camera the depth map was rendered with.
        tol: depth slack in metres (the point's own surface passes).

    Returns:
        (B, N) bool; points outside the image or behind the camera are not visible.
    """
    b_sz, h, w = depth.shape
    uv = _project(verts_cam.detach(), camera)
    x = torch.floor(uv[..., 0]).to(torch.int64)
    y = torch.floor(uv[..., 1]).to(torch.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (verts_cam[..., 2] > 0)
    xi, yi = x.clamp(0, w - 1), y.clamp(0, h - 1)
    d = depth.detach()[torch.arange(b_sz, device=depth.device)[:, None], yi, xi]
    return inside & ((d <= 0) | (verts_cam[..., 2].detach() <= d + tol))
