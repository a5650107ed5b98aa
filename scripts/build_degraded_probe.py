"""Greyscale, downscaled copies of ``real-faces-val`` as a ``photo-folder`` (issue 16 probe).

Room: a measuring script, nothing in the package depends on it. Issue 16's held-out
same-setup sets are grey studio portraits with small faces, where the `elam-ldl` of that
time called most open eyes closed. This probe asks whether grey, small photos alone do
that: every photo of the pool's validation part (``RealFacesDataset``, research-only) is
converted to grey (kept as three equal channels) and shrunk so that its shorter side is
``--short-side`` pixels (area resampling; photos already smaller stay as they are), written
as PNG under ``OUT/<source>/`` with a ``labels.csv`` (per-eye labels, subject) that the
``photo-folder`` dataset reads. Source is the folder, so per-source rates come from the
sample ids. The written photos inherit the pool's licences: research use, never commit them.

Usage::

    python scripts/build_degraded_probe.py /tmp/grey-small [--short-side 112] [--colour]
    python -m benchmark run --methods elam-ldl,fit-landmarks-elam --datasets photo-folder
        --dataset-option photo-folder.root=/tmp/grey-small --output-dir /tmp/grey-run --no-plots

    (one command line)
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STATE = {0: "open", 1: "closed"}


def degrade(image: np.ndarray, short_side: int, grey: bool) -> np.ndarray:
    """The photo in grey (three equal channels) and at most ``short_side`` px on its short side."""
    from PIL import Image

    img = Image.fromarray(image)
    scale = short_side / min(img.size)
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BOX)
    if grey:
        img = img.convert("L").convert("RGB")
    return np.asarray(img)


def main(argv: list[str] | None = None) -> int:
    """Writes the folder; exit 2 when the pool is not available."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created; must be empty or new)")
    parser.add_argument("--short-side", type=int, default=112,
                        help="shorter image side in pixels after shrinking (default 112)")
    parser.add_argument("--colour", action="store_true", help="keep colour (shrink only)")
    args = parser.parse_args(argv)
    if args.short_side < 16:
        parser.error("--short-side must be at least 16")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")

    from PIL import Image

    from benchmark.datasets.real_faces import RealFacesDataset

    ds = RealFacesDataset()
    avail = ds.availability()
    if not avail.ok:
        print(f"real-faces-val is not available: {avail.reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    ids = ds.sample_ids()
    for i, sid in enumerate(ids):
        s = ds.load_sample(sid)
        source = str(s.meta.get("source", "unknown")).lower()
        rel = f"{source}/{sid}.png"
        (args.out / source).mkdir(exist_ok=True)
        out = degrade(s.load_image(), args.short_side, grey=not args.colour)
        Image.fromarray(out).save(args.out / rel)
        state = [STATE.get(int(v), "") for v in s.eye_state]
        rows.append({"file": rel, "right_eye": state[0], "left_eye": state[1],
                     "subject": s.subject})
        if (i + 1) % 100 == 0 or i + 1 == len(ids):
            print(f"{i + 1}/{len(ids)}", file=sys.stderr)
    with open(args.out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "right_eye", "left_eye", "subject"])
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} photos -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
