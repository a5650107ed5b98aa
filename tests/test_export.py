"""``export``: cached predictions as OBJ/PLY and the NoW submission layout, read back by ``import``.

Round trips: the runner evaluates a method on a tiny synthetic set (``--limit 4``), the
export writes its meshes, the ``import`` method reads them back, and the per-sample scores
must be those of the original method.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main as cli_main
from benchmark.config import RunConfig
from benchmark.export import ExportError, export_predictions, mesh_to_export, ply_bytes
from benchmark.meshio import read_landmarks, read_mesh
from benchmark.runner import run
from benchmark.types import NOW7_FROM_68, Prediction
from methods.topology import get_topology
from tests.test_now_and_import import make_now_root

#: Per-sample columns a mesh file carries (2D NME needs a camera, seconds are timings).
SCORE_COLUMNS = ("status", "eye_pred_0", "eye_pred_1", "image_pred", "openness_pred_0",
                 "openness_pred_1", "s2m_median_mm", "s2m_mean_mm", "s2m_std_mm", "s2m_n_points")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """oracle and mean-shape evaluated on the first 4 synthetic test samples (own caches)."""
    tmp = tmp_path_factory.mktemp("export")
    opts = {"synthetic": {"n": "4", "workers": "1", "progress": "false",
                          "cache_dir": str(tmp / "synthetic")}}
    cfg = RunConfig(methods="oracle,mean-shape", datasets="synthetic", limit=4,
                    output_dir=str(tmp / "out"), cache_dir=str(tmp / "cache"), bootstrap=20,
                    workers=0, leaderboard=False, dataset_options=opts)
    summary = run(cfg, show_progress=False)
    assert not summary.failed
    return tmp, cfg, {r.method: r for r in summary.records}


def _import_rows(cfg: RunConfig, root, unit: str, out: str, datasets: str = "synthetic"):
    cfg2 = RunConfig(methods="import", datasets=datasets, limit=cfg.limit, output_dir=out,
                     cache_dir=cfg.cache_dir, bootstrap=20, workers=0, leaderboard=False,
                     dataset_options=cfg.dataset_options,
                     method_options={"import": {"root": str(root), "unit": unit}})
    summary = run(cfg2, show_progress=False)
    assert not summary.failed, summary.failed
    return pd.DataFrame(summary.records[0].rows)


def _assert_same_scores(a: pd.DataFrame, b: pd.DataFrame, columns=SCORE_COLUMNS) -> None:
    a, b = a.set_index("sample_id"), b.set_index("sample_id")
    assert list(a.index) == list(b.index)
    for col in columns:
        assert col in a and col in b, col
        if a[col].dtype.kind in "fi":
            assert a[col].notna().all(), col  # every column compared holds values
            np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float),
                                       rtol=1e-5, atol=1e-6, err_msg=col)
        else:
            assert list(a[col]) == list(b[col]), col
    region = [c for c in a.columns if c.startswith("eye_region") and c in b]
    for col in region:
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float),
                                   rtol=1e-4, atol=1e-5, err_msg=col)


def test_obj_export_reimports_with_the_same_scores(synthetic_run):
    tmp, cfg, recs = synthetic_run
    out = tmp / "obj"
    summary = export_predictions("oracle", "synthetic", out, "obj", limit=4,
                                 cache_dir=cfg.cache_dir,
                                 dataset_options=cfg.dataset_options["synthetic"], txt=True)
    assert summary.written == [f"test-{i:06d}" for i in range(4)] and not summary.skipped
    sid = summary.written[0]
    for name in (f"{sid}.obj", f"{sid}.npy", f"{sid}.txt", f"{sid}_lmk68.npy",
                 f"{sid}_lmk68.txt"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["unit"] == "m" and manifest["n_written"] == 4
    assert manifest["method_revision"] == recs["oracle"].method_revision
    # The OBJ holds the cached mesh exactly (float32 survives 9 significant digits).
    verts, faces = read_mesh(out / f"{sid}.obj")
    from benchmark.datasets.synthetic import SyntheticDataset

    gt = SyntheticDataset(**cfg.dataset_options["synthetic"]).load_sample(sid).gt_vertices
    assert np.array_equal(verts.astype(np.float32), gt)
    assert np.array_equal(faces, get_topology("ict-full").faces)
    np.testing.assert_array_equal(np.loadtxt(out / f"{sid}_lmk68.txt").astype(np.float32),
                                  np.load(out / f"{sid}_lmk68.npy").astype(np.float32))
    rows = _import_rows(cfg, out, "m", str(tmp / "imp_obj"))
    original = pd.DataFrame(recs["oracle"].rows)
    _assert_same_scores(original, rows)
    assert set(original["eye_pred_0"]) == {0, 1}  # both states occur: the check has teeth


def test_ply_export_in_mm_reimports_with_the_same_scores(synthetic_run):
    tmp, cfg, recs = synthetic_run
    out = tmp / "ply"
    export_predictions("mean-shape", "synthetic", out, "ply", limit=4, unit="mm",
                       cache_dir=cfg.cache_dir, dataset_options=cfg.dataset_options["synthetic"])
    sid = "test-000001"
    verts, _ = read_mesh(out / f"{sid}.ply")
    lmk7 = read_landmarks(out / f"{sid}.npy")
    assert 100 < np.linalg.norm(verts.max(0) - verts.min(0)) < 1000  # millimetres
    np.testing.assert_allclose(np.load(out / f"{sid}_lmk68.npy")[list(NOW7_FROM_68)], lmk7)
    rows = _import_rows(cfg, out, "mm", str(tmp / "imp_ply"))
    _assert_same_scores(pd.DataFrame(recs["mean-shape"].rows), rows)


def test_now_submission_layout_and_round_trip(tmp_path):
    now_root = make_now_root(tmp_path / "NoW")
    cfg = RunConfig(methods="mean-shape", datasets="now", output_dir=str(tmp_path / "out"),
                    cache_dir=str(tmp_path / "cache"), bootstrap=20, workers=0,
                    leaderboard=False, dataset_options={"now": {"root": str(now_root)}})
    summary = run(cfg, show_progress=False)
    assert not summary.failed
    original = pd.DataFrame(summary.records[0].rows)
    out = tmp_path / "submission"
    rc = cli_main(["export", "--method", "mean-shape", "--dataset", "now", "--format",
                   "now-submission", "--out", str(out), "--cache-dir", cfg.cache_dir,
                   "--dataset-option", f"now.root={now_root}"])
    assert rc == 0
    # NoW layout: <subject>/<challenge>/<image stem>.obj + .npy (7, 3), nothing else per image.
    images = (now_root / "imagepathsvalidation.txt").read_text().split()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted([f"{line[:-4]}{ext}" for line in images for ext in (".obj", ".npy")]
                      + ["export.json"])
    assert written == expected
    hint = json.loads((out / "export.json").read_text())["import_with"]
    assert f"import.root={out}" in hint and f"now.root={now_root}" in hint
    for line in images:
        obj = (out / f"{line[:-4]}.obj").read_text().splitlines()
        assert all(len(r.split()) == 4 for r in obj if r.startswith("v "))  # no colours
        lmk = np.load(out / f"{line[:-4]}.npy")
        assert lmk.shape == (7, 3)
    rows = _import_rows(cfg, out, "m", str(tmp_path / "imp"), datasets="now")
    _assert_same_scores(original, rows, ("status", "s2m_median_mm", "s2m_mean_mm",
                                         "s2m_std_mm", "s2m_n_points"))


def test_auto_mesh_is_the_neutral_one_for_neutral_scans():
    topo = get_topology("ict-narrow")
    rng = np.random.default_rng(0)
    posed = rng.normal(size=(topo.n_vertices_min, 3)).astype(np.float32)
    neutral = posed + 1.0
    pred = Prediction(status="ok", vertices=posed, topology=topo, neutral_vertices=neutral,
                      landmarks7=np.zeros((7, 3), np.float32))
    verts, lmk7, lmk68, kind = mesh_to_export(pred, neutral_scans=True, mesh="auto")
    assert kind == "neutral" and np.array_equal(verts, neutral)
    np.testing.assert_array_equal(lmk7, topo.landmarks(neutral)[list(NOW7_FROM_68)])
    verts, lmk7, _, kind = mesh_to_export(pred, neutral_scans=False, mesh="auto")
    assert kind == "posed" and np.array_equal(verts, posed) and not lmk7.any()
    with pytest.raises(ValueError, match="no neutral mesh"):
        mesh_to_export(Prediction(status="ok", vertices=posed, topology=topo), False, "neutral")


def test_missing_predictions_name_the_run_command(synthetic_run, tmp_path, capsys):
    _, cfg, _ = synthetic_run
    opts = cfg.dataset_options["synthetic"]
    with pytest.raises(ExportError, match=r"4 of 4 predictions .* not cached.*python -m "
                                          r"benchmark run --methods fit-landmarks"):
        export_predictions("fit-landmarks", "synthetic", tmp_path / "x", limit=4,
                           cache_dir=cfg.cache_dir, dataset_options=opts)
    assert not (tmp_path / "x").exists()  # nothing written
    argv = ["export", "--method", "mean-shape", "--out", str(tmp_path / "y"), "--limit", "4",
            "--cache-dir", str(tmp_path / "empty-cache")]
    argv += [a for k, v in opts.items() for a in ("--dataset-option", f"synthetic.{k}={v}")]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "not cached" in err and "--limit 4" in err and "--cache-dir" in err


def test_out_folder_is_never_clobbered(synthetic_run, tmp_path):
    _, cfg, _ = synthetic_run
    kw = {"limit": 2, "cache_dir": cfg.cache_dir,
          "dataset_options": cfg.dataset_options["synthetic"]}
    foreign = tmp_path / "mine" / "notes.txt"
    foreign.parent.mkdir()
    foreign.write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        export_predictions("oracle", "synthetic", foreign.parent, **kw)
    with pytest.raises(ValueError, match="not a previous export"):
        export_predictions("oracle", "synthetic", foreign.parent, overwrite=True, **kw)
    assert foreign.read_text() == "keep"
    out = tmp_path / "exp"
    export_predictions("oracle", "synthetic", out, "obj", **kw)
    (out / "extra.txt").write_text("user file")
    export_predictions("oracle", "synthetic", out, "ply", overwrite=True, **kw)
    assert not list(out.glob("*.obj")) and len(list(out.glob("*.ply"))) == 2
    assert (out / "extra.txt").read_text() == "user file"


def test_ply_is_read_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    verts = rng.normal(size=(50, 3))
    faces = rng.integers(0, 50, size=(30, 3))
    (tmp_path / "m.ply").write_bytes(ply_bytes(verts, faces))
    v2, f2 = read_mesh(tmp_path / "m.ply")
    assert np.array_equal(v2, verts) and np.array_equal(f2, faces)


def test_now_test_split_images_only_gives_a_submission(tmp_path):
    from PIL import Image

    now_root = make_now_root(tmp_path / "NoW")
    images = now_root / "NoW_Dataset/final_release_version/iphone_pictures"
    rels = ["FaMoS_test_subject/multiview_expressions/IMG_0100.jpg",
            "FaMoS_test_subject/selfie/IMG_0101.jpg"]
    for rel in rels:  # a test subject: images, no scan
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 24, 3), 90, np.uint8)).save(images / rel)
    (now_root / "imagepathstest.txt").write_text("\n".join(rels) + "\n")
    cfg = RunConfig(methods="mean-shape", datasets="now", split="test",
                    output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                    bootstrap=20, workers=0, leaderboard=False,
                    dataset_options={"now": {"root": str(now_root)}})
    summary = run(cfg, show_progress=False)
    assert not summary.failed and summary.records[0].n_ok == 2
    assert "s2m_median_mm" not in summary.records[0].rows[0]  # no scans in the test split
    out = tmp_path / "submission"
    export_predictions("mean-shape", "now", out, "now-submission", split="test",
                       cache_dir=cfg.cache_dir, dataset_options={"root": str(now_root)})
    for rel in rels:
        assert (out / f"{rel[:-4]}.obj").is_file()
        assert np.load(out / f"{rel[:-4]}.npy").shape == (7, 3)
