#!/usr/bin/env bash
# The device call that measures the build variant -DGN_FWD_PARAMS_T=1 (docs/pending/README.md):
# the forward register path staging 16-bit weight and bias in the rows' dtype. Here: `git apply
# docs/pending/fwd_params_t.patch`; device tool: command "bash docs/pending/fwd_params_t_call.sh",
# no carry, ~330 s.
#  1. the default build, then the variant: the forward of the rows whose blocks an SM the
#     staged parameters bound (LayerNorm + bias, groups of 5000 / 5120 / 8192, split slices),
#     bf16 and fp16, and the rows around them, under the built-in grid policy; the variant
#     also persistent and at 2 / 4 row blocks a block for the rows that changed occupancy;
#  2. on the variant: the forward CUDA tests, memcheck and racecheck of the register path's
#     cases.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
grep -q GN_FWD_PARAMS_T csrc/cuda/gated_norm_fwd.cu || { echo "apply docs/pending/fwd_params_t.patch first"; exit 2; }
build() {
  GATEDNORM_NVCC_FLAGS="$1" MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . \
    > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
}
bench() {  # env, rows, csv
  timeout 100 env $1 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
    --dtypes bf16,fp16 --only "$2" --passes fwd --csv $OUT/$3.csv > $OUT/$3.log 2>&1 \
    || { echo "bench $3 failed"; tail -5 $OUT/$3.log; }
}
ROWS='^(qwen3next_prefill|mamba2_g1024|gate_before_5120|rms_z_4096|ln_bias_z_(4096|8192)|ln_z_4096|rms_noz_4096|sigmoid_4096|mixed_16384|sweep_n(1024|2048|4096|8192|65536|131072)|odd_n(1200|5000))$'
SOME='^(ln_bias_z_(4096|8192)|gate_before_5120|odd_n5000|sweep_n8192)$'
build ""; el "build default"
bench GATEDNORM_ROW_ITERS=0 "$ROWS" base
build "-DGN_FWD_PARAMS_T=1"; el "build variant"
bench GATEDNORM_ROW_ITERS=0 "$ROWS" var
for k in -1 2 4; do bench GATEDNORM_ROW_ITERS=$k "$SOME" var_$k; done
python3 -m benchmarks.columns default=$OUT/base.csv params_t=$OUT/var.csv \
  "t_iters-1=$OUT/var_-1.csv" t_iters2=$OUT/var_2.csv t_iters4=$OUT/var_4.csv
el bench
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py > $OUT/tests.log 2>&1
echo "test_forward cuda (variant) exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q -x \
    -p no:cacheprovider -k "cuda and (mixed_param or 5120 or 8192 or odd)" tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
