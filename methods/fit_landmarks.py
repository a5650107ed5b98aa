"""``fit-landmarks`` and ``fit-landmarks-elam``: per-image ICT fitting to 68 detected landmarks.

Room: the optimisation baseline of the suite and the first half of the paper's method on its
own. For each photo, dlib's 68 landmarks (``fit-landmarks``) or the same landmarks adjusted by
ELAM with the eye-state detector's P(closed) per eye (``fit-landmarks-elam``) are fitted by
the ICT-FaceKit model: the first ``n_id`` identity modes, all 53 expression blendshapes
(``eyeBlink_L``/``eyeBlink_R`` included) and a head pose, under the suite's pinhole camera.

Objective (per image, MAP with a robust likelihood)::

    E = sum_i w_i huber(|pi(F R V_i(a, b) + t) - q_i| / (sigma s)) + 1/2 |a|^2
        + lambda_exp sum_j b_j

with ``q`` the target landmarks (pixels), ``pi`` the projection of
:mod:`methods.render.camera` (focal 1015 px per 224 px of the image's longer side, centre at
the image centre), ``s`` the face size (square root of the landmark bounding-box area),
``sigma`` the expected landmark noise as a fraction of it, ``w`` per-landmark weights
(jaw contour down-weighted: its points slide with the pose on a 3D model), ``a`` identity
coefficients (unit-variance PCA) and ``b`` in [0, 1] blendshape weights (L1: most are 0).
Adam with projection onto the bounds; pose first, then everything. Only the 68 landmark
vertices are evaluated during the fit; the full mesh is built once at the end.

Example::

    from methods.fit_landmarks import FitLandmarksElam
    method = FitLandmarksElam({"elam_variant": "soft"})
    method.ensure_loaded("cpu")
    pred = method.predict(sample)       # Prediction(vertices (6706, 3) m, eye_prob_closed, ...)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.types import FaceSample, Prediction
from methods.base import Method, MethodCard
from methods.facemodel.model import MorphableModel
from methods.render.camera import PinholeCamera, euler_to_matrix, model_to_camera

logger = logging.getLogger(__name__)

#: Deep3D's intrinsics: focal 1015 px for a 224 px image.
FOCAL_PER_224 = 1015.0


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of the landmark fit (every one is a method option of the same name).

    Attributes:
        n_id: identity modes fitted (of ICT's 100).
        sigma: landmark noise as a fraction of the face size (likelihood scale).
        huber: Huber threshold in units of ``sigma``.
        lambda_exp: L1 weight on the blendshape weights.
        w_contour: weight of the jaw-contour landmarks 0-16 (others 1; eyes ``w_eyes``).
        w_eyes: weight of the eye landmarks 36-47.
        pose_steps: Adam steps on the pose alone.
        steps: Adam steps on everything.
        lr: Adam learning rate (parameters are scaled to similar ranges).
    """

    n_id: int = 40
    sigma: float = 0.02
    huber: float = 2.0
    lambda_exp: float = 0.5
    w_contour: float = 0.3
    w_eyes: float = 1.5
    pose_steps: int = 30
    steps: int = 150
    lr: float = 0.08

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FitConfig:
        """A config from method options (unknown keys are ignored; values cast)."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in options:
                kwargs[f.name] = type(f.default)(options[f.name])
        return cls(**kwargs)


@dataclasses.dataclass
class FitResult:
    """Fitted parameters of a batch (torch, detached, CPU).

    Attributes:
        id_coeffs: (B, n_id) identity coefficients.
        exp_coeffs: (B, J) blendshape weights in [0, 1].
        angles: (B, 3) Euler angles (pitch, yaw, roll), radians.
        translation: (B, 3) camera-frame translation, metres.
        focal: (B,) focal lengths, pixels.
        center: (B, 2) principal points, pixels.
        landmarks2d: (B, 68, 2) projected fitted landmarks, pixels.
        rmse_px: (B,) root-mean-square landmark residual, pixels.
    """

    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    angles: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    center: torch.Tensor
    landmarks2d: torch.Tensor
    rmse_px: torch.Tensor


def camera_for_image(width: int, height: int) -> PinholeCamera:
    """The suite's default camera for an image of this size.

    Focal 1015 px per 224 px of the longer side, principal point at the centre.
    """
    return PinholeCamera(focal=FOCAL_PER_224 * max(width, height) / 224.0, width=int(width),
                         height=int(height))


def _project_batch(
    points_cam: torch.Tensor, focal: torch.Tensor, center: torch.Tensor
) -> torch.Tensor:
    """:func:`methods.render.camera.project` with one camera per batch element."""
    z = points_cam[..., 2:3].clamp(min=1e-6)
    return points_cam[..., :2] / z * focal[:, None, None] + center[:, None, :]


def _rotation_to_euler(r: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` (``R = Rz Ry Rx``) for one matrix."""
    pitch = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.array([pitch, yaw, roll])


def _landmark_weights(cfg: FitConfig) -> torch.Tensor:
    w = torch.ones(68)
    w[0:17] = cfg.w_contour
    w[36:48] = cfg.w_eyes
    return w


class LandmarkFitter:
    """Fits a morphable model's 68 landmarks to 2D landmarks (batched, CPU-friendly).

    Args:
        model: the morphable model (ICT narrow by default in the methods).
        config: hyper-parameters.
    """

    def __init__(self, model: MorphableModel, config: FitConfig | None = None) -> None:
        self.model = model
        self.cfg = config or FitConfig()
        if not 0 <= self.cfg.n_id <= model.n_id:
            raise ValueError(f"n_id must be in 0..{model.n_id}, got {self.cfg.n_id}.")
        lid = model.landmark_ids
        self.mean68 = torch.as_tensor(model.mean[lid], dtype=torch.float32)
        self.id68 = torch.as_tensor(model.id_basis[: self.cfg.n_id, lid], dtype=torch.float32)
        self.exp68 = torch.as_tensor(model.exp_basis[:, lid], dtype=torch.float32)
        self.weights = _landmark_weights(self.cfg)
        # inner-face landmarks (no jaw contour) for the closed-form pose initialisation
        self._init_ids = np.arange(17, 68)

    # -- helpers ---------------------------------------------------------------------------
    def landmarks3d(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor) -> torch.Tensor:
        """(B, 68, 3) model-frame landmark points for coefficients."""
        return (
            self.mean68
            + torch.einsum("bk,kld->bld", id_coeffs, self.id68)
            + torch.einsum("bj,jld->bld", exp_coeffs, self.exp68)
        )

    def _init_pose(
        self, targets: np.ndarray, focal: np.ndarray, center: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form pose from an affine camera fit of the mean shape (per image)."""
        b = targets.shape[0]
        angles = np.zeros((b, 3))
        trans = np.zeros((b, 3))
        x3 = self.mean68.numpy()[self._init_ids].astype(np.float64)
        xh = np.concatenate([x3, np.ones((len(x3), 1))], axis=1)
        for i in range(b):
            q = targets[i, self._init_ids].astype(np.float64)
            sol, *_ = np.linalg.lstsq(xh, q, rcond=None)  # (4, 2): q = X A^T + c
            a = sol[:3].T  # (2, 3)
            u, s, vt = np.linalg.svd(a, full_matrices=False)
            rows = u @ vt  # nearest matrix with orthonormal rows
            scale = float(s.mean())
            rc = np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])])
            r = np.diag([1.0, -1.0, -1.0]) @ rc  # camera = F R  =>  R = F rc
            angles[i] = _rotation_to_euler(r)
            tz = focal[i] / max(scale, 1e-6)
            # the projected model origin sits at the affine offset
            c = sol[3]
            trans[i] = [(c[0] - center[i, 0]) * tz / focal[i],
                        (c[1] - center[i, 1]) * tz / focal[i], tz]
            # account for the depth of the face in front of the origin
            trans[i, 2] += float((r @ x3.mean(axis=0))[2])
        return angles, trans

    # -- the fit -----------------------------------------------------------------------------
    def fit(self, targets: np.ndarray, image_sizes: Sequence[tuple[int, int]]) -> FitResult:
        """Fits every image of a batch independently (one optimisation, summed objectives).

        Args:
            targets: (B, 68, 2) target landmarks in pixels.
            image_sizes: B (width, height) pairs.

        Returns:
            The :class:`FitResult`.

        Raises:
            ValueError: shapes do not match or targets are not finite.
        """
        targets = np.asarray(targets, dtype=np.float32)
        if targets.ndim != 3 or targets.shape[1:] != (68, 2):
            raise ValueError(f"targets must be (B, 68, 2), got {targets.shape}.")
        if len(image_sizes) != targets.shape[0]:
            raise ValueError("one (width, height) per target set is needed.")
        if not np.isfinite(targets).all():
            raise ValueError("target landmarks must be finite.")
        cfg = self.cfg
        b = targets.shape[0]
        cams = [camera_for_image(w, h) for w, h in image_sizes]
        focal = np.array([c.focal for c in cams])
        center = np.array([c.center for c in cams])
        ang0, t0 = self._init_pose(targets, focal, center)

        q = torch.as_tensor(targets)
        f_t = torch.as_tensor(focal, dtype=torch.float32)
        c_t = torch.as_tensor(center, dtype=torch.float32)
        span = targets.max(axis=1) - targets.min(axis=1)
        face = torch.as_tensor(np.sqrt(np.maximum(span[:, 0] * span[:, 1], 1.0)),
                               dtype=torch.float32)
        scale = (cfg.sigma * face)[:, None]  # pixels per sigma

        # parameters, scaled so that one Adam step moves each by a similar relative amount
        angles = torch.tensor(ang0, dtype=torch.float32, requires_grad=True)
        log_tz = torch.tensor(np.log(t0[:, 2]), dtype=torch.float32, requires_grad=True)
        offs = torch.tensor(t0[:, :2] / t0[:, 2:3], dtype=torch.float32, requires_grad=True)
        alpha = torch.zeros(b, cfg.n_id, requires_grad=True)
        beta = torch.zeros(b, self.model.n_exp, requires_grad=True)
        w = self.weights
        delta = cfg.huber

        def energy(pose_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
            tz = log_tz.exp()
            t = torch.cat([offs * tz[:, None], tz[:, None]], dim=1)
            pts = self.landmarks3d(alpha, beta)
            cam = model_to_camera(pts, euler_to_matrix(angles), t)
            proj = _project_batch(cam, f_t, c_t)
            r = (proj - q).norm(dim=-1) / scale  # (B, 68) in sigmas
            rho = torch.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta))
            e = (w * rho).sum(dim=1)
            if not pose_only:
                e = e + 0.5 * (alpha**2).sum(dim=1) + cfg.lambda_exp * beta.sum(dim=1)
            return e, proj

        def run(params: list[torch.Tensor], lrs: list[float], steps: int, pose_only: bool) -> None:
            opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                e, _ = energy(pose_only)
                e.sum().backward()
                opt.step()
                with torch.no_grad():
                    beta.clamp_(0.0, 1.0)

        lr = cfg.lr
        run([angles, log_tz, offs], [0.4 * lr, 0.2 * lr, 0.05 * lr], cfg.pose_steps, True)
        run([angles, log_tz, offs, alpha, beta], [0.2 * lr, 0.1 * lr, 0.02 * lr, lr, 0.5 * lr],
            cfg.steps, False)
        with torch.no_grad():
            _, proj = energy(False)
            rmse = (proj - q).pow(2).sum(-1).mean(-1).sqrt()
            tz = log_tz.exp()
            t = torch.cat([offs * tz[:, None], tz[:, None]], dim=1)
        return FitResult(
            id_coeffs=alpha.detach(), exp_coeffs=beta.detach(), angles=angles.detach(),
            translation=t.detach(), focal=f_t, center=c_t, landmarks2d=proj.detach(),
            rmse_px=rmse,
        )

    def vertices(self, result: FitResult) -> tuple[np.ndarray, np.ndarray]:
        """Full meshes of a fit: model-frame vertices and their image projections.

        Returns:
            (B, V, 3) float32 model-frame vertices in metres, and (B, V, 3) float32 image
            coordinates (x, y pixels, camera depth in metres).
        """
        m = self.model
        v = (
            torch.as_tensor(m.mean)
            + torch.einsum("bk,kvd->bvd", result.id_coeffs,
                           torch.as_tensor(m.id_basis[: self.cfg.n_id]))
            + torch.einsum("bj,jvd->bvd", result.exp_coeffs, torch.as_tensor(m.exp_basis))
        )
        cam = model_to_camera(v, euler_to_matrix(result.angles), result.translation)
        xy = _project_batch(cam, result.focal, result.center)
        img = torch.cat([xy, cam[..., 2:3]], dim=-1)
        return v.numpy().astype(np.float32), img.numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------

_COMMON = dict(
    topology="ict-narrow",
    license="MIT (code, ICT-FaceKit); dlib 68-point model: research use only (iBUG 300-W)",
    reference="https://arxiv.org/abs/2401.09677",
    citation=(
        "Wang & Liu, Eye Motion Matters for 3D Face Reconstruction, arXiv 2401.09677, 2024; "
        "Kazemi & Sullivan, One millisecond face alignment with an ensemble of regression "
        "trees, CVPR 2014 (dlib's predictor)"
    ),
    extra="landmarks",
    python_modules=("dlib",),
    # Every image has its own parameters and Adam state, so a fit does not depend on its
    # batch beyond float32 rounding (tested); the per-step cost hardly grows with the batch:
    # 64 images fit about 4 times faster in one call than in calls of 8.
    batch_size=64,
)

CARD = MethodCard(
    name="fit-landmarks",
    description="per-image ICT fit (identity, expression incl. blink, pose) to dlib's 68 landmarks",
    training_datasets=("ibug-300w (dlib predictor)",),
    revision="2",  # 2: neutral_vertices (expression zeroed) for neutral scans
    **_COMMON,  # type: ignore[arg-type]
)

CARD_ELAM = MethodCard(
    name="fit-landmarks-elam",
    description="fit-landmarks on ELAM-adjusted landmarks (eye-state CNN + soft rule)",
    training_datasets=("ibug-300w (dlib predictor)", "synthetic (train split)",
                       "real-faces (train part: CEW, UTKFace, LFW eye patches)"),
    revision="2",  # 2: neutral_vertices (expression zeroed) for neutral scans
    **_COMMON,  # type: ignore[arg-type]
)


class FitLandmarks(Method):
    """``fit-landmarks``: fit ICT to raw detector landmarks.

    Options (``--method-option fit-landmarks.KEY=VALUE``): every :class:`FitConfig` field;
    ``landmarks`` = ``dlib`` (default) or ``gt`` (the sample's ground truth, where it has
    one); ``cache`` = true/false (the on-disk landmark cache, default true).
    """

    card = CARD
    option_keys: ClassVar[tuple[str, ...]] = (
        *(f.name for f in dataclasses.fields(FitConfig)), "landmarks", "cache")
    uses_elam = False

    def load(self, device: str) -> None:
        """Loads ICT (narrow), the topology and the landmark provider."""
        from methods.facemodel import load_ict
        from methods.landmarks import get_provider
        from methods.topology import get_topology

        torch.set_num_threads(1)
        self.config = FitConfig.from_options(self.options)
        self.fitter = LandmarkFitter(load_ict("narrow"), self.config)
        self.topology = get_topology("ict-narrow")
        source = str(self.options.get("landmarks", "dlib"))
        cached = str(self.options.get("cache", "true")).lower() not in ("0", "false", "no")
        self.provider = get_provider(source, cached=cached)

    def targets(self, sample: FaceSample, image: np.ndarray, landmarks: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Landmarks to fit (unchanged here), the eye belief (none) and extras."""
        return landmarks, None, {}

    def predict(self, sample: FaceSample) -> Prediction:
        """Fits one sample (see :meth:`predict_batch`)."""
        return self.predict_batch([sample])[0]

    def predict_batch(self, samples: Sequence[FaceSample]) -> list[Prediction]:
        """Detects, (adjusts,) and fits a batch in one optimisation.

        Failures are per sample: an unreadable image is ``error``, no face (or a tiny one)
        is ``no_face``; the others are fitted.
        """
        out: list[Prediction | None] = [None] * len(samples)
        todo: list[tuple[int, np.ndarray, np.ndarray | None, tuple[int, int], dict[str, Any]]] = []
        for i, sample in enumerate(samples):
            t0 = time.perf_counter()
            image, res = self.provider.image_and_landmarks(sample)
            if image is None or res.status != "ok":
                out[i] = Prediction.failed(res.status, res.error or res.status)
                continue
            try:
                lm, p_closed, extras = self.targets(sample, image, res.landmarks)
            except Exception as exc:
                out[i] = Prediction.failed("error", f"{type(exc).__name__}: {exc}")
                continue
            extras["detect_seconds"] = time.perf_counter() - t0
            todo.append((i, lm, p_closed, (image.shape[1], image.shape[0]), extras))
        if todo:
            t0 = time.perf_counter()
            fit = self.fitter.fit(np.stack([t[1] for t in todo]), [t[3] for t in todo])
            verts, verts_img = self.fitter.vertices(fit)
            m = self.fitter.model  # neutral: the fitted identity, expression zeroed
            neutral = (m.mean + np.einsum("bk,kvd->bvd", fit.id_coeffs.numpy(),
                                          m.id_basis[: fit.id_coeffs.shape[1]])
                       ).astype(np.float32)
            dt = (time.perf_counter() - t0) / len(todo)
            blink = [self.fitter.model.exp_index(n) for n in ("eyeBlink_R", "eyeBlink_L")]
            for k, (i, _lm, p_closed, _, extras) in enumerate(todo):
                extras.update(
                    fit_seconds=dt,
                    rmse_px=float(fit.rmse_px[k]),
                    blink=[float(fit.exp_coeffs[k, j]) for j in blink],
                    angles_deg=np.degrees(fit.angles[k].numpy()).round(2).tolist(),
                    id_norm=float(fit.id_coeffs[k].norm()),
                )
                out[i] = Prediction(
                    status="ok",
                    vertices=verts[k],
                    neutral_vertices=neutral[k],
                    topology=self.topology,
                    landmarks2d=fit.landmarks2d[k].numpy().astype(np.float32),
                    vertices_image=verts_img[k],
                    eye_prob_closed=None if p_closed is None else np.asarray(p_closed, np.float32),
                    extras=extras,
                )
        return [p for p in out if p is not None]


class FitLandmarksElam(FitLandmarks):
    """``fit-landmarks-elam``: ELAM-adjusted landmarks, then the same fit.

    Extra options: ``elam_variant`` = ``soft`` (default), ``hard`` or ``target``;
    ``elam_threshold`` (``hard`` only, default 0.5); ``eye_detector`` = weights file
    (default: the shipped ``methods/elam/weights/eye_state_cnn.pt``).
    """

    card = CARD_ELAM
    option_keys: ClassVar[tuple[str, ...]] = (
        *FitLandmarks.option_keys, "elam_variant", "elam_threshold", "eye_detector")
    uses_elam = True

    def _weights(self) -> Path:
        from methods.elam.config import resolve_weights

        return resolve_weights(self.options.get("eye_detector"))

    def own_files(self) -> list[Path]:
        """The eye-state detector's weights (their hash is part of the revision)."""
        return [self._weights()]

    def availability(self):  # type: ignore[no-untyped-def]
        """Base checks plus the eye-state detector's weights file."""
        from benchmark.types import Availability
        from methods.elam.config import TRAIN_COMMAND

        base = super().availability()
        if not base.ok:
            return base
        path = self._weights()
        if not path.is_file():
            return Availability(False, f"eye-state detector weights {str(path)!r} are missing",
                                TRAIN_COMMAND)
        return base

    def load(self, device: str) -> None:
        """Loads the fit (see :class:`FitLandmarks`) and the eye-state detector."""
        from methods.elam.eye_detector import EyeStateDetector
        from methods.elam.rule import VARIANTS

        super().load(device)
        self.variant = str(self.options.get("elam_variant", "soft"))
        if self.variant not in VARIANTS:
            raise ValueError(
                f"elam_variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}."
            )
        self.threshold = float(self.options.get("elam_threshold", 0.5))
        self.detector = EyeStateDetector(self._weights(), device="cpu")

    def targets(self, sample: FaceSample, image: np.ndarray, landmarks: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """ELAM: P(closed) per eye from the crops, then the adjustment rule."""
        from methods.elam.rule import elam_adjust

        p = self.detector.predict(image, landmarks)
        adjusted = elam_adjust(landmarks, p, self.variant, self.threshold)
        return adjusted, p, {"p_closed": p.round(4).tolist(), "elam_variant": self.variant}
