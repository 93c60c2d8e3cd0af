#!/usr/bin/env bash
# The device call that measures docs/pending/bwd_params_t.patch (README.md there): the
# backward register path staging 16-bit weight and bias in the rows' dtype where fp32
# staging leaves one block an SM (LayerNorm + bias + gate after, 4096 columns a block or a
# split slice), and the sanitizers still owed to the forward's landed 16-bit staging.
# Here: `git apply docs/pending/bwd_params_t.patch`; device tool: command
# "bash docs/pending/bwd_params_t_call.sh", no carry, ~250 s (one build; the knob
# GATEDNORM_BWD_PARAMS_T=0 runs main's kernels: their SASS is identical to main's).
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
grep -q "GATEDNORM_BWD_PARAMS_T" csrc/cuda/gated_norm_bwd.cu || { echo "git apply docs/pending/bwd_params_t.patch first"; exit 2; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
# No -x: a first failure would hide the other cases' results.
timeout 120 python3 -m pytest -q -p no:cacheprovider \
  -k "cuda and (params_staged or smem_split or rows_per_block or kernel_paths or deterministic)" \
  tests/test_backward.py tests/test_forward.py > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "^FAILED|passed|failed|^E  *AssertionError" $OUT/tests.log | cut -c1-300 | tail -8; el tests
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and (params_staged_16bit or ln_bias_smem_split)" tests/test_backward.py \
    tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el sanitizers
R='^(ln_bias_z_(4096|8192|16384)|ln_z_(4096|32768)|rms_z_4096|gate_before_5120|sweep_n(8192|16384))$'
b() {  # csv
  timeout 100 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
    --dtypes bf16,fp16 --only "$R" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 \
    || { echo "bench $1 failed"; tail -5 $OUT/$1.log; }
}
b on; GATEDNORM_BWD_PARAMS_T=0 b off; b on2; el bench
python3 -m benchmarks.columns off=$OUT/off.csv on=$OUT/on.csv on2=$OUT/on2.csv
# A knob re-check on the same build (no patch of its own): the split backward's slices of
# 512 vectors (256-thread CTAs, two an SM) against the default 1024 (512 threads, one an SM
# by registers); last swept in the sixth session, before most of today's backward.
R='^sweep_n(16384|32768|65536)$'
b s1024; GATEDNORM_SLICE_VECS=512 b s512; el slices
python3 -m benchmarks.columns slice1024=$OUT/s1024.csv slice512=$OUT/s512.csv
