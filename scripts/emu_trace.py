"""Names the kernels of an emulator trace (GN_EMU_TRACE=path, csrc/emu/emu.h) and counts
their launches by kernel and cluster size: which kernel paths a test run reached.

    python scripts/emu_trace.py TRACE LIB      # LIB: the emulator build's torch_ops/_C*.so
"""
import collections
import functools
import subprocess
import sys


@functools.lru_cache(maxsize=None)  # a library's table once a process (the tests name many traces)
def symbols(lib):
    out = subprocess.run(["nm", "-C", "--defined-only", lib], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table[int(parts[0], 16)] = parts[2]
    return table


def launches(trace, lib):
    """(kernel name with its template arguments, cluster) of each launch in the trace."""
    names = symbols(lib)
    out = []
    for line in open(trace):
        off, grid, block, smem, cluster = line.rstrip("\n").split("\t")
        name = names.get(int(off, 16), off).replace("(anonymous namespace)::", "")
        depth = 0  # cut the parameter list: the first "(" outside the template arguments
        for i, ch in enumerate(name):
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0 and i > 0:
                name = name[:i]
                break
        out.append((name, cluster))
    return out


def main(trace, lib):
    counts = collections.Counter(launches(trace, lib))
    for (name, cluster), n in sorted(counts.items()):
        print(f"{n:6d}  {cluster:10s}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
