"""``deca``: DECA's coarse model (Feng et al., SIGGRAPH 2021) from its official files.

Room: the adapter. Our own code, written to load the official checkpoint keys and to
reproduce the official test-time pipeline (``decalib/datasets/datasets.py: TestData``,
``decalib/deca.py: encode/decode``, ``decalib/models/FLAME.py``):

1. 68 landmarks (dlib here; DECA uses FAN, or the ``.txt`` landmarks beside an image) give a
   box: size = 1.1 x the mean of width and height, a square of 1.25 x that around the box
   centre, similarity-warped to 224 x 224, RGB in [0, 1];
2. ``E_flame`` = ResNet-50 -> Linear(2048, 1024) -> ReLU -> Linear(1024, 236):
   shape 100 | tex 50 | exp 50 | pose 6 (global 3 + jaw 3, axis-angle) | cam 3 | light 27;
3. FLAME with 100 shape and 50 expression components, neck and eyeballs at rest.

The mesh we score is FLAME with the predicted shape, expression and jaw, and the global
rotation removed (the metrics align rigidly anyway). The landmark overlay uses DECA's
orthographic camera. The detail branch (displacement maps) is not used: NoW scores the
coarse shape.

Files: ``deca_model.tar`` (``DECA_CHECKPOINT``), FLAME 2020 ``generic_model.pkl``
(``FLAME_MODEL``; registration at flame.is.tue.mpg.de) and DECA's
``data/landmark_embedding.npy`` (``DECA_LANDMARK_EMBEDDING``). The pickles are read with
an allow-list (:mod:`methods.safe_pickle`), the checkpoint with ``weights_only=True``.
"""

from __future__ import annotations

import numpy as np

from benchmark.types import FaceSample, Prediction
from methods.base import Method, MethodCard, RequiredFile

SPLIT = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
CROP = 224

CARD = MethodCard(
    name="deca",
    description="DECA coarse FLAME model (ResNet-50 encoder) from the official checkpoint",
    topology="flame",
    license="DECA and FLAME: non-commercial research licences (MPI)",
    reference="https://github.com/yfeng95/DECA",
    citation="Feng, Feng, Black, Bolkart. Learning an Animatable Detailed 3D Face Model from "
             "In-The-Wild Images. SIGGRAPH 2021",
    training_datasets=("VGGFace2", "BUPT-Balancedface", "VoxCeleb2"),
    required_files=(
        RequiredFile("checkpoint", "DECA_CHECKPOINT", "DECA's data/deca_model.tar"),
        RequiredFile("flame", "FLAME_MODEL", "FLAME 2020 generic_model.pkl"),
        RequiredFile("embedding", "DECA_LANDMARK_EMBEDDING", "DECA's data/landmark_embedding.npy"),
    ),
    extra="landmarks",
    python_modules=("dlib",),
)


def crop_box(lm68: np.ndarray, scale: float = 1.25) -> tuple[np.ndarray, float]:
    """DECA's square crop from 68 landmarks: (centre (2,), side length in pixels)."""
    left, top = lm68.min(axis=0)
    right, bottom = lm68.max(axis=0)
    old_size = (right - left + bottom - top) / 2.0 * 1.1
    centre = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    return centre, float(int(old_size * scale))


def warp_square(image: np.ndarray, centre: np.ndarray, size: float, out: int = CROP
                ) -> np.ndarray:
    """Bilinear warp of the axis-aligned square (centre, size) onto an ``out`` x ``out`` image."""
    from PIL import Image

    s = size / (out - 1)  # output pixel -> input pixel
    x0, y0 = centre - size / 2.0
    warped = Image.fromarray(image).transform(
        (out, out), Image.AFFINE, (s, 0.0, x0, 0.0, s, y0), resample=Image.BILINEAR)
    return np.asarray(warped)


class DECA(Method):
    """DECA's coarse reconstruction with our FLAME and encoder code on its weights."""

    card = CARD

    def load(self, device: str) -> None:
        """Reads the encoder weights and FLAME."""
        import torch
        from torch import nn

        from methods.flame import FlameData, FlameLayer
        from methods.landmarks import get_provider
        from methods.nets.resnet import ResNet, backbone_spec

        state = self.load_checkpoint(required=("E_flame",))["E_flame"]
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder = ResNet(*backbone_spec(enc_state), num_classes=0)  # official: ResNet-50
        encoder.load_state_dict(enc_state, strict=True)
        head = nn.Sequential(nn.Linear(encoder.feature_dim, 1024), nn.ReLU(),
                             nn.Linear(1024, sum(SPLIT.values())))
        head.load_state_dict({k[len("layers."):]: v for k, v in state.items()
                              if k.startswith("layers.")}, strict=True)
        flame = FlameData.from_official(self.resolve_file("flame"),
                                        self.resolve_file("embedding"))
        self.encoder, self.head = encoder.eval().to(device), head.eval().to(device)
        self.flame = FlameLayer(flame, n_shape=SPLIT["shape"], n_exp=SPLIT["exp"]).to(device)
        self.topology = flame.topology()
        self.provider = get_provider("dlib")
        self.torch = torch

    def codes(self, crop: np.ndarray) -> dict[str, np.ndarray]:
        """The 236 parameters of one 224 x 224 crop, split by name."""
        torch = self.torch
        x = torch.as_tensor(np.array(crop), dtype=torch.float32, device=self.device) / 255.0
        with torch.no_grad():
            out = self.head(self.encoder(x.permute(2, 0, 1)[None]))[0].cpu().numpy()
        codes, start = {}, 0
        for name, n in SPLIT.items():
            codes[name] = out[start:start + n]
            start += n
        return codes

    def predict(self, sample: FaceSample) -> Prediction:
        """Detect, crop, encode, decode (see the module docstring)."""
        torch = self.torch
        image = sample.load_image()
        det = self.provider.detect(image)
        if not det.ok:
            return Prediction.failed(det.status, det.error or "no face found")
        centre, size = crop_box(det.landmarks)
        c = self.codes(warp_square(image, centre, size))
        shape = torch.as_tensor(c["shape"][None])
        exp = torch.as_tensor(c["exp"][None])
        pose_full = torch.zeros(1, 15)
        pose_full[0, 6:9] = torch.as_tensor(c["pose"][3:])     # jaw
        with torch.no_grad():
            verts = self.flame(shape, exp, pose_full)[0].cpu().numpy()
            pose_full[0, 0:3] = torch.as_tensor(c["pose"][:3])  # + global, for the overlay
            posed = self.flame(shape, exp, pose_full)[0].cpu().numpy()
        scale, tx, ty = c["cam"]
        xy = (posed[:, :2] + [tx, ty]) * scale
        xy[:, 1] = -xy[:, 1]
        crop_xy = xy * CROP / 2.0 + CROP / 2.0
        img_xy = crop_xy * (size / (CROP - 1)) + (centre - size / 2.0)
        lmk = self.topology.landmarks(posed)
        lxy = (lmk[:, :2] + [tx, ty]) * scale * np.array([1.0, -1.0]) * CROP / 2.0 + CROP / 2.0
        return Prediction(
            status="ok",
            vertices=verts.astype(np.float32),
            topology=self.topology,
            landmarks2d=(lxy * (size / (CROP - 1)) + (centre - size / 2.0)).astype(np.float32),
            vertices_image=np.concatenate([img_xy, -posed[:, 2:3]], axis=1).astype(np.float32),
        )
