"""Drop-in Python API (FLA / mamba_ssm / sglang / vLLM names, argument orders, defaults and
return layouts), the eager references, and the nn.Modules."""
import math
import os
import subprocess
import sys

import pytest
import torch

import torch_ops
from conftest import assert_close, assert_normwise, f64, grad_tol, make_inputs, poison, reduce_tol, ref64, tol

T32 = tol(torch.float32, 64)


def naive_ref(x, w, b, z, eps, g, nbg, rms, act):
    """DESIGN section 2, written out element by element with Python floats (fp64): an
    independent check of gated_norm_ref, which every other test trusts."""
    x2 = x.double().reshape(-1, x.shape[-1]).tolist()
    z2 = None if z is None else z.double().reshape(-1, x.shape[-1]).tolist()
    n = x.shape[-1]
    g = g or n
    out = []

    def a(v):
        s = 1 / (1 + math.exp(-v))
        return v * s if act in ("silu", "swish") else s

    for r, row in enumerate(x2):
        res = [0.0] * n
        for g0 in range(0, n, g):
            idx = range(g0, g0 + g)
            v = [row[i] * (a(z2[r][i]) if z2 is not None and not nbg else 1.0) for i in idx]
            mu = 0.0 if rms else sum(v) / g
            rstd = 1 / math.sqrt(sum((t - mu) ** 2 for t in v) / g + eps)
            for k, i in enumerate(idx):
                y = (v[k] - mu) * rstd * (1.0 if w is None else float(w[i])) + (0.0 if b is None else float(b[i]))
                res[i] = y * (a(z2[r][i]) if z2 is not None and nbg else 1.0)
        out.append(res)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


@pytest.mark.parametrize("g,nbg,rms,act", [(None, True, False, "swish"), (4, False, True, "sigmoid"),
                                           (2, True, True, "silu"), (4, False, False, "swish")])
@pytest.mark.parametrize("zwb", [(True, True, True), (False, False, False), (True, True, False)],
                         ids=["zwb", "none", "zw"])
def test_reference_matches_definition(g, nbg, rms, act, zwb):
    x, w, b, z = make_inputs((3, 2, 8), torch.float64, "cpu", z=zwb[0], weight=zwb[1], bias=zwb[2])
    got = torch_ops.gated_norm_ref(x, w, b, z, 1e-5, g, nbg, rms, act)
    torch.testing.assert_close(got, naive_ref(x, w, b, z, 1e-5, g, nbg, rms, act), rtol=1e-12, atol=1e-12)


def test_reference_wrappers_agree():
    x, w, b, z = make_inputs((4, 32), torch.float32, "cpu")
    for nbg in (True, False):
        assert torch.equal(torch_ops.rms_norm_ref(x, w, None, z, 1e-5, 8, nbg),
                           torch_ops.gated_norm_ref(x, w, None, z, 1e-5, 8, nbg, True, "silu"))
        for rms, act in ((False, "sigmoid"), (True, "swish")):
            assert torch.equal(torch_ops.layer_norm_ref(x, w, b, z, 1e-5, 8, nbg, True, rms, act),
                               torch_ops.gated_norm_ref(x, w, b, z, 1e-5, 8, nbg, rms, act))
    # upcast computes in fp32 and returns x's dtype
    xb, wb, bb, zb = (t.bfloat16() for t in (x, w, b, z))
    r = torch_ops.gated_norm_ref(xb, wb, bb, zb)
    assert r.dtype == torch.bfloat16
    assert_close(r, torch_ops.gated_norm_ref(*(t.double() for t in (xb, wb, bb)), zb.double()),
                 tol(torch.bfloat16, 32))


def test_layernormfn_apply_positional(device):
    """FLA/mamba: LayerNormFn.apply(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm)."""
    x, w, b, z = make_inputs((10, 64), torch.float32, device)
    x.requires_grad_()
    out = torch_ops.LayerNormFn.apply(x, w, b, z, 1e-5, 16, False, True)
    assert_close(out, ref64(x, w, b, z, 1e-5, 16, False, True), T32)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # defaults: z=None, eps=1e-6, group_size=None, norm_before_gate=True, LayerNorm
    assert_close(torch_ops.LayerNormFn.apply(x, w, b), ref64(x, w, b, None), T32)


def small_var_inputs(device):
    """Rows with variance ~1e-6, so eps = 1e-6 vs 1e-5 changes the result by ~%."""
    x, w, b, z = make_inputs((8, 64), torch.float32, device)
    return 1e-3 * x, w, b, z


def test_function_defaults(device):
    """layernorm_fn / rmsnorm_fn / rms_norm_gated defaults: eps=1e-6, group_size=None,
    norm_before_gate=True, LayerNorm (is_rms_norm=False) for layernorm_fn and rms_norm_gated,
    activation swish. Each default is checked against a reference that would differ."""
    x, w, b, z = small_var_inputs(device)
    assert (ref64(x, w, b, z, 1e-6) - ref64(x, w, b, z, 1e-5)).abs().max() > 100 * T32  # eps is visible
    assert (ref64(x, w, b, z) - ref64(x, w, b, z, norm_before_gate=False)).abs().max() > 100 * T32
    assert_close(torch_ops.layernorm_fn(x, w, b, z), ref64(x, w, b, z, 1e-6, None, True, False, "swish"), T32)
    assert_close(torch_ops.layernorm_fn(x, w, b, z=z), ref64(x, w, b, z), T32)
    assert_close(torch_ops.rmsnorm_fn(x, w, None, z), ref64(x, w, None, z, 1e-6, None, True, True, "silu"), T32)
    assert_close(torch_ops.rms_norm_gated(x, w, b, z), ref64(x, w, b, z, 1e-6, None, True, False), T32)
    assert_close(torch_ops.rmsnorm_fn(x, w, None, z, 1e-5, 16, False, "sigmoid"),
                 ref64(x, w, None, z, 1e-5, 16, False, True, "sigmoid"), tol(torch.float32, 16))


def test_rms_norm_gated_keywords_as_sglang(device):
    """sglang calls rms_norm_gated with keywords only."""
    x, w, _, z = make_inputs((6, 4, 128), torch.bfloat16, device)
    out = torch_ops.rms_norm_gated(x=x, weight=w, bias=None, z=z, eps=1e-6, group_size=64, norm_before_gate=False,
                                   is_rms_norm=True)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert_close(out, ref64(x, w, None, z, 1e-6, 64, False, True), tol(torch.bfloat16, 64))
    out = torch_ops.rms_norm_gated(x=x, weight=w, bias=None, z=z, eps=1e-5, group_size=None, norm_before_gate=True,
                                   is_rms_norm=True, activation="sigmoid")
    assert_close(out, ref64(x, w, None, z, 1e-5, None, True, True, "sigmoid"), tol(torch.bfloat16, 128))


@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_layer_norm_fwd(rms, device):
    """sglang's _layer_norm_fwd: (out, mean or None, rstd); out= is written and returned."""
    m, n, g = 12, 96, 32
    x, w, b, z = make_inputs((m, n), torch.float16, device)
    b = None if rms else b
    expected = ref64(x, w, b, z, 1e-5, g, False, rms)
    out, mean, rstd = torch_ops.layer_norm_fwd(x, w, b, 1e-5, z=z, group_size=g, norm_before_gate=False,
                                               is_rms_norm=rms)
    assert_close(out, expected, tol(torch.float16, g))
    assert rstd.shape == (m * n // g,) and rstd.dtype == torch.float32
    assert (mean is None) if rms else (mean.shape == (m * n // g,))
    buf = poison(torch.empty(m, 2 * n, dtype=torch.float16, device=device))
    given = buf[:, :n]
    out2, mean2, rstd2 = torch_ops.layer_norm_fwd(x, w, b, 1e-5, z, given, g, False, rms)
    assert out2 is given
    assert_close(given, expected, tol(torch.float16, g))
    assert_close(rstd2, rstd, tol(torch.float32, g), "rstd")
    if rms:
        assert mean2 is None
    else:
        assert_close(mean2, mean, tol(torch.float32, g), "mean")
    assert torch.isnan(buf[:, n:]).all()


@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_layer_norm_bwd(rms, device):
    """Triton's _layer_norm_bwd: 4-tuple, or 5-tuple with recompute_output; dz None without z."""
    m, n = 9, 64
    x, w, b, z = make_inputs((m, n), torch.float32, device)
    out, mean, rstd = torch_ops.layer_norm_fwd(x, w, b, 1e-6, z=z, is_rms_norm=rms)
    dy = torch.randn_like(x)
    r4 = torch_ops.layer_norm_bwd(dy, x, w, b, 1e-6, mean, rstd, z=z, is_rms_norm=rms)
    assert len(r4) == 4
    r5 = torch_ops.layer_norm_bwd(dy, x, w, b, 1e-6, mean, rstd, z=z, is_rms_norm=rms, recompute_output=True)
    assert len(r5) == 5
    assert_close(r5[4], out, T32, "recomputed out")
    leaves = [f64(t).cpu().requires_grad_() for t in (x, w, b, z)]
    torch_ops.gated_norm_ref(*leaves[:3], leaves[3], is_rms_norm=rms).backward(f64(dy).cpu())
    for got, want, name in zip(r4, leaves, ("dx", "dw", "db", "dz")):
        if name in ("dw", "db"):
            assert_normwise(got, want.grad, reduce_tol(torch.float32, m, n, torch.float32), name)
        else:
            assert_close(got, want.grad, grad_tol(torch.float32, n), name)
    # no z -> dz None
    _, mean, rstd = torch_ops.layer_norm_fwd(x, w, b, 1e-6, is_rms_norm=rms)
    assert torch_ops.layer_norm_bwd(dy, x, w, b, 1e-6, mean, rstd, is_rms_norm=rms)[3] is None


MODULES = [(torch_ops.LayerNormGated, False, True), (torch_ops.RMSNormGated, True, False),
           (torch_ops.LayerNorm, False, True), (torch_ops.RMSNorm, True, True)]


@pytest.mark.parametrize("cls,rms,nbg_default", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_module_defaults(cls, rms, nbg_default, device):
    mod = cls(64, device=device, dtype=torch.bfloat16)
    assert mod.eps == 1e-5 and mod.group_size is None and mod.norm_before_gate is nbg_default
    assert mod.weight.dtype == torch.bfloat16 and mod.weight.device.type == device
    assert torch.equal(mod.weight, torch.ones(64, dtype=torch.bfloat16, device=device))
    if rms:
        assert mod.bias is None
        assert [k for k, _ in mod.named_parameters()] == ["weight"]
    else:
        assert torch.equal(mod.bias, torch.zeros(64, dtype=torch.bfloat16, device=device))
        assert [k for k, _ in mod.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("cls,rms,nbg_default", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("with_z", [True, False], ids=["z", "noz"])
def test_module_forward_backward(cls, rms, nbg_default, with_z, device):
    """Forward and parameter/input gradients of each module vs the reference with the
    module's own defaults (eps 1e-5, gate order); a second config with groups + sigmoid."""
    for kwargs in ({}, {"group_size": 16, "norm_before_gate": not nbg_default, "activation": "sigmoid"}):
        mod = cls(64, device=device, **kwargs)
        x, w, b, z = make_inputs((3, 5, 64), torch.float32, device, z=with_z)
        with torch.no_grad():
            mod.weight.copy_(w)
            if mod.bias is not None:
                mod.bias.copy_(b)
        x.requires_grad_()
        out = mod(x, z) if with_z else mod(x)
        nbg = kwargs.get("norm_before_gate", nbg_default)
        g = kwargs.get("group_size")
        act = kwargs.get("activation", "swish")
        bias = None if rms else mod.bias
        assert_close(out, ref64(x, mod.weight, bias, z, 1e-5, g, nbg, rms, act), tol(torch.float32, g or 64))
        dy = torch.randn_like(out)
        out.backward(dy)
        leaves = [None if t is None else f64(t).cpu().requires_grad_() for t in (x, mod.weight, bias)]
        torch_ops.gated_norm_ref(*leaves, None if z is None else f64(z).cpu(), 1e-5, g, nbg, rms,
                                 act).backward(f64(dy).cpu())
        assert_close(x.grad, leaves[0].grad, grad_tol(torch.float32, g or 64), "dx")
        for p, l64, name in ((mod.weight, leaves[1], "weight"), (bias, leaves[2], "bias")):
            if p is not None:
                assert p.grad is not None, f"{name} got no gradient"
                assert_normwise(p.grad, l64.grad, reduce_tol(torch.float32, 15, g or 64, torch.float32), name)


def test_import_without_torch_first():
    """`import torch_ops` in a fresh interpreter, without importing torch before (the
    extension links against libc10/libtorch, which only an imported torch has loaded)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(torch_ops.__file__)))
    r = subprocess.run([sys.executable, "-c", "import torch_ops; print(torch_ops.__version__)"], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
