#!/usr/bin/env bash
# The thirty-first session's last device call (LIMIT=<s> bash docs/pending/ab31c.sh; carry
# .whl: fla-core and einops wheels): the landed tree's backward CUDA tests, then every gated
# row (bf16, forward and forward+backward, ours), then FLA's kernels beside ours on a subset.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-560}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ]; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build

timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py tests/test_bwd_lean.py > $OUT/t.log 2>&1
echo "tests: exit $? $(tail -1 $OUT/t.log)"; grep -E "^(FAILED|ERROR)" $OUT/t.log | head; el tests
timeout 150 python3 -m benchmarks.bench --family gated --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes bf16 \
  --passes fwd,fwdbwd --csv $OUT/ours.csv > $OUT/ours.log 2>&1; el "bench ours"
F='^sweep_n(4096|16384|65536)$'
for k in 1 0; do GATEDNORM_BWD_LEAN=$k timeout 40 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 \
  --dtypes fp32 --only "$F" --passes fwdbwd --csv $OUT/f32_$k.csv > $OUT/f32_$k.log 2>&1; done
python3 -m benchmarks.columns lean=$OUT/f32_1.csv off=$OUT/f32_0.csv; el fp32
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
left 60 && { timeout $(( LIMIT - $(date +%s) + t0 - 5 )) python3 -m benchmarks.bench --family gated --providers ours,triton,fng --no-compile \
  --budget 0.25 --copy-gib 1 --dtypes bf16 --passes fwd,fwdbwd \
  --only '^(qwen3next_prefill|rms_z_4096|sigmoid_4096|sweep_n(128|1024|4096)|odd_n(1200|5000)|mamba2_g1024)$' \
  --csv $OUT/peers.csv > $OUT/peers.log 2>&1; el "bench peers"; }
python3 -m benchmarks.columns ours=$OUT/ours.csv
grep -A40 "^row" $OUT/peers.log | head -60
