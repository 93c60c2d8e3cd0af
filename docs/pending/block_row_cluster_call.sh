#!/usr/bin/env bash
# The device call that measures docs/pending/block_row_cluster.patch (README.md there).
# Here: `git apply docs/pending/block_row_cluster.patch`; device tool: command
# "bash docs/pending/block_row_cluster_call.sh", no carry, ~300 s.
#  1. build; the forward (and forward + backward) of sweep_n16384..131072 in bf16 and fp32
#     under GATEDNORM_FWD_BLOCK_ROW = 0 (split path), 1 (main), 2 (fwd_block_row_l2 over a
#     cluster of 2-8 CTAs for 16-bit 32K-128K and fp32 32K-64K);
#  2. the block-row CUDA tests under 1 and 2 (1: the landed kernel's first pass was
#     restructured: loads, then the sum), memcheck and racecheck under 2.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
ROWS='^(sweep_n(16384|32768|65536|131072)|mixed_16384|rms_noz_16384)$'
for k in 0 1 2; do
  timeout 70 env GATEDNORM_FWD_BLOCK_ROW=$k python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$ROWS" --passes fwd,fwdbwd --csv $OUT/cl_$k.csv > $OUT/cl_$k.log 2>&1 \
    || { echo "bench $k failed"; tail -5 $OUT/cl_$k.log; }
done
python3 -m benchmarks.columns split=$OUT/cl_0.csv main=$OUT/cl_1.csv cluster=$OUT/cl_2.csv
el bench
SEL="cuda and (270x or block_row or kernel_paths or mixed)"
for k in 1 2; do
  timeout 60 env GATEDNORM_FWD_BLOCK_ROW=$k python3 -m pytest -q -p no:cacheprovider -k "$SEL" tests/test_forward.py \
    > $OUT/tests_$k.log 2>&1
  echo "tests (knob $k) exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests_$k.log | tail -4
done
for tool in memcheck racecheck; do
  timeout 100 env GATEDNORM_FWD_BLOCK_ROW=2 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
    python3 -m pytest -q -x -p no:cacheprovider -k "cuda and (block_row_cluster or 270x)" tests/test_forward.py \
    > $OUT/san_$tool.log 2>&1
  echo "$tool (knob 2) exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
