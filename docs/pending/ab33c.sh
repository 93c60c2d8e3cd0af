#!/usr/bin/env bash
# fwd_small.patch as it would land (launch_small by default for 16-bit RMSNorm groups of
# 128-1024 vectors with less than a warp's vector of slots empty; GATEDNORM_FWD_SMALL=0 keeps
# the register path), most needed first: build, the small kernel's CUDA tests (test_fwd_small,
# with which groups take it), memcheck and racecheck over them, FWD_SMALL on / off interleaved in
# bf16 and fp16, fp32 forced (=2) against off, then the forward's and backward's CUDA tests
# under the new default. ~6 min; no carry.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
patch -p1 -s -N < docs/pending/fwd_small.patch || exit 1
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build
timeout 40 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_small.py 2>&1 | tail -3; el small-tests
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
    -k "cuda and (match or strided)" tests/test_fwd_small.py > $OUT/san-$tool.log 2>&1
  echo "$tool: exit $? $(grep -E 'passed|failed' $OUT/san-$tool.log | tail -1)"; grep -m3 -E "ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san-$tool.log; el $tool
done
S='^(odd_n(1200|5000)|sweep_n(1024|2048|4096|8192)|rms_noz_4096)$'
for k in 1 0 1 0; do GATEDNORM_FWD_SMALL=$k timeout 40 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.2 \
  --copy-gib 1 --dtypes bf16,fp16 --only "$S" --passes fwd --csv $OUT/s$k.$RANDOM.csv > /dev/null 2>&1; done
el bench; python3 -m benchmarks.columns $(for f in $OUT/s1.*.csv $OUT/s0.*.csv; do echo "$(basename $f .csv)=$f"; done)
# fp32 (512-4096 columns) through the kernel only under GATEDNORM_FWD_SMALL=2: forced against off
for k in 2 0 2 0; do GATEDNORM_FWD_SMALL=$k timeout 40 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.2 \
  --copy-gib 1 --dtypes fp32 --only '^(sweep_n(512|1024|2048|4096)|rms_z_4096|odd_n1200)$' --passes fwd --csv $OUT/f$k.$RANDOM.csv > /dev/null 2>&1; done
el fp32; python3 -m benchmarks.columns $(for f in $OUT/f2.*.csv $OUT/f0.*.csv; do echo "$(basename $f .csv)=$f"; done)
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py tests/test_backward.py > $OUT/t.log 2>&1
echo "forward + backward tests: exit $? $(tail -1 $OUT/t.log)"; grep -E "^(FAILED|ERROR)" $OUT/t.log | head; el done
