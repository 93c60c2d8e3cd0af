"""Replacements for `forward_cuda` of sglang's `RMSNorm` and `GemmaRMSNorm`
(`sglang.srt.layers.layernorm`) on gatednorm's fused add + RMSNorm ops.

sglang's forward_cuda (0.5.15.post1 and 0.5.23 read) ends in a plain path on sgl_kernel:
    residual None:  out = rmsnorm(x, w, eps)                 (N-D x flattened to rows)
    residual given: residual = residual + post_residual_addition   (if given: a new tensor)
                    fused_add_rmsnorm(x, residual, w, eps)   in place: residual <- x + residual,
                    x <- rmsnorm(residual) * w; returns (x, residual)
(gemma_rmsnorm / gemma_fused_add_rmsnorm, weight applied as 1 + w, for GemmaRMSNorm). Before
it, RMSNorm has special paths: variance_size_override and (for a residual) cast_x_before_out_mul
go to forward_native or JIT kernels with other rounding, batch-invariant mode to its own kernel,
0.5.23's FP8 input-quant fusion to FlashInfer. The replacements run the plain path on
`torch.ops.gatednorm.rms_norm` / `fused_add_rms_norm` (gemma=True for GemmaRMSNorm) and hand
every other call to sglang's ORIGINAL forward_cuda: same results as unpatched sglang there,
never other math. Each such call is counted in `FALLBACKS` ("Class.forward_cuda: reason" ->
calls) and the first one of each reason is logged.

Beyond sgl_kernel: fp32 x (sgl_kernel takes fp16/bf16 only), and RMSNorm(fp32_residual=True)
with an fp32 residual stream and a half-precision x, computed as sglang's forward_native does
(the fp32 sum is stored and normalised; sgl_kernel's one-dtype kernel has no such mode).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Optional

import torch
from torch import Tensor

from ...add_rms_norm import fused_add_rms_norm, rms_norm

logger = logging.getLogger(__name__)

#: "Class.forward_cuda: reason" -> number of calls handed to sglang's own method.
FALLBACKS: Counter = Counter()

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what our kernels take
_HALF = (torch.float16, torch.bfloat16)


def _fallback(cls_name: str, why: str, original, self, x, residual, post, quant_linear=None):
    key = f"{cls_name}.forward_cuda: {why}"
    if key not in FALLBACKS:
        logger.info("gatednorm: sglang %s -> sglang's own method (this reason's calls are counted in "
                    "torch_ops.integrations.sglang.fallback_counts())", key)
    FALLBACKS[key] += 1
    if quant_linear is None:  # sglang <= 0.5.15 has no quant_linear parameter
        return original(self, x, residual, post)
    return original(self, x, residual, post, quant_linear)


def _rows_in_place(t: Tensor) -> bool:
    """Can our fused op update t in place, as sglang's call does? 2-D: sgl_kernel addresses rows
    by one stride (unit-stride last dimension, rows not overlapping), so do we. N-D: sglang 0.5.23
    flattens with .contiguous().reshape(), which is the caller's tensor only when contiguous."""
    if t.dim() != 2:
        return t.is_contiguous()
    return (t.stride(1) == 1 or t.shape[1] == 1) and (t.shape[0] <= 1 or t.stride(0) >= t.shape[1])


def _unsupported(x: Tensor, residual: Optional[Tensor], post: Optional[Tensor], weight: Tensor,
                 fp32_residual: bool) -> Optional[str]:
    """Why our ops cannot take this call with the plain path's semantics, or None."""
    if not (x.is_cuda or x.is_cpu):  # (x.device.type builds a device object: 5x the time)
        return f"device {x.device.type}"
    if x.dtype not in _FLOATS or weight.dtype not in _FLOATS:
        return f"dtypes x {x.dtype}, weight {weight.dtype}"
    if residual is None:
        return None  # out of place: any layout (our op copies rows it cannot address)
    if residual.shape != x.shape or (post is not None and post.shape != x.shape):
        return "residual / post_residual_addition not of x's shape"
    rdtype = residual.dtype if post is None else torch.promote_types(residual.dtype, post.dtype)
    # One dtype, as sgl_kernel; or RMSNorm's fp32 residual stream with a half x (forward_native's
    # semantics, which our (half, fp32) kernels implement). Other pairs: no semantics to match.
    if rdtype != x.dtype and not (fp32_residual and rdtype == torch.float32 and x.dtype in _HALF):
        return f"residual {rdtype} with x {x.dtype}"
    if not _rows_in_place(x) or (post is None and not _rows_in_place(residual)):
        return "x or residual not updatable in place by rows"  # (residual + post is a new tensor)
    return None


def _plain(x: Tensor, residual: Optional[Tensor], post: Optional[Tensor], weight: Tensor, eps: float,
           gemma: bool):
    """sglang's plain path, on our ops (through torch_ops' functions: their direct eager path)."""
    if residual is None:
        return rms_norm(x, weight, eps, gemma=gemma)
    if post is not None:
        residual = residual + post  # sglang's order: x + (residual + post), into a new residual
    fused_add_rms_norm(x, residual, weight, eps, gemma)
    return x, residual


def _require(module, *names):
    """The module globals a replacement reads at call time; a release without them is not the
    one it was written for (the patcher reports the target as skipped)."""
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise LookupError(f"{module.__name__} has no {', '.join(missing)}")


def rmsnorm_forward_cuda(original, module):
    """`RMSNorm.forward_cuda` on our ops; `original` is sglang's (the fallback), `module` is
    sglang.srt.layers.layernorm, whose flags are read at call time as sglang's method does."""
    _require(module, "is_batch_invariant_mode_enabled")

    def forward_cuda(self, x, residual=None, post_residual_addition=None, quant_linear=None):
        post = post_residual_addition
        if x.numel() == 0:  # sglang's own early return (idle data-parallel ranks), before any path
            if residual is None:
                return x
            return x, (residual if post is None else residual + post)
        ql = quant_linear if quant_linear is not None else getattr(self, "_quant_linear", None)
        if self.variance_size_override is not None:
            why = "variance_size_override"  # variance over the first columns only (forward_native)
        elif module.is_batch_invariant_mode_enabled():
            why = "batch-invariant mode"  # sglang's deterministic kernel or forward_native
        elif self.cast_x_before_out_mul:
            why = "cast_x_before_out_mul"  # HF rounding: cast to x's dtype before the weight multiply
        elif ql is not None and getattr(module, "_flashinfer_rmsnorm_quant_available", False):
            why = "FP8 input-quant fusion"  # 0.5.23+: FlashInfer quantises the next projection's input
        else:
            weight = self.weight  # (once: an nn.Module attribute lookup costs ~0.4 us)
            why = _unsupported(x, residual, post, weight, self.fp32_residual)
        if why is not None:
            return _fallback("RMSNorm", why, original, self, x, residual, post, quant_linear)
        return _plain(x, residual, post, weight.data, self.variance_epsilon, False)

    forward_cuda.__qualname__ = "RMSNorm.forward_cuda"
    return forward_cuda


def gemma_rmsnorm_forward_cuda(original, module):
    """`GemmaRMSNorm.forward_cuda` on our ops (weight applied as 1 + w); sglang's has no special
    path: only what our ops cannot take falls back."""

    def forward_cuda(self, x, residual=None, post_residual_addition=None):
        post = post_residual_addition
        weight = self.weight
        why = _unsupported(x, residual, post, weight, False)
        if why is not None:
            return _fallback("GemmaRMSNorm", why, original, self, x, residual, post)
        return _plain(x, residual, post, weight.data, self.variance_epsilon, True)

    forward_cuda.__qualname__ = "GemmaRMSNorm.forward_cuda"
    return forward_cuda
