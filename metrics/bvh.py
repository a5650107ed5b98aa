"""A bounding-volume hierarchy for exact closest-triangle queries, compiled with numba.

Room: the search kernel behind ``metrics.distance``'s default ``"bvh"`` backend. It finds,
for every query point, the triangle whose closest point is nearest, in float64 throughout;
``metrics.distance`` then computes the closest point itself. Arrays in, arrays out; nothing
else of the suite is imported here.

Why our own: scan-to-mesh scoring asks the same mesh for the closest points of the same scan
a few times per alignment step (and REALY-style ICP a few dozen times), and the queries were
most of a run's time. Embree (open3d) searches in float32 and from scratch every time; this
search is exact in float64 and, for points queried again after a small motion, starts from
the triangle found last time (its distance bounds the search radius from the start) and
skips the search where a lower bound kept from last time proves the triangle is still the
nearest (:class:`NearestState`). The answer is always the nearest triangle (exact ties go to
the lowest triangle index), whatever the starting point.

Tree: built top-down, each node split at the median triangle centroid along the longest
axis of its centroids (balanced, depth about ``log2(F / leaf)``), leaves of up to 4
triangles, axis-aligned boxes of the triangles' vertices. Query: depth-first, nearer child
first; a node is skipped when its box lies farther than the best squared distance so far.

Example::

    from metrics.bvh import TriangleBVH
    bvh = TriangleBVH(tri)                  # (F, 3, 3) float64 triangle corners
    fid = bvh.nearest(points)                        # (N,) index of the closest triangle
    fid, state = bvh.nearest_tracked(points)
    fid, state = bvh.nearest_tracked(moved, state)   # the same as nearest(moved), faster

The first call in a process compiles the kernels (a few seconds); numba caches the machine
code beside this file (``__pycache__``), so later processes load it.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

#: Most triangles per leaf.
LEAF_SIZE = 4
#: Relative margin of a tracked search (:meth:`TriangleBVH.nearest_tracked`): it also looks
#: at triangles up to 25 % farther than the nearest (plus a thousandth of the mesh size), so
#: that the next call can certify the answer of a point that moved less than that.
TRACK_MARGIN = 0.25


@nb.njit(cache=True)
def _select(order: np.ndarray, key: np.ndarray, lo: int, hi: int, k: int) -> None:
    """Quickselect on ``key[lo:hi]``, moving ``order`` along.

    Afterwards no key before position k is larger than ``key[k]`` and none after it smaller.
    """
    while hi - lo > 1:
        a = key[lo]
        b = key[(lo + hi) // 2]
        c = key[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i = lo
        j = hi - 1
        while i <= j:
            while key[i] < pivot:
                i += 1
            while key[j] > pivot:
                j -= 1
            if i <= j:
                x = key[i]
                key[i] = key[j]
                key[j] = x
                t = order[i]
                order[i] = order[j]
                order[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@nb.njit(cache=True, nogil=True)
def _build(tri: np.ndarray, leaf_size: int):
    """Top-down build of the tree; returns (bmin, bmax, left, start, count, order).

    Each node is split at the median centroid along the longest axis of its centroids; the
    boxes are filled bottom-up afterwards.
    """
    f = tri.shape[0]
    cent = np.empty((f, 3))
    for t in range(f):
        for k in range(3):
            cent[t, k] = (tri[t, 0, k] + tri[t, 1, k] + tri[t, 2, k]) / 3.0
    order = np.arange(f)
    max_nodes = 2 * f
    left = np.full(max_nodes, -1, np.int64)
    start = np.zeros(max_nodes, np.int64)
    count = np.zeros(max_nodes, np.int64)
    key = np.empty(f)
    st_node = np.empty(256, np.int64)
    st_lo = np.empty(256, np.int64)
    st_hi = np.empty(256, np.int64)
    st_node[0] = 0
    st_lo[0] = 0
    st_hi[0] = f
    sp = 1
    n_nodes = 1
    lo3 = np.empty(3)
    hi3 = np.empty(3)
    while sp > 0:
        sp -= 1
        node = st_node[sp]
        lo = st_lo[sp]
        hi = st_hi[sp]
        start[node] = lo
        count[node] = hi - lo
        if hi - lo <= leaf_size:
            continue
        count[node] = 0
        lo3[:] = np.inf
        hi3[:] = -np.inf
        for i in range(lo, hi):
            t = order[i]
            for k in range(3):
                c = cent[t, k]
                if c < lo3[k]:
                    lo3[k] = c
                if c > hi3[k]:
                    hi3[k] = c
        axis = 0
        for k in range(1, 3):
            if hi3[k] - lo3[k] > hi3[axis] - lo3[axis]:
                axis = k
        for i in range(lo, hi):
            key[i] = cent[order[i], axis]
        mid = (lo + hi) // 2
        _select(order, key, lo, hi, mid)
        child = n_nodes
        n_nodes += 2
        left[node] = child
        st_node[sp] = child
        st_lo[sp] = lo
        st_hi[sp] = mid
        sp += 1
        st_node[sp] = child + 1
        st_lo[sp] = mid
        st_hi[sp] = hi
        sp += 1
    bmin = np.empty((n_nodes, 3))
    bmax = np.empty((n_nodes, 3))
    # children have larger indices than their parent: fill the boxes in reverse order
    for node in range(n_nodes - 1, -1, -1):
        if count[node] > 0:
            for k in range(3):
                a = np.inf
                b = -np.inf
                for j in range(start[node], start[node] + count[node]):
                    t = order[j]
                    for v in range(3):
                        x = tri[t, v, k]
                        if x < a:
                            a = x
                        if x > b:
                            b = x
                bmin[node, k] = a
                bmax[node, k] = b
        else:
            c = left[node]
            for k in range(3):
                bmin[node, k] = min(bmin[c, k], bmin[c + 1, k])
                bmax[node, k] = max(bmax[c, k], bmax[c + 1, k])
    return (bmin, bmax, left[:n_nodes].copy(), start[:n_nodes].copy(),
            count[:n_nodes].copy(), order)


@nb.njit(cache=True, inline="always", error_model="numpy")
def _tri_d2(px: float, py: float, pz: float, tri: np.ndarray, t: int) -> float:
    """Squared distance from (px, py, pz) to triangle ``tri[t]`` (Ericson 5.1.5)."""
    ax = tri[t, 0, 0]
    ay = tri[t, 0, 1]
    az = tri[t, 0, 2]
    abx = tri[t, 1, 0] - ax
    aby = tri[t, 1, 1] - ay
    abz = tri[t, 1, 2] - az
    acx = tri[t, 2, 0] - ax
    acy = tri[t, 2, 1] - ay
    acz = tri[t, 2, 2] - az
    apx = px - ax
    apy = py - ay
    apz = pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:  # vertex a
        return apx * apx + apy * apy + apz * apz
    bpx = apx - abx
    bpy = apy - aby
    bpz = apz - abz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:  # vertex b
        return bpx * bpx + bpy * bpy + bpz * bpz
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:  # edge ab
        v = d1 / (d1 - d3)
        qx = apx - v * abx
        qy = apy - v * aby
        qz = apz - v * abz
        return qx * qx + qy * qy + qz * qz
    cpx = apx - acx
    cpy = apy - acy
    cpz = apz - acz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:  # vertex c
        return cpx * cpx + cpy * cpy + cpz * cpz
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:  # edge ac
        w = d2 / (d2 - d6)
        qx = apx - w * acx
        qy = apy - w * acy
        qz = apz - w * acz
        return qx * qx + qy * qy + qz * qz
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:  # edge bc
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        qx = bpx - w * (acx - abx)
        qy = bpy - w * (acy - aby)
        qz = bpz - w * (acz - abz)
        return qx * qx + qy * qy + qz * qz
    denom = 1.0 / (va + vb + vc)  # interior
    v = vb * denom
    w = vc * denom
    qx = apx - v * abx - w * acx
    qy = apy - v * aby - w * acy
    qz = apz - v * abz - w * acz
    return qx * qx + qy * qy + qz * qz


@nb.njit(cache=True, inline="always", error_model="numpy")
def _box_d2(px: float, py: float, pz: float, bmin: np.ndarray, bmax: np.ndarray,
            n: int) -> float:
    """Squared distance from a point to the box of node ``n`` (0 inside)."""
    d = 0.0
    t = bmin[n, 0] - px
    if t > 0.0:
        d += t * t
    t = px - bmax[n, 0]
    if t > 0.0:
        d += t * t
    t = bmin[n, 1] - py
    if t > 0.0:
        d += t * t
    t = py - bmax[n, 1]
    if t > 0.0:
        d += t * t
    t = bmin[n, 2] - pz
    if t > 0.0:
        d += t * t
    t = pz - bmax[n, 2]
    if t > 0.0:
        d += t * t
    return d


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _nearest(pts: np.ndarray, seq: np.ndarray, hint: np.ndarray, prev_pts: np.ndarray,
             prev_lower: np.ndarray,
             margin_abs: float, margin_rel: float, tri: np.ndarray, bmin: np.ndarray,
             bmax: np.ndarray, left: np.ndarray, start: np.ndarray, count: np.ndarray,
             order: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # ``tri`` is in tree order (leaf ranges index it directly); ``order`` maps a tree
    # position to the caller's triangle index, ``rank`` back. Points are searched in the
    # order ``seq`` (neighbours one after the other). Returns the nearest triangle
    # (caller's index) and, per point, a lower bound on its distance to every other
    # triangle (see :class:`NearestState`).
    m = pts.shape[0]
    out = np.empty(m, np.int64)
    lower = np.empty(m)
    stack = np.empty(256, np.int64)
    sdist = np.empty(256)
    tracked = prev_pts.shape[0] > 0
    prev = -1
    for j in range(m):
        i = seq[j]
        px = pts[i, 0]
        py = pts[i, 1]
        pz = pts[i, 2]
        h = rank[hint[i]] if hint.shape[0] > 0 and hint[i] >= 0 else -1
        if tracked and h >= 0:
            # Certified without a search: every other triangle was at least prev_lower away
            # from the point's previous position, so at least prev_lower - moved from here;
            # if the hinted triangle is strictly nearer than that, it is the nearest.
            dx = px - prev_pts[i, 0]
            dy = py - prev_pts[i, 1]
            dz = pz - prev_pts[i, 2]
            bound = prev_lower[i] - np.sqrt(dx * dx + dy * dy + dz * dz)
            if bound > 0.0 and _tri_d2(px, py, pz, tri, h) < bound * bound:
                out[i] = order[h]
                lower[i] = bound
                prev = h
                continue
        best = np.inf
        second = np.inf  # nearest of the other triangles seen
        bf = -1
        # Upper bounds from the hint and from the previous point's answer (``seq`` visits
        # neighbours one after the other, and they tend to share a triangle); any
        # triangle's distance is a valid bound, so neither changes the answer.
        if h >= 0:
            best = _tri_d2(px, py, pz, tri, h)
            bf = h
        if prev >= 0 and prev != h:
            d = _tri_d2(px, py, pz, tri, prev)
            if d < best or (d == best and order[prev] < order[bf]):
                second = best
                best = d
                bf = prev
            else:
                second = d
        # Search radius: the best distance, widened by a margin so that the other triangles
        # near the point are seen too and the lower bound is worth keeping. Never below
        # ``best`` itself (sqrt then square can round down by an ulp), or a triangle tied
        # with the best one could be pruned and the lowest-index rule broken.
        r = np.sqrt(best) * (1.0 + margin_rel) + margin_abs
        cap = min(second, max(r * r, best))
        stack[0] = 0
        sdist[0] = 0.0
        sp = 1
        while sp > 0:
            sp -= 1
            if sdist[sp] > cap:
                continue
            node = stack[sp]
            if count[node] > 0:
                changed = False
                for t in range(start[node], start[node] + count[node]):
                    d = _tri_d2(px, py, pz, tri, t)
                    if d < best or (d == best and t != bf and order[t] < order[bf]):
                        if t != bf:
                            second = best
                        best = d
                        bf = t
                        changed = True
                    elif t != bf and d < second:
                        second = d
                        changed = True
                if changed:
                    r = np.sqrt(best) * (1.0 + margin_rel) + margin_abs
                    cap = min(second, max(r * r, best))
                continue
            c = left[node]
            dl = _box_d2(px, py, pz, bmin, bmax, c)
            dr = _box_d2(px, py, pz, bmin, bmax, c + 1)
            # push the farther child first so the nearer one is searched first
            if dl <= dr:
                if dr <= cap:
                    stack[sp] = c + 1
                    sdist[sp] = dr
                    sp += 1
                if dl <= cap:
                    stack[sp] = c
                    sdist[sp] = dl
                    sp += 1
            else:
                if dl <= cap:
                    stack[sp] = c
                    sdist[sp] = dl
                    sp += 1
                if dr <= cap:
                    stack[sp] = c + 1
                    sdist[sp] = dr
                    sp += 1
        # Every triangle left unvisited lies farther than sqrt(cap), every visited one other
        # than the best at least sqrt(second) >= sqrt(cap) away.
        out[i] = order[bf]
        lower[i] = np.sqrt(cap)
        prev = bf
    return out, lower


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _closest(pts: np.ndarray, tri: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Closest point on triangle ``tri[face[i]]`` to ``pts[i]`` and its distance: Ericson's
    # region test, written as ``metrics.distance.closest_point_on_triangle`` computes it so
    # that both give the same bits (its dot products sum x, z, then y, numpy's einsum order
    # on x86-64; its norm sums x, y, z). Degenerate triangles give non-finite coordinates,
    # which the caller replaces.
    n = pts.shape[0]
    out = np.empty((n, 3))
    dist = np.empty(n)
    for i in range(n):
        t = face[i]
        ax = tri[t, 0, 0]
        ay = tri[t, 0, 1]
        az = tri[t, 0, 2]
        abx = tri[t, 1, 0] - ax
        aby = tri[t, 1, 1] - ay
        abz = tri[t, 1, 2] - az
        acx = tri[t, 2, 0] - ax
        acy = tri[t, 2, 1] - ay
        acz = tri[t, 2, 2] - az
        px = pts[i, 0]
        py = pts[i, 1]
        pz = pts[i, 2]
        apx = px - ax
        apy = py - ay
        apz = pz - az
        bpx = px - tri[t, 1, 0]
        bpy = py - tri[t, 1, 1]
        bpz = pz - tri[t, 1, 2]
        cpx = px - tri[t, 2, 0]
        cpy = py - tri[t, 2, 1]
        cpz = pz - tri[t, 2, 2]
        d1 = (abx * apx + abz * apz) + aby * apy
        d2 = (acx * apx + acz * apz) + acy * apy
        d3 = (abx * bpx + abz * bpz) + aby * bpy
        d4 = (acx * bpx + acz * bpz) + acy * bpy
        d5 = (abx * cpx + abz * cpz) + aby * cpy
        d6 = (acx * cpx + acz * cpz) + acy * cpy
        va = d3 * d6 - d5 * d4
        vb = d5 * d2 - d1 * d6
        vc = d1 * d4 - d3 * d2
        if d1 <= 0.0 and d2 <= 0.0:  # vertex a
            v = 0.0
            w = 0.0
        elif d3 >= 0.0 and d4 <= d3:  # vertex b
            v = 1.0
            w = 0.0
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:  # edge ab
            v = d1 / (d1 - d3)
            w = 0.0
        elif d6 >= 0.0 and d5 <= d6:  # vertex c
            v = 0.0
            w = 1.0
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:  # edge ac
            v = 0.0
            w = d2 / (d2 - d6)
        elif va <= 0.0 and d4 - d3 >= 0.0 and d5 - d6 >= 0.0:  # edge bc
            w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
            v = 1.0 - w
        else:  # interior
            denom = va + vb + vc
            v = vb / denom
            w = vc / denom
        qx = ax + v * abx + w * acx
        qy = ay + v * aby + w * acy
        qz = az + v * abz + w * acz
        out[i, 0] = qx
        out[i, 1] = qy
        out[i, 2] = qz
        ex = px - qx
        ey = py - qy
        ez = pz - qz
        dist[i] = np.sqrt(ex * ex + ey * ey + ez * ez)
    return out, dist


@nb.njit(cache=True, nogil=True)
def _morton_order(pts: np.ndarray) -> np.ndarray:
    # Points sorted along a Z-order curve of their box (10 bits an axis): consecutive
    # points are near each other, so the previous point's triangle is a close first guess
    # and the tree nodes it visited are still in cache (scan points come shuffled).
    n = pts.shape[0]
    lo = np.empty(3)
    span = 0.0
    for k in range(3):
        lo[k] = pts[:, k].min()
        span = max(span, pts[:, k].max() - lo[k])
    scale = 1023.0 / span if span > 0.0 else 0.0
    code = np.empty(n, np.int64)
    for i in range(n):
        c = 0
        for k in range(3):
            q = int((pts[i, k] - lo[k]) * scale)
            for b in range(10):
                c |= ((q >> b) & 1) << (3 * b + k)
        code[i] = c
    return np.argsort(code, kind="mergesort")


class NearestState(NamedTuple):
    """What a search leaves for the next search of the same points after a small motion.

    Attributes:
        points: (N, 3) where the points were.
        face: (N,) the nearest triangle of each.
        lower: (N,) a lower bound on each point's distance to every *other* triangle.
        seq: (N,) the order the points are searched in (nearby points one after another),
            kept because a small motion hardly changes it.

    A point that has moved by ``delta`` since keeps its triangle, with no search, when that
    triangle is now nearer than ``lower - delta`` (no other can be nearer); exact, so the
    answer is the same as a fresh search's.
    """

    points: np.ndarray
    face: np.ndarray
    lower: np.ndarray
    seq: np.ndarray


class TriangleBVH:
    """Exact nearest-triangle search over a fixed set of triangles.

    Args:
        triangles: (F, 3, 3) float64 corners, F >= 1, finite, no zero-area triangles
            expected (they are searched like segments; ``metrics.distance`` drops them
            before building).

    Raises:
        ValueError: wrong shape or no triangles.
    """

    def __init__(self, triangles: np.ndarray) -> None:
        tri = np.ascontiguousarray(triangles, np.float64)
        if tri.ndim != 3 or tri.shape[1:] != (3, 3) or tri.shape[0] == 0:
            raise ValueError(f"triangles must be a non-empty (F, 3, 3) array, got {tri.shape}.")
        *nodes, order = _build(tri, LEAF_SIZE)
        self._nodes = tuple(nodes)
        self._order = order
        self._rank = np.empty_like(order)
        self._rank[order] = np.arange(order.size)
        self._sorted = np.ascontiguousarray(tri[order])  # leaves read neighbouring memory
        # absolute part of the tracked search's margin: a thousandth of the mesh's size (the
        # root box is the box of every corner)
        bmin, bmax = nodes[0], nodes[1]
        self._margin = 1e-3 * float(np.linalg.norm(bmax[0] - bmin[0]))

    def closest(self, points: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closest point on triangle ``face[i]`` to ``points[i]``, and its distance.

        Args:
            points: (N, 3) query points.
            face: (N,) triangle indices (the caller's order, as :meth:`nearest` gives them).

        Returns:
            ((N, 3) closest points, (N,) distances), float64; the same bits as
            ``metrics.distance.closest_point_on_triangle``. A degenerate triangle gives
            non-finite values.
        """
        return _closest(self._points(points), self._sorted, self._rank[face])

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """Index of the nearest triangle to each point.

        Args:
            points: (N, 3) finite query points.

        Returns:
            (N,) int64 triangle indices (ties: the lowest index).

        Raises:
            ValueError: ``points`` not (N, 3).
        """
        pts = self._points(points)
        face, _ = _nearest(pts, _morton_order(pts), np.empty(0, np.int64), np.empty((0, 3)),
                           np.empty(0), 0.0, 0.0, self._sorted, *self._nodes, self._order,
                           self._rank)
        return face

    def nearest_tracked(self, points: np.ndarray,
                        state: NearestState | None = None) -> tuple[np.ndarray, NearestState]:
        """:meth:`nearest` for a point set queried again and again as it moves (ICP).

        Args:
            points: (N, 3) finite query points.
            state: what the previous call on the same N points returned, or None.

        Returns:
            ((N,) nearest triangle indices, the state for the next call). The indices are
            those :meth:`nearest` gives; points whose triangle is certified by the state
            skip the search.
        """
        pts = self._points(points)
        if state is None or state.points.shape != pts.shape:
            seq = _morton_order(pts)
            face, lower = _nearest(pts, seq, np.empty(0, np.int64), np.empty((0, 3)),
                                   np.empty(0), self._margin, TRACK_MARGIN, self._sorted,
                                   *self._nodes, self._order, self._rank)
        else:
            seq = state.seq
            face, lower = _nearest(pts, seq, state.face, state.points, state.lower,
                                   self._margin, TRACK_MARGIN, self._sorted, *self._nodes,
                                   self._order, self._rank)
        return face, NearestState(pts, face, lower, seq)

    def _points(self, points: np.ndarray) -> np.ndarray:
        pts = np.ascontiguousarray(points, np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {pts.shape}.")
        return pts


def compile_kernels() -> None:
    """Compiles every kernel once on a tiny mesh, so that numba's cache holds them.

    A process that finds no cached machine code compiles for several seconds (each scoring
    worker of a first run would); ``make setup`` calls this once after installing.
    """
    tri = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                    [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]] * 3)
    tree = TriangleBVH(tri)
    pts = np.array([[0.2, 0.2, 0.5], [0.9, 0.8, -0.3]])
    face, state = tree.nearest_tracked(pts)
    tree.nearest_tracked(pts + 0.01, state)
    tree.closest(pts, tree.nearest(pts))


if __name__ == "__main__":
    compile_kernels()

