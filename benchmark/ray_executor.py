"""The Ray executor: prediction actors and scoring tasks on a running Ray cluster.

Room: distribution only. What is predicted, cached, scored and recorded is the runner's
business (:mod:`benchmark.runner`); this module decides *where* it runs. ``--executor ray``
selects it; ``ray`` is an optional extra (``pip install -e '.[ray]'``) imported only here.

Per (method, dataset) pair:

* the driver (the ``python -m benchmark run`` process) reads cached scores and predictions
  exactly as the local executor does;
* the samples still to predict go, in batches of ``--batch-size``, to ``--workers`` actors
  of the method (``num_cpus=1`` each, ``num_gpus=1`` with ``--device cuda``). An actor loads
  the method once, loads its samples from the dataset itself, predicts and writes every
  prediction into the prediction cache before returning it;
* every prediction is scored by a Ray task (``num_cpus=1``) that loads its sample's ground
  truth itself; the driver writes the score cache and builds the record.

The actors and tasks read the synthetic split, the landmark cache and write predictions
under the cache root, so on a multi-node cluster that root must be one shared folder (NFS,
a cluster file system) mounted at the same path on every node; each actor checks at start
that it exists and is writable and stops the run with one line naming the path and the node
otherwise. Nothing here starts a cluster: ``--ray-address auto`` joins the one running on
this machine (``ray start --head``), or the one ``ray.init`` already connected to in this
process (the tests), and a missing cluster is a one-line error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any

import numpy as np

from benchmark.cache import PredictionCache
from benchmark.config import RunConfig, default_cache_dir
from benchmark.datasets.base import Dataset, load_sample_or_error
from benchmark.scoring import ScoringParams
from benchmark.types import Prediction
from methods.base import Method

logger = logging.getLogger(__name__)

#: Batches queued per actor beyond the one it runs (keeps actors busy, bounds memory).
QUEUE_PER_ACTOR = 2

#: Scoring tasks in flight per prediction actor before the driver collects results.
SCORES_IN_FLIGHT = 8


class RayUnavailable(ValueError):
    """Ray is not installed, or there is no cluster to join (one line, with the fix)."""


class CacheUnreachable(ValueError):
    """A Ray worker cannot read or write the cache root (one line: path and node)."""


def check_cache_root(root: str) -> str:
    """Raises :class:`CacheUnreachable` unless ``root`` exists and is writable here.

    Returns:
        This node's host name (for logs).
    """
    node = socket.gethostname()
    probe = os.path.join(root, f".ray-write-test-{node}-{os.getpid()}")
    try:
        if not os.path.isdir(root):
            raise FileNotFoundError("no such folder")
        with open(probe, "w", encoding="utf-8") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise CacheUnreachable(
            f"cache root {root!r} is not reachable from Ray node {node} "
            f"({getattr(exc, 'strerror', None) or exc}); every node must see the same shared "
            f"folder at that path (mount it, or give --cache-dir/EYEBENCH_CACHE a shared "
            f"path).") from None
    return node


class _PredictActor:
    """One loaded method on one Ray worker (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, method: Method, device: str, env: dict[str, str]) -> None:
        os.environ.update(env)
        self.method, self.device = method, device

    def ready(self, roots: list[str]) -> str:
        """Checks the cache roots from this node; returns the node's name.

        Raises:
            CacheUnreachable: a root is missing or not writable here.
        """
        node = ""
        for root in roots:
            node = check_cache_root(root)
        return node

    def predict(self, dataset: Dataset, ids: list[str], cache_dir: str,
                raise_errors: bool) -> tuple[str, Any, float]:
        """Loads, predicts and caches ``ids``.

        Returns:
            ``("ok", {id: Prediction}, seconds)`` or ``("load_error", message, seconds)``.
        """
        from benchmark.runner import compute_predictions

        t0 = time.perf_counter()
        samples = {sid: load_sample_or_error(dataset, sid, raise_errors) for sid in ids}
        try:
            self.method.ensure_loaded(self.device)
        except Exception as exc:
            if raise_errors:
                raise
            return "load_error", f"failed to load: {type(exc).__name__}: {exc}", 0.0
        got = compute_predictions(self.method, samples, ids, PredictionCache(cache_dir),
                                  raise_errors)
        return "ok", got, time.perf_counter() - t0


def _score_task(dataset: Dataset, sid: str, pred: Prediction, params: ScoringParams,
                raise_errors: bool, env: dict[str, str]) -> tuple[dict[str, Any],
                                                                np.ndarray | None]:
    """Loads one sample's ground truth and scores a prediction (a Ray task)."""
    from benchmark.runner import _score_job

    # Set here rather than as a runtime_env: tasks then share Ray's pooled worker
    # processes (a runtime_env of its own makes Ray start, and kill, workers for it).
    os.environ.update(env)
    sample = load_sample_or_error(dataset, sid, raise_errors)
    light = dataclasses.replace(sample, image=np.zeros((1, 1, 3), np.uint8))
    return _score_job(light, pred, params, raise_errors)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: pip install -e '.[ray]' (or run with "
                             "--executor local).") from None
    return ray


class RayExecutor:
    """Runs a pair's predictions on Ray actors and its scoring as Ray tasks.

    Args:
        config: the run configuration (``ray_address``, ``workers`` = actors per method,
            ``batch_size``, ``device``, ``raise_errors``).
        params: scoring parameters.

    Raises:
        RayUnavailable: Ray missing, or no cluster at ``config.ray_address``.
    """

    name = "ray"

    def __init__(self, config: RunConfig, params: ScoringParams) -> None:
        ray = _import_ray()
        self.ray, self.config, self.params = ray, config, params
        if not ray.is_initialized():
            try:
                ray.init(address=config.ray_address, logging_level=logging.WARNING,
                         log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayUnavailable(
                    f"no Ray cluster to join at {config.ray_address!r} "
                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); start "
                    f"one (`ray start --head`) or give --ray-address; --executor ray never "
                    f"starts one.") from None
        self.cache_root = str(config.resolved_cache_dir().expanduser().resolve())
        # Synthetic data and landmarks live under $EYEBENCH_CACHE (or <project>/.cache):
        # workers get the driver's value, resolved, whatever their own environment says.
        self.env_root = str(default_cache_dir().expanduser().resolve())
        for root in {self.cache_root, self.env_root}:
            try:  # made here; on a shared file system the workers then see it
                os.makedirs(root, exist_ok=True)
            except OSError as exc:
                raise CacheUnreachable(f"cannot create the cache root {root!r} "
                                       f"({exc.strerror or exc}).") from None
        self._score = ray.remote(num_cpus=1, max_retries=1)(_score_task)
        self._actor_cls = ray.remote(_PredictActor)

    def _env(self, method: Method) -> dict[str, str]:
        env = {"EYEBENCH_CACHE": self.env_root}
        for spec in method.card.required_files:  # files given by environment variable
            if os.environ.get(spec.env):
                env[spec.env] = os.environ[spec.env]
        return env

    def _actors(self, method: Method) -> list[Any]:
        ray = self.ray
        opts: dict[str, Any] = {
            "num_cpus": 1,
            "num_gpus": 1 if self.config.device == "cuda" else 0,
            "max_restarts": 0,
        }
        roots = sorted({self.cache_root, self.env_root})
        actors = [self._actor_cls.options(**opts, name=f"eyebench-{method.card.name}-{i}-"
                                          f"{os.getpid()}")
                  .remote(method, self.config.device, self._env(method))
                  for i in range(max(1, self.config.workers))]
        try:
            nodes = ray.get([a.ready.remote(roots) for a in actors])
        except CacheUnreachable as exc:  # Ray's error is also an instance of the cause
            for a in actors:
                ray.kill(a)
            raise CacheUnreachable(str(getattr(exc, "cause", exc))) from None
        logger.info("%s: %d Ray actor(s) on %s", method.card.name, len(actors),
                    ", ".join(sorted(set(nodes))))
        return actors

    def predict_and_score(self, pair: Any, todo: list[str]) -> bool:
        """Predicts (or reads from cache) and scores ``todo``; False if the method failed to load.

        Raises:
            CacheUnreachable: an actor cannot use the cache root.
            ray.exceptions.RayActorError: an actor died (the run stops; what was predicted
                is cached and the next run resumes from it).
        """
        ray, config = self.ray, self.config
        dataset_ref = ray.put(pair.dataset)
        scoring: dict[Any, str] = {}

        def score(sid: str, pred: Prediction) -> None:
            ref = self._score.remote(dataset_ref, sid, pred, self.params, config.raise_errors,
                                     {"EYEBENCH_CACHE": self.env_root})
            scoring[ref] = sid
            if len(scoring) >= SCORES_IN_FLIGHT * max(1, config.workers):
                collect(wait_all=False)

        def collect(wait_all: bool) -> None:
            while scoring:
                ready, _ = ray.wait(list(scoring), num_returns=1)
                for ref in ready:
                    sid = scoring.pop(ref)
                    pair._scored(sid, *ray.get(ref))
                if not wait_all:
                    return

        need = []
        for sid in todo:
            pred = pair._cached_prediction(sid)
            if pred is not None:
                score(sid, pred)
            elif config.overwrite == "only-cache":
                score(sid, Prediction.failed("skipped", "no cached prediction"))
            else:
                need.append(sid)
        if need:
            size = pair.method.samples_per_call(config.batch_size)
            chunks = [need[i:i + size] for i in range(0, len(need), size)]
            actors = self._actors(pair.method)
            try:
                if not self._predict(pair, actors, chunks, dataset_ref, score):
                    return False
            finally:
                for a in actors:
                    ray.kill(a)
        collect(wait_all=True)
        return True

    def _predict(self, pair: Any, actors: list[Any], chunks: list[list[str]],
                 dataset_ref: Any, score: Any) -> bool:
        """Feeds batches to the actors; scores each prediction as it arrives."""
        ray, config = self.ray, self.config
        cache_dir = str(pair.preds.root)
        pending: dict[Any, tuple[Any, list[str]]] = {}
        queue = list(chunks)
        t0 = time.perf_counter()

        def feed(actor: Any) -> None:
            if queue:
                ids = queue.pop(0)
                ref = actor.predict.remote(dataset_ref, ids, cache_dir, config.raise_errors)
                pending[ref] = (actor, ids)

        for actor in actors:
            for _ in range(1 + QUEUE_PER_ACTOR):
                feed(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                actor, ids = pending.pop(ref)
                status, got, _seconds = ray.get(ref)
                if status == "load_error":
                    logger.error("%s failed to load: %s", pair.method.card.name, got)
                    pair.load_error = got
                    return False
                for sid in ids:
                    score(sid, got[sid])
                pair.timings["n_predicted"] += len(ids)
                feed(actor)
        pair.timings["predict_seconds"] += time.perf_counter() - t0
        return True

    def drain(self, wait_all: bool = True) -> None:
        """Nothing to wait for: a pair's scores are in when :meth:`predict_and_score` returns."""

    def close(self) -> None:
        """Nothing to stop: actors end with their pair, the cluster is the user's."""
