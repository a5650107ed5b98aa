"""``mica``: MICA (Zielonka et al., ECCV 2022) from its official checkpoint.

Room: the adapter. Our own code, written to load the official checkpoint keys and to
reproduce the official test-time pipeline (``demo.py``, ``datasets/creation/util.py``,
``models/generator.py``):

1. five face points -> similarity onto insightface's ArcFace template -> 112 x 112 crop,
   RGB scaled to [-1, 1]. MICA detects with RetinaFace (insightface, onnxruntime-gpu); here
   the five points come from dlib's 68 landmarks (eye centres, nose tip, mouth corners),
   so crops can differ slightly from the official ones;
2. ArcFace iResNet-100 (``arcface`` weights) -> L2-normalised 512-d identity;
3. mapping network (4 x Linear + leaky ReLU 0.2, then Linear) -> 300 FLAME shape
   coefficients -> FLAME's **neutral** canonical mesh (metres). FLAME's buffers come
   from the checkpoint itself (``flameModel`` holds ``generator.v_template`` ...).

MICA predicts no expression, jaw or eyelid state: its eyes are open by construction, so its
eye-state numbers are a floor, not a measurement of the method. File: ``mica.tar``
(``MICA_CHECKPOINT``), read with ``weights_only=True``.
"""

from __future__ import annotations

import numpy as np

from benchmark.types import FaceSample, Prediction
from methods.base import Method, MethodCard, RequiredFile
from methods.landmarks.base import five_points

CARD = MethodCard(
    name="mica",
    description="MICA neutral identity shape (ArcFace + mapping network -> FLAME) from mica.tar",
    topology="flame",
    license="MICA and FLAME: non-commercial research licences",
    reference="https://github.com/Zielon/MICA",
    citation="Zielonka, Bolkart, Thies. Towards Metrical Reconstruction of Human Faces. "
             "ECCV 2022",
    training_datasets=("LYHM", "FaceWarehouse", "Stirling", "D3DFACS", "Florence", "FRGC",
                       "BU-3DFE", "BP4D+"),
    required_files=(
        RequiredFile("checkpoint", "MICA_CHECKPOINT", "MICA's data/pretrained/mica.tar"),
    ),
    extra="landmarks",
    python_modules=("dlib",),
    eyes_open_by_construction=True,
)


def arcface_crop(image: np.ndarray, five: np.ndarray) -> np.ndarray:
    """Insightface's ``norm_crop``: similarity of the five points onto the ArcFace template."""
    from PIL import Image

    from methods.nets.iresnet import ARCFACE_SIZE, ARCFACE_TEMPLATE
    from metrics import umeyama

    dst = np.asarray(ARCFACE_TEMPLATE, np.float64)
    # a 2D similarity as a 3D one in the z = 0 plane (crop -> image, for PIL's inverse map)
    pad = np.zeros((5, 1))
    tf = umeyama(np.hstack([dst, pad]), np.hstack([five, pad]), with_scale=True)
    m = tf.scale * tf.rotation[:2, :2]
    t = tf.translation[:2]
    warped = Image.fromarray(image).transform(
        (ARCFACE_SIZE, ARCFACE_SIZE), Image.AFFINE,
        (m[0, 0], m[0, 1], t[0], m[1, 0], m[1, 1], t[1]), resample=Image.BILINEAR)
    return np.asarray(warped)


class MappingNetwork:
    """MICA's mapping network as plain tensors (keys ``regressor.network.i`` / ``.output``)."""

    def __init__(self, state: dict, prefix: str = "regressor.") -> None:
        import torch

        self.layers = []
        i = 0
        while f"{prefix}network.{i}.weight" in state:
            self.layers.append((state[f"{prefix}network.{i}.weight"].float(),
                                state[f"{prefix}network.{i}.bias"].float()))
            i += 1
        if not self.layers or f"{prefix}output.weight" not in state:
            raise ValueError("the checkpoint's flameModel has no regressor.network/output keys.")
        self.output = (state[f"{prefix}output.weight"].float(),
                       state[f"{prefix}output.bias"].float())
        self.torch = torch

    def __call__(self, z):  # noqa: D102 - (B, 512) -> (B, 300)
        f = self.torch.nn.functional
        h = z
        for w, b in self.layers:
            h = f.leaky_relu(f.linear(h, w, b), negative_slope=0.2)
        return f.linear(h, *self.output)


class MICA(Method):
    """MICA's identity regressor with our ArcFace, mapping and FLAME code on its weights."""

    card = CARD

    def load(self, device: str) -> None:
        """Reads mica.tar: ArcFace weights, mapping network and FLAME buffers."""
        import torch

        from methods.flame import FlameData, FlameLayer
        from methods.landmarks import get_provider
        from methods.nets.iresnet import iresnet_from_state_dict

        ckpt = self.load_checkpoint(required=("arcface", "flameModel"))
        self.arcface = iresnet_from_state_dict(ckpt["arcface"], "mica arcface").eval().to(device)
        self.mapping = MappingNetwork(ckpt["flameModel"])
        flame = FlameData.from_state_dict(ckpt["flameModel"], prefix="generator.")
        self.flame = FlameLayer(flame, n_shape=300, n_exp=0).to(device)
        self.topology = flame.topology()
        self.provider = get_provider("dlib")
        self.torch = torch

    def identity(self, crop: np.ndarray):
        """The normalised ArcFace identity of a 112 x 112 aligned crop, (1, 512)."""
        torch = self.torch
        x = torch.as_tensor(np.array(crop), dtype=torch.float32, device=self.device)
        x = ((x - 127.5) / 127.5).permute(2, 0, 1)[None]
        with torch.no_grad():
            return torch.nn.functional.normalize(self.arcface(x))

    def predict(self, sample: FaceSample) -> Prediction:
        """Detect, align, embed, regress the neutral shape."""
        image = sample.load_image()
        det = self.provider.detect(image)
        if not det.ok:
            return Prediction.failed(det.status, det.error or "no face found")
        lm = np.asarray(det.landmarks, np.float64)
        five = five_points(lm, eyes="corners")
        with self.torch.no_grad():
            shape = self.mapping(self.identity(arcface_crop(image, five)))
            verts = self.flame(shape)[0].cpu().numpy()
        return Prediction(status="ok", vertices=verts.astype(np.float32),
                          topology=self.topology,
                          extras={"shape_norm": float(shape.norm())})
