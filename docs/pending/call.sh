#!/usr/bin/env bash
# The twenty-eighth session's device calls.
#   (bash docs/pending/call.sh [all|1|2]: both calls, or one; SHORT=1: without Nsight Compute
#   and the vecs sweep)
#   call 1 (bash docs/pending/call.sh 1): main's build first, then the tree with the patch
#     (the backward's dw/db fold reuses the ring: plan.h, bwd_stream_bytes), on the rows the
#     backward register path serves with one vector a thread (16-bit groups <= 2048) and the
#     ln_bias rows whose 16-bit staging the fold's 8-16 KB decided (GATEDNORM_BWD_PARAMS_T=0
#     against the default); the backward CUDA tests and racecheck on the patched build;
#     Nsight Compute on qwen3next_prefill's backward. Keeps the patched CSV in build/s28
#     for call 2 (the machine stays warm 30 s).
#   call 2 (bash docs/pending/call.sh 2): the same rows built with
#     -DGN_BWD_NV1_MIN_BLOCKS=3 (one-vector kernels at 80 registers: three 256-thread
#     blocks an SM instead of two), against call 1's patched default; then, with time left,
#     the GATEDNORM_BWD_VECS sweep the twenty-seventh session left (bf16).
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT build/s28
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
build() {
  GATEDNORM_NVCC_FLAGS="$1" MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . \
    > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
  el "build '$1'"
}
b() {  # name dtypes rows
  timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes $2 \
    --only "$3" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 || { echo "bench $1 failed"; tail -3 $OUT/$1.log; }
}
NV1='^(qwen3next_prefill|sweep_n(64|128|256|512|1024|2048)|odd_n1200|mamba2_g1024|ln_bias_z_(4096|8192|16384)|rms_z_4096)$'
VECS='^(sweep_n(1024|4096|8192)|odd_n1200|odd_n5000|gate_before_5120|(rms|ln_bias)_z_4096|sigmoid_4096|mamba2_g1024)$'
# main lacks the change while it is pending (the device tree may have no .git: patch, not git)
patched() { grep -q bwd_stream_bytes csrc/cuda/plan.h; }
step=${1:-all}
if [ "$step" = 1 ] || [ "$step" = all ]; then
  if patched; then patch -R -p1 -s < docs/pending/bwd_fold_in_ring.patch || exit 1; fi
  build ""
  b m bf16,fp16 "$NV1"
  patch -p1 -s < docs/pending/bwd_fold_in_ring.patch || exit 1
  build ""
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py > $OUT/tests.log 2>&1
  echo "backward CUDA tests: exit $? $(tail -1 $OUT/tests.log)"; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head
  el tests
  timeout 100 compute-sanitizer --tool racecheck --error-exitcode 99 --print-limit 10 python3 -m pytest -q \
    -p no:cacheprovider -m "not slow" -k "cuda and (staged or rows_per_block or 33x1000 or plan_edges)" \
    tests/test_backward.py > $OUT/racecheck.log 2>&1
  echo "racecheck: exit $? $(grep -E 'passed|failed' $OUT/racecheck.log | tail -1)"; grep -m5 -E "RACECHECK SUMMARY|Race" $OUT/racecheck.log
  el racecheck
  b d bf16,fp16 "$NV1"; cp $OUT/d.csv build/s28/d.csv
  GATEDNORM_BWD_PARAMS_T=0 b pt0 bf16,fp16 '^ln_bias_z_(8192|16384)$'
  python3 -m benchmarks.columns main=$OUT/m.csv patched=$OUT/d.csv
  python3 -m benchmarks.columns patched=$OUT/d.csv params_t0=$OUT/pt0.csv
  el "nv1 rows"
  [ -n "${SHORT:-}" ] || {
    timeout 150 ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      python3 -m benchmarks.ncu_rows qwen3next_prefill --providers ours --pass fwdbwd > $OUT/ncu.txt 2>&1
    grep -E "bwd_regs|fwd_|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Issue Slots Busy|No Eligible|Active Warps Per|Warp Cycles Per Issued|Eligible Warps|Executed Ipc A|Stall" $OUT/ncu.txt | head -80
    el ncu
  }
fi
if [ "$step" = 2 ] || [ "$step" = all ]; then
  patched || patch -p1 -s < docs/pending/bwd_fold_in_ring.patch || exit 1
  build "-DGN_BWD_NV1_MIN_BLOCKS=3"
  b n3 bf16,fp16 "$NV1"
  python3 -m benchmarks.columns default=build/s28/d.csv nv1_3blocks=$OUT/n3.csv
  el "nv1 3 blocks"
  if [ -z "${SHORT:-}" ] && [ $(( $(date +%s) - t0 )) -lt 400 ]; then
    build ""
    b vd bf16 "$VECS"; GATEDNORM_BWD_VECS=1 b v1 bf16 "$VECS"; GATEDNORM_BWD_VECS=2 b v2 bf16 "$VECS"
    python3 -m benchmarks.columns default=$OUT/vd.csv vecs1=$OUT/v1.csv vecs2=$OUT/v2.csv
    el "vecs sweep"
  fi
fi
