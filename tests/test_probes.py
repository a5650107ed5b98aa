"""Shortcut probes (issue 16): rates per source, fair coverage, the eye masking, their tables.

Pure functions are checked on hand-computed cases; the masking on fabricated landmarks
(deterministic, covers every eye landmark, the same box for open and closed lids); the
leaderboard on a tiny fabricated pair of records. Tests marked ``data`` run the masking on
the research-only pool where it is present.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.datasets.masked import (
    MASK_HEIGHT,
    MASK_WIDTH,
    MaskedRealFacesDataset,
    cheek_colour,
    eye_mask,
    interleave_by_source,
    mask_eyes,
)
from benchmark.leaderboard import PROBE_DATASET, render_markdown
from benchmark.results import RunRecord
from metrics.probes import (
    Rate,
    closed_call_rates,
    common_ids,
    per_source_scores,
    rate_gap_pp,
    states_from_prob,
)

# -- pure functions ---------------------------------------------------------------------------


def test_closed_call_rates_by_group_leave_unknown_out():
    calls = [1, 0, 1, -1, 1, 0, np.nan]
    groups = ["a", "a", "a", "a", "b", "b", "b"]
    rates = closed_call_rates(calls, groups)
    assert list(rates) == ["a", "b"]
    assert rates["a"] == Rate(3, 2, 2 / 3)
    assert rates["b"] == Rate(2, 1, 0.5)
    assert rate_gap_pp(rates["a"], rates["b"]) == pytest.approx(100 * (2 / 3 - 0.5))


def test_closed_call_rates_filtered_by_truth():
    truth = [1, 1, 0, 0, 1]
    calls = [1, 0, 1, 0, 1]
    groups = ["x", "x", "x", "y", "y"]
    closed = closed_call_rates(calls, groups, truth, 1)
    assert closed["x"] == Rate(2, 1, 0.5) and closed["y"] == Rate(1, 1, 1.0)
    opened = closed_call_rates(calls, groups, truth, 0)
    assert opened["x"] == Rate(1, 1, 1.0) and opened["y"] == Rate(1, 0, 0.0)


def test_empty_group_rate_is_nan_and_gap_nan():
    rates = closed_call_rates([-1, 1], ["a", "b"])
    assert rates["a"].n == 0 and math.isnan(rates["a"].rate)
    assert math.isnan(rate_gap_pp(rates["a"], rates["b"]))


def test_closed_call_rates_reject_bad_input():
    with pytest.raises(ValueError, match="0, 1 or -1"):
        closed_call_rates([2, 0], ["a", "a"])
    with pytest.raises(ValueError, match="groups has"):
        closed_call_rates([1, 0], ["a"])
    with pytest.raises(ValueError, match="go together"):
        closed_call_rates([1, 0], ["a", "a"], truth=[1, 0])


def test_per_source_scores_hand_computed():
    # source c: 4 closed eyes, 3 called closed; source o: 5 open eyes, 1 called closed
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    calls = [1, 1, 0, 1, 0, 1, 0, 0, -1]
    groups = ["c"] * 4 + ["o"] * 5
    sc = per_source_scores(truth, calls, groups, "c", "o")
    assert sc.recall == Rate(4, 3, 0.75)
    assert sc.false_close == Rate(4, 1, 0.25)  # the unknown call is left out
    missing = per_source_scores(truth, calls, groups, "nope", "o")
    assert missing.recall.n == 0 and math.isnan(missing.recall.rate)


def test_states_from_prob():
    out = states_from_prob([[0.2, 0.5], [np.nan, 0.9]])
    assert out.tolist() == [[0, 1], [-1, 1]]


def test_common_ids_skip_empty_methods_and_restrict_floors():
    common, excluded = common_ids({
        "fit": ["s1", "s2", "s3"],
        "net": ["s2", "s3", "s4"],
        "skipped": [],
        "floor": ["s1", "s2", "s3", "s4", "s5"],
    })
    assert common == {"s2", "s3"}
    assert excluded == ("skipped",)
    assert common_ids({"a": []}) == (frozenset(), ("a",))


# -- the masking ------------------------------------------------------------------------------


def _face_landmarks(lid_gap: float) -> np.ndarray:
    """68 plausible pixel landmarks of a frontal face in a 200x200 image (eye width 30 px)."""
    lm = np.zeros((68, 2))
    lm[0:17] = np.stack([np.linspace(30, 170, 17), 90 + 60 * np.sin(np.linspace(0, np.pi, 17))],
                        axis=1)
    lm[17:27] = np.stack([np.linspace(45, 155, 10), np.full(10, 62.0)], axis=1)
    lm[27:36] = np.stack([np.r_[np.full(4, 100.0), np.linspace(88, 112, 5)],
                          np.r_[np.linspace(80, 115, 4), np.full(5, 122.0)]], axis=1)
    for eye, x0 in ((0, 55.0), (1, 115.0)):
        b = 36 + 6 * eye
        half = lid_gap / 2
        lm[b:b + 6] = [[x0, 85], [x0 + 10, 85 - half], [x0 + 20, 85 - half], [x0 + 30, 85],
                       [x0 + 20, 85 + half], [x0 + 10, 85 + half]]
    lm[48:68] = np.stack([100 + 22 * np.cos(np.linspace(0, 2 * np.pi, 20)),
                          150 + 6 * np.sin(np.linspace(0, 2 * np.pi, 20))], axis=1)
    return lm


def _inside(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    cols = np.clip(np.floor(pts[:, 0]).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.floor(pts[:, 1]).astype(int), 0, mask.shape[0] - 1)
    return mask[rows, cols]


def test_mask_covers_every_eye_landmark_and_spares_the_rest():
    lm = _face_landmarks(lid_gap=10.0)
    mask = eye_mask((200, 200, 3), lm)
    assert _inside(mask, lm[36:48]).all()
    assert not _inside(mask, lm[48:68]).any()  # mouth
    assert not _inside(mask, lm[0:17]).any()  # jaw
    assert not _inside(mask, lm[30:36]).any()  # nose tip and nostrils
    # two boxes of MASK_WIDTH x MASK_HEIGHT eye widths (30 px), up to a pixel row per side
    assert mask.sum() == pytest.approx(2 * MASK_WIDTH * MASK_HEIGHT * 30 * 30, rel=0.06)


def test_mask_geometry_does_not_depend_on_the_eyelids():
    open_mask = eye_mask((200, 200), _face_landmarks(lid_gap=10.0))
    closed_mask = eye_mask((200, 200), _face_landmarks(lid_gap=0.5))
    assert np.array_equal(open_mask, closed_mask)


def test_mask_follows_a_rolled_head():
    lm = _face_landmarks(lid_gap=8.0)
    c = np.array([100.0, 100.0])
    ang = np.deg2rad(25)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    rolled = (lm - c) @ rot.T + c
    mask = eye_mask((200, 200), rolled)
    assert _inside(mask, rolled[36:48]).all()
    assert mask.sum() == pytest.approx(2 * MASK_WIDTH * MASK_HEIGHT * 900, rel=0.06)


def test_mask_eyes_is_deterministic_fills_with_cheek_colour_and_keeps_the_input():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    lm = _face_landmarks(lid_gap=10.0)
    image[100:125, 40:90] = (200, 150, 120)  # right cheek
    image[100:125, 110:160] = (200, 150, 120)  # left cheek
    before = image.copy()
    out = mask_eyes(image, lm)
    assert np.array_equal(image, before)
    assert np.array_equal(out, mask_eyes(image, lm))
    mask = eye_mask(image.shape, lm)
    assert (out[mask] == (200, 150, 120)).all()
    assert np.array_equal(out[~mask], image[~mask])
    assert cheek_colour(image, lm).tolist() == [200, 150, 120]


def test_mask_rejects_bad_landmarks():
    with pytest.raises(ValueError, match="68, 2"):
        eye_mask((10, 10), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="coincident"):
        eye_mask((10, 10), np.zeros((68, 2)))


def test_interleave_keeps_sources_in_proportion():
    ids = [f"c{i}" for i in range(4)] + [f"o{i}" for i in range(12)]
    sources = ["c"] * 4 + ["o"] * 12
    order = interleave_by_source(ids, sources)
    assert sorted(order) == sorted(ids)
    assert [i for i in order if i.startswith("c")] == ["c0", "c1", "c2", "c3"]
    for n in (4, 8, 16):
        assert sum(i.startswith("c") for i in order[:n]) == n // 4
    with pytest.raises(ValueError):
        interleave_by_source(["a"], [])


# -- the leaderboard --------------------------------------------------------------------------


def _row(sid: str, source: str, truth: int, pred: int | None, prob: float | None = None,
         status: str = "ok") -> dict:
    row = {"sample_id": sid, "subject": f"{source}:{sid}", "status": status, "error": "",
           "eye_true_0": truth, "eye_true_1": truth, "image_true": truth}
    if status == "ok" and pred is not None:
        row.update(eye_pred_0=pred, eye_pred_1=pred, image_pred=pred)
    if prob is not None:
        row.update(prob_closed_0=prob, prob_closed_1=prob)
    return row


def _record(method: str, dataset: str, rows: list[dict], f1: float) -> RunRecord:
    n_ok = sum(r["status"] == "ok" for r in rows)
    return RunRecord(method=method, dataset=dataset, split="val", n_samples=len(rows),
                     n_ok=n_ok, n_no_face=len(rows) - n_ok,
                     metrics={name: {"value": f1, "ci_low": None, "ci_high": None}
                              for name in ("eye_f1", "eye_acc", "image_f1")},
                     params={"closed_threshold": 0.18, "bootstrap": 0, "seed": 0},
                     dataset_card={"card_file": "x.md", "description": "d"}, rows=rows)


def _pair(dataset: str) -> list[RunRecord]:
    # 4 CEW (closed) + 4 UTK (open) photos.
    # "shortcut": calls every CEW face closed and no UTK face; covers all 8.
    # "reader": calls 2 of 4 faces closed in each source; fails on s7 (no face); own
    #           readout calls one CEW face and one UTK face closed.
    ids = [f"s{i}" for i in range(8)]
    src = ["cew"] * 4 + ["utk"] * 4
    truth = [1] * 4 + [0] * 4
    shortcut = [_row(i, s, t, t) for i, s, t in zip(ids, src, truth)]
    reader_pred = [1, 1, 0, 0, 1, 1, 0, None]
    reader_prob = [0.9, 0.1, 0.2, 0.3, 0.8, 0.4, 0.1, None]
    reader = [_row(i, s, t, p, q, "ok" if p is not None else "no_face")
              for i, s, t, p, q in zip(ids, src, truth, reader_pred, reader_prob)]
    return [_record("shortcut", dataset, shortcut, 1.0), _record("reader", dataset, reader, 0.5)]


def test_leaderboard_renders_the_probe_table():
    text = render_markdown(_pair(PROBE_DATASET))
    lines = text.splitlines()
    short = next(ln for ln in lines if ln.startswith("| `shortcut` | 100.0%"))
    assert "100.0% (4/4) | 0.0% (0/4) | +100.0 pp | – | – | –" in short
    reader = next(ln for ln in lines if ln.startswith("| `reader` | 50.0%"))
    # mesh: CEW 2/4, UTK 2/3 (s7 failed); own readout: CEW 1/4, UTK 1/3
    assert "50.0% (2/4) | 66.7% (2/3) | -16.7 pp | 25.0% (1/4) | 33.3% (1/3) | -8.3 pp" in reader
    assert "Per source" not in text  # the probe dataset gets the probe, not the split table


def test_leaderboard_renders_per_source_and_fair_coverage():
    text = render_markdown(_pair("real-faces-val"))
    lines = text.splitlines()
    assert "closed eyes all come from CEW, open eyes all from UTKFace" in text
    # per eye: shortcut recall 8/8, false close 0/8; reader recall 4/8, false close 4/6
    assert any(ln.startswith("| `shortcut` | 1.000 | 100.0% (8/8) | 0.0% (0/8) | – | – |")
               for ln in lines)
    assert any(ln.startswith("| `reader` | 0.500 | 50.0% (4/8) | 66.7% (4/6) | 25.0% (2/8) | "
                             "33.3% (2/6) |") for ln in lines)
    assert "over the 7 samples that all 2 methods below covered" in text
    short = next(ln for ln in lines if ln.startswith("| `shortcut` | 100% (8/8)"))
    # on the common 7 samples the shortcut method is still perfect: eye F1 and acc 1.000
    assert short.endswith("| 1.000 | 1.000 | 1.000 | 1.000 |")
    reader = next(ln for ln in lines if ln.startswith("| `reader` | 88% (7/8)"))
    # reader on s0..s6: eyes TP 4, FN 4, FP 4, TN 2 -> F1 0.5, acc 6/14
    assert "| 0.500 | 0.500 | 0.429 |" in reader


# -- on the pool ------------------------------------------------------------------------------


@pytest.mark.data
def test_masked_dataset_on_the_pool_masks_only_the_eyes():
    ds = MaskedRealFacesDataset()
    if not ds.availability().ok:
        pytest.skip("the real-faces pool is not present (set EYEBENCH_REAL_FACES)")
    from benchmark.datasets.real_faces import RealFacesDataset
    from methods.landmarks import get_provider

    plain = RealFacesDataset()
    ids = ds.sample_ids()
    assert sorted(ids) == sorted(plain.sample_ids())
    sources = [plain.load_sample(i).subject.split(":")[0] for i in ids[:50]]
    assert {"cew", "utk"} <= set(sources)  # interleaved: a --limit prefix holds both
    provider = get_provider("dlib")
    checked = 0
    for sid in ids[:6]:
        original = plain.load_sample(sid).load_image()
        res = provider.detect(original)
        if not res.ok:
            continue
        masked = ds.load_sample(sid)
        assert masked.eye_state.tolist() == plain.load_sample(sid).eye_state.tolist()
        image = masked.load_image()
        mask = eye_mask(original.shape, res.landmarks)
        assert _inside(mask, np.asarray(res.landmarks, np.float64)[36:48]).all()
        assert np.array_equal(image[~mask], original[~mask])
        assert len(np.unique(image[mask].reshape(-1, 3), axis=0)) == 1
        assert np.array_equal(image, ds.load_sample(sid).load_image())
        checked += 1
    assert checked >= 3


# -- the same-setup check's labels ------------------------------------------------------------


def _script_module(name: str):
    """A module of ``scripts/`` (not a package), loaded from its file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_blink_clip_labels_match_the_card():
    from collections import Counter

    mod = _script_module("build_blink_clip")
    frames = mod.selected_frames()
    assert len(frames) == 104 and frames == sorted(set(frames))
    pairs = Counter(mod.frame_labels(i) for i in frames)
    assert pairs[("closed", "open")] == 20  # the wink: subject's right eye only
    assert pairs[("closed", "closed")] == 12
    assert pairs[("open", "open")] == 68
    assert ("unknown", "unknown") not in pairs
    assert mod.frame_labels(50) == ("closed", "open") and mod.frame_labels(0) == ("open", "open")


def test_winks_right_counts_wink_images_with_both_eyes_right():
    from benchmark.scoring import METRICS, ScoreTable

    rows = [  # (true 0, true 1, pred 0, pred 1)
        (1, 0, 1, 0),   # wink, both right
        (0, 1, 0, 0),   # wink, closed eye missed
        (0, 1, 1, 0),   # wink, eyes swapped
        (1, 1, 1, 1),   # no wink
        (-1, 1, 0, 1),  # unknown eye: not a wink
    ]
    t = ScoreTable([{"status": "ok", "subject": str(i), "eye_true_0": a, "eye_true_1": b,
                     "eye_pred_0": c, "eye_pred_1": d} for i, (a, b, c, d) in enumerate(rows)],
                   {})
    spec = METRICS.get("wink_acc")
    assert spec.compute(t, np.arange(5)) == pytest.approx(1 / 3)
    assert np.isnan(spec.compute(t, np.array([3, 4])))


# -- the grey, small-photo probe (scripts/build_degraded_probe.py) ----------------------------


def test_degrade_makes_grey_and_shrinks_only_large_photos():
    mod = _script_module("build_degraded_probe")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    out = mod.degrade(big, 112, grey=True)
    assert out.shape == (112, 168, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    small = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    assert np.array_equal(mod.degrade(small, 112, grey=False), small)  # never enlarged
    colour = mod.degrade(big, 100, grey=False)
    assert colour.shape == (100, 150, 3) and not (colour[..., 0] == colour[..., 2]).all()


def test_degraded_probe_refuses_a_non_empty_folder(tmp_path):
    mod = _script_module("build_degraded_probe")
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path)])
    assert (tmp_path / "x.txt").read_text() == "keep me"


@pytest.mark.data
def test_degraded_probe_folder_reads_back_with_the_pool_labels(tmp_path):
    from benchmark.datasets.photo_folder import PhotoFolderDataset
    from benchmark.datasets.real_faces import RealFacesDataset

    plain = RealFacesDataset()
    if not plain.availability().ok:
        pytest.skip("the real-faces pool is not present (set EYEBENCH_REAL_FACES)")
    mod = _script_module("build_degraded_probe")
    assert mod.main([str(tmp_path / "probe"), "--short-side", "64"]) == 0
    ds = PhotoFolderDataset(root=str(tmp_path / "probe"))
    assert ds.availability().ok
    ids = ds.sample_ids()
    assert len(ids) == len(plain.sample_ids())
    truth = {}
    for sid in plain.sample_ids():
        s = plain.load_sample(sid)
        truth[s.subject, s.id] = s.eye_state.tolist()
    for sid in ids[:: max(1, len(ids) // 20)]:
        s = ds.load_sample(sid)
        image = s.load_image()
        assert min(image.shape[:2]) <= 64 and (image[..., 0] == image[..., 2]).all()
        original_id = sid.split("--", 1)[1].removesuffix(".png")
        assert truth[s.subject, original_id] == s.eye_state.tolist()
