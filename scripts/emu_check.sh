#!/usr/bin/env bash
# The CUDA kernels on the CPU emulator (csrc/emu; docs/testing.md, "CUDA kernels on the
# CPU"): builds this tree's csrc/cuda for the emulator in a copy of the tree
# ($GATEDNORM_EMU_DIR, default build/emu_tree: the build in place stays as it is) and
# runs the kernel tests' CPU cases there, which the emulated CUDA kernels then serve
# instead of the CPU kernels. Arguments go to pytest (default below).
#   bash scripts/emu_check.sh
#   bash scripts/emu_check.sh -q -k "cpu and loop" tests/test_backward.py
#   GATEDNORM_NVCC_FLAGS="-DGN_LOOP_ASYNC" bash scripts/emu_check.sh     # a tuning variant
# The emulated device: GN_EMU_SMS, GN_EMU_MAJOR (8: no clusters), GN_EMU_GBPS, GN_EMU_SMEM;
# GN_EMU_CP_ASYNC=eager; GN_EMU_TRACE=file (then scripts/emu_trace.py names the kernels).
# GATEDNORM_EMU_ASAN=1: built with AddressSanitizer (out-of-bounds reads and writes of
# global and dynamic shared memory, as compute-sanitizer's memcheck), in <dir>_asan.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$root/.venv/bin/python
else PY=python3; fi
asan=${GATEDNORM_EMU_ASAN:-0}
dir=${GATEDNORM_EMU_DIR:-build/emu_tree}
[ "$asan" = 1 ] && dir=${dir%/}_asan
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Copy what git would (tracked and new files), only those that changed: the build is incremental.
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  cmp -s "$f" "$dir/$f" 2>/dev/null && continue
  mkdir -p "$dir/$(dirname "$f")"
  cp -p "$f" "$dir/$f"
done
echo "== building the CUDA kernels for the CPU emulator in $dir ${GATEDNORM_NVCC_FLAGS:+(flags: $GATEDNORM_NVCC_FLAGS)}"
(cd "$dir" && GATEDNORM_CUDA_EMU=1 GATEDNORM_EMU_ASAN="$asan" MAX_JOBS="${MAX_JOBS:-2}" "$PY" setup.py -q build_ext --inplace > build_emu.log 2>&1) \
  || { tail -40 "$dir/build_emu.log" >&2; echo "emulator build failed: $dir/build_emu.log" >&2; exit 1; }
[ $# -eq 0 ] && set -- -q -m "not slow" -k cpu tests/test_forward.py tests/test_backward.py \
  tests/test_add_rms_norm.py tests/test_inplace_out.py
echo "== the CUDA kernels on the CPU emulator: pytest $*"
cd "$dir"
[ "$asan" = 1 ] || exec "$PY" -m pytest -p no:cacheprovider "$@"
# ASan's runtime must come first in the process; its reports go to files (pytest
# captures the test's stderr, and a report ends the process).
rm -rf asan_logs && mkdir asan_logs
rc=0
ASAN_OPTIONS="detect_leaks=0:log_path=$dir/asan_logs/asan" LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  "$PY" -m pytest -p no:cacheprovider "$@" || rc=$?
if ls asan_logs/asan* > /dev/null 2>&1; then
  cat asan_logs/asan* | grep -v "WARNING: ASan doesn't fully support makecontext" | head -60
  grep -qs "ERROR: AddressSanitizer" asan_logs/asan* && { echo "AddressSanitizer found errors" >&2; exit 1; }
fi
exit $rc
