"""benchmark.score_mesh: file readers, score_mesh() and the score-mesh subcommand."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmark.meshio import read_landmarks, read_mesh, read_obj
from benchmark.score_mesh import add_subcommand, score_mesh
from metrics import now_scan_to_mesh
from tests.test_metrics_now import make_now_case

pytest.importorskip("open3d")


def write_obj(path, verts, faces, colours=False):
    with open(path, "w") as fh:
        fh.write("# test mesh\n")
        for v in verts:
            extra = " 0.5 0.25 1.0" if colours else ""
            fh.write(f"v {v[0]:.9f} {v[1]:.9f} {v[2]:.9f}{extra}\n")
        fh.write("vn 0 0 1\n")
        for f in faces:
            fh.write(f"f {f[0] + 1}//1 {f[1] + 1}//1 {f[2] + 1}//1\n")


def write_pp(path, lmk):
    pts = "\n".join(
        f' <point x="{p[0]:.9f}" y="{p[1]:.9f}" z="{p[2]:.9f}" active="1" name="{i}"/>'
        for i, p in enumerate(lmk)
    )
    path.write_text(
        f"<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n"
        f'  <DataFileName name="scan.obj"/>\n </DocumentData>\n{pts}\n</PickedPoints>\n'
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A NoW-like case on disk: prediction in metres (.obj with colours), scan in mm."""
    c = make_now_case(n_scan=3000, seed=5)
    d = tmp_path_factory.mktemp("now")
    write_obj(d / "pred.obj", c["pred_vertices"], c["pred_faces"], colours=True)
    np.save(d / "pred.npy", c["pred_landmarks7"])
    np.savetxt(d / "pred.txt", c["pred_landmarks7"])
    scan_mm = c["scan_points"] * 1000
    with open(d / "scan.obj", "w") as fh:
        np.savetxt(fh, scan_mm, fmt="v %.6f %.6f %.6f")
    write_pp(d / "scan.pp", c["scan_landmarks7"] * 1000)
    return d, c


def test_read_obj_colours_polygons_negative_indices(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text(
        "v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 1 1 0 0 0 1\nv 0 1 0 1 1 1\n"
        "vt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1 4/1/1\nf -4 -2 -1\n"
    )
    v, f = read_obj(p)
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    p.write_text("v 0 0\n")
    with pytest.raises(ValueError, match="3 numbers"):
        read_obj(p)
    p.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no vertex"):
        read_obj(p)
    with pytest.raises(FileNotFoundError):
        read_obj(tmp_path / "missing.obj")


def test_read_mesh_ply_and_point_cloud(tmp_path):
    import open3d as o3d

    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = np.array([[0, 1, 2], [0, 1, 3]])
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f))
    o3d.io.write_triangle_mesh(str(tmp_path / "m.ply"), mesh)
    rv, rf = read_mesh(tmp_path / "m.ply")
    np.testing.assert_allclose(rv, v)
    np.testing.assert_array_equal(rf, f)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(v))
    o3d.io.write_point_cloud(str(tmp_path / "p.ply"), pc)
    pv, pf = read_mesh(tmp_path / "p.ply", allow_points=True)
    np.testing.assert_allclose(pv, v)
    assert pf.shape == (0, 3)
    with pytest.raises(ValueError, match="no triangles"):
        read_mesh(tmp_path / "p.ply")


def test_read_landmarks_formats(files, tmp_path):
    d, c = files
    np.testing.assert_allclose(read_landmarks(d / "pred.npy"), c["pred_landmarks7"])
    np.testing.assert_allclose(read_landmarks(d / "pred.txt"), c["pred_landmarks7"])
    np.testing.assert_allclose(read_landmarks(d / "scan.pp"), c["scan_landmarks7"] * 1000,
                               atol=1e-6)
    np.save(tmp_path / "six.npy", np.zeros((6, 3)))
    with pytest.raises(ValueError, match="7 points"):
        read_landmarks(tmp_path / "six.npy")
    (tmp_path / "l.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="unknown format"):
        read_landmarks(tmp_path / "l.csv")
    (tmp_path / "bad.pp").write_text("<PickedPoints><point x='1'/>")
    with pytest.raises(ValueError, match="could not parse"):
        read_landmarks(tmp_path / "bad.pp")


def test_score_mesh_matches_array_api(files):
    d, c = files
    res = score_mesh(d / "pred.obj", d / "pred.npy", d / "scan.obj", d / "scan.pp",
                     unit="m", scan_unit="mm")
    ref = now_scan_to_mesh(**c)
    np.testing.assert_allclose(res.distances_mm, ref.distances_mm, atol=1e-4)
    assert res.median_mm == pytest.approx(ref.median_mm, abs=1e-4)


def test_score_mesh_unit_mismatch_names_the_file(files):
    d, _ = files
    with pytest.raises(ValueError, match="scan scan.obj: .* looks like mm"):
        score_mesh(d / "pred.obj", d / "pred.npy", d / "scan.obj", d / "scan.pp",
                   unit="m", scan_unit="m")
    with pytest.raises(ValueError, match="predicted mesh pred.obj: .* looks like m"):
        score_mesh(d / "pred.obj", d / "pred.npy", d / "scan.obj", d / "scan.pp",
                   unit="mm", scan_unit="mm")


def cli(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmark")
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_now_figures(files, capsys, tmp_path):
    d, c = files
    out_d = tmp_path / "d.npy"
    out_m = tmp_path / "aligned.obj"
    rc = cli(["score-mesh", str(d / "pred.obj"), str(d / "pred.txt"), str(d / "scan.obj"),
              str(d / "scan.pp"), "--json", "--distances-out", str(out_d),
              "--aligned-out", str(out_m)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"] == "now" and summary["converged"]
    assert summary["n_points"] == len(c["scan_points"])
    dists = np.load(out_d)
    assert summary["median_mm"] == pytest.approx(float(np.median(dists)), abs=1e-3)
    v, f = read_obj(out_m)  # aligned mesh, in the scan's unit (mm)
    assert f.shape == c["pred_faces"].shape
    assert 100 < np.linalg.norm(v.max(0) - v.min(0)) < 400
    rc = cli(["score-mesh", str(d / "pred.obj"), str(d / "pred.npy"), str(d / "scan.obj"),
              str(d / "scan.pp"), "--metrical"])
    text = capsys.readouterr().out
    assert rc == 0 and "now-metrical" in text and "median" in text and "mm" in text


def test_cli_error_is_one_line(files, capsys):
    d, _ = files
    rc = cli(["score-mesh", str(d / "nope.obj"), str(d / "pred.npy"), str(d / "scan.obj"),
              str(d / "scan.pp")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("score-mesh: error:") and err.count("\n") == 1


def test_subcommand_has_usage_and_examples():
    parser = argparse.ArgumentParser(prog="python -m benchmark")
    sub = parser.add_subparsers()
    add_subcommand(sub)
    p = sub.choices["score-mesh"]
    assert "score-mesh" in p.format_usage()
    assert "python -m benchmark score-mesh" in p.epilog


def test_nan_vertices_are_named_with_file_and_count(files, capsys, tmp_path):
    d, c = files
    verts = c["pred_vertices"].astype(np.float64).copy()
    verts[[4, 9]] = np.nan
    verts[11, 0] = np.inf
    write_obj(tmp_path / "nan.obj", verts, c["pred_faces"])
    with pytest.raises(ValueError, match=r"nan\.obj.*3 of \d+ vertices have NaN or infinite "
                                         r"coordinates \(first: 5, 10, 12"):
        read_mesh(tmp_path / "nan.obj")
    rc = cli(["score-mesh", str(tmp_path / "nan.obj"), str(d / "pred.npy"),
              str(d / "scan.obj"), str(d / "scan.pp")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nan.obj" in err and "3 of" in err
    assert "not face-sized" not in err
    lmk = c["pred_landmarks7"].copy()
    lmk[2, 1] = np.nan
    np.save(tmp_path / "nan_lmk.npy", lmk)
    with pytest.raises(ValueError, match=r"nan_lmk\.npy.*1 of 7 landmarks"):
        read_landmarks(tmp_path / "nan_lmk.npy")
    (tmp_path / "bad_face.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(ValueError, match=r"bad_face\.obj.*outside 1\.\.3"):
        read_mesh(tmp_path / "bad_face.obj")
