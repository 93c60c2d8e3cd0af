"""Helpers shared by the module-swap tests (test_swap_models.py, test_swap_hf_classes.py,
test_swap_fla_mamba.py): comparisons with the dtype checked, a one-child holder module
(the swap never replaces its root), one forward + backward pass, and the shapes the
module-level tests use. Imported like conftest: `from swap_helpers import ...`.
"""
from __future__ import annotations

import torch
from torch import nn

BF16 = torch.bfloat16
N, G, EPS = 64, 16, 1e-3


def _assert_normwise(a, e, rtol, what, floor=0.0):
    """||a - e|| <= rtol * max(||e||, floor), in fp64, with the dtype and shape checked."""
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
    assert torch.isfinite(a64).all(), f"{what}: non-finite values"
    err = (a64 - e64).norm().item()
    bound = rtol * max(e64.norm().item(), floor)
    assert err <= bound, f"{what}: ||a - e|| = {err:.3e} > {bound:.3e} (rtol {rtol:.2e}, ||e|| {e64.norm().item():.3e})"


def _assert_close(a, e, rtol, what):
    """Elementwise |a - e| <= rtol * (|e| + rms(e)) (conftest's convention), dtype checked."""
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
    atol = rtol * e64.square().mean().sqrt().item()
    torch.testing.assert_close(a64, e64, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


class _Holder(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, *args, **kwargs):
        return self.norm(*args, **kwargs)


def _fwd_bwd(module, x, z, gen_seed=2):
    x = x.detach().clone().requires_grad_()
    z = None if z is None else z.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x, z) if z is not None else module(x)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(gen_seed), dtype=torch.float64)
    (out.double() * dy.to(out.device)).sum().backward()
    params = [p.grad for p in module.parameters()]
    return out.detach(), x.grad, None if z is None else z.grad, params
