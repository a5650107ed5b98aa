"""The ``train-eye-detector`` subcommand of ``python -m benchmark``: train or score ELAM's CNN.

Room: argument parsing and printing only; the work is
:func:`methods.elam.train_eye_detector.train_eye_detector` (imported when the command runs,
so building the CLI does not import torch).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from methods.elam.config import TrainConfig

EXAMPLES = """examples:
  # the shipped weights (synthetic train split + training part of the real pool, seed 0)
  python -m benchmark train-eye-detector --real-faces ../shared/data/real-faces --seed 0 \\
      --output methods/elam/weights/eye_state_cnn.pt
  # synthetic crops only (no research-only data needed)
  python -m benchmark train-eye-detector --sources synthetic --output /tmp/eye_synth.pt
  # score existing weights on the synthetic test split and the held-out real part
  python -m benchmark train-eye-detector --evaluate methods/elam/weights/eye_state_cnn.pt
"""


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``train-eye-detector`` on a ``python -m benchmark`` subparsers object."""
    p = subparsers.add_parser(
        "train-eye-detector",
        help="train (or evaluate) ELAM's eye-state CNN",
        usage="python -m benchmark train-eye-detector [--sources synthetic,real] "
              "[--real-faces DIR] [--seed N] [--output FILE] [--evaluate FILE]",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = TrainConfig()
    p.add_argument("--sources", default=",".join(d.sources),
                   help="comma-separated: synthetic, real (default: both)")
    p.add_argument("--real-faces", default=None,
                   help="real-photo pool root (default: $EYEBENCH_REAL_FACES or "
                        "../shared/data/real-faces)")
    p.add_argument("--synthetic-limit", type=int, default=None,
                   help="use only the first N synthetic train samples")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch,
                   help="balanced crops drawn per epoch (0: as many as there are crops)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--width", type=int, default=d.width,
                   help=f"first conv width (default {d.width})")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed (default 0)")
    p.add_argument("--pool-seed", type=int, default=d.pool_seed,
                   help="seed of the real pool's train/validation split (keep 0)")
    p.add_argument("--output", default=d.output, help="weights file to write")
    p.add_argument("--report", default=None, help="JSON report (default: OUTPUT with .json)")
    p.add_argument("--evaluate", default=None, metavar="WEIGHTS",
                   help="only score these weights on the held-out sets")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--context-swap", type=float, default=d.context_swap,
                   help="probability of pasting a crop's eye into another source's context "
                        "(label follows the eye; 0 turns it off)")
    p.add_argument("--occlude", type=float, default=d.occlude,
                   help="probability of covering a crop's eye with a flat occluder labelled "
                        "open (0 turns it off)")
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4))
    p.set_defaults(func=cmd_train_eye_detector)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed CLI arguments."""
    return TrainConfig(
        sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
        real_faces=args.real_faces,
        pool_seed=args.pool_seed,
        synthetic_limit=args.synthetic_limit,
        epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        seed=args.seed,
        output=args.output,
        report=args.report,
        threads=args.threads,
        context_swap=args.context_swap,
        occlude=args.occlude,
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of per-eye accuracy/F1 per evaluation set."""
    lines = [f"{'set':34s} {'eye':>4s} {'n':>6s} {'closed':>6s} {'acc':>6s} {'F1':>6s}"]
    for name, entry in metrics.items():
        for key in ("eye0", "eye1", "all"):
            if key in entry:
                s = entry[key]
                lines.append(
                    f"{name:34s} {key.replace('eye', ''):>4s} {s['n']:6d} {s['n_closed']:6d} "
                    f"{s['accuracy']:6.3f} {s['f1']:6.3f}"
                )
        if "half" in entry:
            h = entry["half"]
            lines.append(f"{name:34s} half {h['n']:6d}  mean P(closed) {h['mean_p_closed']:.3f}, "
                         f"{100 * h['share_p_above_0.5']:.0f} % above 0.5")
    return "\n".join(lines)


def cmd_train_eye_detector(args: argparse.Namespace) -> int:
    """CLI body: train (or evaluate) and print the per-eye table."""
    import shlex
    import sys

    from methods.elam.train_eye_detector import evaluate_weights, train_eye_detector, write_report

    cfg = config_from_args(args)
    if args.evaluate:
        metrics = evaluate_weights(args.evaluate, cfg)
        if args.report:
            write_report(Path(args.report), metrics, {"weights": str(args.evaluate)})
        print(format_metrics(metrics))
        return 0
    argv = sys.argv[1:]
    if "train-eye-detector" in argv:
        argv = argv[argv.index("train-eye-detector") + 1:]
    command = "python -m benchmark train-eye-detector " + " ".join(shlex.quote(a) for a in argv)
    res = train_eye_detector(cfg, command=command)
    print(format_metrics(res.metrics))
    print(f"weights: {res.weights}\nreport:  {res.report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m methods.elam.cli`` (same flags as the subcommand)."""
    import logging
    import sys

    parser = argparse.ArgumentParser(prog="python -m methods.elam.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(["train-eye-detector", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level={0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(
        args.verbosity, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
