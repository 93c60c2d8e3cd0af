"""Higher-order autograd: torch.func transforms, forward-mode AD and double backward
through the public functions. The
differentiating ones (jvp, grad, jacrev, a forward_ad dual level) run the eager reference,
which PyTorch differentiates (torch_ops/gated_norm.py says why); vmap runs the ops
through their vmap rules (torch_ops/_vmap.py).
Expected values come from our kernels, not from the reference: tangents from central
differences of the kernel forward in fp64 (truncation error ~h^2 * |f'''| ~ 1e-10 with
h = 1e-5, rounding ~1e-16 / h ~ 1e-11: TOL = 1e-7 leaves room), gradients from the
kernel backward (fp64: the same math, ~1e-15 apart). Before: jvp returned a zero
tangent, grad raised from inside torch."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import torch_ops
from conftest import make_inputs

F64 = torch.float64
H, TOL = 1e-5, 1e-7


def _gated_fns(device):
    """name -> (f(x) with everything else fixed, x): the configurations of the gated forward."""
    x, w, b, z = make_inputs((3, 64), F64, device)
    return {
        "rms-gate-after": (lambda x: torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "silu"), x),
        "rms-gate-before-groups": (lambda x: torch_ops.rmsnorm_fn(x, w, None, z=z, eps=1e-6, group_size=16,
                                                                  norm_before_gate=False), x),
        "ln-bias-sigmoid": (lambda x: torch_ops.layernorm_fn(x, w, b, z, 1e-6, None, True, False, "sigmoid"), x),
        "rms-no-gate": (lambda x: torch_ops.rms_norm_gated(x=x, weight=w, bias=None, eps=1e-6, is_rms_norm=True), x),
        # the gate as the differentiated input
        "d-gate": (lambda zz: torch_ops.layernorm_fn(x, w, None, zz, 1e-6, None, True, True, "silu"), z),
    }


def _add_fns(device):
    x, r = (torch.randn(3, 64, dtype=F64, device=device) for _ in range(2))
    w = 1 + 0.1 * torch.randn(64, dtype=F64, device=device)

    def fused(xx):  # in place on copies: (input, residual) after the call
        a, res = xx.clone(), r.clone()
        torch_ops.fused_add_rms_norm(a, res, w, 1e-6)
        return a + 2 * res  # both outputs in one tensor

    return {
        "add_rms_norm": (lambda xx: torch_ops.add_rms_norm(xx, r, w, 1e-6)[0], x),
        "add_rms_norm-residual_out": (lambda xx: torch_ops.add_rms_norm(xx, r, w, 1e-6, gemma=True)[1], x),
        "rms_norm": (lambda xx: torch_ops.rms_norm(xx, w, 1e-6), x),
        "rms_norm-out": (lambda xx: torch_ops.rms_norm(xx, w, 1e-6, out=torch.empty_like(xx)), x),
        "fused_add_rms_norm": (fused, x),
    }


def _all(device):
    return {**_gated_fns(device), **_add_fns(device)}


NAMES = list(_all("cpu"))


def _fd_tangent(f, x, t):
    with torch.no_grad():
        return (f(x + H * t) - f(x - H * t)) / (2 * H)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_and_dual_tangents(name, device):
    f, x = _all(device)[name]
    t = torch.randn_like(x)
    expected = _fd_tangent(f, x, t)
    assert expected.abs().max() > 1e-3  # a tangent that could be told from zero
    out, tangent = torch.func.jvp(f, (x,), (t,))
    torch.testing.assert_close(tangent, expected, rtol=TOL, atol=TOL)
    torch.testing.assert_close(out, f(x), rtol=1e-12, atol=1e-12)
    with fwAD.dual_level():
        y = f(fwAD.make_dual(x, t))
        torch.testing.assert_close(fwAD.unpack_dual(y).tangent, expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("rms_norm-out", "fused_add_rms_norm")])
def test_func_grad_and_jacrev_are_the_kernel_backward(name, device):
    """(The in-place forms have no derivative: the jvp test covers them.)"""
    f, x = _all(device)[name]
    dy = torch.randn_like(x)
    g = torch.func.grad(lambda v: (f(v) * dy).sum())(x)
    xr = x.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(f(xr), xr, dy)  # the kernel backward
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)
    jac = torch.func.jacrev(f)(x)
    jac_kernel = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(jac, jac_kernel, rtol=1e-10, atol=1e-12)


@pytest.fixture
def no_vmap_fallback():
    """vmap's per-sample fallback turned into an error (its warning is a C++ log line that
    pytest cannot catch): every vmapped call must take one of our rules."""
    f = torch._C._functorch
    was = f._is_vmap_fallback_enabled()
    f._set_vmap_fallback_enabled(False)
    yield
    f._set_vmap_fallback_enabled(was)


def test_vmap_rules(device, no_vmap_fallback):
    """torch_ops/_vmap.py: batched rows in one call (any in_dims), batched parameters (an
    ensemble) one call per sample; bitwise the unbatched calls."""
    x, w, _, z = make_inputs((5, 3, 64), torch.float32, device, bias=False)
    W = torch.randn(5, 64, device=device)
    f = lambda a, b: torch_ops.layernorm_fn(a, w, None, b, 1e-6, 16, False, True, "silu")  # noqa: E731
    assert torch.equal(torch.func.vmap(f)(x, z), f(x, z))
    assert torch.equal(torch.func.vmap(f, in_dims=(1, 1))(x, z), f(x.transpose(0, 1), z.transpose(0, 1)))
    assert torch.equal(torch.func.vmap(f, in_dims=(0, None))(x, z[0]), f(x, z[0].expand_as(x)))
    g = lambda a, ww: torch_ops.layernorm_fn(a, ww, None, None, 1e-6, None, True, True, "silu")  # noqa: E731
    assert torch.equal(torch.func.vmap(g)(x, W), torch.stack([g(x[i], W[i]) for i in range(5)]))
    r = torch.randn_like(x)
    out, res = torch.func.vmap(lambda a, b: torch_ops.add_rms_norm(a, b, w, 1e-6))(x, r)
    e_out, e_res = torch_ops.add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(out, e_out) and torch.equal(res, e_res)
    out, res = torch.func.vmap(lambda a, b, ww: torch_ops.add_rms_norm(a, b, ww, 1e-6))(x, r, W)
    for i in range(5):
        e_out, e_res = torch_ops.add_rms_norm(x[i], r[i], W[i], 1e-6)
        assert torch.equal(out[i], e_out) and torch.equal(res[i], e_res)
    assert torch.equal(torch.func.vmap(lambda a: torch_ops.rms_norm(a, w, 1e-6))(x), torch_ops.rms_norm(x, w, 1e-6))
    assert torch.equal(torch.func.vmap(torch_ops.rms_norm, in_dims=(0, 0, None))(x, W, 1e-6),
                       torch.stack([torch_ops.rms_norm(x[i], W[i], 1e-6) for i in range(5)]))


@pytest.mark.parametrize("in_dim", [0, 1])
def test_vmap_rules_of_the_differentiable_ops(in_dim, device, no_vmap_fallback):
    """vmap under regular autograd (inputs requiring grad outside vmap): the rule runs the
    differentiable ops below autograd on the whole batch; outputs bitwise the unbatched
    call's, each sample's statistics in its own layout, gradients those of the plain call."""
    x, w, b, z = make_inputs((5, 3, 64), torch.float32, device)
    ops = torch.ops.gatednorm
    xs, zs = x.movedim(0, in_dim).contiguous(), z.movedim(0, in_dim).contiguous()
    leaves = [t.clone().requires_grad_() for t in (xs, w, b, zs)]
    args = lambda xx, ww, bb, zz: (xx, ww, bb, zz, 1e-6, 16, False, False, "silu")  # noqa: E731
    out, mean, rstd = torch.func.vmap(lambda a, c: ops.gated_norm(*args(a, leaves[1], leaves[2], c)),
                                      in_dims=(in_dim, in_dim))(leaves[0], leaves[3])
    for i in range(5):
        e_out, e_mean, e_rstd = ops.gated_norm_fwd(*args(x[i], w, b, z[i]))
        assert torch.equal(out[i].detach(), e_out) and torch.equal(mean[i], e_mean) and torch.equal(rstd[i], e_rstd)
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dy)
    plain = [t.clone().requires_grad_() for t in (x, w, b, z)]
    e_grads = torch.autograd.grad(ops.gated_norm(*args(*plain))[0], plain, dy)
    for g, e, name in zip(grads, e_grads, ("dx", "dw", "db", "dz")):
        g = g.movedim(in_dim, 0) if name in ("dx", "dz") else g
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6, msg=name)
    # RMS (empty mean) and batched parameters (one call per sample)
    W = 1 + 0.1 * torch.randn(5, 64, device=device)
    out, mean, rstd = torch.func.vmap(lambda a, ww: ops.gated_norm(a, ww, None, None, 1e-6, None, True, True, "silu"))(
        x, W.requires_grad_())
    assert mean.shape == (5, 0) and rstd.shape == (5, 3)
    for i in range(5):
        e_out, _, e_rstd = ops.gated_norm_fwd(x[i], W[i].detach(), None, None, 1e-6, None, True, True, "silu")
        assert torch.equal(out[i].detach(), e_out) and torch.equal(rstd[i], e_rstd)
    # add + RMSNorm
    r = torch.randn_like(x)
    xl, rl, wl = (t.clone().requires_grad_() for t in (x, r, w))
    o, h, rs = torch.func.vmap(lambda a, c: ops.add_rms_norm(a, c, wl, 1e-6, False, False))(xl, rl)
    e_o, e_h, e_rs = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    assert torch.equal(o.detach(), e_o) and torch.equal(h.detach(), e_h) and torch.equal(rs, e_rs.view(5, 3))
    g = torch.autograd.grad((o * dy).sum() + h.sum(), (xl, rl, wl))
    pl = [t.clone().requires_grad_() for t in (x, r, w)]
    e_o, e_h, _ = ops.add_rms_norm(*pl, 1e-6, False, False)
    e_g = torch.autograd.grad((e_o * dy).sum() + e_h.sum(), pl)
    for a, e in zip(g, e_g):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- double backward
# backward(create_graph=True) computes the input gradients through the eager reference,
# so they are differentiable (before: the kernel's gradients, whose second derivatives
# were silently zero). gradgradcheck: fp64, finite differences of our first-order
# gradients (which are the kernel backward's in test_backward.py's gradcheck).

def _gradgrad(f, inputs):
    return torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("config", [(16, False, True, "silu", False), (None, True, False, "sigmoid", True),
                                    (None, True, True, "silu", False)],
                         ids=["rms-groups-gate-before", "ln-bias-sigmoid", "rms-gate-after"])
def test_gated_double_backward(config, device):
    group, nbg, rms, act, bias = config
    x, w, b, z = (t.requires_grad_() if t is not None else None
                  for t in make_inputs((3, 32), F64, device, bias=bias))
    f = (lambda x, w, b, z: torch_ops.layernorm_fn(x, w, b, z, 1e-6, group, nbg, rms, act)) if bias else \
        (lambda x, w, z: torch_ops.layernorm_fn(x, w, None, z, 1e-6, group, nbg, rms, act))
    assert _gradgrad(f, (x, w, b, z) if bias else (x, w, z))


@pytest.mark.parametrize("which", ["out", "residual_out", "both", "module"])
def test_add_rms_norm_double_backward(which, device):
    x, r = (torch.randn(3, 32, dtype=F64, device=device, requires_grad=True) for _ in range(2))
    w = (1 + 0.1 * torch.randn(32, dtype=F64, device=device)).requires_grad_()
    if which == "module":
        m = torch_ops.FusedAddRMSNorm(32, gemma=True, dtype=F64, device=device)
        assert _gradgrad(lambda x, r: m(x, r), (x, r))
        return
    pick = {"out": lambda o: o[0], "residual_out": lambda o: 2 * o[1], "both": lambda o: o}[which]
    assert torch.autograd.gradgradcheck(lambda x, r, w: pick(torch_ops.add_rms_norm(x, r, w, 1e-6)), (x, r, w),
                                        eps=1e-6, atol=1e-8, rtol=1e-6, check_undefined_grad=which == "both")


def test_first_order_backward_stays_on_the_kernel(device):
    """Without create_graph the backward is the kernel's (bitwise gated_norm_bwd)."""
    x, w, _, z = make_inputs((3, 32), F64, device, bias=False)
    xr = x.clone().requires_grad_()
    y = torch_ops.layernorm_fn(xr, w, None, z, 1e-6, None, True, True, "silu")
    dy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, xr, dy)
    _, mean, rstd = torch.ops.gatednorm.gated_norm_fwd(x, w, None, z, 1e-6, None, True, True, "silu")
    dx = torch.ops.gatednorm.gated_norm_bwd(dy, x, w, None, z, mean, rstd, 1e-6, None, True, True, "silu", False)[0]
    assert torch.equal(g, dx)


def test_compiled_training_backward_runs_the_kernels(device):
    """AOTAutograd traces the backward without create_graph: the traced backward is the
    kernels' (gated_norm_bwd, add_rms_norm_bwd), not the reference's."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    seen = {"fw": set(), "bw": set()}

    def recorder(kind):
        def compiler(gm, _inputs):
            seen[kind] |= {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
            return make_boxed_func(gm)
        return compiler

    x, w, _, z = make_inputs((8, 64), torch.float32, device, bias=False)
    x.requires_grad_()
    w.requires_grad_()

    def step(x, w, z):
        y = torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "silu")
        out, res = torch_ops.add_rms_norm(y, x, w, 1e-6)
        return out.square().sum() + res.sum()

    torch._dynamo.reset()
    fn = torch.compile(step, backend=aot_autograd(fw_compiler=recorder("fw"), bw_compiler=recorder("bw")),
                       fullgraph=True)
    fn(x, w, z).backward()
    assert {"gatednorm.gated_norm_bwd.default", "gatednorm.add_rms_norm_bwd.default"} <= seen["bw"], seen["bw"]
    assert not any("rsqrt" in t for t in seen["bw"]), seen["bw"]
