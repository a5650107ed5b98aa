"""``mica``: MICA (Zielonka et al., ECCV 2022) from its official checkpoint.

Room: the adapter. Our own code, written to load the official checkpoint keys and to
reproduce the official test-time pipeline (``demo.py``, ``datasets/creation/util.py``,
``models/generator.py``):

1. five face points -> insightface's ``norm_crop``: the least-squares similarity from the
   image points *to* the ArcFace template (``estimate_norm``), applied by inverse mapping
   with bilinear sampling as ``cv2.warpAffine`` (pixel centres on integers, zero outside),
   112 x 112 uint8, then RGB scaled to [-1, 1] (``cv2.dnn.blobFromImages``). The fit
   direction matters: a least-squares similarity is not symmetric, and fitting template ->
   image gives crops zoomed in by a few percent when the five points do not fit the
   template exactly;
2. ArcFace iResNet-100 (``arcface`` weights) -> L2-normalised 512-d identity;
3. mapping network (4 x Linear + leaky ReLU 0.2, then Linear) -> 300 FLAME shape
   coefficients -> FLAME's **neutral** canonical mesh (metres). FLAME's buffers come
   from the checkpoint itself (``flameModel`` holds ``generator.v_template`` ...).

Five points: MICA takes them from RetinaFace (insightface ``antelopev2``, onnxruntime-gpu);
here they come from dlib's 68 landmarks: the eye centres are the midpoints of the eye
corners (36/39, 42/45), the nose tip is point 30, the mouth corners 48/54. RetinaFace's
eye points are its own regressed pupil-ish centres and its nose/mouth points are trained on
other annotations, so the similarity, and so the crop and identity code, differ slightly
from the official pipeline's for the same photo (a few pixels of five-point disagreement
moves the 112 px crop by about as much; the crop code itself matches insightface's to
uint8 rounding on the same five points, ``tests/test_upstream_parity.py``).

MICA predicts no expression, jaw or eyelid state: its eyes are open by construction, so its
eye-state numbers are a floor, not a measurement of the method. The mesh is neutral already,
so ``neutral_vertices`` is the same mesh. File: ``mica.tar``
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
    revision="2",  # crop fit direction (image -> template) and pixel-centre convention
)


def norm_matrix(five: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity image -> ArcFace template, as insightface's ``estimate_norm``."""
    from methods.nets.iresnet import ARCFACE_TEMPLATE
    from metrics import umeyama

    dst = np.asarray(ARCFACE_TEMPLATE, np.float64)
    pad = np.zeros((5, 1))  # a 2D similarity as a 3D one in the z = 0 plane
    tf = umeyama(np.hstack([np.asarray(five, np.float64), pad]), np.hstack([dst, pad]),
                 with_scale=True)
    return np.hstack([tf.scale * tf.rotation[:2, :2], tf.translation[:2, None]])


def arcface_crop(image: np.ndarray, five: np.ndarray) -> np.ndarray:
    """The (112, 112, 3) uint8 ArcFace crop of five points, as insightface's ``norm_crop``.

    The matrix maps the image onto the template; each crop pixel samples the input at its
    inverse image (bilinear, pixel centres on integers, zero outside), as ``cv2.warpAffine``.
    """
    from methods.imagewarp import sample_affine
    from methods.nets.iresnet import ARCFACE_SIZE

    m = norm_matrix(five)
    inv = np.linalg.inv(m[:, :2])
    crop = sample_affine(image, inv, -inv @ m[:, 2], (ARCFACE_SIZE, ARCFACE_SIZE))
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8)


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
        """Detect, then :meth:`reconstruct` from the five points of the 68."""
        image = sample.load_image()
        det = self.provider.detect(image)
        if not det.ok:
            return Prediction.failed(det.status, det.error or "no face found")
        five = five_points(np.asarray(det.landmarks, np.float64), eyes="corners")
        return self.reconstruct(image, five)

    def shape_from_crop(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(300,) FLAME shape code and (V, 3) neutral vertices of a 112 x 112 aligned crop."""
        with self.torch.no_grad():
            shape = self.mapping(self.identity(crop))
            verts = self.flame(shape)[0].cpu().numpy()
        return shape[0].cpu().numpy(), verts

    def reconstruct(self, image: np.ndarray, five: np.ndarray) -> Prediction:
        """Align on five points (image left eye, right eye, nose, mouth corners), regress."""
        shape, verts = self.shape_from_crop(arcface_crop(image, five))
        verts = verts.astype(np.float32)
        return Prediction(status="ok", vertices=verts, neutral_vertices=verts,
                          topology=self.topology,
                          extras={"shape_norm": float(np.linalg.norm(shape))})
