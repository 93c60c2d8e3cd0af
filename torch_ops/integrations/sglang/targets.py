"""What the sglang patch replaces, where, per sglang layout and release (the mechanics are in
`patcher.py`). One row per object; "{fla}" in a module name is the layout's package."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from . import addnorm, gated

#: sglang releases this patch was written against and tested with.
TESTED_VERSIONS = ("0.5.15.post1", "0.5.23")

LAYOUTS = {
    # name: (package of layernorm_gated / fused_norm_gate / kda, releases)
    "kernels": ("sglang.kernels.ops.attention.fla", "v0.5.16 and newer"),
    "srt": ("sglang.srt.layers.attention.fla", "v0.5.15 and older"),
}
SUPPORTED = ("sglang v0.5.16+ (sglang.kernels.ops.attention.fla.layernorm_gated / .fused_norm_gate) and "
             "v0.5.15 and older (sglang.srt.layers.attention.fla.layernorm_gated, + fused_norm_gate "
             f"from v0.5.10); tested with {', '.join(TESTED_VERSIONS)}")

NO_CUDA_KERNELS = ("skipped: this gatednorm build has no CUDA kernels (forward_cuda runs only in a CUDA "
                   "process, where such a build refuses to patch)")


@dataclass(frozen=True)
class Target:
    module: str                     # "{fla}" stands for the layout's package
    name: str                       # a module global, or "Class.method" (kind "method")
    new: Any                        # the replacement; kind "flag": the value; kind "method": a factory
    kind: str = "defining"          # "defining" | "importer" | "flag" | "class" | "method"
    source: Optional[str] = None    # importer / class: the defining module the binding must come from
    source_name: Optional[str] = None  # ... and the name there (default: `name`)
    optional: bool = False          # the name may be absent in some releases
    needs_cuda_kernels: bool = False  # only replaced when gatednorm was built with its CUDA kernels


_LG = "{fla}.layernorm_gated"
_FG = "{fla}.fused_norm_gate"
_MAMBA_OPS = "sglang.srt.layers.attention.mamba.ops.layernorm_gated"
_LAYERNORM = "sglang.srt.layers.layernorm"


def _cls(module, name, source, source_name=None):
    return Target(module, name, None, kind="class", source=source, source_name=source_name)


TARGETS: tuple[Target, ...] = (
    # --- gated norms, defining modules: the functions and the platform flag their classes read
    #     at call time (so no class needs replacing, and live instances follow) ---
    Target(_LG, "_layer_norm_fwd", gated.layer_norm_fwd),
    Target(_LG, "rms_norm_gated", gated.rms_norm_gated),
    Target(_LG, "LayerNormFn", gated.LayerNormFn),
    Target(_LG, "layernorm_fn", gated.layernorm_fn),
    Target(_LG, "rmsnorm_fn", gated.rmsnorm_fn, optional=True),  # v0.5.3 only
    Target(_LG, "_use_cpu", False, kind="flag"),
    Target(_FG, "layer_norm_gated_fwd", gated.layer_norm_gated_fwd),
    Target(_FG, "LayerNormGatedFunction", gated.LayerNormGatedFunction),
    Target(_FG, "rms_norm_gated", gated.fused_rms_norm_gated),
    Target(_FG, "_use_cpu", False, kind="flag"),
    Target(_MAMBA_OPS, "_layer_norm_fwd", gated.layer_norm_fwd),  # vLLM's copy, v0.5.15 and older
    Target(_MAMBA_OPS, "rms_norm_gated", gated.mamba_rms_norm_gated),
    # --- importers of functions: `from X import f` copied the binding ---
    Target("sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated", "rms_norm_gated", gated.rms_norm_gated,
           kind="importer", source=_LG),
    Target("sglang.srt.models.bailing_moe_linear", "layernorm_fn", gated.layernorm_fn, kind="importer",
           source=_LG),
    Target("sglang.srt.models.qwen3_5", "_layer_norm_fwd", gated.layer_norm_fwd, kind="importer", source=_LG,
           optional=True),  # the FP8 out_proj path (newer releases, e.g. 0.5.23)
    Target("{fla}.kda", "layer_norm_gated_fwd", gated.layer_norm_gated_fwd, kind="importer", source=_FG),
    # --- importers of classes: nothing to replace; checked to be the defining module's class ---
    _cls("sglang.srt.models.qwen3_next", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.qwen3_next", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.qwen3_5", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.jet_nemotron", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.bailing_moe_linear", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.kimi_linear", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.kimi_k3", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.glm5_next", "FusedRMSNormGated", _FG),
    # --- RMSNorm family (sgl_kernel's rmsnorm / fused_add_rmsnorm): the CUDA method itself, because
    #     its plain path must be told apart from sglang's special ones (addnorm.py). Replacing the
    #     method (not the sgl_kernel globals, which exist only on CUDA) also re-points instances
    #     that cached the bound method (patcher.rebind_instances). Same class in both layouts. ---
    Target(_LAYERNORM, "RMSNorm.forward_cuda", addnorm.rmsnorm_forward_cuda, kind="method",
           needs_cuda_kernels=True),
    Target(_LAYERNORM, "GemmaRMSNorm.forward_cuda", addnorm.gemma_rmsnorm_forward_cuda, kind="method",
           needs_cuda_kernels=True),
)
