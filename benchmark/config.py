"""The single run configuration: one dataclass, read from CLI flags or a YAML file.

Room: every knob of ``python -m benchmark run``/``score``; the CLI builds its flags from
the fields below (kebab-case of the field name, help from the field metadata), so defaults
live in exactly one place.

Example::

    cfg = RunConfig.from_yaml("my_run.yaml")        # keys = field names
    cfg = dataclasses.replace(cfg, limit=20)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

#: Project root (the folder holding pyproject.toml).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where full runs write records, LEADERBOARD.md and plots unless told otherwise.
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "results"

OVERWRITE_STRATEGIES = ("only-missing", "always", "only-cache")

EXECUTORS = ("local", "ray")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclasses.dataclass
class RunConfig:
    """Configuration of one benchmark run (see ``python -m benchmark run --help``)."""

    methods: str = dataclasses.field(
        default="all", metadata=_help("methods: 'all', names, or globs, comma-separated")
    )
    exclude: str = dataclasses.field(
        default="", metadata=_help("methods to leave out (names or globs, comma-separated)")
    )
    datasets: str = dataclasses.field(
        default="synthetic",
        metadata=_help("datasets: 'all', names or globs, comma-separated (default: the "
                       "embedded synthetic benchmark)"),
    )
    split: str | None = dataclasses.field(
        default=None, metadata=_help("dataset split (default: each dataset's default split)")
    )
    limit: int | None = dataclasses.field(
        default=None, metadata=_help("evaluate only the first N samples of each dataset")
    )
    device: str = dataclasses.field(
        default="cpu", metadata=_help("torch device for methods", choices=("cpu", "cuda"))
    )
    output_dir: str | None = dataclasses.field(
        default=None,
        metadata=_help("where run records, LEADERBOARD.md and plots are written (default: "
                       "results/; runs with --limit: <cache>/runs-limited/limit-N/, so "
                       "exploratory runs never land in the tracked results/)"),
    )
    cache_dir: str | None = dataclasses.field(
        default=None,
        metadata=_help("prediction/score cache (default: $EYEBENCH_CACHE or <project>/.cache)"),
    )
    seed: int = dataclasses.field(default=0, metadata=_help("global seed (methods, bootstrap)"))
    batch_size: int | None = dataclasses.field(
        default=None, metadata=_help("samples per method call (default: the method's own, "
                                     "see MethodCard.batch_size)")
    )
    workers: int = dataclasses.field(
        default=min(2, os.cpu_count() or 1),
        metadata=_help("processes that score predictions beside the method (0: score inline)"),
    )
    executor: str = dataclasses.field(
        default="local",
        metadata=_help("where predictions and scores run: local (this process + --workers "
                       "scoring processes) or ray (prediction actors and scoring tasks on a "
                       "running Ray cluster; needs the ray extra, see docs/scaling.md)",
                       choices=EXECUTORS),
    )
    ray_address: str = dataclasses.field(
        default="auto",
        metadata=_help("Ray cluster to join with --executor ray ('auto': the one running "
                       "here, started with `ray start --head`; or ray://host:10001, "
                       "host:6379); none is started for you. YAML: ray: {address: ...}"),
    )
    overwrite: str = dataclasses.field(
        default="only-missing",
        metadata=_help(
            "only-missing: reuse cached predictions and scores; always: recompute "
            "everything; only-cache: never run methods, score what is cached",
            choices=OVERWRITE_STRATEGIES,
        ),
    )
    bootstrap: int = dataclasses.field(
        default=1000, metadata=_help("bootstrap resamples (over subjects) for confidence intervals")
    )
    closed_threshold: float | None = dataclasses.field(
        default=None,
        metadata=_help("eye openness below which an eye counts as closed "
                       "(default: metrics.DEFAULT_CLOSED_THRESHOLD)"),
    )
    raise_errors: bool = dataclasses.field(
        default=False, metadata=_help("stop at the first failing sample instead of recording it")
    )
    leaderboard: bool = dataclasses.field(
        default=True, metadata=_help("render LEADERBOARD.md and plots after the run")
    )
    plots: bool = dataclasses.field(default=True, metadata=_help("draw plots with the leaderboard"))
    allow_fewer: bool = dataclasses.field(
        default=False,
        metadata=_help("score: write a record even when fewer predictions are cached than the "
                       "samples asked for (replacing a fuller record)"),
    )
    method_options: dict[str, dict[str, str]] = dataclasses.field(
        default_factory=dict,
        metadata=_help("per-method options, NAME.KEY=VALUE (repeatable)", cli="--method-option"),
    )
    dataset_options: dict[str, dict[str, str]] = dataclasses.field(
        default_factory=dict,
        metadata=_help("per-dataset options, NAME.KEY=VALUE (repeatable)",
                       cli="--dataset-option"),
    )

    def resolved_cache_dir(self) -> Path:
        """The cache root actually used."""
        if self.cache_dir:
            return Path(self.cache_dir)
        return default_cache_dir()

    def resolved_output_dir(self) -> Path:
        """The output folder actually used (see the ``output_dir`` help)."""
        if self.output_dir:
            return Path(self.output_dir).expanduser()
        if self.limit is not None:
            return self.resolved_cache_dir() / "runs-limited" / f"limit-{self.limit}"
        return DEFAULT_OUTPUT_DIR

    def validate(self) -> None:
        """Raises ``ValueError`` with one sentence when a value is out of range."""
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be a positive number, got {self.limit}.")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.overwrite not in OVERWRITE_STRATEGIES:
            raise ValueError(
                f"--overwrite must be one of {', '.join(OVERWRITE_STRATEGIES)}, "
                f"got {self.overwrite!r}."
            )
        if self.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {self.bootstrap}.")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, "
                             f"got {self.executor!r}.")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}.")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Reads a YAML mapping whose keys are field names.

        Raises:
            ValueError: one sentence naming the file (and the line for YAML syntax errors,
                the key for unknown keys and wrong types).
        """
        import yaml

        where = f"config file {str(path)!r}"
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{where} is not valid YAML{at}: {problem}.") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ValueError(f"{where} cannot be read: {reason}.") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where} must hold a mapping of option: value.")
        if isinstance(data.get("ray"), dict):  # ray: {address: auto} is ray_address
            ray_opts = dict(data.pop("ray"))
            if set(ray_opts) - {"address"}:
                raise ValueError(f"{where}: key 'ray' knows only 'address', got "
                                 f"{', '.join(sorted(map(str, ray_opts)))}.")
            if "address" in ray_opts:
                data["ray_address"] = ray_opts["address"]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - names)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}.")
        return cls(**{k: _typed(k, v, where) for k, v in data.items()})


_LIST_FIELDS = ("methods", "exclude", "datasets")


def _typed(key: str, value: Any, where: str) -> Any:
    """A YAML value checked (and lightly converted) against the field's type."""
    import typing

    hint = str(typing.get_type_hints(RunConfig)[key])

    def bad(expected: str) -> ValueError:
        return ValueError(f"{where}: key {key!r} must be {expected}, got {value!r}.")

    optional = "None" in hint
    if value is None:
        if optional:
            return None
        raise bad("given a value")
    if hint == "<class 'bool'>":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if "int" in hint and "dict" not in hint:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if "float" in hint:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if "dict" in hint:
        ok = isinstance(value, dict) and all(
            isinstance(v, dict) and all(not isinstance(x, dict | list) for x in v.values())
            for v in value.values())
        if not ok:
            raise bad("a mapping NAME: {KEY: VALUE}")
        return {str(n): {str(k): str(x) for k, x in opts.items()} for n, opts in value.items()}
    if key in _LIST_FIELDS and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return ",".join(value)
    if not isinstance(value, str):
        raise bad("a string" + (" or a list of strings" if key in _LIST_FIELDS else ""))
    return value


def default_cache_dir() -> Path:
    """``$EYEBENCH_CACHE`` or ``<project>/.cache`` (git-ignored)."""
    env = os.environ.get("EYEBENCH_CACHE")
    return Path(env).expanduser() if env else PROJECT_ROOT / ".cache"


def parse_options(items: list[str] | None) -> dict[str, dict[str, str]]:
    """Parses repeated ``NAME.KEY=VALUE`` items into ``{NAME: {KEY: VALUE}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        head, sep, value = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name or not key:
            raise ValueError(f"option {item!r} must look like NAME.KEY=VALUE.")
        out.setdefault(name, {})[key] = value
    return out


def options_for(items: list[str] | None, kind: str, name: str) -> dict[str, str] | None:
    """The ``NAME.KEY=VALUE`` items of the one selected method or dataset ``name``.

    Raises:
        ValueError: an item names another ``kind`` ("method", "dataset") than ``name``.
    """
    given = parse_options(items)
    other = sorted(set(given) - {name})
    if other:
        raise ValueError(f"--{kind}-option for {', '.join(other)}, but the {kind} is "
                         f"{name!r}.")
    return given.get(name)
