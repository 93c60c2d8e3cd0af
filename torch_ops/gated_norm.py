"""Gated RMSNorm / LayerNorm: the eager reference, the fake kernels and autograd of
`torch.ops.gatednorm.gated_norm_*`, and the drop-in functional API of FLA,
mamba_ssm, sglang and vLLM.

The math (per row and group of `group_size` columns, computed in fp32, fp64 for fp64):
    v   = x * act(z)          if z is given and not norm_before_gate, else x
    y0  = (v - mean(v)) * rstd * weight + bias        (mean = 0 for RMSNorm)
    out = y0 * act(z)         if z is given and norm_before_gate, else y0
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor
from torch._C import _functorch

from . import _C  # registers torch.ops.gatednorm; its direct entry points
from . import dtensor as _dtensor
from ._vmap import rows_rule

_ops = torch.ops.gatednorm
ACTIVATIONS = ("silu", "swish", "sigmoid")


# ---------------------------------------------------------------- reference

def _act(z: Tensor, activation: str) -> Tensor:
    if activation in ("silu", "swish"):
        return z * torch.sigmoid(z)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def gated_norm_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                   is_rms_norm=False, activation="swish", upcast=True):
    """Eager PyTorch reference. With upcast, computes in fp32 (fp64 stays fp64)."""
    dtype = x.dtype
    if upcast:
        acc = torch.promote_types(x.dtype, torch.float32)
        x = x.to(acc)
        z = z.to(acc) if z is not None else None
        weight = weight.to(acc) if weight is not None else None
        bias = bias.to(acc) if bias is not None else None
    n = x.shape[-1]
    g = n if group_size is None else group_size
    if z is not None and not norm_before_gate:
        x = x * _act(z, activation)
    xg = x.unflatten(-1, (n // g, g))
    if not is_rms_norm:
        xg = xg - xg.mean(dim=-1, keepdim=True)
    y = (xg * torch.rsqrt(xg.square().mean(dim=-1, keepdim=True) + eps)).flatten(-2)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    if z is not None and norm_before_gate:
        y = y * _act(z, activation)
    return y.to(dtype)


def rms_norm_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, upcast=True):
    """mamba_ssm's `rms_norm_ref` (silu gate)."""
    return gated_norm_ref(x, weight, bias, z, eps, group_size, norm_before_gate, True, "silu", upcast)


def layer_norm_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, upcast=True,
                   is_rms_norm=False, activation="swish"):
    """LayerNorm (or RMS) reference with either gate order."""
    return gated_norm_ref(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, upcast)


# ---------------------------------------------------------------- fake kernels

def _stat_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _stats_like(x, group_size, is_rms_norm):
    n = x.shape[-1]
    nstat = (x.numel() // n) * (n // (n if group_size is None else group_size))
    rstd = x.new_empty((nstat,), dtype=_stat_dtype(x))
    mean = x.new_empty((0 if is_rms_norm else nstat,), dtype=_stat_dtype(x))
    return mean, rstd


def _fake_forward(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation):
    mean, rstd = _stats_like(x, group_size, is_rms_norm)
    return torch.empty_like(x, memory_format=torch.contiguous_format), mean, rstd


torch.library.register_fake("gatednorm::gated_norm", _fake_forward)
torch.library.register_fake("gatednorm::gated_norm_fwd", _fake_forward)


@torch.library.register_fake("gatednorm::gated_norm_infer")
def _(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


torch.library.register_vmap("gatednorm::gated_norm_infer",
                            rows_rule(_ops.gated_norm_infer.default, rows=(0, 3), params=(1, 2)))


def _ngroups(args):
    n, group_size = args[0].shape[-1], args[5]
    return 1 if group_size is None else n // group_size


for _name in ("gated_norm", "gated_norm_fwd"):
    torch.library.register_vmap(f"gatednorm::{_name}", rows_rule(getattr(_ops, _name).default, rows=(0, 3),
                                                                 params=(1, 2), stats=(1, 2), ngroups=_ngroups))


@torch.library.register_fake("gatednorm::gated_norm_fwd_out")
def _(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out):
    return _stats_like(x, group_size, is_rms_norm)


def _new(t: Optional[Tensor], like: Tensor, cond: bool = True):
    if t is None or not cond:
        return None
    return torch.empty_like(like, memory_format=torch.contiguous_format)


@torch.library.register_fake("gatednorm::gated_norm_bwd")
def _(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation,
      recompute_output):
    dw = None if weight is None else weight.new_empty(weight.shape)
    db = None if bias is None else bias.new_empty(bias.shape)
    return _new(x, x), dw, db, _new(z, x), _new(x, x, recompute_output)


@torch.library.register_fake("gatednorm::gated_norm_bwd_out")
def _(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation, dx, dz,
      out, dw=None, db=None):
    return None


# ---------------------------------------------------------------- autograd

def _setup_context(ctx, inputs, output):
    x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, z, mean, rstd)
    ctx.config = (eps, group_size, norm_before_gate, is_rms_norm, activation)
    ctx.mark_non_differentiable(mean, rstd)
    # Undefined gradients for mean / rstd arrive as None, not as tensors of zeros: with
    # materialized grads autograd launched a fill of rstd's size (a float per row and group;
    # 2.5 us of qwen3next_prefill's forward+backward on an H100) that the backward never reads.
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, _dmean, _drstd):
    if dout is None:  # an undefined gradient of out (gradcheck's check_undefined_grad): zero gradients
        return (None,) * 9
    x, weight, bias, z, mean, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad
    if _grad_enabled():  # backward(create_graph=True): a gradient that is itself differentiable
        return (*_differentiable_grads(dout, (x, weight, bias, z), need[:4], ctx.config), None, None, None, None, None)
    dx, dw, db, dz, _ = _ops.gated_norm_bwd(dout, x, weight, bias, z, mean, rstd, *ctx.config, False)
    return (dx if need[0] else None, dw if need[1] else None, db if need[2] else None,
            dz if need[3] else None, None, None, None, None, None)


def _differentiable_grads(dout, inputs, need, config):
    """The input gradients as a graph (double backward: gradient penalties, MAML, Hessian-
    vector products): autograd through the eager reference, recomputed from the saved
    inputs. The backward kernel's result is not differentiable (its op has no autograd),
    so with it the second derivatives would silently be zero. Same math, fp32 (fp64)."""
    eps, group_size, norm_before_gate, is_rms_norm, activation = config
    wrt = [t for t, n in zip(inputs, need) if n]
    y = gated_norm_ref(*inputs, eps, group_size, norm_before_gate, is_rms_norm, activation)
    grads = iter(torch.autograd.grad(y, wrt, dout, create_graph=True, allow_unused=True))
    return tuple(next(grads) if n else None for n in need)


torch.library.register_autograd("gatednorm::gated_norm", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------- functional API

# Host time per call is what a decode step pays for every norm (docs/design.md, "Host
# time per eager call"). When no gradient is needed the functions below compute through
# `gated_norm_infer` (no autograd kernel in its call path, no statistics allocated),
# preferably through `_C.gated_norm_infer`: the same implementation without the
# dispatcher, which returns NotImplemented whenever the op call could differ (a mode, a
# tensor subclass, the profiler, a gradient needed, an argument of another type:
# csrc/eager.cpp). Then the op is called through the packet's C++ entry point (`_op`),
# what the packet's Python `__call__` forwards to, one Python frame less. Under
# torch.compile the packet itself is called: dynamo traces op packets, not builtins.
_grad_enabled = torch.is_grad_enabled
_compiling = torch.compiler.is_compiling


def _entry(packet):
    """The C++ entry point behind `packet(...)` (the packet itself if a torch lacks it)."""
    return getattr(packet, "_op", packet)


_INFER = _entry(_ops.gated_norm_infer)
_DIRECT_INFER = _C.gated_norm_infer


# Forward-mode AD (a `torch.autograd.forward_ad` dual level) and the torch.func transforms
# that differentiate (grad, vjp, jacrev, jvp, jacfwd, hessian) get the eager reference, which
# they differentiate themselves: our ops have no forward-mode formula (the tangent would be
# silently dropped), and torch.func cannot run an op whose autograd comes from
# `register_autograd` ("must override the setup_context staticmethod"). Same math, computed
# by PyTorch ops (fp32, fp64 for fp64): results within the rounding of the kernels'.
# vmap (through the rules of _vmap.py) and functionalize run the ops.
_DIFFERENTIATING = (_functorch.TransformType.Grad, _functorch.TransformType.Jvp)


def _transform_differentiates() -> bool:
    """Is forward-mode AD or a differentiating torch.func transform active?"""
    if _forward_ad._current_level >= 0:
        return True
    if _functorch.peek_interpreter_stack() is None:
        return False
    return any(i.key() in _DIFFERENTIATING for i in _functorch.get_interpreter_stack())


def _needs_grad(x, weight, bias, z):
    """Will autograd need the backward of this call?"""
    return _grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)
                                or (bias is not None and bias.requires_grad) or (z is not None and z.requires_grad))


def _forward_op(x, weight, bias, z):
    """The differentiable op when autograd will need it, else the one without an
    autograd kernel in its call path (much less host time per call); both return
    (out, mean, rstd)."""
    return _ops.gated_norm if _needs_grad(x, weight, bias, z) else _ops.gated_norm_fwd


def layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
                 activation="swish"):
    """FLA / mamba_ssm `layernorm_fn`; differentiable."""
    if _compiling():
        infer = _ops.gated_norm_infer
    else:
        out = _DIRECT_INFER(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)
        if out is not NotImplemented:
            return out
        if _transform_differentiates():
            return gated_norm_ref(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)
        _dtensor.maybe_register(x, z, weight, bias)
        infer = _INFER
    if _needs_grad(x, weight, bias, z):
        return _ops.gated_norm(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)[0]
    return infer(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, activation="swish"):
    """FLA / mamba_ssm `rmsnorm_fn`; differentiable."""
    return layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, True, activation)


def rms_norm_gated(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
                   activation="swish"):
    """sglang / vLLM `rms_norm_gated` (they call it with keywords; note: LayerNorm by default)."""
    return layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


class LayerNormFn:
    """Drop-in for the Triton `LayerNormFn` autograd.Function: `LayerNormFn.apply(...)`."""

    @staticmethod
    def apply(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
              activation="swish"):
        return layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


def stats_ref(x, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False, activation="swish"):
    """(mean, rstd) of the reference, laid out as the ops return them: fp32 (fp64 for fp64),
    [ngroups * M] with element g * M + r (group-major); mean is empty for RMSNorm. Not
    differentiable (the ops mark them so)."""
    acc = _stat_dtype(x)
    n = x.shape[-1]
    g = n if group_size is None else group_size
    v = x.detach().reshape(-1, n).to(acc)
    if z is not None and not norm_before_gate:
        v = v * _act(z.detach().reshape(-1, n).to(acc), activation)
    v = v.unflatten(-1, (n // g, g)) if g else v.reshape(v.shape[0], 0, 0)
    mean = v.mean(dim=-1)
    c = v if is_rms_norm else v - mean.unsqueeze(-1)
    rstd = torch.rsqrt(c.square().mean(dim=-1) + eps)
    return (v.new_empty((0,)) if is_rms_norm else mean.t().reshape(-1)), rstd.t().reshape(-1)


def reference_forward(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation):
    """(out, mean, rstd) as `gated_norm_fwd` returns them, computed by the eager reference
    (what the statistics-returning functions run under the differentiating transforms)."""
    cfg = (eps, group_size, norm_before_gate, is_rms_norm, activation)
    mean, rstd = stats_ref(x, z, *cfg)
    return gated_norm_ref(x, weight, bias, z, *cfg), mean, rstd


def layer_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,
                   is_rms_norm=False, activation="swish"):
    """sglang's `_layer_norm_fwd` -> (out, mean or None, rstd)."""
    args = (x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)
    if _transform_differentiates():  # the reference: (_transform_differentiates says why)
        y, mean, rstd = reference_forward(*args)
        out = y if out is None else out.copy_(y)
        return out, (None if is_rms_norm else mean), rstd
    _dtensor.maybe_register(x, z, weight, bias)
    if out is None:
        out, mean, rstd = _forward_op(x, weight, bias, z)(*args)
    else:
        mean, rstd = _ops.gated_norm_fwd_out(*args, out)
    return out, (None if is_rms_norm else mean), rstd


def layer_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z=None, group_size=None, norm_before_gate=True,
                   is_rms_norm=False, recompute_output=False, dz=None, out=None, activation="swish"):
    """The Triton `_layer_norm_bwd` -> (dx, dw, db, dz) or (dx, dw, db, dz, out) with recompute_output.
    `dz` / `out` given: written in place (row-strided views are fine).

    Differentiable where Triton's is not: when an argument requires grad under grad mode,
    or under forward-mode AD / a differentiating torch.func transform, the gradients are
    computed as a graph through the eager reference (mean and rstd are then recomputed
    from x and z, not read)."""
    config = (eps, group_size, norm_before_gate, is_rms_norm, activation)
    if _transform_differentiates() or (_grad_enabled() and dy.requires_grad) or _needs_grad(x, weight, bias, z):
        grads = _grads_ref(dy, x, weight, bias, z, config, recompute_output)
        if dz is not None and z is not None:
            grads[3] = dz.copy_(grads[3])
        if out is not None and recompute_output:
            grads[4] = out.copy_(grads[4])
        return tuple(grads) if recompute_output else tuple(grads[:4])
    if mean is None:
        mean = rstd.new_empty((0,))
    _dtensor.maybe_register(dy, x, z, weight, bias)
    if dz is None and out is None:
        dx, dw, db, dz, out = _ops.gated_norm_bwd(dy, x, weight, bias, z, mean, rstd, *config, recompute_output)
    else:
        if z is not None and dz is None:
            dz = torch.empty_like(x, memory_format=torch.contiguous_format)
        if recompute_output and out is None:
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
        dw = None if weight is None else torch.empty_like(weight, memory_format=torch.contiguous_format)
        db = None if bias is None else torch.empty_like(bias, memory_format=torch.contiguous_format)
        _ops.gated_norm_bwd_out(dy, x, weight, bias, z, mean, rstd, *config, dx, dz,
                                out if recompute_output else None, dw, db)
    return (dx, dw, db, dz, out) if recompute_output else (dx, dw, db, dz)


def _grads_ref(dy, x, weight, bias, z, config, recompute_output):
    """[dx, dw, db, dz, out or None] of the reference by torch.func.vjp, which composes with
    autograd and with the torch.func transforms: the gradients are themselves differentiable."""
    given = [t is not None for t in (x, weight, bias, z)]

    def f(*tensors):
        it = iter(tensors)
        return gated_norm_ref(*(next(it) if g else None for g in given), *config)

    y, vjp_fn = torch.func.vjp(f, *(t for t in (x, weight, bias, z) if t is not None))
    it = iter(vjp_fn(dy.to(y.dtype)))
    return [next(it) if g else None for g in given] + [y if recompute_output else None]
