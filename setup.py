"""Builds torch_ops/_C: the C99 CPU kernels always, the CUDA kernels when nvcc and a
CUDA build of torch are present.

Environment:
  GATEDNORM_CPU_ONLY=1     build without CUDA even when it is available
  TORCH_CUDA_ARCH_LIST     CUDA targets (default "8.0;9.0+PTX")
  MAX_JOBS                 parallel compile jobs (default 2)
"""
import glob
import os
import shutil

from setuptools import setup

# torch guesses CUDA_HOME from nvcc's directory, which is wrong when nvcc sits
# outside the toolkit (/usr/local/bin/nvcc here, libraries in /usr/local/cuda).
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    if os.environ.get("GATEDNORM_CPU_ONLY", "0") not in ("", "0"):
        return False
    return torch.version.cuda is not None and shutil.which("nvcc") is not None


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    cuda = want_cuda()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    os.environ.setdefault("MAX_JOBS", "2")
    # Not limited-API: csrc/eager.cpp unwraps and wraps tensors (libtorch_python) for
    # the direct eager entry points. The op registrations are classic TORCH_LIBRARY
    # (docs/design.md says why not the stable ABI), so a build serves one torch anyway.
    # -ffp-contract=off: the CPU kernels' AVX-512 copies (csrc/cpu/common.h) compute
    # bitwise what the others do only if a*b+c is never fused into an FMA.
    cxx = ["-O3", "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off"]
    srcs = sources("csrc/*.cpp") + sources("csrc/cpu/*.c")
    kwargs = dict(
        name="torch_ops._C",
        sources=srcs,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=["-fopenmp"],
    )
    if not cuda:
        return CppExtension(extra_compile_args={"cxx": cxx}, **kwargs)
    kwargs["sources"] = srcs + sources("csrc/cuda/*.cu")
    # GATEDNORM_NVCC_FLAGS: extra nvcc flags for tuning sweeps (e.g. -DGN_FWD_RING=4, plan.h).
    nvcc = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr"]
    nvcc += os.environ.get("GATEDNORM_NVCC_FLAGS", "").split()
    return CUDAExtension(
        extra_compile_args={"cxx": cxx + ["-DGN_WITH_CUDA", "-DUSE_CUDA"], "nvcc": nvcc},
        **kwargs,
    )


setup(
    name="gatednorm",
    version="0.1.0",
    description="Gated RMSNorm/LayerNorm and fused add+RMSNorm as PyTorch custom ops (C and CUDA C kernels)",
    packages=["torch_ops", "torch_ops.integrations", "torch_ops.integrations.sglang"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    # sglang runs its plugins in every process; ours patches only with GATEDNORM_SGLANG_PATCH=1.
    entry_points={"sglang.srt.plugins": ["gatednorm = torch_ops.integrations.sglang:sglang_plugin"]},
    python_requires=">=3.9",
)
