"""The static web leaderboard (``leaderboard --html``): encoding, data, privacy, real browser.

The site is built from a tiny real run (mean-shape + oracle on 6 synthetic samples). The
browser tests (marker ``browser``) drive Debian's chromium headless through Playwright; they
are skipped with the reason when either is missing (CI installs both: ``.ci/run``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.site import writer as W

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


def _payload(path: Path) -> dict:
    """The JSON argument of a ``callback({...});`` data file."""
    text = path.read_text()
    return json.loads(text[text.index("(") + 1: text.rindex(")")])


def _site_data(site: Path) -> dict:
    text = (site / "data" / "site.js").read_text()
    return json.loads(text[text.index("=") + 1:].strip().rstrip(";"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site-run")
    rc = main(["run", "--methods", "mean-shape,oracle", "--datasets", "synthetic", "--limit", "6",
               "--output-dir", str(out), "--bootstrap", "20", "--no-plots", "-v", "0"])
    assert rc == 0
    ablation = ROOT / "results" / "ablation" / "ablation.json"
    if ablation.is_file():
        (out / "ablation").mkdir()
        shutil.copy(ablation, out / "ablation" / "ablation.json")
    return out


@pytest.fixture(scope="module")
def site(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["leaderboard", "--output-dir", str(run_dir), "--no-plots", "--html", str(out),
                 "-v", "0"]) == 0
    return out


# ---------------------------------------------------------------------------- encoding


def test_positions_round_trip_to_half_a_step():
    rng = np.random.default_rng(0)
    pts = rng.normal(scale=0.05, size=(500, 3))
    centre = pts.mean(axis=0)
    enc = W.encode_positions(pts, centre)
    back = W.decode_positions(enc)
    assert np.abs(back - (pts - centre)).max() <= W.QUANT_STEP_M / 2 + 1e-12


def test_template_coding_round_trip_and_is_small_for_similar_meshes():
    rng = np.random.default_rng(1)
    template = rng.normal(scale=0.05, size=(3000, 3))
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1]])
    mesh = 1.1 * template @ rot.T + [0.01, -0.02, 0.3] + rng.normal(scale=5e-4,
                                                                     size=template.shape)
    enc = W.encode_on_template(mesh, template)
    back = W.decode_on_template(enc, template)
    assert np.abs(back - mesh).max() <= W.QUANT_STEP_M / 2 + 1e-9
    plain = W.encode_positions(mesh, mesh.mean(axis=0))
    assert len(enc["b64"]) < 0.8 * len(plain["b64"])


def test_faces_and_errors_round_trip():
    import base64
    import zlib

    faces = np.array([[0, 1, 2], [2, 1, 3], [5, 4, 0]])
    enc = W.encode_faces(faces)
    delta = np.frombuffer(zlib.decompress(base64.b64decode(enc["b64"])), "<i4")
    assert np.array_equal(np.cumsum(delta).reshape(-1, 3), faces)
    q = np.frombuffer(zlib.decompress(base64.b64decode(W.encode_errors(
        np.array([0.0, 0.26, np.nan, 99.0])))), np.uint8)
    assert q.tolist() == [0, 1, 255, round(W.ERR_CLIP_MM / W.ERR_STEP_MM)]


def test_pick_samples_covers_every_state_deterministically():
    def row(i, a, b, gt=0.3):
        return {"sample_id": f"s{i}", "eye_true_0": a, "eye_true_1": b,
                "openness_gt_0": gt, "openness_gt_1": gt}

    rows = ([row(i, 0, 0) for i in range(20)] + [row(20 + i, 1, 1) for i in range(5)]
            + [row(30, 1, 0), row(31, 0, 1)] + [row(40 + i, -1, -1) for i in range(4)])
    picked = W.pick_samples(rows, 8)
    assert len(picked) == 8
    assert {W.category(r) for r in picked} == {"open", "closed", "wink", "half"}
    assert [r["sample_id"] for r in picked] == [r["sample_id"] for r in W.pick_samples(rows, 8)]
    ids = [r["sample_id"] for r in picked]
    assert ids == sorted(ids, key=lambda s: int(s[1:]))  # record order kept
    assert len(W.pick_samples(rows, 1000)) == len(rows)


def test_md_blocks_turn_eye_check_lines_into_tables():
    blocks = W.md_blocks(["Fair coverage: text", "", "| method | a ↑ |", "|---|---|",
                          "| `x` | **0.5** [0.1, 0.9] |", ""])
    assert blocks[0] == {"kind": "text", "text": "Fair coverage: text"}
    assert blocks[1] == {"kind": "table", "header": ["method", "a ↑"],
                         "rows": [["x", "0.5 [0.1, 0.9]"]]}


# ---------------------------------------------------------------------------- site content


def test_site_holds_tables_curves_confusion_ablation_and_samples(site, run_dir):
    assert (site / "index.html").is_file()
    assert (site / "assets" / "vendor" / "three.min.js").is_file()
    assert (site / "assets" / "vendor" / "LICENSE-three.txt").is_file()
    html = (site / "index.html").read_text()
    assert 'type="module"' not in html and "http" not in html.replace(
        'http://www.w3.org', '')  # no module scripts, no remote URL
    data = _site_data(site)
    (sec,) = data["sections"]
    cols = [c["name"] for c in sec["table"]["columns"]]
    assert "eye_f1" in cols and "s2m_median_mm" in cols
    rows = {r["method"]: r for r in sec["table"]["rows"]}
    record = json.loads((run_dir / "runs" / "synthetic__test" / "oracle" / "result.json")
                        .read_text())
    cell = rows["oracle"]["cells"][cols.index("s2m_median_mm")]
    assert cell["v"] == pytest.approx(record["metrics"]["s2m_median_mm"]["value"])
    assert cell["lo"] == pytest.approx(record["metrics"]["s2m_median_mm"]["ci_low"])
    assert {c["method"] for c in sec["curves"]} == {"oracle", "mean-shape"}
    assert len(sec["curves"][0]["per_point"]) == len(sec["curves"][0]["thresholds_mm"])
    conf = {c["method"]: c for c in sec["confusion"]}
    assert conf["oracle"]["per_eye"] == record["confusion"]["per_eye"]
    assert any(b["kind"] == "table" and b["header"][0] == "method" for b in sec["blocks"])
    if (run_dir / "ablation" / "ablation.json").is_file():
        assert data["ablation"]["datasets"][0]["table"]["rows"]
    browser = sec["browser"]
    assert len(browser["samples"]) == 6 and browser["images"] and browser["meshes"]


def test_site_meshes_are_the_cached_predictions(site, run_dir):
    from benchmark.cache import PredictionCache
    from benchmark.config import default_cache_dir
    from benchmark.results import RunRecord
    from metrics.alignment import umeyama

    data = _site_data(site)
    sample = data["sections"][0]["browser"]["samples"][3]
    payload = _payload(site / sample["file"])
    assert payload["image"].startswith("data:image/jpeg;base64,")
    rec = RunRecord.from_disk(run_dir / "runs" / "synthetic__test" / "oracle" / "result.json")
    cache = PredictionCache(default_cache_dir() / "predictions" / rec.dataset / rec.split
                            / rec.method / f"{rec.method_revision}-{rec.dataset_revision}")
    pred = cache.get(sample["id"])
    mesh = payload["meshes"]["oracle"]
    topo = _payload(site / data["topologies"][mesh["topology"]])
    assert mesh["base"] == {"template": "oracle"}  # the first mesh of its topology here
    template = W.decode_positions(topo["templates"]["oracle"])
    verts = W.decode_on_template(mesh["pos"], template)
    faces = np.cumsum(np.frombuffer(__import__("zlib").decompress(
        __import__("base64").b64decode(topo["faces"]["b64"])), "<i4")).reshape(-1, 3)
    assert np.array_equal(faces, pred.topology.faces)
    # same shape as the cached mesh: a similarity maps one onto the other to the quantum
    fit = umeyama(pred.vertices.astype(np.float64), verts)
    assert np.abs(fit.apply(pred.vertices) - verts).max() < 3e-4
    # the scan is coloured by the stored NoW distances: oracle's are small
    err = np.frombuffer(__import__("zlib").decompress(__import__("base64").b64decode(
        mesh["err"])), np.uint8)
    assert len(err) == payload["scan"]["pos"]["n"]
    assert np.median(err[err < 255]) * W.ERR_STEP_MM < 0.5


def test_research_only_data_never_shows_images_and_no_meshes_in_tracked_folders(
        run_dir, tmp_path):
    out = tmp_path / "records"
    shutil.copytree(run_dir, out)
    for path in out.glob("runs/*/*/result.json"):
        rec = json.loads(path.read_text())
        rec["dataset_card"]["redistributable"] = False
        path.write_text(json.dumps(rec))
    private = tmp_path / "private-site"
    W.write_site(out, private, samples_per_section=4)
    data = _site_data(private)
    browser = data["sections"][0]["browser"]
    assert not browser["images"] and browser["meshes"]  # untracked folder: meshes, no images
    for s in browser["samples"]:
        assert _payload(private / s["file"])["image"] is None
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    tracked = repo / "site"
    W.write_site(out, tracked, samples_per_section=4)
    browser = _site_data(tracked)["sections"][0]["browser"]
    assert not browser["meshes"]
    for s in browser["samples"]:
        p = _payload(tracked / s["file"])
        assert p["image"] is None and p["meshes"] == {} and p["scan"] is None
    assert not list((tracked / "data").glob("topology/*.js"))


def test_html_refuses_a_folder_that_holds_something_else(run_dir, tmp_path, capsys):
    busy = tmp_path / "busy"
    (busy / "data").mkdir(parents=True)
    (busy / "data" / "keep.txt").write_text("mine")
    assert main(["leaderboard", "--output-dir", str(run_dir), "--no-plots", "--html", str(busy),
                 "-v", "0"]) == 2
    assert "holds no eyebench site" in capsys.readouterr().err
    assert (busy / "data" / "keep.txt").read_text() == "mine"


def test_site_size_is_bounded(site):
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert total < 3_000_000, total


# ---------------------------------------------------------------------------- real browser

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # WebGL without a GPU: SwiftShader through ANGLE
                 "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _browser_or_skip():
    reason = None
    if not CHROMIUM.is_file():
        reason = ("Debian's chromium is not installed (/usr/bin/chromium): "
                  "bash scripts/setup.sh --browser")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright pip package is missing: bash scripts/setup.sh --browser"
    if reason:
        if os.environ.get("EYEBENCH_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def page(site, tmp_path_factory):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=BROWSER_FLAGS,
            viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.messages = []
        pg.on("console", lambda m: pg.messages.append((m.type, m.text)))
        pg.on("pageerror", lambda e: pg.messages.append(("pageerror", str(e))))
        pg.on("requestfailed", lambda r: pg.messages.append(("requestfailed", r.url)))
        pg.goto((site / "index.html").as_uri())
        pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
        yield pg
        ctx.close()


def _errors(pg) -> list:
    return [m for m in pg.messages if m[0] in ("error", "pageerror", "requestfailed")]


@pytest.mark.browser
def test_page_loads_without_console_errors(page):
    assert _errors(page) == []
    assert page.locator("#table-0 tbody tr").count() == 2
    assert "[" in page.inner_text("#table-0 tbody")  # confidence intervals shown


@pytest.mark.browser
def test_a_table_sorts_on_a_header_click(page):
    data = _site_data(Path(page.url.replace("file://", "")).parent)
    cols = [c["name"] for c in data["sections"][0]["table"]["columns"]]
    header = page.locator("#table-0 th").nth(1 + cols.index("s2m_median_mm"))

    def first_method():  # the method name, without its footnote marks (ᵐ, ᶜ, ...)
        return page.inner_text("#table-0 tbody tr:first-child td:first-child").split()[0]

    header.click()  # lower is better: best (oracle) first
    assert header.get_attribute("aria-sort") == "ascending"
    assert first_method() == "oracle"
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert first_method() == "mean-shape"


@pytest.mark.browser
def test_curves_hover_and_toggle(page):
    svg = page.locator("#curve-0")
    box = svg.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    tip = page.locator(".tooltip").first
    assert tip.is_visible() and "oracle" in tip.inner_text() and "%" in tip.inner_text()
    page.locator(".legend input[data-method='oracle']").uncheck()
    assert page.locator("#curve-0 path[data-method='oracle']").is_hidden()
    page.locator(".legend input[data-method='oracle']").check()
    assert page.locator("#curve-0 path[data-method='oracle']").is_visible()


@pytest.mark.browser
def test_filters_filter_the_sample_list(page):
    items = page.locator("#sample-list .sample-item")
    assert items.count() == 6
    page.select_option("#filter-state", "wink")
    cats = [items.nth(i).get_attribute("data-category") for i in range(items.count())]
    assert 0 < len(cats) < 6 and set(cats) == {"wink"}
    page.select_option("#filter-state", "all")
    page.select_option("#filter-method", "mean-shape")
    page.select_option("#filter-result", "wrong")
    wrong = items.count()
    page.select_option("#filter-result", "right")
    right = items.count()
    assert wrong > 0 and right > 0 and wrong + right <= 6  # mean-shape never closes an eye
    page.select_option("#filter-result", "all")
    assert items.count() == 6


@pytest.mark.browser
def test_viewer_draws_the_mesh_and_the_coloured_scan(page):
    from PIL import Image

    page.locator("#sample-list .sample-item").nth(2).click()
    page.wait_for_selector("#viewer[data-ready='1']", timeout=30_000)
    assert "scan-to-mesh distance" in page.inner_text("#viewer-status")
    img = np.asarray(Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB"))
    bg = np.array([0xEE, 0xF1, 0xF6])
    drawn = np.abs(img.astype(int) - bg).sum(axis=2) > 30
    assert drawn.mean() > 0.03, drawn.mean()
    h, w = drawn.shape
    assert drawn[:, : w // 2].mean() > 0.01 and drawn[:, w // 2:].mean() > 0.01  # mesh | scan
    page.mouse.move(w // 2, h // 2)
    page.locator("#viewer").hover()
    page.mouse.wheel(0, -400)  # zoom in: more pixels drawn
    page.wait_for_timeout(300)
    img2 = np.asarray(Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB"))
    drawn2 = np.abs(img2.astype(int) - bg).sum(axis=2) > 30
    assert drawn2.mean() > drawn.mean()
    assert _errors(page) == []
