#!/usr/bin/env bash
# The device call that measures docs/pending's patches (README.md there): run from the repo
# root of main with the three patches applied, after `rm -rf ab && bash scripts/device_ab.sh
# --export main` here; device tool: command "bash docs/pending/ab_call.sh", carry ["ab"], ~530 s.
#  1. scripts/device_ab.sh: main (ab/main), then the patched tree (left installed), each
#     built and benchmarked (ours only; fwd and fwd+bwd);
#  2. the patched build again with GATEDNORM_FWD_DECODE_WAVES=1000 (fwd_decode_warps.patch);
#  3. its CUDA forward / backward / add-norm / parameter tests, memcheck over wide + split;
#  4. one table, a column per run.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT; OUT=$(cd $OUT && pwd)
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
timeout 330 bash scripts/device_ab.sh "--only '^(bign_1m|qwen3next_prefill|mamba2_g1024|rms_z_4096|sweep_n(1024|4096|8192|16384|32768|65536|131072)|odd_n5000)\$' --passes fwd,fwdbwd" ab/main . > $OUT/ab.log 2>&1
el "A/B (ab.log)"
timeout 60 env GATEDNORM_FWD_DECODE_WAVES=1000 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
  --copy-gib 1 --only '^(qwen3next_prefill|mamba2_g1024|rms_z_4096|sweep_n(1024|4096|8192)|odd_n5000)$' --passes fwd \
  --csv $OUT/ab_rowblock.csv > $OUT/bench_rowblock.log 2>&1 || { echo "bench rowblock failed"; tail -5 $OUT/bench_rowblock.log; }
el "knob"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py tests/test_backward.py \
  tests/test_add_rms_norm.py tests/test_param_layouts.py > $OUT/tests.log 2>&1
echo "tests exit $?"; tail -3 $OUT/tests.log; el "tests"
timeout 65 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -x -p no:cacheprovider \
  -k "cuda and (wide or 16384 or 131072 or kernel_paths)" tests/test_forward.py tests/test_backward.py > $OUT/san_memcheck.log 2>&1
echo "memcheck exit $?"; grep -E "passed|failed" $OUT/san_memcheck.log | tail -1; grep -m2 "ERROR SUMMARY" $OUT/san_memcheck.log
python3 -m benchmarks.columns main=$OUT/ab_main.csv work=$OUT/ab_work.csv rowblock=$OUT/ab_rowblock.csv
