#!/usr/bin/env bash
# Times our forward kernels under each GATEDNORM_ROW_ITERS setting (row blocks per
# block; -1 = persistent grid; 0 = the built-in policy: docs/design.md, "Grids"), one
# process per setting (the variable is read once), and prints one table: row x setting,
# fraction of the copy ceiling (fwd, fwdbwd) or GPU us per call (graph). Needs a CUDA build.
#   bash scripts/sweep_row_iters.sh ROW_REGEX [SETTINGS...]     (default: -1 0 1 2 4 8)
# SWEEP_VAR=GATEDNORM_SLICE_VECS sweeps another read-once variable the same way (plan.h:
# vectors a CTA of a split group holds); PASSES=fwd,fwdbwd picks the passes (default fwd,graph).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gatednorm-out}"
rows="${1:?row regex}"; shift
settings="${*:--1 0 1 2 4 8}"
var="${SWEEP_VAR:-GATEDNORM_ROW_ITERS}"
cols=()
for k in $settings; do
  env "$var=$k" python3 -m benchmarks.bench --providers ours --passes "${PASSES:-fwd,graph}" --no-compile \
    --budget "${BUDGET:-0.4}" --copy-gib 1 --only "$rows" --csv "$OUT/iters_$k.csv" > "$OUT/iters_$k.log" 2>&1 \
    || { echo "setting $k failed:"; tail -5 "$OUT/iters_$k.log"; }
  cols+=("$k=$OUT/iters_$k.csv")
done
python3 -m benchmarks.columns "${cols[@]}"
