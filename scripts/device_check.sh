#!/usr/bin/env bash
# One call on the GPU machine (see docs/testing.md): build, the test suite on
# CUDA, compute-sanitizer over the CUDA kernel tests, the sglang patch tests on the
# carried sglang releases, optionally the benchmark.
# Logs go to $OUT (the device tool's return folder) or /tmp/gatednorm-out.
#   bash scripts/device_check.sh [tests] [sanitize] [sglang] [host] [bench] [bench-args...]
# Environment: PYTEST_FILES / PYTEST_ARGS (tests), SANITIZE_FILES / SANITIZE_TOOLS
# (sanitize; default memcheck and racecheck), STEP_TIMEOUT (seconds a test or sanitizer
# step may run, so that a call's limit still leaves the logs of the steps before it).
# host: benchmarks.host_overhead on CUDA at the decode shape (host wall per eager call,
# layer by layer: op entry points, direct entry points, public functions, modules).
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
  python3 -V
} 2>&1 | tee "$OUT/env.txt"

if ls .whl/*.whl >/dev/null 2>&1; then  # peers carried as wheels (benchmarks/README.md)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
# FlashInfer, the add-norm peer (scripts/flashinfer_env.sh).
. scripts/flashinfer_env.sh
[ -n "${FLASHINFER_VERSION:-}" ] && echo "$FLASHINFER_VERSION" | tee -a "$OUT/env.txt"

# sglang 0.5.23 and 0.5.15.post1 for tests/test_sglang_patch.py (the machine is offline): the
# trimmed CPython 3.12 trees of scripts/fetch_sglang.py, unpacked into the test's cache folder.
if ls .whl_sgl/*.tar.xz >/dev/null 2>&1; then
  export GATEDNORM_TEST_CACHE="${GATEDNORM_TEST_CACHE:-/tmp/gatednorm-test}"
  mkdir -p "$GATEDNORM_TEST_CACHE"
  for t in .whl_sgl/*.tar.xz; do
    for d in $(tar -tJf "$t" | cut -d/ -f1 | sort -u); do rm -rf "${GATEDNORM_TEST_CACHE:?}/$d"; done
    tar -xJf "$t" -C "$GATEDNORM_TEST_CACHE"
  done
  python3 - <<'PY' 2>&1 | tee -a "$OUT/env.txt"
import os, sys
sys.path.insert(0, "tests")
import sglang_requirements as r
for layout, (version, _) in r.RELEASES.items():
    marker = os.path.join(os.environ["GATEDNORM_TEST_CACHE"], f"sglang-{version}", r.MARKER)
    ok = os.path.exists(marker) and r.marker_ok(open(marker).read(), layout)
    print(f"sglang {version}: carried tree", "ready" if ok else "NOT usable here (its marker lists other "
          "requirements: rebuild with scripts/fetch_sglang.py --python/--torch of this machine)")
PY
fi

t0=$(date +%s)
MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps --no-index -e . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
python3 -c "import torch_ops; assert torch_ops.has_cuda_kernels(), 'no CUDA kernels in this build'" || exit 1

case " $steps " in *" tests "*)
  eval "timeout ${STEP_TIMEOUT:-0} python3 -m pytest -p no:cacheprovider ${PYTEST_ARGS:--q -x} ${PYTEST_FILES:-tests}" 2>&1 | tee "$OUT/tests.log" | tail -25 ;;
esac
case " $steps " in *" sanitize "*)
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
    # (the tuning-knob test runs its cases in child processes: minutes more under racecheck,
    # and its kernels are the other tests' instantiations, in other layouts: sanitize those
    # with the knob set by hand when the knob's layouts ship)
    timeout ${STEP_TIMEOUT:-0} compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
      python3 -m pytest -q -x -p no:cacheprovider -m "not slow" -k "cuda and not vecs_knobs and not loop_slots and not loop_cluster" ${SANITIZE_FILES:-tests/test_forward.py tests/test_backward.py tests/test_add_rms_norm.py tests/test_param_layouts.py} \
      > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $?"; grep -E 'passed|failed' "$OUT/sanitizer-$tool.log" | tail -1
    grep -m5 -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race" "$OUT/sanitizer-$tool.log"
  done ;;
esac
case " $steps " in *" sglang "*)
  python3 -m pytest -p no:cacheprovider ${SGLANG_PYTEST_ARGS:--q -rfEs} tests/test_sglang_patch.py tests/test_inplace_out.py \
    2>&1 | tee "$OUT/sglang.log" | tail -40 ;;
esac
case " $steps " in *" host "*)
  python3 -m benchmarks.host_overhead --device cuda --M 2048 --N 128 2>&1 | tee "$OUT/host.log" | tail -30 ;;
esac
case " $steps " in *" bench "*)
  shift_args=$(echo "$steps" | sed 's/\btests\b//; s/\bsanitize\b//; s/\bsglang\b//; s/\bhost\b//; s/\bbench\b//')
  python3 -m benchmarks.bench --csv "$OUT/bench.csv" $shift_args 2>&1 | tee "$OUT/bench.log" | tail -70 ;;
esac
