"""``deep3d``: Deep3DFaceRecon_pytorch (Deng et al. 2019) from its official files.

Room: the adapter. Our own network and preprocessing code, written to load the official
checkpoint keys and to reproduce the official test-time pipeline (``test.py``,
``util/preprocess.py: align_img``, ``models/bfm.py``):

1. 68 landmarks from dlib (the official pipeline takes 5 points from any detector);
   the 5 points are the eye centres (means of 36/39 and 42/45), nose tip 30, mouth corners;
2. POS fit of the 5 points (y up) to the standard 3D landmarks of
   ``similarity_Lm3D_all.mat``, scale ``102 / s``, bicubic resize and a 224 x 224 crop;
3. ResNet (depth read from the checkpoint: 18/34/50) + 7 zero-initialised 1x1 heads ->
   257 coefficients: id 80 | exp 64 | tex 80 | angles 3 | gamma 27 | t_xy 2 | t_z 1;
4. shape = recentred mean + idBase id + exBase exp (decimetres -> metres); pose
   ``v R^T + t``, camera at distance 10, focal 1015, centre 112, for the landmark overlay;
   crop points map back to the input image by the exact inverse of ``align_img``'s landmark
   map (untruncated crop offset, its y flips about H - 1 and 223).

``vertices`` is the expressive mesh; ``neutral_vertices`` the same identity with the
expression coefficients zeroed (for neutral scans such as NoW). Parity with the official
code on seeded stand-ins: ``tests/test_upstream_parity.py``.

Files a user supplies (they cannot be shipped): the checkpoint ``epoch_20.pth``
(``DEEP3D_CHECKPOINT``), ``BFM_model_front.mat`` (``DEEP3D_BFM``) and
``similarity_Lm3D_all.mat`` (``DEEP3D_LM3D``). All are read without pickle.
"""

from __future__ import annotations

import numpy as np

from benchmark.types import FaceSample, Prediction
from methods.base import Method, MethodCard, RequiredFile
from methods.landmarks.base import five_points as landmarks_five_points

#: Coefficient layout of the official 257-d output.
SPLIT = {"id": (0, 80), "exp": (80, 144), "tex": (144, 224), "angle": (224, 227),
         "gamma": (227, 254), "trans": (254, 257)}
FOCAL, CENTER, CAMERA_DISTANCE, CROP, RESCALE = 1015.0, 112.0, 10.0, 224, 102.0

CARD = MethodCard(
    name="deep3d",
    description="Deep3DFaceRecon_pytorch (BFM, ResNet-50) from the official checkpoint",
    topology="bfm-front",
    license="Deep3DFaceRecon_pytorch: MIT; BFM: registration-only licence",
    reference="https://github.com/sicxu/Deep3DFaceRecon_pytorch",
    citation="Deng et al., Accurate 3D Face Reconstruction with Weakly-Supervised Learning: "
             "From Single Image to Image Set, CVPRW 2019",
    revision="2",  # untruncated crop offset, neutral mesh
    training_datasets=("CelebA", "LFW", "300W-LP", "IJB-A", "LS3D-W", "FFHQ"),
    required_files=(
        RequiredFile("checkpoint", "DEEP3D_CHECKPOINT",
                     "the official checkpoint checkpoints/<name>/epoch_20.pth"),
        RequiredFile("bfm", "DEEP3D_BFM",
                     "BFM/BFM_model_front.mat (made by Deep3D's transferBFM09 from BFM09)"),
        RequiredFile("lm3d", "DEEP3D_LM3D", "BFM/similarity_Lm3D_all.mat (Deep3D repository)"),
    ),
    extra="landmarks",
    python_modules=("dlib",),
)


def five_points(lm68: np.ndarray) -> np.ndarray:
    """Deep3D's 5 alignment points (``extract_5p``): eye-corner midpoints, nose, mouth."""
    return landmarks_five_points(lm68, eyes="corners")


def pos_fit(points2d: np.ndarray, points3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Deep3D's POS: least-squares affine camera from 3D to 2D points; (translation, scale).

    Args:
        points2d: (K, 2) image points (y up).
        points3d: (K, 3) model points.
    """
    k = points2d.shape[0]
    a = np.zeros((2 * k, 8))
    a[0::2, 0:3] = points3d
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = points3d
    a[1::2, 7] = 1.0
    sol = np.linalg.lstsq(a, points2d.reshape(-1), rcond=None)[0]
    scale = (np.linalg.norm(sol[0:3]) + np.linalg.norm(sol[4:7])) / 2.0
    return np.array([sol[3], sol[7]]), float(scale)


def align_crop(image: np.ndarray, lm68: np.ndarray, lm3d_5: np.ndarray
               ) -> tuple[np.ndarray, dict[str, float]]:
    """Deep3D's ``align_img``: resize by ``102 / s`` and crop 224 x 224 around the face.

    Args:
        image: (H, W, 3) uint8 RGB.
        lm68: (68, 2) pixel landmarks (y down).
        lm3d_5: (5, 3) standard 3D landmarks (``similarity_Lm3D_all.mat`` reduced).

    Returns:
        The (224, 224, 3) uint8 crop and the parameters that map crop pixels back
        (``scale``; the integer crop box ``left``, ``up``; the resized size ``w``, ``h``;
        the POS translation ``tx``, ``ty`` (y up); the input size ``w0``, ``h0``).
    """
    from PIL import Image

    h0, w0 = image.shape[:2]
    lm = five_points(lm68)
    lm[:, 1] = h0 - 1 - lm[:, 1]
    t, s = pos_fit(lm, lm3d_5)
    s = RESCALE / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - CROP / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - CROP / 2 + (h0 / 2 - t[1]) * s)
    resized = Image.fromarray(image).resize((w, h), resample=Image.BICUBIC)
    crop = np.asarray(resized.crop((left, up, left + CROP, up + CROP)))
    return crop, {"scale": s, "left": left, "up": up, "w": w, "h": h, "tx": float(t[0]),
                  "ty": float(t[1]), "w0": w0, "h0": h0}


def crop_to_image(points: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Maps (N, 2) crop pixels (y down) back to the input image's pixels (y down).

    The inverse of Deep3D's landmark map (``util/preprocess.py: resize_n_crop_img``), which
    works with y up (image y flipped about H - 1, crop y about 223) and keeps the
    untruncated offset ``w / 2 - 112`` (not the integer crop box):
    ``x_crop = (x - tx + w0 / 2) s - (w / 2 - 112)``, likewise for y.
    """
    p = params
    half = CROP / 2.0
    out = np.asarray(points, np.float64).copy()
    out[:, 0] = (out[:, 0] + p["w"] / 2.0 - half) / p["scale"] + p["tx"] - p["w0"] / 2.0
    y_up_crop = CROP - 1 - out[:, 1]
    y_up = (y_up_crop + p["h"] / 2.0 - half) / p["scale"] + p["ty"] - p["h0"] / 2.0
    out[:, 1] = p["h0"] - 1 - y_up
    return out


class Deep3D(Method):
    """Deep3DFaceRecon_pytorch's released model, run with our code on its weights."""

    card = CARD

    def load(self, device: str) -> None:
        """Reads the checkpoint, the BFM file and the standard landmarks."""
        import torch
        from scipy.io import loadmat
        from torch import nn

        from methods.facemodel.bfm import read_bfm
        from methods.landmarks import get_provider
        from methods.nets.resnet import ResNet, backbone_spec

        state = self.load_checkpoint(required=("net_recon",))["net_recon"]
        backbone = {k[len("backbone."):]: v for k, v in state.items()
                    if k.startswith("backbone.") and not k.startswith("backbone.fc.")}
        depth, width = backbone_spec(backbone)
        net = ResNet(depth, width, num_classes=0)
        net.load_state_dict(backbone, strict=True)
        # the official head order: id, exp, tex, angle, gamma, t_xy (2), t_z (1)
        sizes = [80, 64, 80, 3, 27, 2, 1]
        heads = nn.ModuleList(nn.Conv2d(net.feature_dim, n, 1, bias=True) for n in sizes)
        heads.load_state_dict({k[len("final_layers."):]: v for k, v in state.items()
                               if k.startswith("final_layers.")}, strict=True)
        self.net = net.eval().to(device)
        self.heads = heads.eval().to(device)
        self.bfm = read_bfm(self.resolve_file("bfm"))
        lm = loadmat(str(self.resolve_file("lm3d")))
        if "lm" not in lm or lm["lm"].shape != (68, 3):
            raise ValueError(f"{self.resolve_file('lm3d')} must hold a (68, 3) field 'lm'.")
        self.lm3d_5 = five_points(lm["lm"])
        self.topology = self.bfm.model.topology()
        self.provider = get_provider("dlib")
        self.torch = torch

    def coefficients(self, crop: np.ndarray) -> dict[str, np.ndarray]:
        """The 257 coefficients of one 224 x 224 RGB crop, split by name."""
        torch = self.torch
        x = torch.as_tensor(np.array(crop), dtype=torch.float32, device=self.device)
        x = (x / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            feat = self.net.avgpool(self.net.features(x))
            out = torch.cat([h(feat) for h in self.heads], dim=1).flatten(1)[0].cpu().numpy()
        return {k: out[a:b].astype(np.float64) for k, (a, b) in SPLIT.items()}

    def decode(self, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Meshes and projection of split coefficients.

        Returns:
            ``vertices`` and ``neutral`` (V, 3) metres in the model frame, ``camera`` (V, 3)
            Deep3D's camera-frame vertices in decimetres (z = 10 - z), ``xy`` (V, 2) crop
            pixels with y down.
        """
        from methods.render.camera import euler_to_matrix

        model = self.bfm.model
        verts = model.vertices(c["id"], c["exp"])  # metres, model frame
        neutral = model.vertices(c["id"], np.zeros_like(c["exp"]))
        # Deep3D's projection (decimetres): v R^T + t, z -> 10 - z, pinhole, y up -> y down.
        rot = euler_to_matrix(self.torch.as_tensor(c["angle"][None])).numpy()[0]
        cam = (verts / 0.1) @ rot.T + c["trans"]
        cam[:, 2] = CAMERA_DISTANCE - cam[:, 2]
        xy = np.stack([FOCAL * cam[:, 0] / cam[:, 2] + CENTER,
                       FOCAL * cam[:, 1] / cam[:, 2] + CENTER], axis=1)
        xy[:, 1] = CROP - 1 - xy[:, 1]
        return {"vertices": verts, "neutral": neutral, "camera": cam, "xy": xy}

    def predict(self, sample: FaceSample) -> Prediction:
        """Detect, then :meth:`reconstruct`."""
        image = sample.load_image()
        det = self.provider.detect(image)
        if not det.ok:
            return Prediction.failed(det.status, det.error or "no face found")
        return self.reconstruct(image, det.landmarks)

    def reconstruct(self, image: np.ndarray, lm68: np.ndarray) -> Prediction:
        """Align, regress, decode (see the module docstring)."""
        crop, params = align_crop(image, lm68, self.lm3d_5)
        c = self.coefficients(crop)
        d = self.decode(c)
        img_xy = crop_to_image(d["xy"], params)
        return Prediction(
            status="ok",
            vertices=d["vertices"].astype(np.float32),
            neutral_vertices=d["neutral"].astype(np.float32),
            topology=self.topology,
            landmarks2d=img_xy[self.bfm.model.landmark_ids].astype(np.float32),
            vertices_image=np.concatenate([img_xy, d["camera"][:, 2:3] * 0.1], axis=1).astype(
                np.float32),
            extras={"exp_norm": float(np.linalg.norm(c["exp"]))},
        )
