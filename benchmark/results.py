"""Run records: the versioned JSON (+ per-sample parquet) that a run leaves behind.

Room: the result schema, its reading and writing. The leaderboard and plots are rendered
from these records alone (no cache needed), so records are what CI and users compare.

Layout under the output folder (default ``results/``)::

    runs/<key>/<method>/result.json     RunRecord (schema below)
    runs/<key>/<method>/samples.parquet per-sample rows (no images, no meshes)
    runs/<key>/<method>/samples.csv     the same rows as CSV (diffable, for any tool)
    runs/<key>/<method>/samples.hf/     the same rows as a Hugging Face dataset
                                        (``datasets.load_from_disk``), written when the
                                        optional ``datasets`` package is installed

``<key>`` is ``<dataset>__<split>``, and ``<dataset>__<split>__<root digest8>`` for datasets
whose card says ``instance_keyed`` (a user's photo folder, NoW): two folders evaluated into
one output folder never overwrite each other's records.

``result.json`` keys (schema_version 1):

* ``schema_version`` (int): bumped on any incompatible change; older versions stay readable.
* ``method`` / ``method_revision`` / ``method_card``: registry id, output identity (card
  revision + weight hashes), card fields (description, licence, reference, topology,
  training_datasets, eyes_open_by_construction).
* ``dataset`` / ``split`` / ``dataset_revision`` / ``dataset_card``: likewise for the data.
* ``dataset_instance``: which copy of the data: ``root`` (resolved folder, null for generated
  data), ``content_digest`` (= ``dataset_revision``: file names, sizes, labels) and ``key``
  (8 hex digits of the root, part of the record's folder for instance-keyed datasets; empty
  otherwise). Empty in records written before it existed.
* ``sample_set``: the samples the record covers: ``count`` and ``digest`` (16 hex digits of
  the sha256 of the sorted sample ids, one per line), and ``limit`` (``--limit`` or null).
  The leaderboard never ranks records of different sample sets in one table.
* ``status``: ``ok``; ``skipped`` (method or data unavailable: ``reason`` + ``fix``);
  ``error`` (the whole pair failed: ``reason`` holds the error).
* ``n_samples``, ``n_ok``, ``n_no_face``, ``n_error``: sample counts by status.
* ``metrics``: ``{name: {value, ci_low, ci_high}}``, names from ``benchmark.scoring.METRICS``
  (CI: percentile bootstrap over subjects; null where not computed).
* ``curves``: cumulative error curves (``thresholds_mm``, ``per_point``,
  ``per_sample_median``), empty without scans.
* ``confusion``: eye-state confusion matrices ``per_eye``/``per_image`` as
  ``[[TN, FP], [FN, TP]]`` (rows truth open/closed, columns predicted open/closed).
* ``params``: closed_threshold, bootstrap, seed, limit, metrical, scoring_version.
* ``provenance``: git revision, date (UTC), package versions, environment, checkpoint hashes.
* ``timings``: seconds spent predicting / scoring in this invocation, and how many samples
  were predicted now vs. read from the cache.
* ``failures``: up to 20 ``{sample_id, status, error}`` examples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.cache import atomic_write_bytes

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.parquet"
SAMPLES_CSV = "samples.csv"
SAMPLES_HF = "samples.hf"


@dataclasses.dataclass
class RunRecord:
    """One (method, dataset split) evaluation. See the module docstring for every key."""

    method: str
    dataset: str
    split: str
    status: str = "ok"
    reason: str = ""
    fix: str = ""
    method_revision: str = ""
    dataset_revision: str = ""
    method_card: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset_card: dict[str, Any] = dataclasses.field(default_factory=dict)
    n_samples: int = 0
    n_ok: int = 0
    n_no_face: int = 0
    n_error: int = 0
    metrics: dict[str, dict[str, float | None]] = dataclasses.field(default_factory=dict)
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    confusion: dict[str, list[list[int]]] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    dataset_instance: dict[str, Any] = dataclasses.field(default_factory=dict)
    sample_set: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    rows: list[dict[str, Any]] | None = dataclasses.field(default=None, repr=False)

    @property
    def key(self) -> str:
        """``<dataset>__<split>[__<instance>]``: the folder and leaderboard section."""
        instance = self.dataset_instance.get("key") if self.dataset_instance else ""
        return f"{self.dataset}__{self.split}" + (f"__{instance}" if instance else "")

    @property
    def sample_set_id(self) -> str:
        """Identity of the covered samples (older records: count and limit)."""
        if self.sample_set.get("digest"):
            return str(self.sample_set["digest"])
        return f"n{self.n_samples}-limit{self.params.get('limit')}"

    def folder(self, output_dir: Path) -> Path:
        """Where this record lives under an output folder."""
        return Path(output_dir) / "runs" / self.key / self.method

    def metric(self, name: str) -> float | None:
        """A metric's value, or None if absent."""
        entry = self.metrics.get(name)
        return None if entry is None else entry.get("value")

    def to_disk(self, output_dir: Path) -> Path:
        """Writes result.json, and the per-sample rows (parquet, CSV, HF) when present.

        The HF dataset is written when ``datasets`` is installed; otherwise a stale one is
        removed, so the three row files never disagree.
        """
        folder = self.folder(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        data = dataclasses.asdict(self)
        rows = data.pop("rows")
        atomic_write_bytes(
            folder / RESULT_FILE, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
        )
        if rows is not None:
            import hashlib
            import io

            frame = pd.DataFrame(rows)
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            atomic_write_bytes(folder / SAMPLES_FILE, buf.getvalue())
            csv_bytes = frame.to_csv(index=False, lineterminator="\n").encode()
            atomic_write_bytes(folder / SAMPLES_CSV, csv_bytes)
            try:
                from benchmark.hf import save_rows

                save_rows(frame, folder / SAMPLES_HF,
                          fingerprint=hashlib.sha256(csv_bytes).hexdigest()[:16])
            except ImportError:
                logger.debug("datasets is not installed: no %s beside %s", SAMPLES_HF,
                             SAMPLES_FILE)
                _remove(folder / SAMPLES_HF)
            except Exception as exc:  # an optional copy never costs the record itself
                logger.warning("could not write %s (%s: %s); %s and %s are written",
                               folder / SAMPLES_HF, type(exc).__name__, exc, SAMPLES_FILE,
                               SAMPLES_CSV)
                _remove(folder / SAMPLES_HF)
        else:
            for name in (SAMPLES_FILE, SAMPLES_CSV, SAMPLES_HF):
                _remove(folder / name)
        return folder / RESULT_FILE

    @classmethod
    def from_disk(cls, path: Path, with_rows: bool = False) -> RunRecord:
        """Reads a result.json (any supported schema version)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"run record {str(path)!r} is unreadable: {exc}") from exc
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"run record {str(path)!r} has schema_version {version!r}; this version of the "
                f"suite reads {SCHEMA_VERSION}."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in fields})
        if with_rows and (path.parent / SAMPLES_FILE).is_file():
            record.rows = pd.read_parquet(path.parent / SAMPLES_FILE).to_dict("records")
        return record

    def samples_frame(self, output_dir: Path) -> pd.DataFrame:
        """The per-sample table of this record."""
        if self.rows is not None:
            return pd.DataFrame(self.rows)
        return pd.read_parquet(self.folder(output_dir) / SAMPLES_FILE)


def _remove(path: Path) -> None:
    """Deletes a file or folder if it exists."""
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters.

    Reasons stored in records keep their full text; listings show them with this.
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def sample_set_digest(ids: list[str]) -> str:
    """16 hex digits of the sha256 of the sorted sample ids (one per line)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def instance_key(root: str | Path) -> str:
    """8 hex digits naming a dataset root (its resolved absolute path)."""
    import hashlib

    return hashlib.sha256(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:8]


def load_records(output_dir: Path) -> list[RunRecord]:
    """Every readable run record under ``output_dir/runs``; unreadable ones are logged."""
    records = []
    for path in sorted(Path(output_dir).glob(f"runs/*/*/{RESULT_FILE}")):
        try:
            records.append(RunRecord.from_disk(path))
        except ValueError as exc:
            logger.warning("skipping %s", exc)
    return records
