#!/usr/bin/env bash
# Device checks by stage (STAGES="lean vecs" by default, "lean vecs land" for all; LIMIT=<s> skips what would not fit; ~5 min, no
# carry). The thirty-second session ran its other two stages (the slice rule on the GPU, the
# small-block forward: docs/data/h100_2026-12-07_session32.txt), the latter landed in the
# thirty-third session.
#  lean   bwd_lean_warp.patch: the lean copy for one-vector kernels whose teams fit a warp,
#         GATEDNORM_BWD_LEAN on / off interleaved on one build;
#  vecs   GATEDNORM_BWD_VECS 1 / 2 against the plan on the 4096 rows and odd_n1200;
#  land   the interleaved A/B of the dw/db fold in the ring (patch -R of land.diff: m1 d2 m2
#         against d1), whose first measurement sat at the call's noise (four builds: ~5 min).
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-560}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ] || { el "skip: $2"; false; }; }
build() { MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build; }
bench() {  # bench NAME DTYPES PASSES ROWS [extra args]
  local n=$1 d=$2 p=$3 r=$4; shift 4
  timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes $d \
    --only "$r" --passes $p --csv $OUT/$n.csv "$@" > $OUT/$n.log 2>&1 || { echo "bench $n failed"; tail -3 $OUT/$n.log; }; }
cols() { python3 -m benchmarks.columns $(for f in "$@"; do echo "$(basename $f .csv)=$f"; done) | grep -v "^$" ; }
build
for st in ${STAGES:-lean vecs}; do case $st in
lean) left 200 lean && { patch -p1 -s < docs/pending/bwd_lean_warp.patch || exit 1; build
  for k in 1 0 1 0; do GATEDNORM_BWD_LEAN=$k bench lw$k.$RANDOM bf16,fp16 fwdbwd '^(qwen3next_prefill|sweep_n(64|128|256|1024)|odd_n1200)$'; done
  el lean; cols $OUT/lw1.*.csv $OUT/lw0.*.csv
  patch -R -p1 -s < docs/pending/bwd_lean_warp.patch; } ;;
vecs) left 120 vecs && { build; V='^(rms_z_4096|sigmoid_4096|sweep_n4096|ln_bias_z_4096|odd_n1200)$'
  bench vd bf16,fp16 fwdbwd "$V"; GATEDNORM_BWD_VECS=1 bench v1 bf16,fp16 fwdbwd "$V"; GATEDNORM_BWD_VECS=2 bench v2 bf16,fp16 fwdbwd "$V"
  el vecs; python3 -m benchmarks.columns plan=$OUT/vd.csv vecs1=$OUT/v1.csv vecs2=$OUT/v2.csv; } ;;
land) left 300 land && { R='^(qwen3next_prefill|rms_z_4096|ln_bias_z_(4096|8192|16384)|sweep_n(256|1024|2048))$'
  build; bench d1 bf16,fp16 fwdbwd "$R"
  patch -R -p1 -s < docs/pending/land.diff && build && bench m1 bf16,fp16 fwdbwd "$R"
  patch -p1 -s < docs/pending/land.diff && build && bench d2 bf16,fp16 fwdbwd "$R"
  patch -R -p1 -s < docs/pending/land.diff && build && bench m2 bf16,fp16 fwdbwd "$R"
  patch -p1 -s < docs/pending/land.diff
  python3 -m benchmarks.columns m1=$OUT/m1.csv d1=$OUT/d1.csv d2=$OUT/d2.csv m2=$OUT/m2.csv; } ;;
esac; done
git status --short | grep -v "^??" ; el done
