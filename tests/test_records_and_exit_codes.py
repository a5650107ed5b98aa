"""Issue 11: records know their sample set and data instance; bad input gives one clear line
and the right exit code; nothing is lost, nothing lingers.

Every test feeds one bad input (or a risky sequence of runs) and checks the line printed,
the exit code and that no record was replaced.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import DEFAULT_OUTPUT_DIR, PROJECT_ROOT, RunConfig
from benchmark.datasets import DATASETS
from benchmark.leaderboard import render_console, render_markdown, sections
from benchmark.progress import PlainProgress
from benchmark.results import RunRecord, load_records, sample_set_digest
from benchmark.runner import run
from methods import METHODS
from methods.base import Method, MethodCard
from tests.conftest import CountingMethod, TinyDataset

GOLDEN_RESULTS = Path(__file__).parent / "data" / "golden_results"


class TinyFolder(TinyDataset):
    """The tiny faces as if read from a user's folder: a root, instance-keyed records."""

    card = dataclasses.replace(TinyDataset.card, name="tiny-folder", root_env="EYEBENCH_TINY",
                               instance_keyed=True)

    def revision(self) -> str:
        return f"tiny-folder-{self.root.name}"


class BrokenLoad(CountingMethod):
    """Fails to load with torch's kind of multi-line message."""

    card = MethodCard(name="broken-load", description="test", topology="ict-full",
                      license="MIT", reference="tests")

    def load(self, device: str) -> None:
        raise RuntimeError("Weights only load failed.\n(1) In PyTorch 2.6 ...\n"
                           "    (2) Alternatively ...\n\nCheck the documentation.")


@pytest.fixture()
def extra_registry(tiny_registry, monkeypatch):
    monkeypatch.delenv("EYEBENCH_TINY", raising=False)
    DATASETS.register("tiny-folder", TinyFolder)
    METHODS.register("broken-load", BrokenLoad)
    yield
    DATASETS.unregister("tiny-folder")
    METHODS.unregister("broken-load")


def _cli(tmp_path: Path, *args: str, datasets: str = "tiny", verbosity: int = 0) -> list[str]:
    return ["run", "--datasets", datasets, "--cache-dir", str(tmp_path / "cache"),
            "--bootstrap", "20", "--workers", "0", "--batch-size", "2", "--no-plots",
            "-v", str(verbosity), *args]


def _err_lines(capsys) -> tuple[str, list[str]]:
    cap = capsys.readouterr()
    return cap.out, [line for line in cap.err.splitlines() if line.strip()]


# -- records: sample set, instance, where limited runs go ------------------------------------

def test_record_carries_sample_set_and_instance(tiny_registry, run_config):
    cfg = dataclasses.replace(run_config, methods="counting", limit=4)
    rec = run(cfg, show_progress=False).records[0]
    ids = [f"tiny_{i:03d}" for i in range(4)]
    assert rec.sample_set == {"count": 4, "digest": sample_set_digest(ids), "limit": 4}
    assert sample_set_digest(ids[::-1]) == rec.sample_set["digest"]  # order-free
    assert rec.dataset_instance["root"] is None and rec.dataset_instance["key"] == ""
    assert rec.dataset_instance["content_digest"] == "tiny6"
    assert rec.folder(Path(cfg.output_dir)) == Path(cfg.output_dir) / "runs/tiny__test/counting"
    back = RunRecord.from_disk(rec.folder(Path(cfg.output_dir)) / "result.json")
    assert back.sample_set == rec.sample_set
    # the committed, pre-existing records keep loading (fields absent = empty)
    old = load_records(GOLDEN_RESULTS)
    assert old and all(r.sample_set == {} and r.key.count("__") == 1 for r in old)


def test_two_folders_never_overwrite_each_other(extra_registry, run_config, tmp_path):
    (tmp_path / "folder_a").mkdir()
    (tmp_path / "folder_b").mkdir()
    out = Path(run_config.output_dir)
    for name in ("folder_a", "folder_b"):
        cfg = dataclasses.replace(
            run_config, methods="mean-shape", datasets="tiny-folder", limit=2,
            output_dir=str(out), dataset_options={"tiny-folder": {"root": str(tmp_path / name)}})
        assert not run(cfg, show_progress=False).failed
    paths = sorted(out.glob("runs/*/mean-shape/result.json"))
    assert len(paths) == 2
    assert all(p.parent.parent.name.startswith("tiny-folder__test__") for p in paths)
    roots = {RunRecord.from_disk(p).dataset_instance["root"] for p in paths}
    assert roots == {str((tmp_path / n).resolve()) for n in ("folder_a", "folder_b")}
    text = render_markdown(load_records(out))
    assert f"## tiny-folder / test (`{tmp_path.resolve() / 'folder_a'}`)" in text
    assert f"## tiny-folder / test (`{tmp_path.resolve() / 'folder_b'}`)" in text
    # the real user-folder datasets are keyed the same way; the committed ones are not
    for name, keyed in (("photo-folder", True), ("now", True), ("synthetic", False),
                        ("real-faces-val", False)):
        assert DATASETS.get(name).card.instance_keyed is keyed, name


def test_limited_runs_stay_out_of_results(tiny_registry, tmp_path, capsys):
    cache = tmp_path / "cache"
    cfg = RunConfig(methods="counting", datasets="tiny", limit=2, cache_dir=str(cache),
                    bootstrap=20, workers=0)
    assert cfg.resolved_output_dir() == cache / "runs-limited" / "limit-2"
    assert RunConfig(cache_dir=str(cache)).resolved_output_dir() == DEFAULT_OUTPUT_DIR
    assert main(_cli(tmp_path, "--methods", "counting", "--limit", "2")) == 0
    out, _ = _err_lines(capsys)
    assert f"--limit 2 run: records written to {cache / 'runs-limited' / 'limit-2'}" in out
    assert (cache / "runs-limited/limit-2/runs/tiny__test/counting/result.json").is_file()
    assert not (DEFAULT_OUTPUT_DIR / "runs" / "tiny__test").exists()


def test_leaderboard_separates_sample_sets(tiny_registry, run_config):
    full = dataclasses.replace(run_config, methods="counting")
    run(full, show_progress=False)
    run(dataclasses.replace(full, methods="mean-shape", limit=4), show_progress=False)
    records = load_records(Path(run_config.output_dir))
    secs = sections(records)
    assert [r.method for r in secs["tiny__test"]] == ["counting"]
    other = [k for k in secs if k.startswith("tiny__test~")]
    assert len(other) == 1 and [r.method for r in secs[other[0]]] == ["mean-shape"]
    text = render_markdown(records)
    assert ("## tiny / test — other sample set: 4 samples, --limit 4; not comparable with the "
            "section above") in text
    main_table = text.split("## tiny / test\n")[1].split("## ")[0]
    assert "`counting`" in main_table and "`mean-shape`" not in main_table
    console = render_console(records)
    assert "other sample set: 4 samples" in console


# -- score never replaces a record with a thinner one ----------------------------------------

def test_score_without_predictions_keeps_the_record(tiny_registry, tmp_path, capsys):
    out = tmp_path / "results"
    args = _cli(tmp_path, "--methods", "counting", "--output-dir", str(out))
    assert main(args) == 0
    capsys.readouterr()
    path = out / "runs/tiny__test/counting/result.json"
    before = path.read_bytes()
    # re-score against an empty cache (a different $EYEBENCH_CACHE, a wiped .cache)
    score = ["score", *args[1:]]
    score[score.index("--cache-dir") + 1] = str(tmp_path / "empty-cache")
    assert main(score) == 1
    _, err = _err_lines(capsys)
    assert path.read_bytes() == before
    assert any("counting on tiny/test: 6 of 6 predictions are not cached" in line
               and "python -m benchmark run --methods counting --datasets tiny" in line
               and "--allow-fewer" in line for line in err)
    assert err[-1].startswith("FAILED: 1 requested item(s) produced no record")
    # explicitly allowed: the thinner record replaces the old one
    assert main([*score, "--allow-fewer"]) == 0
    assert RunRecord.from_disk(path).n_ok == 0


# -- exit codes: every requested pair without a record fails the command --------------------

def test_exit_codes_of_failed_pairs(extra_registry, tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "o")]
    # a requested method without its files: listed, exit 1
    assert main(_cli(tmp_path, "--methods", "counting,needs-file", *out)) == 1
    _, err = _err_lines(capsys)
    assert any(line.startswith("failed: needs-file on tiny/test: skipped: needs a checkpoint")
               for line in err)
    # the same method under --methods all: a listed, non-failing state
    cheap = "fit-*,elam*,ldl,deep3d-recipe,oracle,broken-load"
    assert main(_cli(tmp_path, "--methods", "all", "--exclude", cheap, *out)) == 0
    o, _ = _err_lines(capsys)
    assert "needs-file: skipped: needs a checkpoint" in o
    # a method that fails to load: exit 1, one line, also in LEADERBOARD.md
    assert main(_cli(tmp_path, "--methods", "broken-load", *out)) == 1
    _, err = _err_lines(capsys)
    assert any("broken-load on tiny/test: failed to load: RuntimeError: Weights only load "
               "failed. (1) In PyTorch 2.6 ... (2) Alternatively ... Check the documentation."
               in line for line in err)
    board = (tmp_path / "o" / "LEADERBOARD.md").read_text()
    line = next(x for x in board.splitlines() if x.startswith("- `broken-load`"))
    assert line.endswith("(2) Alternatively ... Check the documentation.")
    assert "\n(1)" not in board
    # a split that does not exist; a dataset with nothing in it
    assert main(_cli(tmp_path, "--methods", "counting", "--split", "val", *out)) == 1
    _, err = _err_lines(capsys)
    assert any("dataset tiny: " in x and "has no split 'val'" in x for x in err)
    assert main(_cli(tmp_path, "--methods", "counting", "--dataset-option", "tiny.n=0",
                     *out)) == 1
    _, err = _err_lines(capsys)
    assert "failed: dataset tiny: no samples to evaluate" in err
    # an unavailable dataset that was asked for by name
    assert main(_cli(tmp_path, "--methods", "counting", *out, datasets="tiny-folder")) == 1
    _, err = _err_lines(capsys)
    assert any(x.startswith("failed: dataset tiny-folder: skipped: no data root") for x in err)


def test_a_pair_where_every_sample_failed_fails_the_run(tiny_registry, run_config):
    CountingMethod.fail_on = {f"tiny_{i:03d}" for i in range(6)}
    summary = run(dataclasses.replace(run_config, methods="counting"), show_progress=False)
    assert summary.records[0].n_error == 6  # the record (errors are data) is written
    assert summary.failed == ["counting on tiny/test: every sample failed (6; first: "
                              "RuntimeError: boom on tiny_000)"]


def test_unknown_option_keys_are_refused(extra_registry, tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "o")]
    cases = [
        (["--methods", "counting", "--method-option", "counting.itrs=3"],
         "error: unknown option(s) itrs for method 'counting'; valid keys: none."),
        (["--methods", "counting", "--dataset-option", "tiny.m=3"],
         "error: unknown option(s) m for dataset 'tiny'; valid keys: n."),
        (["--methods", "counting", "--dataset-option", "tiny-folder.root=/x"],
         "error: --dataset-option tiny-folder.root is given but dataset 'tiny-folder' is not "
         "selected (--datasets tiny); add it to --datasets (e.g. --datasets tiny-folder) or "
         "drop the option."),
        (["--methods", "counting", "--method-option", "fit-landmarks.steps=3"],
         "error: --method-option fit-landmarks.steps is given but method 'fit-landmarks' is "
         "not selected"),
        (["--methods", "fit-landmarks", "--method-option", "fit-landmarks.itrs=3"],
         "error: unknown option(s) itrs for method 'fit-landmarks'; valid keys: cache, "
         "huber, lambda_exp, landmarks, lr, n_id, pose_steps, sigma, steps, w_contour, "
         "w_eyes."),
    ]
    for args, expected in cases:
        assert main(_cli(tmp_path, *args, *out)) == 2, args
        _, err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(expected), (args, err)
    assert not (tmp_path / "o" / "runs").exists()  # refused before anything ran


def _literal_option_keys(cls: type) -> set[str]:
    """Keys read as ``self.options.get("k")``, ``options.get("k")``, ``options["k"]`` or
    ``resolve_file("k")`` in the source of ``cls`` and its project base classes."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        if klass in (Method, object) or not klass.__module__.startswith(("methods", "benchmark")):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = f.value if isinstance(f, ast.Attribute) else None
                owner_name = (owner.attr if isinstance(owner, ast.Attribute)
                              else getattr(owner, "id", ""))
                if (name == "get" and owner_name == "options") or name == "resolve_file":
                    keys.add(node.args[0].value)
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                    and getattr(node.value, "attr", getattr(node.value, "id", "")) == "options"):
                keys.add(node.slice.value)
    return {k for k in keys if isinstance(k, str)}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_option_keys_cover_what_the_adapter_reads(name):
    cls = METHODS.get(name)
    read = _literal_option_keys(cls)
    assert read <= set(cls.accepted_options()), (name, sorted(read - set(cls.accepted_options())))
    with pytest.raises(ValueError, match=r"unknown option\(s\) no_such_key .*valid keys"):
        cls({"no_such_key": "1"})
    if name.startswith("fit-landmarks"):
        from methods.fit_landmarks import FitConfig

        assert {f.name for f in dataclasses.fields(FitConfig)} <= set(cls.accepted_options())


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_option_keys_cover_what_the_loader_reads(name):
    cls = DATASETS.get(name)
    read = _literal_option_keys(cls)
    assert read <= set(cls.accepted_options()), (name, sorted(read - set(cls.accepted_options())))
    with pytest.raises(ValueError, match=r"unknown option\(s\) no_such_key .*valid keys"):
        cls.check_options({"no_such_key": "1"})


# -- YAML configs: one line naming the key ----------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    ("methods: mean-shape\nlimit: [2\n", "is not valid YAML at line 3, column 1"),
    ("limit: abc\n", "key 'limit' must be a whole number, got 'abc'."),
    ("bootstrap: 1.5\n", "key 'bootstrap' must be a whole number, got 1.5."),
    ("closed_threshold: yes\n", "key 'closed_threshold' must be a number, got True."),
    ("plots: maybe\n", "key 'plots' must be true or false, got 'maybe'."),
    ("method_options: {fit-landmarks: 3}\n", "key 'method_options' must be a mapping"),
    ("methods: 7\n", "key 'methods' must be a string or a list of strings, got 7."),
    ("limt: 3\n", "has unknown key(s) limt; known: "),
    ("- a\n- b\n", "must hold a mapping of option: value."),
])
def test_yaml_config_errors_are_one_line(tmp_path, capsys, body, expected):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(body)
    assert main(["run", "--config", str(cfg), "--output-dir", str(tmp_path / "o")]) == 2
    _, err = _err_lines(capsys)
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"error: config file {str(cfg)!r}") and expected in err[0], err


def test_yaml_config_values_are_typed(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("methods: [mean-shape, oracle]\nlimit: 3\nclosed_threshold: 0.2\n"
                   "method_options: {import: {root: /x, unit: 1}}\n")
    rc = RunConfig.from_yaml(cfg)
    assert rc.methods == "mean-shape,oracle" and rc.limit == 3
    assert rc.closed_threshold == 0.2 and rc.method_options == {"import": {"root": "/x",
                                                                           "unit": "1"}}


# -- runs: workers die with the runner, progress off a terminal, console CIs ---------------

def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_scoring_workers_exit_when_the_runner_is_killed(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent("""
        import os, time
        from benchmark.runner import worker_pool

        if __name__ == "__main__":
            pool = worker_pool(2)
            assert len({f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}) >= 1
            print("ready", flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=PROJECT_ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        kids = _children(proc.pid)
        assert len(kids) >= 3  # two workers and the resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_progress_off_a_terminal_is_plain_short_lines(tiny_registry, tmp_path, capsys):
    assert main(_cli(tmp_path, "--methods", "counting,mean-shape",
                     "--output-dir", str(tmp_path / "o"), verbosity=1)) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "\r" not in text
    assert max(len(line) for line in text.splitlines()) < 300
    assert "counting on tiny/test: 6/6 (100%)" in cap.err


def test_plain_progress_prints_every_tenth():
    import io

    buf = io.StringIO()
    bar = PlainProgress(100, "x", stream=buf)
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("x: 10/100 (10%)")
    assert lines[-1].startswith("x: 100/100 (100%)")


def test_console_table_has_confidence_intervals():
    text = render_console(load_records(GOLDEN_RESULTS))
    row = next(line for line in text.splitlines() if line.startswith("mean-shape"))
    assert row.count("[") >= 3 and "95% bootstrap CI" in text


# -- real-photo figures never land in a tracked folder ---------------------------------------

def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_research_only_figures_only_outside_tracked_folders(tiny_registry, run_config,
                                                            tmp_path, monkeypatch):
    from benchmark.report import build_report, in_tracked_area

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert in_tracked_area(repo / "results" / "plots")
    assert not in_tracked_area(tmp_path / "elsewhere")
    if (PROJECT_ROOT / ".git").exists():
        assert in_tracked_area(PROJECT_ROOT / "results")
    # the tiny faces, carded as research-only
    monkeypatch.setattr(TinyDataset, "card", dataclasses.replace(TinyDataset.card,
                                                                 redistributable=False))
    cfg = dataclasses.replace(run_config, methods="counting", limit=2)
    run(cfg, show_progress=False)
    for out, drawn in ((repo / "results", False), (tmp_path / "free", True)):
        run(dataclasses.replace(cfg, output_dir=str(out)), show_progress=False)
        board = build_report(out, Path(cfg.cache_dir)).read_text()
        pngs = list(out.glob("plots/*/qualitative_*.png"))
        assert bool(pngs) is drawn, out
        assert ("qualitative_counting.png" in board) is drawn
        assert (out / "plots/tiny__test/cumulative_error.png").is_file()
    (repo / ".gitignore").write_text("results/\n")
    assert not in_tracked_area(repo / "results" / "plots")
    build_report(repo / "results", Path(cfg.cache_dir))
    assert list((repo / "results").glob("plots/*/qualitative_*.png"))
