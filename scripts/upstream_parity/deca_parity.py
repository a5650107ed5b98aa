"""Runs DECA's own code (yfeng95/DECA) on the seeded stand-ins and writes ``deca.npz``.

Room: scripts (outside the default tests; needs an upstream checkout and scikit-image).
What runs upstream: ``decalib/datasets/datasets.py: TestData`` (the crop from a ``.txt`` of
68 landmarks, skimage ``warp``), ``decalib/models/encoders.py: ResnetEncoder`` with
``decalib/models/resnet.py``'s ResNet-50, ``decalib/deca.py: decompose_code`` order,
``decalib/models/FLAME.py: FLAME`` (vertices, dynamic-contour ``landmarks2d``,
``landmarks3d``), ``decalib/utils/util.py: batch_orth_proj`` and
``decalib/utils/tensor_cropper.py: transform_points``. Stubbed at import level only:
torchvision (DECA copies ImageNet weights through it; never called here) and
face_alignment (the FAN detector; the ``.txt`` landmarks replace it).

Usage::

    python scripts/upstream_parity/deca_parity.py --upstream /tmp/DECA --commit a11554a...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, save_fixture, stub_modules  # noqa: E402

#: sub-sampled crop pixels kept in the fixture (every 4th row and column)
CROP_STEP = 4


def main() -> None:
    """Runs the upstream pieces and saves the fixture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="DECA checkout")
    ap.add_argument("--commit", default=None, help="upstream commit (default: git HEAD)")
    args = ap.parse_args()
    import torch
    from skimage.io import imsave

    torch.set_num_threads(1)
    stub_modules("torchvision.transforms", "face_alignment", "kornia.geometry.transform.imgwarp")
    sys.modules["face_alignment"].LandmarksType = argparse.Namespace(_2D=None)
    sys.modules["face_alignment"].FaceAlignment = lambda *a, **k: None  # never run: .txt given
    sys.path.insert(0, str(args.upstream))
    from decalib.datasets.datasets import TestData
    from decalib.models import encoders
    from decalib.models.FLAME import FLAME
    from decalib.utils import util
    from decalib.utils.tensor_cropper import transform_points

    from tests.upstream_standins import (
        deca_encoder_weights,
        encoder_input,
        fixed_image,
        fixed_landmarks,
        write_flame_files,
    )

    work = Path(tempfile.mkdtemp(prefix="deca_parity_"))
    # 1. the crop, through TestData with landmarks given as a .txt
    image, lm68 = fixed_image(), fixed_landmarks()
    imsave(work / "face.png", image)
    np.savetxt(work / "face.txt", lm68)
    item = TestData([str(work / "face.png")], iscrop=True, crop_size=224, scale=1.25)[0]
    crop = item["image"].numpy().transpose(1, 2, 0)  # (224, 224, 3) in [0, 1]

    # 2. the encoder, ResNet-50 + MLP, with seeded weights (strict load)
    # what load_ResNet50Model builds, minus torchvision's ImageNet weight copy
    encoders.resnet.load_ResNet50Model = lambda: encoders.resnet.ResNet(
        encoders.resnet.Bottleneck, [3, 4, 6, 3])
    enc = encoders.ResnetEncoder(outsize=236)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    enc.load_state_dict({k: torch.as_tensor(v) for k, v in deca_encoder_weights(shapes).items()},
                        strict=True)
    enc.eval()
    x = torch.as_tensor(encoder_input(224), dtype=torch.float32).permute(2, 0, 1)[None] / 255.
    with torch.no_grad():
        params = enc(x)
    sizes = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
    code, start = {}, 0
    for name, n in sizes.items():  # decalib/deca.py: decompose_code
        code[name] = params[:, start:start + n]
        start += n

    # 3. FLAME decoding (files written with the official field names)
    write_flame_files(work)
    cfg = argparse.Namespace(flame_model_path=str(work / "generic_model.pkl"),
                             flame_lmk_embedding_path=str(work / "landmark_embedding.npy"),
                             n_shape=100, n_exp=50)
    flame = FLAME(cfg).eval()
    out = {}
    # a head turned to yaw +25 and -20 degrees exercises two contour bins
    poses = {"": code["pose"]}
    for tag, yaw in (("_yaw25", 25.0), ("_yawm20", -20.0)):
        p = code["pose"].clone()
        p[0, :3] = torch.tensor([0.05, np.deg2rad(yaw), -0.03])
        poses[tag] = p
    with torch.no_grad():
        for tag, pose in poses.items():
            verts, lmk2d, lmk3d = flame(code["shape"], code["exp"], pose)
            lmk2d = util.batch_orth_proj(lmk2d, code["cam"])[:, :, :2]
            lmk2d[:, :, 1:] = -lmk2d[:, :, 1:]
            out[f"vertices{tag}"] = verts[0].numpy()
            out[f"landmarks2d{tag}"] = lmk2d[0].numpy()
            tform = torch.inverse(item["tform"][None]).transpose(1, 2)
            out[f"landmarks2d_image{tag}"] = transform_points(
                lmk2d.clone(), tform, [224, 224])[0, :, :2].numpy()
        # DECA's NoW export (decalib/trainer.py): expression and pose zeroed
        zero_exp = torch.zeros_like(code["exp"])
        zero_pose = torch.zeros_like(code["pose"])
        neutral, _, _ = flame(code["shape"], zero_exp, zero_pose)
        _, _, lmk3d_world = flame(code["shape"], zero_exp, zero_pose)
        trans_verts = util.batch_orth_proj(verts, code["cam"])
        trans_verts[:, :, 1:] = -trans_verts[:, :, 1:]
        # end to end: the TestData crop through encoder and decoder, back to the image
        p_e2e = enc(item["image"][None])
        c_e2e = {"shape": p_e2e[:, :100], "exp": p_e2e[:, 150:200], "pose": p_e2e[:, 200:206],
                 "cam": p_e2e[:, 206:209]}
        v_e2e, l_e2e, _ = flame(c_e2e["shape"], c_e2e["exp"], c_e2e["pose"])
        l_e2e = util.batch_orth_proj(l_e2e, c_e2e["cam"])[:, :, :2]
        l_e2e[:, :, 1:] = -l_e2e[:, :, 1:]
        tform = torch.inverse(item["tform"][None]).transpose(1, 2)
        out["e2e_params"] = p_e2e[0].numpy()
        out["e2e_landmarks2d_image"] = transform_points(l_e2e, tform, [224, 224])[0, :, :2]
        out["e2e_neutral_vertices"] = flame(c_e2e["shape"], torch.zeros_like(c_e2e["exp"]),
                                            torch.zeros_like(c_e2e["pose"]))[0][0].numpy()
    out["e2e_landmarks2d_image"] = out["e2e_landmarks2d_image"].numpy()
    out["neutral_vertices"] = neutral[0].numpy()
    out["neutral_kpt7"] = lmk3d_world[0, 17:][[19, 22, 25, 28, 16, 31, 37]].numpy()
    out["trans_verts_yawm20"] = trans_verts[0].numpy()
    save_fixture(
        "deca", args.commit or git_commit(args.upstream),
        crop=crop[::CROP_STEP, ::CROP_STEP], crop_step=np.array(CROP_STEP),
        tform=item["tform"].numpy(), params=params[0].numpy(), **out)


if __name__ == "__main__":
    main()
