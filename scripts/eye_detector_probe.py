"""Shortcut probe of ELAM's eye-state CNN alone: closed calls per photo source, masked and plain.

Room: a measuring script (issue 16), nothing in the package depends on it. For every photo of
``real-faces-val`` and of ``real-faces-val-eyes-masked`` (the same photos, eye regions
painted over: ``benchmark/datasets/masked.py``), dlib's landmarks on the photo the CNN sees,
the CNN's P(closed) per eye, and per source (CEW = the pool's closed faces, UTKFace = its
open faces) the share of eyes called closed (P > 0.5). A CNN that reads eyes calls masked
eyes of both sources closed at the same rate. With ``--blink-clip DIR`` (built by
``scripts/build_blink_clip.py``) it also scores the per-eye labels of that same-setup clip.

Usage::

    python scripts/eye_detector_probe.py                      # the shipped weights
    python scripts/eye_detector_probe.py /tmp/other.pt --blink-clip /tmp/blink-clip

Needs the research-only pool (``$EYEBENCH_REAL_FACES`` or ``../shared/data/real-faces``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def probe_pool(detector, provider) -> list[tuple[str, str, float, int]]:
    """Rows (dataset, source, closed-call rate over eyes, eyes) for masked and plain photos."""
    from benchmark.datasets.masked import MaskedRealFacesDataset
    from benchmark.datasets.real_faces import RealFacesDataset
    from methods.landmarks import as_image

    out = []
    for name, ds in (("masked", MaskedRealFacesDataset()), ("plain", RealFacesDataset())):
        calls: dict[str, list[bool]] = {}
        for sid in ds.sample_ids():
            s = ds.load_sample(sid)
            try:
                img = as_image(s.load_image())
            except Exception:  # no face to place the masks on: skipped, as every method
                continue
            res = provider.detect(img)
            if not res.ok:
                continue
            p = np.asarray(detector.predict(img, res.landmarks))
            calls.setdefault(s.meta["source"], []).extend((p > 0.5).tolist())
        for source, c in sorted(calls.items()):
            out.append((name, source, float(np.mean(c)), len(c)))
    return out


def probe_clip(detector, provider, root: Path) -> dict[str, float]:
    """Per-eye F1 (closed positive) and counts on a labelled ``photo-folder`` clip."""
    from benchmark.datasets.photo_folder import PhotoFolderDataset
    from benchmark.types import EYE_CLOSED, EYE_OPEN
    from methods.landmarks import as_image

    ds = PhotoFolderDataset(root=root)
    ys, ps = [], []
    for sid in ds.sample_ids():
        s = ds.load_sample(sid)
        img = as_image(s.load_image())
        res = provider.detect(img)
        if not res.ok:
            continue
        p = np.asarray(detector.predict(img, res.landmarks))
        for e in (0, 1):
            if s.eye_state[e] in (EYE_OPEN, EYE_CLOSED):
                ys.append(bool(s.eye_state[e] == EYE_CLOSED))
                ps.append(bool(p[e] > 0.5))
    y, p = np.array(ys), np.array(ps)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    return {"eyes": len(y), "closed": int(y.sum()), "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "false_closes": fp, "missed": fn}


def main(argv: list[str] | None = None) -> int:
    """Prints the probe table (and the clip's scores); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", default=None, help="CNN weights (default: shipped)")
    parser.add_argument("--blink-clip", type=Path, default=None, help="labelled clip folder")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from methods.elam.eye_detector import EyeStateDetector
    from methods.landmarks import get_provider

    detector = EyeStateDetector(args.weights) if args.weights else EyeStateDetector()
    provider = get_provider("dlib")
    print(f"{'photos':8} {'source':8} {'closed calls':>12} {'eyes':>6}")
    for name, source, rate, n in probe_pool(detector, provider):
        print(f"{name:8} {source:8} {100 * rate:11.1f}% {n:6d}")
    if args.blink_clip:
        r = probe_clip(detector, provider, args.blink_clip)
        print(f"blink clip: F1 {r['f1']:.3f} over {r['eyes']} eyes ({r['closed']} closed), "
              f"{r['false_closes']} false closes, {r['missed']} missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
