"""The main job (`bash run.sh demo`): on whatever device is present,
1. self-check: our ops against the fp64 reference, forward and backward;
2. a tiny training run through autograd, ours vs the eager reference;
3. a benchmark table (benchmarks/bench.py, quick mode).
Exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

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


def add_norm_check(dtypes) -> bool:
    """Fused add + RMSNorm (CPU kernels so far): in-place serving form and the
    differentiable training form against the fp64 reference."""
    from torch_ops.add_rms_norm import add_rms_norm_ref, rms_norm_ref
    print("== fused add + RMSNorm on cpu against the fp64 reference")
    ok = True
    gen = torch.Generator().manual_seed(1)
    for dtype in dtypes:
        x, r = (torch.randn(64, 2048, generator=gen).to(dtype) for _ in range(2))
        w = (1 + 0.1 * torch.randn(2048, generator=gen)).to(dtype)
        _, h = add_rms_norm_ref(x, r, None)
        expect = rms_norm_ref(h.double(), w.double())
        xi, ri = x.clone(), r.clone()
        torch_ops.fused_add_rms_norm(xi, ri, w, 1e-6)
        leaves = [t.clone().requires_grad_(True) for t in (x, r, w)]
        out, res = torch_ops.add_rms_norm(*leaves, 1e-6)
        dout = torch.randn(out.shape, generator=gen).to(dtype)
        grads = torch.autograd.grad(out, leaves, dout)
        ref = [t.detach().double().requires_grad_(True) for t in (x, r, w)]
        ref_grads = torch.autograd.grad(rms_norm_ref(ref[0] + ref[1], ref[2]), ref, dout.double())
        errs = [_rel_err(xi, expect), _rel_err(out, expect)] + [_rel_err(a, b) for a, b in zip(grads, ref_grads)]
        good = torch.equal(ri, h) and torch.equal(res, h) and max(errs) <= TOL[dtype]
        ok &= good
        print(f"  {str(dtype):15s} (64, 2048) residual bitwise {torch.equal(ri, h)}, max rel err out "
              f"{max(errs[:2]):.1e} grads {max(errs[2:]):.1e} (tol {TOL[dtype]:.0e}) {'ok' if good else 'FAIL'}")
    return ok


class TinyHybrid(nn.Module):
    """A toy stack with a Mamba2-style gated norm (gate, groups) in every block."""

    def __init__(self, d: int, layers: int, norm_cls):
        super().__init__()
        self.inp = nn.Linear(16, d)
        self.proj = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(layers))
        self.norm = nn.ModuleList(norm_cls(d) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(d, d) for _ in range(layers))
        self.head = nn.Linear(d, 1)

    def forward(self, x):
        h = self.inp(x)
        for proj, norm, out in zip(self.proj, self.norm, self.out):
            x_, z = proj(h).chunk(2, dim=-1)  # row-strided views, as in Mamba2
            h = h + out(norm(x_, z))
        return self.head(h).squeeze(-1)


class RefNorm(nn.Module):
    def __init__(self, d, group_size):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size = group_size

    def forward(self, x, z):
        return gated_norm_ref(x, self.weight, None, z=z, eps=1e-5, group_size=self.group_size,
                              norm_before_gate=False, is_rms_norm=True)


def train(device: str, steps: int) -> bool:
    d, group = 256, 64
    print(f"== tiny training run on {device}: {steps} Adam steps, 2 blocks of d={d}, gated RMSNorm group {group}")
    torch.manual_seed(0)
    ours = TinyHybrid(d, 2, lambda n: torch_ops.RMSNormGated(n, group_size=group)).to(device)
    ref = TinyHybrid(d, 2, lambda n: RefNorm(n, group)).to(device)
    ref.load_state_dict(ours.state_dict())
    gen = torch.Generator(device="cpu").manual_seed(1)
    data = [(torch.randn(64, 16, generator=gen).to(device), torch.randn(64, generator=gen).to(device))
            for _ in range(8)]
    losses = {}
    for name, model in (("ours", ours), ("reference", ref)):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        curve = []
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for step in range(steps):
            x, y = data[step % len(data)]
            loss = (model(x) - y).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        dt = time.perf_counter() - t0
        losses[name] = curve
        print(f"  {name:9s} loss {curve[0]:.4f} -> {curve[-1]:.4f}   {1e3 * dt / steps:.2f} ms/step")
    # fp32 rounding differences grow through Adam; the curves must still agree closely.
    gap = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(losses["ours"], losses["reference"]))
    ok = gap < 5e-2 and losses["ours"][-1] < losses["ours"][0]
    print(f"  max relative loss gap ours vs reference {gap:.1e} (tol 5e-2); loss decreased: "
          f"{losses['ours'][-1] < losses['ours'][0]} -> {'ok' if ok else 'FAIL'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when usable)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-bench", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and torch_ops.has_cuda_kernels()
    device = args.device or ("cuda" if cuda else "cpu")
    print(f"gatednorm {torch_ops.__version__} | torch {torch.__version__} | device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
          + f" | CUDA kernels built: {torch_ops.has_cuda_kernels()}")
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device == "cuda" else [])
    ok = self_check(device, dtypes)
    ok &= add_norm_check([torch.float32, torch.bfloat16])
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
