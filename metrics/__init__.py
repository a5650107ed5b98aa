"""Metrics of the suite: pure functions, numpy arrays in, NamedTuples out.

Room: the numbers every method is held to (DESIGN.md section 5). Nothing here knows about
datasets, methods or files; the runner (and ``benchmark.score_mesh`` for one mesh) feed it
arrays. Geometry goes in metres by default (``unit=`` says otherwise); reported distances
are millimetres and carry ``_mm`` in their names. Guide: ``docs/metrics.md``.

Modules:
    alignment: ``umeyama``, ``refine_alignment``, ``SimilarityTransform``.
    distance: ``point_to_mesh_distance``, ``MeshSurface`` (bvh / open3d / brute-force backends).
    now: the NoW protocol, ``now_scan_to_mesh``, ``now_crop_mask``, ``pooled_now_stats``.
    curves: ``cumulative_curve``, ``pooled_curve``, ``curve_auc``, ``NOW_THRESHOLDS_MM``.
    eyes: ``eye_openness``, ``eye_state_from_openness``, ``binary_scores``, ...
    landmarks: ``nme_2d``.
    bootstrap: ``bootstrap_ci`` over subjects (``bootstrap_ci_of_sums`` for statistics of sums).
    realy: the REALY region-wise protocol, ``realy_evaluate``, ``realy_report``, and our
        periocular ``eye_region_s2m``.
    probes: shortcut checks, ``closed_call_rates``, ``per_source_scores``, ``common_ids``.

Example (a notebook)::

    import numpy as np
    from metrics import now_scan_to_mesh, pooled_now_stats, pooled_curve, curve_auc
    res = now_scan_to_mesh(verts, faces, lmk7, scan_points, scan_lmk7, unit="m")
    res.median_mm, res.mean_mm, res.std_mm, res.converged
    stats = pooled_now_stats([r.distances_mm for r in results])
    auc = curve_auc(pooled_curve([r.distances_mm for r in results]), limit=4.0)
"""

from __future__ import annotations

#: Version of the metric definitions; bump it when a definition or default changes, so
#: cached scores keyed on it are recomputed.
__version__ = "1.0.0"

from metrics._checks import UNIT_TO_M, UNIT_TO_MM, check_unit
from metrics.alignment import RefineResult, SimilarityTransform, refine_alignment, umeyama
from metrics.bootstrap import ConfidenceInterval, bootstrap_ci, bootstrap_ci_of_sums
from metrics.curves import (
    NOW_THRESHOLDS_MM,
    CumulativeCurve,
    cumulative_curve,
    curve_auc,
    pooled_curve,
)
from metrics.distance import (
    MeshSurface,
    SurfaceDistance,
    closest_point_on_triangle,
    point_to_mesh_distance,
)
from metrics.eyes import (
    DEFAULT_CLOSED_THRESHOLD,
    BinaryScores,
    EyeStateScores,
    OpennessError,
    binary_scores,
    confusion_matrix,
    eye_openness,
    eye_state_from_openness,
    eye_state_scores,
    image_state,
    openness_error,
    openness_from_points,
)
from metrics.landmarks import nme_2d
from metrics.now import (
    NOW_CENTRE_RATIO,
    NOW_RADIUS_FACTOR,
    NOW_TOL,
    NowResult,
    NowStats,
    now_crop_centre_radius,
    now_crop_mask,
    now_scan_to_mesh,
    pooled_now_stats,
)
from metrics.probes import (
    Rate,
    SourceScores,
    closed_call_rates,
    common_ids,
    per_source_scores,
    rate_gap_pp,
    states_from_prob,
)
from metrics.realy import (
    EYE_REGION,
    REALY_REGIONS,
    EyeRegionResult,
    RealyParams,
    RealyReport,
    RealyResult,
    eye_region_s2m,
    realy_evaluate,
    realy_report,
)

__all__ = [
    "__version__",
    "EYE_REGION",
    "REALY_REGIONS",
    "EyeRegionResult",
    "RealyParams",
    "RealyReport",
    "RealyResult",
    "eye_region_s2m",
    "realy_evaluate",
    "realy_report",
    "DEFAULT_CLOSED_THRESHOLD",
    "NOW_CENTRE_RATIO",
    "NOW_RADIUS_FACTOR",
    "NOW_TOL",
    "NOW_THRESHOLDS_MM",
    "UNIT_TO_M",
    "UNIT_TO_MM",
    "BinaryScores",
    "ConfidenceInterval",
    "CumulativeCurve",
    "EyeStateScores",
    "MeshSurface",
    "NowResult",
    "NowStats",
    "OpennessError",
    "Rate",
    "RefineResult",
    "SimilarityTransform",
    "SourceScores",
    "SurfaceDistance",
    "binary_scores",
    "bootstrap_ci",
    "bootstrap_ci_of_sums",
    "check_unit",
    "closed_call_rates",
    "common_ids",
    "closest_point_on_triangle",
    "confusion_matrix",
    "cumulative_curve",
    "curve_auc",
    "eye_openness",
    "eye_state_from_openness",
    "eye_state_scores",
    "image_state",
    "nme_2d",
    "now_crop_centre_radius",
    "now_crop_mask",
    "now_scan_to_mesh",
    "openness_error",
    "openness_from_points",
    "per_source_scores",
    "point_to_mesh_distance",
    "pooled_curve",
    "pooled_now_stats",
    "rate_gap_pp",
    "refine_alignment",
    "states_from_prob",
    "umeyama",
]
