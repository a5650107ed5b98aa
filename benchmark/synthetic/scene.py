"""Building and rendering one synthetic face: subject, expression, eyes, pose, light, photo.

Room: the generator proper (pure functions of a configuration, a split and an index; no
files). ``store.py`` caches what this produces; ``benchmark/datasets/synthetic.py`` serves it.

A *subject* is an ICT-FaceKit identity (all 100 identity modes, so modes 50-99 are beyond a
50-mode fit) plus a smooth random displacement field, mostly along the normals (a few mm,
beyond any ICT fit), a skin tone with low-frequency variation, darker brows and lips, a lash
band on the front of the upper lid, hair on the scalp, and eyeballs (sclera, iris, pupil)
that follow the identity and sit behind the lids (see :func:`_clear_closed_lids`).
A *sample* adds the eye state per eye (``eyeBlink`` weights; closed eyes also squint a
little), random non-eye expressions, head pose, camera distance, SH lighting
(Deep3D's model), a random background and sensor noise, rendered with the suite's renderer
(``methods.render``) at ``supersample`` times the resolution and box-filtered.

The ground-truth mesh is the ICT ``ict-full`` face mesh (9409 vertices, metres, model frame,
before pose): ``mean + id_basis . id + exp_basis . exp + displacement``
(:func:`gt_vertices`). Eyeballs, eye sockets and the mouth cavity are rendered but are not
part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.synthetic.config import (
    CATEGORIES,
    EYE_STATE_LABEL,
    SyntheticConfig,
    rng_for,
    subject_id,
    subject_of,
)
from benchmark.types import NOW7_FROM_68
from methods.facemodel.ict import BLINK_LEFT, BLINK_RIGHT, load_ict, load_ict_eyeballs
from methods.facemodel.model import MorphableModel
from methods.facemodel.regions import (
    EYE_CONTOUR,
    boundary_loops,
    eye_hole_loops,
    polyline_distance,
    vertex_normals_np,
)
from methods.render import PinholeCamera, Renderer, euler_to_matrix, model_to_camera, project
from methods.render.rasterizer import rasterize_torch, vertex_visibility
from methods.render.shading import vertex_adjacency, vertex_normals

#: Non-eye expressions drawn at random (ICT/ARKit names) and their weight caps (x expr_max).
RANDOM_EXPRESSIONS = {
    "browDown_L": 1.0, "browDown_R": 1.0, "browInnerUp_L": 1.0, "browInnerUp_R": 1.0,
    "browOuterUp_L": 1.0, "browOuterUp_R": 1.0, "cheekPuff_L": 0.6, "cheekPuff_R": 0.6,
    "jawLeft": 0.3, "jawRight": 0.3, "mouthSmile_L": 1.2, "mouthSmile_R": 1.2,
    "mouthFrown_L": 0.8, "mouthFrown_R": 0.8, "mouthPucker": 0.8, "mouthFunnel": 0.6,
    "mouthStretch_L": 0.6, "mouthStretch_R": 0.6, "mouthPress_L": 0.6, "mouthPress_R": 0.6,
    "mouthRollLower": 0.5, "mouthRollUpper": 0.5, "mouthShrugLower": 0.6,
    "mouthShrugUpper": 0.6, "mouthDimple_L": 0.6, "mouthDimple_R": 0.6,
    "mouthUpperUp_L": 0.6, "mouthUpperUp_R": 0.6, "mouthLowerDown_L": 0.6,
    "mouthLowerDown_R": 0.6, "noseSneer_L": 0.5, "noseSneer_R": 0.5,
}

#: Iris albedos (linear RGB): dark brown, brown, hazel, green, blue, grey.
IRIS_COLOURS = np.array([
    [0.10, 0.06, 0.03], [0.22, 0.12, 0.05], [0.32, 0.24, 0.10], [0.22, 0.30, 0.15],
    [0.20, 0.32, 0.45], [0.35, 0.38, 0.40],
])
#: Hair albedos: black, dark brown, brown, auburn, blond, grey.
HAIR_COLOURS = np.array([
    [0.03, 0.025, 0.02], [0.08, 0.05, 0.03], [0.18, 0.11, 0.06], [0.25, 0.10, 0.05],
    [0.45, 0.35, 0.20], [0.40, 0.40, 0.40],
])
#: Skin albedo endpoints (light, dark), interpolated per subject.
SKIN_LIGHT = np.array([0.88, 0.68, 0.56])
SKIN_DARK = np.array([0.32, 0.19, 0.12])

_PUPIL_R = 0.0019
_IRIS_R = 0.0058
_MOUTH_DEPTH = 0.018
_SOCKET_DEPTH = 0.015
_LID_CLEARANCE = 0.0008
_SOCKET_ALBEDO = np.array([0.08, 0.03, 0.03])


# --------------------------------------------------------------------------- static assets


@dataclasses.dataclass(frozen=True, eq=False)
class _EyeAsset:
    """One eyeball's inner (iris-bearing) surface and its colour zones on the mean shape."""

    vertex_ids: np.ndarray  # ids into the ICT eyeball arrays (the inner surface)
    faces: np.ndarray  # (G, 3) re-indexed to vertex_ids
    zone: np.ndarray  # (E,) 0 sclera, 1 iris, 2 pupil, 3 limbal ring
    shade: np.ndarray  # (E,) sclera darkening away from the iris (the socket's shadow)
    mean: np.ndarray  # (E, 3) float64 mean shape of the inner surface
    basis: np.ndarray  # (K, E * 3) float64 identity basis of the inner surface

    def vertices(self, id_coeffs: np.ndarray) -> np.ndarray:
        """(E, 3) float64 inner-surface vertices for identity coefficients."""
        a = np.asarray(id_coeffs, np.float64)
        return self.mean + (a @ self.basis[: len(a)]).reshape(-1, 3)


@dataclasses.dataclass(frozen=True, eq=False)
class Assets:
    """Everything that does not depend on the subject (built once per process)."""

    model: MorphableModel
    eyeballs: tuple
    eyes: tuple[_EyeAsset, _EyeAsset]
    mouth_loop: np.ndarray
    eye_loops: tuple[np.ndarray, np.ndarray]  # per eye, the eye hole's boundary loop
    lid_ids: tuple[np.ndarray, np.ndarray]  # per eye, face vertices around the eye
    lid_faces: tuple[torch.Tensor, torch.Tensor]  # per eye, triangles around the eye
    margin_ids: tuple[np.ndarray, np.ndarray]  # per eye, lid-margin vertex ids
    face_ids: np.ndarray  # candidate centres of the detail field
    soft: dict[str, np.ndarray]  # (V,) float soft region masks: hair, brows, lips, eyes
    average: Any  # (V, V) sparse neighbour-averaging matrix
    render_faces: np.ndarray  # face + eyes + mouth cavity triangles
    n_render_vertices: int
    render_adjacency: torch.Tensor  # faces around each render vertex (for normals)


def _eye_asset(eyeball: Any) -> _EyeAsset:
    """Inner surface of an ICT eyeball (the outer shell is the transparent cornea/sclera)."""
    start = eyeball.iris_start
    faces = eyeball.faces[(eyeball.faces >= start).all(1)] - start
    v = eyeball.mean[start:].astype(np.float64)
    c = v.mean(0)
    d = v - c
    rad = np.linalg.norm(d, axis=1)
    axis = np.array([0.0, 0.0, 1.0])
    for _ in range(3):  # the optical axis: towards the mean of the most frontal vertices
        axis = v[(d / rad[:, None]) @ axis > 0.95].mean(0) - c
        axis /= np.linalg.norm(axis)
    along = d @ axis
    r = np.linalg.norm(d - np.outer(along, axis), axis=1)
    zone = np.zeros(len(v), np.int64)
    front = along > 0
    zone[front & (r < _IRIS_R)] = 1
    zone[front & (r >= _IRIS_R - 0.0006) & (r < _IRIS_R + 0.0002)] = 3
    zone[r < _PUPIL_R] = 2  # the pupil is a hole: its far side shows through it, dark too
    shade = np.where(front, 1.0 - 0.4 * np.clip((r - _IRIS_R) / 0.005, 0.0, 1.0), 0.6)
    k = eyeball.id_basis.shape[0]
    return _EyeAsset(vertex_ids=np.arange(start, len(eyeball.mean)), faces=faces, zone=zone,
                     shade=shade,
                     mean=v, basis=eyeball.id_basis[:, start:].astype(np.float64).reshape(k, -1))


def _neighbour_average(faces: np.ndarray, n: int) -> Any:
    """(V, V) sparse matrix averaging each vertex's edge neighbours."""
    from scipy.sparse import coo_matrix, diags

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(1)).ravel()
    return diags(1.0 / np.maximum(deg, 1)) @ adj


def smooth_mask(mask: np.ndarray, average: Any, iterations: int) -> np.ndarray:
    """Soft version of a vertex mask: ``iterations`` rounds of half neighbour averaging."""
    m = mask.astype(np.float64)
    for _ in range(iterations):
        m = 0.5 * m + 0.5 * (average @ m)
    return m


def _catmull_rom(points: np.ndarray, samples: int = 12) -> np.ndarray:
    """A smooth curve through ``points`` (P, D) (end points repeated), P-1 spans."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(points[-1:])
    return np.concatenate(out)


def _lid_masks(v: np.ndarray, faces: np.ndarray, landmark_ids: np.ndarray,
               regions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft lash-line (upper, lower) and lid-crease weights on the front of the lids.

    The lid's front rim runs through the eye landmarks (ICT's landmark vertices sit on it;
    the eye hole's boundary is further back, where the lid meets the eyeball). The upper
    lash band covers the front-facing upper lid within ~1.3 mm above that rim (fading by
    2.2 mm, thinner towards the inner corner); it moves with the lid, so a closed eye shows
    the dark curved line of real closed eyes. The crease is a faint band ~7 mm above.
    """
    lmk = v[landmark_ids]
    normals = vertex_normals_np(v, faces)
    upper = np.zeros(len(v))
    lower = np.zeros(len(v))
    crease = np.zeros(len(v))
    for e in range(2):
        ids = list(EYE_CONTOUR[e])  # corner, upper, upper, corner, lower, lower
        sel = regions["eye_right" if e == 0 else "eye_left"] & (normals[:, 2] > 0.2)
        xy = v[sel, :2]
        top = _catmull_rom(lmk[[ids[0], ids[1], ids[2], ids[3]], :2])
        bottom = _catmull_rom(lmk[[ids[3], ids[4], ids[5], ids[0]], :2])
        d_top, f_top = polyline_distance(xy, top)
        d_bot, f_bot = polyline_distance(xy, bottom)
        # above the upper rim: y above the curve's y at the same x (nearest-point test)
        k = np.clip((f_top * (len(top) - 1)).round().astype(int), 0, len(top) - 1)
        above = xy[:, 1] >= top[k, 1] - 1e-4
        k2 = np.clip((f_bot * (len(bottom) - 1)).round().astype(int), 0, len(bottom) - 1)
        below = xy[:, 1] <= bottom[k2, 1] + 1e-4
        t_out = f_top if e == 0 else 1.0 - f_top  # 0 at the outer corner (36 / 45)
        taper = np.clip((1.0 - t_out) / 0.35, 0.0, 1.0) * np.clip(t_out / 0.05, 0.0, 1.0)
        taper = 0.3 + 0.7 * taper
        upper[sel] = np.where(above, np.clip((0.0022 - d_top) / 0.0009, 0, 1) * taper, 0.0)
        lower[sel] = np.where(below, np.clip((0.0012 - d_bot) / 0.0006, 0, 1) * 0.4, 0.0)
        crease[sel] = np.where(above, np.exp(-(((d_top - 0.0065) / 0.0012) ** 2)), 0.0)
    return upper, lower, crease


@functools.lru_cache(maxsize=1)
def assets() -> Assets:
    """The static assets (cached per process)."""
    model = load_ict("full")
    eyeballs = load_ict_eyeballs()
    eyes = tuple(_eye_asset(e) for e in eyeballs)
    loops = boundary_loops(model.faces)
    lmk = model.mean[model.landmark_ids]
    mouth_c = lmk[60:68].mean(0)
    mouth_loop = min(loops, key=lambda lp: np.linalg.norm(model.mean[lp].mean(0) - mouth_c))
    margin = model.regions["eyelid_margin"]
    margin_ids = (np.flatnonzero(margin & model.regions["eye_right"]),
                  np.flatnonzero(margin & model.regions["eye_left"]))
    average = _neighbour_average(model.faces, model.n_vertices)
    v = model.mean
    brow_y = lmk[17:27, 1].mean()
    scalp = (v[:, 1] > brow_y + 0.045) | ((v[:, 1] > brow_y - 0.005) & (np.abs(v[:, 0]) > 0.068)
                                          & (v[:, 2] < 0.05))
    regions = model.regions
    lash_upper, lash_lower, crease = _lid_masks(v, model.faces, model.landmark_ids, regions)
    soft = {"hair": smooth_mask(scalp, average, 3), "lash_upper": lash_upper,
            "lash_lower": lash_lower, "crease": crease,
            "brows": smooth_mask(regions["brows"], average, 2),
            "lips": smooth_mask(regions["lips"], average, 2),
            "eyes": smooth_mask(regions["eyes"], average, 3)}
    eye_loops = tuple(eye_hole_loops(v, model.faces, lmk))
    if any(lp is None for lp in eye_loops):
        raise ValueError("the ICT face mesh has no eye holes; the synthetic generator needs them.")
    # Render mesh = face (V) + eye 0 inner surface + eye 1 inner surface + three cavity
    # centres: the mouth and two eye sockets, each closed by a dark fan from its hole's rim.
    # The sockets hide any gap between a lid and its eyeball.
    nv = model.n_vertices
    parts = [model.faces]
    off = nv
    for e in eyes:
        parts.append(e.faces + off)
        off += len(e.vertex_ids)
    for k, loop in enumerate((mouth_loop, *eye_loops)):
        parts.append(np.stack([loop, np.roll(loop, -1), np.full(len(loop), off + k)], 1))
    n_render = off + 3
    render_faces = np.concatenate(parts).astype(np.int64)
    return Assets(
        model=model, eyeballs=eyeballs, eyes=eyes, mouth_loop=mouth_loop,
        eye_loops=eye_loops,  # type: ignore[arg-type]
        lid_ids=(np.flatnonzero(regions["eye_right"]), np.flatnonzero(regions["eye_left"])),
        lid_faces=tuple(torch.from_numpy(model.faces[regions[k][model.faces].any(1)])
                        for k in ("eye_right", "eye_left")),  # type: ignore[arg-type]
        margin_ids=margin_ids, face_ids=np.flatnonzero(model.regions["face"]), soft=soft,
        average=average, render_faces=render_faces, n_render_vertices=n_render,
        render_adjacency=vertex_adjacency(torch.from_numpy(render_faces), n_render),
    )


# --------------------------------------------------------------------------- subjects


@dataclasses.dataclass(eq=False)
class Subject:
    """One synthetic identity.

    Attributes:
        id: subject id (``<split>-s<index>``).
        id_coeffs: (100,) float32 ICT identity coefficients (all modes).
        displacement: (V, 3) float32 metres, the smooth detail added to every expression.
        eyeball_shift: (2, 3) float32 metres, eyeballs follow the detail around their lids.
        albedo: (V, 3) float32 face albedo in [0, 1].
        sclera: (3,) sclera albedo.
        iris: (3,) iris albedo.
        params: JSON-able summary (skin tone, hair/iris colour ids, detail amplitude).
    """

    id: str
    id_coeffs: np.ndarray
    displacement: np.ndarray
    eyeball_shift: np.ndarray
    albedo: np.ndarray
    sclera: np.ndarray
    iris: np.ndarray
    params: dict[str, Any]


def _clear_closed_lids(model: MorphableModel, a: Assets, id_coeffs: np.ndarray,
                      displacement: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Eyeball shifts that keep each eyeball behind its closed lid (no iris through skin).

    Identity modes and the detail field move lids and eyeballs by slightly different
    amounts, so on some subjects the cornea would poke through a closed lid. For the closed
    and half-closed lid shapes (blink 0.5 and 1.15, with and without squint), the lids are
    z-buffered from the front (0.25 mm pixels) and every eyeball vertex is compared with the
    lid depth in front of it; an eyeball that pokes through moves back (-z) by its worst
    penetration plus ``_LID_CLEARANCE``. The dark socket behind it hides the gap this leaves.
    """
    shift = shift.astype(np.float64).copy()
    blinks = [model.exp_index(BLINK_RIGHT), model.exp_index(BLINK_LEFT)]
    squints = [model.exp_index("eyeSquint_R"), model.exp_index("eyeSquint_L")]
    worst = np.full(2, -np.inf)
    for blink in (0.5, 1.15):
        for squint in (0.0, 0.2):
            exp = np.zeros(model.n_exp)
            exp[blinks] = blink
            exp[squints] = squint
            verts = gt_vertices(model, id_coeffs, exp, displacement).astype(np.float64)
            for e in range(2):
                ball = a.eyes[e].vertices(id_coeffs) + shift[e]
                centre = ball.mean(0)
                cam = PinholeCamera(focal=4000.0, width=144, height=96)  # 0.25 mm at 1 m
                trans = torch.tensor([[-centre[0], centre[1], 1.0 + centre[2]]])
                rot = torch.eye(3, dtype=torch.float64)[None]
                v_cam = model_to_camera(torch.from_numpy(verts)[None], rot, trans).float()
                frags = rasterize_torch(v_cam, a.lid_faces[e], cam)
                b_cam = model_to_camera(torch.from_numpy(ball)[None], rot, trans).float()
                uv = project(b_cam, cam)[0]
                x = uv[:, 0].floor().long()
                y = uv[:, 1].floor().long()
                ok = (x >= 0) & (x < cam.width) & (y >= 0) & (y < cam.height)
                lid = frags.depth[0, y[ok], x[ok]]
                covered = lid > 0
                if covered.any():
                    pen = (lid[covered] - b_cam[0, ok, 2][covered]).max().item()
                    worst[e] = max(worst[e], pen)
    for e in range(2):
        if worst[e] > -_LID_CLEARANCE:
            shift[e, 2] -= worst[e] + _LID_CLEARANCE
    return shift


def gt_vertices(model: MorphableModel, id_coeffs: np.ndarray, exp_coeffs: np.ndarray,
                displacement: np.ndarray) -> np.ndarray:
    """The ground-truth mesh, (V, 3) float32 metres (model frame, before pose).

    ``mean + id_basis . id + exp_basis . exp + displacement``, accumulated in float64 (the
    generator and the loader both call this, so stored and reloaded meshes are identical).
    """
    mean, basis = _float64_model(model)
    coeffs = np.concatenate([np.asarray(id_coeffs, np.float64),
                             np.asarray(exp_coeffs, np.float64)])
    if coeffs.shape != (basis.shape[0],):
        raise ValueError(f"expected {model.n_id} identity and {model.n_exp} expression "
                         f"coefficients, got {len(id_coeffs)} and {len(exp_coeffs)}.")
    out = mean + (coeffs @ basis).reshape(-1, 3) + displacement
    return out.astype(np.float32)


@functools.lru_cache(maxsize=2)
def _float64_model(model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    basis = np.concatenate([model.id_basis.reshape(model.n_id, -1),
                            model.exp_basis.reshape(model.n_exp, -1)]).astype(np.float64)
    return model.mean.astype(np.float64), basis


def _smooth_field(rng: np.random.Generator, points: np.ndarray, centres: np.ndarray,
                  sigma: tuple[float, float], amp: float) -> np.ndarray:
    """Sum of Gaussian bumps at ``centres`` with random widths and N(0, amp) heights."""
    s = rng.uniform(*sigma, size=len(centres))
    a = rng.normal(0.0, amp, size=len(centres))
    d2 = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    return (np.exp(-d2 / (2 * s ** 2)) * a).sum(1)


@functools.lru_cache(maxsize=8)
def make_subject(config: SyntheticConfig, split: str, index: int) -> Subject:
    """Subject ``index`` of a split (deterministic from the seed and split name)."""
    a = assets()
    model = a.model
    rng = rng_for(config, split, 0, index)
    id_coeffs = np.clip(rng.normal(0.0, config.id_sigma, model.n_id), -2.5 * config.id_sigma,
                        2.5 * config.id_sigma).astype(np.float32)
    neutral = model.vertices(id_coeffs).astype(np.float64)
    # Detail: a smooth 3D vector field, a sum of Gaussian bumps each pushing along the
    # surface normal at its centre (averaged over 1 cm). A field of position, not of the
    # per-vertex normal, moves the touching rims of a closed lid together, so detail never
    # opens or closes an eye, and it cannot fold the nostrils.
    normals = vertex_normals_np(neutral, model.faces)
    centre_ids = rng.choice(a.face_ids, config.detail_centres, replace=False)
    centres = neutral[centre_ids]
    near = ((neutral[None] - centres[:, None]) ** 2).sum(-1) < 0.01 ** 2  # (K, V)
    dirs = near.astype(np.float64) @ normals
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    sig = rng.uniform(0.012, 0.03, size=len(centres))
    amp = rng.normal(0.0, 1.0, size=len(centres))
    d2 = ((neutral[:, None, :] - centres[None]) ** 2).sum(-1)
    weights = np.exp(-d2 / (2 * sig ** 2)) * amp  # (V, K)
    field = weights @ dirs  # (V, 3)
    along = (field * normals).sum(1)
    field *= config.detail_mm * 1e-3 / max(float(along[a.face_ids].std()), 1e-12)
    cap = config.detail_max_mm * 1e-3
    mag = np.linalg.norm(field, axis=1, keepdims=True)
    field *= cap * np.tanh(mag / cap) / np.maximum(mag, 1e-12)
    displacement = field.astype(np.float32)
    shift = np.stack([displacement[ids].mean(0) for ids in a.margin_ids])
    shift = _clear_closed_lids(model, a, id_coeffs, displacement, shift).astype(np.float32)

    # Albedo: skin tone, low-frequency variation, cheeks, brows, lips, lash line, hair.
    tone = float(rng.beta(1.6, 1.6))
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * tone
    skin = skin * rng.uniform(0.95, 1.05, 3)
    var = _smooth_field(rng, neutral, neutral[rng.choice(a.face_ids, 10, replace=False)],
                        (0.015, 0.04), 0.06)
    albedo = np.clip(skin[None] * (1.0 + var[:, None]), 0, 1)
    lmk = neutral[model.landmark_ids]
    for c in (lmk[[1, 31]].mean(0), lmk[[15, 35]].mean(0)):  # cheeks: a little redder
        w = np.exp(-((neutral - c) ** 2).sum(1) / (2 * 0.018 ** 2)) * rng.uniform(0.0, 0.12)
        albedo = albedo * (1 - w[:, None]) + albedo * np.array([1.1, 0.82, 0.8]) * w[:, None]
    hair_id = int(rng.integers(len(HAIR_COLOURS)))
    hair_col = HAIR_COLOURS[hair_id] * rng.uniform(0.85, 1.15)
    brow = a.soft["brows"] * rng.uniform(0.65, 0.9)
    albedo = albedo * (1 - brow[:, None]) + hair_col[None] * brow[:, None]
    lips = a.soft["lips"] * rng.uniform(0.5, 0.85)
    lip_col = skin * np.array([0.85, 0.5, 0.5]) * rng.uniform(0.7, 1.0)
    albedo = albedo * (1 - lips[:, None]) + lip_col[None] * lips[:, None]
    albedo = albedo * (1 - 0.12 * a.soft["eyes"][:, None])
    albedo = albedo * (1 - 0.25 * a.soft["crease"][:, None])
    lash = np.maximum(a.soft["lash_upper"] * rng.uniform(0.85, 0.97), a.soft["lash_lower"])
    lash_col = np.minimum(hair_col, 0.05) * 0.5
    albedo = albedo * (1 - lash[:, None]) + lash_col[None] * lash[:, None]
    hair = a.soft["hair"] * rng.uniform(0.8, 1.0)
    albedo = albedo * (1 - hair[:, None]) + hair_col[None] * hair[:, None]
    iris_id = int(rng.integers(len(IRIS_COLOURS)))
    return Subject(
        id=subject_id(split, index),
        id_coeffs=id_coeffs,
        displacement=displacement,
        eyeball_shift=shift,
        albedo=np.clip(albedo, 0, 1).astype(np.float32),
        sclera=(np.array([0.80, 0.77, 0.72]) * rng.uniform(0.85, 1.0)).astype(np.float32),
        iris=(IRIS_COLOURS[iris_id] * rng.uniform(0.8, 1.2)).astype(np.float32),
        params={"skin_tone": round(tone, 4), "hair_colour": hair_id, "iris_colour": iris_id,
                "detail_mm": config.detail_mm, "n_id_modes": int(model.n_id)},
    )


# --------------------------------------------------------------------------- samples


@dataclasses.dataclass
class SampleSpec:
    """Random choices of one sample (everything but the subject).

    Attributes:
        category: one of :data:`CATEGORIES`.
        eye_states: per eye (index 0 = subject's right) ``open`` / ``half`` / ``closed``.
        exp_coeffs: (53,) float32 ICT expression weights (blinks included).
        angles_deg: (pitch, yaw, roll) in degrees.
        distance_m: camera distance of the face centre.
        offset_m: (2,) face-centre offset from the optical axis (camera x, y).
        gamma: (27,) SH lighting (Deep3D layout, band 0 included: rendered with init_lit 0).
        exposure: image brightness factor.
        background: JSON-able background description.
        noise: sensor noise std (0-1 units).
        blur: Gaussian blur sigma in pixels (0 = none).
    """

    category: str
    eye_states: tuple[str, str]
    exp_coeffs: np.ndarray
    angles_deg: np.ndarray
    distance_m: float
    offset_m: np.ndarray
    gamma: np.ndarray
    exposure: float
    background: dict[str, Any]
    noise: float
    blur: float


def _eye_states(category: str, rng: np.random.Generator) -> tuple[str, str]:
    if category in ("open", "half", "closed"):
        return category, category
    if category == "wink_left":  # subject's left eye (index 1) closed
        return "open", "closed"
    if category == "wink_right":
        return "closed", "open"
    other = "open" if rng.random() < 0.5 else "closed"
    return ("half", other) if rng.random() < 0.5 else (other, "half")


def make_spec(config: SyntheticConfig, split: str, index: int) -> SampleSpec:
    """Random choices of sample ``index`` of a split."""
    model = assets().model
    rng = rng_for(config, split, 1, index)
    category = CATEGORIES[index % len(CATEGORIES)]
    states = _eye_states(category, rng)
    exp = np.zeros(model.n_exp, np.float64)
    for name, cap in RANDOM_EXPRESSIONS.items():
        if rng.random() < config.expr_prob:
            exp[model.exp_index(name)] = rng.uniform(0, config.expr_max * cap)
    if rng.random() < 0.4:
        exp[model.exp_index("jawOpen")] = rng.uniform(0.0, config.jaw_open_max)
    for e, (blink, squint, wide) in enumerate(
        ((BLINK_RIGHT, "eyeSquint_R", "eyeWide_R"), (BLINK_LEFT, "eyeSquint_L", "eyeWide_L"))
    ):
        state = states[e]
        rng_range = {"open": config.blink_open, "half": config.blink_half,
                     "closed": config.blink_closed}[state]
        exp[model.exp_index(blink)] = rng.uniform(*rng_range)
        if state == "closed":
            exp[model.exp_index(squint)] = rng.uniform(*config.squint_closed)
        elif state == "open" and rng.random() < 0.25:
            exp[model.exp_index(wide)] = rng.uniform(0.0, 0.3)
    angles = np.array([rng.uniform(-config.pitch_deg, config.pitch_deg),
                       rng.uniform(-config.yaw_deg, config.yaw_deg),
                       rng.uniform(-config.roll_deg, config.roll_deg)])
    # Lighting: ambient + one directional term (towards the camera's hemisphere) + a bit of
    # band 2, slightly tinted.
    d = rng.normal(size=3)
    d[2] = abs(d[2]) + 0.6
    d /= np.linalg.norm(d)
    strength = rng.uniform(0.1, 0.5)
    base = rng.uniform(0.75, 1.0)
    gamma = np.zeros((3, 9))
    tint = rng.uniform(0.95, 1.05, 3)
    band2 = rng.normal(0, 0.03, 5)
    for c in range(3):
        gamma[c, 0] = base * tint[c]
        gamma[c, 1:4] = np.array([-d[1], d[2], -d[0]]) * strength * tint[c]
        gamma[c, 4:] = band2 * tint[c]
    bg_kind = ("gradient", "noise", "flat")[int(rng.integers(3))]
    # Muted colours (real backdrops are rarely saturated): grey plus a partial colour pull.
    grey = rng.uniform(0.15, 0.85, (3, 1))
    colours = grey + (rng.uniform(0.0, 1.0, (3, 3)) - grey) * rng.uniform(0.1, 0.6, (3, 1))
    background = {"kind": bg_kind, "colours": colours.clip(0, 1).round(4).tolist(),
                  "angle": float(rng.uniform(0, 2 * math.pi)),
                  "seed": int(rng.integers(2 ** 31))}
    return SampleSpec(
        category=category,
        eye_states=states,
        exp_coeffs=exp.astype(np.float32),
        angles_deg=angles,
        distance_m=float(rng.uniform(*config.distance_m)),
        offset_m=rng.uniform(-config.jitter_m, config.jitter_m, 2),
        gamma=gamma.reshape(27).astype(np.float32),
        exposure=float(rng.uniform(0.9, 1.15)),
        background=background,
        noise=float(rng.uniform(0.5, 2.5) / 255.0),
        blur=float(rng.uniform(0.0, 0.6)),
    )


def background_image(spec: dict[str, Any], size: int) -> np.ndarray:
    """(size, size, 3) float32 background from its description."""
    cols = np.asarray(spec["colours"], np.float64)
    rng = np.random.default_rng(spec["seed"])
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    if spec["kind"] == "flat":
        img = np.broadcast_to(cols[0], (size, size, 3)).copy()
        img += rng.normal(0, 0.02, (1, 1, 3))
    elif spec["kind"] == "gradient":
        t = (np.cos(spec["angle"]) * (xx - 0.5) + np.sin(spec["angle"]) * (yy - 0.5)) + 0.5
        t = np.clip(t, 0, 1)[..., None]
        img = cols[0] * (1 - t) + cols[1] * t
    else:  # smooth noise between three colours
        grid = torch.from_numpy(rng.uniform(0, 1, (1, 2, 5, 5)))
        w = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)
        w = w[0].permute(1, 2, 0).numpy().clip(0, 1)
        img = cols[0] * (1 - w[..., :1]) + cols[1] * w[..., :1]
        img = img * (1 - 0.5 * w[..., 1:]) + cols[2] * 0.5 * w[..., 1:]
    return img.astype(np.float32)


@dataclasses.dataclass
class Rendered:
    """One generated sample, ready to store.

    Attributes:
        image: (S, S, 3) uint8 RGB.
        arrays: named numpy arrays (see ``store.py`` for the list).
        meta: JSON-able description.
        subject: the sample's subject.
    """

    image: np.ndarray
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    subject: Subject


def pose_of(spec: SampleSpec, config: SyntheticConfig,
            lmk_model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3, 3) and translation (3,) placing the landmark centroid at the face centre."""
    rot = euler_to_matrix(torch.from_numpy(np.radians(spec.angles_deg))[None].float())[0]
    rot = rot.numpy().astype(np.float64)
    c = lmk_model.mean(0)
    posed_c = (rot @ c) * np.array([1.0, -1.0, -1.0])
    target = np.array([spec.offset_m[0], spec.offset_m[1], spec.distance_m])
    return rot, target - posed_c


def render_sample(config: SyntheticConfig, split: str, index: int,
                  with_scan: bool = True) -> Rendered:
    """Generates sample ``index`` of a split: photo, ground truth, scan and meta."""
    from metrics import eye_openness

    a = assets()
    model = a.model
    spec = make_spec(config, split, index)
    subject = make_subject(config, split, subject_of(config, index))
    verts = gt_vertices(model, subject.id_coeffs, spec.exp_coeffs, subject.displacement)
    lmk3d = verts[model.landmark_ids]
    openness = eye_openness(lmk3d).astype(np.float32)

    # Render mesh: face, eyeballs (identity-deformed, shifted with the lid detail), cavities.
    eye_verts, eye_alb = [], []
    for e, asset in enumerate(a.eyes):
        v = asset.vertices(subject.id_coeffs) + subject.eyeball_shift[e]
        eye_verts.append(v)
        sclera = subject.sclera[None] * asset.shade[:, None]
        col = np.where(asset.zone[:, None] == 1, subject.iris[None], sclera)
        col = np.where(asset.zone[:, None] == 3, subject.iris[None] * 0.45, col)
        col = np.where(asset.zone[:, None] == 2, np.array([[0.015, 0.012, 0.012]]), col)
        if spec.eye_states[e] == "closed":
            # A closed ICT lid (blink ~1.1) can leave a hairline seam seen from below; what
            # shows through it must read as the dark lash line, not as sclera. (Blinking
            # harder closes the seam but crosses the lids and raises the openness again.)
            col = np.broadcast_to(_SOCKET_ALBEDO, col.shape)
        eye_alb.append(col)
    centres = [verts[a.mouth_loop].mean(0) - np.array([0.0, 0.0, _MOUTH_DEPTH])]
    centres += [verts[lp].mean(0) - np.array([0.0, 0.0, _SOCKET_DEPTH]) for lp in a.eye_loops]
    all_v = np.concatenate([verts, *eye_verts, np.stack(centres)]).astype(np.float32)
    cavity_alb = np.array([[0.12, 0.03, 0.03], _SOCKET_ALBEDO, _SOCKET_ALBEDO])
    albedo = np.concatenate([subject.albedo, *eye_alb, cavity_alb]).astype(np.float32)
    # The lips' inner rim gets darker towards the cavity.
    albedo[a.mouth_loop] = albedo[a.mouth_loop] * 0.55

    rot, trans = pose_of(spec, config, lmk3d.astype(np.float64))
    size = config.image_size
    camera = PinholeCamera(focal=config.focal, width=size, height=size)
    rot_t = torch.from_numpy(rot).float()[None]
    trans_t = torch.from_numpy(trans).float()[None]
    v_cam = model_to_camera(torch.from_numpy(all_v)[None], rot_t, trans_t)
    renderer = Renderer(camera, backend="torch", supersample=config.supersample)
    faces_t = torch.from_numpy(a.render_faces)
    with torch.no_grad():
        normals = vertex_normals(v_cam, faces_t, a.render_adjacency)
        out = renderer.render(v_cam, faces_t, torch.from_numpy(albedo)[None],
                              torch.from_numpy(spec.gamma)[None], init_lit=0.0, normals=normals)
    colour = out.image[0].numpy() * spec.exposure
    bg = background_image(spec.background, size)
    cov = out.mask[0].numpy()[..., None]
    img = colour + bg * (1.0 - cov)
    img = _blur(img, spec.blur)
    rng = np.random.default_rng(spec.background["seed"] + 1)
    img = img + rng.normal(0.0, spec.noise, img.shape)
    image = (np.clip(img, 0.0, 1.0) ** (1 / 1.1) * 255.0 + 0.5).astype(np.uint8)

    # Ground truth in the image: landmark projections and their visibility.
    lmk_cam = v_cam[:, model.landmark_ids]
    lmk2d = project(lmk_cam, camera)[0].numpy().astype(np.float32)
    hi = camera.scaled(config.supersample) if config.supersample > 1 else camera
    visible = vertex_visibility(lmk_cam, out.fragments.depth, hi, tol=4e-3)[0].numpy()
    eyeball_px, iris_px = _visible_eye_pixels(out.fragments.tri_id[0], a, config.supersample)
    now7 = lmk3d[list(NOW7_FROM_68)]
    scan = None
    if with_scan:
        scan = make_scan(verts, model.faces, now7, config.scan_points, config.scan_noise_mm,
                         rng_for(config, split, 2, index))
    meta = {
        "eye_category": spec.category,
        "eye_categories": list(spec.eye_states),
        "blink": [float(spec.exp_coeffs[model.exp_index(BLINK_RIGHT)]),
                  float(spec.exp_coeffs[model.exp_index(BLINK_LEFT)])],
        "pose_deg": {"pitch": float(spec.angles_deg[0]), "yaw": float(spec.angles_deg[1]),
                     "roll": float(spec.angles_deg[2])},
        "rotation": rot.tolist(),
        "translation_m": trans.tolist(),
        "camera": {"focal": camera.focal, "width": size, "height": size,
                   "cx": camera.center[0], "cy": camera.center[1],
                   "distance_m": spec.distance_m},
        "light_gamma": [round(float(g), 5) for g in spec.gamma],
        "exposure": spec.exposure,
        "background": spec.background,
        "noise": spec.noise,
        "blur": spec.blur,
        "expressions": {n: round(float(w), 4) for n, w in zip(model.exp_names, spec.exp_coeffs)
                        if w > 0},
        "subject": subject.params,
        "landmarks_visible": visible.astype(bool).tolist(),
        "eyeball_visible_px": eyeball_px,
        "iris_visible_px": iris_px,
    }
    arrays = {
        "landmarks2d": lmk2d,
        "landmarks3d": lmk3d.astype(np.float32),
        "landmarks7": now7.astype(np.float32),
        "landmarks_visible": visible.astype(bool),
        "eye_state": np.array([EYE_STATE_LABEL[s] for s in spec.eye_states], np.int8),
        "eye_openness": openness,
        "exp_coeffs": spec.exp_coeffs,
        "rotation": rot.astype(np.float32),
        "translation": trans.astype(np.float32),
    }
    if scan is not None:
        arrays["scan_points"] = scan
    return Rendered(image=image, arrays=arrays, meta=meta, subject=subject)


def _visible_eye_pixels(tri_id: torch.Tensor, a: Assets, supersample: int
                        ) -> tuple[list[float], list[float]]:
    """Per eye, output-resolution pixels showing the eyeball (and its iris or pupil)."""
    n_face = len(a.model.faces)
    eyeball, iris = [], []
    start = n_face
    for asset in a.eyes:
        stop = start + len(asset.faces)
        hit = tri_id[(tri_id >= start) & (tri_id < stop)] - start
        dark = torch.from_numpy(asset.zone[asset.faces[:, 0]] > 0)[hit]
        eyeball.append(round(hit.numel() / supersample ** 2, 2))
        iris.append(round(int(dark.sum()) / supersample ** 2, 2))
        start = stop
    return eyeball, iris


def make_scan(verts: np.ndarray, faces: np.ndarray, landmarks7: np.ndarray, n_points: int,
              noise_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A NoW-style scan of a mesh: area-uniform surface samples, noisy, NoW-cropped.

    Points are drawn uniformly by area on the triangles (a topology unrelated to the mesh's
    vertices), moved by N(0, ``noise_mm``) along their triangle's normal, and cropped with
    the NoW sphere (``metrics.now_crop_mask`` on the exact 7 landmarks).

    Args:
        verts: (V, 3) ground-truth vertices, metres.
        faces: (F, 3) triangles.
        landmarks7: (7, 3) NoW landmarks of the mesh, metres.
        n_points: samples before cropping.
        noise_mm: normal noise std in millimetres.
        rng: random generator.

    Returns:
        (N, 3) float32 cropped scan points, metres.
    """
    from metrics import now_crop_mask

    v = verts.astype(np.float64)
    tri = v[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    pick = rng.choice(len(faces), size=n_points, p=area / area.sum())
    r1 = np.sqrt(rng.random(n_points))
    r2 = rng.random(n_points)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    pts = np.einsum("nk,nkd->nd", bary, tri[pick])
    normal = cross[pick] / np.maximum(area[pick, None], 1e-18)
    pts += normal * rng.normal(0.0, noise_mm * 1e-3, (n_points, 1))
    return pts[now_crop_mask(pts, landmarks7)].astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.05:
        return img
    r = 2
    x = np.arange(-r, r + 1)
    k = np.exp(-(x ** 2) / (2 * sigma ** 2))
    k /= k.sum()
    t = torch.from_numpy(img).permute(2, 0, 1)[:, None].double()
    kx = torch.from_numpy(k).view(1, 1, 1, -1)
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), kx)
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), kx.transpose(2, 3))
    return t[:, 0].permute(1, 2, 0).numpy()
