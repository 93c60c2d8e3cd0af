#!/usr/bin/env bash
# The fold of dw/db in the ring (land.diff, landed): the interleaved A/B against main without it
# (patch -R of land.diff: m1 d2 m2 against d1), whose first measurement sat at the call's
# noise; four builds, ~5 min, no carry. (Its other stages ran in the thirty-fourth session:
# bwd_lean_warp.patch level, dropped; GATEDNORM_BWD_VECS=1 won at 4096, now plan.cu
# bwd_rms_teams.)
. "$(dirname "$0")/common.sh"
for st in ${STAGES:-land}; do case $st in
land) left 300 land && { R='^(qwen3next_prefill|rms_z_4096|ln_bias_z_(4096|8192|16384)|sweep_n(256|1024|2048))$'
  build; bench d1 bf16,fp16 fwdbwd "$R" --providers ours
  patch -R -p1 -s < docs/pending/land.diff && build && bench m1 bf16,fp16 fwdbwd "$R" --providers ours
  patch -p1 -s < docs/pending/land.diff && build && bench d2 bf16,fp16 fwdbwd "$R" --providers ours
  patch -R -p1 -s < docs/pending/land.diff && build && bench m2 bf16,fp16 fwdbwd "$R" --providers ours
  patch -p1 -s < docs/pending/land.diff
  python3 -m benchmarks.columns m1=$OUT/m1.csv d1=$OUT/d1.csv d2=$OUT/d2.csv m2=$OUT/m2.csv; } ;;
esac; done
git status --short | grep -v "^??" ; el done
