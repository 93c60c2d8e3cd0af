#!/usr/bin/env bash
# A/B of source trees in one device call: each tree (the working tree ".", or a commit
# exported under ab/ by `bash scripts/device_ab.sh --export REF...`, carried with
# carry=["ab"]) is built in turn into the same Python environment, and the same benchmark
# selection runs on each, ours only: per-tree logs and CSVs in $OUT, then one table of
# ours by row (fraction of the copy ceiling; graph: us) with a column per tree. Build
# variants of one tree are scripts/device_tune.sh's job; this compares commits.
#   here:   bash scripts/device_ab.sh --export main wip/index-math      # -> ab/main, ab/wip_index-math
#   device: bash scripts/device_ab.sh "--only ^bign --passes fwd,fwdbwd" . ab/main ab/wip_index-math
# Environment: BUDGET (seconds a measurement, default 0.3), TORCH_CUDA_ARCH_LIST (default
# 9.0: one architecture, a ~1 min build), TESTS (a pytest -k expression run on each tree
# after its benchmark, e.g. "cuda and wide"; default none).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--export" ]; then  # here: plain copies of commits (no .git), for carry
  shift
  for ref in "$@"; do
    d="ab/$(echo "$ref" | tr '/' '_')"
    rm -rf "$d" && mkdir -p "$d" && git archive "$ref" | tar -x -C "$d" && echo "$d: $(git rev-parse --short "$ref") $ref"
  done
  exit 0
fi
args="${1:?bench arguments, e.g. \"--only ^bign --passes fwd,fwdbwd\"}"; shift
[ $# -gt 0 ] || { echo "usage: $0 \"BENCH ARGS\" TREE..." >&2; exit 2; }
OUT="${OUT:-/tmp/gatednorm-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
root=$(pwd)
cols=()
for tree in "$@"; do
  name=$(basename "$(cd "$tree" && pwd)")
  [ "$tree" = "." ] && name=work
  echo "== $name ($tree)"
  (cd "$tree" && MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e .) \
    > "$OUT/build_$name.log" 2>&1 || { echo "build failed:"; tail -20 "$OUT/build_$name.log"; continue; }
  # The benchmark and tests of the tree itself (its benchmarks/ and tests/), run from it.
  (cd "$tree" && eval "python3 -m benchmarks.bench --providers ours --no-compile --budget ${BUDGET:-0.3} \
    --copy-gib 1 $args --csv '$OUT/ab_$name.csv'") > "$OUT/bench_$name.log" 2>&1 \
    || { echo "bench failed:"; tail -5 "$OUT/bench_$name.log"; }
  cols+=("$name=$OUT/ab_$name.csv")
  if [ -n "${TESTS:-}" ]; then
    (cd "$tree" && python3 -m pytest -q -p no:cacheprovider -k "$TESTS" tests/test_forward.py tests/test_backward.py \
      2>&1 | tail -1)
  fi
done
cd "$root"
python3 -m benchmarks.columns "${cols[@]}"
