"""The albedo model of the ELAM+LDL network: ICT has no albedo, so we define a small linear one.

Room: per-vertex albedo of the ICT narrow face as a linear function of a few coefficients,
``albedo = mean + coeffs @ basis`` (no clipping; the reflectance regulariser and the
photometric loss keep it in range), deterministic from the mesh and its region masks
(:mod:`methods.facemodel.regions`), nothing learnt and nothing shipped.

Mean albedo: a mid skin tone everywhere, blended (soft region masks: the region's 0/1 mask
averaged over mesh neighbours a few times) to darker red on the ``lips``, to dark hair on the
``brows`` and to a near-black lash line on ``eyelid_margin_upper``.

Basis (:data:`N_ALBEDO` = 39 coefficients, in this order):

* 4 region colours x RGB (12): a global skin-colour offset (every vertex), then lips, brows
  and lash-line offsets (their soft masks), :data:`REGION_SCALE` per unit coefficient;
* a low-frequency colour field (27): the 9 monomials ``x^i y^j`` with 1 <= i + j <= 3 of the
  mean shape's frontal coordinates (normalised to [-1, 1] over the face), each x RGB,
  :data:`FIELD_SCALE` per unit coefficient. It absorbs smooth tone changes (redder cheeks,
  a darker jaw) that SH lighting cannot.

The coefficients play Deep3D's ``tex`` role (regularised with ``w_tex``); Deep3D's
reflectance loss (albedo variance over the skin region) keeps shading in the lighting.

Example::

    from methods.elam_ldl.albedo import build_albedo_model
    alb = build_albedo_model(load_ict("narrow"))
    colours = alb(coeffs)            # (B, V, 3) from (B, 39)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from methods.facemodel.model import MorphableModel

#: Mean albedo colours (RGB in [0, 1]).
SKIN = (0.60, 0.44, 0.36)
LIPS = (0.52, 0.27, 0.26)
BROWS = (0.18, 0.13, 0.10)
LASH = (0.08, 0.06, 0.05)
#: Mask strength of the lash line and brows in the mean (their texture is not solid).
LASH_STRENGTH = 0.7
BROW_STRENGTH = 0.6
#: Albedo change per unit coefficient: region colours, low-frequency fields.
REGION_SCALE = 0.1
FIELD_SCALE = 0.05
#: Neighbour-averaging iterations that soften the region masks.
SMOOTH_ITERATIONS = 2
REGIONS = ("lips", "brows", "eyelid_margin_upper")
N_REGION = 3 * (1 + len(REGIONS))
N_FIELD = 3 * 9
N_ALBEDO = N_REGION + N_FIELD


def smooth_vertex_field(values: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Averages a per-vertex field over each vertex and its mesh neighbours, repeatedly.

    Args:
        values: (V,) float field.
        faces: (F, 3) int triangles.
        iterations: number of averaging passes.

    Returns:
        (V,) float64 smoothed field.
    """
    from scipy import sparse

    n = values.shape[0]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    rows = np.concatenate([edges[:, 0], edges[:, 1], np.arange(n)])
    cols = np.concatenate([edges[:, 1], edges[:, 0], np.arange(n)])
    adj = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0  # duplicates (shared edges) count once
    deg = np.asarray(adj.sum(axis=1)).ravel()
    out = values.astype(np.float64)
    for _ in range(iterations):
        out = (adj @ out) / deg
    return out


def _fields(mean: np.ndarray) -> np.ndarray:
    """(9, V) monomials x^i y^j, 1 <= i + j <= 3, of normalised frontal coordinates."""
    xy = mean[:, :2].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    u = 2.0 * (xy - lo) / np.maximum(hi - lo, 1e-9) - 1.0
    x, y = u[:, 0], u[:, 1]
    out = [x**i * y**j for deg in (1, 2, 3) for i in range(deg, -1, -1) for j in [deg - i]]
    return np.stack(out)


class AlbedoModel(nn.Module):
    """Linear per-vertex albedo (see the module docstring); a stateless torch layer.

    Args:
        mean: (V, 3) mean albedo.
        basis: (K, V, 3) basis.
        skin: (V,) bool skin mask (the reflectance regulariser's region).
    """

    def __init__(self, mean: np.ndarray, basis: np.ndarray, skin: np.ndarray) -> None:
        super().__init__()
        self.n_coeffs = int(basis.shape[0])
        v = mean.shape[0]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("basis", torch.as_tensor(basis.reshape(self.n_coeffs, v * 3),
                                                      dtype=torch.float32))
        self.register_buffer("skin", torch.as_tensor(skin, dtype=torch.bool))

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(B, K) coefficients -> (B, V, 3) albedo."""
        if coeffs.ndim != 2 or coeffs.shape[1] != self.n_coeffs:
            raise ValueError(f"albedo coefficients must be (B, {self.n_coeffs}), "
                             f"got {tuple(coeffs.shape)}.")
        return self.mean + (coeffs @ self.basis).view(coeffs.shape[0], -1, 3)


def build_albedo_model(model: MorphableModel) -> AlbedoModel:
    """The albedo model of a face model (ICT narrow or full).

    The model needs the ``lips``, ``brows``, ``eyelid_margin_upper`` and ``skin`` regions.

    Raises:
        ValueError: a needed region mask is missing.
    """
    missing = [r for r in (*REGIONS, "skin") if r not in model.regions]
    if missing:
        raise ValueError(f"{model.name} lacks the region mask(s) {missing} the albedo needs.")
    v = model.n_vertices
    soft = {r: np.clip(smooth_vertex_field(model.regions[r].astype(np.float64), model.faces,
                                           SMOOTH_ITERATIONS), 0.0, 1.0) for r in REGIONS}
    mean = np.tile(np.asarray(SKIN), (v, 1))
    for name, colour, strength in (("lips", LIPS, 1.0), ("brows", BROWS, BROW_STRENGTH),
                                   ("eyelid_margin_upper", LASH, LASH_STRENGTH)):
        w = (strength * soft[name])[:, None]
        mean = mean * (1.0 - w) + np.asarray(colour)[None] * w
    basis = []
    masks = [np.ones(v)] + [soft[r] for r in REGIONS]
    for m in masks:
        for c in range(3):
            b = np.zeros((v, 3))
            b[:, c] = REGION_SCALE * m
            basis.append(b)
    for f in _fields(model.mean):
        f = f / max(np.abs(f).max(), 1e-9)
        for c in range(3):
            b = np.zeros((v, 3))
            b[:, c] = FIELD_SCALE * f
            basis.append(b)
    basis_arr = np.stack(basis)  # (N_ALBEDO, V, 3)
    return AlbedoModel(mean.astype(np.float32), basis_arr.astype(np.float32),
                       model.regions["skin"].astype(bool))
