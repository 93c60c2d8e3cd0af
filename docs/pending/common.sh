# Helpers of the device scripts here (sourced): elapsed time, a time limit (LIMIT), the
# in-place build, a benchmark run to a CSV (NAME DTYPES PASSES ROWS [--providers ...]), columns.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-570}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ] || { el "skip: $2"; false; }; }
build() { MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build; }
bench() {  # bench NAME DTYPES PASSES ROWS [extra args]
  local n=$1 d=$2 p=$3 r=$4; shift 4
  timeout 120 python3 -m benchmarks.bench --no-compile --budget 0.25 --copy-gib 1 --dtypes $d --only "$r" \
    --passes $p --csv $OUT/$n.csv "$@" > $OUT/$n.log 2>&1 || { echo "bench $n failed"; tail -3 $OUT/$n.log; }; }
cols() { python3 -m benchmarks.columns $(for f in "$@"; do echo "$(basename $f .csv)=$f"; done) | grep -v "^$"; }
