"""End-to-end runner behaviour on the tiny dataset: records, failures, resume, caches."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from benchmark.registry import UnknownNameError
from benchmark.results import RunRecord, load_records
from benchmark.runner import RunInterrupted, run
from tests.conftest import CountingMethod


def _records(summary) -> dict[str, RunRecord]:
    return {r.method: r for r in summary.records}


def _timing_free(metrics: dict) -> dict:
    """Metrics without wall-clock ones (which differ run to run)."""
    return {k: v for k, v in metrics.items() if k != "sec_per_image"}


def test_run_writes_records_for_ok_and_skipped_methods(tiny_registry, run_config):
    summary = run(run_config, show_progress=False)
    recs = _records(summary)
    assert set(recs) == {"counting", "mean-shape", "needs-file"}
    # Ground-truth meshes: perfect eye states and sub-millimetre scan error (scan noise 0.2 mm).
    c = recs["counting"]
    assert c.status == "ok" and c.n_ok == 6
    assert c.metric("eye_f1") == pytest.approx(1.0)
    assert c.metric("eye_acc") == pytest.approx(1.0)
    assert c.metric("s2m_median_mm") < 0.5
    ci = c.metrics["s2m_median_mm"]
    assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    # The mean shape never closes an eye: no closed predictions, F1 0, accuracy = share open.
    m = recs["mean-shape"]
    assert m.metric("eye_f1") == 0.0
    assert m.metric("eye_acc") == pytest.approx(0.5)
    assert m.metric("s2m_median_mm") > c.metric("s2m_median_mm")
    # Missing weights: skipped with reason and fix, never numbers.
    s = recs["needs-file"]
    assert s.status == "skipped" and not s.metrics
    assert "EYEBENCH_TEST_NEEDS_FILE" in s.fix
    # Records round-trip from disk with their per-sample rows.
    out = Path(run_config.output_dir)
    loaded = {r.method: r for r in load_records(out)}
    assert loaded["counting"].metrics == c.metrics
    back = RunRecord.from_disk(c.folder(out) / "result.json", with_rows=True)
    assert len(back.rows) == 6 and back.provenance["git_revision"]


def test_failures_are_data(tiny_registry, run_config):
    CountingMethod.fail_on = {"tiny_002"}
    cfg = dataclasses.replace(run_config, methods="counting")
    rec = _records(run(cfg, show_progress=False))["counting"]
    assert rec.n_error == 1 and rec.n_ok == 5
    assert rec.metric("coverage") == pytest.approx(5 / 6)
    assert rec.failures[0]["sample_id"] == "tiny_002"
    assert "boom on tiny_002" in rec.failures[0]["error"]


def test_interrupted_run_resumes_without_recomputing(tiny_registry, run_config):
    cfg = dataclasses.replace(run_config, methods="counting")
    CountingMethod.interrupt_on = {"tiny_003"}
    with pytest.raises(RunInterrupted):
        run(cfg, show_progress=False)
    assert CountingMethod.calls == ["tiny_000", "tiny_001", "tiny_002"]
    CountingMethod.interrupt_on = set()
    CountingMethod.calls = []
    rec = _records(run(cfg, show_progress=False))["counting"]
    assert CountingMethod.calls == ["tiny_003", "tiny_004", "tiny_005"]
    assert rec.n_ok == 6
    assert rec.timings["n_predicted"] == 3
    # A third run is served entirely from the score cache.
    CountingMethod.calls = []
    rec = _records(run(cfg, show_progress=False))["counting"]
    assert CountingMethod.calls == [] and rec.timings["n_from_cache"] == 6


def test_damaged_cache_files_are_recomputed(tiny_registry, run_config, caplog):
    caplog.set_level(logging.WARNING)  # an earlier CLI test may have set the root to ERROR
    cfg = dataclasses.replace(run_config, methods="counting")
    first = _records(run(cfg, show_progress=False))["counting"]
    cache = Path(cfg.cache_dir)
    pred_file = next(cache.glob("predictions/tiny/test/counting/*/tiny_001.npz"))
    pred_file.write_bytes(b"not a zip file")
    score_file = next(cache.glob("scores/tiny/test/counting/*/*/tiny_001.json"))
    score_file.write_text("{broken")
    CountingMethod.calls = []
    rec = _records(run(cfg, show_progress=False))["counting"]
    assert CountingMethod.calls == ["tiny_001"]
    assert _timing_free(rec.metrics) == _timing_free(first.metrics)
    assert "damaged" in caplog.text


def test_score_only_rescores_cache_with_new_threshold(tiny_registry, run_config):
    cfg = dataclasses.replace(run_config, methods="counting")
    run(cfg, show_progress=False)
    CountingMethod.calls = []
    cfg2 = dataclasses.replace(cfg, overwrite="only-cache", closed_threshold=1e-6)
    rec = _records(run(cfg2, show_progress=False))["counting"]
    assert CountingMethod.calls == []
    assert rec.params["closed_threshold"] == 1e-6
    assert rec.metric("eye_f1") == 0.0  # nothing is that closed


def test_only_cache_without_predictions_scores_nothing(tiny_registry, run_config):
    cfg = dataclasses.replace(run_config, methods="counting", overwrite="only-cache")
    summary = run(cfg, show_progress=False)
    # Nothing cached: no record is written, the pair is listed as failed with the command.
    assert CountingMethod.calls == [] and summary.records == []
    assert len(summary.failed) == 1
    assert "6 of 6 predictions are not cached" in summary.failed[0]
    assert "python -m benchmark run --methods counting --datasets tiny" in summary.failed[0]
    assert not list(Path(cfg.output_dir).glob("runs/*/*/result.json"))
    # --allow-fewer writes the (empty) record.
    rec = _records(run(dataclasses.replace(cfg, allow_fewer=True), show_progress=False))[
        "counting"]
    assert CountingMethod.calls == [] and rec.n_ok == 0


def test_unknown_names_suggest_close_matches(tiny_registry, run_config):
    with pytest.raises(UnknownNameError, match="mean-shape"):
        run(dataclasses.replace(run_config, methods="mean-shap"), show_progress=False)
    with pytest.raises(UnknownNameError, match="tiny"):
        run(dataclasses.replace(run_config, datasets="tinny"), show_progress=False)


def test_unwritable_output_dir_is_a_clear_error(tiny_registry, run_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        run(dataclasses.replace(run_config, output_dir=str(blocker / "out")), show_progress=False)


def test_limit_and_determinism(tiny_registry, run_config, tmp_path):
    cfg = dataclasses.replace(run_config, methods="counting", limit=4)
    a = _records(run(cfg, show_progress=False))["counting"]
    cfg2 = dataclasses.replace(cfg, output_dir=str(tmp_path / "o2"), cache_dir=str(tmp_path / "c2"))
    b = _records(run(cfg2, show_progress=False))["counting"]
    assert a.n_samples == 4
    assert json.dumps(_timing_free(a.metrics), sort_keys=True) == json.dumps(
        _timing_free(b.metrics), sort_keys=True)
    assert np.isfinite(a.metric("s2m_mean_mm"))


def test_worker_processes_score_the_same(tiny_registry, run_config, tmp_path):
    cfg = dataclasses.replace(run_config, methods="counting,mean-shape")
    inline = _records(run(cfg, show_progress=False))
    cfg2 = dataclasses.replace(cfg, workers=2, output_dir=str(tmp_path / "o2"),
                               cache_dir=str(tmp_path / "c2"))
    pooled = _records(run(cfg2, show_progress=False))
    for name in ("counting", "mean-shape"):
        assert _timing_free(pooled[name].metrics) == _timing_free(inline[name].metrics)
        strip = [json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True)
                 for r in inline[name].rows]
        assert strip == [json.dumps({k: v for k, v in r.items() if k != "seconds"},
                                    sort_keys=True) for r in pooled[name].rows]


def test_fast_pooled_statistics_match_exact_ones():
    from benchmark.scoring import ScoreTable, _pooled, _pooled_of_sums, _pooled_parts

    rng = np.random.default_rng(0)
    rows = [{"sample_id": f"s{i}", "subject": f"p{i // 3}", "status": "ok"} for i in range(30)]
    dist = {f"s{i}": np.abs(rng.normal(1, 1, 2000)) for i in range(30)}
    table = ScoreTable(rows, dist)
    for _ in range(5):
        sel = rng.integers(0, 30, 30)
        for stat in ("median_mm", "mean_mm", "std_mm"):
            fast = _pooled_of_sums(stat)(_pooled_parts(table, sel).sum(axis=0))
            assert fast == pytest.approx(_pooled(stat)(table, sel), abs=1e-3)


def test_samples_are_loaded_once_per_run_and_each_method_gets_its_own_meta(
        tiny_registry, run_config, monkeypatch):
    from tests.conftest import TinyDataset

    loads: list[str] = []
    original = TinyDataset.load_sample
    seen_meta: list[int] = []

    def counted(self, sample_id):
        loads.append(sample_id)
        return original(self, sample_id)

    def predict(self, sample):
        seen_meta.append(id(sample.meta))
        sample.meta["touched_by_a_method"] = True  # must not reach the next method
        return original_predict(self, sample)

    original_predict = CountingMethod.predict
    monkeypatch.setattr(TinyDataset, "load_sample", counted)
    monkeypatch.setattr(CountingMethod, "predict", predict)
    cfg = dataclasses.replace(run_config, methods="counting,mean-shape")
    summary = run(cfg, show_progress=False)
    assert all(r.status == "ok" for r in summary.records)
    assert sorted(loads) == sorted(set(loads)) and len(loads) == 6  # not once per method
    assert len(set(seen_meta)) == 6

    # beyond SAMPLES_KEPT the rest is loaded again by each method, nothing else changes
    import benchmark.runner as R

    loads.clear()
    monkeypatch.setattr(R, "SAMPLES_KEPT", 2)
    again = run(dataclasses.replace(cfg, overwrite="always"), show_progress=False)
    assert len(loads) == 2 + 2 * 4
    assert ([_timing_free(r.metrics) for r in again.records]
            == [_timing_free(r.metrics) for r in summary.records])


def test_metrics_of_sums_equal_their_compute_on_resampled_rows():
    """Every metric that bootstraps from per-row sums gives, on any resample of rows, the
    value its ``compute`` gives (counts exactly, float sums to rounding)."""
    from benchmark.scoring import METRICS, ScoreTable

    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        truth = rng.choice([-1, 0, 1], 2, p=[0.1, 0.45, 0.45])
        pred = np.where(rng.random(2) < 0.1, -1, rng.integers(0, 2, 2))
        row = {"sample_id": f"s{i}", "subject": f"p{i // 4}", "status": "ok",
               "image_true": int(truth[0]) if truth[0] == truth[1] else -1,
               "image_pred": int(pred[0]) if pred[0] == pred[1] else -1,
               "nme_2d": float(rng.random()), "eye_region_s2m_mm": float(rng.random())}
        for e in range(2):
            row.update({f"eye_true_{e}": int(truth[e]), f"eye_pred_{e}": int(pred[e]),
                        f"prob_closed_{e}": float(rng.random()),
                        f"openness_gt_{e}": float(rng.random()),
                        f"openness_pred_{e}": float(rng.random()) if i % 7 else None,
                        f"eye_region_{e}_mm": float(rng.random())})
        rows.append(row)
    dist = {f"s{i}": np.abs(rng.normal(1, 1, 500)) for i in range(0, 40, 3)}
    table = ScoreTable(rows, dist)
    specs = [s for _, s in METRICS.items() if s.sums is not None]
    assert {"eye_f1", "image_acc", "wink_acc", "openness_mae", "s2m_median_mm",
            "eye_region_closed_mm", "nme_2d"} <= {s.name for s in specs}
    for _ in range(20):
        idx = np.sort(rng.integers(0, 40, 40))
        for spec in specs:
            want = spec.compute(table, idx)
            got = float(spec.of_sums(spec.sums(table, idx).sum(axis=0)))
            if spec.name.startswith(("eye_", "image_", "wink")) and "region" not in spec.name:
                assert got == want or (np.isnan(got) and np.isnan(want)), spec.name
            elif spec.name == "s2m_median_mm":  # binned: within the 0.01 mm bin
                assert got == pytest.approx(want, abs=0.01), spec.name
            else:
                assert got == pytest.approx(want, rel=1e-12, nan_ok=True), spec.name


def test_paired_differences_from_sums_equal_the_replicate_loop(tmp_path):
    """The ablation's paired bootstrap draws both records' parts together: the same
    interval as differencing ``compute`` replicate by replicate."""
    from types import SimpleNamespace

    import metrics as M
    from benchmark.scoring import METRICS, ScoreTable
    from methods.elam_ldl.ablate import paired_differences

    rng = np.random.default_rng(4)

    def record(method, p_right):
        rows = []
        for i in range(60):
            truth = rng.integers(0, 2, 2)
            pred = np.where(rng.random(2) < p_right, truth, 1 - truth)
            rows.append({"sample_id": f"s{i}", "subject": f"p{i // 3}", "status": "ok",
                         **{f"eye_true_{e}": int(truth[e]) for e in range(2)},
                         **{f"eye_pred_{e}": int(pred[e]) for e in range(2)}})
        return SimpleNamespace(rows=rows, method=method, dataset="d", split="test",
                               method_revision="1", dataset_revision="1",
                               params={"scoring_version": "x"},
                               metrics={"eye_f1": {}, "eye_acc": {}})

    a, b = record("a", 0.9), record("b", 0.6)
    got = paired_differences(a, b, tmp_path, n_boot=200, seed=3, names=["eye_f1", "eye_acc"])
    ta, tb = ScoreTable(a.rows, {}), ScoreTable(b.rows, {})
    subjects = np.array([r["subject"] for r in a.rows])
    for name in ("eye_f1", "eye_acc"):
        spec = METRICS.get(name)
        loop = M.bootstrap_ci(None, subjects,
                              lambda idx, s=spec: s.compute(ta, idx) - s.compute(tb, idx),
                              n_boot=200, seed=3)
        assert (got[name]["ci_low"], got[name]["ci_high"]) == (loop.low, loop.high)
        assert got[name]["value"] == loop.estimate


def test_workers_score_predictions_on_a_topology_registered_elsewhere(
        tiny_registry, run_config, tmp_path, monkeypatch):
    """Scoring workers get a built-in topology by name, any other one whole: a topology a
    method's module registers (MediaPipe's) is unknown in a worker that never imported it."""
    from methods import topology as T

    ict = T.get_topology("ict-full")
    assert T.registered_name(ict) == "ict-full"
    copy = dataclasses.replace(ict, name="tests-only-copy")
    T.register_topology("tests-only-copy", lambda: copy)
    try:
        assert T.get_topology("tests-only-copy") is copy
        assert T.registered_name(copy) is None  # not rebuildable in a fresh worker

        def predict(self, sample):
            pred = original(self, sample)
            return dataclasses.replace(pred, topology=copy)

        original = CountingMethod.predict
        monkeypatch.setattr(CountingMethod, "predict", predict)
        cfg = dataclasses.replace(run_config, methods="counting", workers=1,
                                  output_dir=str(tmp_path / "w"), cache_dir=str(tmp_path / "c"))
        rec = run(cfg, show_progress=False).records[0]
        assert rec.status == "ok" and rec.n_ok == 6 and rec.n_error == 0
    finally:
        T._FACTORIES.pop("tests-only-copy", None)
        T._CACHE.pop("tests-only-copy", None)
