"""On-disk cache of the synthetic benchmark: generate on first use, resume, detect damage.

Room: files. ``scene.py`` makes samples; this module writes them, finds what is missing,
generates it in parallel with a progress bar, and reads samples back.

Layout under the cache root (``$EYEBENCH_CACHE`` or ``<project>/.cache``, git-ignored)::

    synthetic/<split>-<key>/                 key = SyntheticConfig.key(ICT sha256)
        config.json                          parameters, generator version, split, model hash
        subjects/<subject>.npz               id_coeffs (100,), displacement (V, 3) float32
        samples/<id>.png                     the photo (RGB, lossless)
        samples/<id>.npz                     ground truth + meta (see SAMPLE_ARRAYS), written
                                             after the PNG: its presence marks a finished sample
        manifest-<n>.json                    written last, once samples 0..n-1 all exist

Sample ``i`` does not depend on how many samples were asked for, so one folder serves every
``n``: asking for more generates only the missing ones, an interrupted generation resumes,
and every file is written to a temporary name and renamed (a kill leaves no half file).
Each sample's npz records its PNG's sha256; a sample whose files fail to load or whose PNG
does not match is reported, deleted and regenerated (generation is deterministic).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import file_mode
from benchmark.synthetic.config import (
    GENERATOR_VERSION,
    SyntheticConfig,
    sample_id,
    subject_id,
    subject_of,
)

logger = logging.getLogger(__name__)

#: Arrays of a sample file (besides ``meta`` JSON text, ``subject`` and ``image_sha256``).
SAMPLE_ARRAYS = (
    "landmarks2d", "landmarks3d", "landmarks7", "landmarks_visible", "eye_state",
    "eye_openness", "exp_coeffs", "rotation", "translation",
)


class CorruptSample(Exception):
    """A cached sample exists but cannot be read back intact."""


def cache_root() -> Path:
    """``$EYEBENCH_CACHE`` or ``<project root>/.cache``."""
    env = os.environ.get("EYEBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / ".cache"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the user's umask decides
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class SyntheticStore:
    """The cache folder of one (configuration, split).

    Args:
        config: generation parameters.
        split: split name.
        root: cache root (default :func:`cache_root`).
        with_scans: generate scans (the ``test`` default; ``train`` samples skip them).
    """

    def __init__(self, config: SyntheticConfig, split: str, root: Path | None = None,
                 with_scans: bool = True) -> None:
        from methods.facemodel.ict import ICT_SHA256

        self.config = config
        self.split = split
        self.with_scans = with_scans
        self.key = config.key(ICT_SHA256) + ("" if with_scans else "-noscan")
        self.cache_root = Path(root or cache_root())
        self.root = self.cache_root / "synthetic" / f"{split}-{self.key}"
        self.model_sha256 = ICT_SHA256

    # ------------------------------------------------------------------ paths

    def png_path(self, index: int) -> Path:
        """PNG of sample ``index``."""
        return self.root / "samples" / f"{sample_id(self.split, index)}.png"

    def npz_path(self, index: int) -> Path:
        """Ground-truth file of sample ``index`` (its presence marks the sample done)."""
        return self.root / "samples" / f"{sample_id(self.split, index)}.npz"

    def subject_path(self, subject: int) -> Path:
        """Subject file (identity coefficients and displacement)."""
        return self.root / "subjects" / f"{subject_id(self.split, subject)}.npz"

    def manifest_path(self, n: int) -> Path:
        """Manifest written once samples 0..n-1 exist."""
        return self.root / f"manifest-{n}.json"

    # ------------------------------------------------------------------ generation

    def missing(self, n: int) -> list[int]:
        """Indices below ``n`` without a finished sample file."""
        return [i for i in range(n) if not self.npz_path(i).is_file()]

    def is_complete(self, n: int) -> bool:
        """Whether the manifest for ``n`` samples exists (generation finished)."""
        return self.manifest_path(n).is_file()

    def ensure(self, n: int, workers: int = 2, progress: bool = True) -> None:
        """Generates whatever of samples 0..n-1 is missing, then writes the manifest.

        Args:
            n: number of samples.
            workers: processes (each single-threaded); 1 generates in this process.
            progress: show progress (a bar on a terminal, plain lines in a log).
        """
        if self.is_complete(n):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cfg_file = self.root / "config.json"
        if not cfg_file.is_file():
            _atomic_write(cfg_file, json.dumps({
                "config": self.config.to_dict(), "generator_version": GENERATOR_VERSION,
                "split": self.split, "model_sha256": self.model_sha256,
                "with_scans": self.with_scans,
            }, indent=2).encode())
        todo = self.missing(n)
        if todo:
            t0 = time.perf_counter()
            logger.info("generating %d synthetic %s samples in %s", len(todo), self.split,
                        self.root)
            _run(self, todo, workers, progress)
            dt = time.perf_counter() - t0
            logger.info("generated %d samples in %.1f s (%.1f images/s, %d workers)", len(todo),
                        dt, len(todo) / dt, workers)
        still = self.missing(n)
        if still:
            raise RuntimeError(f"synthetic generation left {len(still)} samples missing "
                               f"(first: {sample_id(self.split, still[0])}).")
        manifest = {
            "n": n, "split": self.split, "key": self.key,
            "generator_version": GENERATOR_VERSION,
            "ids": [sample_id(self.split, i) for i in range(n)],
            "subjects": sorted({subject_id(self.split, subject_of(self.config, i))
                                for i in range(n)}),
        }
        _atomic_write(self.manifest_path(n), json.dumps(manifest).encode())

    def generate_one(self, index: int) -> None:
        """Generates and writes sample ``index`` (and its subject file if absent)."""
        from benchmark.synthetic.scene import render_sample

        r = render_sample(self.config, self.split, index, with_scan=self.with_scans)
        subj = subject_of(self.config, index)
        if not self.subject_path(subj).is_file():
            _atomic_write(self.subject_path(subj), _npz_bytes({
                "id_coeffs": r.subject.id_coeffs, "displacement": r.subject.displacement,
            }))
        png = _png_bytes(r.image)
        _atomic_write(self.png_path(index), png)
        arrays = dict(r.arrays)
        arrays["meta"] = np.array(json.dumps(r.meta))
        arrays["subject"] = np.array(r.subject.id)
        arrays["image_sha256"] = np.array(hashlib.sha256(png).hexdigest())
        _atomic_write(self.npz_path(index), _npz_bytes(arrays))

    # ------------------------------------------------------------------ reading

    def read(self, index: int) -> tuple[dict[str, Any], Path]:
        """Sample ``index``'s arrays (``meta`` decoded) and PNG path.

        Raises:
            CorruptSample: a file is missing, unreadable, or the PNG's hash does not match.
        """
        path = self.npz_path(index)
        try:
            with np.load(path, allow_pickle=False) as data:
                d: dict[str, Any] = {k: data[k] for k in data.files}
            d["meta"] = json.loads(str(d["meta"]))
            d["subject"] = str(d["subject"])
            for key in SAMPLE_ARRAYS:
                if key not in d:
                    raise KeyError(key)
            png = self.png_path(index).read_bytes()
        except Exception as exc:  # missing, truncated, not an npz, bad JSON, missing key
            raise CorruptSample(f"{path}: {type(exc).__name__}: {exc}") from exc
        if hashlib.sha256(png).hexdigest() != str(d["image_sha256"]):
            raise CorruptSample(f"{self.png_path(index)}: PNG does not match its recorded hash")
        return d, self.png_path(index)

    def read_subject(self, subject: int) -> dict[str, np.ndarray]:
        """Identity coefficients and displacement of a subject.

        Raises:
            CorruptSample: the file is missing or unreadable.
        """
        path = self.subject_path(subject)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {"id_coeffs": data["id_coeffs"], "displacement": data["displacement"]}
        except Exception as exc:
            raise CorruptSample(f"{path}: {type(exc).__name__}: {exc}") from exc

    def discard(self, index: int) -> None:
        """Deletes sample ``index`` (and the manifests that count it)."""
        self.npz_path(index).unlink(missing_ok=True)
        self.png_path(index).unlink(missing_ok=True)
        for m in self.root.glob("manifest-*.json"):
            try:
                if int(m.stem.split("-")[1]) > index:
                    m.unlink(missing_ok=True)
            except ValueError:
                continue

    def discard_subject(self, subject: int) -> None:
        """Deletes a subject file and every sample of that subject."""
        self.subject_path(subject).unlink(missing_ok=True)
        k = self.config.samples_per_subject
        for i in range(subject * k, subject * k + k):
            self.discard(i)


# ---------------------------------------------------------------------- parallel driver
#
# Workers are plain subprocesses running this module (``python -m benchmark.synthetic.store``)
# rather than a multiprocessing pool: they never re-import the caller's main script (so no
# ``if __name__ == "__main__"`` guard is needed anywhere) and never inherit torch's thread
# pools through fork. Each gets a JSON job on stdin and prints one line per finished sample.


def _chunks(indices: Iterable[int], per_subject: int) -> list[list[int]]:
    """Missing indices grouped by subject (a worker builds each subject once)."""
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(i // per_subject, []).append(i)
    return [groups[k] for k in sorted(groups)]


def _run(store: SyntheticStore, todo: list[int], workers: int, progress: bool) -> None:
    from benchmark.progress import progress as progress_bar

    bar = progress_bar(len(todo), f"synthetic {store.split}", enabled=progress)
    try:
        if workers <= 1 or len(todo) < 2 * store.config.samples_per_subject:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for i in todo:
                    store.generate_one(i)
                    bar.update(1)
            finally:
                torch.set_num_threads(threads)
            return
        _run_subprocesses(store, todo, workers, bar)
    finally:
        bar.close()


def _run_subprocesses(store: SyntheticStore, todo: list[int], workers: int, bar: Any) -> None:
    import selectors
    import subprocess
    import sys

    chunks = _chunks(todo, store.config.samples_per_subject)
    shares: list[list[int]] = [[] for _ in range(min(workers, len(chunks)))]
    for k, chunk in enumerate(chunks):  # round-robin whole subjects
        shares[k % len(shares)].extend(chunk)
    project = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = project + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                   else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    job = {"config": store.config.to_dict(), "split": store.split,
           "root": str(store.cache_root), "with_scans": store.with_scans}
    procs = []
    errs = []
    sel = selectors.DefaultSelector()
    try:
        for share in shares:
            # stderr goes to a file: a chatty worker must never block on a full pipe.
            err = tempfile.TemporaryFile(mode="w+")
            errs.append(err)
            p = subprocess.Popen(
                [sys.executable, "-m", "benchmark.synthetic.store"], cwd=project, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )
            p.stdin.write(json.dumps({**job, "indices": share}))
            p.stdin.close()
            sel.register(p.stdout, selectors.EVENT_READ, p)
            procs.append(p)
        open_streams = len(procs)
        while open_streams:
            for key, _ in sel.select():
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                elif line.startswith("done "):
                    bar.update(1)
        for p, err in zip(procs, errs):
            if p.wait() != 0:
                err.seek(0)
                text = err.read().strip()
                tail = text.splitlines()[-1] if text else "no error text"
                raise RuntimeError(f"synthetic generation worker failed: {tail}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for err in errs:
            err.close()
        sel.close()


def _worker_main() -> None:
    """Entry of a generation subprocess: a JSON job on stdin, ``done <i>`` lines out."""
    import sys

    import torch

    torch.set_num_threads(1)
    job = json.loads(sys.stdin.read())
    cfg = job["config"]
    config = SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in cfg.items()})
    store = SyntheticStore(config, job["split"], Path(job["root"]),
                           with_scans=job["with_scans"])
    for i in job["indices"]:
        store.generate_one(int(i))
        print(f"done {i}", flush=True)


if __name__ == "__main__":
    _worker_main()
