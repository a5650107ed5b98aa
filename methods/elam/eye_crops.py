"""The eye-crop rule shared by the eye-state detector's training and inference.

Room: landmarks + photo -> two canonical grey eye patches. One rule, used everywhere, so the
detector sees at inference exactly what it was trained on.

Rule: for each eye, the axis-aligned square centred on the bounding box of its 6 landmarks
(36-41 or 42-47), with side ``enlarge`` (default 1.8) times the box's longer side, resampled
(antialiased bilinear) to ``size`` x ``size`` grey pixels in [0, 1]. Eye 1 (the subject's
left, landmarks 42-47) is mirrored left-right so that both crops show the eye with its outer
corner on the left: one network serves both eyes. Parts of the square outside the photo
repeat the photo's border pixels.

Example::

    from methods.elam.eye_crops import cut_eye_crops
    crops = cut_eye_crops(image, landmarks)     # (2, 32, 32) float32, eye 0 then eye 1
"""

from __future__ import annotations

import numpy as np

from methods.elam.config import CROP_SIZE, ENLARGE

#: Smallest square side, pixels (degenerate landmarks still give a crop).
MIN_SIDE = 4.0

_EYE_SLICES = (slice(36, 42), slice(42, 48))


def eye_boxes(landmarks: np.ndarray, enlarge: float = ENLARGE) -> np.ndarray:
    """Square crop boxes of both eyes.

    Args:
        landmarks: (68, 2) pixel landmarks.
        enlarge: side of the square over the longer side of the eye's landmark box.

    Returns:
        (2, 3) float64 rows (cx, cy, side) in pixels, eye-index order.

    Raises:
        ValueError: landmarks are not (68, 2) or not finite.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite (68, 2) pixels, got shape {lm.shape}.")
    out = np.empty((2, 3))
    for e, sl in enumerate(_EYE_SLICES):
        pts = lm[sl]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        out[e, :2] = (lo + hi) / 2.0
        out[e, 2] = max(float((hi - lo).max()) * enlarge, MIN_SIDE)
    return out


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        return img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] >= 3:
        rgb = img[:, :, :3].astype(np.float32)
        # ITU-R 601 luma, the same weights as PIL's "L" conversion.
        return rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0].astype(np.float32)
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got {img.shape}.")


def crop_square(
    gray: np.ndarray, cx: float, cy: float, side: float, size: int, mirror: bool = False
) -> np.ndarray:
    """Resamples the square (cx, cy, side) of a grey image to (size, size), antialiased.

    Args:
        gray: (H, W) float32 grey image, any range.
        cx: square centre x, pixels (continuous frame: pixel i covers [i, i + 1]).
        cy: square centre y, pixels.
        side: square side, pixels.
        size: output side, pixels.
        mirror: flip the result left-right.

    Returns:
        (size, size) float32 in the input's range; outside the image repeats its border.
    """
    from PIL import Image

    h, w = gray.shape
    x0, y0 = cx - side / 2.0, cy - side / 2.0
    x1, y1 = x0 + side, y0 + side
    # pad with the border so the square is inside the (padded) image
    pl = int(np.ceil(max(0.0, -x0))) + 1
    pt = int(np.ceil(max(0.0, -y0))) + 1
    pr = int(np.ceil(max(0.0, x1 - w))) + 1
    pb = int(np.ceil(max(0.0, y1 - h))) + 1
    ix0, iy0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    ix1, iy1 = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
    if ix1 <= ix0 or iy1 <= iy0:
        # the square lies entirely outside the image: use the nearest border pixel
        value = gray[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))]
        return np.full((size, size), value, np.float32)
    sub = gray[iy0:iy1, ix0:ix1]
    sub = np.pad(sub, ((pt, pb), (pl, pr)), mode="edge")
    ox, oy = ix0 - pl, iy0 - pt  # padded-sub pixel (0, 0) sits at image pixel (ox, oy)
    im = Image.fromarray(np.ascontiguousarray(sub, dtype=np.float32), mode="F")
    box = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
    out = np.asarray(im.resize((size, size), Image.BILINEAR, box=box), dtype=np.float32)
    if mirror:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def cut_eye_crops(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = CROP_SIZE,
    enlarge: float = ENLARGE,
    context: float = 1.0,
) -> np.ndarray:
    """The two canonical eye crops of a photo.

    Args:
        image: (H, W, 3) uint8 RGB (or (H, W) grey) photo.
        landmarks: (68, 2) pixel landmarks of that photo.
        size: output side in pixels (multiplied by ``context``).
        enlarge: crop-rule enlargement (see the module docstring).
        context: > 1 cuts a proportionally larger square at the same pixel density
            (training cuts 1.5x to leave room for rotation/scale augmentation).

    Returns:
        (2, S, S) float32 grey crops in [0, 1], S = round(size * context); eye 1 mirrored.
    """
    gray = _gray(image) / 255.0
    boxes = eye_boxes(landmarks, enlarge)
    out_size = int(round(size * context))
    return np.stack(
        [
            crop_square(gray, cx, cy, side * context, out_size, mirror=(e == 1))
            for e, (cx, cy, side) in enumerate(boxes)
        ]
    ).clip(0.0, 1.0)
