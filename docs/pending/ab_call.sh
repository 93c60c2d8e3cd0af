#!/usr/bin/env bash
# The device call that measures docs/pending's patches (README.md there): run from the repo
# root of main with the three patches applied, after `rm -rf ab && bash scripts/device_ab.sh
# --export main` here; device tool: command "bash docs/pending/ab_call.sh", carry ["ab"], ~530 s.
#  1. builds the patched tree and benchmarks it (ours only; fwd and fwd+bwd);
#  2. the same build with GATEDNORM_FWD_DECODE_WAVES=1000 (fwd_decode_warps.patch's kernel);
#  3. its CUDA forward / backward / add-norm / parameter tests, memcheck over wide + split;
#  4. builds main (ab/main) and benchmarks it; one table, a column per run.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT; OUT=$(cd $OUT && pwd)
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
ROWS='^(bign_1m|qwen3next_prefill|mamba2_g1024|rms_z_4096|sweep_n(1024|4096|8192|16384|32768|65536|131072)|odd_n5000)$'
bench() {  # $1: name, $2: tree (run from it: its own torch_ops and benchmarks)
  (cd $2 && timeout 80 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 --only "$ROWS" \
    --passes fwd,fwdbwd --csv $OUT/ab_$1.csv) > $OUT/bench_$1.log 2>&1 || { echo "bench $1 failed"; tail -5 $OUT/bench_$1.log; }
}
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build_all.log 2>&1 || { tail -30 $OUT/build_all.log; exit 1; }
el "built all"; bench all .; el "bench all"
(timeout 60 env GATEDNORM_FWD_DECODE_WAVES=1000 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
  --only '^(qwen3next_prefill|mamba2_g1024|rms_z_4096|sweep_n(1024|4096|8192)|odd_n5000)$' --passes fwd --csv $OUT/ab_rowblock.csv) \
  > $OUT/bench_rowblock.log 2>&1 || { echo "bench rowblock failed"; tail -5 $OUT/bench_rowblock.log; }
el "bench rowblock"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py tests/test_backward.py \
  tests/test_add_rms_norm.py tests/test_param_layouts.py > $OUT/tests_all.log 2>&1
echo "tests exit $?"; tail -3 $OUT/tests_all.log; el "tests"
timeout 65 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -x -p no:cacheprovider \
  -k "cuda and (wide or 16384 or 131072 or kernel_paths)" tests/test_forward.py tests/test_backward.py > $OUT/san_memcheck.log 2>&1
echo "memcheck exit $?"; grep -E "passed|failed" $OUT/san_memcheck.log | tail -1; grep -m2 "ERROR SUMMARY" $OUT/san_memcheck.log; el "memcheck"
(cd ab/main && MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e .) > $OUT/build_main.log 2>&1 || { tail -30 $OUT/build_main.log; exit 1; }
el "built main"; bench main ab/main; el "bench main"
python3 -m benchmarks.columns main=$OUT/ab_main.csv all=$OUT/ab_all.csv rowblock=$OUT/ab_rowblock.csv
