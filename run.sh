#!/usr/bin/env bash
# The two commands of gatednorm; each sets up what the machine lacks first.
#   bash run.sh demo   self-check against the reference, a tiny training run,
#                      a benchmark table on whatever device is present
#   bash run.sh test   the test suite without the slow cases, then (no GPU here) the
#                      CUDA kernels' tests on the CPU emulator; with arguments, they
#                      go to pytest instead (e.g. `bash run.sh test -m ""` for all)
#
# Setup: uses a Python that already has torch (the GPU machines: offline, torch
# preinstalled — never reinstalled), else makes .venv/ and installs torch there;
# then builds torch_ops/_C in place when csrc/ changed since the last build.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_VERSION="${GATEDNORM_TORCH:-2.14.1}"

pick_python() {
  if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
  elif python3 -c "import torch" 2>/dev/null; then
    PY=python3
  else
    echo "== no torch found: creating .venv with torch==$TORCH_VERSION"
    python3 -m venv .venv
    PY=.venv/bin/python
    "$PY" -m pip install -q --upgrade pip setuptools wheel
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
  fi
}

# transformers: the module-swap tests build real tiny models from its configs.
install_test_deps() {
  "$PY" -c "import pytest, hypothesis, transformers" 2>/dev/null && return
  "$PY" -m pip install -q pytest hypothesis numpy transformers
}

build() {
  local so
  rm -f torch_ops/_C.abi3.so  # left by builds before 2026-12-04 (limited-API then)
  so=$(ls torch_ops/_C*.so 2>/dev/null | head -n1 || true)
  if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -type f | head -n1)" ]; then
    return
  fi
  echo "== building torch_ops/_C (MAX_JOBS=${MAX_JOBS:-2})"
  "$PY" -c "import setuptools, wheel" 2>/dev/null || "$PY" -m pip install -q setuptools wheel
  MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip install -q --no-build-isolation --no-deps --no-index -e . \
    || { echo "build failed" >&2; exit 1; }
  # pip leaves an up-to-date .so alone; make the timestamp say "built now".
  touch torch_ops/_C*.so
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    pick_python
    build
    exec "$PY" -m torch_ops.demo "$@"
    ;;
  test)
    pick_python
    install_test_deps
    build
    if [ $# -gt 0 ]; then exec "$PY" -m pytest -q "$@" tests; fi
    # The elapsed time after each step and the slowest tests: what to trim when CI grows.
    echo "== setup and build done after ${SECONDS}s"
    "$PY" -m pytest -q -m "not slow" --durations=15 tests
    echo "== CPU tests done after ${SECONDS}s"
    # Without a GPU the CUDA kernels run on the CPU emulator (csrc/emu) instead:
    # GATEDNORM_EMU=1 forces that step, =0 skips it.
    emu="${GATEDNORM_EMU:-auto}"
    if [ "$emu" = auto ]; then
      "$PY" -c "import torch, sys; sys.exit(torch.cuda.is_available())" && emu=1 || emu=0
    fi
    if [ "$emu" = 1 ]; then PYTHON="$PY" bash scripts/emu_check.sh; echo "== emulator done after ${SECONDS}s"; fi
    ;;
  *)
    echo "usage: bash run.sh demo|test [args]" >&2
    exit 2
    ;;
esac
