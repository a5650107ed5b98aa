"""Runs 3DDFA_V2's own code on the in-repo closed-eye photo; writes ``tddfa_v2.npz``.

Room: scripts (outside the default tests; needs a cleardusk/3DDFA_V2 checkout, OpenCV and
the real files of ``../shared/weights/3ddfa_v2``). What runs upstream: ``TDDFA.py: TDDFA`` (its
``crop_img``, ``parse_roi_box_from_bbox`` / ``parse_roi_box_from_landmark``, ``cv2.resize``,
normalisation, MobileNetV1, de-normalisation, ``recon_vers`` with ``similar_transform``) and
``bfm/bfm.py: BFMModel``, in the two-pass order of ``demo_video.py``'s first frame (box, then
the ROI of the dense reconstruction). The face box is dlib's (stored in the fixture, so the
test feeds the same box). Stubbed: ``torchvision.transforms.Compose`` (a list of callables,
when torchvision is absent); ``np.long`` is aliased to ``np.int64`` (removed in numpy 2).
Where the checkout lacks ``configs/bfm_noneck_v3.pkl`` (it is not in our snapshot), one is
written to a temporary folder from ``bfm_v1_bases/`` + ``configs/indices.npy`` in the
official field layout, so both sides decode with the same face model.

The fixture holds numbers only: the box, both ROIs and parameter vectors, the 68 landmarks
and every 50th dense vertex in image space.

Usage::

    python scripts/upstream_parity/tddfa_v2_parity.py --upstream /tmp/3DDFA_V2
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "upstream" / "tddfa_v2.npz"
IMAGE = REPO / "tests" / "data" / "synthetic_face_closed_224.png"
DENSE_STEP = 50


def _stub_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        class Compose:
            def __init__(self, transforms):
                self.transforms = transforms

            def __call__(self, x):
                for t in self.transforms:
                    x = t(x)
                return x

        tv = types.ModuleType("torchvision")
        tr = types.ModuleType("torchvision.transforms")
        tr.Compose = Compose
        tv.transforms = tr
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr


def _official_pickle(weights: Path, out: Path) -> Path:
    """``bfm_noneck_v3.pkl``-layout file built from the v1 bases (see the module docstring)."""
    b = weights / "bfm_v1_bases"
    keep = np.load(weights / "configs" / "indices.npy").astype(np.int64)
    rows = (3 * keep[:, None] + np.arange(3)).reshape(-1)
    u = (np.load(b / "u_shp.npy") + np.load(b / "u_exp.npy"))[rows]
    kp = np.load(b / "keypoints_sim.npy")
    pos = np.searchsorted(keep, kp[0::3] // 3)
    fields = {"u": u, "w_shp": np.load(b / "w_shp_sim.npy")[rows],
              "w_exp": np.load(b / "w_exp_sim.npy")[rows],
              "keypoints": (3 * pos[:, None] + np.arange(3)).reshape(-1)}
    path = out / "bfm_noneck_v3.pkl"
    with open(path, "wb") as fh:
        pickle.dump(fields, fh, protocol=4)
    return path


def main() -> None:
    """Runs the upstream pipeline and saves the fixture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="3DDFA_V2 checkout")
    ap.add_argument("--weights", type=Path, default=REPO.parent / "shared/weights/3ddfa_v2",
                    help="folder with weights/, configs/ and bfm_v1_bases/")
    ap.add_argument("--checkpoint", default="mb05_120x120")
    ap.add_argument("--commit", default=None, help="upstream commit (default: git HEAD)")
    args = ap.parse_args()
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    _stub_torchvision()
    if not hasattr(np, "long"):
        np.long = np.int64  # upstream bfm.py predates numpy 2
    sys.path.insert(0, str(REPO))
    from methods.landmarks import get_provider

    rgb = np.asarray(Image.open(IMAGE).convert("RGB"))
    det = get_provider("dlib", cached=False).detect(rgb)
    if not det.ok:
        raise SystemExit(f"dlib found no face in {IMAGE}: {det.error}")
    box = np.array(det.box, np.float64)

    bfm = args.upstream / "configs" / "bfm_noneck_v3.pkl"
    if not bfm.is_file():
        bfm = _official_pickle(args.weights, Path(tempfile.mkdtemp(prefix="tddfa_v2_bfm_")))
        # upstream reads tri.pkl beside bfm_noneck_v3.pkl only under that exact file name
    sys.path.insert(0, str(args.upstream))
    from TDDFA import TDDFA

    tddfa = TDDFA(arch="mobilenet", widen_factor=0.5 if "05" in args.checkpoint else 1.0,
                  checkpoint_fp=str(args.weights / "weights" / f"{args.checkpoint}.pth"),
                  bfm_fp=str(bfm), size=120, num_params=62,
                  param_mean_std_fp=str(args.weights / "configs"
                                        / "param_mean_std_62d_120x120.pkl"))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    p1, r1 = tddfa(bgr, [list(box)])
    dense1 = tddfa.recon_vers(p1, r1, dense_flag=True)[0]
    p2, r2 = tddfa(bgr, [dense1], crop_policy="landmark")
    dense2 = tddfa.recon_vers(p2, r2, dense_flag=True)[0]
    sparse2 = tddfa.recon_vers(p2, r2, dense_flag=False)[0]
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", str(args.upstream), "rev-parse", "HEAD"],
                                    capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        FIXTURE, box=box, roi1=np.array(r1[0]), param1=p1[0], roi2=np.array(r2[0]),
        param2=p2[0], landmarks2d=sparse2[:2].T, dense_step=np.array(DENSE_STEP),
        dense_xyz=dense2[:, ::DENSE_STEP].T, checkpoint=np.array(args.checkpoint),
        upstream_commit=np.array(commit))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
