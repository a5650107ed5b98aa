"""``3ddfa-v2``: 3DDFA_V2 (Guo et al., ECCV 2020) from its official files.

Room: the adapter. Our own network (:mod:`methods.nets.mobilenet_v1`), face model reader
(:mod:`methods.facemodel.bfm_3ddfa`) and preprocessing, written to load the released files
and to reproduce the official test-time pipeline (cleardusk/3DDFA_V2 @1b6c676: ``TDDFA.py``,
``utils/functions.py``, ``utils/tddfa_util.py``, ``bfm/bfm.py``, ``demo_video.py``):

1. **Face box.** dlib's detector (``methods.landmarks``), not FaceBoxes as upstream: every
   other method here starts from dlib, so all methods fail on the same photos (coverage is
   comparable) and no second detector has to be re-implemented. The ROI rule below was tuned
   for FaceBoxes' boxes, not dlib's; the second pass (step 5) re-centres the crop on the
   reconstructed face (25 px up on the in-repo 224 px closed-eye photo).
2. **ROI** (``parse_roi_box_from_bbox``): centre shifted down by 0.14 x the mean box side, a
   square of ``int(1.58 x`` mean side ``)``.
3. **Crop** (``crop_img``): corners rounded (Python ``round``), parts outside the image
   zero-filled; then resized to 120 x 120 as ``cv2.resize(..., INTER_LINEAR)`` does (our
   numpy version is bit-exact with OpenCV's 8-bit fixed-point path; no OpenCV needed).
   Channels **BGR** as upstream (it reads images with ``cv2.imread``), normalised
   ``(x - 127.5) / 128``.
4. **Regression**: MobileNetV1 -> 62 values, de-normalised with
   ``configs/param_mean_std_62d_120x120.pkl``: ``p * std + mean``; ``p[:12]`` is a 3 x 4
   matrix ``[f R | t]`` (scaled rotation, translation), then 40 shape and 10 expression
   coefficients. Vertices in the 120-px crop: ``f R (u + W_shp a + W_exp b) + t`` with y up,
   mapped to the image as ``similar_transform`` does (x - 1, y -> 120 - y, scaled by the ROI).
5. **Refinement** (what upstream does on a video's first frame): the ROI is rebuilt from the
   reconstructed points with ``parse_roi_box_from_landmark`` (square around their bounding
   box, side = its diagonal) and steps 3-4 run again. Option ``refine``: ``dense`` (default:
   all 38,365 vertices, as upstream for dense output), ``sparse`` (its 68 landmarks) or
   ``none`` (single pass, as upstream's ``demo.py``).

Output: the no-neck BFM mesh (38,365 vertices, 76,073 triangles) in the model frame, in
metres (BFM micrometres x 1e-6); ``neutral_vertices`` with the expression coefficients
zeroed; 68 landmarks at the model's keypoint vertices; ``landmarks2d`` and
``vertices_image`` projected into the input photo.

Files: a 3DDFA_V2 checkout (``TDDFA_V2_ROOT`` or ``--method-option 3ddfa-v2.root=PATH``)
with ``weights/mb1_120x120.pth`` or ``weights/mb05_120x120.pth`` (option ``checkpoint``:
``auto``, a name or a path), ``configs/param_mean_std_62d_120x120.pkl``, ``configs/tri.pkl``
and the face model: ``configs/bfm_noneck_v3.pkl`` or ``bfm_v1_bases/`` + ``configs/indices.npy``
(see :mod:`methods.facemodel.bfm_3ddfa`). The checkpoint is read with
``torch.load(weights_only=True)``, pickles with the allow-list of
:mod:`methods.safe_pickle`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmark.types import Availability, FaceSample, Prediction
from methods.base import Method, MethodCard, RequiredFile

#: Network input side (pixels) of the released models.
SIZE = 120
PARAM_MEAN_STD = Path("configs/param_mean_std_62d_120x120.pkl")
CHECKPOINTS = ("mb1_120x120", "mb05_120x120")
REFINE = ("dense", "sparse", "none")

CARD = MethodCard(
    name="3ddfa-v2",
    description="3DDFA_V2 (MobileNetV1, dense no-neck BFM mesh) from the official files",
    topology="bfm-noneck",
    license="3DDFA_V2 code and weights: MIT; BFM-derived face model: academic use only "
            "(never shipped)",
    reference="https://github.com/cleardusk/3DDFA_V2",
    citation="Guo, Zhu, Yang, Yang, Lei, Li. Towards Fast, Accurate and Stable 3D Dense Face "
             "Alignment. ECCV 2020. Face model: Paysan et al., A 3D Face Model for Pose and "
             "Illumination Invariant Face Recognition, AVSS 2009",
    revision="1",
    training_datasets=("300W-LP",),
    required_files=(
        RequiredFile("root", "TDDFA_V2_ROOT",
                     "a 3DDFA_V2 checkout (github.com/cleardusk/3DDFA_V2: weights/*.pth, "
                     "configs/param_mean_std_62d_120x120.pkl, configs/tri.pkl, and "
                     "configs/bfm_noneck_v3.pkl or bfm_v1_bases/ + configs/indices.npy)"),
    ),
    extra="landmarks",
    python_modules=("dlib",),
)


# --------------------------------------------------------------------------- pure helpers


def roi_box_from_bbox(box: Sequence[float]) -> list[float]:
    """3DDFA_V2's ``parse_roi_box_from_bbox``: square crop box from a face box.

    Args:
        box: (x0, y0, x1, y1, ...) face box in pixels (extra values ignored).

    Returns:
        [sx, sy, ex, ey]: centre moved down by 0.14 x the mean side, side ``int(1.58 x``
        mean side ``)``.
    """
    left, top, right, bottom = (float(v) for v in box[:4])
    old = (right - left + bottom - top) / 2.0
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old * 0.14
    side = int(old * 1.58)
    return [cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0]


def roi_box_from_points(points: np.ndarray) -> list[float]:
    """3DDFA_V2's ``parse_roi_box_from_landmark``: square box from (N, 2+) image points.

    The points' bounding box is made square around its centre (side = the longer side);
    the crop is the square of side = that square's diagonal, same centre.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2 or pts.shape[0] < 2:
        raise ValueError(f"points must be (N, 2) with N >= 2, got {pts.shape}.")
    x0, y0 = pts[:, 0].min(), pts[:, 1].min()
    x1, y1 = pts[:, 0].max(), pts[:, 1].max()
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    diag = float(np.sqrt(2.0) * max(x1 - x0, y1 - y0))
    return [cx - diag / 2.0, cy - diag / 2.0, cx + diag / 2.0, cy + diag / 2.0]


def crop_image(image: np.ndarray, roi: Sequence[float]) -> np.ndarray:
    """3DDFA_V2's ``crop_img``: the ROI (corners rounded) with zeros outside the image.

    Args:
        image: (H, W, C) or (H, W) uint8.
        roi: [sx, sy, ex, ey] pixels; corners are rounded with Python's ``round``.

    Raises:
        ValueError: the rounded ROI is empty.
    """
    h, w = image.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi)
    dh, dw = ey - sy, ex - sx
    if dh <= 0 or dw <= 0:
        raise ValueError(f"empty crop box {list(roi)!r}.")
    out = np.zeros((dh, dw) + image.shape[2:], np.uint8)
    # the part of the ROI inside the image, in image and in crop coordinates
    ix0, iy0, ix1, iy1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - sy:iy1 - sy, ix0 - sx:ix1 - sx] = image[iy0:iy1, ix0:ix1]
    return out


def _linear_taps(n_src: int, n_dst: int, clamp: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of OpenCV's linear resize, one axis."""
    pos = ((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0.astype(np.float32)).astype(np.float32)
    if clamp:  # OpenCV clamps the horizontal taps, not the vertical ones
        low, high = i0 < 0, i0 >= n_src - 1
        frac[low | high] = 0.0
        i0 = np.where(low, 0, np.where(high, n_src - 1, i0))
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int64)
    return np.clip(i0, 0, n_src - 1), np.clip(i0 + 1, 0, n_src - 1), w0, w1


def resize_bilinear(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8, bit-exact with ``cv2.resize(INTER_LINEAR)``.

    OpenCV's 8-bit linear resize (what 3DDFA_V2 calls): half-pixel centres, no antialiasing,
    weights quantised to 1/2048; a horizontal pass in exact integers, then a vertical pass
    that drops 4 bits, keeps the high 16 bits of each product and rounds the last 2 bits
    (its SIMD path). Horizontal taps are clamped at the borders, vertical rows are clipped.
    ``tests/test_tddfa_v2.py`` checks equality with OpenCV where it is installed.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {img.shape} {img.dtype}.")
    h, w = img.shape[:2]
    x0, x1, a0, a1 = _linear_taps(w, size, clamp=True)
    y0, y1, b0, b1 = _linear_taps(h, size, clamp=False)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # (H, size, C)
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def normalise(crop_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (3, H, W) float32 ``(x - 127.5) / 128`` (3DDFA_V2's input)."""
    return ((crop_bgr.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1).copy()


def split_params(param: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3DDFA_V2's ``_parse_param`` for 62 values: (f R (3, 3), t (3,), shape (40,), exp (10,)).

    Raises:
        ValueError: not 62 values.
    """
    p = np.asarray(param, np.float64).reshape(-1)
    if p.size != 62:
        raise ValueError(f"3DDFA_V2 parameters are 62 values (12 + 40 + 10), got {p.size}.")
    m = p[:12].reshape(3, 4)
    return m[:, :3], m[:, 3], p[12:52], p[52:62]


def crop_to_image(points: np.ndarray, roi: Sequence[float], size: int = SIZE) -> np.ndarray:
    """3DDFA_V2's ``similar_transform`` without its final depth shift.

    Args:
        points: (N, 3) points in the crop's model space (``f R v + t``: pixels, 1-based,
            y up).
        roi: the crop box [sx, sy, ex, ey].
        size: crop side the network saw.

    Returns:
        (N, 3) float64: x, y image pixels (y down) and z scaled by the mean ROI scale
        (larger = nearer the camera).
    """
    sx, sy, ex, ey = (float(v) for v in roi)
    scale_x, scale_y = (ex - sx) / size, (ey - sy) / size
    out = np.asarray(points, np.float64).copy()
    out[:, 0] = (out[:, 0] - 1.0) * scale_x + sx
    out[:, 1] = (size - out[:, 1]) * scale_y + sy
    out[:, 2] = (out[:, 2] - 1.0) * (scale_x + scale_y) / 2.0
    return out


# --------------------------------------------------------------------------- the adapter


class TDDFAV2(Method):
    """3DDFA_V2's released regressor and face model, run with our code."""

    card = CARD
    option_keys: ClassVar[tuple[str, ...]] = (
        "checkpoint", "refine", "face_model", "landmarks", "cache", "threads")

    # -- files --------------------------------------------------------------------------
    def root(self) -> Path | None:
        """The 3DDFA_V2 checkout (option ``root`` or ``TDDFA_V2_ROOT``), or None."""
        return self.resolve_file("root")

    def checkpoint_path(self, root: Path) -> Path:
        """The regressor file: option ``checkpoint`` (``auto``, a name, or a path).

        ``auto`` takes ``weights/mb1_120x120.pth`` (upstream's default) when present, else
        ``weights/mb05_120x120.pth``.
        """
        opt = str(self.options.get("checkpoint", "auto"))
        if opt == "auto":
            for name in CHECKPOINTS:
                if (root / "weights" / f"{name}.pth").is_file():
                    return root / "weights" / f"{name}.pth"
            return root / "weights" / f"{CHECKPOINTS[0]}.pth"
        if opt in CHECKPOINTS:
            return root / "weights" / f"{opt}.pth"
        return Path(opt).expanduser()

    def needed_files(self, root: Path) -> list[Path]:
        """Every file the output depends on (raises FileNotFoundError for the face model)."""
        from methods.facemodel import bfm_3ddfa as fm

        layout = str(self.options.get("face_model", "auto"))
        if layout == "auto":
            layout = fm.find_layout(root) or "missing"
        if layout == "official":
            model_files = [root / fm.OFFICIAL_PKL]
        elif layout == "v1-bases":
            model_files = [root / fm.V1_DIR / f for f in fm.V1_FILES] + [root / fm.INDICES_NPY]
        elif layout == "missing":
            raise FileNotFoundError(
                f"no face model under {root}: needs {fm.OFFICIAL_PKL} or "
                f"{fm.V1_DIR}/ with {fm.INDICES_NPY}")
        else:
            raise ValueError(f"option face_model must be auto, official or v1-bases, got "
                             f"{layout!r}.")
        return [self.checkpoint_path(root), root / PARAM_MEAN_STD, root / fm.TRI_PKL,
                *model_files]

    def availability(self) -> Availability:
        """Checks dlib, then that the checkout holds every file the pipeline reads."""
        for module in self.card.python_modules:
            if importlib.util.find_spec(module) is None:
                return Availability(False, f"python module {module!r} is not installed",
                                    f"pip install -e '.[{self.card.extra}]'")
        spec = self.card.required_files[0]
        fix = (f"set {spec.env}=/path/to/3DDFA_V2 or --method-option "
               f"{self.card.name}.{spec.key}=/path/to/3DDFA_V2")
        root = self.root()
        if root is None:
            return Availability(False, f"needs {spec.description}", fix)
        if not root.is_dir():
            return Availability(False, f"3DDFA_V2 root {str(root)!r} is not a folder", fix)
        try:
            files = self.needed_files(root)
        except (FileNotFoundError, ValueError) as exc:
            return Availability(False, str(exc).rstrip("."), fix)
        missing = [p for p in files if not p.is_file()]
        if missing:
            return Availability(
                False, f"{missing[0]} is missing",
                f"copy it from github.com/cleardusk/3DDFA_V2 into {root}, or {fix}")
        return Availability(True)

    def checkpoint_hashes(self) -> dict[str, str]:
        """sha256 of the checkpoint, the parameter statistics, triangles and face model."""
        from benchmark.provenance import file_sha256

        root = self.root()
        if root is None or not root.is_dir():
            return {}
        try:
            files = self.needed_files(root)
        except (FileNotFoundError, ValueError):
            return {}
        return {str(p): file_sha256(p) for p in files if p.is_file()}

    # -- loading ------------------------------------------------------------------------
    def load(self, device: str) -> None:
        """Reads the regressor, the parameter statistics and the face model."""
        import torch

        from methods.base import read_torch_file
        from methods.facemodel.bfm_3ddfa import load_3ddfa_bfm
        from methods.landmarks import get_provider
        from methods.nets.mobilenet_v1 import MobileNetV1, strip_module_prefix
        from methods.safe_pickle import as_array, load_restricted

        refine = str(self.options.get("refine", "dense"))
        if refine not in REFINE:
            raise ValueError(f"option refine must be one of {', '.join(REFINE)}, got {refine!r}.")
        self.refine = refine
        torch.set_num_threads(int(self.options.get("threads", 1)))
        root = self.root()
        if root is None:
            raise FileNotFoundError(f"3ddfa-v2 needs {self.card.required_files[0].description}.")
        ckpt_path = self.checkpoint_path(root)
        ckpt = read_torch_file(ckpt_path, "3DDFA_V2 checkpoint")
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{ckpt_path} holds no state dict; is it a 3DDFA_V2 checkpoint?")
        net = MobileNetV1.from_state_dict(strip_module_prefix(state))
        if net.fc_param.out_features != 62:
            raise ValueError(f"{ckpt_path} regresses {net.fc_param.out_features} parameters; "
                             "the 62-parameter models (mb1/mb05_120x120) are supported.")
        self.net = net.eval().to(device)
        stats = load_restricted(root / PARAM_MEAN_STD)
        if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
            raise ValueError(f"{root / PARAM_MEAN_STD} must be a dict with 'mean' and 'std'.")
        self.param_mean = as_array(stats["mean"], np.float64).reshape(-1)
        self.param_std = as_array(stats["std"], np.float64).reshape(-1)
        if self.param_mean.size != 62 or self.param_std.size != 62:
            raise ValueError(f"{root / PARAM_MEAN_STD}: mean and std must hold 62 values.")
        self.face_model = load_3ddfa_bfm(root, str(self.options.get("face_model", "auto")))
        self.model = self.face_model.morphable_model()
        self.topology = self.model.topology()
        self.checkpoint_file = ckpt_path
        source = str(self.options.get("landmarks", "dlib"))
        cached = str(self.options.get("cache", "true")).lower() not in ("0", "false", "no")
        self.provider = get_provider(source, cached=cached)
        self.torch = torch

    # -- inference ----------------------------------------------------------------------
    def regress(self, image_bgr: np.ndarray, roi: Sequence[float]) -> np.ndarray:
        """The 62 de-normalised parameters for one ROI of a BGR uint8 image."""
        torch = self.torch
        x = normalise(resize_bilinear(crop_image(image_bgr, roi), SIZE))
        with torch.no_grad():
            out = self.net(torch.from_numpy(x)[None].to(self.device))[0]
        return out.double().cpu().numpy() * self.param_std + self.param_mean

    def project(self, param: np.ndarray, roi: Sequence[float], vertices_um: np.ndarray
                ) -> np.ndarray:
        """(N, 3) image points (x, y pixels; z larger = nearer) of model-frame vertices."""
        f_r, t, _, _ = split_params(param)
        return crop_to_image(vertices_um @ f_r.T.astype(np.float32) + t, roi)

    def reconstruct(self, image_rgb: np.ndarray, box: Sequence[float]) -> dict[str, Any]:
        """Both passes on one face box; returns the parameters, ROI and image points."""
        bgr = np.ascontiguousarray(image_rgb[..., ::-1])
        roi = roi_box_from_bbox(box)
        param = self.regress(bgr, roi)
        rois = [roi]
        if self.refine != "none":
            _, _, shp, exp = split_params(param)
            verts = self.face_model.vertices(shp, exp)
            if self.refine == "sparse":
                verts = verts[self.face_model.landmark_ids]
            roi = roi_box_from_points(self.project(param, roi, verts))
            param = self.regress(bgr, roi)
            rois.append(roi)
        _, _, shp, exp = split_params(param)
        neutral = self.face_model.vertices(shp, None)
        verts = self.face_model.add_expression(neutral, exp)
        return {"param": param, "rois": rois, "vertices_um": verts, "neutral_um": neutral,
                "image_points": self.project(param, roi, verts)}

    def predict(self, sample: FaceSample) -> Prediction:
        """Detect, crop, regress twice, decode (see the module docstring)."""
        image, det = self.provider.image_and_landmarks(sample)
        if image is None or not det.ok or det.box is None:
            return Prediction.failed(det.status if not det.ok else "error",
                                     det.error or "no face box")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got {image.shape}.")
        r = self.reconstruct(image, det.box)
        f_r, _, _, exp = split_params(r["param"])
        pts = r["image_points"]
        # depth in metres: image z is in pixels, f (px per BFM unit) x ROI scale (px per px)
        sx, sy, ex, ey = r["rois"][-1]
        px_per_m = (np.linalg.norm(f_r[:2], axis=1).mean() * ((ex - sx) + (ey - sy))
                    / (2 * SIZE) / 1e-6)
        depth = (pts[:, 2].max() - pts[:, 2]) / px_per_m
        lid = self.face_model.landmark_ids
        return Prediction(
            status="ok",
            vertices=(r["vertices_um"] * 1e-6).astype(np.float32),
            topology=self.topology,
            landmarks2d=pts[lid, :2].astype(np.float32),
            vertices_image=np.concatenate([pts[:, :2], depth[:, None]], 1).astype(np.float32),
            neutral_vertices=(r["neutral_um"] * 1e-6).astype(np.float32),
            extras={"roi_box": [round(float(v), 3) for v in r["rois"][-1]],
                    "exp_norm": float(np.linalg.norm(exp)),
                    "checkpoint": self.checkpoint_file.name},
        )
