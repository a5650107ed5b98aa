"""REALY: the region-wise protocol (metrics.realy), the loader, scoring columns, leaderboard.

The fixture is built by the tests in REALY's official layout with tiny meshes: a flat
prediction and ground-truth regions hovering ``D`` above it, where every protocol step has a
closed-form outcome (see ``test_hand_computed_region_error``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import metrics.realy as R
from benchmark.datasets.base import LOAD_ERROR, SampleError, checked_input
from benchmark.datasets.realy import RealyDataset
from benchmark.scoring import ScoreTable, ScoringParams, aggregate, score_sample
from benchmark.types import FaceSample, Prediction, Topology

torch.set_num_threads(1)

D = 0.6            # height of the ground-truth regions above the flat prediction
SCALES = (8.75, 9.5)  # metrical scales (mm per scan unit) of subjects 1 and 2


# ----------------------------------------------------------------------------------------
# Geometry of the fixture
# ----------------------------------------------------------------------------------------


def grid_mesh(xs: np.ndarray, ys: np.ndarray, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated grid over xs x ys at height z."""
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    v = np.c_[gx.ravel(), gy.ravel(), np.full(gx.size, z)]
    idx = np.arange(gx.size).reshape(gx.shape)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return v, np.r_[np.c_[a, b, c], np.c_[b, d, c]].astype(np.int64)


def keypoints68() -> np.ndarray:
    """68 keypoints on integer positions of the plane z = 0; the nose (27-35) is the 3x3
    block around the origin, so the nose region is centred on its keypoints."""
    kp = np.zeros((68, 3))
    kp[27:36, :2] = [(x, y) for y in (1, 0, -1) for x in (-1, 0, 1)]
    ring = [(x, y) for x in range(-5, 6) for y in range(-5, 6) if max(abs(x), abs(y)) >= 3]
    others = [i for i in range(68) if not 27 <= i <= 35]
    kp[others, :2] = ring[: len(others)]
    return kp


def prediction_plate() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat plate z = 0 over [-7, 7]^2 (0.5 spacing) and the vertex ids of the keypoints."""
    xs = np.arange(-7.0, 7.01, 0.5)
    verts, faces = grid_mesh(xs, xs)
    kp = keypoints68()
    ids = np.array([int(np.argmin(np.linalg.norm(verts - k, axis=1))) for k in kp])
    assert np.allclose(verts[ids], kp)
    return verts, faces, ids


def nose_region() -> tuple[np.ndarray, np.ndarray]:
    """9x9 vertices at z = D over [-2, 2]^2: centred on the nose keypoints, holding them."""
    xs = np.linspace(-2.0, 2.0, 9)
    return grid_mesh(xs, xs, D)


def other_region(centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(-1.5, 1.5, 7)
    v, f = grid_mesh(xs + centre[0], xs + centre[1], D)
    return v, f


def write_obj(path, verts, faces=None) -> None:
    lines = [f"v {x:.9f} {y:.9f} {z:.9f}" for x, y, z in verts]
    if faces is not None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def realy_root(tmp_path):
    """Two subjects in the official layout (subject 2 has two images)."""
    root = tmp_path / "REALY"
    images = root / "REALY_image" / "crop_image_frontal_512x512"
    images.mkdir(parents=True)
    for name in ("1_frontal", "2_frontal", "2_left"):
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(images / f"{name}.jpg")
    kp85 = np.vstack([keypoints68(), np.c_[np.linspace(-4, 4, 17), np.full(17, 6.0),
                                           np.zeros(17)]])
    for subject in (1, 2):
        write_obj(root / "REALY_HIFI3D_keypoints" / f"{subject}.obj", kp85)
        regions = {"nose": nose_region(), "mouth": other_region((0.0, -3.5)),
                   "forehead": other_region((0.0, 3.5)), "cheek": other_region((3.5, 0.0))}
        for name, (v, f) in regions.items():
            write_obj(root / "REALY_scan_region" / str(subject) / f"{name}.obj", v, f)
    (root / "metrical_scale.txt").write_text("\n".join(f"{s:.6f}" for s in SCALES) + "\n")
    return root


def plate_prediction() -> Prediction:
    verts, faces, ids = prediction_plate()
    topo = Topology("plate", faces, landmark_vertex_ids=ids)
    return Prediction(status="ok", vertices=verts.astype(np.float32), topology=topo)


# ----------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------


def test_hand_computed_region_error():
    """Flat prediction, nose region D above it, keypoints shared in the plane z = 0.

    gICP: identical keypoints -> identity. rICP: 81 region points want the prediction at
    z = D, 9 keypoints repeated int(81 / 9) = 9 times want it at z = 0, the centroids agree
    so the rotation stays the identity: t = 81 D / (81 + 81) = D / 2 after one update, then
    the residual stops changing. bICP: moving the region down by D / 2 meets every data and
    keypoint target at zero stiffness cost, so each vertex lands on the plane and the error
    is D / 2 per vertex. Times the metrical scale: mm.
    """
    verts, faces, ids = prediction_plate()
    kp = keypoints68()
    nv, nf = nose_region()
    res = R.realy_evaluate(verts, faces, kp, kp, {"nose": (nv, nf)}, unit_mm=SCALES[0])
    assert res.icp_iters["nose"] == 1
    np.testing.assert_allclose(res.aligned["nose"][:, 2], D / 2, atol=1e-9)
    np.testing.assert_allclose(res.distances_mm["nose"], D / 2 * SCALES[0], rtol=1e-6)
    assert res.errors_mm["nose"] == pytest.approx(D / 2 * SCALES[0], rel=1e-6)


def test_cheek_keypoints_repeat_a_quarter():
    """The cheek repeats its keypoints int(N / K / 4) times: t = N D / (N + K reps)."""
    verts, faces, _ = prediction_plate()
    kp = keypoints68()
    rigid = R.usable_keypoints(R.RIGID_KEYPOINTS["cheek"], 68, 68)
    assert 76 not in rigid and len(rigid) == 25  # 68-point topologies lose 76, 77
    centre = kp[rigid].mean(axis=0)
    xs = np.linspace(-3.0, 3.0, 31)  # 961 points centred on the keypoints' centroid
    cv, _ = grid_mesh(xs + centre[0], xs + centre[1], D)
    icp = R.region_icp(verts, faces, cv, kp[rigid], kp[rigid], 4.0)
    reps = int(len(cv) / len(rigid) / 4)
    expected = len(cv) * D / (len(cv) + len(rigid) * reps)
    np.testing.assert_allclose(icp.transform.translation, [0, 0, expected], atol=1e-9)
    np.testing.assert_allclose(icp.transform.rotation, np.eye(3), atol=1e-9)


def _bumpy(n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(-3, 3, n)
    v, f = grid_mesh(xs, xs)
    v[:, 2] = 0.6 * np.exp(-((v[:, 0] - 0.5) ** 2 + (v[:, 1] + 0.3) ** 2)) + 0.05 * v[:, 0] ** 2
    return v, f


def _objective(surface, points, kp_pred, kp_gt, reps, theta, t) -> np.ndarray:
    """rICP's objective for a batch of (rotation about z, translation) candidates.

    F = sum_i d(q_i, T(P))^2 + reps sum_k ||T(p_k) - q_k||^2, with d(q, T(P)) computed as
    d(T^-1 q, P) (T rigid). theta: (C,), t: (C, 3).
    """
    c, s = np.cos(theta), np.sin(theta)
    rot = np.zeros((len(theta), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
    local = np.einsum("cji,cnj->cni", rot, points[None] - t[:, None])  # R^T (q - t)
    d = surface.query(local.reshape(-1, 3)).distances.reshape(len(theta), -1)
    moved = np.einsum("cij,nj->cni", rot, kp_pred) + t[:, None]
    return (d**2).sum(axis=1) + reps * ((moved - kp_gt[None]) ** 2).sum(axis=(1, 2))


def test_region_alignment_matches_brute_force_optimum():
    """rICP lands on the optimum a grid search over (rotation about z, translation) finds."""
    from metrics.distance import MeshSurface

    verts, faces = _bumpy()
    rng = np.random.default_rng(3)
    surface = MeshSurface(verts, faces)
    sample = verts[rng.choice(len(verts), 40, replace=False)]
    th, t_true = np.deg2rad(4.0), np.array([0.12, -0.08, 0.05])
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    points = sample @ rot.T + t_true + rng.normal(scale=0.01, size=sample.shape)
    kp_pred = verts[[0, 24, 600, 624, 312]]
    kp_gt = kp_pred @ rot.T + t_true + rng.normal(scale=0.02, size=kp_pred.shape)
    icp = R.region_icp(verts, faces, points, kp_pred, kp_gt, 1.0,
                       R.RealyParams(icp_tol=1e-12, icp_max_iter=300))
    reps = int(len(points) / len(kp_pred))
    got = icp.transform
    theta_icp = np.arctan2(got.rotation[1, 0], got.rotation[0, 0])
    f_icp = _objective(surface, points, kp_pred, kp_gt, reps, np.array([theta_icp]),
                       got.translation[None])[0]
    # coarse-to-fine grid over (theta, tx, ty, tz), independent of the ICP iterations
    centre, step = np.array([0.0, 0.0, 0.0, 0.0]), np.array([np.deg2rad(2.0), 0.06, 0.06, 0.06])
    for _ in range(4):
        axes = [c + s * np.arange(-5, 6) for c, s in zip(centre, step)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 4)
        f = _objective(surface, points, kp_pred, kp_gt, reps, grid[:, 0], grid[:, 1:])
        centre = grid[np.argmin(f)]
        step = step / 4
    f_grid = float(f.min())
    assert f_icp <= f_grid * (1 + 1e-3) + 1e-9
    np.testing.assert_allclose(theta_icp, centre[0], atol=np.deg2rad(0.1))
    np.testing.assert_allclose(got.translation, centre[1:], atol=3e-3)


def test_nicp_normal_equations_match_the_stacked_least_squares():
    """Our assembled normal equations solve REALY's stacked system (dense lstsq on a tiny mesh)."""
    v, f = grid_mesh(np.linspace(0, 1, 4), np.linspace(0, 1, 3))
    v[:, 2] = 0.2 * v[:, 0] * v[:, 1]
    n = len(v)
    rng = np.random.default_rng(0)
    tgt = v + rng.normal(scale=0.05, size=v.shape)
    w = (rng.random(n) > 0.2).astype(float)
    edges = np.unique(np.sort(np.r_[f[:, [0, 1]], f[:, [0, 2]], f[:, [1, 2]]], axis=1), axis=0)
    m = np.zeros((len(edges), n))
    m[np.arange(len(edges)), edges[:, 0]] = 1
    m[np.arange(len(edges)), edges[:, 1]] = -1
    alpha, g = 7.0, np.diag([1.0, 1.0, 1.0, 0.5])
    dmat = np.zeros((n, 4 * n))
    for i in range(n):
        dmat[i, 4 * i:4 * i + 4] = [*v[i], 1.0]
    a = np.vstack([alpha * np.kron(m, g), w[:, None] * dmat])
    b = np.vstack([np.zeros((4 * len(edges), 3)), w[:, None] * tgt])
    x_ref = np.linalg.lstsq(a, b, rcond=None)[0]
    import scipy.sparse

    lap = R._edge_laplacian(f, n)
    ata = alpha**2 * scipy.sparse.kron(lap, scipy.sparse.diags(np.diag(g) ** 2)) \
        + R._point_blocks(v, w**2)
    x = R._solve_spd(ata, R._point_rhs(v, w**2, tgt))
    np.testing.assert_allclose(x, x_ref, atol=1e-7)


def test_nicp_with_keypoints_pulls_keypoints_and_keeps_shape():
    v, f = grid_mesh(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
    target = v + [0.0, 0.0, 0.3]
    res = R.nicp_deform(v, f, target, [0, 40, 80], target[[0, 40, 80]])
    np.testing.assert_allclose(res.vertices, target, atol=1e-6)
    assert res.n_steps >= 2 and not res.capped


def test_clean_region_mesh_merges_duplicates_and_drops_unreferenced():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [1, 0, 0], [1, 1, 0.0]])
    f = np.array([[0, 1, 2], [4, 5, 2]])
    cv, cf = R.clean_region_mesh(v, f)
    np.testing.assert_array_equal(cv, v[[0, 1, 2, 5]])
    np.testing.assert_array_equal(cf, [[0, 1, 2], [1, 3, 2]])


def test_report_statistics_by_hand():
    per = [{"nose": 1.0, "mouth": 2.0, "forehead": 3.0, "cheek": 4.0},
           {"nose": 3.0, "mouth": 2.0, "forehead": 1.0, "cheek": 2.0},
           {"nose": 2.0, "mouth": 5.0, "forehead": 2.0, "cheek": 0.0}]
    rep = R.realy_report(per)
    assert rep.regions["nose"].mean_mm == pytest.approx(2.0)
    assert rep.regions["mouth"].median_mm == pytest.approx(2.0)
    assert rep.regions["mouth"].std_mm == pytest.approx(np.sqrt(3.0))  # ddof 1
    assert rep.all_mm == pytest.approx((2.0 + 3.0 + 2.0 + 2.0) / 4)
    assert np.isnan(R.realy_report([{"nose": 1.0}]).all_mm)


def test_gicp_scale_is_realys_l1_ratio():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(7, 3))
    dst = 2.5 * src + [1.0, 2.0, 3.0]
    tf = R.realy_keypoint_similarity(src, dst)
    assert tf.scale == pytest.approx(2.5)
    np.testing.assert_allclose(tf.apply(src), dst, atol=1e-9)
    noisy = dst + rng.normal(scale=0.1, size=dst.shape)
    tf = R.realy_keypoint_similarity(src, noisy)
    xs, xd = src - src.mean(0), noisy - noisy.mean(0)
    assert tf.scale == pytest.approx(np.abs(xd).sum() / np.abs(xs @ tf.rotation.T).sum())


# ----------------------------------------------------------------------------------------
# Loader, scoring, errors
# ----------------------------------------------------------------------------------------


def test_loader_reads_the_official_layout_and_scores_regions(realy_root):
    ds = RealyDataset(root=realy_root)
    assert ds.availability().ok, ds.availability()
    assert ds.sample_ids() == ["1_frontal", "2_frontal", "2_left"]
    s = ds.load_sample("2_left")
    assert s.subject == "2" and LOAD_ERROR not in s.meta
    truth = s.meta["realy"]
    assert truth.keypoints.shape == (85, 3) and truth.metrical_scale == pytest.approx(SCALES[1])
    assert set(truth.regions) == {"nose", "mouth", "forehead", "cheek"}
    row, _ = score_sample(s, plate_prediction(), ScoringParams(closed_threshold=0.18))
    assert row["status"] == "ok"
    assert row["realy_nose_mm"] == pytest.approx(D / 2 * SCALES[1], rel=1e-5)
    for name in ("mouth", "forehead", "cheek"):
        assert np.isfinite(row[f"realy_{name}_mm"]) and row[f"realy_{name}_mm"] > 0
    assert len(ds.revision()) == 12


def test_partial_layouts_name_the_first_missing_path(realy_root, tmp_path):
    ds = RealyDataset(root=tmp_path / "nowhere")
    assert not ds.availability().ok
    assert "REALY_ROOT" in RealyDataset().availability().fix
    import shutil

    (realy_root / "metrical_scale.txt").unlink()
    av = RealyDataset(root=realy_root).availability()
    assert not av.ok and "metrical_scale.txt" in av.reason and "czh-98/REALY" in av.fix
    shutil.rmtree(realy_root / "REALY_scan_region")
    av = RealyDataset(root=realy_root).availability()
    assert not av.ok and "REALY_scan_region" in av.reason
    assert "REALY_HIFI3D_keypoints" in av.fix  # the expected layout comes with it
    av = RealyDataset(root=realy_root, images="multiview").availability()
    assert not av.ok


def test_per_subject_problems_are_error_rows(realy_root):
    (realy_root / "REALY_scan_region" / "2" / "cheek.obj").unlink()
    ds = RealyDataset(root=realy_root)
    assert ds.availability().ok
    assert LOAD_ERROR not in ds.load_sample("1_frontal").meta
    bad = ds.load_sample("2_frontal")
    assert "cheek.obj" in bad.meta[LOAD_ERROR]
    with pytest.raises(SampleError, match="cheek.obj"):
        checked_input(bad)
    (realy_root / "metrical_scale.txt").write_text("8.0\n")
    ds = RealyDataset(root=realy_root)
    assert "subject 2" in ds.load_sample("2_left").meta[LOAD_ERROR]


def test_image_set_option_and_image_names(realy_root):
    alt = realy_root / "REALY_image" / "multiview"
    alt.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(alt / "1_3.png")
    assert RealyDataset(root=realy_root).sample_ids()[0] == "1_frontal"
    ds = RealyDataset(root=realy_root, images="multiview")
    assert ds.sample_ids() == ["1_3"]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(alt / "face.png")
    assert "subject number" in ds.__class__(root=realy_root, images="multiview") \
        .load_sample("face").meta[LOAD_ERROR]


# ----------------------------------------------------------------------------------------
# The eye region on ground-truth meshes
# ----------------------------------------------------------------------------------------


def test_eye_region_column_separates_closed_from_open_eyes():
    """Closed GT eyes: an open-eyed prediction scores worse than a closed-eyed one."""
    from methods.facemodel import load_ict
    from methods.topology import get_topology

    full = load_ict("full")
    narrow = load_ict("narrow")
    rng = np.random.default_rng(0)
    ident = rng.normal(size=20) * 0.8
    closed = np.zeros(full.n_exp)
    closed[[full.exp_index("eyeBlink_L"), full.exp_index("eyeBlink_R")]] = 1.1
    gt = full.vertices(ident, closed)
    sample = FaceSample(id="x", subject="s", image=np.zeros((4, 4, 3), np.uint8),
                        gt_vertices=gt, gt_topology="ict-full")
    params = ScoringParams(closed_threshold=0.18)
    rows = {}
    for name, ex in (("open", np.zeros(full.n_exp)), ("closed", closed)):
        verts = narrow.vertices(ident, ex)
        pred = Prediction(status="ok", vertices=verts, topology=get_topology("ict-narrow"))
        rows[name], _ = score_sample(sample, pred, params)
    oracle = Prediction(status="ok", vertices=gt, topology=get_topology("ict-full"))
    rows["oracle"], _ = score_sample(sample, oracle, params)
    assert rows["oracle"]["eye_region_s2m_mm"] < 1e-3
    assert rows["closed"]["eye_region_s2m_mm"] < 0.05
    assert rows["open"]["eye_region_s2m_mm"] > rows["closed"]["eye_region_s2m_mm"] + 0.3
    # a wink (subject's right eye, eye 0, closed): only that eye's half scores badly
    wink = np.zeros(full.n_exp)
    wink[full.exp_index("eyeBlink_R")] = 1.1
    wsample = dataclasses.replace(sample, gt_vertices=full.vertices(ident, wink),
                                  eye_state=np.array([1, 0], np.int8))
    open_pred = Prediction(status="ok", vertices=narrow.vertices(ident, np.zeros(full.n_exp)),
                           topology=get_topology("ict-narrow"))
    wrow, _ = score_sample(wsample, open_pred, params)
    assert wrow["eye_region_0_mm"] > wrow["eye_region_1_mm"] + 0.5
    table = ScoreTable(rows=[wrow], distances={})
    agg = aggregate(table, n_boot=0, names=["eye_region_closed_mm", "eye_region_open_mm"])
    assert agg["eye_region_closed_mm"].value == pytest.approx(wrow["eye_region_0_mm"])
    assert agg["eye_region_open_mm"].value == pytest.approx(wrow["eye_region_1_mm"])
    # samples without a ground-truth mesh get no eye-region column
    plain = dataclasses.replace(sample, gt_vertices=None, gt_topology=None)
    row, _ = score_sample(plain, oracle, params)
    assert "eye_region_s2m_mm" not in row


def test_eye_region_reuses_a_prebuilt_surface_with_the_same_answer():
    """Scoring hands S2M's search tree to the eye-region metric: same error, no rebuild."""
    from methods.facemodel import load_ict
    from methods.topology import get_topology
    from metrics import MeshSurface, eye_region_s2m

    full, narrow = load_ict("full"), load_ict("narrow")
    rng = np.random.default_rng(1)
    ident = rng.normal(size=20) * 0.8
    closed = np.zeros(full.n_exp)
    closed[full.exp_index("eyeBlink_L")] = 1.1
    gt = full.vertices(ident, closed)
    topo = get_topology("ict-full")
    mask = topo.regions["eyes"]
    verts = narrow.vertices(ident, np.zeros(full.n_exp)).astype(np.float64)
    lmk = get_topology("ict-narrow").landmarks(verts)
    args = (verts, narrow.faces, lmk, gt[mask], topo.landmarks(gt))
    fresh = eye_region_s2m(*args)
    shared = eye_region_s2m(*args, surface=MeshSurface(verts, narrow.faces))
    o3d = eye_region_s2m(*args, backend="open3d")
    assert fresh.mean_mm > 0.3  # an open eye against a closed one: a real error
    np.testing.assert_allclose(shared.distances_mm, fresh.distances_mm, atol=1e-9)
    np.testing.assert_allclose(o3d.distances_mm, fresh.distances_mm, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Leaderboard
# ----------------------------------------------------------------------------------------


def test_leaderboard_has_a_realy_table_where_records_exist():
    from benchmark.leaderboard import realy_table, render_markdown
    from benchmark.results import RunRecord

    def record(method: str, base: float) -> RunRecord:
        metrics = {}
        for k, region in enumerate(R.REALY_REGIONS):
            metrics[f"realy_{region}_mm"] = {"value": base + k}
            metrics[f"realy_{region}_median_mm"] = {"value": base + k - 0.1}
            metrics[f"realy_{region}_std_mm"] = {"value": 0.5}
        metrics["realy_all_mm"] = {"value": base + 1.5}
        return RunRecord(method=method, dataset="realy", split="test", status="ok",
                         n_samples=3, metrics=metrics,
                         dataset_card={"card_file": "realy.md", "description": "REALY"})

    recs = [record("b", 2.0), record("a", 1.0)]
    lines = realy_table(recs)
    assert lines[2] == "| method | nose | mouth | forehead | cheek | all |"
    assert lines[4].startswith("| `a` | 1.000 / 0.900 / 0.500 | 2.000 / 1.900 / 0.500")
    assert lines[4].endswith("| 2.500 |") and lines[5].startswith("| `b` |")
    text = render_markdown(recs)
    assert "REALY per region" in text and "REALY all (mm) ↓" in text
    assert realy_table([dataclasses.replace(recs[0], metrics={})]) == []


def test_realy_scores_the_neutral_mesh_when_the_runner_flags_neutral_scans(realy_root):
    from benchmark.datasets.base import load_sample_or_error

    ds = RealyDataset(root=realy_root)
    sample = load_sample_or_error(ds, "1_frontal")
    assert sample.meta.get("scans_neutral") is True
    plate = plate_prediction()
    posed = plate.vertices.copy()
    posed[:, 2] += np.sin(posed[:, 0])  # an "expression" that changes the surface
    pred = dataclasses.replace(plate, vertices=posed, neutral_vertices=plate.vertices)
    row, _ = score_sample(sample, pred, ScoringParams(closed_threshold=0.18))
    assert row["realy_nose_mm"] == pytest.approx(D / 2 * SCALES[0], rel=1e-5)
