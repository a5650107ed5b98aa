"""The runner: methods x datasets -> cached predictions -> scores -> run records.

Room: orchestration only. It is the one module that knows methods, datasets, caches,
scoring and records at once; each of those knows at most one neighbour.

Per (dataset, method) pair::

    for each sample id (first --limit):
        score cached?  -> read it
        else prediction cached? -> read it, else load sample, predict (batched), cache it
             -> score it, cache the score
    aggregate rows -> RunRecord -> results/runs/<dataset>__<split>/<method>/

Failures are data: a sample whose prediction raises is an ``error`` row; a method without
its files or extras is a ``skipped`` record; a method that fails to load is an ``error``
record; the run goes on (unless ``raise_errors``). Every prediction and score is on disk
the moment it is computed, so Ctrl-C loses nothing and a re-run resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import metrics as M
from benchmark import provenance
from benchmark.cache import CorruptCacheFile, PredictionCache, ScoreCache
from benchmark.config import RunConfig
from benchmark.datasets import DATASETS
from benchmark.datasets.base import Dataset
from benchmark.results import RunRecord
from benchmark.scoring import ScoreTable, ScoringParams, aggregate, confusion, curves, score_sample
from benchmark.types import FaceSample, Prediction
from methods import METHODS
from methods.base import Method

logger = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; carries how much was already safely cached."""

    def __init__(self, n_cached: int) -> None:
        super().__init__(n_cached)
        self.n_cached = n_cached


@dataclasses.dataclass
class RunSummary:
    """What one ``run`` call did: records written and datasets skipped."""

    records: list[RunRecord]
    skipped_datasets: dict[str, str]
    seconds: float


def check_output_dir(path: Path) -> None:
    """Creates the output folder and checks it is writable; ``ValueError`` otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"output folder {str(path)!r} is not writable ({exc.strerror or exc}); "
            f"choose another with --output-dir."
        ) from exc


def make_dataset(name: str, config: RunConfig) -> Dataset:
    """Instantiates a registered dataset with the config's split and options."""
    cls = DATASETS.get(name)
    opts = dict(config.dataset_options.get(name, {}))
    root = opts.pop("root", None)
    split = config.split if config.split in cls.card.splits else None
    if config.split and split is None:
        raise ValueError(
            f"dataset {name!r} has no split {config.split!r} (it has {', '.join(cls.card.splits)})."
        )
    return cls(split=split, root=root, **opts)


def make_method(name: str, config: RunConfig) -> Method:
    """Instantiates a registered method with its options."""
    return METHODS.get(name)(dict(config.method_options.get(name, {})))


def run(config: RunConfig, show_progress: bool = True) -> RunSummary:
    """Evaluates the selected methods on the selected datasets (see module docstring).

    Raises:
        ValueError: bad configuration (unknown name, unwritable output folder, ...).
        RunInterrupted: on Ctrl-C; everything computed so far is cached.
    """
    t_start = time.perf_counter()
    config.validate()
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir)
    method_names = METHODS.select(config.methods, config.exclude)
    dataset_names = DATASETS.select(config.datasets)
    threshold = (
        config.closed_threshold
        if config.closed_threshold is not None
        else M.DEFAULT_CLOSED_THRESHOLD
    )
    params = ScoringParams(closed_threshold=float(threshold))
    base = {
        "git_revision": provenance.git_revision(),
        "date": provenance.now_iso(),
        "packages": provenance.package_versions(),
        "environment": provenance.environment(),
    }
    records: list[RunRecord] = []
    skipped: dict[str, str] = {}
    n_cached_total = 0
    methods: dict[str, Method] = {}
    try:
        for dname in dataset_names:
            try:
                dataset = make_dataset(dname, config)
            except ValueError as exc:
                skipped[dname] = str(exc)
                logger.warning("dataset %s skipped: %s", dname, exc)
                continue
            avail = dataset.availability()
            if not avail.ok:
                skipped[dname] = str(avail)
                logger.warning("dataset %s %s", dname, avail)
                continue
            ids = dataset.sample_ids()
            if config.limit is not None:
                ids = ids[: config.limit]
            for mname in method_names:
                if mname not in methods:
                    methods[mname] = make_method(mname, config)
                record, n_cached = _evaluate_pair(
                    methods[mname], dataset, ids, config, params, base, show_progress
                )
                n_cached_total += n_cached
                record.to_disk(output_dir)
                records.append(record)
    except KeyboardInterrupt as exc:
        done = getattr(exc, "n_cached", 0)
        raise RunInterrupted(n_cached_total + done) from None
    return RunSummary(records, skipped, time.perf_counter() - t_start)


def _skip_record(method: Method, dataset: Dataset, status: str, reason: str, fix: str = "",
                 base: dict[str, Any] | None = None) -> RunRecord:
    return RunRecord(
        method=method.card.name,
        dataset=dataset.card.name,
        split=dataset.split,
        status=status,
        reason=reason,
        fix=fix,
        method_card=_method_card_dict(method),
        dataset_card=_dataset_card_dict(dataset),
        provenance=dict(base or {}),
    )


def _evaluate_pair(
    method: Method,
    dataset: Dataset,
    ids: list[str],
    config: RunConfig,
    params: ScoringParams,
    base: dict[str, Any],
    show_progress: bool,
) -> tuple[RunRecord, int]:
    avail = method.availability()
    if avail.ok:
        avail = method.supports(dataset)
    if not avail.ok:
        logger.info("%s on %s %s", method.card.name, dataset.card.name, avail)
        return _skip_record(method, dataset, "skipped", avail.reason, avail.fix, base), 0

    try:
        mrev = method.revision()
        drev = dataset.revision()
    except Exception as exc:  # a broken checkpoint or dataset: record, go on
        if config.raise_errors:
            raise
        return _skip_record(method, dataset, "error", f"{type(exc).__name__}: {exc}", "",
                            base), 0
    slot = Path(dataset.card.name) / dataset.split / method.card.name / f"{mrev}-{drev}"
    cache_root = config.resolved_cache_dir()
    preds = PredictionCache(cache_root / "predictions" / slot)
    scores = ScoreCache(cache_root / "scores" / slot / params.digest())

    rows: dict[str, dict[str, Any]] = {}
    distances: dict[str, np.ndarray] = {}
    timings = {"predict_seconds": 0.0, "score_seconds": 0.0, "n_predicted": 0,
               "n_from_cache": 0}
    always = config.overwrite == "always"

    desc = f"{method.card.name} on {dataset.card.name}/{dataset.split}"
    bar = tqdm(total=len(ids), desc=desc, disable=not show_progress, unit="img",
               dynamic_ncols=True, leave=True)
    todo: list[str] = []
    for sid in ids:
        if not always and scores.has(sid):
            try:
                row, dist = scores.get(sid)
                rows[sid] = row
                if dist is not None:
                    distances[sid] = dist
                timings["n_from_cache"] += 1
                bar.update(1)
                continue
            except CorruptCacheFile as exc:
                logger.warning("damaged score cache file, recomputing: %s", exc)
                scores.discard(sid)
        todo.append(sid)

    # A method that does not batch is called one sample at a time, so that every prediction
    # is cached the moment it exists (Ctrl-C then loses nothing already computed).
    batches = type(method).predict_batch is not Method.predict_batch
    try:
        for batch_ids in _chunks(todo, config.batch_size if batches else 1):
            samples = {sid: dataset.load_sample(sid) for sid in batch_ids}
            need = []
            got: dict[str, Prediction] = {}
            for sid in batch_ids:
                cached = None
                if not always and preds.has(sid):
                    try:
                        cached = preds.get(sid)
                    except (CorruptCacheFile, ValueError) as exc:
                        logger.warning("damaged prediction cache file, recomputing: %s", exc)
                        preds.discard(sid)
                if cached is not None:
                    got[sid] = cached
                    timings["n_from_cache"] += 1
                else:
                    need.append(sid)
            if need:
                if config.overwrite == "only-cache":
                    for sid in need:
                        got[sid] = Prediction.failed("skipped", "no cached prediction")
                else:
                    t0 = time.perf_counter()
                    try:
                        method.ensure_loaded(config.device)
                    except Exception as exc:
                        if config.raise_errors:
                            raise
                        logger.error("%s failed to load: %s", method.card.name, exc)
                        bar.close()
                        return _skip_record(method, dataset, "error",
                                            f"failed to load: {type(exc).__name__}: {exc}",
                                            "", base), 0
                    new = _predict(method, [samples[s] for s in need], config.raise_errors)
                    timings["predict_seconds"] += time.perf_counter() - t0
                    for sid, pred in zip(need, new):
                        preds.put(sid, pred)
                        got[sid] = pred
                    timings["n_predicted"] += len(need)
            t0 = time.perf_counter()
            for sid in batch_ids:
                row, dist = _score(samples[sid], got[sid], params, config.raise_errors)
                if got[sid].status != "skipped":
                    scores.put(sid, row, dist)
                rows[sid] = row
                if dist is not None:
                    distances[sid] = dist
                bar.update(1)
            timings["score_seconds"] += time.perf_counter() - t0
    except KeyboardInterrupt:
        bar.close()
        err = KeyboardInterrupt()
        err.n_cached = len(rows)  # type: ignore[attr-defined]
        raise err from None
    bar.close()

    ordered = [rows[sid] for sid in ids]
    table = ScoreTable(ordered, distances)
    statuses = [r["status"] for r in ordered]
    record = RunRecord(
        method=method.card.name,
        dataset=dataset.card.name,
        split=dataset.split,
        status="ok",
        method_revision=mrev,
        dataset_revision=drev,
        method_card=_method_card_dict(method),
        dataset_card=_dataset_card_dict(dataset),
        n_samples=len(ordered),
        n_ok=statuses.count("ok"),
        n_no_face=statuses.count("no_face"),
        n_error=statuses.count("error"),
        metrics={k: v.as_dict() for k, v in aggregate(
            table, n_boot=config.bootstrap, seed=config.seed).items()},
        curves=curves(table),
        confusion=confusion(table),
        params={
            "closed_threshold": params.closed_threshold,
            "metrical": params.metrical,
            "bootstrap": config.bootstrap,
            "seed": config.seed,
            "limit": config.limit,
            "scoring_version": params.digest(),
        },
        provenance={**base, "checkpoints": method.checkpoint_hashes()},
        timings={k: round(float(v), 3) for k, v in timings.items()},
        failures=[
            {"sample_id": r["sample_id"], "status": r["status"], "error": r["error"]}
            for r in ordered if r["status"] != "ok"
        ][:20],
        rows=ordered,
    )
    return record, len(rows)


def _predict(method: Method, samples: list[FaceSample], raise_errors: bool) -> list[Prediction]:
    if raise_errors:
        preds = method.predict_batch(samples)
        for s, p in zip(samples, preds):
            if p.status == "error":
                raise RuntimeError(f"{method.card.name} failed on {s.id}: {p.error}")
        return preds
    return method.predict_safe(samples)


def _score(sample: FaceSample, pred: Prediction, params: ScoringParams,
           raise_errors: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    try:
        return score_sample(sample, pred, params)
    except Exception as exc:
        if raise_errors:
            raise
        logger.debug("scoring failed on %s", sample.id, exc_info=True)
        row, _ = score_sample(sample, Prediction.failed("error", ""), params)
        row["error"] = f"scoring: {type(exc).__name__}: {exc}"
        return row, None


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _method_card_dict(method: Method) -> dict[str, Any]:
    c = method.card
    return {
        "name": c.name,
        "description": c.description,
        "topology": c.topology,
        "license": c.license,
        "reference": c.reference,
        "training_datasets": list(c.training_datasets),
        "eyes_open_by_construction": c.eyes_open_by_construction,
    }


def _dataset_card_dict(dataset: Dataset) -> dict[str, Any]:
    c = dataset.card
    return {
        "name": c.name,
        "description": c.description,
        "license": c.license,
        "card_file": c.card_file,
        "redistributable": c.redistributable,
    }
