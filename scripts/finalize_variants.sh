#!/usr/bin/env bash
# After a device session measured the tuning variants: makes the winners the code and drops
# the losers (scripts/unifdef.py over csrc/cuda), then proves that the rewritten default
# build compiles to the PTX of the measured build, file by file (sm_90; the anonymous
# namespace's hash masked), and lists what still names a resolved macro (comments to
# reword; a dropped variant's own files to delete). Runs here, no GPU needed.
#   bash scripts/finalize_variants.sh "GN_TEAM_LEAN GN_RED_VEC" "GN_FWD_LN1"   # keep, drop
set -euo pipefail
cd "$(dirname "$0")/.."
keep=(${1:-}); drop=(${2:-})
[ ${#keep[@]} -gt 0 ] || [ ${#drop[@]} -gt 0 ] || { echo "usage: $0 \"KEEP...\" \"DROP...\""; exit 2; }
work=$(mktemp -d)
dflags=(); uflags=()
for m in "${keep[@]}"; do dflags+=("-D$m"); done
for m in "${drop[@]}"; do uflags+=("-U$m"); done
ptx() {  # $1: out dir; the rest: nvcc flags
  local out=$1; shift
  mkdir -p "$out"
  for f in csrc/cuda/*.cu; do
    nvcc -O3 -std=c++17 --expt-relaxed-constexpr -arch=sm_90 -ptx -Icsrc "$@" "$f" -o "$out/$(basename "$f").ptx" &
    while [ "$(jobs -rp | wc -l)" -ge "${MAX_JOBS:-2}" ]; do sleep 0.2; done
  done
  wait
}
mask() { sed -E 's/_GLOBAL__N__[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_cu_[0-9a-f]+//g' "$1"; }
echo "== the measured build: ${dflags[*]:-(default)}"
ptx "$work/before" "${dflags[@]}"
python3 scripts/unifdef.py "${dflags[@]}" "${uflags[@]}" csrc/cuda/*.cu csrc/cuda/*.cuh
echo "== the rewritten default build"
ptx "$work/after"
bad=0
for f in "$work"/before/*.ptx; do
  g="$work/after/$(basename "$f")"
  if ! cmp -s <(mask "$f") <(mask "$g"); then echo "PTX DIFFERS: $(basename "$f" .ptx)"; bad=1; fi
done
[ $bad = 0 ] && echo "PTX identical for every file"
for m in "${keep[@]}" "${drop[@]}"; do
  grep -rn "$m" csrc docs tests scripts benchmarks --include='*.cu' --include='*.cuh' --include='*.md' --include='*.py' \
    --include='*.sh' | grep -v "scripts/finalize_variants.sh" | sed "s/^/still names $m: /" || true
done
rm -rf "$work"
exit $bad
