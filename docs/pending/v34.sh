#!/usr/bin/env bash
# The landed bwd_rms_teams rule in its final form (16-bit gated RMSNorm groups of 2049-4096
# columns: 8 elements a thread in teams of up to 512 threads), whose GPU run the thirty-fourth
# session could not get: build, its plan tests (test_cuda_bwd_rms_teams, the lean cases' 16
# elements), the backward CUDA tests. ~3 min, no carry. The first form (every RMSNorm group)
# passed these and memcheck there.
set -uo pipefail
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OUT=${OUT:-/tmp/o}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }; el build
timeout 60 python3 -m pytest -q -p no:cacheprovider -k "cuda and (rms_teams or lean or 4096 or 3000)" tests/test_backward.py tests/test_bwd_lean.py 2>&1 | grep -E "passed|failed|^FAILED|^ERROR|Error" | head; el rule-tests
timeout 120 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py > $OUT/tb.log 2>&1
echo "test_backward: exit $? $(tail -1 $OUT/tb.log)"; grep -E "^(FAILED|ERROR)" $OUT/tb.log | head; el test_backward
