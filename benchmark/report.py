"""Report: plots + ``LEADERBOARD.md`` from the stored run records (``leaderboard`` command).

Room: gathers records, draws every plot under ``<output>/plots/<dataset>__<split>/`` and
writes the leaderboard that links them. Curves and confusion matrices need only the
records; the qualitative grids also need the prediction cache and the dataset, and are
skipped (with a log line) when either is gone.

Qualitative grids of datasets whose card says ``redistributable=False`` (research-only
photos) are derived from those photos, so they are drawn only where the output folder is not
a tracked part of a git work tree (outside any repository, or git-ignored): they can never
end up committed with ``results/``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import subprocess
from pathlib import Path

import numpy as np

from benchmark import plots
from benchmark.cache import CorruptCacheFile, PredictionCache, atomic_write_bytes
from benchmark.config import default_cache_dir
from benchmark.leaderboard import sections, write_leaderboard
from benchmark.results import RunRecord, load_records
from benchmark.types import EYE_CLOSED, EYE_OPEN, NOW7_FROM_68

logger = logging.getLogger(__name__)

#: Samples shown in a qualitative grid: the first of each eye-state pattern.
QUALITATIVE_PATTERNS = (
    ("both open", (EYE_OPEN, EYE_OPEN)),
    ("both closed", (EYE_CLOSED, EYE_CLOSED)),
    ("wink", (EYE_CLOSED, EYE_OPEN)),
    ("wink", (EYE_OPEN, EYE_CLOSED)),
    ("half", (-1, -1)),
)


def build_report(output_dir: Path, cache_root: Path | None = None,
                 qualitative: bool = True, draw: bool = True) -> Path:
    """Draws the plots and writes LEADERBOARD.md; returns its path."""
    output_dir = Path(output_dir)
    records = load_records(output_dir)
    plot_paths: dict[str, list[Path]] = {}
    if draw:
        for key, recs in sections(records).items():
            folder = output_dir / "plots" / key
            made = [
                plots.cumulative_error_plot(recs, folder / "cumulative_error.png"),
                plots.eye_confusion_plot(recs, folder / "eye_confusion.png"),
            ]
            if qualitative:
                made += _qualitative(recs, folder, cache_root or default_cache_dir())
            plot_paths[key] = [p for p in made if p is not None]
    return write_leaderboard(output_dir, records, plot_paths)


def in_tracked_area(path: Path) -> bool:
    """Whether ``path`` lies in a git work tree and is not git-ignored (could be committed).

    ``path`` need not exist. False when git is missing or the folder is in no repository.
    """
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_file():
        probe = probe.parent
    try:
        top = subprocess.run(["git", "-C", str(probe), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0:
            return False
        ignored = subprocess.run(["git", "-C", top.stdout.strip(), "check-ignore", "-q",
                                  str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return ignored.returncode != 0


def _pick_samples(dataset, ids: list[str], n_max: int = 4) -> list[str]:
    chosen: list[str] = []
    wanted = list(QUALITATIVE_PATTERNS)
    for sid in ids:
        if not wanted or len(chosen) >= n_max:
            break
        s = dataset.load_sample(sid)
        pattern = tuple(int(x) for x in s.eye_state)
        for item in wanted:
            if item[1] == pattern:
                chosen.append(sid)
                wanted = [w for w in wanted if w[0] != item[0]]
                break
    return chosen or ids[:n_max]


def _qualitative(records: list[RunRecord], folder: Path, cache_root: Path) -> list[Path | None]:
    from benchmark.datasets import DATASETS

    ok = [r for r in records if r.status == "ok" and r.n_ok]
    if not ok:
        return []
    first = ok[0]
    if not first.dataset_card.get("redistributable") and in_tracked_area(folder):
        logger.info("qualitative plots for %s not drawn: %s is research-only data and %s is "
                    "tracked by git (use an untracked --output-dir)", first.key, first.dataset,
                    folder)
        return []
    try:
        root = (first.dataset_instance or {}).get("root")
        dataset = (DATASETS.get(first.dataset)(split=first.split, root=root) if root
                   else DATASETS.get(first.dataset)(split=first.split))
        if not dataset.availability().ok or dataset.revision() != first.dataset_revision:
            logger.info("qualitative plots for %s skipped: dataset unavailable or changed",
                        first.key)
            return []
        ids = [r["sample_id"] for r in (first.samples_frame(folder.parents[1]).to_dict(
            "records")) if r["status"] == "ok"]
    except Exception as exc:  # plots must never break a report
        logger.info("qualitative plots for %s skipped: %s", first.key, exc)
        return []
    chosen = _pick_samples(dataset, ids)
    samples = [dataset.load_sample(s) for s in chosen]
    stamps_path = folder / "qualitative_stamps.json"
    try:
        stamps = json.loads(stamps_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    out: list[Path | None] = []
    todo = []
    for rec in ok:
        png = folder / f"qualitative_{rec.method}.png"
        stamp = (f"{plots.QUALITATIVE_VERSION}-{rec.method_revision}-{rec.dataset_revision}-"
                 f"{','.join(chosen)}")
        if png.is_file() and stamps.get(rec.method) == stamp:
            out.append(png)  # same predictions of the same samples: the figure is current
        else:
            todo.append((rec, png, stamp))

    def inputs(rec: RunRecord) -> tuple[list, list]:
        slot = (cache_root / "predictions" / rec.dataset / rec.split / rec.method
                / f"{rec.method_revision}-{rec.dataset_revision}")
        cache = PredictionCache(slot)
        preds = [cache.get(s.id) if cache.has(s.id) else None for s in samples]
        return preds, [_vertex_errors(s, p) for s, p in zip(samples, preds)]

    # The next figures' alignments (compiled search, numpy: mostly outside the GIL) run in a
    # thread while this one draws the current figure.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(inputs, rec) for rec, _, _ in todo]
        for (rec, png, stamp), fut in zip(todo, pending):
            try:
                preds, errs = fut.result()
            except (CorruptCacheFile, ValueError) as exc:
                logger.info("qualitative plot for %s skipped: %s", rec.method, exc)
                continue
            if not any(p is not None for p in preds):
                continue
            out.append(plots.qualitative_plot(
                samples, preds, errs, png,
                title=f"{rec.method} on {rec.dataset} / {rec.split}",
                show_images=bool(rec.dataset_card.get("redistributable")),
            ))
            stamps[rec.method] = stamp
    if out:
        atomic_write_bytes(stamps_path, json.dumps(stamps, indent=1, sort_keys=True).encode())
    return out


def _vertex_errors(sample, pred) -> tuple[np.ndarray, np.ndarray] | None:
    """Aligned vertices and a per-vertex error map (mm), or None without scan/prediction.

    A vertex's error is the mean NoW error of the scored scan points within 6 mm of it (up
    to 8); NaN where there is none (outside the crop).
    """
    if pred is None or pred.status != "ok" or sample.scan is None:
        return None
    from scipy.spatial import cKDTree

    import metrics as M

    lmk = pred.topology.landmarks(pred.vertices)
    res = M.now_scan_to_mesh(pred.vertices, pred.topology.faces, lmk[list(NOW7_FROM_68)],
                             sample.scan.points, sample.scan.landmarks7, unit="m",
                             scan_cropped=sample.scan.cropped)
    aligned = np.asarray(res.aligned_vertices)
    scored = np.asarray(sample.scan.points)[np.asarray(res.crop_mask)]
    dist, idx = cKDTree(scored).query(aligned, k=8, distance_upper_bound=0.006)
    found = np.isfinite(dist)
    errs = np.where(found, np.asarray(res.distances_mm)[np.minimum(idx, len(scored) - 1)], 0.0)
    count = found.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_vertex = np.where(count > 0, errs.sum(axis=1) / np.maximum(count, 1), np.nan)
    return aligned, per_vertex
