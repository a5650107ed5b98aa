"""The one training configuration of the ELAM+LDL network and its four ablation presets.

Room: every knob of ``python -m benchmark train`` in one dataclass (no torch import, so the
CLI builds its flags from it cheaply). The four registered methods are presets of this one
config that differ *only* in ``use_elam`` / ``use_ldl``:

============== ======== =======
variant        use_elam use_ldl
============== ======== =======
deep3d-recipe  no       no
elam           yes      no
ldl            no       yes
elam-ldl       yes      yes
============== ======== =======

Loss weights follow Deep3DFaceRecon_pytorch (``models/facerecon_model.py``); the landmark
error is measured in pixels of a 224-px crop whatever ``input_size`` is, so Deep3D's
``w_lm`` keeps its meaning (see ``docs/elam_ldl.md`` for every weight and why).

Example::

    cfg = TrainConfig.preset("elam-ldl")                      # the shipped setting
    cfg = TrainConfig.from_yaml("my.yaml")                    # keys = field names
    cfg = dataclasses.replace(cfg, steps=200, input_size=64)  # a quick run
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

#: Folder of the shipped checkpoints (see its README.md).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Environment variable that may point at another checkpoint folder.
WEIGHTS_ENV = "EYEBENCH_ELAM_LDL_WEIGHTS"

#: The four ablation variants: name -> (use_elam, use_ldl).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "deep3d-recipe": (False, False),
    "elam": (True, False),
    "ldl": (False, True),
    "elam-ldl": (True, True),
}

SYNTHETIC_SOURCE = "synthetic"
REAL_SOURCE = "real-faces"
SOURCES = (SYNTHETIC_SOURCE, REAL_SOURCE)


def _f(default: Any, help_text: str, **extra: Any) -> Any:
    """A dataclass field with CLI help (``metadata['help']``)."""
    meta = {"help": help_text, **extra}
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """Options of :func:`methods.elam_ldl.train.train` (CLI flags: kebab-case field names)."""

    # -- what is trained -------------------------------------------------------------
    variant: str = _f("elam-ldl", "name of the run (one of the four presets or your own)")
    use_elam: bool = _f(True, "ELAM: eye-state detector + rule adjust the eyelid landmarks that "
                              "supervise training (landmark loss and LDL targets)")
    use_ldl: bool = _f(True, "LDL: local dynamic loss on eyelid and lip pair distances")
    elam_variant: str = _f("two-way-hard", "ELAM rule: soft (the paper's), hard, target, "
                                              "two-way or two-way-hard (shipped; "
                                              "methods.elam.rule: two-way also reopens a lid "
                                              "gap the landmarks closed on an eye the "
                                              "detector sees open; -hard thresholds P first)")
    elam_threshold: float = _f(0.5, "ELAM hard rules: P(closed) above this closes the eye")
    elam_open_floor: float = _f(0.22, "ELAM two-way rules: smallest lid gap of an open eye, "
                                      "in eye widths")

    # -- network ---------------------------------------------------------------------
    depth: int = _f(18, "ResNet depth (10, 18, 34, 50, 101); Deep3D: 50")
    width: int = _f(24, "ResNet first-stage width (64 = torchvision; Deep3D: 64)")
    input_size: int = _f(112, "network input side in pixels (Deep3D: 224)")
    n_id: int = _f(50, "ICT identity modes regressed (of 100; the synthetic GT uses all 100 "
                       "plus displacements, so it stays out of span)")
    align_rotation: bool = _f(True, "alignment also removes in-plane rotation (levels the "
                                    "eyes); Deep3D: scale and shift only")
    crop_distance: float = _f(0.9, "alignment template: camera distance (m) at which the mean "
                                   "face's five points are projected into the crop")
    eye_branch: bool = _f(True, "the eyelid and gaze blendshapes come from per-eye crops "
                                "through the frozen trunk of the ELAM eye-state CNN and a "
                                "trained head (methods.elam_ldl.model.EyeBranch); off: from "
                                "the whole face, as Deep3D")
    landmark_id: bool = _f(True, "the identity also reads the detected landmarks' geometry "
                                  "(methods.elam_ldl.model.LandmarkIdentity), added to the "
                                  "image head's identity")

    # -- losses (Deep3D's weights unless stated; docs/elam_ldl.md) --------------------
    w_photo: float = _f(1.92, "photometric loss (Deep3D w_color)")
    w_lm: float = _f(1.6e-3, "landmark loss, squared error in 224-px pixels (Deep3D w_lm)")
    lm_weight_nose: float = _f(20.0, "landmark weight of nose points 28-30 (Deep3D 20)")
    lm_weight_mouth: float = _f(20.0, "landmark weight of inner-mouth points 60-67 (Deep3D 20)")
    lm_weight_eyes: float = _f(1.0, "landmark weight of eye points 36-47 (Deep3D 1)")
    w_reg: float = _f(3e-4, "coefficient regularisation (Deep3D w_reg)")
    w_id: float = _f(10.0, "identity part of the regulariser (Deep3D 1.0; ours chosen on the "
                           "dev split, docs/elam_ldl.md)")
    w_exp: float = _f(30.0, "expression part of the regulariser (Deep3D 0.8; ours chosen on "
                            "the dev split, docs/elam_ldl.md)")
    w_tex: float = _f(1.7e-2, "albedo part of the regulariser (Deep3D w_tex)")
    w_gamma: float = _f(10.0, "lighting regularisation: SH colour spread (Deep3D w_gamma)")
    w_reflc: float = _f(5.0, "albedo variance over the skin (Deep3D w_reflc)")
    w_ldl_eye: float = _f(0.5, "LDL weight of the eyelid pairs (only with use_ldl)")
    w_ldl_lip: float = _f(0.25, "LDL weight of the inner-lip pairs (only with use_ldl)")
    ldl_normalise: bool = _f(True, "LDL distances divided by the target eye / mouth width")
    w_shape_synthetic: float = _f(2.0, "identity supervision on synthetic train rows: mean "
                                        "squared face-region vertex error (mm^2) to the "
                                        "subject's true neutral face projected on the n_id "
                                        "modes (0: weak supervision only, as the paper)")
    w_exp_synthetic: float = _f(2.0, "expression supervision on synthetic train rows: mean "
                                      "squared face-region displacement (mm^2, similarity "
                                      "part removed) of the error in the ICT blendshapes "
                                      "that are not the eye branch's (brows, cheeks, nose, "
                                      "jaw, mouth); eyelids and gaze stay weakly supervised "
                                      "(0: off)")
    w_feat: float = _f(0.2, "perceptual identity loss (Deep3D w_feat; active only with "
                            "identity_weights)")
    identity_weights: str | None = _f(None, "ArcFace iResNet state dict (insightface "
                                            "arcface_torch layout); none: no identity loss")
    photo_region: str = _f("face", "mesh region rendered for the photometric loss "
                                   "(methods.facemodel.regions name, or 'all')")

    # -- optimisation ----------------------------------------------------------------
    batch_size: int = _f(16, "images per step (Deep3D: 32)")
    steps: int = _f(4500, "optimisation steps")
    lr: float = _f(1e-3, "Adam peak learning rate (Deep3D: 1e-4 from ImageNet weights; we "
                         "start from scratch)")
    warmup_steps: int = _f(100, "linear learning-rate warm-up")
    lr_final: float = _f(0.05, "final learning rate as a fraction of lr (cosine decay)")
    weight_decay: float = _f(0.0, "Adam weight decay")
    grad_clip: float = _f(5.0, "gradient-norm clip (0: none)")
    seed: int = _f(0, "seed of initialisation, data order and augmentation")

    # -- augmentation (Deep3D: shift 10 px of 224, scale 0.1, rotation 10 deg, flip) ------
    aug_shift: float = _f(0.045, "random shift as a fraction of the input side")
    aug_scale: float = _f(0.1, "random scale in 1 +- this")
    aug_rot_deg: float = _f(10.0, "random in-plane rotation in +- degrees")
    aug_flip: bool = _f(True, "random horizontal flips (landmarks and eyes swapped)")
    aug_colour: float = _f(0.1, "random per-channel gain in 1 +- this")
    aug_eye_swap: float = _f(0.0, "counterfactual eye swap, probability per eye: an eye of "
                                  "the other state from another photo source is blended in "
                                  "and its landmarks and P(closed) follow "
                                  "(methods.elam_ldl.counterfactual)")
    aug_degrade: float = _f(0.0, "probability of resolution loss and blur")
    aug_grey: float = _f(0.0, "probability of greyscale")
    aug_jpeg: float = _f(0.0, "probability of JPEG re-compression (quality 20-90)")
    balance_sources: bool = _f(False, "draw batches by row group (synthetic, the pool's "
                                     "closed-eye source, its open-eye source, folders), not "
                                     "by row")
    synthetic_share: float = _f(0.5, "balance_sources: share of each batch from synthetic "
                                     "rows (the rest split equally between the others)")

    # -- data ------------------------------------------------------------------------
    sources: tuple[str, ...] = _f(SOURCES, "training sources: synthetic (its train split) "
                                           "and/or real-faces (train part of the pool)")
    synthetic_n: int = _f(8000, "synthetic train samples used (generated once, cached)")
    real_faces: str | None = _f(None, "real-photo pool root (default $EYEBENCH_REAL_FACES "
                                      "or ../shared/data/real-faces)")
    real_pool_seed: int = _f(0, "seed of the pool's train/validation split (keep 0: "
                                "real-faces-val is its validation part)")
    folders: tuple[str, ...] = _f((), "extra folders of face photos to train on (recursive)")
    dev_fraction: float = _f(0.05, "share of training subjects/groups held out as a dev set "
                                   "(monitoring; never the evaluation splits)")
    landmarks: str = _f("dlib", "landmark provider of the training photos (dlib; gt only "
                                "for tests: it is not weak supervision)")

    # -- run -------------------------------------------------------------------------
    output_dir: str | None = _f(None, "run folder for checkpoints and logs (default "
                                      ".cache/elam_ldl/runs/<variant>-seed<seed>)")
    checkpoint_every: int = _f(250, "steps between (atomic) training checkpoints")
    dev_every: int = _f(500, "steps between dev-set evaluations (0: only at the end)")
    export: str | None = _f(None, "write the final small float16 checkpoint here")
    device: str = _f("cpu", "cpu or cuda (nvdiffrast is used on cuda where installed)",
                     choices=("cpu", "cuda"))
    threads: int = _f(1, "torch CPU threads (shared 2-core machines: 1)")
    resume: bool = _f(True, "resume from the run folder's last checkpoint when present")

    # ------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = tuple(s.strip() for s in self.sources.split(",") if s.strip())
        if isinstance(self.folders, str):
            self.folders = tuple(s.strip() for s in self.folders.split(",") if s.strip())
        self.sources = tuple(self.sources)
        self.folders = tuple(self.folders)

    def validate(self) -> None:
        """Raises ``ValueError`` with one sentence when a value is out of range."""
        from methods.elam.rule import VARIANTS as ELAM_VARIANTS

        if self.elam_variant not in ELAM_VARIANTS:
            raise ValueError(f"elam_variant must be one of {ELAM_VARIANTS}, "
                             f"got {self.elam_variant!r}.")
        if self.input_size < 32 or self.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8 and >= 32, "
                             f"got {self.input_size}.")
        if not 0 <= self.n_id <= 100:
            raise ValueError(f"n_id must be in 0..100, got {self.n_id}.")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be positive.")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown training source(s) {unknown}; use {SOURCES}.")
        if not self.sources and not self.folders:
            raise ValueError("no training data: give sources and/or folders.")
        for name in ("aug_eye_swap", "aug_degrade", "aug_grey", "aug_jpeg", "synthetic_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.eye_branch and self.aug_eye_swap > 0:
            raise ValueError("aug_eye_swap pastes eyes into the face crop but not into the "
                             "eye branch's crops; use it with eye_branch off.")
        for name in ("w_shape_synthetic", "w_exp_synthetic"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.dev_fraction < 0.5:
            raise ValueError(f"dev_fraction must be in [0, 0.5), got {self.dev_fraction}.")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}.")
        if self.landmarks not in ("dlib", "gt"):
            raise ValueError(f"landmarks must be dlib or gt, got {self.landmarks!r}.")

    # -- presets and I/O -------------------------------------------------------------------
    @classmethod
    def preset(cls, variant: str, **overrides: Any) -> TrainConfig:
        """The shipped setting of one of the four variants (see :data:`VARIANTS`).

        Raises:
            ValueError: unknown variant name.
        """
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
        use_elam, use_ldl = VARIANTS[variant]
        return cls(**{"variant": variant, "use_elam": use_elam, "use_ldl": use_ldl,
                      **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from a mapping of field names (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(names)}.")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Reads a YAML mapping of field names; a ``variant`` key applies its preset first."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of option: value.")
        variant = data.get("variant")
        if variant in VARIANTS:
            base = dataclasses.asdict(cls.preset(variant))
            base.update(data)
            data = base
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def run_dir(self) -> Path:
        """The run folder (``output_dir`` or the default under the cache)."""
        if self.output_dir:
            return Path(self.output_dir).expanduser()
        from methods.landmarks.cache import cache_root

        return cache_root() / "elam_ldl" / "runs" / f"{self.variant}-seed{self.seed}"

    def digest(self, fields: tuple[str, ...] | None = None) -> str:
        """Short hash of the values (or of some fields)."""
        d = self.to_dict()
        if fields is not None:
            d = {k: d[k] for k in fields}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


#: Fields that change the *training data* (the prepared-data cache key).
DATA_FIELDS = ("sources", "synthetic_n", "real_pool_seed", "folders", "input_size", "landmarks",
               "crop_distance", "dev_fraction", "align_rotation", "n_id")
#: Fields that do not change the trained weights (excluded when comparing a resumed run).
RUN_ONLY_FIELDS = ("output_dir", "checkpoint_every", "dev_every", "export", "device", "threads",
                   "resume", "steps")


def field_types() -> dict[str, Any]:
    """Resolved type hints of :class:`TrainConfig` (for the CLI)."""
    return typing.get_type_hints(TrainConfig)


def default_checkpoint(variant: str) -> Path:
    """The shipped checkpoint of a variant (``$EYEBENCH_ELAM_LDL_WEIGHTS`` folder wins)."""
    import os

    env = os.environ.get(WEIGHTS_ENV)
    folder = Path(env).expanduser() if env else WEIGHTS_DIR
    return folder / f"{variant}.pt"
