"""The ``train`` and ``ablate`` subcommands of ``python -m benchmark`` (ELAM+LDL network).

Room: argument parsing and printing only. ``train`` flags are generated from
:class:`methods.elam_ldl.config.TrainConfig` (kebab-case field names, help from the field
metadata); the work is :func:`methods.elam_ldl.train.train` and
:func:`methods.elam_ldl.ablate.ablate`, imported when a command runs, so building the CLI
does not import torch.

Precedence of ``train`` settings: the preset of ``--variant`` < the ``--config`` YAML file <
flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from methods.elam_ldl.config import VARIANTS, TrainConfig, field_types

TRAIN_EXAMPLES = """examples:
  # the shipped elam-ldl checkpoint (synthetic train split + train part of the real pool)
  python -m benchmark train --variant elam-ldl --seed 0 \\
      --export methods/elam_ldl/weights/elam-ldl.pt
  # the baseline of the ablation (no ELAM, no LDL)
  python -m benchmark train --variant deep3d-recipe --seed 0 \\
      --export methods/elam_ldl/weights/deep3d-recipe.pt
  # synthetic photos only, a quick run
  python -m benchmark train --variant elam-ldl --sources synthetic --steps 300 \\
      --output-dir /tmp/elam_quick
  # paper scale on a GPU (nvdiffrast when installed), with your own photos and ArcFace
  python -m benchmark train --variant elam-ldl --device cuda --depth 50 --width 64 \\
      --input-size 224 --batch-size 32 --steps 60000 --folders ~/ffhq \\
      --identity-weights ~/arcface/ms1mv3_r50/backbone.pth
  # settings from a file (keys = option names with underscores)
  python -m benchmark train --config my_run.yaml
"""

ABLATE_EXAMPLES = """examples:
  # evaluate the four shipped checkpoints on the synthetic test split and real-faces-val
  python -m benchmark ablate
  # retrain all four (about 25 min each on 2 CPU cores), then evaluate
  python -m benchmark ablate --retrain
  # a quick look: 60 images per dataset, no plots
  python -m benchmark ablate --limit 60 --no-plots
  # train missing variants with other settings into another folder
  python -m benchmark ablate --weights-dir /tmp/abl --train-option steps=500
"""


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    hints = field_types()
    for field in dataclasses.fields(TrainConfig):
        meta = dict(field.metadata)
        flag = "--" + field.name.replace("_", "-")
        help_text = meta.pop("help", "")
        choices = meta.pop("choices", None)
        hint = str(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default: {shown})"
        if field.name == "variant":
            help_text += f"; presets: {', '.join(VARIANTS)}"
        if hint == "bool" or hints[field.name] is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif "tuple" in hint:
            parser.add_argument(flag, dest=field.name, default=argparse.SUPPRESS,
                                metavar="A,B", help=help_text + " (comma-separated)")
        else:
            caster = int if "int" in hint else float if "float" in hint else str
            parser.add_argument(flag, dest=field.name, type=caster, default=argparse.SUPPRESS,
                                choices=choices, help=help_text)
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of training options (flags given here win)")
    parser.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4),
                        help="0 errors, 1 warnings (default), 2 info, 3 debug")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merges preset < YAML file < explicit flags into a :class:`TrainConfig`."""
    import yaml

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    explicit = {k: v for k, v in vars(args).items() if k in names}
    from_file: dict[str, Any] = {}
    if getattr(args, "config", None):
        with open(args.config, encoding="utf-8") as fh:
            from_file = yaml.safe_load(fh) or {}
        if not isinstance(from_file, dict):
            raise ValueError(f"config file {str(args.config)!r} must hold a mapping.")
    variant = explicit.get("variant", from_file.get("variant", "elam-ldl"))
    base = dataclasses.asdict(TrainConfig.preset(variant)) if variant in VARIANTS else {
        **dataclasses.asdict(TrainConfig()), "variant": variant}
    base.update(from_file)
    base.update(explicit)
    return TrainConfig.from_dict(base)


def _command_line(name: str) -> str:
    argv = sys.argv[1:]
    if name in argv:
        argv = argv[argv.index(name) + 1:]
    return f"python -m benchmark {name} " + " ".join(shlex.quote(a) for a in argv)


def cmd_train(args: argparse.Namespace) -> int:
    """CLI body of ``train``: train, then print where the checkpoints went."""
    from methods.elam_ldl.train import train

    cfg = config_from_args(args)
    res = train(cfg, command=_command_line("train"), progress=args.verbosity > 0)
    print(f"trained {cfg.variant} for {res.steps} steps in {res.seconds / 60:.1f} min")
    print(f"photos: {res.counts}")
    if res.dev:
        print(f"dev: {res.dev}")
    print(f"training checkpoint: {res.checkpoint}")
    for p in res.export:
        print(f"exported: {p} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_train_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``train`` on a ``python -m benchmark`` subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train the ELAM+LDL network or one of its ablations",
        usage=f"python -m benchmark train [--variant {{{','.join(VARIANTS)}}}] "
              "[--config FILE] [options]",
        description="Weakly supervised training of the ELAM+LDL reconstruction network "
                    "(seeded; resumes from the run folder's last checkpoint). The "
                    "counterfactual recipe of issue 16: --config "
                    "methods/elam_ldl/configs/counterfactual.yaml.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)
    return p


def cmd_ablate(args: argparse.Namespace) -> int:
    """CLI body of ``ablate``: train or reuse, evaluate, write the table and plots."""
    from methods.elam_ldl.ablate import ablate

    overrides: dict[str, str] = {}
    for item in args.train_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--train-option {item!r} must look like KEY=VALUE.")
        overrides[key.replace("-", "_")] = value
    res = ablate(
        variants=[v.strip() for v in args.variants.split(",") if v.strip()],
        datasets=[d.strip() for d in args.datasets.split(",") if d.strip()],
        weights_dir=Path(args.weights_dir) if args.weights_dir else None,
        retrain=args.retrain, train_missing=args.train_missing, train_overrides=overrides,
        output_dir=Path(args.output_dir), limit=args.limit, bootstrap=args.bootstrap,
        seed=args.seed, plots=args.plots, device=args.device, workers=args.workers,
        progress=args.verbosity > 0,
    )
    print(res.table)
    print(f"ablation report: {res.report}")
    return 0


def add_ablate_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``ablate`` on a ``python -m benchmark`` subparsers object."""
    from benchmark.config import DEFAULT_OUTPUT_DIR, RunConfig

    p = subparsers.add_parser(
        "ablate",
        help="train (or reuse) the four ELAM/LDL variants, evaluate them, write the table",
        usage="python -m benchmark ablate [--variants V] [--datasets D] [--retrain] [options]",
        description="The ELAM/LDL ablation grid: deep3d-recipe, elam, ldl, elam-ldl, with "
                    "bootstrap confidence intervals and paired differences.",
        epilog=ABLATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated (default: {','.join(VARIANTS)})")
    p.add_argument("--datasets", default="synthetic,real-faces-val",
                   help="evaluation datasets (default: synthetic,real-faces-val; the synthetic "
                        "test split is used)")
    p.add_argument("--weights-dir", default=None,
                   help="checkpoint folder (default: the shipped methods/elam_ldl/weights)")
    p.add_argument("--retrain", action="store_true",
                   help="train every variant even when its checkpoint exists")
    p.add_argument("--train-missing", action=argparse.BooleanOptionalAction, default=True,
                   help="train variants whose checkpoint is missing (default: yes)")
    p.add_argument("--train-option", action="append", default=None, metavar="KEY=VALUE",
                   help="training option for variants trained here (repeatable)")
    p.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR),
                   help="results folder (run records; the table goes to <dir>/ablation)")
    p.add_argument("--limit", type=int, default=None, help="first N samples per dataset")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (subjects)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--workers", type=int, default=RunConfig.workers,
                   help="scoring processes (0: inline)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4))
    p.set_defaults(func=cmd_ablate)
    return p


def add_subcommand(subparsers: Any) -> None:
    """Registers both ``train`` and ``ablate`` (the hook ``benchmark.cli`` calls)."""
    add_train_subcommand(subparsers)
    add_ablate_subcommand(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m methods.elam_ldl.cli {train,ablate} ...`` (same flags as the subcommands)."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m methods.elam_ldl.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level={0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(
        args.verbosity, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s",
        force=True)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
