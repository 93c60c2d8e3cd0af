#!/usr/bin/env bash
# The device call that measures the pending patches (README.md here), one build for all:
# apply those to measure here (`git apply docs/pending/bwd_params_t.patch
# docs/pending/row_ln_one_pass.patch`), device tool: command "bash docs/pending/call.sh",
# no carry, ~360 s with both; then `git checkout -- .` here. Each patch's section runs when
# it is applied; each A/Bs its knob on the same build (off = main's code path). No -x in the
# tests: a first failure would hide the others' results.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
BWD=0; ROW=0
grep -q "GATEDNORM_BWD_PARAMS_T" csrc/cuda/gated_norm_bwd.cu && BWD=1
grep -q "GATEDNORM_ROW_LN_ONE_PASS" csrc/cuda/gated_norm_fwd_row.cu && ROW=1
[ $BWD$ROW = 00 ] && { echo "apply a docs/pending patch first"; exit 2; }
echo "bwd_params_t: $BWD  row_ln_one_pass: $ROW"
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
K="params_staged or kernel_paths"  # params_staged: the forward's landed 16-bit staging too
[ $BWD = 1 ] && K="$K or smem_split or rows_per_block or deterministic"
[ $ROW = 1 ] && K="$K or one_pass or block_row"
timeout 150 python3 -m pytest -q -p no:cacheprovider -k "cuda and ($K)" tests/test_backward.py tests/test_forward.py \
  > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "^FAILED|passed|failed|^E  *AssertionError" $OUT/tests.log | cut -c1-300 | tail -8; el tests
S="params_staged_16bit or ln_bias_smem_split"
[ $ROW = 1 ] && S="$S or one_pass or block_row_layer_norm"
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and ($S)" tests/test_backward.py tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el sanitizers
b() {  # csv rows passes dtypes
  timeout 100 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
    --dtypes $4 --only "$2" --passes $3 --csv $OUT/$1.csv > $OUT/$1.log 2>&1 || { echo "bench $1 failed"; tail -5 $OUT/$1.log; }
}
if [ $BWD = 1 ]; then
  R='^(ln_bias_z_(4096|8192|16384)|ln_z_(4096|32768)|rms_z_4096|gate_before_5120|sweep_n(8192|16384))$'
  b b_on "$R" fwdbwd bf16,fp16; GATEDNORM_BWD_PARAMS_T=0 b b_off "$R" fwdbwd bf16,fp16; b b_on2 "$R" fwdbwd bf16,fp16
  el "bench bwd_params_t"
  python3 -m benchmarks.columns off=$OUT/b_off.csv on=$OUT/b_on.csv on2=$OUT/b_on2.csv
fi
if [ $ROW = 1 ]; then
  R='^(ln_bias_z_(8192|16384)|ln_z_32768|sweep_n16384|rms_noz_16384)$'
  b r_on "$R" fwd bf16,fp16,fp32; GATEDNORM_ROW_LN_ONE_PASS=0 b r_off "$R" fwd bf16,fp16,fp32; b r_on2 "$R" fwd bf16,fp16,fp32
  el "bench row_ln_one_pass"
  python3 -m benchmarks.columns off=$OUT/r_off.csv on=$OUT/r_on.csv on2=$OUT/r_on2.csv
fi
# A knob re-check on the same build (no patch of its own): the split backward's slices of
# 512 vectors (256-thread CTAs, two an SM) against the default 1024 (512 threads, one an SM
# by registers); last swept in the sixth session, before most of today's backward.
R='^sweep_n(16384|32768|65536)$'
b s1024 "$R" fwdbwd bf16,fp16; GATEDNORM_SLICE_VECS=512 b s512 "$R" fwdbwd bf16,fp16; el slices
python3 -m benchmarks.columns slice1024=$OUT/s1024.csv slice512=$OUT/s512.csv
