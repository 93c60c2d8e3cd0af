"""Replacements for sglang's gated norms, with the signatures and semantics of the functions
they replace (the table in `targets.py` says where each one goes):

- the layernorm_gated family (Tri Dao's file, forward-only in sglang): `layer_norm_fwd`
  (`_layer_norm_fwd`), `rms_norm_gated` (keyword-only), `LayerNormFn`, `layernorm_fn`,
  `rmsnorm_fn`, and the vLLM copy's positional `mamba_rms_norm_gated`;
- the fused_norm_gate family (FLA's: norm, then act(g); the output is written into x):
  `layer_norm_gated_fwd`, `LayerNormGatedFunction`, `fused_rms_norm_gated`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ... import _C
from ...gated_norm import _compiling, _forward_op, _transform_differentiates, reference_forward
from ...gated_norm import layernorm_fn as _layernorm_fn

_ops = torch.ops.gatednorm


# =============================================================================================
# The layernorm_gated family
# =============================================================================================

def _stats32(t: Optional[Tensor]) -> Optional[Tensor]:
    """sglang's statistics are fp32 always (ours are fp64 for fp64 inputs)."""
    return t if t is None or t.dtype == torch.float32 else t.float()


def _z_rows(z: Optional[Tensor], m: int, n: int, where: str) -> Optional[Tensor]:
    """A [T, H, N] gate of a [T*H, N] input (sglang >= 0.5.16: rows of a fused projection,
    row r = token r // H, head r % H) as [T*H, N] rows: a view when the strides allow it, else
    a copy (same values)."""
    if z is None or z.dim() != 3:
        return z
    if z.shape[0] * z.shape[1] != m or z.shape[2] != n:
        raise ValueError(f"gatednorm ({where}): a 3-D z must be [T, H, N] with T*H = {m} rows of x and "
                         f"N = {n}, got {tuple(z.shape)}")
    return z.reshape(m, n)


def _fp8_per_token(y: Tensor, heads: int):
    """sglang's `quant_heads` epilogue (qwen3_5's FP8 out_proj): one token = `heads` rows of y;
    scale = max(max|y|, 1e-10) / 448 of the token (y as rounded to its dtype), q = clamp(y * (1 /
    scale), -448, 448) in float8_e4m3fn. Returns (q [T, heads*N], scale [T, 1] fp32)."""
    m, n = y.shape
    t = y.reshape(m // heads, heads * n).float()
    s = t.abs().amax(dim=1, keepdim=True).clamp_min(1e-10) / 448.0
    q = (t * (1.0 / s)).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q, s


def layer_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,
                   is_rms_norm=False, activation: str = "swish", quant_heads: int = 0):
    """sglang's `_layer_norm_fwd` -> (out, mean or None (RMS), rstd), statistics fp32 [ngroups*M]
    (element g*M + r). z: x's shape, or [T, H, N] for x = [T*H, N]. `out` given: written in place
    (rows may be strided). `quant_heads` (newer releases, e.g. 0.5.23): returns ((q, scale), mean, rstd) with the
    per-token FP8 quantisation of the output (norm by gatednorm, quantisation in eager PyTorch)."""
    n = x.shape[-1]
    m = x.numel() // n if n else 0
    z = _z_rows(z, m, n, "_layer_norm_fwd")
    args = (x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)
    # forward AD / differentiating torch.func transforms: the reference (gated_norm.py says why)
    forward = reference_forward if _transform_differentiates() else _forward_op(x, weight, bias, z)
    if quant_heads:
        if x.dim() != 2 or (group_size is not None and group_size != n) or m % quant_heads:
            raise ValueError(f"gatednorm (_layer_norm_fwd): quant_heads={quant_heads} needs a 2-D x with one group "
                             f"and rows divisible by quant_heads, got x {tuple(x.shape)}, group_size={group_size}")
        y, mean, rstd = forward(*args)
        result = _fp8_per_token(y, quant_heads)
    elif out is None:
        result, mean, rstd = forward(*args)
    elif forward is reference_forward:
        y, mean, rstd = forward(*args)
        result = out.copy_(y)
    else:
        mean, rstd = _ops.gated_norm_fwd_out(*args, out)
        result = out
    return result, (None if is_rms_norm else _stats32(mean)), _stats32(rstd)


def _gated(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation):
    """sglang's `rms_norm_gated` body: [..., N] rows, a gate of x's shape or [T, H, N] (x 2-D)."""
    shape = x.shape
    n = shape[-1]
    if z is not None and z.shape != shape:
        z = _z_rows(z, x.numel() // n if n else 0, n, "rms_norm_gated") if x.dim() == 2 else z
    # torch_ops' layernorm_fn: gated_norm_infer (no statistics: sglang drops them here)
    # unless a gradient is needed
    return _layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


def rms_norm_gated(*, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
                   activation: str = "swish"):
    """sglang's keyword-only `rms_norm_gated` (layernorm_gated.py): LayerNorm by default."""
    return _gated(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


class LayerNormFn:
    """sglang's `LayerNormFn` (a forward-only autograd.Function): `LayerNormFn.apply(...)`.
    Ours is differentiable (sglang's has no backward)."""

    @staticmethod
    def apply(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
              activation: str = "swish"):
        return _gated(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


def layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
                 activation: str = "swish"):
    """sglang's `layernorm_fn`."""
    return _gated(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)


def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
               activation: str = "swish"):
    """sglang v0.5.3's `rmsnorm_fn`."""
    return _gated(x, weight, bias, z, eps, group_size, norm_before_gate, True, activation)


def mamba_rms_norm_gated(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """`rms_norm_gated` of the vLLM copy `sglang.srt.layers.attention.mamba.ops.layernorm_gated`
    (v0.5.15 and older): positional, always RMS, silu gate."""
    return _gated(x, weight, bias, z, eps, group_size, norm_before_gate, True, "silu")


# =============================================================================================
# The fused_norm_gate family (FLA's; norm, then act(g); writes into x)
# =============================================================================================

def layer_norm_gated_fwd(x, g, weight, bias, activation: str = "swish", eps: float = 1e-5, residual=None,
                         out_dtype=None, residual_dtype=None, is_rms_norm: bool = False, g_strided=None):
    """fused_norm_gate's `layer_norm_gated_fwd` -> (y, mean or None (RMS), rstd, residual_out or x).
    x, residual: [T, D]; g: [T, D] rows (with `g_strided`, the [.., H, D] tensor whose rows are
    token*H + head). h = x (+ residual, summed in fp32: the fp32 sum is normalised, as the Triton
    kernel does), y = norm(h) * weight + bias, times act(g). y is written INTO x when out_dtype is
    None (sglang's in-place contract), else into a new tensor of out_dtype. residual_out: h in
    residual's dtype with a residual, h in residual_dtype when that differs from x's, else x itself
    (which then holds y). Forward only, as sglang's."""
    with torch.no_grad():
        if residual is not None:
            residual_dtype = residual.dtype
        d = x.shape[-1]
        if g_strided is not None or g.shape != x.shape:
            g = g.reshape(-1, d)
        y = x if out_dtype is None else torch.empty_like(x, dtype=out_dtype)
        residual_out = None
        src, gate = x, g
        if residual is not None:
            if residual.shape != x.shape:
                raise ValueError(f"gatednorm (layer_norm_gated_fwd): residual must be x's shape {tuple(x.shape)}, "
                                 f"got {tuple(residual.shape)}")
            acc = torch.promote_types(torch.promote_types(x.dtype, residual.dtype), torch.float32)
            src = x.to(acc) + residual.to(acc)
            residual_out = src.to(residual_dtype)
        elif residual_dtype is not None and residual_dtype != x.dtype:
            residual_out = x.to(residual_dtype)
        if src.dtype != y.dtype and src.dtype != torch.float64:
            src = src.float()  # one rounding, to y's dtype, at the end
        if gate.dtype != src.dtype:
            gate = gate.to(src.dtype)
        args = (src, weight, bias, gate, eps, None, True, is_rms_norm, activation)
        if src.dtype == y.dtype and _rows_writable(y):
            # Straight into y. Without a residual, y IS src (= x, sglang's in-place write): the
            # kernels read each element before the same thread writes it, so out == x is exact
            # (tests/test_inplace_out.py checks it on every device).
            mean, rstd = _ops.gated_norm_fwd_out(*args, y)
        else:
            # src is the fp32 sum (or upcast x) and y narrower: the op writes its input's dtype
            # only, so this copy is the one rounding to y's dtype. (Or y's layout cannot be
            # written by rows.)
            o, mean, rstd = _ops.gated_norm_fwd(*args)
            y.copy_(o)
        return y, (None if is_rms_norm else _stats32(mean)), _stats32(rstd), (
            residual_out if residual_out is not None else x)


def _rows_writable(t: Tensor) -> bool:
    """What the `*_out` ops accept as an output (else they raise): 2-D, unit-stride last
    dimension, rows that do not overlap."""
    return (t.dim() == 2 and t.numel() > 0 and (t.stride(1) == 1 or t.shape[1] == 1)
            and (t.shape[0] == 1 or t.stride(0) >= t.shape[1]))


def _fused_apply(x, g, weight, bias, activation, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                 is_rms_norm=False):
    # Qwen3-Next's decode / prefill form (no residual, a contiguous x, g of its dtype and
    # shape): in place into x by the direct entry point, what layer_norm_gated_fwd below
    # computes, without the reshapes, its statistics, its no_grad block and the op call
    # (CPU, 4 x 128 bf16: 9.6 -> 2.0 us a call). NotImplemented (a mode, a subclass, ...)
    # or torch.compile: the general path.
    if (residual is None and not residual_in_fp32 and g.shape == x.shape and g.dtype == x.dtype
            and x.is_contiguous() and not _compiling()
            and _C.gated_norm_infer_out(x, weight, bias, g, eps, None, True, is_rms_norm, activation, x)
            is not NotImplemented):
        return x if not prenorm else (x, x)
    shape = x.shape
    d = shape[-1]
    x2 = x.reshape(-1, d)  # a view for contiguous x: y is then written into the caller's x
    g2 = g.reshape(-1, g.shape[-1])
    if residual is not None:
        if residual.shape != shape:
            raise ValueError(f"gatednorm (LayerNormGatedFunction): residual must be x's shape {tuple(shape)}, "
                             f"got {tuple(residual.shape)}")
        residual = residual.reshape(-1, d)
    residual_dtype = residual.dtype if residual is not None else (torch.float if residual_in_fp32 else None)
    y, _, _, residual_out = layer_norm_gated_fwd(x2, g2, weight, bias, activation, eps, residual,
                                                 residual_dtype=residual_dtype, is_rms_norm=is_rms_norm)
    y = y.reshape(shape)
    return y if not prenorm else (y, residual_out.reshape(shape))


class LayerNormGatedFunction:
    """fused_norm_gate's forward-only `LayerNormGatedFunction`: `.apply(x, g, weight, bias,
    activation, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False, is_rms_norm=False)`."""

    @staticmethod
    def apply(x, g, weight, bias, activation, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
              is_rms_norm=False):
        return _fused_apply(x, g, weight, bias, activation, residual, eps, prenorm, residual_in_fp32, is_rms_norm)


def fused_rms_norm_gated(x, g, weight, bias, activation: str = "swish", residual=None, prenorm: bool = False,
                         residual_in_fp32: bool = False, eps: float = 1e-6):
    """fused_norm_gate's positional `rms_norm_gated` (FusedRMSNormGated's function): RMSNorm, then
    act(g); the output is written into x (when x's rows can be viewed as [-1, D]) and returned."""
    return _fused_apply(x, g, weight, bias, activation, residual, eps, prenorm, residual_in_fp32, True)
