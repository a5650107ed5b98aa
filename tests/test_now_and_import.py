"""NoW loader on a tiny fixture in the official layout, and the ``import`` method."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.config import RunConfig
from benchmark.datasets.now import NowDataset
from benchmark.runner import run
from benchmark.types import NOW7_FROM_68
from methods.facemodel import load_ict
from methods.imported import ImportedMeshes, guess_unit


def write_pp(path: Path, points_mm: np.ndarray) -> None:
    """MeshLab picked-points file laid out as NoW's (points on lines 9-15)."""
    lines = ["<!DOCTYPE PickedPoints>", "<PickedPoints>", " <DocumentData>",
             '  <DateTime time="12:00:00" date="2019-01-01"/>', '  <User name="test"/>',
             '  <DataFileName name="scan.obj"/>', '  <templateName name=""/>', " </DocumentData>"]
    lines += [f' <point x="{x:.6f}" y="{y:.6f}" z="{z:.6f}" active="1" name="{i + 1}"/>'
              for i, (x, y, z) in enumerate(points_mm)]
    lines.append("</PickedPoints>")
    path.write_text("\n".join(lines) + "\n")


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    with open(path, "w") as fh:
        np.savetxt(fh, verts, fmt="v %.5f %.5f %.5f")
        np.savetxt(fh, faces + 1, fmt="f %d %d %d")


def make_now_root(root: Path) -> Path:
    """Two NoW subjects, three images, scans and .pp landmarks in millimetres, under ``root``."""
    full = load_ict("full")
    rng = np.random.default_rng(3)
    lines = []
    for s in range(2):
        subject = f"FaMoS_18042{s}_0000{s}_TA"
        verts_mm = full.vertices(rng.normal(size=30)) * 1000.0
        (root / "scans" / subject).mkdir(parents=True)
        (root / "scans_lmks_onlypp" / subject).mkdir(parents=True)
        write_obj(root / "scans" / subject / "natural_head_rotation.000001.obj", verts_mm,
                  full.faces)
        write_pp(root / "scans_lmks_onlypp" / subject / "natural_head_rotation.000001_picked"
                 "_points.pp", verts_mm[full.landmark_ids][list(NOW7_FROM_68)])
        for k, challenge in enumerate(("multiview_neutral", "selfie")[: 2 - s]):
            rel = f"{subject}/{challenge}/IMG_{k:04d}.jpg"
            img_path = root / "NoW_Dataset/final_release_version/iphone_pictures" / rel
            img_path.parent.mkdir(parents=True)
            Image.fromarray(np.full((32, 24, 3), 90, np.uint8)).save(img_path)
            lines.append(rel)
    (root / "imagepathsvalidation.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def now_root(tmp_path):
    """Two NoW subjects, three images, scans and .pp landmarks in millimetres."""
    return make_now_root(tmp_path / "NoW")


def test_now_loader_reads_official_layout(now_root):
    ds = NowDataset(root=now_root)
    assert ds.availability().ok
    ids = ds.sample_ids()
    assert ids == ["FaMoS_180420_00000_TA/multiview_neutral/IMG_0000",
                   "FaMoS_180420_00000_TA/selfie/IMG_0001",
                   "FaMoS_180421_00001_TA/multiview_neutral/IMG_0000"]
    s = ds.load_sample(ids[1])
    assert s.subject == "FaMoS_180420_00000_TA" and s.meta["challenge"] == "selfie"
    assert s.load_image().shape == (32, 24, 3)
    # millimetres in the files, metres in the sample
    extent = np.ptp(s.scan.points, axis=0).max()
    assert 0.1 < extent < 0.5
    assert s.scan.landmarks7.shape == (7, 3) and not s.scan.cropped
    assert len(ds.revision()) == 12


def test_now_without_root_or_with_wrong_layout_is_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("NOW_ROOT", raising=False)
    av = NowDataset().availability()
    assert not av.ok and "NOW_ROOT" in av.fix
    av = NowDataset(root=tmp_path).availability()
    assert not av.ok and "imagepathsvalidation.txt" in av.reason


def test_guess_unit():
    verts = load_ict("narrow").mean
    for unit, scale in (("m", 1), ("cm", 100), ("mm", 1000)):
        assert guess_unit(verts * scale) == unit
    with pytest.raises(ValueError, match="unit"):
        guess_unit(verts * 1e6)


def test_import_method_scores_like_the_mesh_it_reads(now_root, tmp_path):
    narrow = load_ict("narrow")
    ds = NowDataset(root=now_root)
    pred_root = tmp_path / "preds"
    for sid in ds.sample_ids():
        base = pred_root / sid
        base.parent.mkdir(parents=True, exist_ok=True)
        verts_mm = narrow.mean * 1000.0
        write_obj(base.with_suffix(".obj"), verts_mm, narrow.faces)
        np.save(base.with_suffix(".npy"), verts_mm[narrow.landmark_ids][list(NOW7_FROM_68)])
        np.save(base.with_name(base.name + "_lmk68.npy"), verts_mm[narrow.landmark_ids])
    cfg = RunConfig(methods="import,mean-shape", datasets="now",
                    output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                    bootstrap=20, dataset_options={"now": {"root": str(now_root)}},
                    method_options={"import": {"root": str(pred_root)}})
    recs = {r.method: r for r in run(cfg, show_progress=False).records}
    imp, mean = recs["import"], recs["mean-shape"]
    assert imp.status == "ok" and imp.n_ok == 3
    assert "eye_f1" not in imp.metrics  # NoW has no eye labels
    # The same mesh read from files (mm, landmarks placed barycentrically) scores the same.
    assert imp.metric("s2m_median_mm") == pytest.approx(mean.metric("s2m_median_mm"), abs=1e-3)
    # A missing prediction file is an error row naming the file, not a crash.
    next(pred_root.rglob("*.obj")).unlink()
    cfg2 = dataclasses.replace(cfg, methods="import", output_dir=str(tmp_path / "out2"),
                               cache_dir=str(tmp_path / "cache2"))
    rec = run(cfg2, show_progress=False).records[0]
    assert rec.n_error == 1 and "no mesh" in rec.failures[0]["error"]


def test_import_without_folder_is_skipped(monkeypatch):
    monkeypatch.delenv("EYEBENCH_IMPORT_ROOT", raising=False)
    av = ImportedMeshes().availability()
    assert not av.ok and "import.root" in av.fix
