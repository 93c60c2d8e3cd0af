"""Fused add + RMSNorm: the eager reference, fake kernels and autograd of
`torch.ops.gatednorm.{rms_norm, rms_norm_out, fused_add_rms_norm, add_rms_norm}`,
the functional API (sgl-kernel / vLLM / FlashInfer names) and a module.

Per row (csrc/gatednorm.h has the contract):
    h   = x + residual               (fp32 sum, stored in residual's dtype)
    out = h * rsqrt(mean(h^2) + eps) * w'     w' = w, or 1 + w with gemma
The normalised h is the STORED (rounded) residual, as in vLLM and unfused PyTorch:
the next layer sees exactly the residual that was normalised.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _C  # registers torch.ops.gatednorm; its direct entry points
from . import dtensor as _dtensor
from ._vmap import rows_rule
from .gated_norm import _compiling, _entry, _grad_enabled, _transform_differentiates

_ops = torch.ops.gatednorm


# ---------------------------------------------------------------- reference

def rms_norm_ref(x, weight, eps=1e-6, gemma=False):
    """Eager RMSNorm in fp32 (fp64 stays fp64), output in x's dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    h = x.to(acc)
    y = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:  # no weight: w' = 1 in both forms
        y = y * (1 + weight.to(acc) if gemma else weight.to(acc))
    return y.to(x.dtype)


def add_rms_norm_ref(x, residual, weight, eps=1e-6, residual_in_fp32=False, gemma=False):
    """-> (out, residual_out): the sum rounded to the residual's dtype (fp32 with
    residual_in_fp32) is what gets normalised."""
    # The sum is fp32 unless x is fp64 (the kernels' contract, csrc/gatednorm.h).
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = (x.to(acc) + residual.to(acc)).to(torch.float32 if residual_in_fp32 else residual.dtype)
    return rms_norm_ref(h, weight, eps, gemma).to(x.dtype), h


# ---------------------------------------------------------------- fake kernels

def _stat_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.register_fake("gatednorm::rms_norm")
def _(input, weight, eps, gemma=False):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake("gatednorm::rms_norm_out")
def _(input, weight, eps, out, gemma=False):
    return None


@torch.library.register_fake("gatednorm::fused_add_rms_norm")
def _(input, residual, weight, eps, gemma=False):
    return None


@torch.library.register_fake("gatednorm::add_rms_norm")
def _(x, residual, weight, eps, residual_in_fp32=False, gemma=False):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    res = torch.empty_like(x, dtype=torch.float32 if residual_in_fp32 else residual.dtype,
                           memory_format=torch.contiguous_format)
    rows = x.numel() // x.shape[-1]
    return out, res, x.new_empty((rows,), dtype=_stat_dtype(x))


@torch.library.register_fake("gatednorm::add_rms_norm_infer")
def _(x, residual, weight, eps, residual_in_fp32=False, gemma=False):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    res = torch.empty_like(x, dtype=torch.float32 if residual_in_fp32 else residual.dtype,
                           memory_format=torch.contiguous_format)
    return out, res


torch.library.register_vmap("gatednorm::rms_norm", rows_rule(_ops.rms_norm.default, rows=(0,), params=(1,)))
torch.library.register_vmap("gatednorm::add_rms_norm_infer",
                            rows_rule(_ops.add_rms_norm_infer.default, rows=(0, 1), params=(2,)))
torch.library.register_vmap("gatednorm::add_rms_norm",
                            rows_rule(_ops.add_rms_norm.default, rows=(0, 1), params=(2,), stats=(2,)))


@torch.library.register_fake("gatednorm::add_rms_norm_bwd")
def _(dout, dresidual_out, h, weight, rstd, gemma):
    dw = None if weight is None else weight.new_empty(weight.shape)
    return (torch.empty_like(dout, memory_format=torch.contiguous_format),
            torch.empty_like(h, memory_format=torch.contiguous_format), dw)


# ---------------------------------------------------------------- autograd

def _setup_context(ctx, inputs, output):
    x, residual, weight, eps, residual_in_fp32, gemma = inputs
    _, residual_out, rstd = output
    ctx.save_for_backward(residual_out, weight, rstd)
    ctx.gemma = gemma
    ctx.eps = eps
    ctx.residual_dtype = residual.dtype
    ctx.x_dtype = x.dtype
    ctx.mark_non_differentiable(rstd)
    # An unused output's gradient arrives as None, not as a tensor of zeros the
    # backward would have to read (the residual stream's often is unused: last layer).
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dresidual_out, _drstd):
    h, weight, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad
    if torch.is_grad_enabled():  # backward(create_graph=True): (gated_norm.py, _differentiable_grads)
        return _differentiable_grads(ctx, dout, dresidual_out, h, weight)
    if dout is None:  # only residual_out was used (rare): the kernel needs a dout
        dout = torch.zeros(h.shape, dtype=ctx.x_dtype, device=h.device)
    dx, dres, dw = _ops.add_rms_norm_bwd(dout, dresidual_out, h, weight, rstd, ctx.gemma)
    return (dx if need[0] else None, dres.to(ctx.residual_dtype) if need[1] else None,
            dw if need[2] else None, None, None, None)


def _differentiable_grads(ctx, dout, dresidual_out, h, weight):
    """The gradients as a graph, through the eager reference on the saved residual_out h
    (out = rmsnorm(h) * w', h = x + residual: dx = dresidual = dh). h is this op's own
    output, so the graph reaches x and residual through its node."""
    need = ctx.needs_input_grad
    wrt = [h] + ([weight] if need[2] else [])
    dh = torch.zeros_like(h) if dresidual_out is None else dresidual_out.to(h.dtype)
    if dout is not None:
        out = rms_norm_ref(h, weight, ctx.eps, ctx.gemma).to(ctx.x_dtype)
        grads = torch.autograd.grad(out, wrt, dout, create_graph=True, allow_unused=True)
        dh = dh + grads[0]
        dw = grads[1] if need[2] else None
    else:
        dw = torch.zeros_like(weight) if need[2] else None
    return (dh.to(ctx.x_dtype) if need[0] else None, dh.to(ctx.residual_dtype) if need[1] else None,
            dw, None, None, None)


torch.library.register_autograd("gatednorm::add_rms_norm", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------- functional API
# Eager calls go first to the ops' direct entry points in `_C` (no dispatcher; they
# return NotImplemented whenever the op call could differ), then through the ops' C++
# entry points; without a gradient to compute, to the op with no autograd kernel
# (docs/design.md, "Host time per eager call").

_RMS_NORM = _entry(_ops.rms_norm)
_RMS_NORM_OUT = _entry(_ops.rms_norm_out)
_FUSED_ADD_RMS_NORM = _entry(_ops.fused_add_rms_norm)
_ADD_RMS_NORM_INFER = _entry(_ops.add_rms_norm_infer)


def rms_norm(input: Tensor, weight, eps: float = 1e-6, out: Tensor | None = None, gemma: bool = False) -> Tensor:
    """sgl-kernel / FlashInfer `rmsnorm(input, weight, eps, out=None)` (inference)."""
    c = _compiling()
    if out is None:
        if not c:
            y = _C.rms_norm(input, weight, eps, gemma)
            if y is not NotImplemented:
                return y
            if _transform_differentiates():  # (gated_norm.py says why)
                return rms_norm_ref(input, weight, eps, gemma)
            _dtensor.maybe_register(input, weight)
        if _grad_enabled() and (input.requires_grad or (weight is not None and weight.requires_grad)):
            return _differentiable_rms_norm(input, weight, eps, gemma)
        return (_ops.rms_norm if c else _RMS_NORM)(input, weight, eps, gemma)
    if not c and _transform_differentiates():
        return out.copy_(rms_norm_ref(input, weight, eps, gemma))
    if not c and _dtensor.any_dtensor(input, out, weight):  # in place on the local rows (dtensor.py)
        (x, o), w = _dtensor.local_rows("rms_norm", {"input": input, "out": out}, weight)
        _RMS_NORM_OUT(x, w, eps, o, gemma)
        return out
    (_ops.rms_norm_out if c else _RMS_NORM_OUT)(input, weight, eps, out, gemma)
    return out


def _differentiable_rms_norm(input, weight, eps, gemma):
    """rms_norm when autograd needs its backward: the gated family's differentiable op
    without gate, bias or groups is this RMSNorm (same fp32 math). Gemma's 1 + w is formed
    in fp32 (fp64), as the kernels form it, and differentiated by autograd."""
    if gemma and weight is not None:
        weight = 1 + weight.to(torch.promote_types(weight.dtype, torch.float32))
    return _ops.gated_norm(input, weight, None, None, eps, None, True, True, "silu")[0]


def fused_add_rms_norm(input: Tensor, residual: Tensor, weight, eps: float = 1e-6, gemma: bool = False) -> None:
    """sgl-kernel `fused_add_rmsnorm` / vLLM `fused_add_rms_norm`, in place:
    residual <- input + residual; input <- rmsnorm(residual) * weight. Not
    differentiable: under grad mode, input and residual must not require grad."""
    if _compiling():
        _ops.fused_add_rms_norm(input, residual, weight, eps, gemma)
    elif _C.fused_add_rms_norm(input, residual, weight, eps, gemma) is not NotImplemented:
        pass
    elif _transform_differentiates():  # (gated_norm.py says why)
        out, h = add_rms_norm_ref(input, residual, weight, eps, False, gemma)
        residual.copy_(h)
        input.copy_(out)
    elif _dtensor.any_dtensor(input, residual, weight):  # in place on the local rows (dtensor.py)
        (x, r), w = _dtensor.local_rows("fused_add_rms_norm", {"input": input, "residual": residual}, weight)
        _FUSED_ADD_RMS_NORM(x, r, w, eps, gemma)
    else:
        _FUSED_ADD_RMS_NORM(input, residual, weight, eps, gemma)


def gemma_rms_norm(input, weight, eps=1e-6, out=None):
    """FlashInfer `gemma_rmsnorm`: weight applied as 1 + w."""
    return rms_norm(input, weight, eps, out, gemma=True)


def gemma_fused_add_rms_norm(input, residual, weight, eps=1e-6):
    """FlashInfer `gemma_fused_add_rmsnorm`: weight applied as 1 + w, in place."""
    fused_add_rms_norm(input, residual, weight, eps, gemma=True)


def add_rms_norm(x: Tensor, residual: Tensor, weight, eps: float = 1e-6, residual_in_fp32: bool = False,
                 gemma: bool = False):
    """Differentiable, out of place -> (out, residual_out); gradients flow into x,
    residual and weight, including the residual stream's own incoming gradient.
    Without a gradient to compute: `add_rms_norm_infer` (no autograd kernel, no rstd)."""
    compiling = _compiling()
    if not compiling:
        outs = _C.add_rms_norm_infer(x, residual, weight, eps, residual_in_fp32, gemma)
        if outs is not NotImplemented:
            return outs
        if _transform_differentiates():  # (gated_norm.py says why)
            return add_rms_norm_ref(x, residual, weight, eps, residual_in_fp32, gemma)
        _dtensor.maybe_register(x, residual, weight)
    if _grad_enabled() and (x.requires_grad or residual.requires_grad
                            or (weight is not None and weight.requires_grad)):
        out, residual_out, _ = _ops.add_rms_norm(x, residual, weight, eps, residual_in_fp32, gemma)
        return out, residual_out
    return (_ops.add_rms_norm_infer if compiling else _ADD_RMS_NORM_INFER)(
        x, residual, weight, eps, residual_in_fp32, gemma)


class FusedAddRMSNorm(nn.Module):
    """Pre-norm block RMSNorm: `forward(x, residual=None)` returns the normalised x,
    or `(out, residual_out)` with the residual added first. Trainable."""

    def __init__(self, hidden_size, eps=1e-6, gemma=False, residual_in_fp32=False, device=None, dtype=None):
        super().__init__()
        self.eps, self.gemma, self.residual_in_fp32 = eps, gemma, residual_in_fp32
        init = torch.zeros if gemma else torch.ones  # gemma's weight is stored as w - 1
        self.weight = nn.Parameter(init(hidden_size, device=device, dtype=dtype))

    def forward(self, x, residual=None):
        if residual is None:
            return rms_norm(x, self.weight, self.eps, gemma=self.gemma)
        return add_rms_norm(x, residual, self.weight, self.eps, self.residual_in_fp32, self.gemma)
