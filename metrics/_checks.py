"""Input contracts shared by the metric functions (one-sentence ``ValueError``s).

Room: private validation helpers of ``metrics``; nothing here computes a metric.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

#: Length of one unit in metres, for the units the metrics accept.
UNIT_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}
#: Length of one unit in millimetres.
UNIT_TO_MM = {k: v * 1000.0 for k, v in UNIT_TO_M.items()}

# Plausible bounding-box diagonals, in metres, of what a face metric receives. A face mask
# is ~0.2 m across, a head scan with shoulders under ~1 m; the 7 NoW landmarks span ~0.1 m.
# The ranges are wide on purpose: they only catch the factor-100/1000 unit slips (mm read
# as m and the reverse), never a face of unusual size.
_MESH_EXTENT_M = (0.03, 3.0)
_LANDMARK_EXTENT_M = (0.01, 1.0)


def as_points(x: object, name: str, dim: int = 3, allow_empty: bool = False) -> np.ndarray:
    """(N, dim) float64 copy of ``x``; raises on wrong shape, NaN/inf or emptiness."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must be an (N, {dim}) array, got shape {arr.shape}.")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 points).")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf values ({bad} of {arr.shape[0]} rows).")
    return arr


def as_faces(faces: object, n_vertices: int, name: str = "faces") -> np.ndarray:
    """(F, 3) int64 triangles checked against ``n_vertices``."""
    arr = np.asarray(faces)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must be an (F, 3) array of triangles, got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: a surface needs at least one triangle.")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{name} must hold integer vertex indices, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_vertices:
        raise ValueError(
            f"{name} index vertices {lo}..{hi} but the mesh has {n_vertices} vertices "
            f"(valid 0..{n_vertices - 1})."
        )
    return arr


def check_unit(points: np.ndarray, unit: str, name: str, kind: str = "mesh") -> None:
    """Raises ``ValueError`` when ``points`` are not face-sized in ``unit``.

    Args:
        points: (N, 3) coordinates in ``unit``.
        unit: ``m``, ``cm`` or ``mm``.
        name: what the points are, for the message.
        kind: ``mesh`` (mesh or scan vertices) or ``landmarks`` (the 7 NoW points).
    """
    if unit not in UNIT_TO_M:
        raise ValueError(f"unit must be one of {sorted(UNIT_TO_M)}, got {unit!r}.")
    if points.shape[0] < 2:
        return
    extent = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    lo, hi = _LANDMARK_EXTENT_M if kind == "landmarks" else _MESH_EXTENT_M
    extent_m = extent * UNIT_TO_M[unit]
    if lo <= extent_m <= hi:
        return
    if extent == 0.0:
        raise ValueError(f"{name}: all points coincide, so they cannot describe a face.")
    centre = math.sqrt(lo * hi)
    guess = min(UNIT_TO_M, key=lambda u: abs(math.log(extent * UNIT_TO_M[u] / centre)))
    looks = (
        f"it looks like {guess}"
        if lo <= extent * UNIT_TO_M[guess] <= hi
        else "no unit among m/cm/mm makes it face-sized"
    )
    in_m = "" if unit == "m" else f" = {extent_m:.4g} m"
    raise ValueError(
        f"{name}: bounding-box diagonal {extent:.4g} {unit}{in_m} is not face-sized; "
        f"{looks} (state the right unit or convert the data)."
    )
