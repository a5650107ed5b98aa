"""On-disk landmark cache keyed by image content and provider identity.

Room: detect once. Training the eye-state detector, evaluating ``fit-landmarks`` and
``fit-landmarks-elam``, and the dlib measurement script all ask for the same photos'
landmarks; this cache answers repeats without running the detector.

Layout: ``$EYEBENCH_CACHE/landmarks/<provider identity>/<hh>/<sha256>.npz`` (the cache root
defaults to ``<project>/.cache``, which git ignores). The key is the sha256 of the decoded
RGB pixels (shape included) plus the face box if one was given, so re-encoded copies of a
file share nothing but renamed copies share everything. ``ok`` and ``no_face`` results are
cached; ``error`` results are not (they are cheap and may be transient).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from benchmark.cache import file_mode
from benchmark.types import FaceSample
from methods.landmarks.base import (
    Box,
    ImageError,
    LandmarkProvider,
    LandmarkResult,
    as_image,
)

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def cache_root() -> Path:
    """``$EYEBENCH_CACHE`` or ``<project>/.cache``."""
    env = os.environ.get("EYEBENCH_CACHE")
    return Path(env).expanduser() if env else PROJECT_ROOT / ".cache"


def image_key(rgb: np.ndarray, box: Box | None = None) -> str:
    """sha256 hex digest of an RGB uint8 image's pixels and shape (and the box, if any)."""
    h = hashlib.sha256(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    if box is not None:
        h.update(repr(tuple(round(float(v), 3) for v in box)).encode())
    return h.hexdigest()


class CachedProvider(LandmarkProvider):
    """Wraps a provider with the on-disk cache (same interface).

    Args:
        provider: the provider whose results are cached.
        root: cache root (default :func:`cache_root`).
    """

    def __init__(self, provider: LandmarkProvider, root: str | Path | None = None) -> None:
        self.provider = provider
        self.name = provider.name
        self.root = Path(root) if root else cache_root()
        self.hits = 0
        self.misses = 0

    def identity(self) -> str:
        """The wrapped provider's identity."""
        return self.provider.identity()

    def _path(self, key: str) -> Path:
        folder = _SAFE.sub("_", self.identity())
        return self.root / "landmarks" / folder / key[:2] / f"{key}.npz"

    def detect(self, image: np.ndarray | str | Path, box: Box | None = None) -> LandmarkResult:
        """Cached :meth:`LandmarkProvider.detect` of the wrapped provider."""
        try:
            rgb = as_image(image)
        except ImageError as exc:
            return LandmarkResult.failed("error", str(exc))
        path = self._path(image_key(rgb, box))
        cached = _read(path)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        result = self.provider.detect(rgb, box)
        if result.status in ("ok", "no_face"):
            _write(path, result)
        return result

    def detect_sample(self, sample: FaceSample, box: Box | None = None) -> LandmarkResult:
        """Cached landmarks of a sample (ground truth is not cached: it is free)."""
        if self.provider.name == "gt":
            return self.provider.detect_sample(sample, box)
        return super().detect_sample(sample, box)


def _read(path: Path) -> LandmarkResult | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            status = str(d["status"])
            lm = d["landmarks"] if "landmarks" in d.files else None
            box = tuple(float(v) for v in d["box"]) if "box" in d.files else None
            score = float(d["score"]) if "score" in d.files else None
            error = str(d["error"]) if "error" in d.files else None
            n_faces = int(d["n_faces"])
        if status not in ("ok", "no_face") or (status == "ok" and lm is None):
            raise ValueError(f"bad status {status!r}")
        return LandmarkResult(status=status, landmarks=lm, box=box, score=score,  # type: ignore[arg-type]
                              error=error, n_faces=n_faces)
    except Exception as exc:  # any damage: drop the entry and recompute
        logger.warning("landmark cache entry %s is unreadable (%s); recomputing", path, exc)
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _write(path: Path, result: LandmarkResult) -> None:
    arrays: dict[str, np.ndarray] = {
        "status": np.array(result.status), "n_faces": np.array(result.n_faces),
    }
    if result.landmarks is not None:
        arrays["landmarks"] = np.asarray(result.landmarks, np.float32)
    if result.box is not None:
        arrays["box"] = np.asarray(result.box, np.float64)
    if result.score is not None:
        arrays["score"] = np.array(result.score, np.float64)
    if result.error is not None:
        arrays["error"] = np.array(result.error)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.chmod(tmp, file_mode())  # the user's umask, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache must not stop detection
        logger.warning("cannot write landmark cache %s: %s", path, exc)
