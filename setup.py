"""Builds torch_ops/_C: the C99 CPU kernels always, the CUDA kernels when nvcc and a
CUDA build of torch are present.

Environment:
  GATEDNORM_CPU_ONLY=1     build without CUDA even when it is available
  GATEDNORM_CUDA_EMU=1     a test build: the CUDA kernels compiled for the CPU emulator
                           (csrc/emu), which then serves CPU tensors instead of the CPU
                           kernels (docs/testing.md, "CUDA kernels on the CPU")
  GATEDNORM_EMU_SANITIZER  with it: address or thread (scripts/emu_check.sh)
  TORCH_CUDA_ARCH_LIST     CUDA targets (default "8.0;9.0+PTX")
  MAX_JOBS                 parallel compile jobs (default 2)
"""
import glob
import os
import re
import shutil
import subprocess

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


def emu_sources():
    """csrc/cuda as C++ for the emulator, in build/emu_src (whose headers the .cpp files
    find first): each `k<<<cfg>>>(args)` becomes `::emu::chevron(k, cfg)(args)`, the
    only syntax a host compiler cannot read. Returns the .cpp files."""
    out_dir = os.path.join(ROOT, "build", "emu_src")
    os.makedirs(out_dir, exist_ok=True)
    chevron = re.compile(r"(\b[\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)
    out = []
    for src in sources("csrc/cuda/*"):
        name = os.path.basename(src)
        if name.endswith(".cu"):
            name = name[:-3] + ".cpp"
            out.append(os.path.relpath(os.path.join(out_dir, name), ROOT))
        with open(os.path.join(ROOT, src)) as f:
            text = f.read()
        body = '#line 1 "%s"\n' % src + chevron.sub(r"::emu::chevron(\1, \2)(", text)
        dst = os.path.join(out_dir, name)
        old = open(dst).read() if os.path.exists(dst) else None
        if old != body:  # unchanged files keep their timestamps: no rebuild
            with open(dst, "w") as f:
                f.write(body)
    return out


def emu_extension(cxx, kwargs):
    # -D macros of GATEDNORM_NVCC_FLAGS (tuning variants) apply to the emulated kernels too.
    defines = [f for f in os.environ.get("GATEDNORM_NVCC_FLAGS", "").split() if f.startswith(("-D", "-U"))]
    runtime = sources("csrc/emu/*.cpp")
    kwargs["sources"] += runtime + emu_sources()
    kwargs["include_dirs"] = [os.path.join(ROOT, d) for d in ("csrc/emu/include", "csrc/emu")] + kwargs[
        "include_dirs"]
    flags = cxx + ["-DGN_EMU", "-DGN_CUDA_EMU", "-Wno-unknown-pragmas"] + defines
    sanitizer = os.environ.get("GATEDNORM_EMU_SANITIZER", "")
    if sanitizer == "address":  # out-of-bounds accesses: memcheck's job
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        kwargs["extra_link_args"] = kwargs.get("extra_link_args", []) + ["-fsanitize=address"]
    elif sanitizer == "thread":  # accesses no barrier orders: racecheck's job
        # The runtime's own bookkeeping (scheduler and fibers share it, switching without
        # synchronisation for TSan) stays uninstrumented: compiled apart, linked as an object.
        kwargs["extra_objects"] = []
        for src in runtime:
            kwargs["sources"].remove(src)
            obj = os.path.join(ROOT, "build", os.path.basename(src)[:-4] + "_tsan.o")
            subprocess.check_call(["c++", "-c", "-fPIC", "-O1", "-std=c++17", "-DGN_EMU_TSAN",
                                   "-I" + os.path.join(ROOT, "csrc", "emu"), os.path.join(ROOT, src), "-o", obj])
            kwargs["extra_objects"].append(obj)
        flags += ["-fsanitize=thread"]
        kwargs["extra_link_args"] = kwargs.get("extra_link_args", []) + ["-fsanitize=thread"]
    elif sanitizer:
        raise SystemExit("GATEDNORM_EMU_SANITIZER must be 'address' or 'thread', got %r" % sanitizer)
    return CppExtension(extra_compile_args={"cxx": flags}, **kwargs)


def extension():
    if os.environ.get("GATEDNORM_CUDA_EMU", "0") not in ("", "0"):
        os.environ.setdefault("MAX_JOBS", "2")
        cxx = ["-O1", "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off"]
        return emu_extension(cxx, dict(name="torch_ops._C", sources=sources("csrc/*.cpp") + sources("csrc/cpu/*.c"),
                                       include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"]))
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
