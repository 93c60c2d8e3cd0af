"""The inference fast path of the Python functions: without a gradient to compute they
call the ops that have no autograd kernel and allocate no statistics (`gated_norm_infer`,
`add_rms_norm_infer`), through the ops' C++ entry points (the packets under
torch.compile). Pinned here: which op runs in each grad mode, results bitwise those of
the differentiable ops, gradients when an input requires grad, errors that name the
argument, opcheck and torch.compile of the new ops, and (CPU kernels) the serial
forward for small problems agreeing bitwise with the threaded one."""
import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torch_ops
from conftest import capture_cuda_graph, make_inputs, ops, requires_cuda

GATED, INFER = "gatednorm.gated_norm.default", "gatednorm.gated_norm_infer.default"
ADD, ADD_INFER = "gatednorm.add_rms_norm.default", "gatednorm.add_rms_norm_infer.default"


class Record(TorchDispatchMode):
    """Names of the gatednorm ops that reach the kernels (below autograd)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "gatednorm":
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def ran(fn, *args, **kwargs):
    """-> (result, [gatednorm ops that ran])"""
    with Record() as r:
        out = fn(*args, **kwargs)
    return out, r.ops


# The configurations of the decode / prefill calls: groups, both gate orders, LayerNorm
# and RMS, no weight / bias / gate, a row-strided view, M = 0, fp64.
def gated_cases(device):
    x, w, b, z = make_inputs((4, 64), torch.float32, device)
    xb, wb, _, zb = make_inputs((2, 3, 128), torch.bfloat16, device)
    proj = torch.randn(5, 96, device=device)
    xd, wd, bd, zd = make_inputs((3, 32), torch.float64, device)
    return [
        (x, w, b, z, 1e-6, 16, True, False, "swish"),
        (xb, wb, None, zb, 1e-5, None, True, True, "silu"),
        (xb, wb, None, zb, 1e-5, 64, False, True, "sigmoid"),
        (xb, None, None, None, 1e-6, None, True, True, "silu"),
        (proj[:, :32], w[:32], None, proj[:, 64:], 1e-6, 8, False, True, "silu"),
        (torch.randn(0, 64, device=device), w, b, None, 1e-6, None, True, False, "swish"),
        (xd, wd, bd, zd, 1e-6, None, False, False, "swish"),
    ]


def add_cases(device):
    x, r, w = (torch.randn(6, 64, device=device), torch.randn(6, 64, device=device), torch.randn(64, device=device))
    xb = torch.randn(2, 3, 128, device=device).bfloat16()
    rb = torch.randn(2, 3, 128, device=device).bfloat16()
    empty = torch.randn(0, 64, device=device)
    return [(x, r, w, 1e-6, False, False), (xb, rb, None, 1e-5, True, False),
            (xb, rb, w[:32].repeat(4), 1e-6, False, True), (empty, empty.clone(), w, 1e-6, False, False)]


# ---------------------------------------------------------------- results

@pytest.mark.parametrize("i", range(7))
def test_gated_norm_infer_is_the_forward_bitwise(i, device):
    args = gated_cases(device)[i]
    out = ops.gated_norm_infer(*args)
    ref, _, _ = ops.gated_norm_fwd(*args)
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.is_contiguous()
    assert torch.equal(out, ref)
    with torch.no_grad():
        assert torch.equal(torch_ops.layernorm_fn(*args), ref)


@pytest.mark.parametrize("i", range(4))
def test_add_rms_norm_infer_is_the_forward_bitwise(i, device):
    args = add_cases(device)[i]
    out, res = ops.add_rms_norm_infer(*args)
    e_out, e_res, _ = ops.add_rms_norm(*args)
    for a, e in ((out, e_out), (res, e_res)):
        assert a.shape == e.shape and a.dtype == e.dtype and torch.equal(a, e)
    with torch.no_grad():
        f_out, f_res = torch_ops.add_rms_norm(*args)
    assert torch.equal(f_out, e_out) and torch.equal(f_res, e_res)


# ---------------------------------------------------------------- which op runs

def gated_calls(x, w, b, z):
    """Every public entry to the gated forward, on the same problem (RMS, gate after the norm)."""
    m = torch_ops.RMSNormGated(x.shape[-1], eps=1e-6, norm_before_gate=True, device=x.device, dtype=x.dtype)
    m.weight.data.copy_(w.detach())
    m.weight.requires_grad_(w.requires_grad)
    return {
        "layernorm_fn": lambda: torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "swish"),
        "rmsnorm_fn": lambda: torch_ops.rmsnorm_fn(x, w, None, z=z, eps=1e-6),
        "rms_norm_gated": lambda: torch_ops.rms_norm_gated(x=x, weight=w, bias=None, z=z, eps=1e-6,
                                                           is_rms_norm=True),
        "LayerNormFn.apply": lambda: torch_ops.LayerNormFn.apply(x, w, None, z, 1e-6, None, True, True),
        "module": functools.partial(m, x, z),  # .func: the module
    }


@pytest.mark.parametrize("mode", ["grad_on", "no_grad", "inference_mode"])
def test_gated_no_grad_needed_takes_infer(mode, device):
    """Grad mode on with nothing requiring grad, no_grad with inputs that require grad,
    inference_mode: no backward can be asked for, so the op without autograd runs."""
    x, w, _, z = make_inputs((3, 64), torch.bfloat16, device, bias=False)
    if mode != "grad_on":
        x.requires_grad_()
        w.requires_grad_()
    ctx = {"grad_on": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    ref = ops.gated_norm_fwd(x.detach(), w.detach(), None, z, 1e-6, None, True, True, "swish")[0]
    with ctx():
        for name, call in gated_calls(x, w, None, z).items():
            out, seen = ran(call)
            assert seen == [INFER], (name, seen)
            assert not out.requires_grad and torch.equal(out, ref), name


@pytest.mark.parametrize("which", ["x", "weight", "z"])
def test_gated_requires_grad_takes_autograd(which, device):
    """An input requiring grad in grad mode: the differentiable op runs and the gradient is
    the registered backward's (gated_norm_bwd on the forward's statistics), bitwise."""
    x, w, _, z = make_inputs((3, 64), torch.float64, device, bias=False)
    {"x": x, "weight": w, "z": z}[which].requires_grad_()
    dy = torch.randn_like(x)
    _, mean, rstd = ops.gated_norm_fwd(x.detach(), w.detach(), None, z.detach(), 1e-6, None, True, True, "swish")
    dx, dw, _, dz, _ = ops.gated_norm_bwd(dy, x.detach(), w.detach(), None, z.detach(), mean, rstd, 1e-6, None,
                                          True, True, "swish", False)
    expected = {"x": dx, "weight": dw, "z": dz}[which]
    calls = gated_calls(x, w, None, z)
    for name, call in calls.items():
        out, seen = ran(call)
        assert seen == [GATED], (name, seen)
        assert out.requires_grad and out.grad_fn is not None, name
        # the module holds its own copy of the weight
        leaf = calls["module"].func.weight if (name == "module" and which == "weight") else \
            {"x": x, "weight": w, "z": z}[which]
        (g,) = torch.autograd.grad(out, leaf, dy)
        assert torch.equal(g, expected), name


def test_module_parameters_train(device):
    """A module's parameters require grad: in grad mode the module trains (autograd op)."""
    x, _, _, z = make_inputs((3, 64), torch.float32, device)
    m = torch_ops.LayerNormGated(64, device=device)
    out, seen = ran(m, x, z)
    assert seen == [GATED]
    out.square().sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None and m.weight.grad.abs().sum() > 0
    with torch.no_grad():
        out2, seen = ran(m, x, z)
    assert seen == [INFER] and torch.equal(out2, out.detach())


def test_layer_norm_fwd_keeps_stats(device):
    """sglang's _layer_norm_fwd returns the statistics: it keeps gated_norm_fwd."""
    x, w, b, z = make_inputs((3, 64), torch.float32, device)
    with torch.no_grad():
        (out, mean, rstd), seen = ran(torch_ops.layer_norm_fwd, x, w, b, 1e-6, z=z)
    assert seen == ["gatednorm.gated_norm_fwd.default"]
    e_out, e_mean, e_rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, False, "swish")
    assert torch.equal(out, e_out) and torch.equal(mean, e_mean) and torch.equal(rstd, e_rstd)


@pytest.mark.parametrize("mode", ["grad_on", "no_grad", "inference_mode"])
def test_add_rms_norm_no_grad_needed_takes_infer(mode, device):
    x, r, w = torch.randn(5, 64, device=device), torch.randn(5, 64, device=device), torch.randn(64, device=device)
    if mode != "grad_on":
        x.requires_grad_()
        w.requires_grad_()
    m = torch_ops.FusedAddRMSNorm(64, device=device)
    m.weight.data.copy_(w.detach())
    e_out, e_res, _ = ops.add_rms_norm(x.detach(), r, w.detach(), 1e-6, False, False)
    ctx = {"grad_on": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    with ctx():
        (out, res), seen = ran(torch_ops.add_rms_norm, x, r, w, 1e-6)
        assert seen == [ADD_INFER] and torch.equal(out, e_out) and torch.equal(res, e_res)
        assert not out.requires_grad and not res.requires_grad
        if mode != "grad_on":  # the module's weight requires grad: only without grad mode
            (out, res), seen = ran(m, x, r)
            assert seen == [ADD_INFER] and torch.equal(out, e_out) and torch.equal(res, e_res)


def test_add_rms_norm_requires_grad_takes_autograd(device):
    x, r, w = torch.randn(5, 64, device=device), torch.randn(5, 64, device=device), torch.randn(64, device=device)
    for leaf in (x, r, w):
        leaf.requires_grad_()
        (out, res), seen = ran(torch_ops.add_rms_norm, x, r, w, 1e-6)
        assert seen == [ADD] and out.grad_fn is not None
        (g,) = torch.autograd.grad(out.sum() + res.sum(), leaf)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        leaf.requires_grad_(False)


def test_inplace_and_plain_rms_norm(device):
    """fused_add_rms_norm / rms_norm (no autograd in any mode) through their entry points."""
    x, r, w = torch.randn(5, 64, device=device), torch.randn(5, 64, device=device), torch.randn(64, device=device)
    xi, ri = x.clone(), r.clone()
    _, seen = ran(torch_ops.fused_add_rms_norm, xi, ri, w, 1e-6)
    assert seen == ["gatednorm.fused_add_rms_norm.default"]
    e_out, e_res, _ = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    assert torch.equal(xi, e_out) and torch.equal(ri, e_res)
    out, seen = ran(torch_ops.rms_norm, x, w, 1e-6)
    assert seen == ["gatednorm.rms_norm.default"] and torch.equal(out, ops.rms_norm(x, w, 1e-6, False))
    buf = torch.empty_like(x)
    res, seen = ran(torch_ops.gemma_rms_norm, x, w, 1e-6, out=buf)
    assert seen == ["gatednorm.rms_norm_out.default"] and res is buf
    assert torch.equal(buf, ops.rms_norm(x, w, 1e-6, True))


# ---------------------------------------------------------------- errors

def test_fast_path_errors_name_the_argument(device):
    x, w, b, z = make_inputs((4, 32), torch.float32, device)
    r = torch.randn_like(x)

    def raises(arg, fn, *args, **kwargs):
        with pytest.raises(RuntimeError, match=rf"gatednorm: .*\b{arg}\b"):
            with torch.no_grad():
                fn(*args, **kwargs)

    raises("z", torch_ops.layernorm_fn, x, w, b, z[:, :16])
    raises("weight", torch_ops.rmsnorm_fn, x, w[:16], None)
    raises("bias", torch_ops.layernorm_fn, x, w, b.half())
    raises("group_size", torch_ops.layernorm_fn, x, w, b, z, 1e-6, 5)
    raises("activation", torch_ops.layernorm_fn, x, w, b, z, 1e-6, None, True, False, "gelu")
    raises("eps", torch_ops.rms_norm_gated, x=x, weight=w, bias=None, eps=-1.0)
    raises("x", torch_ops.layernorm_fn, x.int(), None, None)
    raises("residual", torch_ops.add_rms_norm, x, r[:, :16], w)
    raises("weight", torch_ops.add_rms_norm, x, r, w[:8])
    raises("eps", torch_ops.add_rms_norm, x, r, w, float("nan"))
    raises("residual", torch_ops.fused_add_rms_norm, x, x, w)
    raises("out", torch_ops.rms_norm, x, w, 1e-6, torch.empty(32, 4, device=device).t())


# ---------------------------------------------------------------- torch integration

@pytest.mark.parametrize("i", range(7))
def test_opcheck_gated_norm_infer(i, device):
    torch.library.opcheck(ops.gated_norm_infer.default, gated_cases(device)[i])


@pytest.mark.parametrize("i", range(4))
def test_opcheck_add_rms_norm_infer(i, device):
    torch.library.opcheck(ops.add_rms_norm_infer.default, add_cases(device)[i])


def test_compile_no_grad_traces_infer_ops(device):
    """Under torch.compile the functions call the op packets (dynamo cannot trace the C++
    entry points): the graph holds the inference ops, fullgraph, results bitwise eager's."""
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    def f(x, z, w, r):
        y = torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "swish")
        out, res = torch_ops.add_rms_norm(y, r, w)
        return torch_ops.rms_norm(out, w) + res

    x, w, _, z = make_inputs((4, 64), torch.float32, device, bias=False)
    r = torch.randn_like(x)
    with torch.no_grad():
        eager = f(x, z, w, r)
        compiled = torch.compile(f, fullgraph=True, backend=backend)(x, z, w, r)
    assert torch.equal(compiled, eager)
    assert any("gated_norm_infer" in s for s in seen) and any("add_rms_norm_infer" in s for s in seen), seen


# ---------------------------------------------------------------- CPU kernels: serial vs threaded

@pytest.mark.parametrize("gated", [True, False], ids=["gated", "addnorm"])
def test_cpu_serial_forward_matches_threaded(gated):
    """Small problems run outside any OpenMP region, large ones threaded; each row's result
    does not depend on which (rows are independent): bitwise equal."""
    m, n = 512, 128  # m * n = 65536: above the threading threshold (32768 elements)
    if gated:
        x, w, b, z = make_inputs((m, n), torch.bfloat16, "cpu")
        big = ops.gated_norm_fwd(x, w, b, z, 1e-6, 32, False, False, "silu")
        rows = [ops.gated_norm_fwd(x[i:i + 3], w, b, z[i:i + 3], 1e-6, 32, False, False, "silu")
                for i in range(0, m, 3)]
        assert torch.equal(big[0], torch.cat([r[0] for r in rows]))
        # statistics: (ngroups * M,), element g * M + r
        rstd = torch.cat([r[2].view(n // 32, -1) for r in rows], dim=1).reshape(-1)
        assert torch.equal(big[2], rstd)
    else:
        x, r, w = torch.randn(m, n).bfloat16(), torch.randn(m, n).bfloat16(), torch.randn(n)
        out, res, rstd = ops.add_rms_norm(x, r, w, 1e-6, False, False)
        parts = [ops.add_rms_norm(x[i:i + 3], r[i:i + 3], w, 1e-6, False, False) for i in range(0, m, 3)]
        for k, full in enumerate((out, res, rstd)):
            assert torch.equal(full, torch.cat([p[k] for p in parts]))


# ---------------------------------------------------------------- CUDA graphs

@requires_cuda
def test_cuda_graph_infer_ops():
    """The inference ops (no statistics) capture and replay like the others."""
    x, w, _, z = make_inputs((2048, 128), torch.bfloat16, "cuda", bias=False)
    r = torch.randn_like(x)
    sx, sz, sr = x.clone(), z.clone(), r.clone()

    def step():
        y = torch_ops.layernorm_fn(sx, w, None, sz, 1e-6, None, True, True, "swish")
        return (y, *torch_ops.add_rms_norm(y, sr, w))

    with torch.no_grad():
        graph, static = capture_cuda_graph(step, 3)
        for _ in range(2):
            nx, _, _, nz = make_inputs((2048, 128), torch.bfloat16, "cuda", bias=False)
            sx.copy_(nx)
            sz.copy_(nz)
            graph.replay()
            e_y = ops.gated_norm_fwd(nx, w, None, nz, 1e-6, None, True, True, "swish")[0]
            e_out, e_res, _ = ops.add_rms_norm(e_y, r, w, 1e-6, False, False)
            torch.cuda.synchronize()
            for a, e in zip(static, (e_y, e_out, e_res)):
                assert torch.equal(a, e)
