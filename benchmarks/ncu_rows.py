"""One call per (row, provider) inside a profiler range, for Nsight Compute:

    ncu --profile-from-start off --section SpeedOfLight --section Occupancy ... \\
        python -m benchmarks.ncu_rows sweep_n64 rms_z_4096 --providers ours,fng [--pass fwdbwd]

Gated rows take f(x, z, w, b); add-norm rows f(x, residual, w). Each call runs twice
untimed first (compiles, autotunes), then once between torch.cuda.profiler.start() and
stop(), so ncu sees exactly the kernels of one call.
"""
from __future__ import annotations

import argparse

import torch

from .cases import cuda_cases
from .providers import Env, norm_provider_fn, provider_fn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _inputs(c, dev, grad):
    dt = DTYPES[c.dtype]
    g = torch.Generator(device=dev).manual_seed(0)
    rnd = lambda: torch.randn((c.M, c.N), device=dev, dtype=dt, generator=g)  # noqa: E731
    w = (1 + 0.1 * torch.randn(c.N, device=dev, generator=g)).to(dt)
    if c.family != "gated":
        return (rnd(), rnd() if c.family == "addnorm" else None, w)
    x, z = rnd(), rnd() if c.z else None
    b = (0.1 * torch.randn(c.N, device=dev, generator=g)).to(dt) if c.bias else None
    if grad:
        x.requires_grad_()
        w.requires_grad_()
        if z is not None:
            z.requires_grad_()
    return (x, z, w, b)


def row_calls(rows, providers, pas):
    """Yields (row, provider, call): one call of the provider on the row's inputs (forward,
    or forward + backward for pas "fwdbwd"); prints the providers that do not apply."""
    dev = torch.device("cuda")
    env = Env(dev, want_fla=True)
    cases = {c.name: c for c in cuda_cases()}
    for name in rows:
        c = cases[name]
        for prov in providers.split(","):
            fn, why = (provider_fn if c.family == "gated" else norm_provider_fn)(prov, c, env)
            if fn is None:
                print(f"{name} {prov}: n/a ({why})")
                continue
            inputs = _inputs(c, dev, pas == "fwdbwd")
            dy = torch.randn((c.M, c.N), device=dev, dtype=DTYPES[c.dtype])

            def call(fn=fn, inputs=inputs, dy=dy):
                for t in inputs:  # nothing to accumulate into: only the call's own kernels
                    if t is not None and t.requires_grad:
                        t.grad = None
                out = fn(*inputs)
                if pas == "fwdbwd":
                    (out[0] if isinstance(out, tuple) else out).backward(dy)
            yield name, prov, call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="+")
    ap.add_argument("--providers", default="ours")
    ap.add_argument("--pass", dest="pas", default="fwd", choices=("fwd", "fwdbwd"))
    args = ap.parse_args()
    for name, prov, call in row_calls(args.rows, args.providers, args.pas):
        for _ in range(2):
            call()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        call()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"{name} {prov}: profiled", flush=True)


if __name__ == "__main__":
    main()
