"""GPU time of each kernel one call launches, for a row and provider: where a multi-kernel
path (the wide paths, torch.compile's split reductions) spends its time.

    python -m benchmarks.kernel_times bign_1m --providers ours,compile [--pass fwdbwd]

Each call runs twice untimed (compiles, autotunes), then `--calls` times under
torch.profiler; per kernel (in launch order) the median of its durations over those calls.
Not L2-cold: consecutive calls reuse what fits in L2, as in a model's layer loop without a
flush. Use benchmarks.bench for the times to compare; this one splits them up.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from .ncu_rows import row_calls


def _short(name: str, width: int = 90) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def kernel_times(call, calls: int):
    """-> [(kernel name, median us)] in launch order of one call."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
              and not e.name.startswith(("Memcpy", "Memset"))]
    per_call = len(events) // calls
    if per_call * calls != len(events):
        raise RuntimeError(f"{len(events)} kernels over {calls} calls: not the same kernels each call")
    return [(events[i].name, statistics.median(events[i + k * per_call].device_time for k in range(calls)))
            for i in range(per_call)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="+")
    ap.add_argument("--providers", default="ours")
    ap.add_argument("--pass", dest="pas", default="fwd", choices=("fwd", "fwdbwd"))
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    for name, prov, call in row_calls(args.rows, args.providers, args.pas):
        for _ in range(2):
            call()
        times = kernel_times(call, args.calls)
        print(f"== {name} {prov} {args.pas}: {sum(t for _, t in times):.1f} us in {len(times)} kernels")
        for k, t in times:
            print(f"  {t:8.1f}  {_short(k)}")


if __name__ == "__main__":
    main()
