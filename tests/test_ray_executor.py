"""The Ray executor on a local Ray cluster started by the test (marker ``ray``).

Same records as the local executor on a small synthetic run, resume after a killed actor,
a clear error when no cluster or no cache root is reachable. Needs the ``ray`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from benchmark.config import RunConfig  # noqa: E402
from benchmark.ray_executor import CacheUnreachable, RayExecutor, RayUnavailable  # noqa: E402
from benchmark.runner import run  # noqa: E402
from benchmark.scoring import ScoringParams  # noqa: E402

pytestmark = pytest.mark.ray

N = 6


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """A six-sample synthetic split shared by every run of this module."""
    from benchmark.datasets.synthetic import SyntheticDataset

    root = tmp_path_factory.mktemp("synthetic")
    SyntheticDataset(split="test", n=str(N), cache_dir=str(root), progress="false").prepare()
    return root


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _config(tmp: Path, synthetic_root: Path, **kw) -> RunConfig:
    base = dict(methods="mean-shape,fit-landmarks", datasets="synthetic", limit=N,
                cache_dir=str(tmp / "cache"), output_dir=str(tmp / "out"), bootstrap=50,
                leaderboard=False, workers=1, batch_size=2,
                dataset_options={"synthetic": {"n": str(N), "cache_dir": str(synthetic_root),
                                               "progress": "false"}})
    base.update(kw)
    return RunConfig(**base)


def _isolated_run(tmp: Path, cfg: RunConfig, monkeypatch):
    """A run whose landmark cache ($EYEBENCH_CACHE) is its own, so nothing is shared."""
    monkeypatch.setenv("EYEBENCH_CACHE", str(tmp / "env-cache"))
    (tmp / "env-cache").mkdir(parents=True, exist_ok=True)
    return run(cfg, show_progress=False)


def _predictions(root: Path) -> list[Path]:
    """Cached prediction files (one per sample; the shared topology file aside)."""
    return [p for p in root.rglob("*.npz") if not p.name.startswith("topology-")]


def _comparable(path: Path) -> dict:
    """result.json and the per-sample rows minus timings, date and executor."""
    import pandas as pd

    rec = json.loads((path / "result.json").read_text())
    rec.pop("timings", None)
    rec["metrics"].pop("sec_per_image", None)  # a timing, like the rows' seconds
    rec["provenance"].pop("date", None)
    rec["provenance"].pop("executor", None)
    rows = pd.read_parquet(path / "samples.parquet").drop(columns=["seconds"], errors="ignore")
    return {"record": rec, "rows": rows.to_dict("records")}


def _differences(a, b, where: str = "") -> list[str]:
    """Paths at which two JSON-like values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in _differences(x, y, f"{where}[{i}]")]
    same = a == b or (a != a and b != b)  # NaN equals NaN here
    return [] if same else [f"{where}: {a!r} != {b!r}"]


def test_no_cluster_is_a_clear_error(tmp_path, synthetic_root, monkeypatch):
    if ray.is_initialized():
        pytest.skip("a cluster is connected in this process")
    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = _config(tmp_path, synthetic_root, executor="ray", ray_address="auto")
    with pytest.raises(RayUnavailable, match="never starts one"):
        RayExecutor(cfg, ScoringParams(closed_threshold=0.18))


def test_yaml_ray_address(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("executor: ray\nray:\n  address: auto\n")
    cfg = RunConfig.from_yaml(path)
    assert (cfg.executor, cfg.ray_address) == ("ray", "auto")
    assert dataclasses.replace(cfg, executor="local").executor == "local"
    path.write_text("ray:\n  port: 1\n")
    with pytest.raises(ValueError, match="only 'address'"):
        RunConfig.from_yaml(path)


def test_ray_run_gives_the_local_record(cluster, synthetic_root, tmp_path, monkeypatch):
    local = _isolated_run(tmp_path / "local", _config(tmp_path / "local", synthetic_root,
                                                       workers=0), monkeypatch)
    remote = _isolated_run(tmp_path / "ray", _config(tmp_path / "ray", synthetic_root,
                                                     executor="ray"), monkeypatch)
    assert not local.failed and not remote.failed
    assert [r.method for r in remote.records] == ["mean-shape", "fit-landmarks"]
    for lrec, rrec in zip(local.records, remote.records):
        assert lrec.provenance["executor"] == "local" and rrec.provenance["executor"] == "ray"
        assert rrec.timings["n_predicted"] == N
        a = _comparable(lrec.folder(tmp_path / "local" / "out"))
        b = _comparable(rrec.folder(tmp_path / "ray" / "out"))
        assert _differences(a, b) == []
    # The Ray actors wrote the predictions and landmarks where the driver said.
    assert len(_predictions(tmp_path / "ray" / "cache" / "predictions")) == 2 * N
    assert list((tmp_path / "ray" / "env-cache" / "landmarks").rglob("*.npz"))


def test_killed_actor_then_rerun_resumes_from_cache(cluster, synthetic_root, tmp_path,
                                                    monkeypatch):
    cfg = _config(tmp_path, synthetic_root, methods="fit-landmarks", executor="ray",
                  batch_size=1)
    preds = tmp_path / "cache" / "predictions"
    outcome: dict = {}

    def target():
        try:
            outcome["summary"] = _isolated_run(tmp_path, cfg, monkeypatch)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 300
    while len(_predictions(preds)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    names = [n for n in ray.util.list_named_actors() if n.startswith("eyebench-fit-landmarks")]
    assert names, "no prediction actor found"
    ray.kill(ray.get_actor(names[0]))
    thread.join(300)
    assert isinstance(outcome.get("error"), ray.exceptions.RayActorError), outcome
    before = {p: p.stat().st_mtime_ns for p in _predictions(preds)}
    assert 2 <= len(before) < N, "the actor was killed too late to test a resume"

    summary = _isolated_run(tmp_path, cfg, monkeypatch)
    (record,) = summary.records
    assert record.status == "ok" and record.n_samples == N
    assert record.timings["n_predicted"] == N - len(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing cached recomputed
    assert len(_predictions(preds)) == N


def test_unreachable_cache_root_is_one_line(cluster, synthetic_root, tmp_path, monkeypatch):
    cfg = _config(tmp_path, synthetic_root, methods="mean-shape", executor="ray")
    executor = RayExecutor(cfg, ScoringParams(closed_threshold=0.18))
    executor.cache_root = str(tmp_path / "not-mounted")
    from methods import METHODS

    with pytest.raises(CacheUnreachable) as info:
        executor._actors(METHODS.get("mean-shape")())
    msg = str(info.value)
    assert "not-mounted" in msg and "Ray node" in msg and "\n" not in msg
