# Sourced on the GPU machine (scripts/device_check.sh, docs/pending): installs the carried
# .whl_fi into /tmp/site and sets what FlashInfer's norm kernels need; FLASHINFER_VERSION
# then says what `import flashinfer` gave (empty without .whl_fi).
FLASHINFER_VERSION=
# FlashInfer, the add-norm peer: a trimmed wheel and its import-time dependencies for
# Python 3.11 and 3.12 (scripts/fetch_flashinfer.py); --find-links picks this Python's.
if [ -f .whl_fi/requirements.txt ]; then
  python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site \
    --find-links .whl_fi -r .whl_fi/requirements.txt && export PYTHONPATH=/tmp/site PATH="/tmp/site/bin:$PATH"
  # Its CUDA norm kernels (not the CuTe-DSL ones, which need packages not carried) come
  # prebuilt for sm_90a in the wheel (data/aot/norm/norm.so); if that does not load they are
  # JIT-built with nvcc + ninja on first call. For that build: the toolkit root comes from
  # CUDA_HOME, else from `which nvcc` (a /usr/local/bin wrapper would give /usr/local); the
  # headers include cublasLt.h, which a pip-installed CUDA keeps in nvidia/cu13/include; the
  # link line says -lcuda, and a container may have only libcuda.so.1.
  export FLASHINFER_USE_CUDA_NORM=1 FLASHINFER_WORKSPACE_BASE=/tmp  # JIT cache in /tmp/.cache/flashinfer
  if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
  if [ ! -f "${CUDA_HOME:-/usr/local/cuda}/include/cublasLt.h" ]; then
    inc=$(python3 -c "import glob, nvidia; print(':'.join(d for p in nvidia.__path__ for d in glob.glob(p + '/cu[0-9]*/include')))" 2>/dev/null)
    [ -n "$inc" ] && export CPATH="$inc${CPATH:+:$CPATH}"
  fi
  if ! ldconfig -p | grep -q 'libcuda\.so '; then
    lib=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
    [ -n "$lib" ] && mkdir -p /tmp/fi_lib && ln -sf "$lib" /tmp/fi_lib/libcuda.so && export LIBRARY_PATH="/tmp/fi_lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  fi
  FLASHINFER_VERSION=$(python3 -c "import flashinfer; print('flashinfer', flashinfer.__version__)" 2>&1 | tail -1)
fi
