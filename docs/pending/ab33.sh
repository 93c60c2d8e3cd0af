#!/usr/bin/env bash
# The thirty-second session's device checks, by stage (STAGES="slice small" etc.; LIMIT=<s>
# skips what would not fit; carry .whl for fng beside fwd_small):
#  slice  the thirty-first session's built-in slice rule (plan.cu slice_vecs), so far measured only
#         through GATEDNORM_SLICE_VECS: the backward CUDA tests + test_bwd_lean, then the rows it
#         changed against GATEDNORM_SLICE_VECS=512 (the halved slices), interleaved;
#  small  fwd_small.patch: GATEDNORM_FWD_SMALL=1 against the register path, interleaved, its test
#         on CUDA first, then beside fng;
#  lean   bwd_lean_warp.patch: the lean copy for one-vector kernels whose teams fit a warp,
#         GATEDNORM_BWD_LEAN on / off interleaved on one build;
#  vecs   GATEDNORM_BWD_VECS 1 / 2 against the plan on the 4096 rows and odd_n1200.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-560}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ] || { el "skip: $2"; false; }; }
build() { MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build; }
bench() {  # bench NAME DTYPES PASSES ROWS [extra args]
  local n=$1 d=$2 p=$3 r=$4; shift 4
  timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes $d \
    --only "$r" --passes $p --csv $OUT/$n.csv "$@" > $OUT/$n.log 2>&1 || { echo "bench $n failed"; tail -3 $OUT/$n.log; }; }
cols() { local p=$1; shift; python3 -m benchmarks.columns $(for f in "$@"; do echo "$(basename $f .csv)=$f"; done) | grep -v "^$" ; }
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
build
for st in ${STAGES:-slice small lean vecs}; do case $st in
slice) left 200 slice && {
  timeout 180 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py tests/test_bwd_lean.py > $OUT/t.log 2>&1
  echo "tests: exit $? $(tail -1 $OUT/t.log)"; grep -E "^(FAILED|ERROR)" $OUT/t.log | head
  for k in 0 512 0 512; do GATEDNORM_SLICE_VECS=$k bench w$k.$RANDOM fp32,bf16,fp16 fwdbwd '^(sweep_n32768|sweep_n65536)$'; done
  el slice; cols x $OUT/w0.*.csv $OUT/w512.*.csv; } ;;
small) left 200 small && { patch -p1 -s < docs/pending/fwd_small.patch || exit 1; build
  timeout 90 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_small.py 2>&1 | tail -2
  S='^(odd_n(1200|5000)|sweep_n(1024|2048|4096|8192)|rms_z_4096|sigmoid_4096|rms_noz_4096|mamba2_g1024|qwen3next_prefill)$'
  for k in 0 1 0 1; do GATEDNORM_FWD_SMALL=$k bench fs$k.$RANDOM bf16 fwd "$S"; done
  el small; cols x $OUT/fs0.*.csv $OUT/fs1.*.csv
  [ -d /tmp/site ] && left 80 fng && GATEDNORM_FWD_SMALL=1 timeout 100 python3 -m benchmarks.bench --providers ours,fng --no-compile \
    --budget 0.25 --copy-gib 1 --dtypes bf16 --only "$S" --passes fwd --csv $OUT/fsfng.csv > $OUT/fsfng.log 2>&1; grep -A16 "^row" $OUT/fsfng.log | head -18
  patch -R -p1 -s < docs/pending/fwd_small.patch; } ;;
lean) left 200 lean && { patch -p1 -s < docs/pending/bwd_lean_warp.patch || exit 1; build
  for k in 1 0 1 0; do GATEDNORM_BWD_LEAN=$k bench lw$k.$RANDOM bf16,fp16 fwdbwd '^(qwen3next_prefill|sweep_n(64|128|256|1024)|odd_n1200)$'; done
  el lean; cols x $OUT/lw1.*.csv $OUT/lw0.*.csv
  patch -R -p1 -s < docs/pending/bwd_lean_warp.patch; } ;;
vecs) left 120 vecs && { build; V='^(rms_z_4096|sigmoid_4096|sweep_n4096|ln_bias_z_4096|odd_n1200)$'
  bench vd bf16,fp16 fwdbwd "$V"; GATEDNORM_BWD_VECS=1 bench v1 bf16,fp16 fwdbwd "$V"; GATEDNORM_BWD_VECS=2 bench v2 bf16,fp16 fwdbwd "$V"
  el vecs; python3 -m benchmarks.columns plan=$OUT/vd.csv vecs1=$OUT/v1.csv vecs2=$OUT/v2.csv; } ;;
esac; done
git status --short | grep -v "^??" ; el done
