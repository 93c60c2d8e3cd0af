"""No gradient is ever silently wrong.

- The out-of-place ops without a derivative (gated_norm_fwd / _infer / _bwd, rms_norm,
  add_rms_norm_infer / _bwd) refuse, under grad mode, an argument that requires grad,
  naming it. Before: torch's autograd fallback gave their outputs a grad_fn whose
  gradients were None (a warning at backward).
- The public functions never reach them then: rms_norm is differentiable (through
  gated_norm), layer_norm_fwd / layer_norm_bwd (the sglang / Triton API) differentiate
  through the reference when the kernels cannot (torch.func transforms, forward AD, a
  gradient of the backward).
fp64 throughout: references and kernels agree to ~1e-15 relative (same math, other
summation order), so 1e-10 is far from both rounding and any real defect; gradcheck's
own tolerances (finite differences, eps 1e-6) check the derivatives.
"""
import pytest
import torch

import torch_ops
from torch_ops.add_rms_norm import rms_norm_ref as plain_rms_norm_ref
from conftest import make_inputs, ops

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)


def _undifferentiable_calls(device):
    """op name -> (call(args), args in schema order, names of its tensor arguments)."""
    x, w, b, z = make_inputs((4, 32), F64, device)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, False, "silu")
    cfg = (1e-6, None, True, False, "silu")
    r = torch.randn_like(x)
    h = x + r
    rstd_h = torch.rsqrt(h.square().mean(-1) + 1e-6)
    return {
        "gated_norm_fwd": (ops.gated_norm_fwd, [x, w, b, z, *cfg], ["x", "weight", "bias", "z"]),
        "gated_norm_infer": (ops.gated_norm_infer, [x, w, b, z, *cfg], ["x", "weight", "bias", "z"]),
        "gated_norm_bwd": (ops.gated_norm_bwd, [torch.randn_like(x), x, w, b, z, mean, rstd, *cfg, False],
                           ["dy", "x", "weight", "bias", "z", "mean", "rstd"]),
        "rms_norm": (ops.rms_norm, [x, w, 1e-6, False], ["input", "weight"]),
        "add_rms_norm_infer": (ops.add_rms_norm_infer, [x, r, w, 1e-6, False, False], ["x", "residual", "weight"]),
        "add_rms_norm_bwd": (ops.add_rms_norm_bwd, [torch.randn_like(x), torch.randn_like(x), h, w, rstd_h, False],
                             ["dout", "dresidual_out", "h", "weight", "rstd"]),
    }


@pytest.mark.parametrize("op", list(_undifferentiable_calls("cpu")))
def test_undifferentiable_ops_refuse_inputs_requiring_grad(op, device):
    fn, args, names = _undifferentiable_calls(device)[op]
    expected = fn(*args)
    tensor_at = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    assert len(tensor_at) == len(names)
    for i, name in zip(tensor_at, names):
        a = list(args)
        a[i] = args[i].clone().requires_grad_()
        with pytest.raises(RuntimeError, match=rf"gatednorm: {op}: `{name}` requires grad, and this op has no "
                                               r"derivative"):
            fn(*a)
        with torch.no_grad():  # nothing to differentiate: runs, same values
            got = fn(*a)
        for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple)
                        else (expected,)):
            assert (g is None and e is None) or torch.equal(g, e)
            assert g is None or not g.requires_grad


# ---------------------------------------------------------------- rms_norm is differentiable

@pytest.mark.parametrize("gemma", [False, True], ids=["plain", "gemma"])
@pytest.mark.parametrize("weight", [True, False], ids=["weight", "no-weight"])
def test_rms_norm_gradients(gemma, weight, device):
    x = torch.randn(3, 40, dtype=F64, device=device, requires_grad=True)
    w = (0.1 * torch.randn(40, dtype=F64, device=device)).requires_grad_() if weight else None
    inputs = (x, w) if weight else (x,)
    f = (lambda x, w: torch_ops.rms_norm(x, w, 1e-6, gemma=gemma)) if weight else \
        (lambda x: torch_ops.rms_norm(x, None, 1e-6, gemma=gemma))
    y = f(*inputs)
    assert y.grad_fn is not None
    with torch.no_grad():  # the same values as the inference op
        torch.testing.assert_close(y, ops.rms_norm(x, w, 1e-6, gemma), **TIGHT)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_rms_norm_mixed_dtype_gradients(device):
    """bf16 x, fp32 weight (a common mixed-precision layout): the gradients of our rms_norm
    are those of the fp32 reference on the same values, within bf16's rounding of dx
    (2^-8 relative; 2^-7 covers the reference's own rounding of y) and fp32 sums of 64
    terms for dw."""
    x = torch.randn(6, 64, device=device).to(torch.bfloat16).requires_grad_()
    w = (1 + 0.5 * torch.randn(64, device=device)).requires_grad_()
    dy = torch.randn(6, 64, device=device).to(torch.bfloat16)
    gx, gw = torch.autograd.grad(torch_ops.rms_norm(x, w, 1e-6), (x, w), dy)
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ex, ew = torch.autograd.grad(plain_rms_norm_ref(xr, wr, 1e-6), (xr, wr), dy.double())
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.float32
    torch.testing.assert_close(gx.double(), ex, rtol=2 ** -7, atol=2 ** -7 * ex.abs().max().item())
    torch.testing.assert_close(gw.double(), ew, rtol=1e-4, atol=1e-4 * ew.abs().max().item())


def test_rms_norm_gemma_weight_formed_in_fp32(device):
    """The differentiable path forms gemma's 1 + w in fp32, as the kernels do: with a bf16
    weight of small values, 1 + w rounded to bf16 would be off by up to 2^-8 relative,
    far outside fp32's rounding (rtol 1e-6: a few fp32 ulps of the row's rstd and y)."""
    x = torch.randn(4, 96, device=device, requires_grad=True)
    w = (0.02 * torch.randn(96, device=device)).to(torch.bfloat16).requires_grad_()
    y = torch_ops.rms_norm(x, w, 1e-6, gemma=True)
    assert y.grad_fn is not None
    with torch.no_grad():
        torch.testing.assert_close(y, ops.rms_norm(x, w, 1e-6, True), rtol=1e-6, atol=1e-6)


def test_module_without_residual_trains(device):
    m = torch_ops.FusedAddRMSNorm(48, gemma=True, dtype=F64, device=device)
    with torch.no_grad():
        m.weight.normal_()
    x = torch.randn(5, 48, dtype=F64, device=device, requires_grad=True)
    dy = torch.randn(5, 48, dtype=F64, device=device)
    gx, gw = torch.autograd.grad(m(x), (x, m.weight), dy)
    xr = x.detach().requires_grad_()
    wr = m.weight.detach().requires_grad_()
    ex, ew = torch.autograd.grad(plain_rms_norm_ref(xr, wr, 1e-6, gemma=True), (xr, wr), dy)
    torch.testing.assert_close(gx, ex, **TIGHT)
    torch.testing.assert_close(gw, ew, **TIGHT)


# ---------------------------------------------------------------- the sglang / Triton API

CONFIGS = {  # group_size, norm_before_gate, is_rms_norm, activation, bias
    "rms-gate-after": (None, True, True, "silu", False),
    "rms-groups-gate-before": (16, False, True, "silu", False),
    "ln-bias-sigmoid": (None, True, False, "sigmoid", True),
}


def _setup(config, device):
    group, nbg, rms, act, bias = config
    x, w, b, z = make_inputs((3, 32), F64, device, bias=bias)
    return x, w, b, z, (1e-6, group, nbg, rms, act)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_stats_ref_is_the_ops_statistics(config, device):
    x, w, b, z, (eps, group, nbg, rms, act) = _setup(CONFIGS[config], device)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, eps, group, nbg, rms, act)
    e_mean, e_rstd = torch_ops.gated_norm.stats_ref(x, z, eps, group, nbg, rms, act)
    assert e_mean.shape == mean.shape and e_rstd.shape == rstd.shape and e_rstd.dtype == rstd.dtype
    torch.testing.assert_close(e_mean, mean, **TIGHT)
    torch.testing.assert_close(e_rstd, rstd, **TIGHT)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_layer_norm_fwd_under_transforms(config, device):
    """jvp / grad of layer_norm_fwd's output are those of layernorm_fn (whose own are
    checked against the kernels in test_func_transforms.py); the statistics are the ops'.
    Before: grad raised inside torch, jvp returned a zero tangent."""
    x, w, b, z, (eps, group, nbg, rms, act) = _setup(CONFIGS[config], device)
    _, e_mean, e_rstd = ops.gated_norm_fwd(x, w, b, z, eps, group, nbg, rms, act)
    seen = {}

    def f(v):
        out, mean, rstd = torch_ops.layer_norm_fwd(v, w, b, eps, z=z, group_size=group, norm_before_gate=nbg,
                                                   is_rms_norm=rms, activation=act)
        seen["stats"] = (mean, rstd)
        return out

    g = lambda v: torch_ops.layernorm_fn(v, w, b, z, eps, group, nbg, rms, act)  # noqa: E731
    t, dy = torch.randn_like(x), torch.randn_like(x)
    torch.testing.assert_close(torch.func.jvp(f, (x,), (t,))[1], torch.func.jvp(g, (x,), (t,))[1], **TIGHT)
    torch.testing.assert_close(torch.func.grad(lambda v: (f(v) * dy).sum())(x),
                               torch.func.grad(lambda v: (g(v) * dy).sum())(x), **TIGHT)
    mean, rstd = seen["stats"]
    assert (mean is None) == rms
    if not rms:
        torch.testing.assert_close(mean, e_mean, **TIGHT)
    torch.testing.assert_close(rstd, e_rstd, **TIGHT)


def _bwd(config, recompute=False):
    _, group, nbg, rms, act = config

    def f(dy, x, w, b, z):
        _, mean, rstd = ops.gated_norm_fwd(x.detach(), w.detach(), None if b is None else b.detach(), z.detach(),
                                           1e-6, group, nbg, rms, act)
        return torch_ops.layer_norm_bwd(dy, x, w, b, 1e-6, None if rms else mean, rstd, z=z, group_size=group,
                                        norm_before_gate=nbg, is_rms_norm=rms, recompute_output=recompute,
                                        activation=act)
    return f


@pytest.mark.parametrize("config", list(CONFIGS))
def test_layer_norm_bwd_is_differentiable(config, device):
    """Its values on the reference path are the kernel's; its own derivatives pass gradcheck.
    Before: a warning at backward and zero second derivatives."""
    x, w, b, z, cfg = _setup(CONFIGS[config], device)
    dy = torch.randn_like(x)
    f = _bwd(cfg, recompute=True)
    expected = f(dy, x, w, b, z)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (dy, x, w, b, z)]
    got = f(*leaves)
    assert all(g is None or g.grad_fn is not None for g in got)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g.detach(), e, **TIGHT)
    present = [t for t in leaves if t is not None]
    at = [i for i, t in enumerate(leaves) if t is not None]

    def h(*ts):
        a = [None] * 5
        for i, t in zip(at, ts):
            a[i] = t
        return tuple(o for o in f(*a) if o is not None)

    assert torch.autograd.gradcheck(h, present, eps=1e-6, atol=1e-8, rtol=1e-6)
    # torch.func.grad of one output through it: what autograd gives
    v = torch.randn_like(x)
    gf = torch.func.grad(lambda xx: (f(dy, xx, w, b, z)[0] * v).sum())(x)
    (ga,) = torch.autograd.grad((f(dy, leaves[1], w, b, z)[0] * v).sum(), leaves[1])
    torch.testing.assert_close(gf, ga, **TIGHT)


def test_layer_norm_bwd_writes_given_outputs_when_differentiating(device):
    x, w, b, z, (eps, group, nbg, rms, act) = _setup(CONFIGS["ln-bias-sigmoid"], device)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, eps, group, nbg, rms, act)
    dy = torch.randn_like(x)
    e = torch_ops.layer_norm_bwd(dy, x, w, b, eps, mean, rstd, z=z, is_rms_norm=rms, recompute_output=True,
                                 activation=act)
    dz, out = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    got = torch_ops.layer_norm_bwd(dy, x.clone().requires_grad_(), w, b, eps, mean, rstd, z=z, is_rms_norm=rms,
                                   recompute_output=True, dz=dz, out=out, activation=act)
    assert got[3] is dz and got[4] is out and dz.grad_fn is not None
    for g, ee in zip(got, e):
        torch.testing.assert_close(g.detach(), ee, **TIGHT)


def test_sglang_layer_norm_fwd_under_transforms(device):
    """sglang's `_layer_norm_fwd` replacement: the reference under grad / jvp (it raised in
    torch.func before), its statistics fp32 as sglang's; `out` is written."""
    from torch_ops.integrations.sglang import gated

    x, w, _, z = make_inputs((6, 32), F64, device, bias=False)
    dy, t = torch.randn_like(x), torch.randn_like(x)
    f = lambda v: gated.layer_norm_fwd(v, w, None, 1e-6, z=z, group_size=8, norm_before_gate=False,  # noqa: E731
                                       is_rms_norm=True)[0]
    g = lambda v: torch_ops.layernorm_fn(v, w, None, z, 1e-6, 8, False, True, "swish")  # noqa: E731
    torch.testing.assert_close(torch.func.grad(lambda v: (f(v) * dy).sum())(x),
                               torch.func.grad(lambda v: (g(v) * dy).sum())(x), **TIGHT)
    torch.testing.assert_close(torch.func.jvp(f, (x,), (t,))[1], torch.func.jvp(g, (x,), (t,))[1], **TIGHT)
    seen = {}

    def h(v):
        out = torch.full_like(v, float("nan"))
        y, mean, rstd = gated.layer_norm_fwd(v, w, None, 1e-6, z=z, out=out, group_size=8, norm_before_gate=False,
                                             is_rms_norm=True)
        seen.update(y_is_out=y is out, mean=mean, rstd=rstd)
        return y

    torch.func.grad(lambda v: (h(v) * dy).sum())(x)
    _, _, e_rstd = ops.gated_norm_fwd(x, w, None, z, 1e-6, 8, False, True, "swish")
    assert seen["y_is_out"] and seen["mean"] is None and seen["rstd"].dtype == torch.float32
    torch.testing.assert_close(seen["rstd"], e_rstd.float(), rtol=1e-6, atol=0)


def test_rms_norm_gradients_under_compile(device):
    """torch.compile(fullgraph=True) takes the same differentiable path (gated_norm) when a
    gradient is needed, and the inference op under no_grad."""
    x = torch.randn(8, 64, device=device, requires_grad=True)
    w = torch.randn(64, device=device, requires_grad=True)

    def loss(x, w):
        return torch_ops.rms_norm(x, w, 1e-6, gemma=True).square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(x, w), (x, w))
    expected = torch.autograd.grad(loss(x, w), (x, w))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        y = torch.compile(lambda x: torch_ops.rms_norm(x, w, 1e-6), backend="aot_eager", fullgraph=True)(x)
        assert torch.equal(y, ops.rms_norm(x, w, 1e-6, False))
