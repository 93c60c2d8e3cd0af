"""Host (CPU-side) time per eager call, layer by layer, on small tensors: what the Python
wrappers, the dispatcher and the C++ shim cost, next to native ops on the same machine.
(On the CPU the kernel runs inside the call: ~1 us of the gated rows at M=4, N=128;
`--M 0` leaves it out. On CUDA the launch is inside, the GPU time is not.)

    python -m benchmarks.host_overhead                      # CPU, M=4, N=128, bf16, all modes
    python -m benchmarks.host_overhead --device cuda --M 2048
    python -m benchmarks.host_overhead --modes no_grad --only 'gated|layernorm'

Rows: `add_` (`x.add_(1)`) and `empty_like` (the yardsticks); `op:*` the
`torch.ops.gatednorm.*` ops called directly; `direct:*` the dispatcher-free entry points
of `torch_ops._C` (csrc/eager.cpp) that the public functions try first; the rest the
public Python functions and modules. Modes: `grad` (grad mode on, no input requires grad: the inference path must be
taken), `no_grad` (`torch.no_grad()`), `inference` (`torch.inference_mode()`); rows whose
module parameters require grad (`mod:*`) take the autograd path in `grad` mode, as they
must. Method: the rows are interleaved, each repeat times `--iters` back-to-back calls
(CUDA: one synchronize at the end, inside the timed span) with time.perf_counter_ns;
the table shows the median over repeats (and the minimum) in us per call.
`bench.py`'s decode "host" rows measure the same thing on the GPU for `ours` only.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # a source checkout, used only when torch_ops is not installed

import torch_ops  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}
MODES = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}


def cases(M: int, N: int, dtype: torch.dtype, device: str):
    """-> [(name, fn)]: each fn is one eager call."""
    ops = torch.ops.gatednorm
    direct = torch_ops._C
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    x, z, r = rnd(M, N), rnd(M, N), rnd(M, N)
    w, b = 1 + 0.1 * rnd(N), 0.1 * rnd(N)
    eps = 1e-6
    gated = torch_ops.RMSNormGated(N, eps=eps, norm_before_gate=True, device=device, dtype=dtype)
    faddnorm = torch_ops.FusedAddRMSNorm(N, eps=eps, device=device, dtype=dtype)
    rows = [
        ("add_", lambda: x.add_(1)),
        ("empty_like", lambda: torch.empty_like(x)),
        # the ops, straight through the dispatcher (the *_infer ops: builds that have them)
        ("op:gated_norm_infer", lambda: ops.gated_norm_infer(x, w, None, z, eps, None, True, True, "silu")),
        ("op:gated_norm_fwd", lambda: ops.gated_norm_fwd(x, w, None, z, eps, None, True, True, "silu")),
        ("op:gated_norm", lambda: ops.gated_norm(x, w, None, z, eps, None, True, True, "silu")),
        ("op:fused_add_rms_norm", lambda: ops.fused_add_rms_norm(x, r, w, eps, False)),
        ("op:rms_norm", lambda: ops.rms_norm(x, w, eps, False)),
        ("op:add_rms_norm_infer", lambda: ops.add_rms_norm_infer(x, r, w, eps, False, False)),
        ("op:add_rms_norm", lambda: ops.add_rms_norm(x, r, w, eps, False, False)),
        # the direct entry points (csrc/eager.cpp): the same implementations, no dispatcher
        ("direct:gated_norm_infer", lambda: direct.gated_norm_infer(x, w, None, z, eps, None, True, True, "silu")),
        ("direct:gated_norm_infer_out", lambda: direct.gated_norm_infer_out(x, w, None, z, eps, None, True, True,
                                                                             "silu", x)),
        ("direct:fused_add_rms_norm", lambda: direct.fused_add_rms_norm(x, r, w, eps, False)),
        ("direct:rms_norm", lambda: direct.rms_norm(x, w, eps, False)),
        ("direct:add_rms_norm_infer", lambda: direct.add_rms_norm_infer(x, r, w, eps, False, False)),
        # the public functions (gated: Qwen3-Next's decode call, gate after the norm)
        ("layernorm_fn", lambda: torch_ops.layernorm_fn(x, w, None, z, eps, None, True, True, "silu")),
        ("rmsnorm_fn kw", lambda: torch_ops.rmsnorm_fn(x, w, None, z=z, eps=eps, norm_before_gate=True)),
        ("rms_norm_gated kw", lambda: torch_ops.rms_norm_gated(x=x, weight=w, bias=None, z=z, eps=eps,
                                                               norm_before_gate=True, is_rms_norm=True)),
        ("LayerNormFn.apply ln+b", lambda: torch_ops.LayerNormFn.apply(x, w, b, z, eps)),
        ("layer_norm_fwd", lambda: torch_ops.layer_norm_fwd(x, w, None, eps, z=z, is_rms_norm=True)),
        ("fused_add_rms_norm", lambda: torch_ops.fused_add_rms_norm(x, r, w, eps)),
        ("rms_norm", lambda: torch_ops.rms_norm(x, w, eps)),
        ("add_rms_norm", lambda: torch_ops.add_rms_norm(x, r, w, eps)),
        # modules: their parameters require grad (autograd path in grad mode)
        ("mod:RMSNormGated(x, z)", lambda: gated(x, z)),
        ("mod:FusedAddRMSNorm(x)", lambda: faddnorm(x)),
        ("mod:FusedAddRMSNorm(x, r)", lambda: faddnorm(x, r)),
    ]
    have = {"op": lambda n: hasattr(ops, n), "direct": lambda n: hasattr(direct, n)}
    return [(n, f) for n, f in rows if ":" not in n or n.startswith("mod:") or have[n.split(":")[0]](n.split(":")[1])]


def measure(fns, iters: int, repeats: int, cuda: bool):
    """-> {name: [us per call, one per repeat]}; rows interleaved within each repeat."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {name: [] for name, _ in fns}
    for _, fn in fns:  # warm up (first-call costs, allocator caches)
        for _ in range(max(50, iters // 10)):
            fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns:
            t0 = time.perf_counter_ns()
            for _ in range(iters):
                fn()
            sync()
            out[name].append((time.perf_counter_ns() - t0) / iters / 1e3)
    return out


def run(M=4, N=128, dtype="bf16", device="cpu", modes=tuple(MODES), iters=2000, repeats=15, only=None):
    """-> [{"mode", "name", "median_us", "min_us"}]"""
    rows = []
    fns = cases(M, N, DTYPES[dtype], device)
    if only:
        keep = re.compile(only)
        fns = [(n, f) for n, f in fns if n in ("add_", "empty_like") or keep.search(n)]
    for mode in modes:
        with MODES[mode]():
            ts = measure(fns, iters, repeats, device.startswith("cuda"))
        for name, t in ts.items():
            rows.append({"mode": mode, "name": name, "median_us": statistics.median(t), "min_us": min(t)})
    return rows


def print_rows(rows, header=""):
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    names = list(dict.fromkeys(r["name"] for r in rows))
    cell = {(r["mode"], r["name"]): r for r in rows}
    if header:
        print(header)
    print(f"{'us per call: median (min)':28s}" + "".join(f"{m:>18s}" for m in modes))
    for n in names:
        line = f"{n:28s}"
        for m in modes:
            r = cell.get((m, n))
            line += f"{r['median_us']:>10.2f} ({r['min_us']:5.2f})" if r else f"{'-':>18s}"
        print(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--M", type=int, default=4)
    ap.add_argument("--N", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    ap.add_argument("--iters", type=int, default=2000, help="calls per timed repeat")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", default=None, help="regex on the row names (add_ and empty_like always run)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    modes = [m for m in a.modes.split(",") if m]
    rows = run(a.M, a.N, a.dtype, a.device, modes, a.iters, a.repeats, a.only)
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    print_rows(rows, f"host wall per eager call, M={a.M} N={a.N} {a.dtype} on {dev}, torch {torch.__version__}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
