#!/usr/bin/env bash
# The fold of dw/db in the ring (land.diff, landed): the interleaved A/B against main without it
# (patch -R of land.diff: m1 d2 m2 against d1), whose first measurement sat at the call's
# noise; four builds, ~5 min, no carry. (Its other stages ran in the thirty-fourth session:
# bwd_lean_warp.patch level, dropped; GATEDNORM_BWD_VECS=1 won at 4096, now plan.cu
# bwd_rms_teams.)
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
for st in ${STAGES:-land}; do case $st in
land) left 300 land && { R='^(qwen3next_prefill|rms_z_4096|ln_bias_z_(4096|8192|16384)|sweep_n(256|1024|2048))$'
  build; bench d1 bf16,fp16 fwdbwd "$R"
  patch -R -p1 -s < docs/pending/land.diff && build && bench m1 bf16,fp16 fwdbwd "$R"
  patch -p1 -s < docs/pending/land.diff && build && bench d2 bf16,fp16 fwdbwd "$R"
  patch -R -p1 -s < docs/pending/land.diff && build && bench m2 bf16,fp16 fwdbwd "$R"
  patch -p1 -s < docs/pending/land.diff
  python3 -m benchmarks.columns m1=$OUT/m1.csv d1=$OUT/d1.csv d2=$OUT/d2.csv m2=$OUT/m2.csv; } ;;
esac; done
git status --short | grep -v "^??" ; el done
