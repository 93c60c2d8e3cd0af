#!/usr/bin/env bash
# One call on the GPU machine (see docs/testing.md): build, the test suite on
# CUDA, compute-sanitizer over the CUDA kernel tests, optionally the benchmark.
# Logs go to $OUT (the device tool's return folder) or /tmp/gatednorm-out.
#   bash scripts/device_check.sh [tests] [sanitize] [bench] [bench-args...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gatednorm-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps="${*:-tests sanitize}"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"

if ls .whl/*.whl >/dev/null 2>&1; then  # peers carried as wheels (benchmarks/README.md)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

t0=$(date +%s)
MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps --no-index -e . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
python3 -c "import torch_ops; assert torch_ops.has_cuda_kernels(), 'no CUDA kernels in this build'" || exit 1

case " $steps " in *" tests "*)
  eval "python3 -m pytest -p no:cacheprovider ${PYTEST_ARGS:--q -x} ${PYTEST_FILES:-tests}" 2>&1 | tee "$OUT/tests.log" | tail -25 ;;
esac
case " $steps " in *" sanitize "*)
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
      python3 -m pytest -q -x -p no:cacheprovider -m "not slow" -k cuda ${SANITIZE_FILES:-tests/test_forward.py tests/test_backward.py tests/test_add_rms_norm.py} \
      > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $?"; grep -E 'passed|failed' "$OUT/sanitizer-$tool.log" | tail -1
    grep -m5 -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race" "$OUT/sanitizer-$tool.log"
  done ;;
esac
case " $steps " in *" bench "*)
  shift_args=$(echo "$steps" | sed 's/\btests\b//; s/\bsanitize\b//; s/\bbench\b//')
  python3 -m benchmarks.bench --csv "$OUT/bench.csv" $shift_args 2>&1 | tee "$OUT/bench.log" | tail -70 ;;
esac
