#!/usr/bin/env bash
# The twenty-ninth session's second device call (bash docs/pending/ab29.sh, no carry, ~6 min):
# the dw/db fold in the ring (on main since cf60363) against the code before it (patch -R of
# land.diff, that commit's csrc diff), interleaved d1 m1 d2 (m2 with time left); the touched
# backward tests; GATEDNORM_RED_MAX_SPLIT (red_max_split.patch, applied here) at 32 and 64
# against the built-in 16, with the per-kernel times of qwen3next_prefill forward+backward.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
LIMIT=${LIMIT:-560}; left() { [ $(( $(date +%s) - t0 + $1 )) -lt $LIMIT ]; }  # a stage of ~$1 s fits
build() { MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build; }
ROWS='^(qwen3next_prefill|rms_z_4096|ln_bias_z_(4096|8192|16384)|sweep_n(256|1024|2048))$'
b() { timeout 120 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes bf16,fp16 \
  --only "$ROWS" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 || { echo "bench $1 failed"; tail -3 $OUT/$1.log; }; el "bench $1"; }
grep -q GATEDNORM_RED_MAX_SPLIT csrc/cuda/partials.cuh || patch -p1 -s < docs/pending/red_max_split.patch || exit 1
build
K=cuda; [ $LIMIT -lt 400 ] && K="cuda and (params_staged or ln_bias_smem_split or dw_db_deterministic or runs_only or kernel_paths)"
timeout $(( LIMIT < 400 ? 90 : 200 )) python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "$K" tests/test_backward.py > $OUT/t.log 2>&1
echo "tests: exit $? $(tail -1 $OUT/t.log)"; grep -E "^(FAILED|ERROR)" $OUT/t.log | head
Q='^(qwen3next_prefill|sweep_n(64|128|256))$'; KS="64 256"
[ $LIMIT -lt 400 ] && { ROWS='^(qwen3next_prefill|rms_z_4096|ln_bias_z_8192)$'; Q='^qwen3next_prefill$'; KS=256; }
b d1
for k in $KS; do left 30 && GATEDNORM_RED_MAX_SPLIT=$k timeout 60 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 \
  --copy-gib 1 --dtypes bf16 --only "$Q" --passes fwdbwd --csv $OUT/r$k.csv > $OUT/r$k.log 2>&1; done
python3 -m benchmarks.columns red16=$OUT/d1.csv red64=$OUT/r64.csv red256=$OUT/r256.csv
for k in 16 256; do left 30 && { echo "RED_MAX_SPLIT=$k"; GATEDNORM_RED_MAX_SPLIT=$k timeout 60 python3 -m benchmarks.kernel_times qwen3next_prefill --providers ours --pass fwdbwd 2>&1 | tail -6; }; done
el red
# set_materialize_grads(False) (no_materialize.diff, on main) against the zeros-filling autograd before it
left 30 && patch -R -p1 -s < docs/pending/no_materialize.diff && { ROWS='^(qwen3next_prefill|rms_z_4096)$' b fill1; patch -p1 -s < docs/pending/no_materialize.diff; }
# one vector a thread at 4096 (RMSNorm + gate) and two at 1200 (benchmarks.md, twenty-seventh session's note)
V='^(rms_z_4096|sigmoid_4096|sweep_n4096|ln_bias_z_4096|odd_n1200)$'
left 90 && { ROWS=$V b vd; GATEDNORM_BWD_VECS=1 ROWS=$V b v1; GATEDNORM_BWD_VECS=2 ROWS=$V b v2;
  python3 -m benchmarks.columns plan=$OUT/vd.csv vecs1=$OUT/v1.csv vecs2=$OUT/v2.csv; }
left 70 && { patch -R -p1 -s < docs/pending/land.diff || exit 1; build; b m1; }
left 70 && { patch -p1 -s < docs/pending/land.diff || exit 1; build; b d2; }
left 70 && { patch -R -p1 -s < docs/pending/land.diff && build && b m2; }
cols=(); for f in fill1 m1 d1 d2 m2; do [ -s $OUT/$f.csv ] && cols+=("$f=$OUT/$f.csv"); done
[ ${#cols[@]} -gt 1 ] && python3 -m benchmarks.columns "${cols[@]}"
