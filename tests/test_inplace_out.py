"""`gated_norm_fwd_out` with `out` being x itself (in place), as the sglang patch's
fused_norm_gate path calls it (torch_ops/integrations/sglang/gated.py): the kernels read every
element of a row before the same thread writes it, so the result must equal the out-of-place
one bitwise, statistics included. Every CUDA kernel path: the register path with aligned rows,
with unaligned rows (odd N, a view starting one element in), the loop path with the group staged
in shared memory (N 20000) and re-read from global memory (fp32 groups of 32768: 256 KB of x and
z per group)."""
import pytest
import torch

from conftest import make_inputs, ops


def _x(layout, dtype, device):
    """(x, the tensor x is a view of: nothing else of it may be written)."""
    shapes = {"aligned": (33, 1024), "odd-n": (17, 1001), "loop": (3, 20000), "loop-unstaged": (2, 65536)}
    if layout in shapes:
        x = make_inputs(shapes[layout], dtype, device, z=False, weight=False, bias=False)[0]
        return x, x
    base = torch.full((9, 1100), float("nan"), dtype=dtype, device=device)  # "offset-view"
    x = base[:, 1:1025]
    x.copy_(make_inputs((9, 1024), dtype, device, z=False, weight=False, bias=False)[0])
    return x, base


@pytest.mark.parametrize("layout", ["aligned", "odd-n", "offset-view", "loop", "loop-unstaged"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
@pytest.mark.parametrize("nbg", [True, False], ids=["norm-then-gate", "gate-then-norm"])
def test_fwd_out_in_place(layout, dtype, rms, nbg, device):
    x, base = _x(layout, dtype, device)
    n = x.shape[-1]
    _, w, b, z = make_inputs(x.shape, dtype, device, bias=not rms)
    group = n // 2 if n % 2 == 0 else None
    args = (w, b, z, 1e-6, group, nbg, rms, "swish")
    expected, mean_e, rstd_e = ops.gated_norm_fwd(x, *args)
    mean, rstd = ops.gated_norm_fwd_out(x, *args, x)
    assert torch.equal(x, expected), f"in place differs from out of place: max |diff| " \
                                     f"{(x.double() - expected.double()).abs().max().item()}"
    assert torch.equal(rstd, rstd_e) and torch.equal(mean, mean_e)
    if base is not x:  # the NaN columns around the view are untouched
        around = torch.ones_like(base, dtype=torch.bool)
        around[:, 1:1 + n] = False
        assert base[around].isnan().all()


# ------------------------------------------------ ops that write into their arguments
# (csrc/shim.cpp): version counters bumped as torch's in-place ops bump them; under grad
# mode, a written tensor that requires grad is refused (no derivative, no history to
# rebase); a weight that requires grad is let through (sgl-kernel's behaviour).

def _writing_calls(device):
    """name -> (call(written...), [written tensors], {argument name: index in written})"""
    x, w, b, z = make_inputs((4, 64), torch.float32, device)
    out, r = torch.empty_like(x), torch.randn_like(x)
    args = (w, b, z, 1e-6, None, True, False, "swish")
    _, mean, rstd = ops.gated_norm_fwd(x, *args)
    dy = torch.randn_like(x)
    dx, dz, out2, dw, db = (torch.empty_like(t) for t in (x, x, x, w, b))
    return {
        "gated_norm_fwd_out": (lambda t: ops.gated_norm_fwd_out(x, *args, t[0]), [out], {"out": 0}),
        "gated_norm_bwd_out": (lambda t: ops.gated_norm_bwd_out(dy, x, w, b, z, mean, rstd, *args[3:], *t),
                               [dx, dz, out2, dw, db], {"dx": 0, "dz": 1, "out": 2, "dw": 3, "db": 4}),
        "rms_norm_out": (lambda t: ops.rms_norm_out(x, w, 1e-6, t[0], False), [out.clone()], {"out": 0}),
        "fused_add_rms_norm": (lambda t: ops.fused_add_rms_norm(t[0], t[1], w, 1e-6, False), [x.clone(), r],
                               {"input": 0, "residual": 1}),
    }


@pytest.mark.parametrize("op", ["gated_norm_fwd_out", "gated_norm_bwd_out", "rms_norm_out", "fused_add_rms_norm"])
def test_written_arguments_versions_and_autograd(op, device):
    call, written, names = _writing_calls(device)[op]
    before = [t._version for t in written]
    call(written)
    assert [t._version for t in written] == [v + 1 for v in before]
    with torch.no_grad():
        call(written)
    assert [t._version for t in written] == [v + 2 for v in before]
    # a tensor autograd saved, overwritten: backward notices
    a = torch.randn(written[0].shape, device=device, requires_grad=True)
    s = a.sin()
    y = s * s  # saves s
    call([s.detach() if i == 0 else t for i, t in enumerate(written)])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    # grad mode: a written tensor that requires grad is refused, by name, before the write
    for name, i in names.items():
        leaf = written[i].detach().clone().requires_grad_()
        ts = [leaf if j == i else t for j, t in enumerate(written)]
        kept = leaf.detach().clone()
        with pytest.raises(RuntimeError, match=f"writes into `{name}`, which requires grad"):
            call(ts)
        assert torch.equal(leaf.detach(), kept)
        with torch.no_grad():  # as an optimizer step writes into parameters
            call(ts)


def test_fused_add_rms_norm_weight_requiring_grad_is_let_through(device):
    x, w = torch.randn(3, 32, device=device), torch.nn.Parameter(torch.randn(32, device=device))
    r = torch.randn_like(x)
    x0, r0 = x.clone(), r.clone()
    ops.fused_add_rms_norm(x, r, w, 1e-6, False)
    e_out, e_res, _ = ops.add_rms_norm(x0, r0, w.detach(), 1e-6, False, False)
    assert torch.equal(x, e_out) and torch.equal(r, e_res) and not x.requires_grad


def test_outputs_overlapping_inputs_are_refused(device):
    """A shifted view (partial overlap) would race the kernels' reads; the very same
    elements are accepted only where the op works in place (fwd_out's out = x,
    rms_norm_out's out = input). (Like torch's out= ops, dense layouts are told apart;
    row-strided views of one buffer may interleave without sharing an element.)"""
    base = torch.randn(5, 64, device=device)
    x, shifted = base[:4], base[1:]
    w, z = torch.randn(64, device=device), torch.randn(4, 64, device=device)
    args = (w, None, z, 1e-6, None, True, True, "silu")
    with pytest.raises(RuntimeError, match="out partially overlaps x"):
        ops.gated_norm_fwd_out(x, *args, shifted)
    with pytest.raises(RuntimeError, match="out is z: not supported in place"):
        ops.gated_norm_fwd_out(x, *args, z)
    with pytest.raises(RuntimeError, match="out partially overlaps input"):
        ops.rms_norm_out(x, w, 1e-6, shifted, False)
    _, mean, rstd = ops.gated_norm_fwd(x, *args)
    dy = torch.randn_like(x)
    bwd = (dy, x, w, None, z, mean, rstd, 1e-6, None, True, True, "silu")
    for dx, dz, name in [(dy, torch.empty_like(z), "dx is dy"), (torch.empty_like(x), z, "dz is z"),
                         (shifted, torch.empty_like(z), "dx partially overlaps x")]:
        with pytest.raises(RuntimeError, match=name):
            ops.gated_norm_bwd_out(*bwd, dx, dz, None)
    both = torch.empty(2, 4, 64, device=device)
    with pytest.raises(RuntimeError, match="dx is dz"):
        ops.gated_norm_bwd_out(*bwd, both[0], both[0], None)
    ops.gated_norm_bwd_out(*bwd, both[0], both[1], None)  # one buffer, disjoint halves: fine
