#!/usr/bin/env bash
# Open checks for a later device call (LIMIT=<s> bash docs/pending/ab32.sh, carry .whl optional;
# ~8 min: give it two calls, or skip stages by LIMIT):
# 0. the thirty-first session's built-in slice rule (plan.cu slice_vecs), measured then only
#    through GATEDNORM_SLICE_VECS: the backward CUDA tests, and the rows it changed against
#    the halved slices (GATEDNORM_SLICE_VECS=512 reproduces them on those rows);
# 1. GATEDNORM_BWD_VECS 1 / 2 against the plan on the 4096 rows and odd_n1200 (the
#    twenty-seventh session's note: one vector a thread at 4096 for RMSNorm + gate, two at
#    1200), now that the two-vector kernels carry the lean row copy (design.md);
# 2. the interleaved A/B of the dw/db fold in the ring (patch -R of land.diff: m1 d2 m2
#    against d1), whose first measurement sat at the call's noise (last: its lowest value);
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-560}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ]; }
build() { MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build; }
ROWS='^(qwen3next_prefill|rms_z_4096|ln_bias_z_(4096|8192|16384)|sweep_n(256|1024|2048))$'
b() { timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes bf16,fp16 \
  --only "$ROWS" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 || { echo "bench $1 failed"; tail -3 $OUT/$1.log; }; el "bench $1"; }
build
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py tests/test_bwd_lean.py > $OUT/t.log 2>&1
echo "tests: exit $? $(tail -1 $OUT/t.log)"; grep -E "^(FAILED|ERROR)" $OUT/t.log | head
W='^(sweep_n32768|sweep_n65536)$'
for k in 0 512 0 512; do GATEDNORM_SLICE_VECS=$k timeout 40 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 \
  --copy-gib 1 --dtypes fp32,bf16,fp16 --only "$W" --passes fwdbwd --csv $OUT/w$k.$RANDOM.csv > /dev/null 2>&1; done
python3 -m benchmarks.columns $(for f in $OUT/w0.*.csv $OUT/w512.*.csv; do echo "$(basename $f .csv)=$f"; done)
b d1
V='^(rms_z_4096|sigmoid_4096|sweep_n4096|ln_bias_z_4096|odd_n1200)$'
left 90 && { ROWS=$V b vd; GATEDNORM_BWD_VECS=1 ROWS=$V b v1; GATEDNORM_BWD_VECS=2 ROWS=$V b v2;
  python3 -m benchmarks.columns plan=$OUT/vd.csv vecs1=$OUT/v1.csv vecs2=$OUT/v2.csv; }
# 3. bwd_lean_warp.patch: the lean copy for one-vector kernels whose teams fit a warp
#    (sweep_n64-256, qwen3next_prefill), GATEDNORM_BWD_LEAN on / off interleaved on one build
left 120 && { patch -p1 -s < docs/pending/bwd_lean_warp.patch || exit 1; build
  for k in 1 0 1 0; do ROWS='^(qwen3next_prefill|sweep_n(64|128|256|1024)|odd_n1200)$' GATEDNORM_BWD_LEAN=$k b lw$k.$RANDOM; done
  python3 -m benchmarks.columns $(for f in $OUT/lw1.*.csv $OUT/lw0.*.csv; do echo "$(basename $f .csv)=$f"; done)
  patch -R -p1 -s < docs/pending/bwd_lean_warp.patch; build; }
# 4. fwd_small.patch: the forward's small-block kernel for RMSNorm groups of 128-1024 vectors
#    (GATEDNORM_FWD_SMALL=1 against the register path, interleaved; its test on CUDA first).
#    With .whl carried (fla-core, einops) fng runs beside it.
left 120 && { patch -p1 -s < docs/pending/fwd_small.patch || exit 1; build
  [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  timeout 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_small.py 2>&1 | tail -2
  S='^(odd_n(1200|5000)|sweep_n(1024|2048|4096|8192)|rms_z_4096|sigmoid_4096|rms_noz_4096|mamba2_g1024)$'
  for k in 0 1 0 1; do GATEDNORM_FWD_SMALL=$k timeout 60 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 \
    --copy-gib 1 --dtypes bf16 --only "$S" --passes fwd --csv $OUT/fs$k.$RANDOM.csv > /dev/null 2>&1; done
  python3 -m benchmarks.columns $(for f in $OUT/fs0.*.csv $OUT/fs1.*.csv; do echo "$(basename $f .csv)=$f"; done)
  [ -d /tmp/site ] && GATEDNORM_FWD_SMALL=1 timeout 90 python3 -m benchmarks.bench --providers ours,fng --no-compile --budget 0.25 \
    --copy-gib 1 --dtypes bf16 --only "$S" --passes fwd 2>&1 | grep -B2 -A14 "^row" | head -20
  patch -R -p1 -s < docs/pending/fwd_small.patch; build; }
left 70 && { patch -R -p1 -s < docs/pending/land.diff || exit 1; build; b m1; }
left 70 && { patch -p1 -s < docs/pending/land.diff || exit 1; build; b d2; }
left 70 && { patch -R -p1 -s < docs/pending/land.diff && build && b m2; }
cols=(); for f in m1 d1 d2 m2; do [ -s $OUT/$f.csv ] && cols+=("$f=$OUT/$f.csv"); done
[ ${#cols[@]} -gt 1 ] && python3 -m benchmarks.columns "${cols[@]}"
