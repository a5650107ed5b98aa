"""Command line: ``python -m benchmark <command>``; one small function per subcommand.

Room: argument parsing and printing only; every command calls a library function
(``runner.run``, ``report.build_report`` ...). Flags of ``run``/``score`` are generated
from :class:`benchmark.config.RunConfig`, so defaults and help live there.

Exit codes: 0 every requested (method, dataset) pair has a record; 1 some pair or dataset
produced none (the last line lists them; see :mod:`benchmark.runner`); 2 a usage or
configuration error (one line, no traceback); 130 interrupted (everything computed is
cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmark.config import DEFAULT_OUTPUT_DIR, RunConfig, parse_options

logger = logging.getLogger("benchmark")

#: Subcommands contributed by other modules: module path of an ``add_subcommand``.
EXTERNAL_SUBCOMMANDS: tuple[str, ...] = (
    "benchmark.score_mesh",
    "benchmark.export",
    "benchmark.hf",
    "methods.elam.cli",
    "methods.elam_ldl.cli",
)

RUN_EXAMPLES = """examples:
  python -m benchmark run --methods all
  python -m benchmark run --methods 'fit-*,mean-shape' --limit 20   # into <cache>/runs-limited/
  python -m benchmark run --methods deca --method-option deca.checkpoint=~/deca_model.tar
  python -m benchmark run --methods all --datasets synthetic,real-faces-val --seed 0
  python -m benchmark run --config my_run.yaml --overwrite always
"""


def setup_logging(verbosity: int) -> None:
    """0 errors, 1 warnings (default), 2 info, 3 debug; only the CLI configures logging."""
    level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)


def _add_config_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        if field.name in skip:
            continue
        meta = dict(field.metadata)
        flag = meta.pop("cli", "--" + field.name.replace("_", "-"))
        help_text = meta.pop("help", "")
        choices = meta.pop("choices", None)
        hint = hints[field.name]
        default = field.default if field.default is not dataclasses.MISSING else None
        if hint is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
        elif "dict" in str(hint):
            parser.add_argument(flag, dest=field.name, action="append", default=None,
                                metavar="NAME.KEY=VALUE", help=help_text)
        else:
            caster = int if "int" in str(hint) else float if "float" in str(hint) else str
            parser.add_argument(flag, dest=field.name, type=caster, default=default,
                                choices=choices,
                                help=help_text if default is None
                                else f"{help_text} (default: {default})")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of run options (flags given on the command line win)")
    parser.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4),
                        help="0 errors, 1 warnings (default), 2 info, 3 debug")


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """Merges defaults < YAML file < explicit flags into a RunConfig."""
    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    for field in dataclasses.fields(RunConfig):
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if field.name in ("method_options", "dataset_options"):
            if value:
                merged = {**getattr(cfg, field.name)}
                for name, opts in parse_options(value).items():
                    merged[name] = {**merged.get(name, {}), **opts}
                setattr(cfg, field.name, merged)
            continue
        if value != parser.get_default(field.name):
            setattr(cfg, field.name, value)
    return cfg


def _print_summary(summary) -> None:
    from benchmark.leaderboard import render_console
    from benchmark.results import one_line

    print(render_console(summary.records))
    for name, reason in summary.skipped_datasets.items():
        print(f"dataset {name}: {one_line(reason)}")


def cmd_run(args: argparse.Namespace) -> int:
    """Runs methods on datasets, then renders the leaderboard; exit 1 if a pair failed."""
    from benchmark.report import build_report
    from benchmark.runner import run

    cfg = config_from_args(args, args.parser)
    summary = run(cfg, show_progress=args.verbosity > 0)
    _print_summary(summary)
    out = cfg.resolved_output_dir()
    if cfg.limit is not None and not cfg.output_dir:
        print(f"--limit {cfg.limit} run: records written to {out} (exploratory runs stay out "
              f"of results/; give --output-dir to choose the folder)")
    if cfg.leaderboard and (out / "runs").is_dir():
        path = build_report(out, cfg.resolved_cache_dir(), draw=cfg.plots)
        print(f"leaderboard: {path}")
    print(f"done in {summary.seconds:.1f} s")
    if summary.failed:
        for line in summary.failed:
            print(f"failed: {line}", file=sys.stderr)
        print(f"FAILED: {len(summary.failed)} requested item(s) produced no record (listed "
              f"above); exit code 1.", file=sys.stderr)
        return 1
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Re-scores cached predictions (never runs a method)."""
    args.overwrite = "only-cache"
    return cmd_run(args)


def cmd_ls(args: argparse.Namespace) -> int:
    """Lists methods, datasets or metrics with their status."""
    if args.what == "methods":
        from methods import METHODS

        for name in METHODS.names():
            try:
                method = METHODS.get(name)()
                status = str(method.availability())
                desc = method.card.description
            except Exception as exc:  # a broken adapter must not hide the others
                status, desc = f"error: {type(exc).__name__}: {exc}", ""
            print(f"{name:22s} {status}\n{'':22s} {desc}")
    elif args.what == "datasets":
        from benchmark.datasets import DATASETS

        for name in DATASETS.names():
            try:
                ds = DATASETS.get(name)()
                status = str(ds.availability())
                desc = f"{ds.card.description} [splits: {', '.join(ds.card.splits)}]"
            except Exception as exc:
                status, desc = f"error: {type(exc).__name__}: {exc}", ""
            print(f"{name:22s} {status}\n{'':22s} {desc}")
    else:
        from benchmark.scoring import METRICS

        for name in METRICS.names():
            spec = METRICS.get(name)
            arrow = "higher is better" if spec.higher_is_better else "lower is better"
            print(f"{name:16s} {arrow:17s} {spec.unit or '-':3s} {spec.description}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Renders LEADERBOARD.md and plots from stored run records."""
    from benchmark.config import default_cache_dir
    from benchmark.leaderboard import render_console
    from benchmark.report import build_report
    from benchmark.results import load_records

    out = Path(args.output_dir)
    if not (out / "runs").is_dir():
        raise ValueError(f"no run records under {str(out)!r}; run `python -m benchmark run` first.")
    path = build_report(out, Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                        draw=args.plots)
    print(render_console(load_records(out)))
    print(f"leaderboard: {path}")
    if args.html:
        from benchmark.site import write_site

        index = write_site(out, Path(args.html),
                           Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                           samples_per_section=args.html_samples)
        print(f"site: {index} (open it in a browser; no server needed)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="Eye-aware benchmark for single-image 3D face reconstruction.",
        epilog="Run `python -m benchmark <command> --help` for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("run", help="evaluate methods on datasets and write the leaderboard",
                       usage="python -m benchmark run [--methods M] [--datasets D] [options]",
                       epilog=RUN_EXAMPLES, formatter_class=fmt)
    _add_config_flags(p, skip=("allow_fewer",))
    p.set_defaults(func=cmd_run, parser=p)

    p = sub.add_parser("score", help="re-score cached predictions without running methods",
                       usage="python -m benchmark score [--methods M] [--datasets D] [options]",
                       epilog="examples:\n  python -m benchmark score --methods all\n"
                              "  python -m benchmark score --closed-threshold 0.12\n"
                              "A pair lacking cached predictions keeps its previous record "
                              "(exit 1)\nunless --allow-fewer.\n",
                       formatter_class=fmt)
    _add_config_flags(p, skip=("overwrite",))
    p.set_defaults(func=cmd_score, parser=p)

    p = sub.add_parser("ls", help="list methods, datasets or metrics with their status",
                       usage="python -m benchmark ls {methods,datasets,metrics}",
                       epilog="examples:\n  python -m benchmark ls methods\n"
                              "  python -m benchmark ls datasets\n", formatter_class=fmt)
    p.add_argument("what", choices=("methods", "datasets", "metrics"))
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("leaderboard", help="render LEADERBOARD.md and plots from stored runs",
                       usage="python -m benchmark leaderboard [--output-dir DIR] [--html DIR]",
                       epilog="examples:\n  python -m benchmark leaderboard\n"
                              "  python -m benchmark leaderboard --output-dir my_results "
                              "--no-plots\n"
                              "  python -m benchmark leaderboard --html /tmp/eyebench-site\n",
                       formatter_class=fmt)
    p.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR),
                   help="folder holding runs/ (default: results/)")
    p.add_argument("--cache-dir", default=None, help="prediction cache, for qualitative plots")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="draw plots")
    p.add_argument("--html", default=None, metavar="DIR",
                   help="also write a static web leaderboard (opens from file://, offline) "
                        "with a per-sample browser and 3D viewer into DIR")
    p.add_argument("--html-samples", type=int, default=30, metavar="N",
                   help="samples per dataset in the site's per-sample browser (default 30)")
    p.add_argument("-v", "--verbosity", type=int, default=1, choices=range(4))
    p.set_defaults(func=cmd_leaderboard)

    for module in EXTERNAL_SUBCOMMANDS:
        importlib.import_module(module).add_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from benchmark.registry import UnknownNameError
    from benchmark.runner import RunInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbosity", 1))
    func: Callable = args.func
    try:
        return int(func(args) or 0)
    except RunInterrupted:
        print("\ninterrupted: every prediction and score computed so far is cached; run the "
              "same command again to resume.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130
    except (UnknownNameError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
