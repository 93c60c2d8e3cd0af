"""Monkey-patch sglang's norms with `torch.ops.gatednorm` (Liger style).

    from torch_ops.integrations import sglang as gn_sglang
    report = gn_sglang.patch()     # before or after the model is built (see below)
    ...
    gn_sglang.unpatch()            # every original object back in place

What is replaced (the table: `targets.py`; the mechanics: `patcher.py`, `checks.py`):

- gated norms, module globals only: the defining modules `sglang.kernels.ops.attention.fla.*`
  (sglang v0.5.16 and newer) or `sglang.srt.layers.attention.fla.*` (v0.5.15 and older):
  `layernorm_gated`: `_layer_norm_fwd`, `rms_norm_gated` (keyword-only), `LayerNormFn`,
  `layernorm_fn` (and `rmsnorm_fn` where it exists); `fused_norm_gate`: `layer_norm_gated_fwd`,
  `LayerNormGatedFunction`, `rms_norm_gated` (positional, in place); the vLLM copy
  `sglang.srt.layers.attention.mamba.ops.layernorm_gated` (v0.5.15 and older); every module
  that copied one of those functions with `from X import Y` (`mixer2_rms_norm_gated`,
  `bailing_moe_linear`, `qwen3_5`, `<fla>.kda`); the modules' `_use_cpu` flag (AMX CPUs) is set
  to False so that the classes take the patched path instead of sgl_kernel's CPU op. The
  classes (`RMSNorm` / `LayerNorm` of layernorm_gated, `FusedRMSNormGated` and their aliases in
  the models) are left as they are: their `forward` looks the functions up in the defining
  module's globals at call time, so live instances and cached `_forward_method`s follow.
- the RMSNorm family of `sglang.srt.layers.layernorm`: the methods `RMSNorm.forward_cuda` and
  `GemmaRMSNorm.forward_cuda` (sgl_kernel's rmsnorm / fused_add_rmsnorm and gemma_* on CUDA)
  run `torch.ops.gatednorm.rms_norm` / `fused_add_rms_norm` on their plain path and hand every
  other call (variance_size_override, cast_x_before_out_mul, batch-invariant mode, FP8
  input-quant fusion, inputs our ops cannot update in place, ...) to sglang's original method,
  counted in `fallback_counts()` (`addnorm.py`). Instances that cached the bound method are
  re-pointed. Only with a gatednorm build that has its CUDA kernels (else reported as skipped).

patch() imports the importers itself (modules that fail to import, e.g. for a missing optional
dependency, are reported as skipped). Every replacement keeps the signature of what it
replaces (checked against the live original; a drifted one is left alone and reported) and its
semantics, including the in-place writes of fused_norm_gate and fused_add_rmsnorm.
"""
from __future__ import annotations

import logging
import os

from . import addnorm, checks, gated, patcher, targets
from .checks import detect_layout
from .gated import (LayerNormFn, LayerNormGatedFunction, fused_rms_norm_gated, layer_norm_fwd,
                    layer_norm_gated_fwd, layernorm_fn, mamba_rms_norm_gated, rms_norm_gated, rmsnorm_fn)
from .patcher import is_patched, patch, unpatch
from .report import PatchReport
from .targets import LAYOUTS, SUPPORTED, TESTED_VERSIONS

logger = logging.getLogger(__name__)

#: Environment variable: "1" makes `sglang_plugin()` (sglang's general-plugin entry point, run
#: in every sglang process) and spawned children of `torch_ops.integrations.sglang_launch` patch.
ENV_VAR = "GATEDNORM_SGLANG_PATCH"


def fallback_counts() -> dict:
    """{"Class.forward_cuda: reason": calls} handed to sglang's own RMSNorm methods since the
    process started (a copy)."""
    return dict(addnorm.FALLBACKS)


def sglang_plugin() -> None:
    """sglang general plugin (entry-point group "sglang.srt.plugins"; sglang runs these early in
    every process: engine, schedulers / TP workers, DP controller, detokenizer). Patches only when
    GATEDNORM_SGLANG_PATCH=1. A failure stops the process: sglang would log a plain exception and
    go on with its own kernels, a silent fallback."""
    if os.environ.get(ENV_VAR, "") != "1":
        return
    try:
        report = patch()
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"gatednorm: the sglang patch failed in process {os.getpid()}: "
                         f"{type(e).__name__}: {e}") from e
    logger.info("%s", report.summary())


__all__ = [
    "ENV_VAR", "LAYOUTS", "SUPPORTED", "TESTED_VERSIONS", "PatchReport", "detect_layout", "fallback_counts",
    "is_patched", "patch", "sglang_plugin", "unpatch",
    # the replacements (see gated.py)
    "LayerNormFn", "LayerNormGatedFunction", "fused_rms_norm_gated", "layer_norm_fwd", "layer_norm_gated_fwd",
    "layernorm_fn", "mamba_rms_norm_gated", "rms_norm_gated", "rmsnorm_fn",
    # submodules
    "addnorm", "checks", "gated", "patcher", "targets",
]
