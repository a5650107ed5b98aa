"""The runner: methods x datasets -> cached predictions -> scores -> run records.

Room: orchestration only. It is the one module that knows methods, datasets, caches,
scoring and records at once; each of those knows at most one neighbour.

Per (dataset, method) pair::

    for each sample id (first --limit):
        score cached?  -> read it
        else prediction cached? -> read it, else load sample, predict (batched), cache it
             -> score it, cache the score
    aggregate rows -> RunRecord -> <output>/runs/<record key>/<method>/

Failures are data: a sample whose prediction raises is an ``error`` row, and so is one whose
image does not decode or whose loader reports a problem (checked before any method sees
it, for every method: ``benchmark.datasets.base.checked_input``); a method without
its files or extras is a ``skipped`` record; a method that fails to load is an ``error``
record; the run goes on (unless ``raise_errors``). Every prediction and score is on disk
the moment it is computed, so Ctrl-C loses nothing and a re-run resumes.

Every requested (method, dataset) pair that ends without a usable record is listed in
:attr:`RunSummary.failed` (the CLI exits 1 then): a method that failed to load, a split or
dataset that does not exist or is unavailable, a method skipped for missing files (unless
``--methods all``; a dataset likewise unless ``--datasets all``), a pair where nothing was
evaluated, and a cache-only re-score that lacks predictions (the previous record is kept
unless ``allow_fewer``). Options for unknown keys or unselected methods/datasets are
refused before anything runs.

Scoring workers watch their parent: when the runner dies (kill -9, out of memory) they exit
within a second instead of lingering.

Where predictions and scores are computed is the executor's business: :class:`LocalExecutor`
(this process predicts, a process pool scores) or ``benchmark.ray_executor.RayExecutor``
(``--executor ray``: prediction actors and scoring tasks on a Ray cluster). Both go through
the same caches and produce the same records; the record's ``provenance.executor`` names
the one used.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import metrics as M
from benchmark import provenance
from benchmark.cache import CorruptCacheFile, PredictionCache, ScoreCache
from benchmark.config import RunConfig
from benchmark.datasets import DATASETS
from benchmark.datasets.base import (
    LOAD_ERROR,
    Dataset,
    SampleError,
    checked_input,
    load_sample_or_error,
)
from benchmark.progress import progress
from benchmark.results import RunRecord, instance_key, one_line, sample_set_digest
from benchmark.scoring import ScoreTable, ScoringParams, aggregate, confusion, curves, score_sample
from benchmark.types import FaceSample, Prediction
from methods import METHODS
from methods.base import Method
from methods.topology import get_topology, registered_name

logger = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; everything computed before it is cached."""


@dataclasses.dataclass
class RunSummary:
    """What one ``run`` call did.

    Attributes:
        records: records written (ok, skipped and error ones).
        skipped_datasets: dataset -> why it was not evaluated.
        seconds: wall time.
        failed: one line per requested (method, dataset) pair, or dataset, that produced no
            usable record (see the module docstring); empty when everything asked for ran.
        output_dir: where the records went.
    """

    records: list[RunRecord]
    skipped_datasets: dict[str, str]
    seconds: float
    failed: list[str] = dataclasses.field(default_factory=list)
    output_dir: Path | None = None


def check_options(config: RunConfig, method_names: list[str], dataset_names: list[str]) -> None:
    """Refuses options of unknown keys, and options of methods/datasets not selected.

    Raises:
        ValueError: one line naming the option and what to do.
        UnknownNameError: an option for a name that is not registered.
    """
    for kind, registry, given, selected, flag in (
            ("method", METHODS, config.method_options, method_names, "--methods"),
            ("dataset", DATASETS, config.dataset_options, dataset_names, "--datasets")):
        chosen = getattr(config, "methods" if kind == "method" else "datasets")
        for name, opts in given.items():
            cls = registry.get(name)
            keys = ", ".join(f"{name}.{k}" for k in opts)
            if name not in selected:
                raise ValueError(
                    f"--{kind}-option {keys} is given but {kind} {name!r} is not selected "
                    f"({flag} {chosen}); add it to {flag} (e.g. {flag} {name}) or drop the "
                    f"option.")
            cls.check_options(opts)


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
        ValueError: bad configuration (unknown name or option key, unwritable output
            folder, ...).
        RunInterrupted: on Ctrl-C; everything computed so far is cached.
    """
    t_start = time.perf_counter()
    config.validate()
    method_names = METHODS.select(config.methods, config.exclude)
    dataset_names = DATASETS.select(config.datasets)
    check_options(config, method_names, dataset_names)
    output_dir = config.resolved_output_dir()
    check_output_dir(output_dir)
    all_methods = config.methods.strip() == "all"
    all_datasets = config.datasets.strip() == "all"
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
    records: list[tuple[int, RunRecord]] = []  # (pair order, record): pairs finish out of order
    skipped: dict[str, str] = {}
    failed: list[str] = []
    methods: dict[str, Method] = {}
    open_pairs: list[_PairRun] = []
    finished: list[tuple[_PairRun, RunRecord]] = []
    executor = make_executor(config, params)
    base["executor"] = executor.name
    try:
        for dname in dataset_names:
            lenient = all_datasets  # unavailable data is a listed, non-failing state then
            try:
                dataset = make_dataset(dname, config)
                avail = dataset.availability()
                reason = "" if avail.ok else str(avail)
                ids = dataset.sample_ids() if avail.ok else []
            except (ValueError, FileNotFoundError) as exc:
                # Under --datasets all a split the dataset lacks is listed, not failed.
                dataset, reason = None, str(exc)
                lenient = lenient and "has no split" in reason
            if not reason:
                if config.limit is not None:
                    ids = ids[: config.limit]
                if not ids:
                    reason, lenient = "no samples to evaluate", False
            if reason:
                skipped[dname] = reason
                logger.warning("dataset %s not evaluated: %s", dname, one_line(reason))
                if not lenient:
                    failed.append(f"dataset {dname}: {one_line(reason)}")
                continue
            for mname in method_names:
                if mname not in methods:
                    methods[mname] = make_method(mname, config)
                pair = _PairRun(methods[mname], dataset, config, params, base, executor)
                pair.order = len(finished) + len(open_pairs)
                record = pair.start(ids, show_progress)
                if record is None:  # scores still in flight: finished below or later
                    open_pairs.append(pair)
                else:
                    finished.append((pair, record))
                # A pair whose last score arrived (while later pairs predicted) is finished
                # now: its bootstrap runs while the workers score the newer pairs.
                for done in [p for p in open_pairs if p.complete()]:
                    open_pairs.remove(done)
                    finished.append((done, done.finish()))
                _write_finished(finished, records, failed, config, all_methods, output_dir)
        executor.drain()
        for pair in open_pairs:
            finished.append((pair, pair.finish()))
        open_pairs.clear()
        _write_finished(finished, records, failed, config, all_methods, output_dir)
    except KeyboardInterrupt:
        raise RunInterrupted() from None
    finally:
        executor.close()
    return RunSummary([r for _, r in sorted(records, key=lambda x: x[0])], skipped,
                      time.perf_counter() - t_start, failed, output_dir)


def _write_finished(finished: list[tuple[_PairRun, RunRecord]],
                    records: list[tuple[int, RunRecord]],
                    failed: list[str], config: RunConfig, all_methods: bool,
                    output_dir: Path) -> None:
    """Checks and writes finished pairs' records (emptying ``finished``)."""
    for pair, record in finished:
        problem = _pair_problem(record, pair, config, all_methods)
        if problem:
            failed.append(f"{pair.method.card.name} on {record.dataset}/{record.split}: "
                          f"{problem}")
        if not (record.status == "ok" and pair.missing and not config.allow_fewer):
            record.to_disk(output_dir)
            records.append((pair.order, record))
    finished.clear()


def _pair_problem(record: RunRecord, pair: _PairRun, config: RunConfig,
                  all_methods: bool) -> str:
    """Why a pair's record does not count as evaluated ("" when it does)."""
    if record.status == "error":
        return one_line(record.reason)
    if record.status == "skipped":
        if all_methods:
            return ""
        fix = f" (fix: {one_line(record.fix)})" if record.fix else ""
        return f"skipped: {one_line(record.reason)}{fix}"
    if pair.missing:
        how = _run_command(record, pair.dataset, config)
        if config.allow_fewer:
            logger.warning("%s on %s: %d of %d predictions are not cached; record written "
                           "with fewer predictions (--allow-fewer)", record.method, record.key,
                           pair.missing, record.n_samples)
            return ""
        return (f"{pair.missing} of {record.n_samples} predictions are not cached, so the "
                f"record was not written (the previous one, if any, is kept); compute them "
                f"with `{how}`, or pass --allow-fewer to score the "
                f"{record.n_samples - pair.missing} cached ones.")
    if record.n_samples and record.n_error == record.n_samples:
        first = record.failures[0]["error"] if record.failures else ""
        return f"every sample failed ({record.n_error}; first: {one_line(first, 160)})"
    return ""


def _run_command(record: RunRecord, dataset: Dataset, config: RunConfig) -> str:
    """The ``run`` command that computes a pair's missing predictions."""
    cmd = (f"python -m benchmark run --methods {record.method} --datasets {record.dataset} "
           f"--split {record.split}")
    if dataset.root is not None and dataset.card.root_env:
        cmd += f" --dataset-option {record.dataset}.root={dataset.root}"
    if record.params.get("limit"):
        cmd += f" --limit {record.params['limit']}"
    for flag, value in (("--cache-dir", config.cache_dir), ("--output-dir", config.output_dir)):
        if value:
            cmd += f" {flag} {value}"
    return cmd


def _score_job(sample: FaceSample, pred: Prediction, params: ScoringParams,
               raise_errors: bool, topology: str | None = None
               ) -> tuple[dict[str, Any], np.ndarray | None]:
    """Scores one pair; a scoring failure becomes an ``error`` row (unless raise_errors).

    ``topology``: the registered name of the prediction's topology, sent instead of it.
    """
    if topology is not None:
        pred = dataclasses.replace(pred, topology=get_topology(topology))
    try:
        return score_sample(sample, pred, params)
    except Exception as exc:
        if raise_errors:
            raise
        logger.debug("scoring failed on %s", sample.id, exc_info=True)
        row, _ = score_sample(sample, Prediction.failed("error", ""), params)
        row["error"] = f"scoring: {type(exc).__name__}: {exc}"
        return row, None


#: Seconds between two checks of a scoring worker that its parent is alive.
PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit as soon as the parent process is gone.

    On Linux the kernel is asked to kill the worker when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also polls the parent pid
    (re-parenting changes ``os.getppid()``) and calls ``os._exit``.
    """
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the watch began
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Spawned worker processes that exit when this process dies (even by kill -9).

    The multiprocessing resource tracker exits on its own once every process holding its
    pipe (this one and the workers) is gone.
    """
    ctx = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),))


#: Scoring jobs queued per worker before the runner waits: a backlog left by fast methods
#: is scored while a slow method predicts (each job holds a sample's scan and a mesh).
BACKLOG_PER_WORKER = 32


class Scorer:
    """Scores (sample, prediction) pairs inline or in worker processes.

    Scan-to-mesh scoring costs about as much as a fast method's prediction, so with workers
    it runs beside the predictions of the next samples. Workers are spawned on first use and
    shared by every (method, dataset) pair of a run.

    Args:
        params: scoring parameters.
        workers: worker processes (0 scores in this process).
        raise_errors: let scoring exceptions propagate.
    """

    def __init__(self, params: ScoringParams, workers: int, raise_errors: bool) -> None:
        self.params = params
        self.workers = workers
        self.raise_errors = raise_errors
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pending: dict[concurrent.futures.Future, tuple[str, Callable]] = {}

    def submit(self, sample: FaceSample, pred: Prediction,
               done: Callable[[str, dict[str, Any], np.ndarray | None], None]) -> None:
        """Scores a pair; ``done(sample_id, row, distances)`` is called when it is scored."""
        if self.workers <= 0:
            done(sample.id, *_score_job(sample, pred, self.params, self.raise_errors))
            return
        if self._pool is None:
            self._pool = worker_pool(self.workers)
        # Scoring needs neither the image nor the image-plane vertices, and a registered
        # topology goes by name (the worker builds its own once): half the bytes per job.
        light = dataclasses.replace(sample, image=np.zeros((1, 1, 3), np.uint8))
        name = registered_name(pred.topology) if pred.topology is not None else None
        pred = dataclasses.replace(pred, vertices_image=None,
                                   topology=None if name else pred.topology)
        fut = self._pool.submit(_score_job, light, pred, self.params, self.raise_errors, name)
        self._pending[fut] = (sample.id, done)
        if len(self._pending) >= BACKLOG_PER_WORKER * self.workers:
            self.drain(wait_all=False)

    def drain(self, wait_all: bool = True) -> None:
        """Delivers finished results; waits for all (or for at least one) pending job."""
        while self._pending:
            finished, _ = concurrent.futures.wait(
                self._pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                sid, done = self._pending.pop(fut)
                done(sid, *fut.result())
            if not wait_all:
                return

    def close(self) -> None:
        """Stops the workers (pending jobs are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._pending.clear()


#: Samples a local run keeps in memory (the first ones loaded, per dataset) so that the next
#: method does not load them again; about half a megabyte each without the image (read
#: lazily, never kept), so 512 of them take some 250 MB.
SAMPLES_KEPT = 512


class LocalExecutor:
    """Predicts in this process (one loaded model per method) and scores in a process pool.

    Samples are loaded once per run where they fit in :data:`SAMPLES_KEPT` (every method
    of the default run sees the same 300); each method gets them with a meta dict of its own.

    Args:
        config: the run configuration (``workers``, ``batch_size``, ``raise_errors``).
        params: scoring parameters.
    """

    name = "local"

    def __init__(self, config: RunConfig, params: ScoringParams) -> None:
        self.config = config
        self.scorer = Scorer(params, config.workers, config.raise_errors)
        self._samples: dict[tuple[int, str], FaceSample] = {}

    def _sample(self, dataset: Dataset, sample_id: str) -> FaceSample:
        key = (id(dataset), sample_id)
        sample = self._samples.get(key)
        if sample is None:
            sample = load_sample_or_error(dataset, sample_id, self.config.raise_errors)
            if len(self._samples) >= SAMPLES_KEPT or LOAD_ERROR in sample.meta:
                return sample
            self._samples[key] = sample
        return dataclasses.replace(sample, meta=dict(sample.meta))

    def predict_and_score(self, pair: _PairRun, todo: list[str]) -> bool:
        """Predicts (or reads from cache) and scores ``todo``; False if the method failed to load.

        Every result reaches ``pair`` through :meth:`_PairRun._scored`, possibly after this
        returns (see :meth:`drain`).
        """
        for batch_ids in _chunks(todo, pair.method.samples_per_call(self.config.batch_size)):
            # A sample the loader cannot build (NoW subject without its scan) carries
            # the reason and becomes an error row; the other samples are scored.
            samples = {sid: self._sample(pair.dataset, sid) for sid in batch_ids}
            got = pair._predictions(samples)
            if got is None:
                return False
            for sid in batch_ids:
                self.scorer.submit(samples[sid], got[sid], pair._scored)
        # Not drained here: the pair's last scores run beside the next pair's predictions.
        return True

    def drain(self, wait_all: bool = True) -> None:
        """Waits for every submitted score (or, with ``wait_all=False``, for one)."""
        self.scorer.drain(wait_all)

    def close(self) -> None:
        """Stops the scoring workers."""
        self.scorer.close()


def make_executor(config: RunConfig, params: ScoringParams) -> Any:
    """The executor ``config.executor`` names (``ray`` imports Ray only then).

    Raises:
        ValueError: an unknown executor, Ray not installed, or no Ray cluster to join.
    """
    if config.executor == "ray":
        from benchmark.ray_executor import RayExecutor

        return RayExecutor(config, params)
    if config.executor != "local":
        raise ValueError(f"--executor must be local or ray, got {config.executor!r}.")
    return LocalExecutor(config, params)


class _PairRun:
    """Evaluation of one method on one dataset split (see the module docstring)."""

    def __init__(self, method: Method, dataset: Dataset, config: RunConfig,
                 params: ScoringParams, base: dict[str, Any], executor: Any) -> None:
        self.method, self.dataset, self.config = method, dataset, config
        self.params, self.base, self.executor = params, base, executor
        self.rows: dict[str, dict[str, Any]] = {}
        self.distances: dict[str, np.ndarray] = {}
        self.timings = {"predict_seconds": 0.0, "score_seconds": 0.0, "n_predicted": 0,
                        "n_from_cache": 0}
        #: Samples without a cached prediction in a cache-only re-score.
        self.missing = 0
        root = dataset.root.expanduser().resolve() if dataset.root is not None else None
        self.instance: dict[str, Any] = {
            "root": str(root) if root is not None else None,
            "content_digest": "",
            "key": instance_key(root) if root is not None and dataset.card.instance_keyed
            else "",
        }

    def _skip(self, status: str, reason: str, fix: str = "") -> RunRecord:
        return RunRecord(
            method=self.method.card.name, dataset=self.dataset.card.name,
            split=self.dataset.split, status=status, reason=reason, fix=fix,
            method_card=_method_card_dict(self.method),
            dataset_card=_dataset_card_dict(self.dataset), provenance=dict(self.base),
            dataset_instance=dict(self.instance),
        )

    def evaluate(self, ids: list[str], show_progress: bool) -> RunRecord:
        """Predicts what is not cached, scores what is not scored, aggregates."""
        record = self.start(ids, show_progress)
        if record is not None:
            return record
        self.executor.drain()
        return self.finish()

    def complete(self) -> bool:
        """Whether every sample of a started pair has its score row."""
        return len(self.rows) == len(self.ids)

    def start(self, ids: list[str], show_progress: bool) -> RunRecord | None:
        """Predicts what is not cached and submits what is not scored.

        Returns:
            The record of a pair that ends here (skipped, or the method failed to load), or
            None: call :meth:`finish` once :meth:`complete` (scores may still be in flight).
        """
        method, dataset, config = self.method, self.dataset, self.config
        self.ids = ids
        avail = method.availability()
        if avail.ok:
            avail = method.supports(dataset)
        if not avail.ok:
            logger.info("%s on %s %s", method.card.name, dataset.card.name, avail)
            return self._skip("skipped", avail.reason, avail.fix)
        try:
            self.mrev, self.drev = method.revision(), dataset.revision()
        except Exception as exc:  # a broken checkpoint or dataset: record it, go on
            if config.raise_errors:
                raise
            return self._skip("error", f"{type(exc).__name__}: {exc}")
        self.instance["content_digest"] = self.drev
        slot = (Path(dataset.card.name) / dataset.split / method.card.name
                / f"{self.mrev}-{self.drev}")
        cache_root = config.resolved_cache_dir()
        self.preds = PredictionCache(cache_root / "predictions" / slot)
        self.scores = ScoreCache(cache_root / "scores" / slot / self.params.digest())

        self.bar = progress(len(ids), f"{method.card.name} on {dataset.card.name}/"
                            f"{dataset.split}", enabled=show_progress)
        try:
            todo = [sid for sid in ids if not self._cached_score(sid)]
            self.n_scored_cached = len(ids) - len(todo)
            self.t0 = time.perf_counter()
            if not self.executor.predict_and_score(self, todo):
                self.bar.close()
                return self._skip("error", self.load_error)
        except BaseException:
            self.bar.close()
            raise
        return None

    def finish(self) -> RunRecord:
        """The record of a started, complete pair (aggregates its rows)."""
        method, dataset, config, ids = self.method, self.dataset, self.config, self.ids
        self.bar.close()
        self.timings["score_seconds"] = (time.perf_counter() - self.t0
                                         - self.timings["predict_seconds"])
        n_scored_cached = self.n_scored_cached
        if config.overwrite == "only-cache":
            self.missing = sum(self.rows[sid]["status"] == "skipped" for sid in ids)
        logger.info("%s on %s/%s: %d samples: %d scores from cache, %d predictions from cache, "
                    "%d predicted (%.1f s)", method.card.name, dataset.card.name, dataset.split,
                    len(ids), n_scored_cached, self.timings["n_from_cache"] - n_scored_cached,
                    self.timings["n_predicted"], self.timings["predict_seconds"])
        return self._record(ids)

    def _cached_score(self, sid: str) -> bool:
        if self.config.overwrite == "always" or not self.scores.has(sid):
            return False
        try:
            row, dist = self.scores.get(sid)
        except CorruptCacheFile as exc:
            logger.warning("damaged score cache file, recomputing: %s", exc)
            self.scores.discard(sid)
            return False
        self._keep(sid, row, dist)
        self.timings["n_from_cache"] += 1
        return True

    def _keep(self, sid: str, row: dict[str, Any], dist: np.ndarray | None) -> None:
        self.rows[sid] = row
        if dist is not None:
            self.distances[sid] = dist
        self.bar.update(1)

    def _scored(self, sid: str, row: dict[str, Any], dist: np.ndarray | None) -> None:
        if row["status"] != "skipped":
            self.scores.put(sid, row, dist)
        self._keep(sid, row, dist)

    def _cached_prediction(self, sid: str) -> Prediction | None:
        """The cached prediction of ``sid`` (counted), or None (a damaged file is dropped)."""
        if self.config.overwrite != "always" and self.preds.has(sid):
            try:
                pred = self.preds.get(sid)
                self.timings["n_from_cache"] += 1
                return pred
            except (CorruptCacheFile, ValueError) as exc:
                logger.warning("damaged prediction cache file, recomputing: %s", exc)
                self.preds.discard(sid)
        return None

    def _predictions(self, samples: dict[str, FaceSample]) -> dict[str, Prediction] | None:
        """Cached or fresh predictions for a batch; None if the method failed to load."""
        got: dict[str, Prediction] = {}
        need = []
        for sid in samples:
            pred = self._cached_prediction(sid)
            if pred is not None:
                got[sid] = pred
            else:
                need.append(sid)
        if not need:
            return got
        if self.config.overwrite == "only-cache":
            got.update({sid: Prediction.failed("skipped", "no cached prediction")
                        for sid in need})
            return got
        t0 = time.perf_counter()
        try:
            self.method.ensure_loaded(self.config.device)
        except Exception as exc:
            if self.config.raise_errors:
                raise
            logger.error("%s failed to load: %s", self.method.card.name, exc)
            self.load_error = f"failed to load: {type(exc).__name__}: {exc}"
            return None
        got.update(compute_predictions(self.method, samples, need, self.preds,
                                       self.config.raise_errors))
        self.timings["predict_seconds"] += time.perf_counter() - t0
        self.timings["n_predicted"] += len(need)
        return got

    def _previous_record(self) -> RunRecord | None:
        probe = RunRecord(method=self.method.card.name, dataset=self.dataset.card.name,
                          split=self.dataset.split, dataset_instance=self.instance)
        path = probe.folder(self.config.resolved_output_dir()) / "result.json"
        try:
            return RunRecord.from_disk(path) if path.is_file() else None
        except ValueError:
            return None

    def _record(self, ids: list[str]) -> RunRecord:
        method, dataset, config, params = self.method, self.dataset, self.config, self.params
        ordered = [self.rows[sid] for sid in ids]
        statuses = [r["status"] for r in ordered]
        digest = _rows_digest(ordered, config)
        previous = self._previous_record()
        if previous is not None and previous.params.get("rows_digest") == digest:
            # Same per-sample rows, same bootstrap: the aggregate is the same; skip the
            # bootstrap (the slowest part of a run served from cache).
            metrics, curve, conf = previous.metrics, previous.curves, previous.confusion
        else:
            table = ScoreTable(ordered, self.distances)
            metrics = {k: v.as_dict() for k, v in aggregate(
                table, n_boot=config.bootstrap, seed=config.seed).items()}
            curve, conf = curves(table), confusion(table)
        return RunRecord(
            method=method.card.name,
            dataset=dataset.card.name,
            split=dataset.split,
            status="ok",
            method_revision=self.mrev,
            dataset_revision=self.drev,
            method_card=_method_card_dict(method),
            dataset_card=_dataset_card_dict(dataset),
            n_samples=len(ordered),
            n_ok=statuses.count("ok"),
            n_no_face=statuses.count("no_face"),
            n_error=statuses.count("error"),
            metrics=metrics,
            curves=curve,
            confusion=conf,
            params={
                "closed_threshold": params.closed_threshold,
                "metrical": params.metrical,
                "bootstrap": config.bootstrap,
                "seed": config.seed,
                "limit": config.limit,
                "scoring_version": params.digest(),
                "rows_digest": digest,
            },
            provenance={**self.base, "checkpoints": method.checkpoint_hashes()},
            timings={k: round(float(v), 3) for k, v in self.timings.items()},
            failures=[
                {"sample_id": r["sample_id"], "status": r["status"], "error": r["error"]}
                for r in ordered if r["status"] != "ok"
            ][:20],
            dataset_instance=dict(self.instance),
            sample_set={"count": len(ids), "digest": sample_set_digest(ids),
                        "limit": config.limit},
            rows=ordered,
        )


def _rows_digest(rows: list[dict[str, Any]], config: RunConfig) -> str:
    """Identity of what the aggregate depends on: rows (minus timings) and bootstrap set-up."""
    import hashlib
    import json

    from benchmark.scoring import METRICS

    # the registered metrics too: a metric added to the registry must reach old records
    h = hashlib.sha256(f"{config.bootstrap}|{config.seed}|{M.__version__}|"
                       f"{','.join(METRICS.names())}".encode())
    for r in rows:
        h.update(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True,
                            default=str).encode())
    return h.hexdigest()[:16]


def compute_predictions(method: Method, samples: dict[str, FaceSample], need: list[str],
                        cache: PredictionCache, raise_errors: bool) -> dict[str, Prediction]:
    """Runs a loaded method on the samples ``need`` names and caches every prediction.

    Inputs are checked first (image decoded once, handed on decoded), so an unreadable image
    is an error row also for methods that ignore pixels. Shared by both executors.

    Args:
        method: a loaded method.
        samples: sample id -> sample (replaced in place by the checked sample).
        need: the ids to predict.
        cache: where each prediction is written (atomically) the moment it exists.
        raise_errors: let a failing sample's exception propagate.
    """
    got: dict[str, Prediction] = {}
    need = list(need)
    for sid in list(need):
        try:
            samples[sid] = checked_input(samples[sid])
        except SampleError as exc:
            if raise_errors:
                raise
            bad = Prediction.failed("error", str(exc))
            bad.extras["seconds"] = 0.0
            cache.put(sid, bad)
            got[sid] = bad
            need.remove(sid)
    new = _predict(method, [samples[s] for s in need], raise_errors) if need else []
    for sid, pred in zip(need, new):
        cache.put(sid, pred)
        got[sid] = pred
    return got


def _predict(method: Method, samples: list[FaceSample], raise_errors: bool) -> list[Prediction]:
    if raise_errors:
        preds = method.predict_batch(samples)
        for s, p in zip(samples, preds):
            if p.status == "error":
                raise RuntimeError(f"{method.card.name} failed on {s.id}: {p.error}")
        return preds
    return method.predict_safe(samples)


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
        "required_files": [f.description for f in c.required_files],
    }


def _dataset_card_dict(dataset: Dataset) -> dict[str, Any]:
    c = dataset.card
    return {
        "name": c.name,
        "description": c.description,
        "license": c.license,
        "card_file": c.card_file,
        "redistributable": c.redistributable,
        "gt_face_model": c.gt_face_model,
    }
