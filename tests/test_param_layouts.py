"""Weights and biases that are 1-D views other than contiguous: a strided slice (w[::2]),
a column of a matrix, an expanded scalar (stride 0); and a contiguous one that starts one
element past a 16-byte boundary (taken as is: the kernels load such parameters by element). The kernels read parameters as
[N] contiguous, so the shim copies these first; before, they were read as if
contiguous: wrong values, and past the end of the storage for an expanded one (on CUDA
an out-of-bounds read). Results must be bitwise those of the contiguous copy, forward
and backward (dw/db land in the base tensor's strided slots)."""
import pytest
import torch

import torch_ops
from conftest import make_inputs, ops

N = 64


def _views(device, dtype):
    """name -> a function making a fresh non-contiguous [N] view (base tensor, view)."""
    def strided():
        base = torch.randn(2 * N, device=device, dtype=dtype)
        return base, base[::2]

    def column():
        base = torch.randn(N, 3, device=device, dtype=dtype)
        return base, base[:, 1]

    def expanded():
        base = 1 + 0.1 * torch.randn(1, device=device, dtype=dtype)
        return base, base.expand(N)

    def offset():  # contiguous, one element past a 16-byte boundary: the kernels' scalar parameter loads
        base = torch.randn(N + 1, device=device, dtype=dtype)
        return base, base[1:]

    return {"strided": strided, "column": column, "expanded": expanded, "offset": offset}


LAYOUTS = ["strided", "column", "expanded", "offset"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gated_forward_and_backward(layout, dtype, device):
    x, _, _, z = make_inputs((5, N), dtype, device)
    make = _views(device, dtype)[layout]
    (wb, w), (bb, b) = make(), make()
    assert not w.is_contiguous() or w.data_ptr() % 16
    for args in [(w, b, z, 1e-6, 16, True, False, "swish"), (w, None, z, 1e-6, None, False, True, "silu")]:
        out = ops.gated_norm_infer(x, *args)
        c = (args[0].clone(), None if args[1] is None else args[1].clone())  # fresh, aligned, contiguous
        assert torch.equal(out, ops.gated_norm_infer(x, *c, *args[2:]))
        assert torch.equal(torch_ops.layernorm_fn(x, *args), out)
    # backward through the view: the gradient of the base gathers the view's
    wb.requires_grad_()
    view = {"strided": lambda t: t[::2], "column": lambda t: t[:, 1], "expanded": lambda t: t.expand(N),
            "offset": lambda t: t[1:]}[layout]
    w = view(wb)
    xr = x.detach().clone().requires_grad_()
    y = torch_ops.rmsnorm_fn(xr, w, None, z=z, eps=1e-6, group_size=16, norm_before_gate=False)
    dy = torch.randn_like(y)
    dx, dwb = torch.autograd.grad(y, (xr, wb), dy)
    wc = w.detach().clone().requires_grad_()
    xr2 = x.detach().clone().requires_grad_()
    y2 = torch_ops.rmsnorm_fn(xr2, wc, None, z=z, eps=1e-6, group_size=16, norm_before_gate=False)
    dx2, dw2 = torch.autograd.grad(y2, (xr2, wc), dy)
    assert torch.equal(y, y2) and torch.equal(dx, dx2)
    expected = torch.zeros_like(wb)
    (expected if layout == "expanded" else view(expected)).add_(
        dw2 if layout != "expanded" else dw2.float().sum().to(dtype).expand(1))
    if layout == "expanded":  # autograd sums the expanded gradient in its own order
        torch.testing.assert_close(dwb.float(), expected.float(), rtol=1e-2, atol=1e-2)
    else:
        assert torch.equal(dwb, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_rms_norm_family(layout, device):
    x, r = torch.randn(4, N, device=device), torch.randn(4, N, device=device)
    _, w = _views(device, torch.float32)[layout]()
    wc = w.clone()
    assert torch.equal(torch_ops.rms_norm(x, w, 1e-6), torch_ops.rms_norm(x, wc, 1e-6))
    assert torch.equal(ops.rms_norm(x, w, 1e-6, True), ops.rms_norm(x, wc, 1e-6, True))
    for a, e in zip(torch_ops.add_rms_norm(x, r, w, 1e-6), torch_ops.add_rms_norm(x, r, wc, 1e-6)):
        assert torch.equal(a, e)
    x1, r1, x2, r2 = x.clone(), r.clone(), x.clone(), r.clone()
    torch_ops.fused_add_rms_norm(x1, r1, w, 1e-6)
    torch_ops.fused_add_rms_norm(x2, r2, wc, 1e-6)
    assert torch.equal(x1, x2) and torch.equal(r1, r2)
    # backward kernel reads the weight too
    xr = x.clone().requires_grad_()
    dy = torch.randn_like(x)
    out, _ = torch_ops.add_rms_norm(xr, r, w, 1e-6)
    (g,) = torch.autograd.grad(out, xr, dy)
    xr2 = x.clone().requires_grad_()
    out2, _ = torch_ops.add_rms_norm(xr2, r, wc, 1e-6)
    (g2,) = torch.autograd.grad(out2, xr2, dy)
    assert torch.equal(g, g2)
