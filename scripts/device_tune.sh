#!/usr/bin/env bash
# One device call that tunes the gated forward's launch for the machine it runs on (the
# ninth session found the H100's grid policy wrong for the H200: docs/data/h200_ring_iters.txt):
#   1. for each build variant in VARIANTS (';'-separated nvcc flag sets, e.g. the cp.async
#      ring depth -DGN_FWD_RING=k or the block width -DGN_FWD_BLOCK=k: csrc/cuda/plan.h),
#      the forward of the ROWS regex under each GATEDNORM_ROW_ITERS setting in ITERS (0 =
#      the built-in policy, -1 = persistent grid, k = k row blocks a block):
#      scripts/sweep_row_iters.sh, a table per variant;
#   2. (PROFILE=1) Nsight Compute on PROFILE_ROW for ours (built-in policy and persistent
#      grid) and fng: SpeedOfLight, memory, occupancy, launch, warp-state sections.
#   3. (TESTS="pytest -k expression") the forward tests' selection on each variant's build,
#      after its sweep: a variant timed is a variant checked.
# With PROFILE=1 it leaves the default build installed at the end. Tables and logs in $OUT.
#   VARIANTS="-DGN_FWD_RING=3;-DGN_FWD_RING=4;-DGN_FWD_RING=4 -DGN_FWD_BLOCK=512" \
#   ITERS="0 -1 2 4" ROWS='^(qwen|mamba|gate|rms|ln|sig|odd|sweep)' bash scripts/device_tune.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gatednorm-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # FLA, for the profile's fng column
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
build() {  # $1: extra nvcc flags
  GATEDNORM_NVCC_FLAGS="$1" MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . \
    > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
}
rows="${ROWS:-^(qwen3next_prefill|mamba2_g1024|gate_before_5120|rms_z_4096|ln_bias_z_4096|rms_noz_4096|odd_n1200|odd_n5000)$}"
IFS=';' read -ra variants <<< "${VARIANTS:--DGN_FWD_RING=3;-DGN_FWD_RING=4}"
for i in "${!variants[@]}"; do
  build "${variants[$i]}"
  echo "== variant $i: ${variants[$i]:-(default)}"; mkdir -p "$OUT/v$i"
  OUT="$OUT/v$i" PASSES="${PASSES:-fwd}" bash scripts/sweep_row_iters.sh "$rows" ${ITERS:-0 -1 2 4} \
    | tee "$OUT/v$i.txt"
  if [ -n "${TESTS:-}" ]; then
    python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "$TESTS" tests/test_forward.py > "$OUT/v$i/tests.log" 2>&1
    echo "tests ($TESTS): $(tail -1 "$OUT/v$i/tests.log")"
  fi
done
if [ "${PROFILE:-1}" = 1 ]; then
  build ""
  row="${PROFILE_ROW:-rms_z_4096}"
  S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats"
  ncu --profile-from-start off $S python3 -m benchmarks.ncu_rows "$row" --providers ours,fng > "$OUT/ncu_$row.txt" 2>&1
  GATEDNORM_ROW_ITERS=-1 ncu --profile-from-start off $S python3 -m benchmarks.ncu_rows "$row" --providers ours \
    > "$OUT/ncu_${row}_persistent.txt" 2>&1
  grep -hE "profiled|Duration|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Block Size|Dynamic Shared|Warp Cycles Per Issued" \
    "$OUT/ncu_$row.txt" "$OUT/ncu_${row}_persistent.txt"
fi
