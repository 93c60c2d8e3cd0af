#!/usr/bin/env bash
# The CUDA kernels on the CPU emulator (csrc/emu; docs/testing.md, "CUDA kernels on the
# CPU"): builds this tree's csrc/cuda for the emulator in a copy of the tree
# ($GATEDNORM_EMU_DIR, default build/emu_tree: the build in place stays as it is) and
# runs the kernel tests' CPU cases there, which the emulated CUDA kernels then serve
# instead of the CPU kernels. Arguments go to pytest (default below).
#   bash scripts/emu_check.sh
#   bash scripts/emu_check.sh -q -k "cpu and loop" tests/test_backward.py
#   GATEDNORM_NVCC_FLAGS="-DGN_FWD_RING=4" bash scripts/emu_check.sh     # a tuning variant
# The emulated device: GN_EMU_SMS, GN_EMU_MAJOR (8: no clusters), GN_EMU_GBPS, GN_EMU_SMEM;
# GN_EMU_CP_ASYNC=eager; GN_EMU_TRACE=file (then scripts/emu_trace.py names the kernels).
# GATEDNORM_EMU_SANITIZER=address: built with AddressSanitizer (out-of-bounds reads and
# writes of global and dynamic shared memory: compute-sanitizer's memcheck); =thread:
# with ThreadSanitizer, each barrier a synchronisation (accesses to the same memory by
# two threads that no barrier orders: racecheck). Either builds in <dir>_<sanitizer>.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
case "$PY" in */*) [ "${PY#/}" = "$PY" ] && PY=$root/$PY ;; esac  # the build runs in another directory
san=${GATEDNORM_EMU_SANITIZER:-}
dir=${GATEDNORM_EMU_DIR:-build/emu_tree}
[ -n "$san" ] && dir=${dir%/}_$san
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Copy what git would (tracked and new files), only those that changed: the build is incremental;
# and remove from the copy what the tree no longer has (a deleted source would still be built).
for d in csrc tests torch_ops; do
  [ -d "$dir/$d" ] || continue
  (cd "$dir" && find "$d" -type f ! -name '*.so' ! -path '*/__pycache__/*') | while IFS= read -r f; do
    [ -e "$f" ] || rm -f "$dir/$f"
  done
done
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  cmp -s "$f" "$dir/$f" 2>/dev/null && continue
  mkdir -p "$dir/$(dirname "$f")"
  cp -p "$f" "$dir/$f"
done
echo "== building the CUDA kernels for the CPU emulator in $dir ${GATEDNORM_NVCC_FLAGS:+(flags: $GATEDNORM_NVCC_FLAGS)}"
(cd "$dir" && GATEDNORM_CUDA_EMU=1 GATEDNORM_EMU_SANITIZER="$san" MAX_JOBS="${MAX_JOBS:-2}" "$PY" setup.py -q build_ext --inplace > build_emu.log 2>&1) \
  || { tail -40 "$dir/build_emu.log" >&2; echo "emulator build failed: $dir/build_emu.log" >&2; exit 1; }
default=0
[ $# -eq 0 ] && default=1 && set -- -q -m "not slow" -k cpu --durations=15 tests/test_forward.py tests/test_backward.py \
  tests/test_add_rms_norm.py tests/test_inplace_out.py tests/test_bwd_lean.py tests/test_fwd_small.py
echo "== the CUDA kernels on the CPU emulator: pytest $*"
cd "$dir"
if [ -z "$san" ]; then
  "$PY" -m pytest -p no:cacheprovider "$@" || exit $?
  [ $default = 1 ] || exit 0
  # The wide paths again on a device of 16 SMs: at 4, every wide case has chunks for twice
  # the SMs, so the backward's gradients kernel never splits the rows into sets.
  echo "== the same on an emulated 16-SM device: the wide cases"
  env GN_EMU_SMS=16 "$PY" -m pytest -p no:cacheprovider -q -k "cpu and wide" tests/test_forward.py \
    tests/test_backward.py || exit $?
  exit 0
fi
# The sanitizer's runtime must come first in the process; reports go to files (pytest
# captures the tests' stderr). torch's own threads (OpenMP) are off: uninstrumented
# synchronisation that TSan would misread.
rm -rf san_logs && mkdir san_logs
case "$san" in
  address) lib="libasan.so libstdc++.so"  # libstdc++ too: ASan's __cxa_throw hook needs it at start
    export ASAN_OPTIONS="detect_leaks=0:log_path=$dir/san_logs/report" ;;
  thread) lib=libtsan.so
    printf 'race:libtorch_cpu.so\nrace:libc10.so\nrace:libgomp.so\ncalled_from_lib:libgomp.so.1\n' > san_logs/supp
    export TSAN_OPTIONS="halt_on_error=0:report_signal_unsafe=0:suppressions=$dir/san_logs/supp:log_path=$dir/san_logs/report"
    export OMP_NUM_THREADS=1 ;;
esac
rc=0
preload=""
for l in $lib; do preload="$preload $(gcc -print-file-name=$l)"; done
LD_PRELOAD="${preload# }" "$PY" -m pytest -p no:cacheprovider "$@" || rc=$?
if grep -qs -E "ERROR: AddressSanitizer|CHECK failed|WARNING: ThreadSanitizer" san_logs/report*; then
  cat san_logs/report* | grep -v "doesn't fully support makecontext" | head -80
  echo "the $san sanitizer reported errors (all: $dir/san_logs)" >&2
  exit 1
fi
exit $rc
