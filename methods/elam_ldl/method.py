"""The four registered ELAM+LDL methods: ``deep3d-recipe``, ``elam``, ``ldl``, ``elam-ldl``.

Room: inference adapters around the trained networks (one code path, four checkpoints).
Per photo: dlib's 68 landmarks (on-disk cache) -> the five-point crop of
:mod:`methods.elam_ldl.align` -> the network -> ICT narrow mesh in the model frame (metres),
plus its 68 landmarks projected back into the *input* photo and every vertex's image
position and depth. Networks with an eye branch (``NetSpec.eye_branch``) also get both
eyes' canonical crops, cut from the photo with the same landmarks (the eye-state
detector's rule), and networks with a landmark identity branch (``NetSpec.landmark_id``)
the same landmarks mapped into the crop. ``no_face`` when dlib finds no face. ELAM and LDL
act only in training; at inference all four variants run the same way (the network alone
decides the eyelids).

Options (``--method-option elam-ldl.KEY=VALUE``): ``checkpoint`` (default: the shipped
``methods/elam_ldl/weights/<name>.pt`` or ``$EYEBENCH_ELAM_LDL_WEIGHTS/<name>.pt``),
``landmarks`` = ``dlib`` (default) or ``gt`` (the sample's own landmarks, where it has them;
for diagnosis only), ``cache`` (the on-disk landmark cache, default true), ``threads``
(torch CPU threads, default 1).

Example::

    from methods.elam_ldl.method import ElamLdl
    m = ElamLdl()
    m.ensure_loaded("cpu")
    pred = m.predict(sample)       # Prediction(vertices (6706, 3) m, landmarks2d, ...)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmark.types import Availability, FaceSample, Prediction
from methods.base import Method, MethodCard
from methods.elam_ldl.config import default_checkpoint

#: How to rebuild a missing shipped checkpoint (``{variant}`` is filled in).
TRAIN_HINT = "python -m benchmark train --variant {variant} --export {path}"

_COMMON: dict[str, Any] = dict(
    topology="ict-narrow",
    license="MIT (code, ICT-FaceKit, weights); dlib 68-point model: research use only "
            "(iBUG 300-W); weights trained on research-only photos (CEW, UTKFace)",
    reference="https://arxiv.org/abs/2401.09677",
    citation=(
        "Wang & Liu, Eye Motion Matters for 3D Face Reconstruction, arXiv 2401.09677, 2024; "
        "Deng et al., Accurate 3D Face Reconstruction with Weakly-Supervised Learning, CVPRW "
        "2019 (Deep3DFaceRecon)"
    ),
    revision="2",  # 2: neutral_vertices (expression zeroed) for neutral scans
    training_datasets=("synthetic", "real-faces-val", "ibug-300w (dlib predictor)"),
    extra="landmarks",
    python_modules=("dlib",),
)

CARDS = {
    "deep3d-recipe": MethodCard(
        name="deep3d-recipe",
        description="ELAM+LDL network trained without ELAM and LDL (the Deep3D recipe on ICT)",
        **_COMMON),
    "elam": MethodCard(
        name="elam",
        description="ELAM+LDL network trained with ELAM only (eye-state-adjusted landmarks)",
        **_COMMON),
    "ldl": MethodCard(
        name="ldl",
        description="ELAM+LDL network trained with LDL only (eyelid/lip distance loss)",
        **_COMMON),
    "elam-ldl": MethodCard(
        name="elam-ldl",
        description="the paper's method: ResNet regressor trained with ELAM + LDL (ours, ICT)",
        **_COMMON),
}


class ElamLdlMethod(Method):
    """Shared inference of the four variants (subclasses only pick the card)."""

    card: ClassVar[MethodCard]
    option_keys: ClassVar[tuple[str, ...]] = ("checkpoint", "threads", "landmarks", "cache")

    @property
    def variant(self) -> str:
        """Variant name (= the card name)."""
        return self.card.name

    def checkpoint_path(self) -> Path:
        """The checkpoint used: option ``checkpoint`` or the shipped file."""
        opt = self.options.get("checkpoint")
        return Path(opt).expanduser() if opt else default_checkpoint(self.variant)

    def own_files(self) -> list[Path]:
        """The checkpoint (its hash is part of the method revision)."""
        return [self.checkpoint_path()]

    def availability(self) -> Availability:
        """Checks dlib (extra ``landmarks``) and the checkpoint file."""
        base = super().availability()
        if not base.ok:
            return base
        path = self.checkpoint_path()
        if not path.is_file():
            return Availability(False, f"checkpoint {str(path)!r} is missing",
                                TRAIN_HINT.format(variant=self.variant, path=path))
        return base

    def load(self, device: str) -> None:
        """Loads the network, the decoder, the ICT topology and the landmark provider."""
        import torch

        from methods.elam_ldl.align import template_points
        from methods.elam_ldl.model import FaceDecoder, load_checkpoint
        from methods.landmarks import get_provider
        from methods.topology import get_topology

        torch.set_num_threads(int(self.options.get("threads", 1)))
        self.net, self.meta = load_checkpoint(self.checkpoint_path())
        spec = self.net.spec
        self.net.to(device)
        self.decoder = FaceDecoder(spec).to(device)
        self.torch_device = device
        self.topology = get_topology("ict-narrow")
        self.template = template_points(spec.input_size, spec.crop_distance)
        source = str(self.options.get("landmarks", "dlib"))
        cached = str(self.options.get("cache", "true")).lower() not in ("0", "false", "no")
        self.provider = get_provider(source, cached=cached)

    def predict(self, sample: FaceSample) -> Prediction:
        """One sample (see :meth:`predict_batch`)."""
        return self.predict_batch([sample])[0]

    def predict_batch(self, samples: Sequence[FaceSample]) -> list[Prediction]:
        """Detect, align and reconstruct a batch (one network call for the detected faces).

        Failures are per sample: an unreadable image is ``error``, no face is ``no_face``.
        """
        import torch

        from methods.elam_ldl.align import network_input
        from methods.render.camera import project

        out: list[Prediction | None] = [None] * len(samples)
        todo: list[tuple[int, Any, float]] = []
        crops, eye_crops, crop_landmarks = [], [], []
        for i, sample in enumerate(samples):
            t0 = time.perf_counter()
            image, res = self.provider.image_and_landmarks(sample)
            if image is None or res.status != "ok":
                out[i] = Prediction.failed(res.status, res.error or res.status)
                continue
            try:
                inp = network_input(image, res.landmarks, self.net.spec, self.template)
            except ValueError as exc:
                out[i] = Prediction.failed("error", f"alignment failed: {exc}")
                continue
            crops.append(inp.crop)
            crop_landmarks.append(inp.landmarks)
            if inp.eye_crops is not None:
                eye_crops.append(inp.eye_crops)
            todo.append((i, inp.transform, time.perf_counter() - t0))
        if not todo:
            return [p for p in out if p is not None]
        t0 = time.perf_counter()
        with torch.no_grad():
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
            eyes = (torch.from_numpy(np.stack(eye_crops).astype(np.float16).astype(np.float32))
                    .to(self.torch_device) if eye_crops else None)
            lm = torch.from_numpy(np.stack(crop_landmarks).astype(np.float32))
            c = self.net.coefficients(x.to(self.torch_device), eyes, lm.to(self.torch_device))
            geo = self.decoder.geometry(c)
            verts = geo.vertices.cpu().numpy().astype(np.float32)
            # the same identity with expression zeroed, for neutral scans (NoW)
            neutral = self.decoder.vertices(c._replace(exp=torch.zeros_like(c.exp)))
            neutral = neutral.cpu().numpy().astype(np.float32)
            lmk = geo.landmarks2d.cpu().numpy()
            vimg = project(geo.vertices_cam, self.decoder.camera).cpu().numpy()
            depth = geo.vertices_cam[..., 2].cpu().numpy()
            blink = c.exp[:, list(self.decoder.blink_ids)].cpu().numpy()
        dt = (time.perf_counter() - t0) / len(todo)
        for k, (i, tr, t_detect) in enumerate(todo):
            image_xy = tr.invert(vimg[k])
            out[i] = Prediction(
                status="ok",
                vertices=verts[k],
                neutral_vertices=neutral[k],
                topology=self.topology,
                landmarks2d=tr.invert(lmk[k]),
                vertices_image=np.concatenate([image_xy, depth[k][:, None]], 1)
                .astype(np.float32),
                extras={"detect_seconds": round(t_detect, 4), "net_seconds": round(dt, 4),
                        "blink": [round(float(b), 4) for b in blink[k]]},
            )
        return [p for p in out if p is not None]


class Deep3dRecipe(ElamLdlMethod):
    """``deep3d-recipe``: trained without ELAM and without LDL."""

    card = CARDS["deep3d-recipe"]


class Elam(ElamLdlMethod):
    """``elam``: trained with ELAM-adjusted landmark targets, no LDL."""

    card = CARDS["elam"]


class Ldl(ElamLdlMethod):
    """``ldl``: trained with LDL on raw detected landmarks, no ELAM."""

    card = CARDS["ldl"]


class ElamLdl(ElamLdlMethod):
    """``elam-ldl``: the paper's method, ELAM and LDL both on."""

    card = CARDS["elam-ldl"]

