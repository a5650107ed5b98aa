"""Leaderboard rendering against a golden file, record schema, and the CLI surface."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmark.cli import build_parser, main
from benchmark.leaderboard import render_console, render_markdown
from benchmark.report import build_report
from benchmark.results import SCHEMA_VERSION, RunRecord, load_records
from benchmark.scoring import METRICS

DATA = Path(__file__).parent / "data"
GOLDEN_RESULTS = DATA / "golden_results"
GOLDEN_MD = DATA / "LEADERBOARD.golden.md"


def test_every_fixture_record_loads():
    paths = sorted(GOLDEN_RESULTS.glob("runs/*/*/result.json"))
    assert paths
    for p in paths:
        rec = RunRecord.from_disk(p)
        assert rec.schema_version == SCHEMA_VERSION
        assert set(rec.metrics) <= set(METRICS.names())


def test_leaderboard_matches_golden_file():
    text = render_markdown(load_records(GOLDEN_RESULTS))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN_MD.write_text(text)
    assert text == GOLDEN_MD.read_text(), (
        "leaderboard rendering changed; if intended, rerun with UPDATE_GOLDEN=1 and review "
        "the diff of tests/data/LEADERBOARD.golden.md")


def test_leaderboard_bolds_best_and_lists_skipped():
    text = render_markdown(load_records(GOLDEN_RESULTS))
    row = next(line for line in text.splitlines() if line.startswith("| `mean-shape`"))
    assert "**" not in row.split("|")[1]  # the floor method wins no eye column
    assert "`import` — skipped:" in text and "Fix:" in text
    console = render_console(load_records(GOLDEN_RESULTS))
    assert "mean-shape" in console and "import: skipped" in console


def test_wrong_schema_version_is_a_clear_error(tmp_path):
    src = next(GOLDEN_RESULTS.glob("runs/*/*/result.json"))
    data = json.loads(src.read_text())
    data["schema_version"] = 99
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema_version 99"):
        RunRecord.from_disk(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        RunRecord.from_disk(bad)


def test_report_writes_plots_from_records_alone(tmp_path):
    out = tmp_path / "results"
    shutil.copytree(GOLDEN_RESULTS, out)
    path = build_report(out, cache_root=tmp_path / "no-cache")
    text = path.read_text()
    assert (out / "plots/tiny__test/cumulative_error.png").stat().st_size > 5000
    assert (out / "plots/tiny__test/eye_confusion.png").stat().st_size > 5000
    assert "plots/tiny__test/cumulative_error.png" in text


def test_every_subcommand_has_examples():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.epilog and "python -m benchmark" in p.epilog, name


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["run", "--methods", "mean-shap", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'mean-shap'. Did you mean 'mean-shape'")
    assert main(["leaderboard", "--output-dir", str(tmp_path / "empty")]) == 2
    assert "no run records" in capsys.readouterr().err


def test_cli_ls_lists_every_method_with_status(capsys):
    from methods import METHODS

    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert name in out
    assert "skipped:" in out and "available" in out
    assert main(["ls", "metrics"]) == 0
    assert "s2m_median_mm" in capsys.readouterr().out


def test_methods_on_the_ground_truths_face_model_are_marked():
    records = load_records(GOLDEN_RESULTS)
    for r in records:
        r.dataset_card["gt_face_model"] = "ict"
    text = render_markdown(records)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| `")}
    marked = {name for name in rows if name.endswith("ᵐ")}
    expected = {f"`{r.method}` ᵐ" for r in records
                if r.status == "ok" and r.method_card["topology"].startswith("ict")}
    assert expected and marked == expected
    assert "ᵐ built on the face model" in text
    for r in records:
        r.dataset_card["gt_face_model"] = "bfm"
    assert "ᵐ" not in render_markdown(records)


def test_methods_on_user_supplied_official_files_say_where_they_come_from():
    records = load_records(GOLDEN_RESULTS)
    rec = next(r for r in records if r.method == "mean-shape")
    rec.method_card["required_files"] = ["the official bundle (vendor page)"]
    text = render_markdown(records)
    assert "| `mean-shape` ʷ |" in text
    note = next(line for line in text.splitlines() if line.startswith("- ʷ"))
    assert "`mean-shape`: the official bundle (vendor page)." in note


def test_qualitative_meshes_are_z_buffered():
    """The qualitative grid rasterises meshes: each pixel shows the nearest triangle."""
    import numpy as np

    from benchmark.plots import _zbuffer

    uv = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    faces = np.array([[0, 1, 2], [1, 3, 2], [0, 1, 3]])
    far_first = np.array([5.0, 5.0, 5.0, 1.0])  # triangle 2 runs down to depth 1 at (10, 10)
    ids = _zbuffer(uv, far_first, faces, 10, 10)
    assert ids.shape == (10, 10) and (ids >= 0).all()
    assert ids[8, 0] == 0 and ids[9, 1] == 1  # only one triangle covers these pixels
    assert ids[4, 8] == 2  # both 0/1 and 2 cover it; 2 is nearer there
    # half the square, the 10 pixel centres on the diagonal edge included
    assert (_zbuffer(uv, far_first, faces[:1], 10, 10) >= 0).sum() == 55
