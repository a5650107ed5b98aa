"""Provenance: what exactly produced a result (code revision, packages, file hashes).

Room: identity helpers used by run records, caches and method/dataset revisions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

#: Distributions whose versions every run record carries.
TRACKED_PACKAGES = (
    "numpy", "scipy", "torch", "open3d-cpu", "open3d", "pandas", "pyarrow", "matplotlib",
    "scikit-learn", "dlib-bin", "dlib", "pillow",
)

_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file (memoised on path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def git_revision(repo: Path | None = None) -> str:
    """``git describe``-like revision of the project checkout; ``+dirty`` if modified."""
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages results depend on (absent ones are omitted)."""
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def environment() -> dict[str, Any]:
    """Machine facts a reader needs to compare timings."""
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
