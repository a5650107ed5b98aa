"""Runs MICA's own code (Zielon/MICA) and insightface's ``norm_crop``; writes ``mica.npz``.

Room: scripts (outside the default tests; needs MICA and insightface checkouts, OpenCV and
scikit-image). What runs upstream: insightface ``python-package/insightface/utils/
face_align.py: norm_crop`` (skimage ``SimilarityTransform`` + ``cv2.warpAffine``), MICA's
``datasets/creation/util.py: get_arcface_input`` (``cv2.dnn.blobFromImages``),
``models/arcface.py`` (``IResNet`` blocks and ``Arcface.forward_arcface``), ``F.normalize``
as ``micalib/models/mica.py: encode``, ``models/generator.py: Generator`` (mapping network
+ FLAME) and ``models/flame.py: compute_landmarks``. Not run: RetinaFace (onnxruntime;
the five points are given), insightface's package ``__init__`` (the module file is loaded
alone). The ArcFace stand-in is MICA's ``IResNet`` class at depth 18 ([2, 2, 2, 2]) instead
of the released depth 100, to keep the test fast; the block code is the same.

Usage::

    python scripts/upstream_parity/mica_parity.py --upstream /tmp/MICA --insightface
        /tmp/insightface --commit af22e7a...
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, save_fixture, stub_modules  # noqa: E402


def main() -> None:
    """Runs the upstream pieces and saves the fixture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="MICA checkout")
    ap.add_argument("--insightface", type=Path, required=True, help="insightface checkout")
    ap.add_argument("--commit", default=None, help="upstream commit (default: git HEAD)")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location(
        "insightface.utils.face_align",
        args.insightface / "python-package/insightface/utils/face_align.py")
    face_align = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(face_align)
    stub_modules("insightface.utils", "torchvision.transforms")
    sys.modules["insightface.utils"].face_align = face_align
    sys.path.insert(0, str(args.upstream))
    from datasets.creation.util import get_arcface_input
    from models.arcface import Arcface, IBasicBlock, IResNet
    from models.generator import Generator

    from methods.landmarks.base import five_points
    from tests.upstream_standins import (
        fill_state_dict,
        fixed_image,
        fixed_landmarks,
        write_flame_files,
    )

    work = Path(tempfile.mkdtemp(prefix="mica_parity_"))
    image_bgr = np.ascontiguousarray(fixed_image()[:, :, ::-1])  # demo.py reads with cv2
    five = five_points(fixed_landmarks(), eyes="corners").astype(np.float32)
    face = argparse.Namespace(kps=five)
    blob, aimg = get_arcface_input(face, image_bgr)
    m = face_align.estimate_norm(five)

    arc = IResNet(IBasicBlock, [2, 2, 2, 2])
    shapes = {k: tuple(v.shape) for k, v in arc.state_dict().items()}
    arc.load_state_dict({k: torch.as_tensor(v) for k, v in fill_state_dict(shapes, 21).items()},
                        strict=True)
    arc.eval()

    write_flame_files(work)
    cfg = argparse.Namespace(flame_model_path=str(work / "generic_model.pkl"),
                             flame_lmk_embedding_path=str(work / "landmark_embedding.npy"),
                             n_shape=300)
    gen = Generator(512, 300, 300, 3, cfg, "cpu")
    reg_shapes = {k: tuple(v.shape) for k, v in gen.state_dict().items()
                  if k.startswith("regressor.")}
    state = gen.state_dict()
    state.update({k: torch.as_tensor(v) for k, v in fill_state_dict(reg_shapes, 22).items()})
    gen.load_state_dict(state, strict=True)
    gen.eval()
    with torch.no_grad():
        identity = F.normalize(Arcface.forward_arcface(arc, torch.as_tensor(blob)[None]))
        verts, code = gen(identity)
        lmk = gen.generator.compute_landmarks(verts)
    # cross-check: our loader reads upstream's own state dicts (strict) and agrees
    torch.save({"arcface": arc.state_dict(), "flameModel": gen.state_dict()}, work / "mica.tar")
    from methods.mica import MICA

    ours = MICA({"checkpoint": str(work / "mica.tar")})
    ours.ensure_loaded("cpu")
    o_code, o_verts = ours.shape_from_crop(np.ascontiguousarray(aimg[:, :, ::-1]))
    print("our loader on upstream's state dicts: max |dcode|",
          float(np.abs(o_code - code[0].numpy()).max()), "max |dverts|",
          float(np.abs(o_verts - verts[0].numpy()).max()))
    save_fixture(
        "mica", args.commit or git_commit(args.upstream),
        norm_matrix=m, crop=np.ascontiguousarray(aimg[:, :, ::-1]),
        identity=identity[0].numpy(), shape_code=code[0].numpy(), vertices=verts[0].numpy(),
        landmarks68=lmk[0].numpy(), kpt7=lmk[0, 17:][[19, 22, 25, 28, 16, 31, 37]].numpy())


if __name__ == "__main__":
    main()
