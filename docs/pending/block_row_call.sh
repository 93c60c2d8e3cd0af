#!/usr/bin/env bash
# The device call that measures docs/pending/block_row_next.patch (README.md there). Here:
# `git apply docs/pending/block_row_next.patch`; device tool: command
# "bash docs/pending/block_row_call.sh", no carry, ~330 s.
#  1. build; the forward of the rows the patch reaches, bf16 and fp32, under
#     GATEDNORM_FWD_BLOCK_ROW = 0 (split path), 1 (main's range), 2 (the patch's range),
#     3 (main's range on the two-blocks-an-SM kernel, fwd_block_row_l2);
#  2. with 2 and with 3: the CUDA forward tests of the block-row cases, then memcheck and
#     racecheck on them.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
ROWS='^(sweep_n(8192|16384|32768)|rms_noz_16384)$'
for k in 0 1 2 3; do
  timeout 50 env GATEDNORM_FWD_BLOCK_ROW=$k python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$ROWS" --passes fwd --csv $OUT/block_row_$k.csv > $OUT/bench_$k.log 2>&1 \
    || { echo "bench $k failed"; tail -5 $OUT/bench_$k.log; }
done
python3 -m benchmarks.columns split=$OUT/block_row_0.csv main=$OUT/block_row_1.csv wider=$OUT/block_row_2.csv \
  l2=$OUT/block_row_3.csv
el bench
# main's test_cuda_kernel_paths (its RMSNorm entries, 3b7e76b, have not run on a GPU yet)
timeout 40 python3 -m pytest -q -p no:cacheprovider -k "cuda and kernel_paths" tests/test_forward.py 2>&1 | tail -3
SEL="cuda and (270x or block_row or kernel_paths)"
for k in 2 3; do
  timeout 45 env GATEDNORM_FWD_BLOCK_ROW=$k python3 -m pytest -q -p no:cacheprovider -k "$SEL" tests/test_forward.py \
    > $OUT/tests_$k.log 2>&1
  echo "tests (knob $k) exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests_$k.log | tail -5
  for tool in memcheck racecheck; do
    timeout 45 env GATEDNORM_FWD_BLOCK_ROW=$k compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
      python3 -m pytest -q -x -p no:cacheprovider -k "cuda and (270x or block_row)" tests/test_forward.py \
      > $OUT/san_${tool}_$k.log 2>&1
    echo "$tool (knob $k) exit $?"; grep -E "passed|failed" $OUT/san_${tool}_$k.log | tail -1
    grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_${tool}_$k.log
  done
done
el done
