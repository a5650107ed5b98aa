"""From (sample, prediction) pairs to per-sample rows, and from rows to dataset metrics.

Room: the only place that knows both a :class:`FaceSample` and a :class:`Prediction`; it
calls the pure functions in ``metrics`` and declares the dataset-level metrics (direction,
unit, what they need) in :data:`METRICS`, the registry the leaderboard reads. No sorting
direction is ever written anywhere else.

Per-sample rows are flat dicts (JSON-able), one per sample, with status/error for failed
samples; scan-to-mesh distances travel beside them as arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import metrics as M
from benchmark.registry import Registry
from benchmark.types import (
    EYE_CLOSED,
    EYE_OPEN,
    EYE_UNKNOWN,
    NOW7_FROM_68,
    FaceSample,
    Prediction,
)

#: Bump when a per-sample row changes meaning (invalidates cached scores).
# 2: eye-region S2M (GT-mesh samples), REALY regions; 3: neutral mesh for neutral scans;
# 4: per-eye eye-region columns; 5: NoW's alignment tolerance (1e-4), float64 BVH search
SCORING_VERSION = "5"

#: Thresholds (mm) of the cumulative error curves kept in run records (NoW plots 0-8 mm).
CURVE_THRESHOLDS_MM = np.round(np.linspace(0.0, 8.0, 81), 4)


@dataclasses.dataclass(frozen=True)
class ScoringParams:
    """Parameters that change per-sample scores (part of the score cache key)."""

    closed_threshold: float
    metrical: bool = False

    def digest(self) -> str:
        """Short hash of the parameters and the scoring version."""
        text = f"{SCORING_VERSION}|{self.closed_threshold:.6f}|{self.metrical}|{M.__version__}"
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def score_sample(
    sample: FaceSample, pred: Prediction, params: ScoringParams
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Scores one prediction against its sample.

    Which mesh is scored: eye state, openness, 2D/3D landmarks and the eye-region S2M read
    the expressive mesh (``pred.vertices``); scan-to-mesh reads ``pred.neutral_vertices``
    when the sample's scan is neutral (``meta["scans_neutral"]``, set from the dataset
    card: NoW) and the method gives one, else the expressive mesh. The row's
    ``s2m_mesh`` says which (``neutral`` or ``posed``).

    Returns:
        (row, distances_mm): the flat per-sample row, and the scan-to-mesh distances in mm
        (None without a scan or without a successful prediction).
    """
    row: dict[str, Any] = {
        "sample_id": sample.id,
        "subject": sample.subject,
        "status": pred.status,
        "error": pred.error or "",
        "seconds": pred.extras.get("seconds"),
        "has_distances": False,
    }
    truth_eyes = np.asarray(sample.eye_state, np.int64)
    image_true = (
        int(sample.image_state)
        if sample.image_state != EYE_UNKNOWN
        else int(M.image_state(truth_eyes[None])[0])
    )
    for e in range(2):
        row[f"eye_true_{e}"] = int(truth_eyes[e])
        row[f"openness_gt_{e}"] = float(sample.eye_openness[e])
    row["image_true"] = image_true
    if pred.status != "ok":
        return row, None
    if pred.vertices is None or pred.topology is None:
        row.update(status="error", error="prediction has status ok but no mesh")
        return row, None

    verts = np.asarray(pred.vertices, np.float32)
    lmk3d = pred.topology.landmarks(verts) if pred.topology.has_landmarks else None
    if lmk3d is not None:
        openness = M.eye_openness(lmk3d)
        states = M.eye_state_from_openness(openness, params.closed_threshold)
        for e in range(2):
            row[f"openness_pred_{e}"] = float(openness[e])
            row[f"eye_pred_{e}"] = int(states[e])
        row["image_pred"] = int(M.image_state(np.asarray(states)[None])[0])
    if pred.eye_prob_closed is not None:
        for e in range(2):
            row[f"prob_closed_{e}"] = float(pred.eye_prob_closed[e])

    if sample.landmarks2d is not None and pred.landmarks2d is not None:
        row["nme_2d"] = float(M.nme_2d(pred.landmarks2d, sample.landmarks2d))

    distances = None
    now7 = pred.landmarks7 if pred.landmarks7 is not None else (
        None if lmk3d is None else lmk3d[list(NOW7_FROM_68)])
    s2m_verts, s2m_mesh = verts, "posed"
    if (sample.meta.get("scans_neutral") and pred.neutral_vertices is not None
            and now7 is not None):
        s2m_verts, s2m_mesh = np.asarray(pred.neutral_vertices, np.float32), "neutral"
        if pred.topology.has_landmarks:  # the 7 points of the mesh that is scored
            now7 = pred.topology.landmarks(s2m_verts)[list(NOW7_FROM_68)]
    surface = None  # the posed mesh's search tree, built once for both distance metrics
    if sample.scan is not None and now7 is not None:
        s2m_surface = M.MeshSurface(s2m_verts, pred.topology.faces)
        if s2m_mesh == "posed":
            surface = s2m_surface
        res = M.now_scan_to_mesh(
            s2m_verts,
            pred.topology.faces,
            now7,
            sample.scan.points,
            sample.scan.landmarks7,
            unit="m",
            metrical=params.metrical,
            scan_cropped=sample.scan.cropped,
            surface=s2m_surface,
        )
        distances = np.asarray(res.distances_mm, np.float32)
        row.update(
            has_distances=True,
            s2m_median_mm=float(res.median_mm),
            s2m_mean_mm=float(res.mean_mm),
            s2m_std_mm=float(res.std_mm),
            s2m_n_points=int(res.n_points),
            s2m_converged=bool(res.converged),
            s2m_mesh=s2m_mesh,
        )
    if lmk3d is not None:
        row.update(_eye_region_row(sample, verts, pred.topology.faces, lmk3d, surface))
        row.update(_realy_row(sample, pred))
    return row, distances


def _eye_region_row(sample: FaceSample, verts: np.ndarray, faces: np.ndarray,
                    lmk3d: np.ndarray, surface: M.MeshSurface | None = None) -> dict[str, Any]:
    """``eye_region_s2m_mm`` where the sample has a ground-truth mesh with an ``eyes`` region.

    The truth is the GT mesh's periocular vertices (lids, lid margin, corners and the skin
    around them, ``methods/facemodel/regions.py``); see ``metrics.realy.eye_region_s2m``.
    """
    if sample.gt_vertices is None or not sample.gt_topology:
        return {}
    from methods.topology import get_topology

    topo = get_topology(sample.gt_topology)
    mask = topo.regions.get("eyes")
    if mask is None or not topo.has_landmarks:
        return {}
    gt = np.asarray(sample.gt_vertices, np.float64)
    res = M.eye_region_s2m(verts, faces, lmk3d, gt[mask], topo.landmarks(gt), unit="m",
                           surface=surface)
    row = {"eye_region_s2m_mm": res.mean_mm, "eye_region_median_mm": res.median_mm}
    # per eye (eye 0 = landmarks 36-41 = the ``eye_right`` mask), for the per-state columns
    for e, name in enumerate(("eye_right", "eye_left")):
        part = topo.regions.get(name)
        if part is not None and part[mask].any():
            row[f"eye_region_{e}_mm"] = float(res.distances_mm[part[mask]].mean())
    return row


def _realy_row(sample: FaceSample, pred: Prediction) -> dict[str, Any]:
    """``realy_<region>_mm`` where the sample carries REALY ground truth (``meta["realy"]``).

    REALY scans are neutral (``meta["scans_neutral"]``), so a prediction's neutral mesh is
    scored when it has one.
    """
    truth = sample.meta.get("realy")
    if truth is None or pred.topology is None or not pred.topology.has_landmarks:
        return {}
    neutral = sample.meta.get("scans_neutral") and pred.neutral_vertices is not None
    verts = pred.neutral_vertices if neutral else pred.vertices
    verts = np.asarray(verts, np.float64)
    res = M.realy_evaluate(verts, pred.topology.faces, pred.topology.landmarks(verts),
                           truth.keypoints, truth.regions, unit_mm=truth.metrical_scale)
    row: dict[str, Any] = {f"realy_{name}_mm": float(err) for name, err in res.errors_mm.items()}
    row["realy_seconds"] = float(sum(res.seconds.values()))
    return row


# ----------------------------------------------------------------------------------------
# Dataset-level metrics
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ScoreTable:
    """Per-sample rows of one (method, dataset) plus their distances.

    Attributes:
        rows: list of per-sample rows (all samples, failed ones included).
        distances: sample_id -> distances in mm, for samples that have them.
    """

    rows: list[dict[str, Any]]
    distances: dict[str, np.ndarray]
    _summary: tuple[np.ndarray, ...] | None = dataclasses.field(default=None, repr=False)
    _columns: dict[tuple[str, float], np.ndarray] = dataclasses.field(
        default_factory=dict, repr=False)
    _pooled: dict[bytes, Any] = dataclasses.field(default_factory=dict, repr=False)

    def column(self, name: str, idx: np.ndarray | None = None, fill: float = np.nan) -> np.ndarray:
        """A column as a float array over the rows (or the rows ``idx``); missing -> fill."""
        key = (name, fill)
        if key not in self._columns:  # built once: bootstrap replicates index it repeatedly
            self._columns[key] = np.array(
                [fill if r.get(name) is None else r[name] for r in self.rows], np.float64)
        full = self._columns[key]
        return full if idx is None else full[idx]

    def ok_index(self) -> np.ndarray:
        """Indices of successfully predicted rows."""
        return np.array([i for i, r in enumerate(self.rows) if r["status"] == "ok"], np.int64)

    def subjects(self) -> np.ndarray:
        """Subject id of every row."""
        return np.array([str(r["subject"]) for r in self.rows])

    def distance_summary(self) -> tuple[np.ndarray, ...]:
        """Per-sample count, sum, sum of squares and histogram of the distances (cached).

        Returns:
            (row -> summary index or -1, counts, sums, sums of squares, histograms).
        """
        if self._summary is None:
            rows = np.full(len(self.rows), -1, np.int64)
            stats = []
            for i, r in enumerate(self.rows):
                d = self.distances.get(r["sample_id"])
                if d is None:
                    continue
                d = np.asarray(d, np.float64)
                rows[i] = len(stats)
                bins = np.minimum((d / _HIST_BIN_MM).astype(np.int64), _HIST_BINS - 1)
                stats.append((d.size, d.sum(), (d * d).sum(),
                              np.bincount(bins, minlength=_HIST_BINS).astype(np.int32)))
            if stats:
                n, s1, s2, h = zip(*stats)
                hist = np.stack(h)
                used = int(np.flatnonzero(hist.any(axis=0)).max()) + 1
                self._summary = (rows, np.array(n, np.float64), np.array(s1), np.array(s2),
                                 np.ascontiguousarray(hist[:, :used], np.float32))
            else:
                z = np.zeros(0)
                self._summary = (rows, z, z, z, np.zeros((0, _HIST_BINS), np.int32))
        return self._summary


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A dataset-level metric: how to compute it from rows, and how to read it.

    Attributes:
        name: id with unit suffix where it has one (``s2m_median_mm``).
        title: short column title for tables.
        higher_is_better: sorting/bolding direction.
        unit: unit of the value ("mm", "" for ratios).
        description: one line, shown under the leaderboard.
        group: ``shape``, ``eyes``, ``landmarks`` or ``run``.
        needs: row columns that must each hold a usable value in some row for the metric to
            apply (labels: not unknown; numbers: finite).
        compute: (table, row indices) -> value; indices are successfully predicted rows.
        headline: shown in the main leaderboard table.
        bootstrap: whether to attach a bootstrap CI over subjects.
        fmt: format of the value in tables.
        sums: (table, row indices) -> (len(indices), K) per-row parts whose sums determine
            the metric (counts, sums, histograms); with ``of_sums`` it lets the bootstrap
            compute all replicates at once (:func:`metrics.bootstrap_ci_of_sums`). None:
            replicates call ``compute``.
        of_sums: (..., K) summed parts -> (...) values, vectorised; NaN where undefined.
            Equal to ``compute`` on the same rows, up to the order floats are added in.
    """

    name: str
    title: str
    higher_is_better: bool
    unit: str
    description: str
    group: str
    needs: tuple[str, ...]
    compute: Callable[[ScoreTable, np.ndarray], float]
    headline: bool = True
    bootstrap: bool = True
    fmt: str = "{:.3f}"
    sums: Callable[[ScoreTable, np.ndarray], np.ndarray] | None = None
    of_sums: Callable[[np.ndarray], np.ndarray] | None = None


#: Bin width (mm) of the per-sample distance histograms used by bootstrap replicates of
#: pooled medians (exact pooled medians cost a sort of every distance per replicate).
_HIST_BIN_MM = 0.01
_HIST_BINS = 2000  # up to 20 mm; larger distances fall into the last bin


def _pooled(stat: str) -> Callable[[ScoreTable, np.ndarray], float]:
    """Exact NoW pooled statistic over the selected samples' distances."""

    def compute(t: ScoreTable, idx: np.ndarray) -> float:
        key = np.asarray(idx).tobytes()  # median, mean and std of the same rows: pooled once
        if key not in t._pooled:
            arrays = [t.distances[t.rows[i]["sample_id"]] for i in idx
                      if t.rows[i]["sample_id"] in t.distances]
            t._pooled.clear()
            t._pooled[key] = M.pooled_now_stats(arrays) if arrays else None
        stats = t._pooled[key]
        return float("nan") if stats is None else float(getattr(stats, stat))

    return compute


def _pooled_parts(t: ScoreTable, idx: np.ndarray, histogram: bool = True) -> np.ndarray:
    """Per-row count, sum, sum of squares (and 0.01 mm histogram) of the distances."""
    rows, count, total, total_sq, hist = t.distance_summary()
    sel = rows[idx]
    parts = np.zeros((len(idx), 3 + (hist.shape[1] if histogram else 0)))
    has = sel >= 0
    parts[has, 0] = count[sel[has]]
    parts[has, 1] = total[sel[has]]
    parts[has, 2] = total_sq[sel[has]]
    if histogram:
        parts[has, 3:] = hist[sel[has]]
    return parts


def _pooled_moments(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
    """:func:`_pooled_parts` without the histogram (enough for the mean and std)."""
    return _pooled_parts(t, idx, histogram=False)


def _pooled_of_sums(stat: str) -> Callable[[np.ndarray], np.ndarray]:
    """The pooled statistic from summed :func:`_pooled_parts` (bootstrap replicates).

    Mean and std are exact; the median is interpolated inside a 0.01 mm bin.
    """

    @np.errstate(divide="ignore", invalid="ignore")
    def value(s: np.ndarray) -> np.ndarray:
        n = s[..., 0]
        mean = s[..., 1] / n
        if stat == "mean_mm":
            return mean
        if stat == "std_mm":
            return np.sqrt(np.maximum(s[..., 2] / n - mean * mean, 0.0))
        cum = np.cumsum(s[..., 3:], axis=-1)
        half = n / 2.0
        # the bin holding the middle distance: the first whose cumulative count reaches half
        k = np.minimum((cum < half[..., None]).sum(axis=-1), cum.shape[-1] - 1)
        at = np.take_along_axis(cum, k[..., None], axis=-1)[..., 0]
        before = np.where(
            k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[..., None], axis=-1)[..., 0], 0.0)
        frac = (half - before) / np.maximum(at - before, 1.0)
        return np.where(n > 0, (k + frac) * _HIST_BIN_MM, np.nan)

    return value


def _known(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction as ints, truth set unknown where the mesh gave no prediction."""
    true = np.where(pred == EYE_UNKNOWN, EYE_UNKNOWN, true)
    return true.astype(np.int64), pred.astype(np.int64)


def _eye_pairs(t: ScoreTable, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.concatenate([t.column(f"eye_true_{e}", idx, EYE_UNKNOWN) for e in range(2)])
    pred = np.concatenate([t.column(f"eye_pred_{e}", idx, EYE_UNKNOWN) for e in range(2)])
    return _known(true, pred)


def _winks_right(t: ScoreTable, idx: np.ndarray) -> float:
    """Share of wink images (one eye open, one closed) with *both* eyes called right."""
    true = np.stack([t.column(f"eye_true_{e}", idx, EYE_UNKNOWN) for e in range(2)], 1)
    pred = np.stack([t.column(f"eye_pred_{e}", idx, EYE_UNKNOWN) for e in range(2)], 1)
    wink = np.isin(true, (EYE_OPEN, EYE_CLOSED)).all(1) & (true[:, 0] != true[:, 1])
    if not wink.any():
        return float("nan")
    return float((pred[wink] == true[wink]).all(1).mean())


def _image_pairs(t: ScoreTable, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = t.column("image_true", idx, EYE_UNKNOWN)
    pred = t.column("image_pred", idx, EYE_UNKNOWN)
    return _known(true, pred)


def _readout_states(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
    """(n, 2) labels from the method's own closed probability (``prob_closed_e`` >= 0.5)."""
    prob = np.stack([t.column(f"prob_closed_{e}", idx) for e in range(2)], axis=1)
    return M.states_from_prob(prob)


def _readout_eye_pairs(t: ScoreTable, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.concatenate([t.column(f"eye_true_{e}", idx, EYE_UNKNOWN) for e in range(2)])
    pred = _readout_states(t, idx).T.reshape(-1)  # eye 0 rows, then eye 1 rows
    return _known(true, pred)


def _readout_image_pairs(t: ScoreTable, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = t.column("image_true", idx, EYE_UNKNOWN)
    pred = M.image_state(_readout_states(t, idx)) if len(idx) else np.zeros(0)
    return _known(true, pred)


def _binary(pairs: Callable, field: str) -> Callable[[ScoreTable, np.ndarray], float]:
    def compute(t: ScoreTable, idx: np.ndarray) -> float:
        y_true, y_pred = pairs(t, idx)
        keep = y_true != EYE_UNKNOWN
        if not keep.any():
            return float("nan")
        # Without a closed eye in the (resampled) truth, F1/precision/recall are undefined:
        # NaN keeps such bootstrap replicates out of the interval instead of counting a 0.
        if field != "accuracy" and not (y_true[keep] == EYE_CLOSED).any():
            return float("nan")
        return float(getattr(M.binary_scores(y_true, y_pred), field))

    return compute


def _confusion_parts(pairs: Callable) -> Callable[[ScoreTable, np.ndarray], np.ndarray]:
    """Per-row counts (tn, fp, fn, tp) of the (truth, prediction) pairs ``pairs`` gives.

    ``pairs`` lists every row's first label, then every row's second (per eye), or one per
    row (per image).
    """

    def sums(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
        if not len(idx):
            return np.zeros((0, 4))
        y_true, y_pred = (v.reshape(-1, len(idx)).T for v in pairs(t, idx))
        known = y_true != EYE_UNKNOWN
        closed = known & (y_true == EYE_CLOSED)
        called = known & (y_pred == EYE_CLOSED)
        tp = (closed & called).sum(axis=1)
        fn = (closed & ~called).sum(axis=1)
        fp = (~closed & called).sum(axis=1)
        tn = known.sum(axis=1) - tp - fn - fp
        return np.stack([tn, fp, fn, tp], axis=1).astype(np.float64)

    return sums


def _binary_of_counts(field: str) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`_binary`'s value from summed (tn, fp, fn, tp): the same numbers and NaN rules."""

    @np.errstate(divide="ignore", invalid="ignore")
    def value(s: np.ndarray) -> np.ndarray:
        tn, fp, fn, tp = (s[..., k] for k in range(4))
        n = tn + fp + fn + tp
        if field == "accuracy":
            return np.where(n > 0, (tp + tn) / n, np.nan)
        out = {"precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
               "recall": tp / (tp + fn),
               "f1": 2 * tp / (2 * tp + fp + fn)}[field]
        return np.where((n > 0) & (tp + fn > 0), out, np.nan)

    return value


def _binary_metric(pairs: Callable, field: str) -> dict[str, Callable]:
    """``compute``, ``sums`` and ``of_sums`` of a binary eye-state metric."""
    return {"compute": _binary(pairs, field), "sums": _confusion_parts(pairs),
            "of_sums": _binary_of_counts(field)}


def _winks_parts(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
    """Per row: (is a wink image, is one with both eyes right), for :func:`_winks_right`."""
    true = np.stack([t.column(f"eye_true_{e}", idx, EYE_UNKNOWN) for e in range(2)], 1)
    pred = np.stack([t.column(f"eye_pred_{e}", idx, EYE_UNKNOWN) for e in range(2)], 1)
    wink = np.isin(true, (EYE_OPEN, EYE_CLOSED)).all(1) & (true[:, 0] != true[:, 1])
    return np.stack([wink, wink & (pred == true).all(1)], axis=1).astype(np.float64)


@np.errstate(divide="ignore", invalid="ignore")
def _ratio(s: np.ndarray) -> np.ndarray:
    """Sum of the second part over sum of the first (a count); NaN without any."""
    return np.where(s[..., 0] > 0, s[..., 1] / s[..., 0], np.nan)


def _mean_parts(values: Callable[[ScoreTable, np.ndarray], np.ndarray]
                ) -> Callable[[ScoreTable, np.ndarray], np.ndarray]:
    """Per row: (number of finite values, their sum), ``values`` giving (n, k) per row."""

    def sums(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
        v = values(t, idx)
        ok = np.isfinite(v)
        return np.stack([ok.sum(axis=1), np.where(ok, v, 0.0).sum(axis=1)], axis=1)

    return sums


def _openness_errors(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
    return np.abs(np.stack([t.column(f"openness_pred_{e}", idx) for e in range(2)], 1)
                  - np.stack([t.column(f"openness_gt_{e}", idx) for e in range(2)], 1))


def _openness_mae(t: ScoreTable, idx: np.ndarray) -> float:
    pred = np.concatenate([t.column(f"openness_pred_{e}", idx) for e in range(2)])
    gt = np.concatenate([t.column(f"openness_gt_{e}", idx) for e in range(2)])
    keep = np.isfinite(gt) & np.isfinite(pred)
    return float(np.abs(pred[keep] - gt[keep]).mean()) if keep.any() else float("nan")


def _mean_of(column: str) -> dict[str, Callable]:
    """``compute``, ``sums`` and ``of_sums`` of the mean of a column's finite values."""

    def compute(t: ScoreTable, idx: np.ndarray) -> float:
        vals = t.column(column, idx)
        vals = vals[np.isfinite(vals)]
        return float(vals.mean()) if vals.size else float("nan")

    return {"compute": compute, "of_sums": _ratio,
            "sums": _mean_parts(lambda t, idx: t.column(column, idx)[:, None])}


def _median_seconds(t: ScoreTable, idx: np.ndarray) -> float:
    vals = t.column("seconds", np.arange(len(t.rows)))
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if vals.size else float("nan")


def _coverage(t: ScoreTable, idx: np.ndarray) -> float:
    return len(idx) / max(len(t.rows), 1)


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Adds a metric to :data:`METRICS`."""
    METRICS.register(spec.name, spec)
    return spec


_EYES = ("eye_true_0", "eye_pred_0")
_READOUT = ("eye_true_0", "prob_closed_0")
_IMAGES_READOUT = ("image_true", "prob_closed_0")
_IMAGES = ("image_true", "image_pred")
_SCAN = ("s2m_median_mm",)

for _spec in (
    MetricSpec("eye_f1", "eye F1", True, "", "F1 of 'closed' per eye (half-closed eyes excluded)",
               "eyes", _EYES, **_binary_metric(_eye_pairs, "f1")),
    MetricSpec("eye_f1_readout", "eye F1 (own readout)", True, "",
               "F1 of 'closed' per eye from the method's own closed probability at 0.5 "
               "(MediaPipe's eyeBlink blendshapes, ELAM's detector), not from its mesh",
               "eyes", _READOUT, **_binary_metric(_readout_eye_pairs, "f1")),
    MetricSpec("eye_acc", "eye acc", True, "", "accuracy of open/closed per eye",
               "eyes", _EYES, **_binary_metric(_eye_pairs, "accuracy")),
    MetricSpec("eye_precision", "eye prec", True, "", "precision of 'closed' per eye",
               "eyes", _EYES, **_binary_metric(_eye_pairs, "precision"), headline=False),
    MetricSpec("eye_recall", "eye rec", True, "", "recall of 'closed' per eye",
               "eyes", _EYES, **_binary_metric(_eye_pairs, "recall"), headline=False),
    MetricSpec("image_f1", "image F1", True, "", "F1 of 'both eyes closed' per image",
               "eyes", _IMAGES, **_binary_metric(_image_pairs, "f1")),
    MetricSpec("image_acc", "image acc", True, "", "accuracy of 'both eyes closed' per image",
               "eyes", _IMAGES, **_binary_metric(_image_pairs, "accuracy"), headline=False),
    MetricSpec("wink_acc", "winks right", True, "",
               "share of wink images (one eye open, one closed) with both eyes right",
               "eyes", _EYES, _winks_right, sums=_winks_parts, of_sums=_ratio),
    MetricSpec("eye_acc_readout", "eye acc (own readout)", True, "",
               "accuracy of open/closed per eye from the method's own closed probability at 0.5",
               "eyes", _READOUT, **_binary_metric(_readout_eye_pairs, "accuracy"), headline=False),
    MetricSpec("eye_precision_readout", "eye prec (own readout)", True, "",
               "precision of 'closed' per eye from the method's own closed probability at 0.5",
               "eyes", _READOUT, **_binary_metric(_readout_eye_pairs, "precision"), headline=False),
    MetricSpec("eye_recall_readout", "eye rec (own readout)", True, "",
               "recall of 'closed' per eye from the method's own closed probability at 0.5",
               "eyes", _READOUT, **_binary_metric(_readout_eye_pairs, "recall"), headline=False),
    MetricSpec("image_f1_readout", "image F1 (own readout)", True, "",
               "F1 of 'both eyes closed' per image from the method's own closed probability "
               "at 0.5", "eyes", _IMAGES_READOUT, **_binary_metric(_readout_image_pairs, "f1"),
               headline=False),
    MetricSpec("image_acc_readout", "image acc (own readout)", True, "",
               "accuracy of 'both eyes closed' per image from the method's own closed "
               "probability at 0.5", "eyes", _IMAGES_READOUT,
               **_binary_metric(_readout_image_pairs, "accuracy"), headline=False),
    MetricSpec("openness_mae", "openness MAE", False, "",
               "mean |openness - GT openness| per eye (eyelid gap / eye width), all eye states",
               "eyes", ("openness_gt_0", "openness_pred_0"), _openness_mae,
               sums=_mean_parts(_openness_errors), of_sums=_ratio),
    MetricSpec("s2m_median_mm", "S2M median", False, "mm",
               "NoW scan-to-mesh distance, median over pooled scan points",
               "shape", _SCAN, _pooled("median_mm"), fmt="{:.2f}",
               sums=_pooled_parts, of_sums=_pooled_of_sums("median_mm")),
    MetricSpec("s2m_mean_mm", "S2M mean", False, "mm",
               "NoW scan-to-mesh distance, mean over pooled scan points",
               "shape", _SCAN, _pooled("mean_mm"), fmt="{:.2f}",
               sums=_pooled_moments, of_sums=_pooled_of_sums("mean_mm")),
    MetricSpec("s2m_std_mm", "S2M std", False, "mm",
               "NoW scan-to-mesh distance, std over pooled scan points",
               "shape", _SCAN, _pooled("std_mm"), fmt="{:.2f}",
               sums=_pooled_moments, of_sums=_pooled_of_sums("std_mm")),
    MetricSpec("nme_2d", "NME", False, "", "2D landmark error / outer-eye-corner distance",
               "landmarks", ("nme_2d",), **_mean_of("nme_2d"), fmt="{:.4f}"),
    MetricSpec("coverage", "coverage", True, "", "samples scored / samples",
               "run", ("status",), _coverage, bootstrap=False, fmt="{:.0%}"),
    MetricSpec("sec_per_image", "s/img", False, "s", "median wall time per image of the method",
               "run", ("seconds",), _median_seconds, headline=False, bootstrap=False,
               fmt="{:.2f}"),
):
    register_metric(_spec)


def _realy_region(region: str, stat: str) -> Callable[[ScoreTable, np.ndarray], float]:
    """REALY's per-region statistic over the samples (std with ddof 1, as REALY)."""

    def compute(t: ScoreTable, idx: np.ndarray) -> float:
        vals = t.column(f"realy_{region}_mm", idx)
        vals = vals[np.isfinite(vals)]
        if not vals.size or (stat == "std" and vals.size < 2):
            return float("nan")
        if stat == "mean":
            return float(vals.mean())
        return float(np.median(vals)) if stat == "median" else float(vals.std(ddof=1))

    return compute


def _eye_region_by_state(state: int) -> dict[str, Callable]:
    """``compute``, ``sums``, ``of_sums`` of the mean eye-region error over ``state`` eyes.

    The mean runs over the eyes whose ground-truth state is ``state``, each with its own half
    of the region.
    """

    def values(t: ScoreTable, idx: np.ndarray) -> np.ndarray:
        vals = np.stack([t.column(f"eye_region_{e}_mm", idx) for e in range(2)], 1)
        true = np.stack([t.column(f"eye_true_{e}", idx, EYE_UNKNOWN) for e in range(2)], 1)
        return np.where(true == state, vals, np.nan)

    def compute(t: ScoreTable, idx: np.ndarray) -> float:
        vals = values(t, idx).T.reshape(-1)  # eye 0 of every row, then eye 1
        vals = vals[np.isfinite(vals)]
        return float(vals.mean()) if vals.size else float("nan")

    return {"compute": compute, "sums": _mean_parts(values), "of_sums": _ratio}


def _realy_all(t: ScoreTable, idx: np.ndarray) -> float:
    """REALY's ``all``: the mean of the four regional means."""
    return float(np.mean([_realy_region(r, "mean")(t, idx) for r in M.REALY_REGIONS]))


for _spec in (
    MetricSpec("eye_region_s2m_mm", "eye-region S2M", False, "mm",
               "mean distance of the GT periocular surface points (lids, corners) to the "
               "prediction after REALY-style region alignment (gICP + rICP on the eye region)",
               "shape", ("eye_region_s2m_mm",), **_mean_of("eye_region_s2m_mm"), fmt="{:.2f}"),
    MetricSpec("eye_region_closed_mm", "eye-region S2M, closed eyes", False, "mm",
               "the eye-region error of each closed eye (its own half of the region), mean "
               "over closed eyes: large when a method leaves closed eyes open", "shape",
               ("eye_region_0_mm", "eye_true_0"), **_eye_region_by_state(EYE_CLOSED),
               fmt="{:.2f}"),
    MetricSpec("eye_region_open_mm", "eye-region S2M, open eyes", False, "mm",
               "the eye-region error of each open eye, mean over open eyes", "shape",
               ("eye_region_0_mm", "eye_true_0"), **_eye_region_by_state(EYE_OPEN),
               headline=False, fmt="{:.2f}"),
    MetricSpec("realy_all_mm", "REALY all", False, "mm",
               "REALY: mean of the four regional mean errors", "shape",
               tuple(f"realy_{r}_mm" for r in M.REALY_REGIONS), _realy_all, fmt="{:.3f}"),
    *(MetricSpec(f"realy_{r}_mm", f"REALY {r}", False, "mm",
                 f"REALY {r} error (mean over images of the per-image mean distance after "
                 "region alignment and bICP)", "shape", (f"realy_{r}_mm",),
                 _realy_region(r, "mean"), fmt="{:.3f}") for r in M.REALY_REGIONS),
    *(MetricSpec(f"realy_{r}_{stat}_mm", f"REALY {r} {stat}", False, "mm",
                 f"REALY {r} error, {stat} over images" + (" (ddof 1)" if stat == "std" else ""),
                 "shape", (f"realy_{r}_mm",), _realy_region(r, stat), headline=False,
                 bootstrap=False, fmt="{:.3f}")
      for r in M.REALY_REGIONS for stat in ("median", "std")),
):
    register_metric(_spec)


def applicable(spec: MetricSpec, table: ScoreTable) -> bool:
    """Whether the metric applies: each needed column has a usable value in some row."""

    def usable(column: str) -> bool:
        for r in table.rows:
            v = r.get(column)
            if v is None:
                continue
            if column.startswith(("eye_", "image_")) and v == EYE_UNKNOWN:
                continue
            if isinstance(v, float) and not np.isfinite(v):
                continue
            return True
        return False

    return all(usable(c) for c in spec.needs)


@dataclasses.dataclass
class MetricValue:
    """A dataset-level value with its bootstrap CI (NaN bounds when not bootstrapped)."""

    value: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    def as_dict(self) -> dict[str, float | None]:
        """JSON form (NaN -> None)."""
        return {k: (None if not np.isfinite(v) else float(v)) for k, v in dataclasses.asdict(
            self).items()}


def aggregate(
    table: ScoreTable, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
    names: Sequence[str] | None = None,
) -> dict[str, MetricValue]:
    """Dataset-level metrics with bootstrap CIs over subjects (failed samples excluded)."""
    idx = table.ok_index()
    subjects = table.subjects()[idx] if len(idx) else np.array([], dtype=str)
    out: dict[str, MetricValue] = {}
    for name in names or METRICS.names():
        spec = METRICS.get(name)
        if not applicable(spec, table):
            continue
        value = spec.compute(table, idx)
        if not (spec.bootstrap and n_boot > 0 and len(idx) > 1 and np.isfinite(value)):
            out[name] = MetricValue(value)
            continue
        if spec.sums is not None and spec.of_sums is not None:  # every replicate at once
            ci = M.bootstrap_ci_of_sums(spec.sums(table, idx), subjects, spec.of_sums,
                                        n_boot=n_boot, alpha=alpha, seed=seed)
        else:
            ci = M.bootstrap_ci(lambda sel, spec=spec: spec.compute(table, idx[sel]),
                                subjects, n_boot=n_boot, alpha=alpha, seed=seed)
        out[name] = MetricValue(value, float(ci.low), float(ci.high))
    return out


def curves(table: ScoreTable) -> dict[str, list[float]]:
    """Cumulative error curves on :data:`CURVE_THRESHOLDS_MM` (per point and per sample)."""
    idx = table.ok_index()
    arrays = [table.distances[table.rows[i]["sample_id"]] for i in idx
              if table.rows[i]["sample_id"] in table.distances]
    if not arrays:
        return {}
    pooled = np.concatenate(arrays)
    per_sample = np.array([np.median(a) for a in arrays])
    return {
        "thresholds_mm": CURVE_THRESHOLDS_MM.tolist(),
        "per_point": M.cumulative_curve(pooled, CURVE_THRESHOLDS_MM).fraction.tolist(),
        "per_sample_median": M.cumulative_curve(per_sample, CURVE_THRESHOLDS_MM).fraction.tolist(),
    }


def confusion(table: ScoreTable) -> dict[str, list[list[int]]]:
    """Eye-state confusion matrices (rows truth open/closed, columns predicted)."""
    idx = table.ok_index()
    out = {}
    for key, pairs in (("per_eye", _eye_pairs), ("per_image", _image_pairs)):
        y_true, y_pred = pairs(table, idx)
        keep = y_true != EYE_UNKNOWN
        if keep.any():
            out[key] = np.asarray(M.confusion_matrix(y_true[keep], y_pred[keep])).tolist()
    return out
