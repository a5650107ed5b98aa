"""On-disk caches of predictions and per-sample scores (stage 1 and stage 2 of a run).

Room: persistence of intermediate results so that an interrupted run resumes where it
stopped and a metric change re-scores without re-running methods.

Layout under the cache root (``$EYEBENCH_CACHE`` or ``<project>/.cache``)::

    predictions/<dataset>/<split>/<method>/<method_rev>-<dataset_rev>/
        topology-<digest>.npz     faces + landmark placement, once per distinct topology
        <sample>.npz              one Prediction (no pickle; extras as JSON text)
    scores/<dataset>/<split>/<method>/<method_rev>-<dataset_rev>/<scoring_rev>/
        <sample>.json             one per-sample score row
        <sample>.npy              its scan-to-mesh distances in mm (float32), if any

Every file is written to a temporary name and renamed, so a kill leaves either the old
state or the new one. A file that fails to load is reported once, deleted and recomputed.
Files get the permissions of an ordinary ``open()`` under the user's umask (``0644`` with
umask ``022``), not the ``0600`` of the temporary file: caches, run records and the
leaderboard are meant to be shared.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.types import Prediction, Topology

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(sample_id: str) -> str:
    """A file-name-safe, collision-free version of a sample id."""
    cleaned = _SAFE.sub("_", sample_id)
    if cleaned == sample_id and not sample_id.startswith("."):
        return sample_id
    import hashlib

    return f"{cleaned.lstrip('.')[:80]}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}"


def _umask() -> int:
    """The process umask: from ``/proc`` where there is one (no window with another umask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_by_setting()


@functools.lru_cache(maxsize=1)
def _umask_by_setting() -> int:
    """The umask read by setting it and restoring it, once per process (no ``/proc``)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """Permissions of a new regular file under the user's umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and an atomic rename.

    The file gets :func:`file_mode` permissions (``mkstemp`` alone would leave ``0600``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class CorruptCacheFile(Exception):
    """A cache file exists but cannot be read."""


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/ValueError/OSError/EOFError: any damage
        raise CorruptCacheFile(f"{path}: {type(exc).__name__}: {exc}") from exc


class PredictionCache:
    """Predictions of one method on one dataset split, one file per sample.

    Args:
        root: the slot folder (see module docstring).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._topologies: dict[str, Topology] = {}

    def path(self, sample_id: str) -> Path:
        """File of one sample's prediction."""
        return self.root / f"{safe_name(sample_id)}.npz"

    def has(self, sample_id: str) -> bool:
        """Whether a prediction is cached for the sample."""
        return self.path(sample_id).is_file()

    def put(self, sample_id: str, pred: Prediction) -> None:
        """Stores one prediction (and the topology, the first time one appears)."""
        arrays: dict[str, np.ndarray] = {
            "status": np.array(pred.status),
            "error": np.array(pred.error or ""),
            "extras": np.array(json.dumps(jsonable(pred.extras))),
        }
        for key in ("vertices", "landmarks7", "landmarks2d", "vertices_image", "eye_prob_closed",
                    "neutral_vertices"):
            value = getattr(pred, key)
            if value is not None:
                arrays[key] = np.asarray(value, np.float32)
        if pred.topology is not None:
            arrays["topology"] = np.array(self._put_topology(pred.topology))
        atomic_write_bytes(self.path(sample_id), _npz_bytes(arrays))

    def get(self, sample_id: str) -> Prediction:
        """Loads one prediction; raises :class:`CorruptCacheFile` if it is damaged."""
        d = _load_npz(self.path(sample_id))
        try:
            topo = self.topology(str(d["topology"])) if "topology" in d else None
            return Prediction(
                status=str(d["status"]),  # type: ignore[arg-type]
                vertices=d.get("vertices"),
                topology=topo,
                landmarks7=d.get("landmarks7"),
                landmarks2d=d.get("landmarks2d"),
                vertices_image=d.get("vertices_image"),
                eye_prob_closed=d.get("eye_prob_closed"),
                neutral_vertices=d.get("neutral_vertices"),
                error=str(d["error"]) or None,
                extras=json.loads(str(d["extras"])),
            )
        except (KeyError, ValueError) as exc:
            raise CorruptCacheFile(f"{self.path(sample_id)}: {exc}") from exc

    def discard(self, sample_id: str) -> None:
        """Deletes a (damaged) cached prediction."""
        self.path(sample_id).unlink(missing_ok=True)

    def topology(self, digest: str) -> Topology:
        """The stored topology with this digest."""
        if digest not in self._topologies:
            d = _load_npz(self.root / f"topology-{digest}.npz")
            self._topologies[digest] = Topology(
                name=str(d["name"]),
                faces=d["faces"].astype(np.int64),
                landmark_vertex_ids=d.get("landmark_vertex_ids"),
                landmark_faces=d.get("landmark_faces"),
                landmark_bary=d.get("landmark_bary"),
            )
        return self._topologies[digest]

    def _put_topology(self, topo: Topology) -> str:
        digest = topo.digest()
        path = self.root / f"topology-{digest}.npz"
        if digest in self._topologies and path.is_file():
            return digest
        arrays: dict[str, np.ndarray] = {"name": np.array(topo.name), "faces": topo.faces}
        for key in ("landmark_vertex_ids", "landmark_faces", "landmark_bary"):
            if getattr(topo, key) is not None:
                arrays[key] = getattr(topo, key)
        atomic_write_bytes(path, _npz_bytes(arrays))
        self._topologies[digest] = topo
        return digest


class ScoreCache:
    """Per-sample score rows (JSON) and scan-to-mesh distances (npy)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def has(self, sample_id: str) -> bool:
        """Whether a score row is cached."""
        return (self.root / f"{safe_name(sample_id)}.json").is_file()

    def put(self, sample_id: str, row: dict[str, Any], distances: np.ndarray | None) -> None:
        """Stores a score row and optional distances (distances first, row last)."""
        name = safe_name(sample_id)
        if distances is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(distances, np.float32))
            atomic_write_bytes(self.root / f"{name}.npy", buf.getvalue())
        atomic_write_bytes(
            self.root / f"{name}.json", json.dumps(jsonable(row), sort_keys=True).encode()
        )

    def get(self, sample_id: str) -> tuple[dict[str, Any], np.ndarray | None]:
        """Loads a row and its distances; raises :class:`CorruptCacheFile` if damaged."""
        name = safe_name(sample_id)
        try:
            row = json.loads((self.root / f"{name}.json").read_text())
            dpath = self.root / f"{name}.npy"
            dist = np.load(dpath, allow_pickle=False) if row.get("has_distances") else None
        except Exception as exc:
            raise CorruptCacheFile(f"{self.root / name}: {type(exc).__name__}: {exc}") from exc
        return row, dist

    def discard(self, sample_id: str) -> None:
        """Deletes a (damaged) cached score."""
        name = safe_name(sample_id)
        for suffix in (".json", ".npy"):
            (self.root / f"{name}{suffix}").unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    """Converts numpy scalars/arrays (and NaN, inf) into JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
