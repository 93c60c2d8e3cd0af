#!/usr/bin/env bash
# The next session's first device call (written in the twenty-seventh): a sweep of the
# aligned backward's vectors a thread (GATEDNORM_BWD_VECS, read once a process) over the
# rows of 1K-8K, three dtypes, to find the rule the twenty-seventh session's calls hinted at
# (docs/data/h100_2026-12-06_session27.txt, calls 3-4): one vector a thread (512 threads)
# won on RMSNorm + gate at 4096 bf16 (rms_z_4096 0.933 -> 0.954, sigmoid_4096 0.941 ->
# 0.968, sweep_n4096 0.888 -> 0.918) and lost with LayerNorm + bias (0.915 -> 0.890); two
# won at 1200 (odd_n1200 0.842 -> 0.892) and lost at 512-2048 (sweep_n1024 0.931 -> 0.879).
# No build of its own beyond main's. Device tool: command "bash docs/pending/call.sh", no
# carry, ~300 s. Then put the rule in regs_layout (plan.cu) behind a knob and A/B it.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
el build
b() {  # csv dtypes
  timeout 90 python3 -m benchmarks.bench --providers ours --no-compile --budget 0.25 --copy-gib 1 --dtypes $2 \
    --only "$R" --passes fwdbwd --csv $OUT/$1.csv > $OUT/$1.log 2>&1 || { echo "bench $1 failed"; tail -3 $OUT/$1.log; }
}
R='^(sweep_n(512|1024|2048|4096|8192)|odd_n1200|odd_n5000|gate_before_5120|(rms|ln|ln_bias|sigmoid)_z_4096|mamba2_g1024)$'
for dt in bf16,fp16 fp32; do
  tag=${dt%%,*}
  b d_$tag $dt; GATEDNORM_BWD_VECS=1 b v1_$tag $dt; GATEDNORM_BWD_VECS=2 b v2_$tag $dt; GATEDNORM_BWD_VECS=4 b v4_$tag $dt
  el "sweep $dt"
  python3 -m benchmarks.columns default=$OUT/d_$tag.csv vecs1=$OUT/v1_$tag.csv vecs2=$OUT/v2_$tag.csv vecs4=$OUT/v4_$tag.csv
done
