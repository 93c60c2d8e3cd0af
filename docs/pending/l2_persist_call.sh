#!/usr/bin/env bash
# The device call that measures docs/pending/l2_persist.patch (README.md there): the cluster
# L2 forward on a persistent grid. Here: `git apply docs/pending/l2_persist.patch`; device
# tool: command "bash docs/pending/l2_persist_call.sh", no carry, ~200 s (one build).
#  1. the rows of the cluster kernel (16-bit 32K-64K, fp32 16K-32K and 128K) and their
#     neighbours, bf16 and fp32, forward and forward+backward, under GATEDNORM_L2_PERSIST=0
#     (a cluster a row, as on main: the non-cluster kernels' SASS is main's) and 1;
#  2. test_block_row_cluster and the kernel-path tests under 1, memcheck and racecheck.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
grep -q GATEDNORM_L2_PERSIST csrc/cuda/gated_norm_fwd_row.cu || { echo "git apply docs/pending/l2_persist.patch first"; exit 2; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
ROWS='^(sweep_n(16384|32768|65536|131072))$'
for k in 0 1; do
  timeout 100 env GATEDNORM_L2_PERSIST=$k python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$ROWS" --passes fwd,fwdbwd --csv $OUT/p_$k.csv > $OUT/p_$k.log 2>&1 \
    || { echo "bench $k failed"; tail -5 $OUT/p_$k.log; }
done
python3 -m benchmarks.columns per_row=$OUT/p_0.csv persistent=$OUT/p_1.csv
el bench
timeout 100 env GATEDNORM_L2_PERSIST=1 python3 -m pytest -q -p no:cacheprovider \
  -k "cuda and (block_row or kernel_paths or smem_split_paths)" tests/test_forward.py tests/test_backward.py \
  > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 env GATEDNORM_L2_PERSIST=1 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
    python3 -m pytest -q -p no:cacheprovider -k "cuda and block_row_cluster" tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
