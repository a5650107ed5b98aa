"""Performance of the NoW scan-to-mesh evaluation (pytest-benchmark; not part of the suite).

Run (2 cores)::

    python -m pytest tests/benchmarks/bench_scan_to_mesh.py --benchmark-enable \
        -p no:randomly --benchmark-columns=min,median,max,rounds

Cases come from ``tests/test_metrics_now.py::make_now_case``: an ICT full-head identity
sampled as a scan (noise 0.1 mm, cropped with the NoW sphere, all ``n_scan`` points scored)
against another identity's ICT mesh (``region="full"``: 9409 vertices / 18460 triangles;
one midpoint subdivision: 37280 / 73840, the "35k / 70k" case), posed by a random
similarity. Each timed call is the whole protocol: crop, landmark Umeyama, refinement,
final distances, including building the BVH.

The brute-force reference cannot run the full case in reasonable time (every query is
O(points x triangles)): ``test_brute_force_ratio`` counts the point queries the fast path
makes on the full case, times the brute-force backend per point query on the full mesh,
and extrapolates; it also runs the complete brute-force pipeline on a reduced scan to show
the two backends agree. Numbers go to ``benchmark.extra_info`` (``--benchmark-json``).

``test_backend_cpu_ratio`` times the whole protocol with the default ``bvh`` search and with
open3d's Embree search (one thread, so CPU time is comparable), interleaved in one process,
and reports the CPU-time ratio.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

import numpy as np
import pytest

from metrics import now_scan_to_mesh
from metrics.distance import MeshSurface
from tests.test_metrics_now import make_now_case

logger = logging.getLogger(__name__)

pytest.importorskip("open3d")

N_THREADS = 2
GRID = list(itertools.product([10_000, 100_000], [0, 1]))  # (scan points, subdivisions)
_CASES: dict[tuple[int, int], dict] = {}


def case(n_scan: int, subdivide: int) -> dict:
    key = (n_scan, subdivide)
    if key not in _CASES:
        _CASES[key] = make_now_case(n_scan=n_scan, region="full", subdivide=subdivide, seed=1)
    return _CASES[key]


@pytest.mark.parametrize(("n_scan", "subdivide"), GRID)
def test_now_fast_path(benchmark, n_scan, subdivide):
    c = case(n_scan, subdivide)
    benchmark.extra_info.update(
        n_scan=n_scan, n_vertices=len(c["pred_vertices"]), n_faces=len(c["pred_faces"]),
        n_threads=N_THREADS, load_avg_1min=float(os.getloadavg()[0]),
    )
    res = benchmark.pedantic(
        now_scan_to_mesh, kwargs=dict(c, n_threads=N_THREADS), rounds=5, warmup_rounds=1
    )
    assert res.converged and res.n_points == n_scan
    benchmark.extra_info.update(median_mm=res.median_mm, n_iter=res.n_iter)


def _timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


@pytest.mark.slow
def test_brute_force_ratio(benchmark, monkeypatch):
    c = case(100_000, 1)
    # 1) fast path on the full case, counting the points it queries
    fast_s, res = _timed(lambda: now_scan_to_mesh(**c, n_threads=N_THREADS), repeat=5)
    cpu0 = time.process_time()
    now_scan_to_mesh(**c, n_threads=1)
    fast_cpu_1thread_s = time.process_time() - cpu0
    queried = []
    orig = MeshSurface.query_tracked  # what the alignment calls

    def counting(self, points, state=None):
        queried.append(len(points))
        return orig(self, points, state)

    monkeypatch.setattr(MeshSurface, "query_tracked", counting)
    now_scan_to_mesh(**c, n_threads=N_THREADS)
    monkeypatch.setattr(MeshSurface, "query_tracked", orig)
    n_queried = int(sum(queried))
    # 2) brute force per point query on the same 73840-triangle mesh
    aligned = res.transform.apply(c["pred_vertices"])
    brute = MeshSurface(aligned, c["pred_faces"], backend="brute")
    probe = c["scan_points"][:: len(c["scan_points"]) // 400][:400]
    brute_s, _ = _timed(lambda: brute.query(probe))
    per_point = brute_s / len(probe)
    brute_full_s = per_point * n_queried
    ratio = brute_full_s / fast_s
    # 3) the complete brute-force pipeline on a reduced scan, against the fast one
    small = dict(c, scan_points=c["scan_points"][::500], n_sample=None)
    small_brute_s, rb = _timed(lambda: now_scan_to_mesh(**small, backend="brute"))
    small_fast_s, rf = _timed(lambda: now_scan_to_mesh(**small, n_threads=N_THREADS), repeat=3)
    np.testing.assert_allclose(rb.distances_mm, rf.distances_mm, atol=1e-4)
    info = {
        "load_avg_1min": float(os.getloadavg()[0]),
        "fast_s": fast_s,
        "fast_cpu_1thread_s": fast_cpu_1thread_s,
        "fast_point_queries": n_queried,
        "fast_n_iter": res.n_iter,
        "brute_s_per_point_query": per_point,
        "brute_full_case_s_extrapolated": brute_full_s,
        "ratio_brute_over_fast": ratio,
        "reduced_case_points": len(small["scan_points"]),
        "reduced_brute_s": small_brute_s,
        "reduced_fast_s": small_fast_s,
        "reduced_ratio": small_brute_s / small_fast_s,
    }
    benchmark.extra_info.update(info)
    logger.warning("scan-to-mesh timings: %s", {k: round(v, 6) for k, v in info.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    assert ratio > 1


@pytest.mark.parametrize(("n_scan", "subdivide"), [(10_000, 0), (10_000, 1)])
def test_backend_cpu_ratio(benchmark, n_scan, subdivide):
    c = case(n_scan, subdivide)
    cpu = {"bvh": [], "open3d": []}
    out = {}
    for _ in range(3):  # interleaved, best of 3 each
        for backend in cpu:
            t = time.process_time()
            out[backend] = now_scan_to_mesh(**c, backend=backend, n_threads=1)
            cpu[backend].append(time.process_time() - t)
    best = {k: min(v) for k, v in cpu.items()}
    info = {
        "n_faces": len(c["pred_faces"]),
        "bvh_cpu_s": best["bvh"],
        "open3d_cpu_s": best["open3d"],
        "ratio_open3d_over_bvh": best["open3d"] / best["bvh"],
        "median_mm": [out["bvh"].median_mm, out["open3d"].median_mm],
    }
    benchmark.extra_info.update(info)
    logger.warning("backend CPU: %s", info)
    benchmark.pedantic(lambda: None, rounds=1)
    assert abs(out["bvh"].median_mm - out["open3d"].median_mm) < 1e-3
