"""The static site writer: records, caches and dataset scans -> ``index.html`` and data files.

Room: presentation only (the ``leaderboard --html DIR`` command). Layout of the written folder::

    index.html              the page (tables, curves, confusion, ablation, sample browser)
    assets/                 style.css, app.js (ours), vendor/ (three.js at a pinned version,
                            its OrbitControls and its licence)
    data/site.js            every table, curve and per-sample summary as one JS assignment
    data/samples/<s>/<i>.js one sample's image (redistributable data only), meshes and scan
    data/topology/<d>.js    triangles of one mesh topology

Everything is loaded with classic ``<script>`` tags, so the page works from ``file://`` with
no server (Chromium blocks ``fetch`` and ES modules there). Meshes are quantised to 0.1 mm,
delta-coded per axis, byte-planed and zlib-compressed, then base64 text; the page inflates
them with the browser's ``DecompressionStream``.

Privacy: a sample's image is written only when its dataset card says
``redistributable=True``; never for research-only photos, whatever the output folder. Meshes
and scans of research-only data (derived from the photos) are written only into a folder
git does not track, as the qualitative plots of :mod:`benchmark.report`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import (
    CorruptCacheFile,
    PredictionCache,
    atomic_write_bytes,
    jsonable,
    safe_name,
)
from benchmark.config import default_cache_dir
from benchmark.leaderboard import (
    _best,
    _columns,
    _fmt,
    _record_rows,
    _sorted,
    _title,
    eye_check_lines,
    mark_notes,
    method_marks,
    realy_table,
    section_title,
    sections,
)
from benchmark.report import in_tracked_area
from benchmark.results import RunRecord, load_records, one_line
from benchmark.scoring import METRICS
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN, NOW7_FROM_68

logger = logging.getLogger(__name__)

SITE_INDEX = "index.html"
#: Samples per leaderboard section in the per-sample browser (the page says so).
DEFAULT_SAMPLES_PER_SECTION = 30
#: Quantisation step of mesh and scan coordinates (metres): 0.2 mm, invisible at page scale.
QUANT_STEP_M = 2e-4
#: Quantisation step of per-point scan errors (mm) stored as uint8 (0 to 50.8 mm).
ERR_STEP_MM = 0.2
#: Errors above this (mm) are stored as this: the page's colour scale ends at 4 mm.
ERR_CLIP_MM = 6.0
#: Eye-state categories of the sample browser, in the order samples are drawn from them.
CATEGORIES = ("open", "closed", "wink", "half", "unknown")
ASSETS = Path(__file__).resolve().parent / "assets"


# ----------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------


def _planes(values: np.ndarray) -> bytes:
    """int16 values as two byte planes (all low bytes, then all high bytes)."""
    raw = np.ascontiguousarray(values, "<i2").tobytes()
    return np.frombuffer(raw, np.uint8).reshape(-1, 2).T.tobytes()


def _unplanes(data: bytes) -> np.ndarray:
    planes = np.frombuffer(data, np.uint8)
    return np.frombuffer(planes.reshape(2, -1).T.copy().tobytes(), "<i2")


def encode_positions(points: np.ndarray, centre: np.ndarray) -> dict[str, Any]:
    """Quantised, delta-coded, byte-planed, zlib-compressed (N, 3) coordinates.

    Args:
        points: (N, 3) coordinates in metres.
        centre: (3,) subtracted before quantising (the page draws around the origin).

    Returns:
        ``{"n", "step", "b64"}``; :func:`decode_positions` inverts it (to ``step``/2).
    """
    q = np.round((np.asarray(points, np.float64) - centre) / QUANT_STEP_M)
    q = np.clip(q, -32768, 32767).astype(np.int16).T  # (3, N)
    delta = np.diff(q, axis=1, prepend=np.zeros((3, 1), np.int16)).astype(np.int16)
    return {"n": int(q.shape[1]), "step": QUANT_STEP_M,
            "b64": base64.b64encode(zlib.compress(_planes(delta), 9)).decode()}


def decode_positions(enc: dict[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode_positions` (what app.js does), for tests."""
    delta = _unplanes(zlib.decompress(base64.b64decode(enc["b64"]))).reshape(3, enc["n"])
    q = np.cumsum(delta.astype(np.int64), axis=1).astype(np.int16)
    return q.T.astype(np.float64) * enc["step"]


def encode_on_template(points: np.ndarray, template: np.ndarray) -> dict[str, Any]:
    """(V, 3) vertices as a similarity of a same-topology template plus quantised residuals.

    Meshes of one topology differ little once the template is moved onto them, so the
    residuals are small integers that compress well (about 1.5 bytes a vertex).

    Args:
        points: (V, 3) vertices in the page's frame (metres).
        template: (V, 3) the topology's template as the page decodes it.

    Returns:
        ``{"n", "step", "tf", "b64"}``: ``tf`` the 4x4 row-major matrix mapping template
        points (column vectors) onto the mesh; :func:`decode_on_template` inverts it.
    """
    from metrics.alignment import umeyama

    pts = np.asarray(points, np.float64)
    tf = umeyama(template, pts)
    base = tf.apply(template)
    res = np.clip(np.round((pts - base) / QUANT_STEP_M), -32768, 32767).astype(np.int16)
    return {"n": int(len(pts)), "step": QUANT_STEP_M,
            "tf": [float(x) for x in tf.matrix().reshape(-1)],
            "b64": base64.b64encode(zlib.compress(_planes(res.T), 9)).decode()}


def decode_on_template(enc: dict[str, Any], template: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_on_template` (what app.js does), for tests."""
    res = _unplanes(zlib.decompress(base64.b64decode(enc["b64"]))).reshape(3, enc["n"]).T
    m = np.asarray(enc["tf"], np.float64).reshape(4, 4)
    return template @ m[:3, :3].T + m[:3, 3] + res.astype(np.float64) * enc["step"]


def spatial_order(points: np.ndarray, row_m: float = 0.002) -> np.ndarray:
    """An order of points in rows of ``row_m`` along y, by x within a row (compresses well)."""
    pts = np.asarray(points, np.float64)
    return np.lexsort((pts[:, 0], np.floor(pts[:, 1] / row_m)))


def encode_bytes(data: bytes) -> str:
    """Raw bytes, zlib-compressed, as base64 text."""
    return base64.b64encode(zlib.compress(data, 9)).decode()


def encode_faces(faces: np.ndarray) -> dict[str, Any]:
    """(F, 3) triangles as delta-coded int32, zlib + base64."""
    flat = np.asarray(faces, np.int64).reshape(-1)
    delta = np.diff(flat, prepend=0).astype("<i4")
    return {"n": int(flat.size), "b64": encode_bytes(delta.tobytes())}


def encode_errors(err_mm: np.ndarray) -> str:
    """Per-point errors in mm as uint8 steps of ``ERR_STEP_MM`` (NaN -> 255), zlib + base64.

    Errors above ``ERR_CLIP_MM`` (beyond the page's colour scale) are stored as that value.
    """
    e = np.minimum(np.asarray(err_mm, np.float64), ERR_CLIP_MM)
    q = np.where(np.isfinite(e), np.clip(np.round(e / ERR_STEP_MM), 0, 254), 255)
    return encode_bytes(q.astype(np.uint8).tobytes())


def _js_file(path: Path, callback: str, payload: Any) -> None:
    text = f"{callback}({json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"
    atomic_write_bytes(path, text.encode())


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------

_MD_STRIP = re.compile(r"\*\*|`")


def md_blocks(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Markdown lines of :mod:`benchmark.leaderboard`'s eye checks as text and table blocks.

    The eye checks (fair coverage, per source, probe) are computed by the leaderboard and
    returned as markdown lines; this turns those lines (not LEADERBOARD.md) into
    ``{"kind": "text", "text"}`` and ``{"kind": "table", "header", "rows"}`` blocks.
    """
    blocks: list[dict[str, Any]] = []
    table: list[list[str]] | None = None
    for line in list(lines) + [""]:
        if line.startswith("|"):
            cells = [_MD_STRIP.sub("", c).strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= {"-", ":"} for c in cells):
                continue
            if table is None:
                table = []
            table.append(cells)
            continue
        if table is not None:
            blocks.append({"kind": "table", "header": table[0], "rows": table[1:]})
            table = None
        if line.strip():
            blocks.append({"kind": "text", "text": _MD_STRIP.sub("", line.strip())})
    return blocks


def _metric_cell(name: str, entry: dict | None) -> dict[str, Any]:
    spec = METRICS.get(name)
    if not entry or entry.get("value") is None:
        return {"v": None, "text": "–"}
    cell = {"v": entry["value"], "text": _fmt(spec, entry["value"])}
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        cell.update(lo=entry["ci_low"], hi=entry["ci_high"],
                    ci=f"[{_fmt(spec, entry['ci_low'])}, {_fmt(spec, entry['ci_high'])}]")
    return cell


def _main_table(ok: Sequence[RunRecord], dataset: str) -> dict[str, Any]:
    cols = _columns(ok)
    best = {s.name: _best(s, ok) for s in cols}
    rows = []
    for r in _sorted(ok):
        marks = " ".join(method_marks(r, dataset))
        cells = []
        for s in cols:
            cell = _metric_cell(s.name, r.metrics.get(s.name))
            cell["best"] = best[s.name] is not None and cell["v"] == best[s.name]
            cells.append(cell)
        rows.append({"method": r.method, "marks": marks.strip(), "cells": cells})
    return {"columns": [{"name": s.name, "title": _title(s), "higher": s.higher_is_better}
                        for s in cols], "rows": rows}


def _notes(ok: Sequence[RunRecord], dataset: str) -> list[str]:
    notes = mark_notes(ok, dataset)
    for r in ok:
        if r.n_error or r.n_no_face:
            notes.append(f"{r.method}: {r.n_no_face} no face, {r.n_error} errors out of "
                         f"{r.n_samples} (metrics cover the rest).")
    return notes


def _signed(spec, value: float) -> str:
    """A difference in the metric's own format, with its sign."""
    text = _fmt(spec, value)
    return text if text.startswith(("-", "–")) else "+" + text


def _ablation(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / "ablation" / "ablation.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("ablation table left out: %s is unreadable: %s", path, exc)
        return None
    variants = list(data.get("variants", []))
    out = []
    for name, block in data.get("datasets", {}).items():
        metrics = block.get("metrics", {})
        names = [n for n in METRICS.names()
                 if any(n in metrics.get(v, {}) for v in variants)]
        cols = [{"name": n, "title": _title(METRICS.get(n)),
                 "higher": METRICS.get(n).higher_is_better} for n in names]
        rows = []
        for v in variants:
            if v not in metrics:
                continue
            rows.append({"method": v, "marks": "", "cells": [
                _metric_cell(n, metrics[v].get(n)) for n in names]})
        diffs = []
        for v, d in block.get("diff", {}).items():
            cells = []
            for n in names:
                e = d.get(n)
                if not e or e.get("value") is None:
                    cells.append({"v": None, "text": "–"})
                    continue
                spec = METRICS.get(n)
                cell = {"v": e["value"], "text": _signed(spec, e["value"])}
                if e.get("ci_low") is not None and e.get("ci_high") is not None:
                    cell.update(lo=e["ci_low"], hi=e["ci_high"],
                                ci=f"[{_signed(spec, e['ci_low'])}, "
                                   f"{_signed(spec, e['ci_high'])}]")
                    better = e["ci_low"] > 0 if spec.higher_is_better else e["ci_high"] < 0
                    cell["best"] = bool(better)
                cells.append(cell)
            diffs.append({"method": v, "marks": "", "cells": cells})
        out.append({"dataset": name, "table": {"columns": cols, "rows": rows},
                    "diff": {"columns": cols, "rows": diffs}, "counts": block.get("counts", {}),
                    "base": variants[0] if variants else ""})
    return {"datasets": out, "bootstrap": data.get("bootstrap"), "source": str(path.name)}


# ----------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------


def category(row: dict[str, Any]) -> str:
    """Eye-state category of a sample row: open, closed, wink, half or unknown."""
    eyes = [row.get(f"eye_true_{e}", EYE_UNKNOWN) for e in range(2)]
    eyes = [EYE_UNKNOWN if v is None else int(v) for v in eyes]
    if EYE_UNKNOWN not in eyes:
        if eyes[0] == eyes[1]:
            return "open" if eyes[0] == EYE_OPEN else "closed"
        return "wink"
    gt = [row.get(f"openness_gt_{e}") for e in range(2)]
    if any(g is not None and math.isfinite(g) for g in gt):
        return "half"
    image = row.get("image_true", EYE_UNKNOWN)
    if image == EYE_CLOSED:
        return "closed"
    if image == EYE_OPEN:
        return "open"
    return "unknown"


def pick_samples(rows: Sequence[dict[str, Any]], n_max: int) -> list[dict[str, Any]]:
    """Up to ``n_max`` rows, taken in turn from each eye-state category, in record order.

    Deterministic: the same rows give the same choice; every category present is covered
    when ``n_max`` is at least the number of categories.
    """
    buckets: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
    for row in rows:
        buckets[category(row)].append(row)
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < n_max and any(len(b) > depth for b in buckets.values()):
        for c in CATEGORIES:
            if depth < len(buckets[c]) and len(chosen) < n_max:
                chosen.append(buckets[c][depth])
        depth += 1
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen, key=lambda r: order[id(r)])


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any, default: int = EYE_UNKNOWN) -> int:
    f = _num(v)
    return default if f is None else int(f)


def _method_summary(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"status": "missing"}
    return {"status": row.get("status", "?"),
            "op": [_num(row.get(f"openness_pred_{e}")) for e in range(2)],
            "pred": [_int(row.get(f"eye_pred_{e}")) for e in range(2)],
            "s2m": _num(row.get("s2m_median_mm")), "s2m_mean": _num(row.get("s2m_mean_mm")),
            "error": one_line(row.get("error") or "", 160)}


def _load_dataset(rec: RunRecord):
    """The record's dataset at the record's revision, or None (logged)."""
    from benchmark.datasets import DATASETS

    try:
        root = (rec.dataset_instance or {}).get("root")
        cls = DATASETS.get(rec.dataset)
        dataset = cls(split=rec.split, root=root) if root else cls(split=rec.split)
        if not dataset.availability().ok or dataset.revision() != rec.dataset_revision:
            logger.info("site: %s unavailable or changed; samples without images and scans",
                        rec.key)
            return None
        return dataset
    except Exception as exc:  # the site must never fail for a dataset it cannot open
        logger.info("site: %s not loaded (%s); samples without images and scans", rec.key, exc)
        return None


def _image_jpeg(image: Any, size: int = 256) -> str | None:
    from PIL import Image

    arr = image() if callable(image) else image
    if arr is None:
        return None
    img = Image.fromarray(np.asarray(arr, np.uint8))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class _SampleWriter:
    """Writes per-sample detail files and the topologies they use."""

    def __init__(self, site: Path, cache_root: Path) -> None:
        self.site = site
        self.cache_root = cache_root
        self.topologies: dict[str, str] = {}  # digest -> relative file
        self._faces: dict[str, dict[str, Any]] = {}  # digest -> id, name, coded triangles
        #: (digest, method) -> (coded template, the template as the page decodes it): the
        #: method's first mesh of that topology; its other meshes are coded on it.
        self.templates: dict[tuple[str, str], tuple[dict[str, Any], np.ndarray]] = {}

    def _topology(self, topo, method: str, verts: np.ndarray) -> str:
        """Registers a topology and the method's template mesh on it (the first one seen)."""
        digest = topo.digest()
        if digest not in self._faces:
            self._faces[digest] = {"id": digest, "name": topo.name,
                                   "faces": encode_faces(topo.faces)}
            self.topologies[digest] = f"data/topology/{digest}.js"
        if (digest, method) not in self.templates:
            enc = encode_positions(verts, verts.mean(axis=0))
            self.templates[(digest, method)] = (enc, decode_positions(enc))
        return digest

    def finish(self) -> None:
        """Writes every topology file: triangles and the templates of each method."""
        for digest, head in self._faces.items():
            templates = {m: enc for (d, m), (enc, _) in self.templates.items() if d == digest}
            _js_file(self.site / self.topologies[digest], "EYEBENCH.topologyLoaded",
                     {**head, "templates": templates})

    def write(self, rel: str, key: str, sample, recs: Sequence[RunRecord],
              caches: dict[str, PredictionCache], with_image: bool,
              with_meshes: bool) -> None:
        payload: dict[str, Any] = {"key": key, "image": None, "scan": None, "meshes": {}}
        if with_image and sample is not None:
            try:
                payload["image"] = _image_jpeg(sample.image)
            except Exception as exc:  # a broken image must not break the site
                logger.info("site: image of %s left out: %s", key, exc)
        scan = sample.scan if (sample is not None and with_meshes) else None
        centre = None
        scan_mask = scan_order = None
        if scan is not None:
            import metrics as M

            pts = np.asarray(scan.points, np.float64)
            scan_mask = (np.ones(len(pts), bool) if scan.cropped
                         else M.now_crop_mask(pts, scan.landmarks7))
            scan_order = spatial_order(pts[scan_mask])
            shown = pts[scan_mask][scan_order]
            centre = shown.mean(axis=0)
            payload["scan"] = {"pos": encode_positions(shown, centre)}
        if with_meshes:
            decoded: dict[str, tuple[str, np.ndarray]] = {}  # method -> (topology, vertices)
            for r in recs:
                mesh = self._mesh(r, caches[r.method], sample, scan, scan_mask, scan_order,
                                  centre, key, decoded)
                if mesh is not None:
                    payload["meshes"][r.method] = mesh
        _js_file(self.site / rel, "EYEBENCH.sampleLoaded", payload)

    def _mesh(self, r: RunRecord, cache: PredictionCache, sample, scan, scan_mask, scan_order,
              centre, key: str, decoded: dict[str, tuple[str, np.ndarray]]
              ) -> dict[str, Any] | None:
        """One method's mesh of a sample, or None without one.

        Coded on the topology template or on a mesh of another method of the same sample
        (``ref``), whichever compresses better.
        """
        sid = key.split("/", 1)[1]
        try:
            if not cache.has(sid):
                return None
            pred = cache.get(sid)
        except (CorruptCacheFile, ValueError) as exc:
            logger.info("site: %s of %s left out: %s", r.method, key, exc)
            return None
        if pred.status != "ok" or pred.vertices is None or pred.topology is None:
            return None
        verts = np.asarray(pred.vertices, np.float64)
        aligned = False
        if scan is not None and pred.topology.has_landmarks:
            from metrics.alignment import umeyama

            lmk7 = (pred.landmarks7 if pred.landmarks7 is not None
                    else pred.topology.landmarks(pred.vertices)[list(NOW7_FROM_68)])
            try:
                verts = umeyama(np.asarray(lmk7, np.float64),
                                np.asarray(scan.landmarks7, np.float64)).apply(verts)
                aligned = True
            except (ValueError, np.linalg.LinAlgError):
                pass
        mesh_centre = centre if aligned else verts.mean(axis=0)
        verts = verts - mesh_centre
        digest = self._topology(pred.topology, r.method, verts)
        options = [({"template": r.method}, self.templates[(digest, r.method)][1])] + [
            ({"mesh": m}, v) for m, (d, v) in decoded.items() if d == digest]
        best, enc, base = None, None, None
        for ref, candidate in options:
            got = encode_on_template(verts, candidate)
            if enc is None or len(got["b64"]) < len(enc["b64"]):
                best, enc, base = ref, got, candidate
        decoded[r.method] = (digest, decode_on_template(enc, base))
        out = {"pos": enc, "base": best, "topology": digest, "aligned": aligned, "err": None}
        if scan is not None:
            err = self._scan_errors(r, sid, int(scan_mask.sum()))
            if err is not None:
                out["err"] = encode_errors(err[scan_order])
        return out

    def _scan_errors(self, r: RunRecord, sid: str, n_points: int) -> np.ndarray | None:
        """The stored NoW distances (mm) of the cropped scan points, in scan order."""
        version = r.params.get("scoring_version")
        if not version:
            return None
        path = (self.cache_root / "scores" / r.dataset / r.split / r.method
                / f"{r.method_revision}-{r.dataset_revision}" / str(version)
                / f"{safe_name(sid)}.npy")
        try:
            dist = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return dist if dist.shape == (n_points,) else None


def _sample_section(sec_index: int, ok: Sequence[RunRecord], rows: dict[str, list[dict]],
                    writer: _SampleWriter, n_max: int, allow_meshes: bool) -> dict[str, Any]:
    """The browser's data of one section (and its detail files)."""
    ref = next(r for r in ok if r.method in rows)
    picked = pick_samples(rows[ref.method], n_max)
    by_method = {m: {row["sample_id"]: row for row in rs} for m, rs in rows.items()}
    redistributable = bool(ref.dataset_card.get("redistributable"))
    dataset = _load_dataset(ref) if (redistributable or allow_meshes) else None
    caches = {r.method: PredictionCache(
        writer.cache_root / "predictions" / r.dataset / r.split / r.method
        / f"{r.method_revision}-{r.dataset_revision}") for r in ok}
    methods = [r.method for r in _sorted(ok)]
    samples = []
    for i, row in enumerate(picked):
        sid = row["sample_id"]
        sample = None
        if dataset is not None:
            try:
                sample = dataset.load_sample(sid)
            except Exception as exc:  # the site must never fail for one sample
                logger.info("site: sample %s not loaded: %s", sid, exc)
        rel = f"data/samples/{sec_index}/{i}.js"
        writer.write(rel, f"{sec_index}/{sid}", sample, ok, caches,
                     with_image=redistributable, with_meshes=allow_meshes)
        samples.append({
            "id": sid, "subject": str(row.get("subject", "")), "category": category(row),
            "truth": [_int(row.get(f"eye_true_{e}")) for e in range(2)],
            "gt": [_num(row.get(f"openness_gt_{e}")) for e in range(2)],
            "file": rel,
            "methods": {m: _method_summary(by_method.get(m, {}).get(sid)) for m in methods},
        })
    n_total = len(rows[ref.method])
    return {"methods": methods, "samples": samples, "n_total": n_total, "n_max": n_max,
            "images": redistributable, "meshes": allow_meshes,
            "threshold": ref.params.get("closed_threshold")}


# ----------------------------------------------------------------------------------------
# The site
# ----------------------------------------------------------------------------------------


def site_data(output_dir: Path, site_dir: Path, cache_root: Path,
              samples_per_section: int) -> dict[str, Any]:
    """Everything ``data/site.js`` holds; writes the per-sample files as a side effect."""
    records = load_records(output_dir)
    allow_private = not in_tracked_area(site_dir)
    writer = _SampleWriter(site_dir, cache_root)
    out_sections = []
    for sec_index, (sec_id, recs) in enumerate(sections(records).items()):
        ok = [r for r in recs if r.status == "ok"]
        not_ok = [r for r in recs if r.status != "ok"]
        first = (ok or not_ok)[0]
        n = max((r.n_samples for r in ok), default=0)
        sec: dict[str, Any] = {
            "id": sec_id, "title": section_title(sec_id, recs).replace("`", ""),
            "dataset": first.dataset, "split": first.split,
            "description": first.dataset_card.get("description", ""), "n": n,
            "card": first.dataset_card.get("card_file", ""),
            "redistributable": bool(first.dataset_card.get("redistributable")),
            "not_ok": [{"method": r.method, "status": r.status, "reason": one_line(r.reason),
                        "fix": one_line(r.fix)} for r in sorted(not_ok, key=lambda r: r.method)],
        }
        if ok:
            sec["table"] = _main_table(ok, first.dataset)
            sec["notes"] = _notes(ok, first.dataset)
            sec["blocks"] = md_blocks(realy_table(ok) + eye_check_lines(ok, output_dir))
            sec["curves"] = [{"method": r.method, **r.curves} for r in _sorted(ok)
                             if r.curves.get("thresholds_mm")]
            sec["confusion"] = [{"method": r.method, **r.confusion} for r in _sorted(ok)
                                if r.confusion]
            rows = {}
            for r in ok:
                got = _record_rows(r, output_dir)
                if got is not None:
                    rows[r.method] = got
            if rows and samples_per_section > 0:
                allow_meshes = sec["redistributable"] or allow_private
                sec["browser"] = _sample_section(sec_index, ok, rows, writer,
                                                 samples_per_section, allow_meshes)
        out_sections.append(sec)
    writer.finish()
    thresholds = sorted({r.params.get("closed_threshold") for r in records
                         if r.params.get("closed_threshold") is not None})
    boots = sorted({r.params.get("bootstrap") for r in records if r.params.get("bootstrap")})
    return jsonable({
        "title": "eyebench leaderboard",
        "thresholds": thresholds, "bootstrap": boots, "err_step_mm": ERR_STEP_MM,
        "sections": out_sections,
        "metrics": [{"name": s.name, "higher": s.higher_is_better, "unit": s.unit or "",
                     "description": s.description}
                    for s in (METRICS.get(n) for n in METRICS.names())],
        "ablation": _ablation(output_dir),
        "revisions": sorted({r.provenance.get("git_revision", "?") for r in records}),
        "dates": sorted({r.provenance.get("date", "?")[:10] for r in records}),
        "topologies": writer.topologies,
    })


def write_site(output_dir: Path, site_dir: Path, cache_root: Path | None = None,
               samples_per_section: int = DEFAULT_SAMPLES_PER_SECTION) -> Path:
    """Writes the static site for the run records under ``output_dir`` into ``site_dir``.

    Args:
        output_dir: the folder with ``runs/`` (and optionally ``ablation/ablation.json``).
        site_dir: where the site goes; its ``data/`` and ``assets/`` are replaced.
        cache_root: the prediction/score cache (default: ``$EYEBENCH_CACHE`` or ``.cache``).
        samples_per_section: samples in the per-sample browser per leaderboard section.

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: ``site_dir`` is a non-empty folder that holds no site written before
            (its ``data/`` and ``assets/`` are replaced, so nothing else is touched).
    """
    site_dir = Path(site_dir)
    if (site_dir.is_dir() and any(site_dir.iterdir())
            and not (site_dir / "data" / "site.js").is_file()):
        raise ValueError(f"{str(site_dir)!r} is not empty and holds no eyebench site; give "
                         "--html a new or empty folder (or one written by --html before).")
    site_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "assets"):
        if (site_dir / sub).is_dir():
            shutil.rmtree(site_dir / sub)
    shutil.copytree(ASSETS, site_dir / "assets",
                    ignore=shutil.ignore_patterns("index.html", "__pycache__"))
    data = site_data(Path(output_dir), site_dir, Path(cache_root or default_cache_dir()),
                     samples_per_section)
    text = "window.EYEBENCH_DATA = " + json.dumps(data, separators=(",", ":"),
                                                  ensure_ascii=False, allow_nan=False) + ";\n"
    atomic_write_bytes(site_dir / "data" / "site.js", text.encode())
    index = site_dir / SITE_INDEX
    atomic_write_bytes(index, (ASSETS / "index.html").read_bytes())
    return index
