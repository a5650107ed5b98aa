"""The ELAM+LDL reconstruction network: ResNet regressor, coefficient split, face decoder.

Room: image -> coefficients -> mesh, landmarks and rendering (the Deep3D recipe on ICT).
Losses live in ``losses.py``, training in ``train.py``, the registered methods in
``method.py``.

Network (Deep3D's ``ReconNetWrapper``): a ResNet backbone (:mod:`methods.nets.resnet`,
depth and width configurable), global average pooling, then one zero-initialised 1x1
convolution per coefficient group (``final_layers``), so an untrained network outputs all
zeros: the mean face, frontal, at the template distance, in ambient light.

Eye branch (``NetSpec.eye_branch``, issue 16; off in checkpoints that predate it): the
per-eye blendshapes of :data:`EYE_SHAPES` (blink, squint, wide, gaze: everything in the
model that moves an eyelid) come from the eyes, not from the whole face. Each eye's
canonical crop (the eye-state detector's rule, :func:`methods.elam.eye_crops.cut_eye_crops`:
grey, 32 px, the subject's left eye mirrored) goes through the trunk of the ELAM eye-state
CNN (:class:`methods.elam.eye_detector.EyeStateNet`, copied from the detector's weights at
the start of training and frozen), and a small MLP shared by both eyes (final layer
zero-initialised) maps its 64 features and its P(closed) logit to that eye's blendshapes,
which replace the face head's. One eye's crop cannot see the other eye, the photo's crop
style or a watermark, so each eye is read on its own: a wink is two independent readings.
The trainable part is the MLP; what it learns comes only from the training losses
(ELAM/LDL or not), so the four ablation variants share the branch and differ in supervision.

Landmark identity branch (``NetSpec.landmark_id``, issue 16 shape; off in checkpoints that
predate it): the detected landmarks the alignment already uses, in crop pixels, minus the
ones an expression moves most (eyelids 37-38, 40-41, 43-44, 46-47 and the inner mouth
60-67: :data:`LANDMARK_ID_POINTS`), centred and scaled to unit RMS radius (the face's
proportions, not its size or place in the crop), standardised by a batch norm without
affine parameters, go through a two-layer MLP (final layer zero-initialised) whose output
is *added* to the identity head's. The 112-px crop's features carry little of a face's
proportions; the landmark geometry does (on the synthetic dev rows a ridge regression
from it reaches 7.2 mm^2 against 8.1 for the image-only network: docs/elam_ldl.md).

Coefficient split (:class:`NetSpec.dims`, Deep3D's 257-d split re-cut for ICT)::

    id n_id | exp 53 (ICT ARKit blendshapes, eyeBlink_L/R included) | albedo 39 |
    angles 3 (pitch, yaw, roll, radians) | gamma 27 (SH, Deep3D layout) | trans 3

Geometry: ``V = mean + id . id_basis + exp . exp_basis`` (metres, model frame; that is the
mesh the method outputs); posed ``v_cam = F R (V - c) + t`` (:mod:`methods.render.camera`)
with ``c`` a fixed pivot (the mean shape's centroid) and
``t = TRANS_SCALE * trans + (0, 0, crop_distance)``. Camera: focal 1015 px per 224 px of the
input, centre at the crop centre (:mod:`methods.elam_ldl.align` builds the crops for it).

Example::

    spec = NetSpec(depth=18, width=32, input_size=96, n_id=50)
    net, dec = ReconNet(spec), FaceDecoder(spec)
    c = net.coefficients(images)            # images (B, 3, 96, 96) in [0, 1]
    geo = dec.geometry(c)                   # geo.vertices (B, 6706, 3) metres, geo.landmarks2d
    out = dec.render(geo, c)                # out.image (B, 96, 96, 3), out.mask
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from methods.base import read_torch_file
from methods.elam_ldl.albedo import N_ALBEDO, build_albedo_model
from methods.elam_ldl.align import FOCAL_PER_224
from methods.facemodel.model import MorphableModel, MorphableModelLayer
from methods.nets.resnet import ResNet
from methods.render import PinholeCamera, Renderer, RenderOutput, euler_to_matrix, model_to_camera
from methods.render.camera import project
from methods.render.shading import vertex_adjacency, vertex_normals

#: Metres per unit of the translation head's output.
TRANS_SCALE = 0.1
#: ICT ARKit blendshapes.
N_EXP = 53
COEFF_GROUPS = ("id", "exp", "albedo", "angles", "gamma", "trans")
#: Per-eye ICT blendshapes driven by the eye branch (suffix ``_R`` = eye 0, landmarks 36-41;
#: ``_L`` = eye 1, landmarks 42-47).
EYE_SHAPES = ("eyeBlink", "eyeSquint", "eyeWide", "eyeLookDown", "eyeLookUp", "eyeLookIn",
              "eyeLookOut")
#: iBUG-68 points read by the landmark identity branch: jaw, brows, nose, the four eye
#: corners and the outer lips (eyelids and inner mouth left out: expression moves them).
LANDMARK_ID_POINTS = tuple(range(0, 36)) + (36, 39, 42, 45) + tuple(range(48, 60))
#: Input normalisation (images in [0, 1]).
INPUT_MEAN = 0.5
INPUT_STD = 0.25


def pivot_point(model: MorphableModel) -> np.ndarray:
    """(3,) the rotation pivot: centroid of the mean shape (metres, model frame)."""
    return model.mean.astype(np.float64).mean(0)


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """Architecture of the network and decoder (stored in every checkpoint).

    Attributes:
        depth: ResNet depth.
        width: ResNet first-stage width.
        input_size: input side in pixels.
        n_id: ICT identity modes.
        crop_distance: template camera distance (metres) of the alignment.
        align_rotation: the alignment removes in-plane rotation too.
        photo_region: mesh region rendered for the photometric loss (``all`` = everything).
        model: ``ict-narrow`` (the only model the shipped weights use).
        eye_branch: the eye blendshapes come from per-eye crops (see the module docstring).
        eye_crop_size: side of the eye crops (the detector's ``crop_size``).
        eye_enlarge: eye-crop square over the eye's landmark box (the detector's ``enlarge``).
        eye_width: width of the eye-state CNN trunk (the detector's ``width``).
        eye_hidden: hidden units of the eye head.
        landmark_id: the identity also reads the detected landmarks' geometry (see the
            module docstring).
        landmark_hidden: hidden units of the landmark identity MLP.
    """

    depth: int = 18
    width: int = 32
    input_size: int = 96
    n_id: int = 50
    crop_distance: float = 0.9
    align_rotation: bool = True
    photo_region: str = "face"
    model: str = "ict-narrow"
    eye_branch: bool = False
    eye_crop_size: int = 32
    eye_enlarge: float = 1.8
    eye_width: int = 16
    eye_hidden: int = 32
    landmark_id: bool = False
    landmark_hidden: int = 64

    @property
    def dims(self) -> tuple[int, ...]:
        """Output sizes of the coefficient groups, :data:`COEFF_GROUPS` order."""
        return (self.n_id, N_EXP, N_ALBEDO, 3, 27, 3)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetSpec:
        """From a mapping (unknown keys ignored, for forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def camera(self) -> PinholeCamera:
        """The network's camera at ``input_size``."""
        s = self.input_size
        return PinholeCamera(focal=FOCAL_PER_224 * s / 224.0, width=s, height=s)


class Coefficients(NamedTuple):
    """Split network output (all (B, k) tensors).

    Attributes:
        id: identity coefficients (unit-variance PCA of ICT).
        exp: blendshape weights (ICT order; unconstrained, regularised towards 0).
        albedo: albedo coefficients (:mod:`methods.elam_ldl.albedo`).
        angles: pitch, yaw, roll in radians.
        gamma: SH lighting (B, 27), Deep3D layout.
        trans: camera-frame translation in metres (template distance included).
    """

    id: torch.Tensor
    exp: torch.Tensor
    albedo: torch.Tensor
    angles: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor


def eye_shape_indices(names: tuple[str, ...] | None = None) -> torch.Tensor:
    """(2, len(EYE_SHAPES)) ICT expression indices driven by the eye branch, per eye."""
    if names is None:
        from methods.facemodel.ict import load_ict

        names = load_ict("narrow").exp_names
    assert names is not None
    return torch.tensor([[names.index(f"{n}_{side}") for n in EYE_SHAPES]
                         for side in ("R", "L")], dtype=torch.int64)


class EyeBranch(nn.Module):
    """Per-eye crops -> per-eye blendshapes: frozen eye-state CNN trunk + a shared MLP.

    Args:
        spec: architecture (``eye_width``, ``eye_hidden``).
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        from methods.elam.eye_detector import EyeStateNet

        self.width = spec.eye_width
        self.crop_rule = (spec.eye_crop_size, float(spec.eye_enlarge))
        self.encoder = EyeStateNet(width=spec.eye_width)
        self.encoder.requires_grad_(False)
        feat = 4 * spec.eye_width + 1
        self.head = nn.Sequential(nn.Linear(feat, spec.eye_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(spec.eye_hidden, len(EYE_SHAPES)))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def train(self, mode: bool = True) -> EyeBranch:
        """The frozen encoder stays in eval mode (batch-norm statistics, dropout)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def load_detector(self, path: str | Path | None = None) -> dict[str, Any]:
        """Copies the eye-state detector's weights into the encoder (default: shipped ones).

        Returns:
            Provenance: the weights file's name and sha256, its ``config`` and what it was
            trained on.

        Raises:
            ValueError: the detector's crop rule or width differs from this branch's spec.
        """
        from methods.elam.eye_detector import load_checkpoint as load_detector
        from methods.elam.eye_detector import resolve_weights

        path = resolve_weights(path)
        ckpt = load_detector(path)
        cfg = ckpt.get("config", {})
        width = int(cfg.get("width", 16))
        rule = (int(cfg.get("crop_size", 32)), float(cfg.get("enlarge", 1.8)))
        if width != self.width or rule != self.crop_rule:
            raise ValueError(f"eye-state detector {str(path)!r} has width {width} and crop "
                             f"rule {rule}; the eye branch expects {self.width} and "
                             f"{self.crop_rule}.")
        self.encoder.load_state_dict(ckpt["state_dict"])
        self.encoder.requires_grad_(False)
        from benchmark.provenance import file_sha256

        return {"file": Path(path).name, "sha256": file_sha256(Path(path)), "config": dict(cfg),
                "trained_on": ckpt.get("meta", {}).get("trained_on")}

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 2, S, S) canonical grey crops in [0, 1] -> (B, 2, len(EYE_SHAPES))."""
        b = crops.shape[0]
        f = self.encoder.pooled(crops.reshape(b * 2, 1, *crops.shape[2:]))
        logit = self.encoder.logit(f)[:, None]  # the detector's P(closed) logit
        return self.head(torch.cat([f, logit], 1)).view(b, 2, -1)


class LandmarkIdentity(nn.Module):
    """Detected landmarks -> an identity-coefficient offset (see the module docstring).

    Args:
        spec: architecture (``n_id``, ``landmark_hidden``).
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.register_buffer("points", torch.tensor(LANDMARK_ID_POINTS, dtype=torch.int64),
                             persistent=False)
        n_in = 2 * len(LANDMARK_ID_POINTS)
        self.norm = nn.BatchNorm1d(n_in, affine=False)
        self.head = nn.Sequential(nn.Linear(n_in, spec.landmark_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(spec.landmark_hidden, spec.n_id))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    @staticmethod
    def geometry(landmarks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) -> (B, 2 len(points)): the points centred, unit RMS radius."""
        p = landmarks.index_select(1, points)
        p = p - p.mean(1, keepdim=True)
        rms = p.square().sum(2).mean(1).clamp_min(1e-12).sqrt()
        return (p / rms[:, None, None]).flatten(1)

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) detected landmarks, crop pixels -> (B, n_id)."""
        return self.head(self.norm(self.geometry(landmarks.float(), self.points)))


class ReconNet(nn.Module):
    """ResNet + zero-initialised 1x1 heads (Deep3D's ``ReconNetWrapper``), optional eye branch.

    Args:
        spec: architecture.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ResNet(spec.depth, spec.width, num_classes=0)
        feat = self.backbone.feature_dim
        self.final_layers = nn.ModuleList([nn.Conv2d(feat, d, 1) for d in spec.dims])
        for layer in self.final_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.eye_branch = EyeBranch(spec) if spec.eye_branch else None
        if spec.eye_branch:
            # positions of each eye's blendshapes in the raw output (exp follows id)
            self.register_buffer("eye_columns", eye_shape_indices() + spec.n_id,
                                 persistent=False)
        self.landmark_id = LandmarkIdentity(spec) if spec.landmark_id else None

    def forward(self, images: torch.Tensor, eye_crops: torch.Tensor | None = None,
                landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Raw coefficients (B, sum(dims)) of RGB images (B, 3, S, S) in [0, 1].

        ``eye_crops`` (B, 2, s, s): the eye branch's input; ``landmarks`` (B, 68, 2): the
        detected landmarks in crop pixels, the landmark identity branch's input.

        Raises:
            ValueError: the network has an eye branch and no eye crops were given, or a
                landmark identity branch and no landmarks.
        """
        x = (images - INPUT_MEAN) / INPUT_STD
        f = self.backbone.avgpool(self.backbone.features(x))  # (B, C, 1, 1)
        raw = torch.cat([layer(f).flatten(1) for layer in self.final_layers], 1)
        if self.landmark_id is not None:
            if landmarks is None:
                raise ValueError("this network reads the identity from the detected landmarks "
                                 "too: pass landmarks (B, 68, 2) in crop pixels.")
            n = self.spec.n_id
            raw = torch.cat([raw[:, :n] + self.landmark_id(landmarks), raw[:, n:]], 1)
        if self.eye_branch is None:
            return raw
        if eye_crops is None:
            raise ValueError("this network reads the eyes from eye crops: pass eye_crops "
                             "(methods.elam.eye_crops.cut_eye_crops of the photo).")
        eyes = self.eye_branch(eye_crops)  # (B, 2, k)
        cols = self.eye_columns.reshape(-1)
        return raw.index_copy(1, cols, eyes.reshape(raw.shape[0], -1))

    def split(self, raw: torch.Tensor) -> Coefficients:
        """Raw output -> :class:`Coefficients` (translation scaled, template distance added)."""
        parts = list(torch.split(raw, list(self.spec.dims), dim=1))
        t = parts[5] * TRANS_SCALE
        parts[5] = t + t.new_tensor([0.0, 0.0, self.spec.crop_distance])
        return Coefficients(*parts)

    def coefficients(self, images: torch.Tensor, eye_crops: torch.Tensor | None = None,
                     landmarks: torch.Tensor | None = None) -> Coefficients:
        """``split(forward(images, eye_crops, landmarks))``."""
        return self.split(self(images, eye_crops, landmarks))


class Geometry(NamedTuple):
    """Decoded shapes of a batch.

    Attributes:
        vertices: (B, V, 3) model-frame vertices, metres (the method's output mesh).
        vertices_cam: (B, V, 3) camera-frame vertices, metres.
        landmarks2d: (B, 68, 2) projected landmarks, crop pixels.
        landmarks_depth: (B, 68) camera depth of the landmarks, metres.
    """

    vertices: torch.Tensor
    vertices_cam: torch.Tensor
    landmarks2d: torch.Tensor
    landmarks_depth: torch.Tensor


class FaceDecoder(nn.Module):
    """Coefficients -> ICT geometry, landmarks, albedo and rendering (no learnt weights).

    Args:
        spec: architecture (model, ``n_id``, camera, photometric region).
        backend: renderer backend (``auto``: nvdiffrast on CUDA where installed).
    """

    def __init__(self, spec: NetSpec, backend: str = "auto") -> None:
        super().__init__()
        from methods.facemodel import load_ict

        if spec.model != "ict-narrow":
            raise ValueError(f"only the ict-narrow model is supported, got {spec.model!r}.")
        model = load_ict("narrow")
        self.spec = spec
        self.n_vertices = model.n_vertices
        self.shape = MorphableModelLayer(model, n_id=spec.n_id)
        self.albedo = build_albedo_model(model)
        self.register_buffer("pivot", torch.as_tensor(pivot_point(model), dtype=torch.float32))
        self.register_buffer("landmark_ids", torch.as_tensor(model.landmark_ids))
        faces = model.faces
        if spec.photo_region != "all":
            if spec.photo_region not in model.regions:
                raise ValueError(f"unknown photo_region {spec.photo_region!r}; use one of "
                                 f"{sorted(model.regions)} or 'all'.")
            keep = model.regions[spec.photo_region][faces].all(axis=1)
            faces = faces[keep]
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.int64))
        self.register_buffer("render_faces", torch.as_tensor(faces, dtype=torch.int64))
        self.register_buffer("adjacency", vertex_adjacency(self.faces, model.n_vertices))
        self.camera = spec.camera()
        self.renderer = Renderer(self.camera, backend=backend)
        self.blink_ids = (model.exp_index("eyeBlink_R"), model.exp_index("eyeBlink_L"))

    def vertices(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) model-frame vertices."""
        return self.shape(c.id, c.exp)

    def pose(self, verts: torch.Tensor, c: Coefficients) -> torch.Tensor:
        """Model frame -> camera frame: ``F R (v - pivot) + t``."""
        return model_to_camera(verts - self.pivot, euler_to_matrix(c.angles), c.trans)

    def geometry(self, c: Coefficients) -> Geometry:
        """Vertices, posed vertices and projected landmarks of a batch."""
        v = self.vertices(c)
        v_cam = self.pose(v, c)
        lmk_cam = v_cam[:, self.landmark_ids]
        return Geometry(v, v_cam, project(lmk_cam, self.camera), lmk_cam[..., 2])

    def landmarks_only(self, c: Coefficients) -> torch.Tensor:
        """(B, 68, 2) projected landmarks without building the full mesh (cheap)."""
        ids = self.landmark_ids
        mean = self.shape.mean[ids]
        idb = self.shape.id_basis.view(self.shape.n_id, -1, 3)[:, ids]
        exb = self.shape.exp_basis.view(self.shape.n_exp, -1, 3)[:, ids]
        v = mean + torch.einsum("bk,kld->bld", c.id, idb) + torch.einsum("bj,jld->bld", c.exp,
                                                                          exb)
        return project(self.pose(v, c), self.camera)

    def render(self, geo: Geometry, c: Coefficients) -> RenderOutput:
        """SH-shaded rendering of the photometric region at the input size."""
        normals = vertex_normals(geo.vertices_cam, self.faces, self.adjacency)
        return self.renderer.render(geo.vertices_cam, self.render_faces, self.albedo(c.albedo),
                                    c.gamma, normals=normals)


# ------------------------------------------------------------------------------ checkpoints

#: Format tag of the small shipped (inference) checkpoints.
FORMAT = "eyebench-elam-ldl"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not an ELAM+LDL checkpoint."""


def export_state(net: ReconNet, config: dict[str, Any], meta: dict[str, Any],
                 half: bool = True) -> dict[str, Any]:
    """The inference checkpoint of a network: float16 weights (by default), spec, provenance.

    Only tensors and JSON-like values, so it loads with ``torch.load(weights_only=True)``.
    """
    # the landmark branch's standardisation stays float32 (it divides small spreads)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point()
                 and not k.startswith("landmark_id.norm.") else v.detach().cpu().clone())
             for k, v in net.state_dict().items()}
    return {"format": FORMAT, "version": FORMAT_VERSION,
            "spec": dataclasses.asdict(net.spec), "state_dict": state,
            "config": config, "meta": meta}


def load_checkpoint(path: str | Path) -> tuple[ReconNet, dict[str, Any]]:
    """A network (float32, eval mode, CPU) from a shipped or exported checkpoint.

    Args:
        path: the ``.pt`` file (:func:`export_state` layout).

    Returns:
        (network, the checkpoint dict without ``state_dict``).

    Raises:
        CheckpointError: missing file, unreadable file, wrong format or wrong weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ELAM+LDL checkpoint {str(path)!r} does not exist.")
    ckpt = read_torch_file(path, "ELAM+LDL checkpoint", FORMAT, error=CheckpointError)
    net = ReconNet(NetSpec.from_dict(ckpt["spec"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{str(path)!r} does not match its network spec: {exc}") from exc
    return net.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}
