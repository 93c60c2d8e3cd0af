"""Fill the git-ignored `.whl_fi/` with what FlashInfer's fused add + RMSNorm needs on the
offline GPU machine (benchmarks/README.md, "FlashInfer"): a trimmed flashinfer-python wheel
and its import-time dependencies, for Python 3.11 and 3.12 (pip picks the matching ones).

    python scripts/fetch_flashinfer.py            # here (needs the package index), ~1-2 min
    python scripts/fetch_flashinfer.py --no-aot   # without the prebuilt norm module (below)

Why trimmed: the carried payload of a device call is limited to 64 MiB and the wheel is
62 MB, 31 MB of it CUDA sources of other kernels (JIT-compiled only when used) and 6 MB
CUTLASS headers. Without nvidia-cutlass-dsl, `flashinfer.norm` falls back to its CUDA JIT
kernels (`gen_norm_module`: data/csrc/norm.cu + flashinfer_norm_binding.cu, built with nvcc
and ninja on first use); those need data/include, the vendored CCCL and spdlog, not CUTLASS.
Every .py file is kept: `import flashinfer` imports most of the package.

Prebuilt norm module (when nvcc is here; no GPU needed): the same JIT spec is built here for
sm_90a (H100, H200) and added as flashinfer/data/aot/norm/norm.so, which flashinfer loads
before it would JIT-build (and if it does not load, it warns and JIT-builds as usual). That
saves the device a ~1 min nvcc build per fresh machine and the toolkit pitfalls that
scripts/device_check.sh works around.
"""
from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, ".whl_fi")
FLASHINFER = "flashinfer-python==0.7.2.post1"
# What `import flashinfer` imports that a torch + triton machine may lack (found by hiding
# packages one at a time here). numpy is needed too; the GPU machine's image has it.
DEPS = ["apache-tvm-ffi>=0.1.11,<0.2", "nvidia-ml-py", "requests", "urllib3", "idna", "certifi",
        "charset-normalizer", "tqdm", "packaging", "ninja"]
PYTHONS = ["3.11", "3.12"]
# The norm module's own sources (flashinfer/jit/norm.py); every other CUDA source is dropped.
KEEP_CSRC = {"norm.cu", "flashinfer_norm_binding.cu"}
DROP_EXT = (".cu", ".cuh", ".cc", ".cpp", ".hpp", ".inl", ".ptx")


def _pip_download(reqs, dest, python, deps):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", dest,
           "--python-version", python, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any"]
    if not deps:
        cmd.append("--no-deps")
    subprocess.run(cmd + reqs, check=True)


def _keep(name: str) -> bool:
    if name.startswith("flashinfer/data/cutlass/"):
        return False
    if name.startswith("flashinfer/data/csrc/") and name.endswith(DROP_EXT):
        return name.rsplit("/", 1)[-1] in KEEP_CSRC
    return True


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim(src, dst, extra=None):
    """Copy the wheel without the dropped files, plus `extra` {path: bytes}, with a RECORD
    that lists what is in it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in zin.infolist():
            if info.filename == record or not _keep(info.filename):
                continue
            data = zin.read(info)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            lines.append(_record_line(info.filename, data))
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
            lines.append(_record_line(name, data))
        zout.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")


def build_norm_module(tmp, arch="9.0a"):
    """Build flashinfer's norm JIT module here from what is in DEST -> the .so's bytes, or None."""
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    if not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        print(f"no {cuda_home}/bin/nvcc: no prebuilt norm module (the device JIT-builds it)")
        return None
    site = os.path.join(tmp, "site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", site,
                    "--find-links", DEST, "-r", os.path.join(DEST, "requirements.txt")], check=True)
    env = dict(os.environ, PYTHONPATH=site, PATH=os.path.join(site, "bin") + os.pathsep + os.environ["PATH"],
               CUDA_HOME=cuda_home, FLASHINFER_CUDA_ARCH_LIST=arch, FLASHINFER_WORKSPACE_BASE=tmp)
    if not os.path.exists(os.path.join(cuda_home, "include", "cublasLt.h")):  # a toolkit without cuBLAS
        try:
            import nvidia  # the pip CUDA packages beside torch
            env["CPATH"] = os.pathsep.join(d for p in nvidia.__path__ for d in glob.glob(p + "/cu[0-9]*/include"))
        except ImportError:
            pass  # the build says what is missing
    if not glob.glob(os.path.join(cuda_home, "lib64", "stubs", "libcuda.so")):
        # the link line says -lcuda; a machine without a driver has no libcuda.so: an empty
        # stand-in satisfies the linker (the module needs none of its symbols: not in NEEDED)
        stub = os.path.join(tmp, "stub")
        os.makedirs(stub)
        with open(os.path.join(stub, "empty.c"), "w") as f:
            f.write("void gatednorm_libcuda_stub(void) {}\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(stub, "libcuda.so"),
                        os.path.join(stub, "empty.c")], check=True)
        env["LIBRARY_PATH"] = stub + os.pathsep + os.environ.get("LIBRARY_PATH", "")
    code = ("from flashinfer.jit.norm import gen_norm_module\n"
            "s = gen_norm_module(); s.build(); print(s.jit_library_path)")
    print(f"building flashinfer's norm module for sm_{arch.replace('.', '')} (a minute or two) ...")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print("norm module build failed (the device will JIT-build it):\n" + res.stderr[-3000:])
        return None
    path = res.stdout.strip().splitlines()[-1]
    with open(path, "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-aot", dest="aot", action="store_false", help="no prebuilt norm module")
    a = ap.parse_args()
    shutil.rmtree(DEST, ignore_errors=True)
    os.makedirs(DEST)
    for py in PYTHONS:  # no deps of deps: the list above is the closure (urllib3 etc. listed)
        _pip_download(DEPS, DEST, py, deps=False)
    with open(os.path.join(DEST, "requirements.txt"), "w") as f:
        f.write("\n".join(["flashinfer-python"] + [d.split(">")[0].split("=")[0].split("<")[0] for d in DEPS]) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        _pip_download([FLASHINFER], tmp, PYTHONS[0], deps=False)
        whl = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
        src, dst = os.path.join(tmp, whl), os.path.join(DEST, whl)
        trim(src, dst)
        so = build_norm_module(tmp) if a.aot else None
        if so is not None:
            trim(src, dst, {"flashinfer/data/aot/norm/norm.so": so})
            print(f"added flashinfer/data/aot/norm/norm.so ({len(so) / 2 ** 20:.1f} MiB, sm_90a)")
    total = 0
    for f in sorted(os.listdir(DEST)):
        size = os.path.getsize(os.path.join(DEST, f))
        total += size
        print(f"{size / 2 ** 20:7.2f} MiB  {f}")
    print(f"{total / 2 ** 20:7.2f} MiB  total in {DEST} (carry limit 64 MiB, with .whl/)")


if __name__ == "__main__":
    main()
