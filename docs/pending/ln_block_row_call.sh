#!/usr/bin/env bash
# The device call that measures docs/pending/ln_block_row.patch (README.md there): LayerNorm
# on fwd_block_row. Here: `git apply docs/pending/ln_block_row.patch`; device tool: command
# "bash docs/pending/ln_block_row_call.sh", no carry, ~300 s (two builds).
#  1. the patched build: LayerNorm and RMSNorm rows of the block-row range, bf16 and fp32,
#     under GATEDNORM_FWD_BLOCK_ROW=0 (the split path) and the default; then main (the patch
#     reversed, rebuilt): the default (the RMSNorm kernels gained a run-time LayerNorm branch);
#  2. the patched build again: the block-row CUDA tests, memcheck and racecheck of the new ones.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
P=docs/pending/ln_block_row.patch
grep -q "const bool ln = !c.is_rms_norm" csrc/cuda/gated_norm_fwd_row.cu || { echo "git apply $P first"; exit 2; }
build() {
  MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
    || { tail -30 $OUT/build.log; exit 1; }
}
ROWS='^(ln_bias_z_(4096|8192|16384)|sweep_n(8192|16384|32768)|rms_noz_16384|mixed_16384)$'
bench() {  # knob, csv (cases.py comes from the patched tree: ln_bias_z_16384 is the patch's row)
  timeout 100 env GATEDNORM_FWD_BLOCK_ROW=$1 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.3 \
    --copy-gib 1 --dtypes bf16,fp32 --only "$ROWS" --passes fwd,fwdbwd --csv $OUT/$2.csv > $OUT/$2.log 2>&1 \
    || { echo "bench $2 failed"; tail -5 $OUT/$2.log; }
}
build; el "build (patched)"
bench 0 split; bench 1 ln
# main's kernels under the patched tree's rows (cases.py, the patch's ln_bias_z_16384, stays)
git apply -R --exclude=benchmarks/cases.py $P && build && el "build (main)" && bench 1 main
python3 -m benchmarks.columns split=$OUT/split.csv main=$OUT/main.csv ln=$OUT/ln.csv
git apply --exclude=benchmarks/cases.py $P || { echo "re-apply failed"; exit 1; }
build; el "build (patched again)"
timeout 120 python3 -m pytest -q -p no:cacheprovider -k "cuda and (block_row or 270x or mixed or kernel_paths)" \
  tests/test_forward.py > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "^FAILED|passed|failed" $OUT/tests.log | tail -4
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and block_row_layer_norm" tests/test_forward.py > $OUT/san_$tool.log 2>&1
  echo "$tool exit $?"; grep -E "passed|failed" $OUT/san_$tool.log | tail -1
  grep -m2 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san_$tool.log
done
el done
