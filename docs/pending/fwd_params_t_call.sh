#!/usr/bin/env bash
# The device call that measures docs/pending/fwd_params_t.patch (README.md there): the
# forward register path staging 16-bit weight and bias in the rows' dtype where fp32
# staging leaves one block an SM (LayerNorm + bias + gate after at 8192). Here: `git apply
# docs/pending/fwd_params_t.patch`; device tool: command "bash docs/pending/fwd_params_t_call.sh",
# no carry, ~330 s (three builds).
#  1. the forward of the rows around it, bf16 and fp16, patched and main;
#  2. on the patched build: the forward CUDA tests, memcheck and racecheck of its cases.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
P=docs/pending/fwd_params_t.patch
grep -q "typename SP = acc_t<T>" csrc/cuda/gated_norm_fwd.cu || { echo "git apply $P first"; exit 2; }
build() {
  MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
    || { tail -30 $OUT/build.log; exit 1; }
}
ROWS='^(qwen3next_prefill|mamba2_g1024|gate_before_5120|rms_z_4096|ln_bias_z_(4096|8192)|ln_z_4096|rms_noz_4096|sigmoid_4096|mixed_16384|sweep_n(1024|2048|4096|8192)|odd_n(1200|5000))$'
bench() {  # csv
  timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
    --dtypes bf16,fp16 --only "$ROWS" --passes fwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 \
    || { echo "bench $1 failed"; tail -5 $OUT/$1.log; }
}
build; el "build (patched)"
bench staged
git apply -R --exclude=tests/test_forward.py $P && build && el "build (main)" && bench main
python3 -m benchmarks.columns main=$OUT/main.csv staged=$OUT/staged.csv
git apply --exclude=tests/test_forward.py $P || { echo "re-apply failed"; exit 1; }
build; el "build (patched again)"
timeout 170 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py > $OUT/tests.log 2>&1
echo "test_forward cuda exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and params_staged" tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
