"""Shared helpers of the upstream-parity harnesses (run outside the default tests).

Room: scripts. Puts the repository and ``tests/upstream_standins.py`` on the path, stubs
modules that upstream imports at module level but that the parity runs never call, and
writes the ``.npz`` fixtures (numbers only).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "upstream"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _unavailable(module: str):
    def getattr_(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def placeholder(*args, **kwargs):
            raise RuntimeError(f"{module}.{name} is stubbed in the parity harness")
        return placeholder
    return getattr_


def stub_modules(*names: str) -> None:
    """Empty modules under ``names`` (each parent created), for import-only dependencies."""
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                mod = types.ModuleType(sub)
                mod.__getattr__ = _unavailable(sub)  # any imported name is a placeholder
                sys.modules[sub] = mod
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])


def save_fixture(name: str, commit: str, **arrays: np.ndarray) -> Path:
    """Writes ``tests/fixtures/upstream/<name>.npz`` (float64 -> float32 to stay small)."""
    from tests.upstream_standins import STANDIN_VERSION

    out = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        out[key] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
    out["standin_version"] = np.array(STANDIN_VERSION)
    out["upstream_commit"] = np.array(commit)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.npz"
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({path.stat().st_size} bytes): {sorted(out)}")
    return path


def git_commit(checkout: Path) -> str:
    """The checkout's HEAD commit, or 'unknown' (an exported tree has no .git)."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
