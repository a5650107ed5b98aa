"""Bilinear affine image sampling with the pixel-centre convention of skimage and OpenCV.

Room: image preprocessing shared by adapters that must crop exactly as their official code
(DECA's skimage ``warp``, insightface's ``cv2.warpAffine`` in MICA). Output pixel (x, y)
samples the input at ``A [x, y] + c`` with pixel centres on integer coordinates; a
neighbour outside the image counts as 0 (skimage ``mode="constant"``, OpenCV
``BORDER_CONSTANT``). PIL's affine transform uses a different convention
(``A (x + 0.5) + c - 0.5``) and truncates to uint8, so it is not used for these crops.
"""

from __future__ import annotations

import numpy as np


def sample_affine(image: np.ndarray, a: np.ndarray, c: np.ndarray,
                  out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of ``image`` on an output grid mapped by ``A p + c``.

    Args:
        image: (H, W) or (H, W, C) array (any numeric dtype).
        a: (2, 2) output pixel -> input pixel linear part (x, y order).
        c: (2,) offset, input pixels.
        out_hw: output (height, width).

    Returns:
        (h, w[, C]) float64 samples (input units, not rounded).
    """
    img = np.asarray(image, np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    h_in, w_in = img.shape[:2]
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    ys, xs = np.mgrid[0:out_hw[0], 0:out_hw[1]].astype(np.float64)
    sx = a[0, 0] * xs + a[0, 1] * ys + c[0]
    sy = a[1, 0] * xs + a[1, 1] * ys + c[1]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    out = np.zeros((*out_hw, img.shape[2]))
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < w_in) & (yi >= 0) & (yi < h_in)
            vals = np.zeros_like(out)
            vals[ok] = img[yi[ok], xi[ok]]
            out += wx * wy * vals
    return out[..., 0] if squeeze else out
