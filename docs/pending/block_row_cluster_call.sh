#!/usr/bin/env bash
# The device call that measures docs/pending/block_row_cluster.patch and, where it is applied
# too, block_row_small.patch (README.md there). Here: `git apply` the patches; device tool:
# command "bash docs/pending/block_row_cluster_call.sh", no carry, ~300 s (~420 s with both).
#  1. build; the rows each patch is for, under GATEDNORM_FWD_BLOCK_ROW = 0 (split path),
#     1 (main), 2 (fwd_block_row_l2 over a cluster: 16-bit 32K-128K, fp32 32K-64K) and
#     3 (fwd_block_row in small blocks: 1K-8K);
#  2. the block-row CUDA tests under 1, 2 and 3 (1: the landed L2 kernel's first pass was
#     restructured: loads, then the sum); memcheck and racecheck of the new cases.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
small=0; grep -q launch_small csrc/cuda/gated_norm_fwd_row.cu && small=1
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el "build (small-block patch: $small)"
bench() {  # knob, rows, csv, passes
  timeout 70 env GATEDNORM_FWD_BLOCK_ROW=$1 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$2" --passes $4 --csv $OUT/$3.csv > $OUT/$3.log 2>&1 \
    || { echo "bench $3 failed"; tail -5 $OUT/$3.log; }
}
WIDE='^(sweep_n(16384|32768|65536|131072)|mixed_16384|rms_noz_16384)$'
for k in 0 1 2; do bench $k "$WIDE" cl_$k fwd,fwdbwd; done
python3 -m benchmarks.columns split=$OUT/cl_0.csv main=$OUT/cl_1.csv cluster=$OUT/cl_2.csv
if [ $small = 1 ]; then
  SMALL='^(sweep_n(1024|2048|4096|8192)|odd_n(1200|5000)|rms_z_4096|rms_noz_4096|sigmoid_4096)$'
  for k in 1 3; do bench $k "$SMALL" sm_$k fwd,fwdbwd; done
  python3 -m benchmarks.columns main=$OUT/sm_1.csv small=$OUT/sm_3.csv
fi
el bench
SEL="cuda and (270x or block_row or kernel_paths or mixed)"
for k in 1 2 $([ $small = 1 ] && echo 3); do
  timeout 60 env GATEDNORM_FWD_BLOCK_ROW=$k python3 -m pytest -q -p no:cacheprovider -k "$SEL" tests/test_forward.py \
    > $OUT/tests_$k.log 2>&1
  echo "tests (knob $k) exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests_$k.log | tail -4
done
for k in 2 $([ $small = 1 ] && echo 3); do
  for tool in memcheck racecheck; do
    timeout 90 env GATEDNORM_FWD_BLOCK_ROW=$k compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
      python3 -m pytest -q -x -p no:cacheprovider -k "cuda and (block_row_cluster or block_row_small)" \
      tests/test_forward.py > $OUT/san_${tool}_$k.log 2>&1
    echo "$tool (knob $k) exit $?"; grep -E "passed|failed" $OUT/san_${tool}_$k.log | tail -1
    grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_${tool}_$k.log
  done
done
el done
