#!/usr/bin/env bash
# fwd_small_fp32.diff: the small-block forward for fp32 RMSNorm groups of 128-1024 vectors with at
# least three quarters of the block's slots filled (forced in the thirty-third session it won on
# every fp32 row: rms_z_4096 1.011 -> 1.021, sweep_n4096 0.996 -> 1.008, odd_n1200 0.980 -> 0.990).
# Build, test_fwd_small on CUDA (which groups take the kernel), memcheck over its fp32 cases, fp32
# GATEDNORM_FWD_SMALL 1 / 0 interleaved; then the forward and backward CUDA tests, which a
# 150-second limit cut in the thirty-third session (each file on its own now). ~7 min, no carry.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
patch -p1 -s -N < docs/pending/fwd_small_fp32.diff || exit 1
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build
timeout 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_small.py 2>&1 | tail -3; el small-tests
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
  -k "cuda and match and float32" tests/test_fwd_small.py > $OUT/san.log 2>&1
echo "memcheck: exit $? $(grep -E 'passed|failed' $OUT/san.log | tail -1)"; grep -m2 "ERROR SUMMARY" $OUT/san.log; el memcheck
for k in 1 0 1 0; do GATEDNORM_FWD_SMALL=$k timeout 40 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.2 \
  --copy-gib 1 --dtypes fp32 --only '^(sweep_n(512|1024|2048|4096)|rms_z_4096|sigmoid_4096|odd_n1200)$' --passes fwd --csv $OUT/f$k.$RANDOM.csv > /dev/null 2>&1; done
el fp32; python3 -m benchmarks.columns $(for f in $OUT/f1.*.csv $OUT/f0.*.csv; do echo "$(basename $f .csv)=$f"; done)
for t in test_forward test_backward; do
  timeout 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/$t.py > $OUT/$t.log 2>&1
  echo "$t: exit $? $(tail -1 $OUT/$t.log)"; grep -E "^(FAILED|ERROR)" $OUT/$t.log | head; el $t
done
