"""`torch_ops.swap.swap_norms_` on the gated norms of FLA and mamba_ssm.

FLA and mamba_ssm run Triton kernels, which do not run on a CPU: their classes are tested
through stand-ins with the same module path, class name, __init__ attributes and forward
semantics as the real source (fla-core 0.6.0 `fla/modules/norm/{layernorm_gated,
fused_norm_gate}.py`, mamba_ssm `ops/triton/layernorm_gated.py`), under each module path
FLA has used, plus the real classes on CUDA when those packages are installed.

The swap matches classes by module path and name and imports none of these packages, so
these tests need neither transformers nor fla / mamba_ssm (the real-class test skips
without them).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import U, grad_tol, reduce_tol, tol
from swap_helpers import BF16, EPS, G, N, _assert_close, _assert_normwise, _fwd_bwd, _Holder
from torch_ops.swap import swap_norms_


# =================================================================== FLA / mamba_ssm stand-ins
#
# Same module path, class name, __init__ attributes and forward math as the real source;
# forward written in eager PyTorch (the real ones launch Triton kernels): fp32 compute,
# output in x.dtype.

def _ref_norm(x, w, b, z, eps, group_size, norm_before_gate, is_rms, act="silu"):
    dtype = x.dtype
    x, z = x.float(), None if z is None else z.float()
    a = (lambda t: F.silu(t)) if act in ("silu", "swish") else torch.sigmoid
    if z is not None and not norm_before_gate:
        x = x * a(z)
    n = x.shape[-1]
    xg = x.unflatten(-1, (n // (group_size or n), group_size or n))
    if not is_rms:
        xg = xg - xg.mean(-1, keepdim=True)
    y = (xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    if w is not None:
        y = y * w.float()
    if b is not None:
        y = y + b.float()
    if z is not None and norm_before_gate:
        y = y * a(z)
    return y.to(dtype)


def _tri_dao_class(module_path, name, is_rms, nbg_default):
    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=nbg_default, device=None,
                 dtype=None):
        nn.Module.__init__(self)
        f = {"device": device, "dtype": dtype}
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, **f))
        if is_rms:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.zeros(hidden_size, **f))
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate

    def forward(self, x, z=None):
        return _ref_norm(x, self.weight, self.bias, z, self.eps, self.group_size, self.norm_before_gate, is_rms)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward, "__module__": module_path,
                                     "__qualname__": name})


def _fla_fused_class(module_path, name, is_rms):
    def __init__(self, hidden_size, elementwise_affine=True, eps=1e-5, activation="swish", bias=False, device=None,
                 dtype=None):
        nn.Module.__init__(self)
        f = {"device": device, "dtype": dtype}
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        self.activation = activation
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, **f))
            if bias and not is_rms:
                self.bias = nn.Parameter(torch.zeros(hidden_size, **f))

    def forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        # FLA's kernel: h = x (+ residual) in fp32; residual_out = h in residual's dtype
        # (fp32 if residual_in_fp32 and no residual; x itself otherwise); the fp32 h is normalised
        h = x.float() + residual.float() if residual is not None else x.float()
        rdtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
        y = _ref_norm(h, self.weight, self.bias, g, self.eps, None, True, is_rms, self.activation).to(x.dtype)
        if not prenorm:
            return y
        return y, (h.to(rdtype) if residual is not None or rdtype != x.dtype else x)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward, "__module__": module_path,
                                     "__qualname__": name})


FLA_LN, FLA_FUSED = "fla.modules.norm.layernorm_gated", "fla.modules.norm.fused_norm_gate"
MAMBA_LN = "mamba_ssm.ops.triton.layernorm_gated"
TRI_DAO = [
    _tri_dao_class(FLA_LN, "RMSNormGated", True, False),
    _tri_dao_class(FLA_LN, "LayerNormGated", False, True),
    _tri_dao_class("fla.modules.layernorm_gated", "RMSNormGated", True, False),  # fla before the norm/ split
    _tri_dao_class("fla.modules.norm.layernorm_gated.module", "LayerNormGated", False, True),  # fla after 0.6.0
    _tri_dao_class(MAMBA_LN, "RMSNorm", True, True),
    _tri_dao_class(MAMBA_LN, "LayerNorm", False, True),
]


def _rand_params(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(1 + 0.5 * torch.randn(p.shape, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "nogate"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
@pytest.mark.parametrize("group_size", [None, G], ids=["nogroups", "groups"])
@pytest.mark.parametrize("cls", TRI_DAO, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_tri_dao_stand_ins(cls, group_size, nbg, gate, dtype, device):
    orig = cls(N, eps=EPS, group_size=group_size, norm_before_gate=nbg, device=device, dtype=dtype)
    _rand_params(orig)
    holder = _Holder(orig)
    x = (0.03 * torch.randn(3, 5, N)).to(device=device, dtype=dtype)
    z = torch.empty(3, 5, N).uniform_(-3, 3).to(device=device, dtype=dtype) if gate else None
    out0, dx0, dz0, dp0 = _fwd_bwd(holder, x, z)
    assert swap_norms_(holder) == ["norm"]
    new = holder.norm
    assert new.weight is orig.weight and new.bias is orig.bias
    assert (new.eps, new.group_size, new.norm_before_gate) == (EPS, group_size, nbg)
    out1, dx1, dz1, dp1 = _fwd_bwd(holder, x, z)
    # same math, both fp32 with one final rounding: 2 roundings apart at most (bf16), and the
    # fp32 error of both
    half = dtype != torch.float32
    gs = group_size or N
    _assert_close(out1, out0, 2 * int(half) * U[BF16] + 2 * tol(torch.float32, gs), "out")
    grtol = 4 * int(half) * U[BF16] + 2 * grad_tol(torch.float32, gs)
    _assert_normwise(dx1, dx0, grtol, "dx")
    if gate:
        _assert_normwise(dz1, dz0, grtol, "dz")
    for a, b in zip(dp1, dp0):
        _assert_normwise(a, b, 4 * int(half) * U[BF16] + 2 * reduce_tol(torch.float32, 15, gs, dtype), "dparam")


FUSED = [
    _fla_fused_class(FLA_FUSED, "FusedRMSNormGated", True),
    _fla_fused_class(FLA_FUSED, "FusedLayerNormGated", False),
    _fla_fused_class("fla.modules.fused_norm_gate", "FusedRMSNormGated", True),
    _fla_fused_class("fla.modules.norm.fused_norm_gate.module", "FusedRMSNormSwishGate", True),
]


FUSED_VARIANTS = ["plain", "sigmoid", "no_affine", "bias", "residual", "prenorm", "prenorm_fp32_residual",
                  "prenorm_bf16_residual", "prenorm_residual_in_fp32"]


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cls,variant", [pytest.param(c, v, id=f"{c.__module__}.{c.__name__}-{v}")
                                         for c in FUSED for v in FUSED_VARIANTS
                                         if not (v == "bias" and "RMS" in c.__name__)])  # (RMS: no bias)
def test_fla_fused_stand_ins(cls, variant, dtype, device):
    """prenorm_bf16_residual with fp32 x: the fp32 sum x + residual is normalised, not the
    residual_out rounded to bf16 (that would be 2^-8 off: far outside the fp32 tolerance)."""
    kw = {"activation": "sigmoid"} if variant == "sigmoid" else {}
    if variant == "no_affine":
        kw["elementwise_affine"] = False
    if variant == "bias":
        kw["bias"] = True
    orig = cls(N, eps=EPS, device=device, dtype=dtype, **kw)
    _rand_params(orig)
    holder = _Holder(orig)
    x = (0.03 * torch.randn(4, N)).to(device=device, dtype=dtype)
    g = torch.empty(4, N).uniform_(-3, 3).to(device=device, dtype=dtype)
    res = (0.03 * torch.randn(4, N)).to(device=device, dtype=dtype)
    call = {
        "residual": dict(residual=res), "prenorm": dict(residual=res, prenorm=True),
        "prenorm_fp32_residual": dict(residual=res.float(), prenorm=True),
        "prenorm_bf16_residual": dict(residual=res.to(BF16), prenorm=True),
        "prenorm_residual_in_fp32": dict(prenorm=True, residual_in_fp32=True),
    }.get(variant, {})

    def run():
        xs = x.detach().clone().requires_grad_()
        gs = g.detach().clone().requires_grad_()
        extra = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in call.items()}
        holder.zero_grad(set_to_none=True)
        out = holder(xs, gs, **extra)
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o.double() * torch.randn(o.shape, generator=torch.Generator().manual_seed(i + 3),
                                             dtype=torch.float64).to(device)).sum() for i, o in enumerate(outs))
        loss.backward()
        grads = [xs.grad, gs.grad] + [v.grad for v in extra.values() if torch.is_tensor(v)]
        return [o.detach() for o in outs], grads, [p.grad for p in holder.parameters()]

    outs0, grads0, pg0 = run()
    assert swap_norms_(holder) == ["norm"]
    assert holder.norm.weight is orig.weight and holder.norm.activation == orig.activation
    outs1, grads1, pg1 = run()
    half = dtype != torch.float32
    assert len(outs1) == len(outs0)
    for i, (a, b) in enumerate(zip(outs1, outs0)):
        _assert_close(a, b, 2 * int(half) * U[BF16] + 2 * tol(torch.float32, N), f"out[{i}]")
    grtol = 4 * int(half) * U[BF16] + 2 * grad_tol(torch.float32, N)
    for i, (a, b) in enumerate(zip(grads1, grads0)):
        _assert_normwise(a, b, grtol, f"grad input {i}")
    for a, b in zip(pg1, pg0):
        _assert_normwise(a, b, 4 * int(half) * U[BF16] + 2 * reduce_tol(torch.float32, 4, N, dtype), "dparam")


# =================================================================== the real FLA / mamba_ssm (CUDA only)


@pytest.mark.parametrize("which", ["fla_rms", "fla_ln", "fla_fused", "mamba_rms"])
def test_real_triton_classes(which, device):
    if device != "cuda":
        pytest.skip("FLA / mamba_ssm modules run Triton kernels: CUDA only")
    if which.startswith("fla"):
        pytest.importorskip("fla")
        from fla.modules import FusedRMSNormGated
        try:
            from fla.modules.norm.layernorm_gated import LayerNormGated, RMSNormGated
        except ImportError:  # fla before the modules/norm/ split
            from fla.modules.layernorm_gated import LayerNormGated, RMSNormGated
        orig = {"fla_rms": lambda: RMSNormGated(N, eps=EPS, group_size=G),
                "fla_ln": lambda: LayerNormGated(N, eps=EPS, group_size=G, norm_before_gate=False),
                "fla_fused": lambda: FusedRMSNormGated(N, eps=EPS)}[which]()
    else:
        pytest.importorskip("mamba_ssm")
        from mamba_ssm.ops.triton.layernorm_gated import RMSNorm
        orig = RMSNorm(N, eps=EPS, group_size=G, norm_before_gate=False)
    orig = orig.to(device)
    _rand_params(orig)
    holder = _Holder(orig)
    x = 0.03 * torch.randn(3, 5, N, device=device)
    z = torch.empty(3, 5, N, device=device).uniform_(-3, 3)
    out0, dx0, dz0, dp0 = _fwd_bwd(holder, x, z)
    assert swap_norms_(holder) == ["norm"]
    out1, dx1, dz1, dp1 = _fwd_bwd(holder, x, z)
    _assert_close(out1, out0, 2 * tol(torch.float32, N), "out")
    _assert_normwise(dx1, dx0, 2 * grad_tol(torch.float32, N), "dx")
    _assert_normwise(dz1, dz0, 2 * grad_tol(torch.float32, N), "dz")
