"""Instruction counts of the CUDA kernels' row loops, from SASS, on a machine without a GPU:
an offline proxy for speed where a kernel is issue-bound (the H200's gated forward: Nsight
Compute, docs/data/h200_ncu_rms_z_4096.txt). For each kernel of one .cu file: its SASS
instructions, the longest backward branch's body (the row loop: every path of it, so copies
specialised on run-time flags all count), the spill instructions inside it, and ptxas's
registers and spill bytes.

    python scripts/sass_loop.py csrc/cuda/gated_norm_fwd.cu --match 'bfloat16Li2ELb1E'
    python scripts/sass_loop.py csrc/cuda/gated_norm_fwd.cu --flags=-DGN_FWD_RING=4 --match bfloat16

Needs nvcc and cuobjdump + nvdisasm (pip: nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm; their
bin/ is found inside the active Python's site-packages).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool_path():
    """PATH with the pip-installed CUDA binary tools first (cuobjdump calls nvdisasm)."""
    dirs = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu*", "bin"))
    return os.pathsep.join(dirs + [os.environ.get("PATH", "")])


def compile_sass(src, flags, arch):
    env = dict(os.environ, PATH=tool_path())
    if not shutil.which("cuobjdump", path=env["PATH"]) or not shutil.which("nvdisasm", path=env["PATH"]):
        sys.exit("needs cuobjdump and nvdisasm: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        cmd = ["nvcc", "-O3", "-std=c++17", "--expt-relaxed-constexpr", f"-arch={arch}", "-cubin",
               "-I" + os.path.join(ROOT, "csrc"), "-Xptxas", "-v", *flags, src, "-o", cubin]
        ptxas = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if ptxas.returncode:
            sys.exit(ptxas.stderr[-3000:])
        sass = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True, env=env, check=True)
    return sass.stdout, ptxas.stderr


def kernels(sass):
    out, cur = {}, None
    for line in sass.splitlines():
        m = re.match(r"\s+Function : (\S+)", line)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,6})\*/\s+(.*?);", line)
        if m and cur:
            out[cur].append((int(m.group(1), 16), m.group(2)))
    return out


def row_loop(ins):
    """The body of the longest backward branch (start, end addresses inclusive)."""
    best = (0, -1)
    for addr, text in ins:
        m = re.search(r"BRA (?:!?U?P\w+, )?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr and addr - int(m.group(1), 16) > best[1] - best[0]:
            best = (int(m.group(1), 16), addr)
    return [text for addr, text in ins if best[0] <= addr <= best[1]]


def ptxas_info(log):
    info, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            cur = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and cur:
            info.setdefault(cur, {})["spill"] = f"{m.group(1)}/{m.group(2)} B"
        m = re.search(r"Used (\d+) registers", line)
        if m and cur:
            info.setdefault(cur, {})["regs"] = int(m.group(1))
    return info


def short(name):
    """The kernel's name and template arguments, without the namespace prefix."""
    m = re.search(r"\d+([a-z_]+)(I.*?)Ev\d", name)
    return (m.group(1) + m.group(2)) if m else name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("--flags", default="", help="extra nvcc flags, as --flags='-DA -DB' (the = is needed)")
    ap.add_argument("--match", default="", help="regex on the mangled kernel name")
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args()
    sass, log = compile_sass(args.src, args.flags.split(), args.arch)
    info = ptxas_info(log)
    print(f"{'kernel':70} {'instr':>6} {'loop':>6} {'spill-in-loop':>13} {'regs':>5} {'spill st/ld':>12}")
    for name, ins in kernels(sass).items():
        if args.match and not re.search(args.match, name):
            continue
        body = row_loop(ins)
        spills = sum(1 for t in body if re.match(r"(@!?P\w+ )?(LDL|STL)", t))
        i = info.get(name, {})
        print(f"{short(name)[:70]:70} {len(ins):6} {len(body):6} {spills:13} {i.get('regs', '?'):>5} "
              f"{i.get('spill', '0/0 B'):>12}")


if __name__ == "__main__":
    main()
