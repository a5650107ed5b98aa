"""Reading photos for dataset loaders and detectors: any common file or array -> RGB uint8.

Room: one image normalisation for the whole suite. Grayscale, RGBA, palette and 16-bit
inputs become (H, W, 3) uint8 RGB; an EXIF orientation tag (phone photos) is applied, so the
pixels come out the way a photo viewer shows them; an unreadable file (missing, empty,
truncated, corrupt, or over Pillow's decompression-bomb pixel limit) raises
:class:`ImageError` (a ``ValueError``) with the file name, which the runner records as the
sample's error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: File extensions treated as images by folder datasets (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm")


#: EXIF tag id of the orientation (1 upright ... 6 rotate 90 deg clockwise, 8 counter-clockwise).
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An input that is not a readable image (corrupt file, wrong shape or dtype)."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Normalises an image array to (H, W, 3) uint8 RGB.

    Accepts grayscale (H, W) or (H, W, 1), RGB (H, W, 3) and RGBA (H, W, 4; composited
    over black, so fully transparent pixels become black), in uint8, uint16 (scaled by
    1/257), bool, or float (assumed in [0, 1]; values are clipped).

    Args:
        image: the array.

    Returns:
        A C-contiguous (H, W, 3) uint8 array (the input itself when it already is one).

    Raises:
        ImageError: the array has another shape or dtype, or is empty.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"the image is empty ({arr.shape}).")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("the image contains NaN or infinite values.")
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ImageError(f"integer image of dtype {arr.dtype} has values outside 0..255.")
    else:
        raise ImageError(f"unsupported image dtype {arr.dtype}.")
    arr = arr.astype(np.uint8, copy=False)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.uint16)
        arr = ((arr[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _orientation(im: Any) -> int:
    """EXIF orientation of an opened Pillow image (1, upright, when absent or unreadable)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block must not make the pixels unreadable
        return 1


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as (H, W, 3) uint8 RGB (grayscale, RGBA, 16-bit, palette handled).

    Args:
        path: image file (anything Pillow reads).

    The EXIF orientation tag, when present, is applied (a portrait phone photo stored
    sideways with orientation 6 or 8 comes out upright).

    Returns:
        The RGB image.

    Raises:
        ImageError: the file is missing, truncated, corrupt, not an image, or larger than
            Pillow's pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int64)
                hi = 65535 if arr.max() > 255 else 255
                arr = (np.clip(arr, 0, hi) * 255 + hi // 2) // hi
                return to_rgb_uint8(arr.astype(np.uint8))
            if im.mode == "F":
                arr = np.asarray(im, dtype=np.float32)
                return to_rgb_uint8(arr / max(float(arr.max()), 1.0))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
            elif im.mode != "L":
                im = im.convert("RGB")
            return to_rgb_uint8(np.asarray(im))
    except FileNotFoundError as exc:
        raise ImageError(f"image file {str(path)!r} does not exist.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image {str(path)!r} is too large to read: {exc} Downscale it, or raise "
            f"PIL.Image.MAX_IMAGE_PIXELS if the file is trusted."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {str(path)!r}: {exc}") from exc


def as_image(image: np.ndarray | str | Path) -> np.ndarray:
    """An RGB uint8 image from an array or a file path (see :func:`to_rgb_uint8`)."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    return to_rgb_uint8(image)


