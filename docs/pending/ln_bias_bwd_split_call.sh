#!/usr/bin/env bash
# The device call that measures docs/pending/ln_bias_bwd_split.patch (README.md there): the
# backward register path taking twice the CTAs where its split slice overflows shared
# memory (16-bit LayerNorm + bias at 16384 / 32768), instead of the loop path. Here:
# `git apply docs/pending/ln_bias_bwd_split.patch`; device tool: command
# "bash docs/pending/ln_bias_bwd_split_call.sh", no carry, ~300 s (three builds, two of
# plan.cu alone).
#  1. forward+backward of the LayerNorm rows and their neighbours, bf16 / fp16 / fp32,
#     patched and main;
#  2. on the patched build: the backward's split / plan tests, memcheck and racecheck.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
P=docs/pending/ln_bias_bwd_split.patch
grep -q "takes more, smaller slices" csrc/cuda/plan.cu || { echo "git apply $P first"; exit 2; }
build() {
  MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
    || { tail -30 $OUT/build.log; exit 1; }
}
ROWS='^(ln_bias_z_(4096|8192|16384)|ln_z_32768|sweep_n(16384|32768))$'
bench() {  # csv
  timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 --copy-gib 1 \
    --dtypes bf16,fp16,fp32 --only "$ROWS" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 \
    || { echo "bench $1 failed"; tail -5 $OUT/$1.log; }
}
build; el "build (patched)"
bench split
git apply -R --exclude=tests/test_backward.py $P && build && el "build (main)" && bench main
python3 -m benchmarks.columns main=$OUT/main.csv split=$OUT/split.csv
git apply --exclude=tests/test_backward.py $P || { echo "re-apply failed"; exit 1; }
build; el "build (patched again)"
timeout 150 python3 -m pytest -q -p no:cacheprovider \
  -k "cuda and (smem_split or plan_edges or rows_per_block or kernel_paths)" tests/test_backward.py > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and ln_bias_smem_split" tests/test_backward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
