"""Where an ELAM+LDL network's mesh error comes from: identity, non-eye expression, eyes.

Room: a diagnosis script (issue 16, shape), not part of the benchmark. It reads the prepared
training data (``python -m benchmark train`` builds it) and runs a checkpoint on the
*synthetic dev rows* (training split, subjects held out of training; never the test split),
where the generator's identity and expression weights are known. Every figure is the mean
squared face-region vertex error in mm^2 after removing its similarity part (the error a
scan-to-mesh alignment cannot remove), of meshes built on the network's 50 identity modes
and ICT's 53 expression blendshapes:

* ``network``: the network's identity and expression;
* ``identity, no expression`` / ``identity, true expression``: the network's identity with
  the expression set to zero / to the truth;
* ``mean face, no expression`` / ``mean face, true expression``: the template;
* ``non-eye expression only``: the error of the 39 non-eye weights alone, against the
  same for all-zero weights;
* ``ridge from landmarks`` (``--landmark-ridge``): the identity of a ridge regression
  (lambda 10 on standardised inputs) fitted on the synthetic *training* rows, from the
  landmark identity branch's input (52 points, centred, unit RMS radius) alone, and from
  that input plus the network's identity: how much identity the landmarks carry.

Usage::

    python scripts/shape_error_parts.py methods/elam_ldl/weights/elam-ldl.pt [--variant elam-ldl]
        [--synthetic-n 4000] [--landmark-ridge]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Prints the table; exit 2 when the prepared data has no synthetic dev rows/targets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="an ELAM+LDL checkpoint (.pt)")
    parser.add_argument("--variant", default="elam-ldl",
                        help="training preset whose prepared data to read (same for all four)")
    parser.add_argument("--synthetic-n", type=int, default=None,
                        help="read the data prepared with this many synthetic samples "
                             "(default: the training default); compare checkpoints trained "
                             "on different sizes on the smaller one's dev rows, held out "
                             "from both")
    parser.add_argument("--landmark-ridge", action="store_true",
                        help="also fit ridge regressions from the landmarks (training rows)")
    args = parser.parse_args(argv)

    import torch

    from methods.elam_ldl.config import SYNTHETIC_SOURCE, TrainConfig
    from methods.elam_ldl.data import SOURCE_CODES, ShapeBasis, make_batch, prepare_data
    from methods.elam_ldl.model import eye_shape_indices, load_checkpoint

    torch.set_num_threads(1)
    net, _ = load_checkpoint(args.checkpoint)
    net.eval()
    cfg = TrainConfig.preset(args.variant, input_size=net.spec.input_size, n_id=net.spec.n_id,
                             crop_distance=net.spec.crop_distance,
                             align_rotation=net.spec.align_rotation)
    if args.synthetic_n is not None:
        cfg.synthetic_n = args.synthetic_n
    data = prepare_data(cfg, net.spec.crop_distance, progress=True)
    if data.exp_target is None or data.shape_target is None:
        print("the prepared data has no synthetic targets; rebuild it", file=sys.stderr)
        return 2
    rows = np.flatnonzero(data.dev & (data.source == SOURCE_CODES[SYNTHETIC_SOURCE]))
    if not len(rows):
        print("no synthetic dev rows in the prepared data", file=sys.stderr)
        return 2

    def run(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, exps = [], []
        with torch.no_grad():
            for s in range(0, len(index), 256):
                b = make_batch(data, index[s: s + 256])  # the network's input, as in training
                c = net.coefficients(b.images, b.eye_crops, b.landmarks)
                ids.append(c.id.double().numpy())
                exps.append(c.exp.double().numpy())
        return np.concatenate(ids), np.concatenate(exps)

    id_net, exp_net = run(rows)
    id_true = data.shape_target[rows].astype(np.float64)
    exp_true = data.exp_target[rows].astype(np.float64)

    basis = ShapeBasis(net.spec.n_id)
    gram = basis.joint_gram_aligned
    non_eye = np.ones(basis.n_exp, bool)
    non_eye[eye_shape_indices().reshape(-1).numpy()] = False

    def err(d_id: np.ndarray, d_exp: np.ndarray) -> float:
        v = np.concatenate([d_id, d_exp], 1)
        return float(np.einsum("bi,ij,bj->b", v, gram, v).mean())

    zero_id, zero_exp = np.zeros_like(id_true), np.zeros_like(exp_true)
    print(f"{args.checkpoint}: {len(rows)} synthetic dev rows, face-region error after a "
          "similarity alignment (mm^2)")
    table = [
        ("network", err(id_net - id_true, exp_net - exp_true)),
        ("network identity, no expression", err(id_net - id_true, -exp_true)),
        ("network identity, true expression", err(id_net - id_true, zero_exp)),
        ("mean face, no expression", err(-id_true, -exp_true)),
        ("mean face, true expression", err(-id_true, zero_exp)),
        ("non-eye expression only: network", err(zero_id, np.where(non_eye, exp_net - exp_true,
                                                                  0.0))),
        ("non-eye expression only: all zero", err(zero_id, np.where(non_eye, -exp_true, 0.0))),
    ]
    if args.landmark_ridge:
        from methods.elam_ldl.model import LANDMARK_ID_POINTS, LandmarkIdentity

        train_rows = np.flatnonzero(~data.dev & (data.source == SOURCE_CODES[SYNTHETIC_SOURCE]))
        geo = LandmarkIdentity.geometry(torch.from_numpy(data.landmarks),
                                        torch.tensor(LANDMARK_ID_POINTS)).double().numpy()
        target = data.shape_target[train_rows].astype(np.float64)

        def ridge(x_train: np.ndarray, x_dev: np.ndarray) -> np.ndarray:
            mu, sd = x_train.mean(0), x_train.std(0) + 1e-9
            a = (x_train - mu) / sd
            w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ target)
            return (x_dev - mu) / sd @ w

        only = ridge(geo[train_rows], geo[rows])
        both = ridge(np.concatenate([geo[train_rows], run(train_rows)[0]], 1),
                     np.concatenate([geo[rows], id_net], 1))
        table += [
            ("ridge from landmarks: identity", err(only - id_true, zero_exp)),
            ("ridge from landmarks + net identity", err(both - id_true, zero_exp)),
            ("  same, with the network's expression", err(both - id_true, exp_net - exp_true)),
        ]
    for name, value in table:
        print(f"  {name:<38} {value:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
