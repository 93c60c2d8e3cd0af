"""The main job (`bash run.sh demo`): on whatever device is present,
1. self-check: our ops against the fp64 reference, forward and backward;
2. a tiny training run through autograd, ours vs the eager reference;
3. a benchmark table (benchmarks/bench.py, quick mode).
Exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import sys

import torch

import torch_ops
from torch_ops.gated_norm import gated_norm_ref

# (shape, group_size, norm_before_gate, is_rms_norm, activation, with z, with bias)
CHECKS = [
    ((64, 128), None, True, True, "silu", True, False),        # Qwen3-Next: norm, then gate
    ((33, 1024), 128, False, True, "silu", True, False),       # Mamba2 / Nemotron-H: gate, groups
    ((17, 1000), None, True, False, "sigmoid", True, True),    # LayerNorm, sigmoid, odd N
    ((5, 3, 4096), None, True, True, "silu", False, False),    # plain RMSNorm, 3-D
]
# Max error relative to max |reference|: a few units of the output dtype's roundoff.
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def self_check(device: str, dtypes) -> bool:
    print(f"== self-check on {device} against the fp64 reference (forward and backward)")
    ok = True
    gen = torch.Generator(device="cpu").manual_seed(0)
    for dtype in dtypes:
        for shape, g, nbg, rms, act, with_z, with_b in CHECKS:
            n = shape[-1]
            mk = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
            t = {"x": mk(*shape), "z": mk(*shape) if with_z else None,
                 "weight": (1 + 0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype),
                 "bias": (0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype) if with_b else None}
            names = [k for k, v in t.items() if v is not None]
            for k in names:
                t[k].requires_grad_(True)
            kw = dict(eps=1e-6, group_size=g, norm_before_gate=nbg, is_rms_norm=rms, activation=act)
            out = torch_ops.layernorm_fn(t["x"], t["weight"], t["bias"], z=t["z"], **kw)
            dy = torch.randn(out.shape, generator=gen).to(device=device, dtype=dtype)
            grads = torch.autograd.grad(out, [t[k] for k in names], dy)
            r = {k: (v.detach().double().requires_grad_(True) if v is not None else None) for k, v in t.items()}
            ref = gated_norm_ref(r["x"], r["weight"], r["bias"], z=r["z"], **kw)
            ref_grads = torch.autograd.grad(ref, [r[k] for k in names], dy.double())
            errs = [_rel_err(out, ref)] + [_rel_err(a, r) for a, r in zip(grads, ref_grads)]
            tol = TOL[dtype]
            good = max(errs) <= tol
            ok &= good
            print(f"  {str(dtype):15s} {str(shape):14s} g={str(g):5s} {'gate-after ' if nbg else 'gate-before'} "
                  f"{'rms' if rms else 'ln '} {act:7s} max rel err out {errs[0]:.1e} grads {max(errs[1:]):.1e} "
                  f"(tol {tol:.0e}) {'ok' if good else 'FAIL'}")
    return ok


def add_norm_check(device: str, dtypes) -> bool:
    """Fused add + RMSNorm: the in-place serving form and the differentiable training
    form against the fp64 reference."""
    from torch_ops.add_rms_norm import add_rms_norm_ref, rms_norm_ref
    print(f"== fused add + RMSNorm on {device} against the fp64 reference")
    ok = True
    gen = torch.Generator().manual_seed(1)
    for dtype in dtypes:
        x, r = (torch.randn(64, 2048, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
        w = (1 + 0.1 * torch.randn(2048, generator=gen)).to(device=device, dtype=dtype)
        _, h = add_rms_norm_ref(x, r, None)
        expect = rms_norm_ref(h.double(), w.double())
        xi, ri = x.clone(), r.clone()
        torch_ops.fused_add_rms_norm(xi, ri, w, 1e-6)
        leaves = [t.clone().requires_grad_(True) for t in (x, r, w)]
        out, res = torch_ops.add_rms_norm(*leaves, 1e-6)
        dout = torch.randn(out.shape, generator=gen).to(device=device, dtype=dtype)
        grads = torch.autograd.grad(out, leaves, dout)
        ref = [t.detach().double().requires_grad_(True) for t in (x, r, w)]
        ref_grads = torch.autograd.grad(rms_norm_ref(ref[0] + ref[1], ref[2]), ref, dout.double())
        errs = [_rel_err(xi, expect), _rel_err(out, expect)] + [_rel_err(a, b) for a, b in zip(grads, ref_grads)]
        good = torch.equal(ri, h) and torch.equal(res, h) and max(errs) <= TOL[dtype]
        ok &= good
        print(f"  {str(dtype):15s} (64, 2048) residual bitwise {torch.equal(ri, h)}, max rel err out "
              f"{max(errs[:2]):.1e} grads {max(errs[2:]):.1e} (tol {TOL[dtype]:.0e}) {'ok' if good else 'FAIL'}")
    return ok


def train(device: str, steps: int) -> bool:
    """The training example (torch_ops/training_example.py), shortened."""
    from torch_ops import training_example as te
    cfg = te.Config()
    print(f"== tiny training run on {device}: {steps} Adam steps of a {cfg.n_layers}-block hybrid LM "
          "(fused add + RMSNorm pre-norms, Mamba2- and Qwen3-Next-style gated norms), ours vs the reference")
    res = te.run(device, steps, 0, cfg)
    print("\n".join("  " + line for line in te.report(res, max(1, steps // 4), cfg).splitlines()))
    return res.passed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when usable)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-bench", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and torch_ops.has_cuda_kernels()
    device = args.device or ("cuda" if cuda else "cpu")
    print(f"gatednorm {torch_ops.__version__} | torch {torch.__version__} | device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
          + f" | CUDA kernels built: {torch_ops.has_cuda_kernels()}")
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device == "cuda" else [])
    ok = self_check(device, dtypes)
    ok &= add_norm_check(device, [torch.float32, torch.bfloat16])
    ok &= train(device, args.steps)
    if not args.no_bench:
        try:
            from benchmarks.bench import print_table, run
        except ImportError as e:  # run from outside the repository
            print(f"== benchmark skipped: {e} (run from the repository root)")
        else:
            print(f"== benchmark (quick) on {device}")
            print_table(run(device=device, quick=True))
    print("demo:", "all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
