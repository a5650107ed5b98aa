"""Bad inputs in, one clear line naming the file out, the run goes on, nothing is lost.

Unreadable images (through a method that never reads them), EXIF-rotated phone photos,
over-size images, NoW subjects without (or with a malformed) scan, label typos, paths that
leave their root, and the permissions of the files the suite writes.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.cache import atomic_write_bytes, file_mode
from benchmark.config import RunConfig
from benchmark.datasets.base import (
    LOAD_ERROR,
    SampleError,
    checked_input,
    load_sample_or_error,
    relative_path,
)
from benchmark.datasets.images import ImageError, read_image
from benchmark.datasets.now import NowDataset
from benchmark.datasets.photo_folder import PhotoFolderDataset
from benchmark.runner import run
from benchmark.types import FaceSample
from methods.imported import ImportedMeshes
from tests.test_now_and_import import make_now_root


def _jpeg(path: Path, arr: np.ndarray | None = None, orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.full((30, 40, 3), 120, np.uint8) if arr is None else arr)
    if orientation is None:
        im.save(path, quality=95)
    else:
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(path, quality=95, exif=exif.tobytes())


def _config(tmp_path: Path, **kw) -> RunConfig:
    base = dict(methods="mean-shape", output_dir=str(tmp_path / "out"),
                cache_dir=str(tmp_path / "cache"), bootstrap=20, workers=0)
    base.update(kw)
    return RunConfig(**base)


def _rows(record) -> dict[str, dict]:
    return {r["sample_id"]: r for r in record.rows}


# -- unreadable images are error rows for every method ------------------------------------
@pytest.fixture()
def damaged_folder(tmp_path):
    """CEW layout: two good photos, a zero-byte one, a truncated one, a listed missing one."""
    root = tmp_path / "photos"
    _jpeg(root / "closed" / "good.jpg")
    _jpeg(root / "open" / "good.jpg")
    (root / "open").mkdir(exist_ok=True)
    (root / "open" / "empty.jpg").write_bytes(b"")
    _jpeg(root / "open" / "cut.jpg")
    data = (root / "open" / "cut.jpg").read_bytes()
    (root / "open" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_unreadable_images_are_error_rows_for_mean_shape(damaged_folder, tmp_path):
    cfg = _config(tmp_path, datasets="photo-folder",
                  dataset_options={"photo-folder": {"root": str(damaged_folder)}})
    rec = run(cfg, show_progress=False).records[0]
    rows = _rows(rec)
    assert rec.status == "ok" and rec.n_samples == 4 and rec.n_ok == 2 and rec.n_error == 2
    assert rows["closed--good.jpg"]["status"] == "ok"
    for sid, name in (("open--empty.jpg", "empty.jpg"), ("open--cut.jpg", "cut.jpg")):
        assert rows[sid]["status"] == "error"
        assert name in rows[sid]["error"] and "\n" not in rows[sid]["error"]
    # The error predictions are cached like any other: a re-run predicts nothing anew.
    again = run(cfg, show_progress=False).records[0]
    assert again.n_error == 2 and again.timings["n_predicted"] == 0


def test_missing_listed_image_is_an_error_row(tmp_path):
    root = tmp_path / "csv"
    _jpeg(root / "a.jpg")
    (root / "labels.csv").write_text("file,label\na.jpg,open\ngone.jpg,closed\n")
    cfg = _config(tmp_path, datasets="photo-folder",
                  dataset_options={"photo-folder": {"root": str(root)}})
    rows = _rows(run(cfg, show_progress=False).records[0])
    assert rows["a.jpg"]["status"] == "ok"
    assert rows["gone.jpg"]["status"] == "error" and "gone.jpg" in rows["gone.jpg"]["error"]
    assert "does not exist" in rows["gone.jpg"]["error"]


def test_checked_input_decodes_once_and_keeps_the_loader_object():
    calls = []

    def lazy():
        calls.append(1)
        return np.zeros((4, 5, 3), np.uint8)

    sample = FaceSample(id="x", subject="x", image=lazy)
    ready = checked_input(sample)
    assert ready.load_image().shape == (4, 5, 3) and ready.load_image() is ready.image
    assert len(calls) == 1 and callable(sample.image)  # the dataset's own object is untouched

    def broken():
        raise ImageError("cannot read image '/d/x.jpg': truncated")

    with pytest.raises(SampleError, match="x.jpg"):
        checked_input(FaceSample(id="y", subject="y", image=broken))
    with pytest.raises(SampleError, match="no scan"):
        checked_input(FaceSample(id="z", subject="z", image=lazy, meta={LOAD_ERROR: "no scan"}))


def test_a_loader_exception_becomes_a_sample_error_row(tiny_registry, run_config, monkeypatch):
    from tests.conftest import TinyDataset

    original = TinyDataset.load_sample

    def flaky(self, sample_id):
        if sample_id == "tiny_002":
            raise OSError("disk hiccup on /data/tiny_002.npz")
        return original(self, sample_id)

    monkeypatch.setattr(TinyDataset, "load_sample", flaky)
    cfg = dataclasses.replace(run_config, methods="mean-shape")
    rec = run(cfg, show_progress=False).records[0]
    rows = _rows(rec)
    assert rec.n_samples == 6 and rec.n_error == 1 and rec.n_ok == 5
    assert rows["tiny_002"]["status"] == "error"
    assert rows["tiny_002"]["error"] == "OSError: disk hiccup on /data/tiny_002.npz"
    # raise_errors surfaces it instead
    ds = TinyDataset()
    with pytest.raises(OSError, match="hiccup"):
        load_sample_or_error(ds, "tiny_002", raise_errors=True)


# -- EXIF orientation and over-size images ---------------------------------------------------
@pytest.mark.parametrize("orientation,top_left_white", [(6, True), (8, False)])
def test_exif_orientation_is_applied(tmp_path, orientation, top_left_white):
    # Stored sideways: 20 rows x 40 columns, a white band on the stored left.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255
    _jpeg(tmp_path / "phone.jpg", arr, orientation)
    img = read_image(tmp_path / "phone.jpg")
    assert img.shape == (40, 20, 3)  # upright portrait
    # 6: rotate 90 deg clockwise, the stored left band becomes the top; 8: the bottom.
    top, bottom = img[:5].mean(), img[-5:].mean()
    assert (top > 200 and bottom < 50) if top_left_white else (top < 50 and bottom > 200)
    # Through a dataset too
    _jpeg(tmp_path / "f" / "open" / "phone.jpg", arr, orientation)
    s = PhotoFolderDataset(root=tmp_path / "f").load_sample("open--phone.jpg")
    assert s.load_image().shape == (40, 20, 3)


def test_damaged_exif_does_not_make_the_image_unreadable(tmp_path):
    _jpeg(tmp_path / "odd.jpg", orientation=99)  # not a valid orientation: ignored
    assert read_image(tmp_path / "odd.jpg").shape == (30, 40, 3)


def test_over_size_image_error_names_the_file(tmp_path, monkeypatch):
    _jpeg(tmp_path / "huge.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 30x40 = 1200 > 2 * 100: refused
    with pytest.raises(ImageError, match=r"huge\.jpg.*too large") as info:
        read_image(tmp_path / "huge.jpg")
    assert "\n" not in str(info.value)


# -- NoW: one bad subject does not stop the run ------------------------------------------------
def test_now_subject_without_scan_or_with_bad_pp_are_error_rows(tmp_path):
    root = make_now_root(tmp_path / "NoW")
    subjects = sorted(p.name for p in (root / "scans").iterdir())
    ds = NowDataset(root=root)
    ids = ds.sample_ids()
    # subject 0 (two images): malformed .pp; subject 1 (one image): no scan at all
    pp = next((root / "scans_lmks_onlypp" / subjects[0]).glob("*.pp"))
    pp.write_text("<PickedPoints><point x='1' y='2'/></PickedPoints>")
    for f in (root / "scans" / subjects[1]).glob("*.obj"):
        f.unlink()
    cfg = _config(tmp_path, datasets="now", dataset_options={"now": {"root": str(root)}})
    rec = run(cfg, show_progress=False).records[0]
    rows = _rows(rec)
    assert rec.status == "ok" and rec.n_samples == 3 and rec.n_error == 3
    for sid in ids[:2]:
        assert rows[sid]["status"] == "error" and pp.name in rows[sid]["error"]
    assert "has no scan" in rows[ids[2]]["error"] and subjects[1] in rows[ids[2]]["error"]
    # Repairing subject 1 scores it; subject 0 stays an error row.
    make_now_root(tmp_path / "fresh")
    for f in (tmp_path / "fresh" / "scans" / subjects[1]).glob("*.obj"):
        (root / "scans" / subjects[1] / f.name).write_bytes(f.read_bytes())
    rows = _rows(run(cfg, show_progress=False).records[0])
    assert rows[ids[2]]["status"] == "ok" and rows[ids[0]]["status"] == "error"


def test_now_unreadable_image_is_an_error_row(tmp_path):
    root = make_now_root(tmp_path / "NoW")
    img = next((root / "NoW_Dataset").rglob("*.jpg"))
    img.write_bytes(b"")
    cfg = _config(tmp_path, datasets="now", dataset_options={"now": {"root": str(root)}})
    rec = run(cfg, show_progress=False).records[0]
    assert rec.n_error == 1 and rec.n_ok == 2 and img.name in rec.failures[0]["error"]


# -- labels and paths ---------------------------------------------------------------------------
def test_label_typo_is_rejected_with_file_and_line(tmp_path):
    root = tmp_path / "csv"
    _jpeg(root / "a.jpg")
    _jpeg(root / "b.jpg")
    (root / "labels.csv").write_text("file,label\na.jpg,open\nb.jpg,closd\n")
    av = PhotoFolderDataset(root=root).availability()
    assert not av.ok
    assert f"{root / 'labels.csv'}:3" in av.reason and "'closd'" in av.reason
    assert "'closed'" in av.reason and "'open'" in av.reason  # the accepted values
    (root / "labels.csv").write_text("file,right_eye,left_eye\na.jpg,open,half\nb.jpg,1,oppen\n")
    av = PhotoFolderDataset(root=root).availability()
    assert not av.ok and "labels.csv:3" in av.reason and "'oppen'" in av.reason
    # The run skips the dataset with that reason instead of scoring "unknown" labels.
    cfg = _config(tmp_path, datasets="photo-folder",
                  dataset_options={"photo-folder": {"root": str(root)}})
    summary = run(cfg, show_progress=False)
    assert not summary.records and "'oppen'" in summary.skipped_datasets["photo-folder"]


@pytest.mark.parametrize("bad", ["../outside.jpg", "sub/../../outside.jpg", "/etc/passwd",
                                 "C:\\photos\\x.jpg", "..\\outside.jpg"])
def test_labels_csv_paths_must_stay_under_the_root(tmp_path, bad):
    root = tmp_path / "csv"
    _jpeg(root / "a.jpg")
    _jpeg(tmp_path / "outside.jpg")
    (root / "labels.csv").write_text(f"file,label\na.jpg,open\n{bad},closed\n")
    av = PhotoFolderDataset(root=root).availability()
    assert not av.ok and "labels.csv:3" in av.reason
    assert "outside" in av.reason or "absolute" in av.reason


def test_now_list_paths_must_stay_under_the_root(tmp_path):
    root = make_now_root(tmp_path / "NoW")
    lst = root / "imagepathsvalidation.txt"
    good = lst.read_text().splitlines()
    for bad in ("../../../secret/x/y.jpg", "/abs/x/y.jpg"):
        lst.write_text("\n".join([*good, bad]) + "\n")
        av = NowDataset(root=root).availability()
        assert not av.ok and f"{lst}:{len(good) + 1}" in av.reason
    lst.write_text("\n".join([good[0], "x/y.jpg", good[1]]) + "\n")
    av = NowDataset(root=root).availability()
    assert not av.ok and f"{lst}:2" in av.reason and "<subject>/<challenge>/<image>" in av.reason
    lst.write_text("\n".join([good[0], good[0], good[1]]) + "\n")  # a repeat counts once
    assert NowDataset(root=root).sample_ids() == [str(Path(g).with_suffix("")) for g in good[:2]]


def test_import_refuses_sample_ids_outside_its_folder(tmp_path):
    (tmp_path / "preds").mkdir()
    method = ImportedMeshes({"root": str(tmp_path / "preds")})
    sample = FaceSample(id="../../elsewhere/x", subject="s", image=np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="outside the import folder"):
        method.predict(sample)
    pred = method.predict_safe([sample])[0]
    assert pred.status == "error" and "elsewhere" in pred.error


def test_relative_path_accepts_ordinary_names():
    assert relative_path("sub\\x.jpg", "f:2") == "sub/x.jpg"
    assert relative_path(" ok..name.jpg ", "f:2") == "ok..name.jpg"
    with pytest.raises(ValueError, match="f:2: empty"):
        relative_path("  ", "f:2")


# -- file permissions follow the umask -------------------------------------------------------
@pytest.fixture()
def umask():
    """Sets a umask for the test and restores the previous one."""
    previous = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask(tmp_path, umask, damaged_folder):
    umask(0o022)
    assert file_mode() == 0o644
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(tmp_path / "a.bin") == 0o644
    umask(0o077)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o600
    umask(0o002)
    atomic_write_bytes(tmp_path / "a.bin", b"y")  # replacing a file takes the new mode
    assert _mode(tmp_path / "a.bin") == 0o664

    umask(0o022)
    from benchmark.leaderboard import write_leaderboard

    cfg = _config(tmp_path, datasets="photo-folder",
                  dataset_options={"photo-folder": {"root": str(damaged_folder)}})
    records = run(cfg, show_progress=False).records
    board = write_leaderboard(Path(cfg.output_dir), records)
    written = [p for d in (tmp_path / "out", tmp_path / "cache") for p in d.rglob("*")
               if p.is_file()]
    assert board in written and any(p.name == "result.json" for p in written)
    assert any(p.suffix == ".npz" for p in written) and any(p.suffix == ".json" for p in written)
    assert {oct(_mode(p)) for p in written} == {oct(0o644)}
