#!/usr/bin/env bash
# The device call that measures docs/pending/bwd_short_ring.patch (README.md there): the
# backward register path's ring at 2 rows where 3 leave one or two blocks an SM. Here:
# `git apply docs/pending/bwd_short_ring.patch`; device tool: command
# "bash docs/pending/bwd_short_ring_call.sh", no carry, ~420 s (two builds).
#  1. the patched build, forward+backward of the rows it can move and of the rows around them,
#     bf16 and fp32, under GATEDNORM_BWD_SHORT_RING=0 (3 rows everywhere) and the default; then
#     main (the patch reversed): every backward kernel's ring depth became a run-time value;
#  2. the patched build again: test_backward's CUDA cases, memcheck and racecheck of some.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
P=docs/pending/bwd_short_ring.patch
grep -q BWD_SHORT_RING csrc/cuda/plan.h || { echo "git apply $P first"; exit 2; }
build() {
  MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
    || { tail -30 $OUT/build.log; exit 1; }
}
ROWS='^(odd_n(1200|5000)|gate_before_5120|ln_bias_z_4096|ln_z_4096|rms_z_4096|sigmoid_4096|mamba2_g1024|qwen3next_prefill|sweep_n(1024|8192))$'
bench() {  # knob, csv
  timeout 130 env GATEDNORM_BWD_SHORT_RING=$1 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$ROWS" --passes fwdbwd --csv $OUT/$2.csv > $OUT/$2.log 2>&1 \
    || { echo "bench $2 failed"; tail -5 $OUT/$2.log; }
}
build; el "build (patched)"
bench 0 ring3; bench 1 short
git apply -R $P && build && el "build (main)" && bench 1 main
python3 -m benchmarks.columns main=$OUT/main.csv ring3=$OUT/ring3.csv short=$OUT/short.csv
git apply $P || { echo "re-apply failed"; exit 1; }
build; el "build (patched again)"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py > $OUT/tests.log 2>&1
echo "test_backward cuda exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q -x \
    -p no:cacheprovider -k "cuda and (plan_edges or 3000x256 or grads_match_reference)" tests/test_backward.py \
    > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
