"""Runs Deep3DFaceRecon_pytorch's own code on the seeded stand-ins; writes ``deep3d.npz``.

Room: scripts (outside the default tests; needs an upstream checkout, OpenCV and
scikit-image). What runs upstream: ``util/load_mats.py: load_lm3d``,
``util/preprocess.py: align_img`` (POS, PIL resize, crop and the landmark map) fed as
``test.py: read_data`` feeds it (float32 five points, y flipped with H - 1),
``models/networks.py: ReconNetWrapper`` (``resnet18`` backbone + 7 heads) and
``models/bfm.py: ParametricFaceModel`` (``split_coeff``, ``compute_shape``,
``compute_rotation``, ``transform``, ``to_camera``, ``to_image``, ``get_landmarks``).
Shims for numpy 2 (upstream pins numpy 1.x): ``np.VisibleDeprecationWarning`` is aliased,
and POS's translation is returned with shape (2,) instead of (2, 1) (same values; numpy 2
refuses ``float()`` of a 1-element array). Not run: nvdiffrast (CUDA renderer) and the
texture/lighting path. Stubbed at import level: kornia and the ``arcface_torch`` package
(recognition loss, training only), and the ``models`` package ``__init__`` (its
submodules are loaded directly).

Usage::

    python scripts/upstream_parity/deep3d_parity.py --upstream /tmp/Deep3D --commit 9167c71...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, save_fixture, stub_modules  # noqa: E402


def main() -> None:
    """Runs the upstream pieces and saves the fixture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="Deep3DFaceRecon checkout")
    ap.add_argument("--commit", default=None, help="upstream commit (default: git HEAD)")
    args = ap.parse_args()
    import torch
    from PIL import Image
    from scipy.io import savemat

    torch.set_num_threads(1)
    stub_modules("kornia.geometry", "models.arcface_torch.backbones")
    pkg = types.ModuleType("models")
    pkg.__path__ = [str(args.upstream / "models")]  # submodules load; __init__ does not run
    sys.modules["models"] = pkg
    if not hasattr(np, "VisibleDeprecationWarning"):  # numpy 2 moved it; preprocess.py names it
        np.VisibleDeprecationWarning = np.exceptions.VisibleDeprecationWarning
    sys.path.insert(0, str(args.upstream))
    from models.bfm import ParametricFaceModel
    from models.networks import ReconNetWrapper
    from util import preprocess
    from util.load_mats import load_lm3d
    from util.preprocess import align_img

    pos = preprocess.POS  # numpy 2: float() of its (1,)-shaped t[0] raises; same values as (2,)
    preprocess.POS = lambda xp, x: (lambda t, s: (t.reshape(2), s))(*pos(xp, x))

    from methods.landmarks.base import five_points
    from tests.upstream_standins import (
        DEEP3D_VERTEX_STEP,
        deep3d_bfm_fields,
        deep3d_lm3d,
        deep3d_weights,
        encoder_input,
        fixed_image,
        fixed_landmarks,
    )

    work = Path(tempfile.mkdtemp(prefix="deep3d_parity_"))
    savemat(work / "BFM_model_front.mat", deep3d_bfm_fields())
    savemat(work / "similarity_Lm3D_all.mat", {"lm": deep3d_lm3d()})
    lm3d = load_lm3d(str(work))

    # test.py: read_data, with the five points a detector would write
    im = Image.fromarray(fixed_image())
    _, h0 = im.size
    lm = five_points(fixed_landmarks(), eyes="corners").astype(np.float32)
    lm[:, -1] = h0 - 1 - lm[:, -1]
    trans_params, im_new, _, _ = align_img(im, lm, lm3d)
    lm68 = fixed_landmarks().astype(np.float32)
    lm68[:, -1] = h0 - 1 - lm68[:, -1]
    _, _, lm68_new, _ = align_img(im, lm68, lm3d)  # the landmark map (68 in, 68 out)
    crop = np.array(im_new)

    net = ReconNetWrapper("resnet18", use_last_fc=False)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    net.load_state_dict({k: torch.as_tensor(v) for k, v in deep3d_weights(shapes).items()},
                        strict=True)
    net.eval()
    bfm = ParametricFaceModel(bfm_folder=str(work), camera_distance=10.0, focal=1015.0,
                              center=112.0, is_train=False)
    bfm.to("cpu")

    def decode(coeffs):
        c = bfm.split_coeff(coeffs)
        shape = bfm.compute_shape(c["id"], c["exp"])
        neutral = bfm.compute_shape(c["id"], torch.zeros_like(c["exp"]))
        rot = bfm.compute_rotation(c["angle"])
        cam = bfm.to_camera(bfm.transform(shape.clone(), rot, c["trans"]))
        lmk = bfm.get_landmarks(bfm.to_image(cam))
        return shape, neutral, cam, lmk

    with torch.no_grad():
        x = torch.tensor(encoder_input(224) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
        coeffs = net(x)
        shape, neutral, cam, lmk = decode(coeffs)
        x_e2e = torch.tensor(crop / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
        coeffs_e2e = net(x_e2e)
        _, neutral_e2e, _, lmk_e2e = decode(coeffs_e2e)
    keep = np.arange(0, shape.shape[1], DEEP3D_VERTEX_STEP)
    save_fixture(
        "deep3d", args.commit or git_commit(args.upstream),
        trans_params=trans_params, crop=crop[::2, ::2], lm68_crop=lm68_new,
        coeffs=coeffs[0].numpy(), shape=shape[0, keep].numpy(),
        neutral=neutral[0, keep].numpy(), camera_vertices=cam[0, keep].numpy(),
        landmarks=lmk[0].numpy(), e2e_coeffs=coeffs_e2e[0].numpy(),
        e2e_landmarks=lmk_e2e[0].numpy(), e2e_neutral=neutral_e2e[0, keep].numpy())


if __name__ == "__main__":
    main()
