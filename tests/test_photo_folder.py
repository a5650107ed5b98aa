"""``photo-folder`` layouts (CEW folders, labels.csv) and the real-pool split, on tiny fixtures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets.images import ImageError
from benchmark.datasets.photo_folder import PhotoFolderDataset, image_state_of, parse_state
from benchmark.datasets.real_faces import (
    RealFacesDataset,
    list_pool,
    split_real_faces,
)
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN


def _img(path, mode="RGB", size=(40, 30), value=120):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], {"RGB": 3, "RGBA": 4, "L": 1}[mode]), value, np.uint8)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path)


@pytest.fixture
def cew_folder(tmp_path):
    """CEW-style folder: 2 closed (one grey PNG), 2 open (one RGBA, one nested), 1 corrupt."""
    root = tmp_path / "cew"
    _img(root / "closed" / "c1.jpg")
    _img(root / "closed" / "c2.png", mode="L")
    _img(root / "open" / "o1.png", mode="RGBA")
    _img(root / "open" / "more" / "o2.jpg")
    (root / "open" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "open" / "notes.txt").write_text("not an image")
    return root


def test_cew_layout(cew_folder):
    ds = PhotoFolderDataset(root=cew_folder)
    assert ds.availability().ok
    ids = ds.sample_ids()
    assert ids == ["closed--c1.jpg", "closed--c2.png", "open--broken.jpg", "open--more--o2.jpg",
                   "open--o1.png"]
    s = ds.load_sample("closed--c2.png")
    assert s.eye_state.tolist() == [EYE_CLOSED, EYE_CLOSED] and s.image_state == EYE_CLOSED
    assert s.load_image().shape == (30, 40, 3) and s.scan is None
    s = ds.load_sample("open--o1.png")
    assert s.eye_state.tolist() == [EYE_OPEN, EYE_OPEN] and s.load_image().dtype == np.uint8
    with pytest.raises(ImageError, match="broken.jpg"):
        ds.load_sample("open--broken.jpg").load_image()
    with pytest.raises(KeyError):
        ds.load_sample("nope")


def test_revision_tracks_content(cew_folder):
    r1 = PhotoFolderDataset(root=cew_folder).revision()
    assert PhotoFolderDataset(root=cew_folder).revision() == r1
    _img(cew_folder / "closed" / "c3.jpg")
    assert PhotoFolderDataset(root=cew_folder).revision() != r1


def test_root_from_environment_and_missing_root(cew_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("EYEBENCH_PHOTO_FOLDER", str(cew_folder))
    assert len(PhotoFolderDataset()) == 5
    monkeypatch.delenv("EYEBENCH_PHOTO_FOLDER")
    av = PhotoFolderDataset().availability()
    assert not av.ok and "EYEBENCH_PHOTO_FOLDER" in av.fix
    av = PhotoFolderDataset(root=tmp_path / "absent").availability()
    assert not av.ok and "not a folder" in av.reason
    (tmp_path / "empty").mkdir()
    av = PhotoFolderDataset(root=tmp_path / "empty").availability()
    assert not av.ok and "no images" in av.reason


def test_labels_csv_per_image_and_per_eye(tmp_path):
    root = tmp_path / "csv"
    for name in ("a.jpg", "b.jpg", "sub/c.jpg", "d.jpg"):
        _img(root / name)
    (root / "labels.csv").write_text(
        "file,right_eye,left_eye,subject\n"
        "a.jpg,closed,open,p1\n"      # wink: eye 0 (subject's right) closed
        "b.jpg,1,1,p1\n"
        "sub/c.jpg,open,half,p2\n"
        "d.jpg,0,0,\n"
    )
    ds = PhotoFolderDataset(root=root)
    assert ds.availability().ok
    a = ds.load_sample("a.jpg")
    assert a.eye_state.tolist() == [EYE_CLOSED, EYE_OPEN] and a.image_state == EYE_OPEN
    assert a.subject == "p1"
    b = ds.load_sample("b.jpg")
    assert b.image_state == EYE_CLOSED
    c = ds.load_sample("sub--c.jpg")
    assert c.eye_state.tolist() == [EYE_OPEN, EYE_UNKNOWN] and c.image_state == EYE_UNKNOWN
    assert ds.load_sample("d.jpg").subject == "d.jpg"

    (root / "labels.csv").write_text("file,label\na.jpg,closed\nb.jpg,open\nd.jpg,?\n")
    ds = PhotoFolderDataset(root=root)
    assert ds.sample_ids() == ["a.jpg", "b.jpg", "d.jpg"]
    assert ds.load_sample("a.jpg").eye_state.tolist() == [EYE_CLOSED, EYE_CLOSED]
    assert ds.load_sample("d.jpg").eye_state.tolist() == [EYE_UNKNOWN, EYE_UNKNOWN]


def test_bad_labels_file_makes_the_dataset_unavailable_not_a_crash(tmp_path):
    root = tmp_path / "bad"
    _img(root / "a.jpg")
    (root / "labels.csv").write_text("name,state\na.jpg,open\n")
    av = PhotoFolderDataset(root=root).availability()
    assert not av.ok and "'file' column" in av.reason
    (root / "labels.csv").write_text("file,comment\na.jpg,hello\n")
    av = PhotoFolderDataset(root=root).availability()
    assert not av.ok and "label" in av.reason


def test_unlabelled_folder(tmp_path):
    _img(tmp_path / "x" / "p.jpg")
    ds = PhotoFolderDataset(root=tmp_path / "x")
    assert ds.load_sample("p.jpg").eye_state.tolist() == [EYE_UNKNOWN, EYE_UNKNOWN]


def test_label_parsing():
    assert parse_state("Closed") == EYE_CLOSED and parse_state(" 0 ") == EYE_OPEN
    assert parse_state("half") == EYE_UNKNOWN and parse_state(None) == EYE_UNKNOWN
    assert parse_state("") == EYE_UNKNOWN and parse_state("N/A") == EYE_UNKNOWN
    with pytest.raises(ValueError, match="'closd'.*accepted: 'open'"):
        parse_state("closd")
    assert image_state_of(np.array([1, 1])) == EYE_CLOSED
    assert image_state_of(np.array([1, 0])) == EYE_OPEN
    assert image_state_of(np.array([1, -1])) == EYE_UNKNOWN


# -- the real pool's split (a fake pool in the official layout) ---------------------------------
@pytest.fixture
def fake_pool(tmp_path):
    """A pool with the real layout: CEW faces + their patches, UTK faces, LFW patches."""
    root = tmp_path / "real-faces"
    closed_rows, open_rows, eye_rows = [], [], []
    for k in range(30):
        stem = f"closed_eye_{k:04d}.jpg_face_1"
        _img(root / "closed" / f"{stem}.jpg")
        closed_rows.append(f"closed/{stem}.jpg,closed")
        for side in "LR":
            _img(root / "eyes" / "closed" / f"{stem}_{side}.jpg", mode="L", size=(24, 24))
            eye_rows.append(f"eyes/closed/{stem}_{side}.jpg,closed,{side}")
    # two faces cut from one CEW source photo
    _img(root / "closed" / "closed_eye_0000.jpg_face_2.jpg")
    closed_rows.append("closed/closed_eye_0000.jpg_face_2.jpg,closed")
    for k in range(60):
        _img(root / "open" / f"face_{k}.jpg")
        open_rows.append(f"open/face_{k}.jpg,open")
    for person in ("Ann_Lee", "Bob_Ray", "Cy_Twombly"):
        for n in (1, 2):
            for side in "LR":
                f = f"eyes/open/{person}_{n:04d}_{side}.jpg"
                _img(root / f, mode="L", size=(24, 24))
                eye_rows.append(f"{f},open,{side}")
    (root / "closed" / "labels.csv").write_text("file,label\n" + "\n".join(closed_rows) + "\n")
    (root / "open" / "labels.csv").write_text("file,label\n" + "\n".join(open_rows) + "\n")
    (root / "eyes" / "labels.csv").write_text("file,label,eye\n" + "\n".join(eye_rows) + "\n")
    return root


def test_pool_split_is_grouped_seeded_and_stable(fake_pool):
    items = list_pool(fake_pool)
    assert len(items) == 31 + 60 + 60 + 12
    s = split_real_faces(fake_pool, seed=0, val_fraction=0.3)
    assert len(s.train) + len(s.val) == len(items)
    assert {i.group for i in s.train}.isdisjoint({i.group for i in s.val})
    # a CEW face and its patches, and both faces of one source photo, travel together
    by_group = {}
    for part, its in (("train", s.train), ("val", s.val)):
        for it in its:
            by_group.setdefault(it.group, set()).add(part)
    assert all(len(v) == 1 for v in by_group.values())
    g0 = [i for i in items if i.group == "cew:closed_eye_0000.jpg"]
    assert len(g0) == 4  # face_1, face_2, two patches
    assert [i.group for i in items if "Ann_Lee" in i.file] == ["lfw:Ann_Lee"] * 4
    # eye letters map to eye indices: L = subject's left = eye 1
    assert {i.eye for i in items if i.file.endswith("_L.jpg")} == {1}
    # deterministic, seed-dependent, and independent of the other files present
    assert split_real_faces(fake_pool, seed=0, val_fraction=0.3).val == s.val
    assert split_real_faces(fake_pool, seed=1, val_fraction=0.3).val != s.val
    (fake_pool / "open" / "face_0.jpg").unlink()
    lines = (fake_pool / "open" / "labels.csv").read_text().splitlines()
    (fake_pool / "open" / "labels.csv").write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    s2 = split_real_faces(fake_pool, seed=0, val_fraction=0.3)
    assert {i.file for i in s2.val} == {i.file for i in s.val} - {"open/face_0.jpg"}
    with pytest.raises(ValueError):
        split_real_faces(fake_pool, val_fraction=1.5)


def test_real_faces_dataset_uses_the_split(fake_pool, monkeypatch):
    monkeypatch.setenv("EYEBENCH_REAL_FACES", str(fake_pool))
    ds = RealFacesDataset(val_fraction=0.3)
    assert ds.availability().ok and ds.split == "val"
    split = split_real_faces(fake_pool, 0, 0.3)
    want = sorted(i.file for i in split.val if i.kind == "face")
    got = sorted(ds.load_sample(i).meta["file"] for i in ds.sample_ids())
    assert got == want
    s = ds.load_sample(ds.sample_ids()[0])
    assert s.eye_state[0] == s.eye_state[1] == s.image_state and s.scan is None
    assert s.load_image().shape[2] == 3
    train = RealFacesDataset(split="train", val_fraction=0.3)
    assert set(train.sample_ids()).isdisjoint(ds.sample_ids())
    assert ds.revision() != train.revision()


def test_real_faces_dataset_skips_without_the_pool(monkeypatch, tmp_path):
    import benchmark.datasets.real_faces as rf

    monkeypatch.delenv("EYEBENCH_REAL_FACES", raising=False)
    monkeypatch.setattr(rf, "DEFAULT_ROOT", tmp_path / "nowhere")
    av = RealFacesDataset().availability()
    assert not av.ok and "EYEBENCH_REAL_FACES" in av.fix


def test_pool_labels_errors_name_file_and_line(fake_pool, monkeypatch):
    labels = fake_pool / "open" / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([*lines[:3], "open/face_1.jpg,opne", *lines[4:]]) + "\n")
    monkeypatch.setenv("EYEBENCH_REAL_FACES", str(fake_pool))
    av = RealFacesDataset().availability()
    assert not av.ok and f"{labels}:4" in av.reason and "'opne'" in av.reason
    for bad in ("../../elsewhere.jpg", "/abs/face.jpg"):
        labels.write_text("\n".join([*lines[:2], f"{bad},open", *lines[3:]]) + "\n")
        with pytest.raises(ValueError, match=f"{labels}:3"):
            list_pool(fake_pool)
