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

Outputs. ``vertices``: FLAME with the predicted shape, expression and jaw, the global
rotation removed (the metrics align rigidly anyway); ``neutral_vertices``: the shape alone
(expression and all pose zeroed), as DECA's own NoW export (``decalib/trainer.py``), scored
against neutral scans. ``landmarks2d`` are DECA's 2D keypoints (``landmarks2d``: the
yaw-dependent jaw contour for points 0-16, the static embedding for 17-67, see
:func:`methods.flame.dynamic_landmarks`) through DECA's orthographic camera, mapped back
to the input image: what 2D NME compares with annotations, as DECA reports it. The 3D 68
on the mesh (eyelid pairs, NoW's 7 points) use the full embedding (``full_lmk_*``); the contour
changes only points 0-16, so eye and NoW-7 readings are unaffected. The detail branch
(displacement maps) is not used: NoW scores the coarse shape.

Parity with the official code on seeded stand-in weights: ``tests/test_upstream_parity.py``
(fixtures from ``scripts/upstream_parity/deca_parity.py``).

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
    revision="2",  # crop half pixel, dynamic 2D contour, neutral mesh
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
    """DECA's crop: the square (centre, size) warped bilinearly to ``out`` x ``out``.

    As DECA's skimage ``warp`` with the similarity of ``TestData``: output pixel x samples
    the input at ``s x + x0`` (pixel centres on integers), s = size / (out - 1),
    x0 = centre - size / 2, zero outside the image.

    Returns:
        (out, out, 3) float32 RGB in [0, 1] (DECA feeds the float crop, not uint8).
    """
    from methods.imagewarp import sample_affine

    s = size / (out - 1)
    crop = sample_affine(image, np.eye(2) * s, np.asarray(centre, np.float64) - size / 2.0,
                         (out, out))
    return (crop / 255.0).astype(np.float32)


def crop_to_image(xy: np.ndarray, centre: np.ndarray, size: float) -> np.ndarray:
    """(N, 2) points in DECA's normalised crop frame -> input-image pixels.

    As DECA's ``transform_points`` with the crop's inverse similarity: crop pixels are
    ``(p + 1) / 2 * 224``, and crop pixel 0 / 223 is the box's first / last input pixel.
    """
    crop_xy = (np.asarray(xy, np.float64) * 0.5 + 0.5) * CROP
    return crop_xy * (size / (CROP - 1)) + (np.asarray(centre, np.float64) - size / 2.0)


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
        if not flame.has_contour:
            raise ValueError(f"{self.resolve_file('embedding')} lacks DECA's static/dynamic "
                             "landmark embedding (static_lmk_*, dynamic_lmk_*).")
        self.flame_data = flame
        self.flame = FlameLayer(flame, n_shape=SPLIT["shape"], n_exp=SPLIT["exp"]).to(device)
        self.topology = flame.topology()
        self.provider = get_provider("dlib")
        self.torch = torch

    def codes(self, crop: np.ndarray) -> dict[str, np.ndarray]:
        """The 236 parameters of one 224 x 224 RGB crop (uint8, or float in [0, 1])."""
        torch = self.torch
        x = torch.as_tensor(np.array(crop), dtype=torch.float32, device=self.device)
        if np.asarray(crop).dtype == np.uint8:
            x = x / 255.0
        with torch.no_grad():
            out = self.head(self.encoder(x.permute(2, 0, 1)[None]))[0].cpu().numpy()
        codes, start = {}, 0
        for name, n in SPLIT.items():
            codes[name] = out[start:start + n]
            start += n
        return codes

    def decode(self, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """FLAME meshes and DECA's 2D keypoints of one code dictionary.

        Returns:
            ``posed`` (V, 3) with global rotation and jaw (DECA's ``verts``), ``scored``
            (global rotation removed), ``neutral`` (shape only), ``landmarks2d`` (68, 2) and
            ``vertices2d`` (V, 2) in DECA's normalised crop frame (orthographic camera,
            y down, [-1, 1] spans the crop).
        """
        from methods.flame import dynamic_landmarks

        torch = self.torch
        shape = torch.as_tensor(c["shape"][None], device=self.device)
        exp = torch.as_tensor(c["exp"][None], device=self.device)
        pose = torch.zeros(1, 15, device=self.device)
        pose[0, 6:9] = torch.as_tensor(c["pose"][3:])     # jaw
        with torch.no_grad():
            scored = self.flame(shape, exp, pose)[0].cpu().numpy()
            pose[0, 0:3] = torch.as_tensor(c["pose"][:3])  # + global rotation
            posed = self.flame(shape, exp, pose)[0].cpu().numpy()
            neutral = self.flame(shape, torch.zeros_like(exp))[0].cpu().numpy()
        lmk = dynamic_landmarks(self.flame_data, posed, c["pose"][:3])
        scale, tx, ty = (float(v) for v in c["cam"])

        def project(p: np.ndarray) -> np.ndarray:  # decalib/utils/util.py: batch_orth_proj
            xy = (p[:, :2] + np.array([tx, ty], np.float32)) * np.float32(scale)
            return xy * np.array([1.0, -1.0], np.float32)

        return {"posed": posed, "scored": scored, "neutral": neutral,
                "landmarks2d": project(lmk), "vertices2d": project(posed)}

    def predict(self, sample: FaceSample) -> Prediction:
        """Detect, then :meth:`reconstruct`."""
        image = sample.load_image()
        det = self.provider.detect(image)
        if not det.ok:
            return Prediction.failed(det.status, det.error or "no face found")
        return self.reconstruct(image, det.landmarks)

    def reconstruct(self, image: np.ndarray, lm68: np.ndarray) -> Prediction:
        """Crop from 68 landmarks, encode, decode (see the module docstring)."""
        centre, size = crop_box(np.asarray(lm68, np.float64))
        d = self.decode(self.codes(warp_square(image, centre, size)))

        def to_image(xy: np.ndarray) -> np.ndarray:
            return crop_to_image(xy, centre, size)

        return Prediction(
            status="ok",
            vertices=d["scored"].astype(np.float32),
            neutral_vertices=d["neutral"].astype(np.float32),
            topology=self.topology,
            landmarks2d=to_image(d["landmarks2d"]).astype(np.float32),
            vertices_image=np.concatenate([to_image(d["vertices2d"]), -d["posed"][:, 2:3]],
                                          axis=1).astype(np.float32),
        )
