"""The renderer: analytic coverage and depth, gradients (gradcheck), determinism, SH shading,
backend selection, and nvdiffrast agreement where CUDA exists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.render import (
    PinholeCamera,
    Renderer,
    camera_to_clip,
    euler_to_matrix,
    interpolate_torch,
    model_to_camera,
    rasterize_torch,
    sh_shading,
    vertex_normals,
    vertex_visibility,
)
from methods.render.shading import INIT_LIT, camera_to_world_normals, vertex_adjacency

CAM = PinholeCamera(focal=100.0, width=64, height=48)


def pix_to_cam(u: float, v: float, z: float, cam: PinholeCamera = CAM) -> list[float]:
    """The camera-frame point at depth z that projects to pixel position (u, v)."""
    cx, cy = cam.center
    return [(u - cx) * z / cam.focal, (v - cy) * z / cam.focal, z]


def quad(u0, v0, u1, v1, z, dtype=torch.float32):
    """A screen-aligned rectangle [u0, u1] x [v0, v1] (pixels) at depth z, two triangles."""
    verts = torch.tensor([[pix_to_cam(u0, v0, z), pix_to_cam(u1, v0, z), pix_to_cam(u1, v1, z),
                           pix_to_cam(u0, v1, z)]], dtype=dtype)
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]])


def face_batch(b: int = 2, region: str = "narrow"):
    """ICT mean faces 0.6 m in front of the Deep3D camera, with small pose differences."""
    from methods.facemodel import load_ict

    m = load_ict(region)
    v = torch.from_numpy(m.mean)
    v = (v - v.mean(0))[None].repeat(b, 1, 1)
    angles = torch.linspace(-0.3, 0.3, b)[:, None] * torch.tensor([[0.2, 1.0, 0.1]])
    t = torch.tensor([[0.0, 0.0, 0.6]]).repeat(b, 1)
    return model_to_camera(v, euler_to_matrix(angles), t), torch.from_numpy(m.faces)


# --------------------------------------------------------------------------- coverage, depth


def test_square_covers_its_pixel_area_at_its_depth():
    verts, faces = quad(10, 5, 50, 25, 2.0)
    fr = rasterize_torch(verts, faces, CAM)
    assert int(fr.mask.sum()) == 40 * 20
    assert fr.mask[0, 5:25, 10:50].all()
    torch.testing.assert_close(fr.depth[fr.mask], torch.full((800,), 2.0), atol=1e-6, rtol=0)
    assert set(fr.tri_id[fr.mask].tolist()) == {0, 1}
    assert (fr.tri_id[~fr.mask] == -1).all() and (fr.depth[~fr.mask] == 0).all()


def test_triangle_covers_the_pixel_centres_inside_it():
    tri = torch.tensor([[pix_to_cam(10, 10, 1.5), pix_to_cam(50.25, 10, 1.5),
                         pix_to_cam(10, 40.25, 1.5)]])
    fr = rasterize_torch(tri, torch.tensor([[0, 1, 2]]), CAM)
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    inside = (xs >= 10) & (ys >= 10) & ((xs - 10) / 40.25 + (ys - 10) / 30.25 <= 1)
    np.testing.assert_array_equal(fr.mask[0].numpy(), inside)
    # the barycentrics sum to one and reproduce the pixel positions
    uv = torch.tensor([[10.0, 10.0], [50.25, 10.0], [10.0, 40.25]])
    pos = torch.einsum("hwk,kc->hwc", fr.bary[0], uv)[fr.mask[0]]
    np.testing.assert_allclose(pos.numpy(), np.stack([xs[inside], ys[inside]], -1), atol=1e-4)


def test_tilted_plane_depth_and_attributes_are_perspective_correct():
    # plane y = 0.5 (z - 2) seen from the camera: depth varies along image rows.
    ys = [-0.6, 0.6]
    verts = torch.tensor([[[-1.0, y, 2.0 + 2.0 * y] for y in ys] + [[1.0, y, 2.0 + 2.0 * y]
                                                                    for y in ys]])
    faces = torch.tensor([[0, 1, 3], [0, 3, 2]])
    fr = rasterize_torch(verts, faces, CAM)
    assert fr.mask.sum() > 1000
    vv, uu = torch.nonzero(fr.mask[0], as_tuple=True)
    dir_y = (vv.double() + 0.5 - CAM.center[1]) / CAM.focal
    # ray (.., dir_y t, t) meets y = 0.5 (z - 2):  t = -1 / (dir_y - 0.5)
    t = -1.0 / (dir_y - 0.5)
    torch.testing.assert_close(fr.depth[0][fr.mask[0]].double(), t, atol=1e-5, rtol=1e-5)
    y_attr = interpolate_torch(verts[..., 1:2], fr)[0, ..., 0][fr.mask[0]]
    torch.testing.assert_close(y_attr.double(), dir_y * t, atol=1e-5, rtol=1e-5)


def test_nearer_surface_wins_whatever_the_triangle_order():
    near, f1 = quad(0, 0, 30, 30, 1.0)
    far, f2 = quad(20, 10, 60, 40, 3.0)
    verts = torch.cat([far, near], 1)
    for faces in (torch.cat([f2, f1 + 4]), torch.cat([f1 + 4, f2])):
        fr = rasterize_torch(verts, faces, CAM)
        assert fr.depth[0, 15, 25] == pytest.approx(1.0)  # overlap: the near square
        assert fr.depth[0, 35, 50] == pytest.approx(3.0)
        assert int(fr.mask.sum()) == 30 * 30 + 40 * 30 - 10 * 20


def test_supersampling_gives_fractional_edge_coverage():
    verts, faces = quad(10.5, 4, 40, 20.25, 1.0)
    out = Renderer(CAM, backend="torch", supersample=4).render(
        verts, faces, torch.ones(1, 4, 3), shading=False)
    assert out.mask[0, 10, 10].item() == pytest.approx(0.5)  # left edge halves column 10
    assert out.mask[0, 20, 20].item() == pytest.approx(0.25)  # bottom edge at 20.25
    assert out.mask[0, 10, 20].item() == 1.0 and out.mask[0, 2, 20].item() == 0.0
    torch.testing.assert_close(out.image[..., 0], out.mask)
    assert out.mask.sum().item() == pytest.approx(29.5 * 16.25, abs=1e-3)


def test_chunking_does_not_change_the_result():
    verts, faces = face_batch(2)
    cam = PinholeCamera()
    a = rasterize_torch(verts, faces, cam)
    b = rasterize_torch(verts, faces, cam, max_candidates=5000)
    assert torch.equal(a.tri_id, b.tri_id) and torch.equal(a.depth, b.depth)


def test_batch_equals_single_renders():
    verts, faces = face_batch(3)
    r = Renderer(PinholeCamera(width=96, height=96, focal=435.0), backend="torch")
    alb = torch.rand(3, verts.shape[1], 3, generator=torch.Generator().manual_seed(0))
    gamma = torch.randn(3, 27, generator=torch.Generator().manual_seed(1)) * 0.2
    full = r.render(verts, faces, alb, gamma)
    for i in range(3):
        one = r.render(verts[i:i + 1], faces, alb[i:i + 1], gamma[i:i + 1])
        torch.testing.assert_close(one.image[0], full.image[i])
        assert torch.equal(one.tri_id[0], full.tri_id[i])


def test_backface_culling_and_near_plane():
    tri = torch.tensor([[pix_to_cam(10, 10, 1.0), pix_to_cam(40, 10, 1.0),
                         pix_to_cam(10, 40, 1.0)]])
    front = torch.tensor([[0, 2, 1]])  # counter-clockwise in the model frame (y up)
    back = torch.tensor([[0, 1, 2]])
    assert rasterize_torch(tri, front, CAM, cull_backfaces=True).mask.any()
    assert not rasterize_torch(tri, back, CAM, cull_backfaces=True).mask.any()
    assert rasterize_torch(tri, back, CAM).mask.any()
    behind = tri.clone()
    behind[..., 2] = -1.0
    assert not rasterize_torch(behind, front, CAM).mask.any()


def test_vertex_visibility_sees_through_nothing():
    verts, faces = quad(0, 0, 64, 48, 1.0)
    fr = rasterize_torch(verts, faces, CAM)
    pts = torch.tensor([[pix_to_cam(20, 20, 0.5), pix_to_cam(20, 20, 2.0),
                         pix_to_cam(80, 20, 0.5)]])
    np.testing.assert_array_equal(vertex_visibility(pts, fr.depth, CAM)[0].numpy(),
                                  [True, False, False])


# --------------------------------------------------------------------------- gradients


def _tiny_mesh():
    """A small pyramid (5 vertices, 4 triangles) in front of a 16 x 12 camera, double."""
    g = torch.Generator().manual_seed(3)
    base = torch.tensor([[-0.5, -0.4, 2.2], [0.6, -0.45, 2.1], [0.55, 0.5, 2.3], [-0.45, 0.42, 2.2],
                         [0.03, 0.02, 1.7]], dtype=torch.float64)
    verts = base + 0.02 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    faces = torch.tensor([[0, 4, 1], [1, 4, 2], [2, 4, 3], [3, 4, 0]])
    colours = torch.rand(5, 3, generator=g, dtype=torch.float64)
    return verts[None], faces, colours[None]


def test_gradcheck_unlit_colours_and_positions():
    verts, faces, colours = _tiny_mesh()
    cam = PinholeCamera(focal=12.0, width=16, height=12)
    r = Renderer(cam, backend="torch")

    def fn(v, c):
        return r.render(v, faces, c, shading=False).image

    assert torch.autograd.gradcheck(fn, (verts.requires_grad_(), colours.requires_grad_()),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_sh_shading_and_depth():
    verts, faces, albedo = _tiny_mesh()
    cam = PinholeCamera(focal=12.0, width=16, height=12)
    r = Renderer(cam, backend="torch")
    gamma = 0.3 * torch.randn(1, 27, generator=torch.Generator().manual_seed(4),
                              dtype=torch.float64)

    def fn(v, a, g):
        out = r.render(v, faces, a, g)
        return out.image, out.depth

    inputs = (verts.requires_grad_(), albedo.requires_grad_(), gamma.requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_reach_face_vertices_and_colours():
    verts, faces = face_batch(1)
    verts.requires_grad_(True)
    alb = torch.full((1, verts.shape[1], 3), 0.6, requires_grad=True)
    out = Renderer(PinholeCamera(), backend="torch").render(verts, faces, alb,
                                                            0.3 * torch.ones(1, 27))
    out.image.sum().backward()
    assert verts.grad.abs().sum() > 0 and torch.isfinite(verts.grad).all()
    assert alb.grad.abs().sum() > 0


# --------------------------------------------------------------------------- determinism


def test_render_is_bit_identical_across_runs():
    verts, faces = face_batch(2)
    alb = torch.rand(2, verts.shape[1], 3, generator=torch.Generator().manual_seed(0))
    gamma = torch.randn(2, 27, generator=torch.Generator().manual_seed(1)) * 0.2
    results = []
    for _ in range(2):
        v = verts.clone().requires_grad_(True)
        out = Renderer(PinholeCamera(), backend="torch", supersample=2).render(v, faces, alb,
                                                                              gamma)
        (out.image ** 2).sum().backward()
        results.append((out.image.detach(), out.depth.detach(), out.tri_id, v.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- shading


def test_sh_shading_known_values():
    n = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])  # world frame: towards the camera
    alb = torch.full((1, 2, 3), 0.5)
    amb = sh_shading(alb, n, None)
    torch.testing.assert_close(amb, torch.full_like(amb, 0.5 * INIT_LIT * math.sqrt(math.pi) / 2))
    gamma = torch.zeros(1, 27)
    gamma[0, 2] = 1.0  # red channel, band 1 z term: sqrt(pi) * n_z
    out = sh_shading(alb, n, gamma, init_lit=0.0)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.5 * math.sqrt(math.pi), 0.0]))
    assert out[..., 1:].abs().max() == 0
    with pytest.raises(ValueError, match=r"gamma must be \(B, 27\)"):
        sh_shading(alb, n, torch.zeros(1, 9))


def test_vertex_normals_face_the_camera():
    verts, faces = face_batch(1)
    from methods.facemodel import load_ict

    lmk = load_ict().landmark_ids
    n = vertex_normals(verts, faces)
    torch.testing.assert_close(n.norm(dim=-1)[0, faces.unique()],
                               torch.ones(len(faces.unique())))
    nose = camera_to_world_normals(n)[0, lmk[30]]
    assert nose[2] > 0.9  # the nose tip faces the camera (world +z)
    adj = vertex_adjacency(faces, verts.shape[1])
    assert (adj < len(faces)).sum() == faces.numel()


def test_lighting_from_the_right_brightens_the_right_cheek():
    verts, faces = face_batch(1)
    alb = torch.full((1, verts.shape[1], 3), 0.6)
    gamma = torch.zeros(1, 27)
    gamma[0, [3, 12, 21]] = -0.5  # -x band-1 term: light from +x (image right)
    out = Renderer(PinholeCamera(), backend="torch").render(verts, faces, alb, gamma)
    img = out.image[0, ..., 0]
    m = out.mask[0] > 0
    left = img[:, :100][m[:, :100]].mean()
    right = img[:, 124:][m[:, 124:]].mean()
    assert right > left + 0.1


# --------------------------------------------------------------------------- interface


def test_backend_selection_and_errors():
    verts, faces = quad(10, 5, 50, 25, 2.0)
    assert Renderer(CAM).backend_for(torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="unknown renderer backend"):
        Renderer(CAM, backend="opengl")
    with pytest.raises(ValueError, match="supersample"):
        Renderer(CAM, supersample=0)
    try:
        import nvdiffrast  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install"):
            Renderer(CAM, backend="nvdiffrast").rasterize(verts, faces)
    with pytest.raises(ValueError, match="faces index vertices outside"):
        rasterize_torch(verts, faces + 3, CAM)
    with pytest.raises(ValueError, match=r"vertices must be \(B, V, 3\)"):
        rasterize_torch(verts[0], faces, CAM)
    with pytest.raises(ValueError, match="albedo must be"):
        Renderer(CAM).render(verts, faces, torch.ones(1, 3, 3))


def test_clip_coordinates_match_projection():
    pts = torch.tensor([[pix_to_cam(3.5, 40.25, 1.7), pix_to_cam(60.0, 2.0, 0.4)]])
    clip = camera_to_clip(pts, CAM, 0.1, 10.0)
    ndc = clip[..., :3] / clip[..., 3:]
    torch.testing.assert_close(ndc[0, :, 0], torch.tensor([2 * 3.5 / 64 - 1, 2 * 60 / 64 - 1]))
    torch.testing.assert_close(ndc[0, :, 1], torch.tensor([2 * 40.25 / 48 - 1, 2 * 2 / 48 - 1]))
    assert (ndc[..., 2].abs() < 1).all()


@pytest.mark.gpu
def test_nvdiffrast_matches_torch_backend():
    pytest.importorskip("nvdiffrast")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    verts, faces = face_batch(2)
    verts, faces = verts.cuda(), faces.cuda()
    alb = torch.rand(2, verts.shape[1], 3, device="cuda")
    gamma = 0.2 * torch.randn(2, 27, device="cuda")
    ref = Renderer(PinholeCamera(), backend="torch").render(verts, faces, alb, gamma)
    nv = Renderer(PinholeCamera(), backend="nvdiffrast").render(verts, faces, alb, gamma)
    both = (ref.mask > 0) & (nv.mask > 0)
    union = (ref.mask > 0) | (nv.mask > 0)
    assert both.sum() / union.sum() > 0.995
    agree = (ref.tri_id == nv.tri_id) & both
    assert agree.sum() / both.sum() > 0.98
    torch.testing.assert_close(ref.image[agree], nv.image[agree], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ref.depth[agree], nv.depth[agree], atol=1e-5, rtol=1e-5)
    v = verts.clone().requires_grad_(True)
    Renderer(PinholeCamera(), backend="nvdiffrast").render(v, faces, alb, gamma).image.sum(
    ).backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
