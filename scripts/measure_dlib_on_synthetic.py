"""How dlib's 68-point predictor behaves on the synthetic test split (blinks, winks, half).

Measures, per eye state (open / half / closed, from the synthetic ground truth):

* the face detection rate (dlib HOG, the suite's ``DlibProvider`` settings);
* the eyelid landmark error: mean |detected - GT| over the four eyelid points (37, 38, 40,
  41 or 43, 44, 46, 47), in pixels divided by the GT inter-ocular (outer-corner 36-45)
  distance;
* the signed vertical error of the upper-lid points (positive = detected *above* the truth,
  i.e. the lid read more open), same normalisation;
* the 2D eye aspect ratio (EAR, Soukupova & Cech 2016: mean upper-lower distance over the
  corner distance) of the detected and of the GT landmarks, and the share of eyes whose
  detected EAR is above the usual 0.20 blink threshold ("read as open").

Prints a markdown paragraph + table (for data_cards/synthetic.md) and optionally writes the
raw numbers as JSON. Detection results are cached (``$EYEBENCH_CACHE/landmarks``).

Usage::

    nice -n 10 python scripts/measure_dlib_on_synthetic.py [--split test] [--limit N]
        [--json results/tmp/dlib_on_synthetic.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.types import EYE_CLOSED, EYE_OPEN  # noqa: E402

EAR_BLINK = 0.20
UPPER = ((37, 38), (43, 44))
LOWER = ((41, 40), (47, 46))
CORNERS = ((36, 39), (42, 45))


def ear(lm: np.ndarray, e: int) -> float:
    """2D eye aspect ratio of eye ``e`` from (68, 2) landmarks."""
    gaps = [np.linalg.norm(lm[u] - lm[lo]) for u, lo in zip(UPPER[e], LOWER[e])]
    return float(np.mean(gaps) / max(np.linalg.norm(lm[CORNERS[e][0]] - lm[CORNERS[e][1]]), 1e-6))


def category(sample, e: int) -> str:
    """The state name (open, half or closed) of eye ``e`` of a synthetic sample."""
    names = sample.meta.get("eye_states") or sample.meta.get("eye_state_names")
    if isinstance(names, (list, tuple)) and len(names) == 2 and isinstance(names[e], str):
        n = names[e].lower()
        if n.startswith("half"):
            return "half"
        if n.startswith("clos") or n.startswith("blink"):
            return "closed"
        if n.startswith("open") or n.startswith("wide"):
            return "open"
    s = int(sample.eye_state[e])
    return {EYE_OPEN: "open", EYE_CLOSED: "closed"}.get(s, "half")


def measure(split: str = "test", limit: int | None = None, options: dict | None = None) -> dict:
    """Runs dlib on the split and returns per-category statistics."""
    from tqdm.auto import tqdm

    from benchmark.datasets import DATASETS
    from methods.landmarks import as_image, get_provider

    ds = DATASETS.get("synthetic")(split=split, **(options or {}))
    ids = ds.sample_ids()[:limit] if limit else ds.sample_ids()
    provider = get_provider("dlib")
    rows = []
    n_faces = n_det = 0
    for sid in tqdm(ids, desc=f"dlib on synthetic/{split}", unit="img"):
        s = ds.load_sample(sid)
        gt = np.asarray(s.landmarks2d, np.float64)
        n_faces += 1
        res = provider.detect(as_image(s.load_image()))
        cats = [category(s, e) for e in (0, 1)]
        if not res.ok:
            for e in (0, 1):
                rows.append({"cat": cats[e], "detected": False})
            continue
        n_det += 1
        det = res.landmarks.astype(np.float64)
        iod = np.linalg.norm(gt[36] - gt[45])
        for e in (0, 1):
            lids = list(UPPER[e]) + list(LOWER[e])
            err = np.linalg.norm(det[lids] - gt[lids], axis=1).mean() / iod
            up = list(UPPER[e])
            lift = float((gt[up, 1] - det[up, 1]).mean() / iod)  # + = detected above truth
            rows.append({
                "cat": cats[e], "detected": True, "lid_err": float(err), "upper_lift": lift,
                "ear_det": ear(det, e), "ear_gt": ear(gt, e),
                "openness_gt": float(s.eye_openness[e]),
            })
    stats = {"split": split, "n_images": n_faces, "n_detected": n_det,
             "detector": provider.identity(), "per_state": {}}
    for cat in ("open", "half", "closed"):
        r = [x for x in rows if x["cat"] == cat]
        d = [x for x in r if x["detected"]]
        if not r:
            continue
        stats["per_state"][cat] = {
            "eyes": len(r),
            "detected": len(d),
            "lid_err_iod": float(np.mean([x["lid_err"] for x in d])) if d else None,
            "upper_lift_iod": float(np.mean([x["upper_lift"] for x in d])) if d else None,
            "ear_gt": float(np.mean([x["ear_gt"] for x in d])) if d else None,
            "ear_det": float(np.mean([x["ear_det"] for x in d])) if d else None,
            "read_open": float(np.mean([x["ear_det"] > EAR_BLINK for x in d])) if d else None,
        }
    return stats


def markdown(stats: dict) -> str:
    """The paragraph and table for the synthetic data card."""
    ps = stats["per_state"]
    rate = stats["n_detected"] / max(stats["n_images"], 1)
    lines = [
        f"**dlib's 68-point predictor on the synthetic `{stats['split']}` split.** dlib's HOG "
        f"detector finds a face in {stats['n_detected']} of {stats['n_images']} images "
        f"({100 * rate:.1f} %). On the detected faces, per eye by ground-truth state "
        "(lid error: mean distance of the four eyelid points to the truth over the outer "
        "inter-ocular distance; upper-lid lift: how far above the true upper lid the "
        "detected one sits, same unit; EAR: 2D eye aspect ratio, detected vs ground truth; "
        f"read open: detected EAR above the usual {EAR_BLINK:.2f} blink threshold):",
        "",
        "| eye state | eyes | lid error / IOD | upper-lid lift / IOD | EAR (GT) | EAR (dlib) "
        "| read open |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cat in ("open", "half", "closed"):
        if cat not in ps:
            continue
        p = ps[cat]
        if not p["detected"]:
            continue
        lines.append(
            f"| {cat} | {p['detected']} | {p['lid_err_iod']:.3f} | {p['upper_lift_iod']:+.3f} | "
            f"{p['ear_gt']:.3f} | {p['ear_det']:.3f} | {100 * p['read_open']:.0f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    stats = measure(args.split, args.limit)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(stats, indent=1) + "\n")
    print(markdown(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
