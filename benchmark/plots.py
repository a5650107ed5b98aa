"""Plots for the leaderboard: cumulative error curves, eye-state confusion, qualitative grid.

Room: figures only (matplotlib, Agg backend). Curves and confusion matrices are drawn from
run records alone; the qualitative grid also reads cached predictions and dataset samples,
and shows photographs only for datasets whose card marks them redistributable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

from benchmark.results import RunRecord  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 110


#: Bump when the qualitative figure's drawing changes, so stored figures are redrawn.
# 3: meshes rasterised with a z-buffer into an image (were polygons in painter's order)
QUALITATIVE_VERSION = 3
#: Pixels across the longer side of a rasterised mesh in the qualitative grid (a panel is
#: about 240 px wide in the saved figure).
MESH_PIXELS = 300

def cumulative_error_plot(records: Sequence[RunRecord], path: Path) -> Path | None:
    """NoW-style cumulative error curves (fraction of scan points below t mm), one per method."""
    recs = [r for r in records if r.status == "ok" and r.curves.get("per_point")]
    if not recs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI)
    for r in sorted(recs, key=lambda r: r.metric("s2m_median_mm") or 1e9):
        t = np.asarray(r.curves["thresholds_mm"])
        med = r.metric("s2m_median_mm")
        axes[0].plot(t, 100 * np.asarray(r.curves["per_point"]),
                     label=f"{r.method} (median {med:.2f} mm)" if med is not None else r.method)
        axes[1].plot(t, 100 * np.asarray(r.curves["per_sample_median"]), label=r.method)
    axes[0].set_title("per scan point (pooled)")
    axes[1].set_title("per sample (median error of each scan)")
    for ax in axes:
        ax.set_xlabel("scan-to-mesh error (mm)")
        ax.set_ylabel("% below error")
        ax.set_xlim(0, 8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Cumulative error — {recs[0].dataset} / {recs[0].split}")
    fig.tight_layout()
    return _save(fig, path)


def eye_confusion_plot(records: Sequence[RunRecord], path: Path) -> Path | None:
    """Per-eye confusion matrices (truth x prediction, open/closed), one panel per method."""
    recs = [r for r in records if r.status == "ok" and r.confusion.get("per_eye")]
    if not recs:
        return None
    n = len(recs)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.7 * rows), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, sorted(recs, key=lambda r: -(r.metric("eye_f1") or 0))):
        cm = np.asarray(r.confusion["per_eye"], float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center",
                        fontsize=8, color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks([0, 1], ["open", "closed"], fontsize=7)
        ax.set_yticks([0, 1], ["open", "closed"], fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("truth", fontsize=7)
        f1 = r.metric("eye_f1")
        ax.set_title(f"{r.method}\nF1 {f1:.2f}" if f1 is not None else r.method, fontsize=8)
    fig.suptitle(f"Eye state per eye — {recs[0].dataset} / {recs[0].split}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _shaded_mesh(ax, xy: np.ndarray, depth: np.ndarray, faces: np.ndarray,
                 extent: tuple[float, float, float, float],
                 colors: np.ndarray | None = None, alpha: float = 1.0,
                 z_scale: float = 1.0) -> None:
    """Draws a mesh as an image: z-buffered (nearest triangle per pixel), Lambert-shaded.

    Args:
        ax: matplotlib axes.
        xy: (V, 2) drawing coordinates.
        depth: (V,) larger = farther.
        faces: (F, 3).
        extent: (x0, x1, y0, y1), the data rectangle to rasterise (y0 at the image's top
            row); :data:`MESH_PIXELS` across its longer side.
        colors: optional (F, 3/4) face colours; default grey.
        alpha: face opacity.
        z_scale: factor bringing depth into the units of xy (for the shading normals).
    """
    p = np.concatenate([xy, depth[:, None] * z_scale], axis=1)[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    shade = np.clip(np.abs(n[:, 2]), 0.15, 1.0)
    base = np.tile([[0.75, 0.75, 0.78]], (len(faces), 1)) if colors is None else colors[:, :3]
    fc = np.concatenate([base * shade[:, None], np.full((len(faces), 1), alpha)], axis=1)
    x0, x1, y0, y1 = extent
    span_x, span_y = abs(x1 - x0), abs(y1 - y0)
    scale = MESH_PIXELS / max(span_x, span_y, 1e-12)
    w, h = max(int(round(span_x * scale)), 1), max(int(round(span_y * scale)), 1)
    uv = np.stack([(xy[:, 0] - x0) / (x1 - x0) * w, (xy[:, 1] - y0) / (y1 - y0) * h], axis=1)
    tri_id = _zbuffer(np.ascontiguousarray(uv, np.float64),
                      np.ascontiguousarray(depth, np.float64),
                      np.ascontiguousarray(faces, np.int64), h, w)
    image = np.zeros((h, w, 4))
    covered = tri_id >= 0
    image[covered] = fc[tri_id[covered]]
    ax.imshow(image, extent=(x0, x1, y1, y0), origin="upper", interpolation="antialiased")


@nb.njit(cache=True, nogil=True)
def _zbuffer(uv: np.ndarray, depth: np.ndarray, faces: np.ndarray, h: int, w: int
             ) -> np.ndarray:
    # Nearest triangle at each pixel centre (smallest depth; ties to the lower index), -1 for
    # none. uv in pixels, x right, y down the rows.
    zbuf = np.full((h, w), np.inf)
    out = np.full((h, w), -1, np.int64)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        xa, ya, xb, yb, xc, yc = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1], uv[c, 0], uv[c, 1]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if area == 0.0 or not np.isfinite(area):
            continue
        lo_x = max(int(np.floor(min(xa, xb, xc) - 0.5)), 0)
        hi_x = min(int(np.ceil(max(xa, xb, xc) - 0.5)), w - 1)
        lo_y = max(int(np.floor(min(ya, yb, yc) - 0.5)), 0)
        hi_y = min(int(np.ceil(max(ya, yb, yc) - 0.5)), h - 1)
        for py in range(lo_y, hi_y + 1):
            cy = py + 0.5
            for px in range(lo_x, hi_x + 1):
                cx = px + 0.5
                la = ((xb - cx) * (yc - cy) - (xc - cx) * (yb - cy)) / area
                lb = ((xc - cx) * (ya - cy) - (xa - cx) * (yc - cy)) / area
                lc = 1.0 - la - lb
                if la < 0.0 or lb < 0.0 or lc < 0.0:
                    continue
                z = la * depth[a] + lb * depth[b] + lc * depth[c]
                if z < zbuf[py, px]:
                    zbuf[py, px] = z
                    out[py, px] = f
    return out


def qualitative_plot(
    samples: Sequence,
    predictions: Sequence,
    errors: Sequence[tuple[np.ndarray, np.ndarray] | None],
    path: Path,
    title: str,
    show_images: bool,
    max_error_mm: float = 4.0,
) -> Path | None:
    """A grid with one row per sample: input | overlay | per-vertex error.

    Args:
        samples: FaceSamples.
        predictions: their Predictions (``vertices_image`` used for the overlay).
        errors: per sample, (aligned vertices (V, 3) in the scan frame, per-vertex error mm)
            or None when the sample has no scan.
        path: PNG to write.
        title: figure title.
        show_images: draw the photographs (only for redistributable datasets).
        max_error_mm: colour-map ceiling.
    """
    n = len(samples)
    if n == 0:
        return None
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), dpi=DPI, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for i, (s, p, err) in enumerate(zip(samples, predictions, errors)):
        img = s.load_image()
        h, w = img.shape[:2]
        ax_in, ax_ov, ax_err = axes[i]
        state = s.meta.get("eye_category") if isinstance(s.meta, dict) else None
        label = f"{s.id}" + (f"\n{state}" if state else "")
        if show_images:
            ax_in.imshow(img)
        else:
            ax_in.text(0.5, 0.5, "photo not\nredistributable", ha="center", va="center",
                       transform=ax_in.transAxes, fontsize=8)
        ax_in.set_title(label, fontsize=7)
        if show_images:
            ax_ov.imshow(img)
        if p is not None and p.status == "ok" and p.vertices_image is not None:
            vi = np.asarray(p.vertices_image)
            scale = _pixels_per_metre(vi[:, :2], np.asarray(p.vertices))
            _shaded_mesh(ax_ov, vi[:, :2], vi[:, 2], p.topology.faces, (0.0, w, 0.0, h),
                         alpha=0.6, z_scale=scale)
            ax_ov.set_title("reconstruction overlay", fontsize=7)
        else:
            ax_ov.set_title("no overlay" if p is None or p.status == "ok" else p.status,
                            fontsize=7)
        if err is not None:
            verts, verr = err
            faces = p.topology.faces
            corner = verr[faces]
            known = np.isfinite(corner)
            face_err = np.where(known, corner, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
            face_err[~known.any(axis=1)] = np.nan
            fcol = cmap(np.clip(np.nan_to_num(face_err) / max_error_mm, 0, 1))
            fcol[~np.isfinite(face_err)] = (0.85, 0.85, 0.85, 1.0)
            xy = verts[:, :2] * np.array([1.0, -1.0])
            box = (xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max())
            _shaded_mesh(ax_err, xy, -verts[:, 2], faces, box, colors=fcol, z_scale=1.0)
            ax_err.set_xlim(box[0], box[1])
            ax_err.set_ylim(box[3], box[2])
            ax_err.set_title(f"scan error (mm, 0–{max_error_mm:g}; grey: not scanned)",
                             fontsize=7)
        else:
            ax_err.set_title("no scan", fontsize=7)
        for ax in (ax_in, ax_ov):
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
        for ax in axes[i]:
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _pixels_per_metre(xy_img: np.ndarray, verts: np.ndarray) -> float:
    s_img = np.sqrt(np.var(xy_img, axis=0).sum())
    s_model = np.sqrt(np.var(verts[:, :2], axis=0).sum())
    return float(s_img / max(s_model, 1e-9))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # zlib level 3: a third of level 6's time for the qualitative grids, files ~10 % larger
    fig.savefig(path, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return path
