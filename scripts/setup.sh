#!/usr/bin/env bash
# Set-up of a fresh machine for eyebench (idempotent; fast when nothing changed):
#   1. the system library open3d needs (libusb-1.0), via apt-get when missing;
#   2. a virtual environment in .venv with the CPU build of torch (constraints-cpu.txt)
#      and the suite installed editable with its dev extra (tests, dlib landmarks) and its
#      mediapipe extra (the MediaPipe Face Landmarker runtime; its model file is the user's)
#      and its hf extra (Hugging Face `datasets`: export/load as HF datasets, HF copies of
#      per-sample results).
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
#        bash scripts/setup.sh --browser   also Debian's chromium (apt-get) and the playwright
#        pip package, for the web leaderboard's browser tests (pytest -m browser; CI). No
#        browser is downloaded at run time; `make run` and `make test` need neither.
set -euo pipefail  # pipefail: a failing pip inside pip_quiet fails the set-up
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so'; then
  echo "setup: installing libusb-1.0-0 (needed by open3d)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

# This machine's pip configuration names optional local indexes that may be absent; pip warns
# once per package about them. Drop exactly those lines, keep every other message.
pip_quiet() {
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

stamp=".venv/.installed-$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the suite and its dependencies into .venv (a few minutes the first time)"
  pip_quiet -c constraints-cpu.txt 'torch==2.13.0'
  pip_quiet -c constraints-cpu.txt -e '.[dev,mediapipe,hf]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The scan-to-mesh search kernels are compiled by numba, which caches the machine code beside
# metrics/bvh.py: compile them here once (about 8 s), not in every scoring process of a run.
if [ -z "$(find metrics/__pycache__ -name 'bvh.*.nbi' -newer metrics/bvh.py 2>/dev/null | head -1)" ]; then
  echo "setup: compiling the scan-to-mesh search kernels (numba, once)"
  .venv/bin/python -m metrics.bvh
fi

if [ "${1:-}" = "--browser" ]; then
  if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium (browser tests of the web leaderboard)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  .venv/bin/python -c "import playwright" 2>/dev/null || pip_quiet 'playwright==1.65.2'
fi
