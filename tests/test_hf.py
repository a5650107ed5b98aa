"""Hugging Face ``datasets`` glue: the synthetic split as an HF dataset (three forms, read back
offline), ``photo-folder`` on an HF ``imagefolder`` with its metadata file, and per-sample
results as CSV and an HF dataset beside ``samples.parquet``.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.cli import main as cli_main
from benchmark.datasets.photo_folder import PhotoFolderDataset
from benchmark.datasets.synthetic import SyntheticDataset
from benchmark.results import SAMPLES_CSV, SAMPLES_FILE, SAMPLES_HF, RunRecord


@pytest.fixture()
def offline(monkeypatch):
    """``datasets`` in offline mode, and any network connection fails the test."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(self, address, *args, **kwargs):
        if getattr(self, "family", None) in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access to {address!r} during an offline test")
        return real_connect(self, address, *args, **kwargs)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return datasets


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The first 4 synthetic test samples, generated into a temporary cache."""
    tmp = tmp_path_factory.mktemp("hf")
    opts = {"n": "4", "workers": "1", "progress": "false", "cache_dir": str(tmp / "synthetic")}
    ds = SyntheticDataset(**opts)
    ds.prepare()
    return tmp, opts, ds


def _same_sample(a, b) -> None:
    assert (a.id, a.subject, a.image_state, a.gt_topology) == (
        b.id, b.subject, b.image_state, b.gt_topology)
    assert np.array_equal(a.load_image(), b.load_image())
    assert np.array_equal(a.eye_state, b.eye_state)
    np.testing.assert_array_equal(a.eye_openness, b.eye_openness)
    for field in ("landmarks2d", "gt_vertices"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.array_equal(a.scan.points, b.scan.points)
    assert np.array_equal(a.scan.landmarks7, b.scan.landmarks7)
    assert a.scan.cropped == b.scan.cropped
    assert a.meta["eye_category"] == b.meta["eye_category"]


def _export(tmp, opts, fmt):
    out = tmp / fmt
    argv = ["export-dataset", "--format", fmt, "--out", str(out)]
    argv += [a for k, v in opts.items() for a in ("--dataset-option", f"synthetic.{k}={v}")]
    assert cli_main(argv) == 0
    return out


def test_synthetic_split_round_trips_through_save_to_disk(offline, synth):
    from benchmark.hf import samples_from_hf

    tmp, opts, ds = synth
    table = offline.load_from_disk(str(_export(tmp, opts, "arrow")))
    assert table.num_rows == 4
    assert table.features["gt_vertices"].shape == (None, 3)
    assert table.features["landmarks2d"].shape == (68, 2)
    for got in samples_from_hf(table):
        _same_sample(ds.load_sample(got.id), got)
    # numpy format for training loops: arrays come out with their shapes
    row = table.with_format("numpy")[3]
    assert row["gt_vertices"].shape == (9409, 3) and row["eye_state"].tolist() == [0, 1]


def test_synthetic_split_as_parquet_loads_with_load_dataset(offline, synth):
    from benchmark.hf import samples_from_hf

    tmp, opts, ds = synth
    out = _export(tmp, opts, "parquet")
    table = offline.load_dataset(str(out), split="test", cache_dir=str(tmp / "hf-cache"))
    assert [s.id for s in samples_from_hf(table)] == ds.sample_ids()
    for got in samples_from_hf(table):
        _same_sample(ds.load_sample(got.id), got)


def test_imagefolder_export_loads_in_hf_and_in_photo_folder(offline, synth, capsys):
    tmp, opts, ds = synth
    out = _export(tmp, opts, "imagefolder")
    table = offline.load_dataset("imagefolder", data_dir=str(out),
                                 cache_dir=str(tmp / "hf-cache-if"))["test"]
    assert table.num_rows == 4
    photos = PhotoFolderDataset(root=out)
    assert photos.availability().ok
    assert photos.sample_ids() == [f"test--{sid}.png" for sid in ds.sample_ids()]
    for row, pid in zip(table, photos.sample_ids()):
        orig = ds.load_sample(row["id"])
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), orig.load_image())
        got = photos.load_sample(pid)
        assert got.eye_state.tolist() == orig.eye_state.tolist()
        assert got.subject == orig.subject
        np.testing.assert_allclose(row["landmarks2d"], orig.landmarks2d)
        from benchmark.meshio import read_mesh

        verts, _ = read_mesh(out / "test" / row["gt_mesh"])
        assert np.array_equal(verts.astype(np.float32), orig.gt_vertices)
        assert np.array_equal(np.load(out / "test" / row["scan"]), orig.scan.points)
    # winks and half-closed eyes keep their per-eye labels
    assert [s.tolist() for s in (photos.load_sample(p).eye_state
                                 for p in photos.sample_ids())] == [
        ds.load_sample(s).eye_state.tolist() for s in ds.sample_ids()]
    assert cli_main(["export-dataset", "--format", "imagefolder", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err  # an existing export is never clobbered


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(path)


def test_photo_folder_reads_imagefolder_metadata(tmp_path):
    root = tmp_path / "if"
    for name in ("a.png", "b.png", "sub/c.png"):
        _image(root / "test" / name)
    lines = [{"file_name": "a.png", "right_eye": "closed", "left_eye": 0, "subject": "p1",
              "caption": "ignored"},
             {"file_name": "b.png", "right_eye": 1, "left_eye": 1, "subject": 7},
             {"file_name": "sub/c.png", "right_eye": None, "left_eye": "open"}]
    (root / "test" / "metadata.jsonl").write_text(
        "\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = PhotoFolderDataset(root=root)
    assert ds.availability().ok
    assert ds.sample_ids() == ["test--a.png", "test--b.png", "test--sub--c.png"]
    got = [ds.load_sample(s) for s in ds.sample_ids()]
    assert [g.eye_state.tolist() for g in got] == [[1, 0], [1, 1], [-1, 0]]
    assert [g.subject for g in got] == ["p1", "7", "test--sub--c.png"]
    assert [g.image_state for g in got] == [0, 1, -1]
    assert got[0].load_image().shape == (16, 16, 3)
    # a CSV metadata file at the root, one label per image
    root2 = tmp_path / "csv"
    _image(root2 / "x.jpg")
    (root2 / "metadata.csv").write_text("file_name,label\nx.jpg,closed\n")
    ds2 = PhotoFolderDataset(root=root2)
    assert ds2.load_sample("x.jpg").eye_state.tolist() == [1, 1]


@pytest.mark.parametrize("content, match", [
    ('{"file_name": "a.png", "label": "open"}\n{"file_name": "b.png", "label": "closd"}\n',
     r"metadata.jsonl:2: unknown eye label 'closd'"),
    ('{"file_name": "a.png", "label": "open"}\n\n{"file_name": "b.png", "label": 0.5}\n',
     r"metadata.jsonl:3: 0.5 is not an eye label"),
    ('{"file_name": "a.png", "label": "open"}\nnot json\n', r"metadata.jsonl:2: not valid JSON"),
    ('{"file_name": "a.png", "label": "open"}\n[1, 2]\n', r"metadata.jsonl:2: each line"),
    ('{"file_name": "../a.png", "label": "open"}\n', r"metadata.jsonl:1: .* outside"),
    ('{"file_name": 3, "label": "open"}\n', r"metadata.jsonl:1: 'file_name' must be a string"),
    ('{"file": "a.png", "label": "open"}\n', r"has no 'file_name' column"),
    ('{"file_name": "a.png", "caption": "x"}\n', r"needs a 'label' column"),
    ('{"file_name": "a.png", "label": 1}\n{"file_name": "a.png", "label": 0}\n',
     r"metadata.jsonl:2: 'a.png' is listed twice"),
])
def test_bad_metadata_rows_name_file_and_line(tmp_path, content, match):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    (tmp_path / "metadata.jsonl").write_text(content)
    avail = PhotoFolderDataset(root=tmp_path).availability()
    assert not avail.ok
    assert pytest.raises(ValueError, _raise, avail.reason).match(match)


def _raise(reason: str) -> None:
    raise ValueError(reason)


def test_metadata_layout_precedence(tmp_path):
    _image(tmp_path / "closed" / "a.png")
    (tmp_path / "metadata.csv").write_text("file_name,label\nclosed/a.png,open\n")
    assert PhotoFolderDataset(root=tmp_path).load_sample("closed--a.png").eye_state.tolist() \
        == [0, 0]  # metadata wins over the folder name
    (tmp_path / "labels.csv").write_text("file,label\nclosed/a.png,half\n")
    assert PhotoFolderDataset(root=tmp_path).load_sample("closed--a.png").eye_state.tolist() \
        == [-1, -1]  # labels.csv wins over metadata
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "closed/a.png", "label": 1}\n')
    avail = PhotoFolderDataset(root=tmp_path).availability()
    assert not avail.ok and "both metadata.csv and metadata.jsonl" in avail.reason


def test_results_rows_as_csv_and_hf_dataset(offline, tiny_registry, run_config, tmp_path):
    from benchmark.runner import run

    summary = run(run_config, show_progress=False)
    rec = next(r for r in summary.records if r.method == "counting")
    folder = rec.folder(run_config.output_dir)
    parquet = pd.read_parquet(folder / SAMPLES_FILE)
    assert len(parquet) == 6 and parquet["s2m_median_mm"].notna().all()
    csv = pd.read_csv(folder / SAMPLES_CSV, keep_default_na=False, na_values=[""])
    hf = offline.load_from_disk(str(folder / SAMPLES_HF)).to_pandas()
    for other in (csv, hf):
        assert list(other.columns) == list(parquet.columns)
        for col in parquet.columns:
            a, b = parquet[col], other[col]
            if a.dtype.kind in "fiub":
                np.testing.assert_array_equal(a.to_numpy(float), b.to_numpy(float), col)
            else:
                assert [_text(x) for x in a] == [_text(x) for x in b], col
    # the same rows give byte-identical files (shareable, diffable)
    before = {p.name: p.read_bytes() for p in (folder / SAMPLES_HF).iterdir()}
    before[SAMPLES_CSV] = (folder / SAMPLES_CSV).read_bytes()
    RunRecord.from_disk(folder / "result.json", with_rows=True).to_disk(run_config.output_dir)
    after = {p.name: p.read_bytes() for p in (folder / SAMPLES_HF).iterdir()}
    after[SAMPLES_CSV] = (folder / SAMPLES_CSV).read_bytes()
    assert after == before
    # a record without rows leaves no stale row files behind
    RunRecord.from_disk(folder / "result.json").to_disk(run_config.output_dir)
    assert not any((folder / n).exists() for n in (SAMPLES_FILE, SAMPLES_CSV, SAMPLES_HF))


def _text(value) -> str:
    return "" if pd.isna(value) else str(value)


def test_results_without_datasets_write_csv_only(tiny_registry, run_config, monkeypatch):
    import sys

    from benchmark.runner import run

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    rec = next(r for r in run(run_config, show_progress=False).records
               if r.method == "counting")
    folder = rec.folder(run_config.output_dir)
    assert (folder / SAMPLES_CSV).is_file() and not (folder / SAMPLES_HF).exists()
    assert len(pd.read_csv(folder / SAMPLES_CSV)) == len(pd.read_parquet(folder / SAMPLES_FILE))
