"""Point-to-surface distances: known answers, fast == brute force, contracts."""

from __future__ import annotations

import numpy as np
import pytest

from methods.facemodel import load_ict
from metrics import MeshSurface, closest_point_on_triangle, point_to_mesh_distance

pytest.importorskip("open3d")


@pytest.fixture(scope="module")
def ict_face() -> tuple[np.ndarray, np.ndarray]:
    """The ICT narrow-face mean mesh (6706 vertices), metres, float64."""
    m = load_ict("narrow")
    return m.mean.astype(np.float64), m.faces


def icosphere(radius: float = 1.0, subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated sphere with every vertex exactly on the sphere."""
    t = (1.0 + 5**0.5) / 2.0
    v = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], np.int64)
    verts = list(v / np.linalg.norm(v, axis=1, keepdims=True))

    def mid(cache: dict[tuple[int, int], int], a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = (verts[a] + verts[b]) / 2.0
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        nf = []
        for a, b, c in f:
            ab, bc, ca = mid(cache, a, b), mid(cache, b, c), mid(cache, c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = np.array(nf, np.int64)
    return np.array(verts) * radius, f


def reference_closest(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Independent closest point on one triangle: plane projection, else nearest edge point."""
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n)
    q = p - np.dot(p - a, n) * n
    # barycentric coordinates of the projection
    m = np.array([b - a, c - a]).T
    uv, *_ = np.linalg.lstsq(m, q - a, rcond=None)
    if uv.min() >= 0 and uv.sum() <= 1:
        return q
    best, best_d = None, np.inf
    for s, e in ((a, b), (b, c), (c, a)):
        t = np.clip(np.dot(p - s, e - s) / np.dot(e - s, e - s), 0, 1)
        x = s + t * (e - s)
        if np.linalg.norm(p - x) < best_d:
            best, best_d = x, np.linalg.norm(p - x)
    return best


def test_closest_point_on_triangle_matches_independent_reference():
    rng = np.random.default_rng(42)
    for _ in range(300):
        a, b, c = rng.normal(size=(3, 3))
        p = rng.normal(size=3) * 2
        got = closest_point_on_triangle(p[None], a[None], b[None], c[None])[0]
        np.testing.assert_allclose(got, reference_closest(p, a, b, c), atol=1e-12)


def test_closest_point_degenerate_triangle_uses_edges():
    a, b, c = np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([2.0, 0, 0])
    p = np.array([[1.5, 1.0, 0.0], [-1.0, 0.0, 0.0], [3.0, 2.0, 0.0]])
    got = closest_point_on_triangle(p, a, b, c)
    np.testing.assert_allclose(got, [[1.5, 0, 0], [0, 0, 0], [2, 0, 0]], atol=1e-12)
    # fully collapsed triangle: the single point
    got = closest_point_on_triangle(p, a, a, a)
    np.testing.assert_allclose(got, np.zeros((3, 3)), atol=1e-12)


@pytest.mark.parametrize("backend", ["bvh", "open3d", "brute"])
def test_sphere_against_concentric_sphere_gives_d(backend):
    # Points at radius r + d straight out from the vertices of an inscribed polyhedron:
    # the tangent plane at a vertex supports the polyhedron, so the vertex is the closest
    # surface point and the distance is exactly d.
    r, d = 0.09, 0.0025
    v, f = icosphere(r, 3)
    pts = v * (r + d) / r
    res = point_to_mesh_distance(pts, v, f, backend=backend)
    np.testing.assert_allclose(res.distances, d, atol=1e-9)
    np.testing.assert_allclose(res.closest_points, v, atol=1e-9)


def test_sphere_random_directions_within_chord_error():
    r, d = 0.1, 0.002
    v, f = icosphere(r, 4)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(2000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    res = point_to_mesh_distance(u * (r + d), v, f)
    # Every surface point lies inside the ball of radius r, so d is a lower bound; the
    # face planes are at least sqrt(r^2 - rho^2) from the centre (rho <= longest edge bounds
    # each face's circumradius), which bounds the distance from above.
    edge = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1).max()
    upper = d + r - np.sqrt(r**2 - edge**2)
    assert (res.distances >= d - 1e-12).all()
    assert (res.distances <= upper).all()


@pytest.mark.parametrize("backend", ["bvh", "open3d", "brute"])
def test_plane_distances(backend):
    v = np.array([[-1.0, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * 0.1
    f = np.array([[0, 1, 2], [0, 2, 3]])
    rng = np.random.default_rng(1)
    inside = np.column_stack([rng.uniform(-0.1, 0.1, (500, 2)), rng.uniform(-0.05, 0.05, 500)])
    res = point_to_mesh_distance(inside, v, f, backend=backend)
    np.testing.assert_allclose(res.distances, np.abs(inside[:, 2]), atol=1e-12)
    np.testing.assert_allclose(res.closest_points[:, :2], inside[:, :2], atol=1e-12)
    # beyond an edge: distance to the edge, not to the plane
    out = np.array([[0.15, 0.0, 0.03], [0.0, -0.13, -0.04], [0.2, 0.2, 0.0]])
    want = [np.hypot(0.05, 0.03), np.hypot(0.03, 0.04), np.hypot(0.1, 0.1)]
    np.testing.assert_allclose(point_to_mesh_distance(out, v, f, backend=backend).distances,
                               want, atol=1e-12)


def test_mesh_against_its_own_vertices_is_zero(ict_face):
    v, f = ict_face
    res = point_to_mesh_distance(v, v, f)
    assert res.distances.max() < 1e-9


def test_surface_not_vertex_distance():
    # a point above the centre of a big triangle is far from every vertex, close to the face
    v = np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]])
    f = np.array([[0, 1, 2]])
    res = point_to_mesh_distance([[0.03, 0.03, 0.001]], v, f)
    assert res.distances[0] == pytest.approx(0.001, abs=1e-12)


def test_open3d_equals_brute_force_on_seeded_random_points(ict_face):
    v, f = ict_face
    rng = np.random.default_rng(42)
    lo, hi = v.min(axis=0), v.max(axis=0)
    near = v[rng.integers(0, len(v), 150)] + rng.normal(scale=0.004, size=(150, 3))
    far = rng.uniform(lo - 0.02, hi + 0.02, size=(50, 3))
    pts = np.concatenate([near, far])
    fast = point_to_mesh_distance(pts, v, f, backend="open3d")
    ref = point_to_mesh_distance(pts, v, f, backend="brute")
    np.testing.assert_allclose(fast.distances, ref.distances, rtol=0, atol=1e-6)
    # in fact float64 recomputation makes it far tighter than open3d's float32
    assert np.abs(fast.distances - ref.distances).max() < 1e-8


def test_open3d_precision_far_from_origin():
    # a scan in mm far from the origin: centring keeps float32 error negligible
    v, f = icosphere(90.0, 3)
    v = v + np.array([1500.0, -800.0, 2500.0])
    rng = np.random.default_rng(3)
    pts = v[rng.integers(0, len(v), 200)] + rng.normal(scale=2.0, size=(200, 3))
    fast = point_to_mesh_distance(pts, v, f, backend="open3d")
    ref = point_to_mesh_distance(pts, v, f, backend="brute")
    np.testing.assert_allclose(fast.distances, ref.distances, atol=1e-6)


def test_mesh_surface_reuse_and_empty_query():
    v, f = icosphere(0.1, 2)
    s = MeshSurface(v, f)
    assert s.query(np.zeros((0, 3))).distances.shape == (0,)
    a = s.query(v * 1.1).distances
    b = s.query(v * 1.1).distances
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("points", "verts", "faces", "match"),
    [
        (np.zeros((3, 3)), np.array([[np.nan, 0, 0], [1, 0, 0], [0, 1, 0]]), [[0, 1, 2]], "NaN"),
        (np.zeros((3, 3)), np.array([[np.inf, 0, 0], [1, 0, 0], [0, 1, 0]]), [[0, 1, 2]], "inf"),
        (np.zeros((0, 3)), np.eye(3), [[0, 1, 2]], "empty"),
        (np.zeros((2, 3)), np.eye(3), [[0, 1, 3]], "index vertices"),
        (np.zeros((2, 3)), np.eye(3), [[-1, 1, 2]], "index vertices"),
        (np.zeros((2, 3)), np.eye(3), np.zeros((0, 3), int), "at least one triangle"),
        (np.zeros((2, 2)), np.eye(3), [[0, 1, 2]], r"\(N, 3\)"),
        (np.array([[0, 0, np.nan]]), np.eye(3), [[0, 1, 2]], "NaN"),
    ],
)
def test_bad_input_raises_one_sentence(points, verts, faces, match):
    with pytest.raises(ValueError, match=match) as err:
        point_to_mesh_distance(points, verts, faces)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        point_to_mesh_distance(np.zeros((1, 3)), np.eye(3), [[0, 1, 2]], backend="kdtree")


def test_zero_area_triangles_are_ignored_by_both_backends(ict_face):
    v, f = ict_face
    rng = np.random.default_rng(0)
    f = f.copy()
    bad = rng.choice(len(f), 200, replace=False)
    f[bad, 2] = f[bad, 1]  # collapse 200 triangles to segments
    f = np.r_[f, [[0, 0, 0], [5, 5, 6]]]  # a point and a dangling segment
    pts = v[rng.integers(0, len(v), 300)] + rng.normal(scale=0.003, size=(300, 3))
    for backend in ("bvh", "open3d"):
        fast = point_to_mesh_distance(pts, v, f, backend=backend)
        ref = point_to_mesh_distance(pts, v, f, backend="brute")
        np.testing.assert_allclose(fast.distances, ref.distances, atol=1e-6)
        assert not np.isin(fast.face_ids, np.r_[bad, len(f) - 2, len(f) - 1]).any()
    with pytest.raises(ValueError, match="degenerate"):
        point_to_mesh_distance(pts, v, [[0, 0, 0], [1, 1, 2]])


# --- the default "bvh" backend (metrics/bvh.py) -------------------------------------------


def _mixed_points(v: np.ndarray, n_near: int, n_far: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = v.min(axis=0), v.max(axis=0)
    near = v[rng.integers(0, len(v), n_near)] + rng.normal(scale=0.004, size=(n_near, 3))
    far = rng.uniform(lo - 0.05, hi + 0.05, size=(n_far, 3))
    return np.concatenate([near, far, v[:20]])  # v[:20]: exactly on the surface


def test_bvh_is_the_default_and_equals_brute_force_to_rounding(ict_face):
    v, f = ict_face
    pts = _mixed_points(v, 400, 100, seed=7)
    fast = point_to_mesh_distance(pts, v, f)
    assert MeshSurface(v, f).backend == "bvh"
    ref = point_to_mesh_distance(pts, v, f, backend="brute")
    # float64 search and float64 closest point: equal to rounding, no float32 step at all
    assert np.abs(fast.distances - ref.distances).max() < 1e-15
    # where the triangles differ they are equidistant (a shared edge or vertex)
    np.testing.assert_allclose(fast.closest_points, ref.closest_points, atol=1e-12)


def test_bvh_state_of_another_motion_gives_the_same_answer(ict_face):
    """The answer does not depend on where a tracked search starts from."""
    v, f = ict_face
    pts = _mixed_points(v, 300, 60, seed=11)
    surf = MeshSurface(v, f)
    plain = surf.query(pts)
    rng = np.random.default_rng(0)
    for scale in (0.0, 1e-4, 1e-2, 0.1):  # states left at nearby and far-away positions
        _, state = surf.query_tracked(pts + rng.normal(scale=scale, size=pts.shape))
        got, _ = surf.query_tracked(pts, state)
        np.testing.assert_array_equal(got.face_ids, plain.face_ids)
        np.testing.assert_array_equal(got.distances, plain.distances)


def test_bvh_single_triangle_and_coincident_centroids():
    # one triangle; and many triangles sharing one centroid (the median split must still end)
    v = np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]])
    got = point_to_mesh_distance([[0.03, 0.03, 0.002], [-0.1, 0, 0]], v, [[0, 1, 2]])
    np.testing.assert_allclose(got.distances, [0.002, 0.1], atol=1e-15)
    ang = np.linspace(0, np.pi, 40, endpoint=False)
    tri = np.stack([np.stack([np.cos(a + k * 2 * np.pi / 3) * np.r_[1.0, 0, 0]
                              + np.sin(a + k * 2 * np.pi / 3) * np.r_[0, 1.0, 0]
                              for k in range(3)]) for a in ang])  # centroids all at 0
    vv = tri.reshape(-1, 3)
    ff = np.arange(len(vv)).reshape(-1, 3)
    pts = np.random.default_rng(2).normal(size=(200, 3))
    np.testing.assert_allclose(point_to_mesh_distance(pts, vv, ff).distances,
                               point_to_mesh_distance(pts, vv, ff, backend="brute").distances,
                               atol=1e-14)


def test_bvh_refuses_malformed_triangles():
    from metrics.bvh import TriangleBVH

    with pytest.raises(ValueError, match=r"\(F, 3, 3\)"):
        TriangleBVH(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match=r"\(F, 3, 3\)"):
        TriangleBVH(np.zeros((4, 3)))


def test_bvh_tracked_search_equals_a_fresh_search_as_points_move(ict_face):
    """ICP's repeated queries: certified triangles are the ones a fresh search finds."""
    v, f = ict_face
    pts = _mixed_points(v, 600, 100, seed=5)
    surf = MeshSurface(v, f)
    rng = np.random.default_rng(9)
    state = None
    skipped = 0
    for step in (0.0, 1e-3, 1e-4, 1e-5, 1e-6, 0.0, 5e-3):  # metres: large and tiny motions
        pts = pts + rng.normal(scale=step, size=pts.shape) if step else pts
        before = None if state is None else state.face.copy()
        got, state = surf.query_tracked(pts, state)
        fresh = surf.query(pts)
        np.testing.assert_array_equal(got.face_ids, fresh.face_ids)
        np.testing.assert_array_equal(got.distances, fresh.distances)
        assert np.all(state.lower >= fresh.distances - 1e-15)  # bounds the *other* triangles
        if before is not None:
            skipped += int((state.face == before).sum())
    assert skipped > 0
    # a state of another point set (other size) is ignored, not misread
    other, _ = surf.query_tracked(pts[:10], state)
    np.testing.assert_array_equal(other.face_ids, surf.query(pts[:10]).face_ids)


def test_bvh_tracked_lower_bound_holds_for_every_other_triangle():
    v, f = icosphere(0.1, 2)
    surf = MeshSurface(v, f, backend="bvh")
    pts = np.random.default_rng(4).normal(scale=0.08, size=(40, 3))
    _, state = surf.query_tracked(pts)
    tri = v[f]
    from metrics.distance import closest_point_on_triangle as cpt

    for i, p in enumerate(pts):
        d = np.linalg.norm(cpt(p[None], tri[:, 0], tri[:, 1], tri[:, 2]) - p, axis=1)
        others = np.delete(d, state.face[i])
        assert others.min() >= state.lower[i] - 1e-15


def test_other_backends_ignore_the_tracking_state(ict_face):
    v, f = ict_face
    pts = _mixed_points(v, 50, 10, seed=1)
    for backend in ("open3d", "brute"):
        got, state = MeshSurface(v, f, backend=backend).query_tracked(pts)
        assert state is None
        np.testing.assert_allclose(got.distances, point_to_mesh_distance(pts, v, f).distances,
                                   atol=1e-8)


def test_bvh_search_order_is_a_spatial_permutation_and_does_not_change_answers(ict_face):
    """Points are searched along a Z-order curve (neighbours one after another); the
    answers are those of the points taken in any other order."""
    from metrics.bvh import TriangleBVH, _morton_order

    v, f = ict_face
    rng = np.random.default_rng(5)
    pts = v[rng.integers(0, len(v), 3000)] + rng.normal(scale=2e-3, size=(3000, 3))
    seq = _morton_order(pts)
    assert np.array_equal(np.sort(seq), np.arange(len(pts)))
    step = np.linalg.norm(np.diff(pts[seq], axis=0), axis=1)
    shuffled = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    assert np.median(step) < 0.2 * np.median(shuffled)
    tree = TriangleBVH(v[f].astype(np.float64))
    face = tree.nearest(pts)
    perm = rng.permutation(len(pts))
    assert np.array_equal(tree.nearest(pts[perm]), face[perm])
    tracked, state = tree.nearest_tracked(pts)
    assert np.array_equal(tracked, face) and np.array_equal(state.seq, seq)
    assert np.array_equal(_morton_order(np.zeros((4, 3))), np.arange(4))  # no extent


def test_bvh_closest_points_are_the_numpy_routine_bit_for_bit(ict_face):
    """The compiled closest-point step gives the same bits as closest_point_on_triangle
    (every region of Ericson's test: points scattered well beyond the triangles)."""
    from metrics.bvh import TriangleBVH

    v, f = ict_face
    tri = v[f].astype(np.float64)
    tree = TriangleBVH(tri)
    rng = np.random.default_rng(11)
    fid = rng.integers(0, len(f), 20000)
    pts = tri[fid].mean(axis=1) + rng.normal(scale=5e-3, size=(20000, 3))
    got, d = tree.closest(pts, fid)
    want = closest_point_on_triangle(pts, tri[fid, 0], tri[fid, 1], tri[fid, 2])
    assert np.array_equal(got, want)
    assert np.array_equal(d, np.linalg.norm(pts - want, axis=1))


def test_bvh_exact_ties_go_to_the_lowest_index_in_any_search_order(ict_face):
    """Points straight above a mesh vertex are (nearly or exactly) equally near every
    triangle around it: the search, plain or tracked, in any visiting order, must answer
    the smallest squared distance, ties to the lowest index."""
    import numba

    from metrics.bvh import _tri_d2

    v, f = ict_face
    surf = MeshSurface(v, f)
    rng = np.random.default_rng(2)
    normals = np.zeros_like(v)
    np.add.at(normals, f.reshape(-1), np.repeat(surf.normals, 3, axis=0))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    ids = rng.choice(len(v), 400, replace=False)
    pts = v[ids] + normals[ids] * 1e-4
    tri = v[f].astype(np.float64)

    @numba.njit
    def exhaustive(pts, tri):  # the kernel's own distances, every triangle, first minimum
        out = np.empty(len(pts), np.int64)
        for i in range(len(pts)):
            best = np.inf
            for t in range(len(tri)):
                d = _tri_d2(pts[i, 0], pts[i, 1], pts[i, 2], tri, t)
                if d < best:
                    best = d
                    out[i] = t
        return out

    want = exhaustive(pts, tri)
    ties = sum(int(np.sum([_tri_d2(p[0], p[1], p[2], tri, t) == _tri_d2(p[0], p[1], p[2], tri, w)
                           for t in np.flatnonzero((f == i).any(axis=1))]) > 1)
               for p, i, w in zip(pts, ids, want))
    assert ties > 20  # exact ties do occur
    np.testing.assert_array_equal(surf.query(pts).face_ids, want)
    for perm in (rng.permutation(len(pts)), np.arange(len(pts))[::-1]):
        np.testing.assert_array_equal(surf.query(pts[perm]).face_ids, want[perm])
        tracked, _ = surf.query_tracked(pts[perm])
        np.testing.assert_array_equal(tracked.face_ids, want[perm])


def test_compile_kernels_runs_every_kernel():
    """``make setup`` fills numba's cache with it; it must exercise each compiled kernel."""
    import metrics.bvh as B

    B.compile_kernels()
    for kernel in (B._build, B._nearest, B._closest, B._morton_order):
        assert kernel.signatures, kernel
