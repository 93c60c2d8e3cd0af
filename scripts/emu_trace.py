"""Names the kernels of an emulator trace (GN_EMU_TRACE=path, csrc/emu/emu.h) and counts
their launches by kernel and cluster size: which kernel paths a test run reached.

    python scripts/emu_trace.py TRACE LIB      # LIB: the emulator build's torch_ops/_C*.so
"""
import collections
import subprocess
import sys


def symbols(lib):
    out = subprocess.run(["nm", "-C", "--defined-only", lib], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table[int(parts[0], 16)] = parts[2]
    return table


def main(trace, lib):
    names = symbols(lib)
    counts = collections.Counter()
    for line in open(trace):
        off, grid, block, smem, cluster = line.rstrip("\n").split("\t")
        name = names.get(int(off, 16), off)
        name = name.replace("(anonymous namespace)::", "")
        counts[(name[: name.find("(")] if "(" in name else name, cluster)] += 1
    for (name, cluster), n in sorted(counts.items()):
        print(f"{n:6d}  {cluster:10s}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
