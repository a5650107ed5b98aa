"""Topology tables of a face model: landmark pairs, NoW 7 ids and named vertex regions.

Room: index tables derived from a model's 68 landmark vertex ids and its mean mesh. They
are data (smplx ``vertex_ids.py`` style), computed once per model and attached to
:attr:`MorphableModel.regions`, so :class:`~benchmark.types.Topology` carries them.

Landmark pairs are in iBUG-68 ids (0-based) and turn into vertex ids through
:func:`landmark_tables`. Regions are boolean (V,) vertex masks computed from landmark
geometry on the *mean* shape (identity- and expression-independent):

``face``
    front of the face: inside the jaw contour (landmarks 0-16) closed over the forehead
    (the brow line lifted by 1.3 eye-to-brow distances), front-facing vertices only.
``eye_right`` / ``eye_left`` / ``eyes``
    an ellipse around each eye (eye index 0 = landmarks 36-41, 1 = 42-47), semi-axes 0.8 and
    0.55 of the eye-corner distance: lids, lid margin and the skin around them.
``eyelid_margin`` / ``eyelid_margin_upper``
    vertices within 1.5 mm of the lid opening (the eye-hole boundary loop where the mesh has
    eye holes, as ICT does; else the 36-41 / 42-47 landmark polygon). ``_upper`` keeps the
    part above the corner line (where lashes grow).
``brows``
    a band below the brow landmarks (17-21, 22-26), 5 mm half-width at the inner end tapering
    to 3 mm at the tail.
``lips``
    inside the outer lip contour (48-59) grown by 1 mm.
``nose``
    convex hull of the nose landmarks (27-35) widened by 5 mm at the alae, grown by 1 mm.
``skin``
    ``face`` without brows, lips and the eyelid margin (albedo regularisation, photometric
    masks).

Containment tests run in the frontal (x, y) projection of the mean shape; the model frame is
the suite's (+x subject's left, +y up, +z towards a frontal camera; see
``methods/render/camera.py``).
"""

from __future__ import annotations

import collections
from typing import NamedTuple

import numpy as np

from benchmark.types import EYE_CORNERS, EYELID_LOWER, EYELID_UPPER, NOW7_FROM_68

#: iBUG-68 (upper, lower) eyelid pairs per eye, eye index order: ((37, 41), (38, 40)), ...
EYELID_PAIRS = tuple(tuple(zip(EYELID_UPPER[e], EYELID_LOWER[e])) for e in range(2))
#: iBUG-68 (upper, lower) inner-lip pairs used by LDL.
LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
#: iBUG-68 ids of each eye's six landmarks in contour order.
EYE_CONTOUR = (tuple(range(36, 42)), tuple(range(42, 48)))

REGION_NAMES = (
    "face", "eye_right", "eye_left", "eyes", "eyelid_margin", "eyelid_margin_upper", "brows",
    "lips", "nose", "skin",
)

_MARGIN_M = 0.0015
_BROW_HALF_WIDTH_M = (0.005, 0.003)
_NOSE_WIDEN_M = 0.005
_LIP_GROW_M = 0.001


class LandmarkTables(NamedTuple):
    """Vertex ids of the landmark-derived tables of one topology.

    Attributes:
        landmark_ids: (68,) int64 vertex ids of the iBUG-68 landmarks.
        eyelid_pairs: (2, 2, 2) int64 vertex ids [eye, pair, (upper, lower)].
        eye_corners: (2, 2) int64 vertex ids [eye, (outer, inner)] (36, 39 / 45, 42 order as
            ``benchmark.types.EYE_CORNERS``: (36, 39), (42, 45)).
        lip_pairs: (3, 2) int64 vertex ids [pair, (upper, lower)].
        now7: (7,) int64 vertex ids of the NoW landmarks (68-ids 36, 39, 42, 45, 33, 48, 54).
    """

    landmark_ids: np.ndarray
    eyelid_pairs: np.ndarray
    eye_corners: np.ndarray
    lip_pairs: np.ndarray
    now7: np.ndarray


def landmark_tables(landmark_ids: np.ndarray) -> LandmarkTables:
    """Vertex-id tables (eyelid pairs, lip pairs, NoW 7) from a topology's 68 landmark ids.

    Args:
        landmark_ids: (68,) int vertex ids.

    Returns:
        The tables, all int64.

    Raises:
        ValueError: ``landmark_ids`` is not 68 ids.
    """
    ids = np.asarray(landmark_ids, np.int64).reshape(-1)
    if ids.shape != (68,):
        raise ValueError(f"landmark_ids must hold 68 vertex ids, got {ids.shape[0]}.")
    return LandmarkTables(
        landmark_ids=ids,
        eyelid_pairs=ids[np.asarray(EYELID_PAIRS)],
        eye_corners=ids[np.asarray(EYE_CORNERS)],
        lip_pairs=ids[np.asarray(LIP_PAIRS)],
        now7=ids[np.asarray(NOW7_FROM_68)],
    )


def vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of a mesh (numpy, float64)."""
    v = vertices.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a triangle mesh, each an array of vertex ids in order."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    uniq, counts = np.unique(key, axis=0, return_counts=True)
    adj: dict[int, list[int]] = collections.defaultdict(list)
    for a, b in uniq[counts == 1]:
        adj[int(a)].append(int(b))
        adj[int(b)].append(int(a))
    seen: set[int] = set()
    loops = []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(np.asarray(loop, np.int64))
    return loops


def _inside(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, (N,) bool."""
    x, y = points_xy[:, 0:1], points_xy[:, 1:2]
    x0, y0 = polygon_xy[:, 0], polygon_xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < x_at)).sum(axis=1) % 2 == 1


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """Distance from points (N, D) to segment a-b and the segment parameter t in [0, 1]."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-18), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1), t


def polyline_distance(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to a polyline (L, D) and the arc-length fraction of the closest point."""
    seg_len = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    best = np.full(len(points), np.inf)
    frac = np.zeros(len(points))
    for i in range(len(line) - 1):
        d, t = _segment_distance(points, line[i], line[i + 1])
        better = d < best
        best[better] = d[better]
        frac[better] = (cum[i] + t[better] * seg_len[i]) / max(cum[-1], 1e-18)
    return best, frac


def _grow(polygon_xy: np.ndarray, by: float) -> np.ndarray:
    """Moves every polygon vertex ``by`` metres away from the polygon's centroid."""
    d = polygon_xy - polygon_xy.mean(0)
    return polygon_xy + by * d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def _convex_hull(points_xy: np.ndarray) -> np.ndarray:
    """Convex hull polygon of 2D points (Andrew's monotone chain), counter-clockwise."""
    pts = sorted(map(tuple, np.asarray(points_xy, np.float64)))

    def half(seq: list) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def eye_hole_loops(vertices: np.ndarray, faces: np.ndarray,
                    lmk: np.ndarray) -> list[np.ndarray | None]:
    """Per eye, the boundary loop of the mesh's eye hole, or None if the mesh has none."""
    loops = boundary_loops(faces)
    out: list[np.ndarray | None] = []
    for e in range(2):
        eye = lmk[list(EYE_CONTOUR[e])]
        centre = eye.mean(0)
        width = np.linalg.norm(eye[0] - eye[3])
        found = None
        for loop in loops:
            pts = vertices[loop]
            if (np.linalg.norm(pts.mean(0) - centre) < 0.5 * width
                    and np.ptp(pts[:, 0]) < 2.0 * width):
                found = loop
                break
        out.append(found)
    return out


def face_regions(vertices: np.ndarray, faces: np.ndarray,
                 landmark_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Named vertex regions of a face mesh from its landmark geometry.

    Args:
        vertices: (V, 3) mean shape in metres, model frame (+y up, +z towards the camera).
        faces: (F, 3) int64 triangles.
        landmark_ids: (68,) vertex ids of the iBUG-68 landmarks.

    Returns:
        ``{name: (V,) bool}`` for every name in :data:`REGION_NAMES` (see module docstring).
    """
    v = np.asarray(vertices, np.float64)
    lmk = v[np.asarray(landmark_ids, np.int64)]
    xy = v[:, :2]
    normals = vertex_normals_np(v, faces)
    front = normals[:, 2] > 0.0
    regions: dict[str, np.ndarray] = {}

    # Face: jaw contour closed over the forehead.
    eye_y = lmk[36:48, 1].mean()
    brow_y = lmk[17:27, 1].mean()
    lift = 1.3 * (brow_y - eye_y)
    forehead = lmk[26:16:-1, :2] + np.array([0.0, lift])
    face_poly = np.concatenate([lmk[0:17, :2], forehead])
    regions["face"] = _inside(xy, face_poly) & front

    # Eyes: an ellipse around each eye.
    for e, name in enumerate(("eye_right", "eye_left")):
        eye = lmk[list(EYE_CONTOUR[e])]
        c = eye.mean(0)
        w = np.linalg.norm(eye[0, :2] - eye[3, :2])
        d = (xy - c[:2]) / np.array([0.8 * w, 0.55 * w])
        regions[name] = ((d ** 2).sum(1) <= 1.0) & (v[:, 2] > c[2] - 0.6 * w)
    regions["eyes"] = regions["eye_right"] | regions["eye_left"]

    # Eyelid margin: near the lid opening (hole loop where the mesh has one).
    holes = eye_hole_loops(v, faces, lmk)
    margin = np.zeros(len(v), bool)
    upper = np.zeros(len(v), bool)
    for e in range(2):
        eye_ids = list(EYE_CONTOUR[e])
        if holes[e] is not None:
            line = v[np.append(holes[e], holes[e][0])]
        else:
            line = lmk[eye_ids + [eye_ids[0]]]
        dist, _ = polyline_distance(v, line)
        near = (dist <= _MARGIN_M) & regions["eyes"]
        c0, c1 = lmk[EYE_CORNERS[e][0]], lmk[EYE_CORNERS[e][1]]
        t = np.clip(((xy - c0[:2]) @ (c1[:2] - c0[:2])) / np.sum((c1[:2] - c0[:2]) ** 2), 0, 1)
        corner_line_y = c0[1] + t * (c1[1] - c0[1])
        margin |= near
        upper |= near & (xy[:, 1] >= corner_line_y)
    regions["eyelid_margin"] = margin
    regions["eyelid_margin_upper"] = upper

    # Brows: a band below the brow landmarks, tapering towards the tail.
    brows = np.zeros(len(v), bool)
    for ids in (range(21, 16, -1), range(22, 27)):  # inner end first
        line = lmk[list(ids), :2] - np.array([0.0, 0.002])
        dist, frac = polyline_distance(xy, line)
        half = _BROW_HALF_WIDTH_M[0] + frac * (_BROW_HALF_WIDTH_M[1] - _BROW_HALF_WIDTH_M[0])
        brows |= (dist <= half) & front
    regions["brows"] = brows & ~margin

    # Lips and nose.
    regions["lips"] = _inside(xy, _grow(lmk[48:60, :2], _LIP_GROW_M)) & front
    nose_pts = np.concatenate([
        lmk[27:36, :2],
        lmk[[31], :2] - np.array([_NOSE_WIDEN_M, 0.0]),
        lmk[[35], :2] + np.array([_NOSE_WIDEN_M, 0.0]),
        lmk[[27], :2] + np.array([[-0.006, 0.0], [0.006, 0.0]]),
    ])
    in_hull = _inside(xy, _grow(_convex_hull(nose_pts), _LIP_GROW_M))
    regions["nose"] = in_hull & front & (v[:, 2] > lmk[31, 2] - 0.01)

    regions["skin"] = regions["face"] & ~regions["brows"] & ~regions["lips"] & ~margin
    return {k: regions[k].astype(bool) for k in REGION_NAMES}
