"""Eye-state scores of ``fit-landmarks`` vs ``fit-landmarks-elam`` (and the detector alone).

Runs the methods on a dataset, reads each fitted mesh's eye openness with
``metrics.eye_openness`` (closed below ``metrics.DEFAULT_CLOSED_THRESHOLD``) and prints
per-eye / per-side / per-image accuracy and F1 (``metrics.eye_state_scores``), the openness
error and the NoW scan-to-mesh median where the dataset has ground truth, plus the eye-state
detector's own P(closed) > 0.5 scores for the ELAM entry. Failed samples (no face) are left
out of the scores and counted in the coverage column. Predictions are not cached here; the
landmark detections are (``$EYEBENCH_CACHE/landmarks``).

Usage::

    nice -n 10 python scripts/eval_elam_fit.py --dataset synthetic --split test
    nice -n 10 python scripts/eval_elam_fit.py --dataset real-faces-val --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: Used until the lead registers these names (benchmark/datasets/__init__.py, methods/__init__.py).
_DATASETS = {"real-faces-val": "benchmark.datasets.real_faces:RealFacesDataset",
             "photo-folder": "benchmark.datasets.photo_folder:PhotoFolderDataset"}
_METHODS = {"fit-landmarks": "methods.fit_landmarks:FitLandmarks",
            "fit-landmarks-elam": "methods.fit_landmarks:FitLandmarksElam"}


def _lookup(registry, name: str, fallback: dict[str, str]):
    if name in registry or name not in fallback:
        return registry.get(name)
    import importlib

    module, _, attr = fallback[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def evaluate(dataset: str, split: str | None, methods: list[str], limit: int | None,
             batch: int, s2m: bool, options: dict[str, dict]) -> dict:
    """Per-method scores on one dataset (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm

    from benchmark.datasets import DATASETS
    from methods import METHODS
    from metrics import (
        DEFAULT_CLOSED_THRESHOLD,
        binary_scores,
        eye_openness,
        eye_state_from_openness,
        eye_state_scores,
        openness_error,
    )

    torch.set_num_threads(1)
    ds = _lookup(DATASETS, dataset, _DATASETS)(split=split)
    av = ds.availability()
    if not av.ok:
        raise SystemExit(f"{dataset}: {av}")
    ids = ds.sample_ids()[:limit] if limit else ds.sample_ids()
    out: dict = {"dataset": dataset, "split": ds.split, "n": len(ids),
                 "threshold": DEFAULT_CLOSED_THRESHOLD, "methods": {}}
    for name in methods:
        m = _lookup(METHODS, name, _METHODS)(options.get(name, {}))
        av = m.availability()
        if not av.ok:
            out["methods"][name] = {"skipped": str(av)}
            continue
        m.ensure_loaded("cpu")
        truth, image_truth, pred, gt_open, p_open = [], [], [], [], []
        probs, s2m_med, secs = [], [], []
        statuses: dict[str, int] = {}
        for i in tqdm(range(0, len(ids), batch), desc=f"{name} on {dataset}", unit="batch"):
            samples = [ds.load_sample(s) for s in ids[i:i + batch]]
            t0 = time.perf_counter()
            preds = m.predict_safe(samples)
            secs.append((time.perf_counter() - t0) / len(samples))
            for s, p in zip(samples, preds):
                statuses[p.status] = statuses.get(p.status, 0) + 1
                if p.status != "ok":
                    continue
                op = eye_openness(p.topology.landmarks(p.vertices))
                truth.append(s.eye_state)
                image_truth.append(s.image_state)
                pred.append(eye_state_from_openness(op))
                p_open.append(op)
                gt_open.append(s.eye_openness)
                if p.eye_prob_closed is not None:
                    probs.append(p.eye_prob_closed)
                if s2m and s.scan is not None:
                    from metrics import now_scan_to_mesh

                    lmk7 = p.topology.landmarks(p.vertices)[[36, 39, 42, 45, 33, 48, 54]]
                    r = now_scan_to_mesh(p.vertices, p.topology.faces, lmk7, s.scan.points,
                                         s.scan.landmarks7, scan_cropped=s.scan.cropped)
                    s2m_med.append(r.median_mm)
        t, pr = np.array(truth), np.array(pred)
        entry: dict = {"coverage": statuses, "seconds_per_image": float(np.mean(secs))}
        if len(t):
            it = np.array(image_truth)
            sc = eye_state_scores(t, pr, it if (it != -1).any() else None)
            for key in ("per_eye", "right", "left", "image"):
                b = getattr(sc, key)
                entry[key] = {"accuracy": b.accuracy, "f1": b.f1, "precision": b.precision,
                              "recall": b.recall, "n": b.n}
            oe = openness_error(np.array(p_open), np.array(gt_open))
            if oe.n:
                entry["openness_mae"] = oe.mean_abs
            entry["mean_openness_by_truth"] = {
                str(lab): float(np.array(p_open)[t == lab].mean())
                for lab in (0, 1, -1) if (t == lab).any()
            }
            if probs:
                pb = (np.array(probs) > 0.5).astype(np.int8)
                b = binary_scores(t, pb)
                entry["detector_per_eye"] = {"accuracy": b.accuracy, "f1": b.f1, "n": b.n}
                for e, key in ((0, "detector_right"), (1, "detector_left")):
                    b = binary_scores(t[:, e], pb[:, e])
                    entry[key] = {"accuracy": b.accuracy, "f1": b.f1, "n": b.n}
        if s2m_med:
            entry["s2m_median_mm_mean"] = float(np.mean(s2m_med))
        out["methods"][name] = entry
    return out


def markdown(res: dict) -> str:
    """A table of the scores."""
    rows = [f"**{res['dataset']} / {res['split']}** ({res['n']} images, closed below "
            f"openness {res['threshold']})", "",
            "| method | ok / all | s/img | eye acc | eye F1 | right F1 | left F1 | image acc "
            "| image F1 | open. MAE | S2M med mm |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in res["methods"].items():
        if "skipped" in e:
            rows.append(f"| {name} | {e['skipped']} |" + " |" * 9)
            continue
        cov = e["coverage"]
        n_all = sum(cov.values())

        def f(x, key="f1", e=e):
            return f"{e[x][key]:.3f}" if x in e else "-"

        rows.append(
            f"| {name} | {cov.get('ok', 0)} / {n_all} | {e['seconds_per_image']:.3f} | "
            f"{f('per_eye', 'accuracy')} | {f('per_eye')} | {f('right')} | {f('left')} | "
            f"{f('image', 'accuracy')} | {f('image')} | "
            f"{e.get('openness_mae', float('nan')):.3f} | "
            f"{e.get('s2m_median_mm_mean', float('nan')):.2f} |"
        )
        if "detector_per_eye" in e:
            d = e["detector_per_eye"]
            rows.append(f"| ↳ its eye-state detector (P>0.5) | | | {d['accuracy']:.3f} | "
                        f"{d['f1']:.3f} | {e['detector_right']['f1']:.3f} | "
                        f"{e['detector_left']['f1']:.3f} | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split", default=None)
    ap.add_argument("--methods", default="fit-landmarks,fit-landmarks-elam")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--s2m", action="store_true", help="also NoW scan-to-mesh where scans exist")
    ap.add_argument("--option", action="append", default=[],
                    help="METHOD.KEY=VALUE method option (repeatable)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    options: dict[str, dict] = {}
    for o in args.option:
        key, _, value = o.partition("=")
        meth, _, k = key.partition(".")
        options.setdefault(meth, {})[k] = value
    res = evaluate(args.dataset, args.split, [m.strip() for m in args.methods.split(",")],
                   args.limit, args.batch, args.s2m, options)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
