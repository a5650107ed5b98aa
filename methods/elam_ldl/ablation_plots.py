"""Figures of the ELAM/LDL ablation (the paper's Figure 3, our way).

Room: drawing only, from the numbers and cached predictions :mod:`methods.elam_ldl.ablate`
gathers. Photos are drawn only from the synthetic test split; the research-only real pool
never appears in a figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Eye categories shown in the qualitative grid, in row order.
GRID_CATEGORIES = ("closed", "wink_left", "wink_right", "half", "open")
_TITLES = {"eye_f1": "eye F1 (per eye)", "image_f1": "image F1 (both eyes closed)",
           "s2m_median_mm": "S2M median (mm)"}
_COLOURS = {"deep3d-recipe": "#8c8c8c", "elam": "#4c72b0", "ldl": "#dd8452",
            "elam-ldl": "#55a868"}


def bar_chart(entry: dict[str, Any], title: str, path: Path) -> Path | None:
    """Eye F1, image F1 and (where present) S2M median per variant, with 95 % CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("eye_f1", "image_f1", "s2m_median_mm")
               if any(m in v for v in entry["metrics"].values())]
    if not metrics:
        return None
    variants = list(entry["metrics"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), dpi=110,
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        vals, lo, hi = [], [], []
        for v in variants:
            e = entry["metrics"][v].get(m) or {}
            val = e.get("value")
            vals.append(np.nan if val is None else val)
            lo.append(np.nan if e.get("ci_low") is None else val - e["ci_low"])
            hi.append(np.nan if e.get("ci_high") is None else e["ci_high"] - val)
        x = np.arange(len(variants))
        ax.bar(x, vals, color=[_COLOURS.get(v, "#999999") for v in variants],
               yerr=np.nan_to_num(np.array([lo, hi])), capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=7)
        ax.set_title(_TITLES[m], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if not m.startswith("s2m"):
            ax.set_ylim(0, 1.05)
    fig.suptitle(f"ELAM/LDL ablation — {title} (95 % CI)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def qualitative_grid(records: dict[str, Any], cache_root: Path, path: Path) -> Path | None:
    """Rows: synthetic test photos (closed, winks, half, open); columns: photo + 4 variants.

    Each variant's cached prediction is drawn over the photo (shaded mesh through
    ``vertices_image``), zoomed on the eyes, titled with the mesh's openness per eye.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.cache import PredictionCache
    from benchmark.datasets import DATASETS
    from benchmark.plots import _pixels_per_metre, _shaded_mesh
    from metrics import eye_openness

    ok = {v: r for v, r in records.items() if r.status == "ok" and r.n_ok}
    if not ok:
        return None
    first = next(iter(ok.values()))
    if not first.dataset_card.get("redistributable"):
        return None
    dataset = DATASETS.get(first.dataset)(split=first.split)
    common = None
    for r in ok.values():
        ids = {row["sample_id"] for row in (r.rows or []) if row["status"] == "ok"}
        common = ids if common is None else common & ids
    chosen: list[Any] = []
    for cat in GRID_CATEGORIES:
        for sid in sorted(common or []):
            s = dataset.load_sample(sid)
            if s.meta.get("eye_category") == cat:
                chosen.append(s)
                break
    if not chosen:
        return None
    caches = {v: PredictionCache(cache_root / "predictions" / r.dataset / r.split / v
                                 / f"{r.method_revision}-{r.dataset_revision}")
              for v, r in ok.items()}
    cols = 1 + len(ok)
    fig, axes = plt.subplots(len(chosen), cols, figsize=(2.0 * cols, 1.55 * len(chosen)),
                             dpi=120, squeeze=False)
    for i, s in enumerate(chosen):
        img = s.load_image()
        lm = s.landmarks2d
        box = _eye_box(lm, img.shape)
        truth = ", ".join(f"{o:.2f}" for o in s.eye_openness)
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"{s.meta.get('eye_category')}\nGT openness {truth}", fontsize=6)
        for j, (v, cache) in enumerate(caches.items(), start=1):
            ax = axes[i, j]
            ax.imshow(img)
            p = cache.get(s.id) if cache.has(s.id) else None
            if p is not None and p.status == "ok" and p.vertices_image is not None:
                vi = np.asarray(p.vertices_image)
                scale = _pixels_per_metre(vi[:, :2], np.asarray(p.vertices))
                _shaded_mesh(ax, vi[:, :2], vi[:, 2], p.topology.faces, alpha=0.75,
                             z_scale=scale)
                op = eye_openness(p.topology.landmarks(np.asarray(p.vertices)))
                ax.set_title(f"{v}\nopenness {op[0]:.2f}, {op[1]:.2f}", fontsize=6)
            else:
                ax.set_title(f"{v}\n(no prediction)", fontsize=6)
        for ax in axes[i]:
            ax.set_xlim(box[0], box[2])
            ax.set_ylim(box[3], box[1])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("ELAM/LDL ablation on synthetic test photos (openness per eye: subject's "
                 "right, left; closed < 0.18)", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _eye_box(lm: np.ndarray | None, shape: tuple[int, ...]) -> tuple[float, float, float,
                                                                     float]:
    """(x0, y0, x1, y1) around the eyes and nose (whole image without landmarks)."""
    h, w = shape[:2]
    if lm is None:
        return 0.0, 0.0, float(w), float(h)
    pts = np.asarray(lm)[list(range(17, 48))]
    c = pts.mean(0)
    half = 0.62 * float(np.ptp(pts[:, 0]))
    return c[0] - half, c[1] - 0.75 * half, c[0] + half, c[1] + 0.75 * half
