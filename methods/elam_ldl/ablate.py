"""The ELAM/LDL ablation: train (or reuse) the four variants, evaluate, tabulate, plot.

Room: the ``ablate`` command's work, like the paper's Tables 1-2 and Figure 3. Evaluation
goes through :func:`benchmark.runner.run` (same data, metrics, caches and run records as
every other method, so the leaderboard shows the four variants side by side); this module
adds what the leaderboard does not: the variants' differences from ``deep3d-recipe`` with
*paired* bootstrap intervals, the ablation table, bar charts and a qualitative grid.

Outputs (``<output_dir>/ablation/``)::

    ABLATION.md          tables per dataset: eye acc/F1 per eye and per image, S2M
                         median/mean/std (with 95 % CIs), differences vs deep3d-recipe
                         (paired bootstrap over subjects), inference speed
    ablation.json        the same numbers
    bars_<dataset>.png   eye F1 / image F1 / S2M median with CIs
    qualitative_synthetic.png   the four variants on closed / wink / half / open samples
                         of the synthetic test split (synthetic photos only: photos of
                         the real pool never appear in a plot)

Paired differences: samples scored by both variants (same detector, so the same samples),
subjects resampled with replacement (1000 replicates), the metric difference recomputed on
each replicate, percentile interval.

Example::

    from methods.elam_ldl.ablate import ablate
    res = ablate(limit=30, plots=False)
    print(res.table)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from methods.elam_ldl.config import VARIANTS, TrainConfig, default_checkpoint

logger = logging.getLogger(__name__)

BASELINE = "deep3d-recipe"
#: The floor every network must beat on shape: scan-to-mesh differences are also taken
#: against it (paired, same samples), so "below the mean shape" is a tested claim.
FLOOR = "mean-shape"
#: Metrics compared against :data:`FLOOR`.
FLOOR_METRICS = ("s2m_median_mm", "s2m_mean_mm")
#: Columns of the ablation table: (metric, title).
TABLE_METRICS = (
    ("eye_acc", "eye acc"), ("eye_f1", "eye F1"), ("image_acc", "image acc"),
    ("image_f1", "image F1"), ("openness_mae", "openness MAE"),
    ("s2m_median_mm", "S2M median (mm)"), ("s2m_mean_mm", "S2M mean (mm)"),
    ("s2m_std_mm", "S2M std (mm)"),
)
@dataclasses.dataclass
class AblationResult:
    """What :func:`ablate` produced.

    Attributes:
        table: the markdown tables (as printed).
        report: path of ``ABLATION.md``.
        numbers: the JSON-able numbers (``ablation.json``).
        plots: written figures.
    """

    table: str
    report: Path
    numbers: dict[str, Any]
    plots: list[Path]


def _coerce_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    from methods.elam_ldl.config import field_types

    hints = field_types()
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in hints:
            raise ValueError(f"unknown training option {key!r}.")
        hint = str(hints[key])
        if not isinstance(value, str):
            out[key] = value
        elif hints[key] is bool:
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif "tuple" in hint:
            out[key] = tuple(v for v in value.split(",") if v)
        elif "int" in hint:
            out[key] = int(value)
        elif "float" in hint:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def checkpoints_for(variants: Sequence[str], weights_dir: Path | None, retrain: bool,
                    train_missing: bool, train_overrides: dict[str, Any] | None = None,
                    device: str = "cpu", progress: bool = True) -> dict[str, Path]:
    """The checkpoint of every variant, training the ones asked for (or missing).

    Raises:
        ValueError: unknown variant, or a missing checkpoint with ``train_missing`` off.
    """
    from methods.elam_ldl.train import train

    out = {}
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}.")
        path = (weights_dir / f"{v}.pt") if weights_dir else default_checkpoint(v)
        if retrain or not path.is_file():
            if not retrain and not train_missing:
                raise ValueError(f"checkpoint {str(path)!r} of {v} is missing; train it with "
                                 f"`python -m benchmark train --variant {v} --export {path}` "
                                 f"or drop --no-train-missing.")
            overrides = _coerce_overrides(dict(train_overrides or {}))
            overrides.setdefault("device", device)
            cfg = TrainConfig.preset(v, **{**overrides, "export": str(path)})
            command = (f"python -m benchmark train --variant {v} --seed {cfg.seed} "
                       f"--export {path}")
            logger.info("training %s -> %s", v, path)
            train(cfg, command=command, progress=progress)
        out[v] = path
    return out


def ablate(
    variants: Sequence[str] = tuple(VARIANTS),
    datasets: Sequence[str] = ("synthetic", "real-faces-val"),
    weights_dir: Path | None = None,
    retrain: bool = False,
    train_missing: bool = True,
    train_overrides: dict[str, Any] | None = None,
    output_dir: Path | None = None,
    limit: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    plots: bool = True,
    device: str = "cpu",
    workers: int = 2,
    progress: bool = True,
    speed: bool = True,
) -> AblationResult:
    """Trains or reuses the variants, evaluates them and writes the ablation report.

    Args:
        variants: variant names (``deep3d-recipe`` should be among them: the differences
            are taken against it).
        datasets: evaluation datasets (default split each: synthetic ``test``,
            ``real-faces-val`` ``val``; an unavailable dataset is reported and skipped).
        weights_dir: checkpoint folder (default: the shipped one).
        retrain: train every variant even if its checkpoint exists.
        train_missing: train the variants whose checkpoint is missing.
        train_overrides: :class:`TrainConfig` fields for the variants trained here.
        output_dir: results folder (default ``results/``); the report goes to ``ablation/``.
        limit: first N samples per dataset.
        bootstrap: bootstrap replicates.
        seed: bootstrap seed.
        plots: draw the figures.
        device: evaluation/training device.
        workers: scoring processes.
        progress: progress bars.
        speed: measure inference images per second.

    Returns:
        :class:`AblationResult`.
    """
    from benchmark.config import PROJECT_ROOT, RunConfig
    from benchmark.runner import run

    output_dir = Path(output_dir) if output_dir else PROJECT_ROOT / "results"
    ckpts = checkpoints_for(variants, weights_dir, retrain, train_missing, train_overrides,
                            device, progress)
    method_options = ({v: {"checkpoint": str(p)} for v, p in ckpts.items()}
                      if weights_dir else {})
    rc = RunConfig(methods=",".join([*variants, FLOOR]), datasets=",".join(datasets),
                   output_dir=str(output_dir), limit=limit, bootstrap=bootstrap, seed=seed,
                   device=device, workers=workers, method_options=method_options,
                   leaderboard=False)
    summary = run(rc, show_progress=progress)
    cache_root = rc.resolved_cache_dir()
    numbers: dict[str, Any] = {"variants": list(variants), "datasets": {}, "skipped":
                               summary.skipped_datasets,
                               "checkpoints": {v: _ckpt_info(p) for v, p in ckpts.items()},
                               "bootstrap": bootstrap, "seed": seed, "limit": limit}
    by_dataset: dict[str, dict[str, Any]] = {}
    for rec in summary.records:
        by_dataset.setdefault(f"{rec.dataset}/{rec.split}", {})[rec.method] = rec
    for key, recs in by_dataset.items():
        entry: dict[str, Any] = {"metrics": {}, "diff": {}, "counts": {}, "floor": {}}
        floor = recs.pop(FLOOR, None)
        for v, rec in recs.items():
            entry["counts"][v] = {"n": rec.n_samples, "ok": rec.n_ok, "no_face": rec.n_no_face,
                                  "error": rec.n_error, "status": rec.status}
            entry["metrics"][v] = {m: rec.metrics.get(m) for m, _ in TABLE_METRICS
                                   if rec.metrics.get(m)}
        base = recs.get(BASELINE)
        if base is not None and base.status == "ok":
            for v, rec in recs.items():
                if v != BASELINE and rec.status == "ok":
                    entry["diff"][v] = paired_differences(rec, base, cache_root, bootstrap, seed)
        if floor is not None and floor.status == "ok" and any(
                floor.metrics.get(m) for m in FLOOR_METRICS):
            entry["floor"] = {
                "metrics": {m: floor.metrics.get(m) for m in FLOOR_METRICS
                            if floor.metrics.get(m)},
                "diff": {v: paired_differences(rec, floor, cache_root, bootstrap, seed,
                                               FLOOR_METRICS)
                         for v, rec in recs.items() if rec.status == "ok"},
            }
        numbers["datasets"][key] = entry
    if speed:
        try:
            numbers["speed"] = measure_speed(ckpts[variants[-1]])
        except Exception as exc:  # speed is a report extra; never fail the ablation on it
            logger.warning("speed measurement failed: %s", exc)
    folder = output_dir / "ablation"
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if plots:
        from methods.elam_ldl import ablation_plots

        for key, entry in numbers["datasets"].items():
            p = ablation_plots.bar_chart(entry, key, folder / f"bars_{key.split('/')[0]}.png")
            if p:
                made.append(p)
        syn = next((by_dataset[k] for k in by_dataset if k.startswith("synthetic/")), None)
        if syn:
            p = ablation_plots.qualitative_grid(syn, cache_root,
                                                folder / "qualitative_synthetic.png")
            if p:
                made.append(p)
    table = render_tables(numbers)
    (folder / "ablation.json").write_text(json.dumps(numbers, indent=1, default=_json))
    report = folder / "ABLATION.md"
    report.write_text(render_report(numbers, table, made, folder))
    try:
        from benchmark.report import build_report

        build_report(output_dir, cache_root, draw=plots)
    except Exception as exc:  # the leaderboard is a by-product here
        logger.warning("leaderboard not rebuilt: %s", exc)
    return AblationResult(table, report, numbers, made)


def _json(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _ckpt_info(path: Path) -> dict[str, Any]:
    from benchmark.provenance import file_sha256

    info: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        from methods.base import read_torch_file
        from methods.elam_ldl.model import FORMAT

        ck = read_torch_file(path, "ELAM+LDL checkpoint", FORMAT)
        meta = ck.get("meta", {})
        info.update(sha256=file_sha256(path)[:16], mb=round(path.stat().st_size / 1e6, 2),
                    steps=meta.get("steps"), seed=meta.get("seed"),
                    train_minutes=round(float(meta.get("train_seconds", 0)) / 60, 1),
                    n_train=meta.get("n_train"), command=meta.get("command"))
    return info


# ------------------------------------------------------------------------ paired bootstrap


def _score_rows(rec: Any, cache_root: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Per-sample rows of a record and the scan-to-mesh distances from the score cache."""
    from benchmark.cache import ScoreCache

    rows = list(rec.rows or [])
    slot = (cache_root / "scores" / rec.dataset / rec.split / rec.method
            / f"{rec.method_revision}-{rec.dataset_revision}"
            / str(rec.params.get("scoring_version")))
    cache = ScoreCache(slot)
    dist: dict[str, np.ndarray] = {}
    for r in rows:
        if r.get("has_distances") and cache.has(r["sample_id"]):
            _, d = cache.get(r["sample_id"])
            if d is not None:
                dist[r["sample_id"]] = d
    return rows, dist


def paired_differences(rec: Any, base: Any, cache_root: Path, n_boot: int = 1000,
                       seed: int = 0, names: Sequence[str] | None = None
                       ) -> dict[str, dict[str, float | None]]:
    """``metric(rec) - metric(base)`` with a paired subject-bootstrap 95 % interval.

    Only samples predicted successfully by both enter. Returns ``{metric: {value, ci_low,
    ci_high}}`` for the metrics of :data:`TABLE_METRICS` (or ``names``) that both records
    have.
    """
    import metrics as M
    from benchmark.scoring import METRICS, ScoreTable

    rows_a, dist_a = _score_rows(rec, cache_root)
    rows_b, dist_b = _score_rows(base, cache_root)
    ok_a = {r["sample_id"]: r for r in rows_a if r["status"] == "ok"}
    ok_b = {r["sample_id"]: r for r in rows_b if r["status"] == "ok"}
    common = [sid for sid in ok_a if sid in ok_b]
    out: dict[str, dict[str, float | None]] = {}
    if len(common) < 2:
        return out
    ta = ScoreTable([ok_a[s] for s in common], {s: dist_a[s] for s in common if s in dist_a})
    tb = ScoreTable([ok_b[s] for s in common], {s: dist_b[s] for s in common if s in dist_b})
    subjects = np.array([str(ok_a[s]["subject"]) for s in common])
    for name in (names if names is not None else [m for m, _ in TABLE_METRICS]):
        if name not in (rec.metrics or {}) or name not in (base.metrics or {}):
            continue
        spec = METRICS.get(name)
        full = np.arange(len(common))
        est = spec.compute(ta, full) - spec.compute(tb, full)
        if not np.isfinite(est):
            continue
        try:
            if spec.sums is not None and spec.of_sums is not None:
                # both records' parts side by side: one draw, a difference per replicate
                pa, pb = spec.sums(ta, full), spec.sums(tb, full)
                k, of = pa.shape[1], spec.of_sums
                ci = M.bootstrap_ci_of_sums(np.hstack([pa, pb]), subjects,
                                            lambda s, k=k, of=of: of(s[..., :k]) - of(s[..., k:]),
                                            n_boot=n_boot, seed=seed)
            else:
                ci = M.bootstrap_ci(None, subjects,
                                    lambda idx, spec=spec: (spec.compute(ta, idx)
                                                            - spec.compute(tb, idx)),
                                    n_boot=n_boot, seed=seed)
            out[name] = {"value": float(est), "ci_low": ci.low, "ci_high": ci.high}
        except ValueError:
            out[name] = {"value": float(est), "ci_low": None, "ci_high": None}
    return out


# ------------------------------------------------------------------------ speed


def measure_speed(checkpoint: Path, n_images: int = 48, batch: int = 8,
                  repeats: int = 3) -> dict[str, Any]:
    """Inference images per second of a checkpoint on synthetic test photos (this machine).

    Measured separately, each the best of ``repeats`` passes (other jobs on a shared machine
    only slow a pass down): dlib detection (uncached, HOG + 68 points), alignment, and the
    network + mesh decoding at batch 1 and ``batch`` with 1 and 2 torch threads. The
    end-to-end figure is detection + alignment + network at ``batch`` with 1 thread (the
    method's default).
    """
    import os
    import platform

    import torch

    from benchmark.datasets.synthetic import SyntheticDataset
    from methods.elam_ldl.align import NetworkInput, network_input, template_points
    from methods.elam_ldl.model import FaceDecoder, load_checkpoint
    from methods.landmarks import DlibProvider

    ds = SyntheticDataset(split="test", progress=False)
    images = [ds.load_sample(s).load_image() for s in ds.sample_ids()[:n_images]]
    net, _ = load_checkpoint(checkpoint)
    dec = FaceDecoder(net.spec)
    prov = DlibProvider()
    prov.detect(images[0])  # load the model files outside the timing

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    found = [(im, r.landmarks) for im in images if (r := prov.detect(im)).ok]
    t_detect = best(lambda: [prov.detect(im) for im in images]) / len(images)
    tpl = template_points(net.spec.input_size, net.spec.crop_distance)

    def align() -> list[NetworkInput]:
        return [network_input(im, lm, net.spec, tpl) for im, lm in found]

    inputs = align()
    t_align = best(align) / max(len(found), 1)  # eye crops, crop landmarks included
    lms = torch.from_numpy(np.stack([i.landmarks for i in inputs]).astype(np.float32))
    x = torch.from_numpy(np.stack([i.crop for i in inputs])).permute(0, 3, 1, 2).float() / 255.0
    ex = (torch.from_numpy(np.stack([i.eye_crops for i in inputs])).float()
          if net.spec.eye_branch else None)
    net_times: dict[str, float] = {}
    old_threads = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for bs in (1, batch):
                n = (len(x) // bs) * bs

                def forward(bs: int = bs, n: int = n) -> None:
                    with torch.no_grad():
                        for s in range(0, n, bs):
                            eyes = ex[s: s + bs] if ex is not None else None
                            dec.geometry(net.coefficients(x[s: s + bs], eyes,
                                                          lms[s: s + bs]))

                forward()  # warm-up
                net_times[f"threads{threads}_batch{bs}"] = best(forward) / max(n, 1)
    finally:
        torch.set_num_threads(old_threads)
    e2e = t_detect + t_align + net_times[f"threads1_batch{batch}"]
    return {
        "images": len(images), "detected": len(found),
        "dlib_seconds_per_image": round(t_detect, 4),
        "align_seconds_per_image": round(t_align, 4),
        "network_images_per_second": {k: round(1.0 / v, 1) for k, v in net_times.items()},
        "end_to_end_images_per_second": round(1.0 / e2e, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "input_size": net.spec.input_size, "depth": net.spec.depth, "width": net.spec.width,
    }


# ------------------------------------------------------------------------ tables


def _ci(entry: dict | None, fmt: str = "{:.3f}") -> str:
    if not entry or entry.get("value") is None:
        return "–"
    v = fmt.format(entry["value"])
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return v
    return f"{v} [{fmt.format(entry['ci_low'])}, {fmt.format(entry['ci_high'])}]"


def _fmt_for(metric: str, signed: bool = False) -> str:
    base = "{:+.2f}" if signed else "{:.2f}"
    if metric.startswith("s2m"):
        return base
    return "{:+.3f}" if signed else "{:.3f}"


def _diff_table(caption: str, diffs: dict[str, dict], metrics: Sequence[str],
                titles: dict[str, str]) -> list[str]:
    """Markdown lines: a caption and one row of signed differences with CIs per variant."""
    lines = [caption, "", "| variant | " + " | ".join(titles[m] for m in metrics) + " |",
             "|---" * (1 + len(metrics)) + "|"]
    for v, d in diffs.items():
        cells = [_ci(d.get(m), _fmt_for(m, signed=True)) for m in metrics]
        lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_tables(numbers: dict[str, Any]) -> str:
    """Markdown tables: per dataset, values with CIs, then differences vs the baseline."""
    lines: list[str] = []
    for key, entry in numbers["datasets"].items():
        present = [m for m, _ in TABLE_METRICS
                   if any(m in (entry["metrics"].get(v) or {}) for v in numbers["variants"])]
        titles = dict(TABLE_METRICS)
        lines += [f"### {key}", "",
                  "| variant | ELAM | LDL | n (ok) | " + " | ".join(titles[m] for m in present)
                  + " |", "|---" * (4 + len(present)) + "|"]
        for v in numbers["variants"]:
            if v not in entry["metrics"]:
                continue
            el, ld = VARIANTS[v]
            c = entry["counts"][v]
            cells = [_ci(entry["metrics"][v].get(m), _fmt_for(m)) for m in present]
            lines.append(f"| `{v}` | {'✓' if el else ''} | {'✓' if ld else ''} | "
                         f"{c['n']} ({c['ok']}) | " + " | ".join(cells) + " |")
        lines.append("")
        if entry["diff"]:
            lines += _diff_table(
                f"Differences vs `{BASELINE}` (paired bootstrap over subjects, 95 % CI; "
                "eye metrics: higher is better, S2M and openness MAE: lower is better):",
                entry["diff"], present, titles)
        floor = entry.get("floor") or {}
        if floor.get("diff"):
            shown = [m for m in FLOOR_METRICS if m in floor["metrics"]]
            lines += _diff_table(
                f"Scan-to-mesh against `{FLOOR}` (the template, "
                + ", ".join(f"{titles[m]} {_ci(floor['metrics'][m], _fmt_for(m))}"
                            for m in shown)
                + "): differences on the samples both predicted, paired bootstrap over "
                "subjects, 95 % CI; below zero = closer to the scans than the mean shape:",
                floor["diff"], shown, titles)
    for name, reason in numbers.get("skipped", {}).items():
        lines.append(f"Dataset `{name}` not evaluated: {reason}")
    return "\n".join(lines)


def render_report(numbers: dict[str, Any], table: str, plots: Sequence[Path],
                  folder: Path) -> str:
    """The full ``ABLATION.md`` text."""
    from metrics import DEFAULT_CLOSED_THRESHOLD

    lines = [
        "# ELAM / LDL ablation", "",
        "Generated by `python -m benchmark ablate` (methods/elam_ldl/ablate.py); do not edit.",
        "Four networks of one code and one training recipe, differing only in ELAM (eye-state "
        "adjusted landmark targets) and LDL (eyelid/lip distance loss); see docs/elam_ldl.md.",
        f"Eye state from the mesh: openness below {DEFAULT_CLOSED_THRESHOLD} = closed; per eye "
        "(half-closed synthetic eyes excluded) and per image (closed = both eyes closed). "
        "S2M: NoW scan-to-mesh on the synthetic test split. 95 % bootstrap intervals over "
        f"subjects ({numbers['bootstrap']} replicates, seed {numbers['seed']})"
        + (f"; first {numbers['limit']} samples per dataset" if numbers.get("limit") else "")
        + ".", "", table, "",
    ]
    ck = numbers.get("checkpoints", {})
    if ck:
        lines += ["## Checkpoints", "", "| variant | file | MB | steps | seed | train min | "
                  "train photos |", "|---|---|---|---|---|---|---|"]
        for v, info in ck.items():
            lines.append(f"| `{v}` | `{Path(info['path']).name}` | {info.get('mb', '–')} | "
                         f"{info.get('steps', '–')} | {info.get('seed', '–')} | "
                         f"{info.get('train_minutes', '–')} | {info.get('n_train', '–')} |")
        lines.append("")
    sp = numbers.get("speed")
    if sp:
        net = sp["network_images_per_second"]
        lines += ["## Inference speed", "",
                  f"Machine: {sp['machine']}; network ResNet-{sp['depth']} width "
                  f"{sp['width']} at {sp['input_size']} px.", "",
                  f"- dlib detection + 68 landmarks (uncached): "
                  f"{sp['dlib_seconds_per_image'] * 1000:.0f} ms per image",
                  f"- alignment: {sp['align_seconds_per_image'] * 1000:.1f} ms per image",
                  "- network + mesh decoding: " + ", ".join(
                      f"{k.replace('threads', '').replace('_batch', ' thread(s), batch ')}: "
                      f"{v} img/s" for k, v in net.items()),
                  f"- end to end (detection + alignment + network, batch 8, 1 thread): "
                  f"**{sp['end_to_end_images_per_second']} images/s**", ""]
    if plots:
        lines += ["## Figures", ""]
        for p in plots:
            lines += [f"![{p.stem}]({p.relative_to(folder).as_posix()})", ""]
    return "\n".join(lines)
