"""Contact sheet of the synthetic benchmark: eye states (columns) x head yaw (rows).

Room: the README figure ``docs/img/synthetic_contact_sheet.png``. Landmarks are drawn as
dots: eyelids cyan, the rest green, landmarks hidden by the face (strong yaw) red.

Regenerate::

    python -m benchmark.synthetic.contact_sheet [--n 150] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from benchmark.synthetic.config import CATEGORIES

logger = logging.getLogger(__name__)

#: Rows: |yaw| bands in degrees.
YAW_BANDS = ((0.0, 12.0), (12.0, 28.0), (28.0, 45.0))
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "img" / "synthetic_contact_sheet.png"


def _draw(img: np.ndarray, lm: np.ndarray, visible: list[bool], scale: float) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img).resize((round(img.shape[1] * scale), round(img.shape[0] * scale)),
                                     Image.LANCZOS)
    d = ImageDraw.Draw(im)
    for i, ((x, y), vis) in enumerate(zip(lm * scale, visible)):
        col = (0, 230, 255) if 36 <= i < 48 else (60, 255, 60)
        if not vis:
            col = (255, 50, 50)
        d.ellipse((x - 1.1, y - 1.1, x + 1.1, y + 1.1), fill=col)
    return np.asarray(im)


def make_contact_sheet(n: int = 150, out: Path = DEFAULT_OUT, tile: int = 176,
                       **options) -> Path:
    """Writes the contact sheet from the first ``n`` ``test`` samples.

    Args:
        n: samples to choose from (generated if missing).
        out: PNG path.
        tile: tile size in pixels (images are 224 px).
        **options: synthetic dataset options.

    Returns:
        The written path.
    """
    from PIL import Image, ImageDraw

    from benchmark.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="test", n=n, **options)
    picked: dict[tuple[int, int], object] = {}
    for sid in ds.sample_ids():
        s = ds.load_sample(sid)
        col = CATEGORIES.index(s.meta["eye_category"])
        yaw = abs(s.meta["pose_deg"]["yaw"])
        row = next((r for r, (lo, hi) in enumerate(YAW_BANDS) if lo <= yaw < hi), None)
        if row is not None and (row, col) not in picked:
            picked[(row, col)] = s
        if len(picked) == len(YAW_BANDS) * len(CATEGORIES):
            break
    label_h = 14
    head_h = 16
    w = tile * len(CATEGORIES)
    h = head_h + (tile + label_h) * len(YAW_BANDS)
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(CATEGORIES):
        draw.text((c * tile + 4, 2), name.replace("_", " "), fill=(0, 0, 0))
    for (r, c), s in picked.items():
        scale = tile / s.load_image().shape[1]
        img = _draw(s.load_image(), s.landmarks2d, s.meta["landmarks_visible"], scale)
        y0 = head_h + r * (tile + label_h)
        sheet.paste(Image.fromarray(img), (c * tile, y0))
        op = s.eye_openness
        draw.text((c * tile + 3, y0 + tile + 1),
                  f"yaw {s.meta['pose_deg']['yaw']:+.0f}  open {op[0]:.2f}/{op[1]:.2f}",
                  fill=(0, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the committed figure small (well under 500 kB).
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, optimize=True)
    logger.info("contact sheet: %s (%d tiles, %.0f kB)", out, len(picked),
                out.stat().st_size / 1024)
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: regenerate the contact sheet."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=150, help="test samples to choose from")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(make_contact_sheet(args.n, args.out))


if __name__ == "__main__":
    main()
