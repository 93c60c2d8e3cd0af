"""gatednorm: gated RMSNorm/LayerNorm as `torch.ops.gatednorm.*` (C and CUDA C kernels).

    import torch_ops
    out = torch_ops.rmsnorm_fn(x, weight, None, z=gate, group_size=1024, norm_before_gate=False)
"""
import torch  # noqa: F401  (loads libtorch, which _C links against)

from . import _C  # noqa: F401  (loads the kernels and registers the op schemas)
from .gated_norm import (
    ACTIVATIONS,
    LayerNormFn,
    gated_norm_ref,
    layer_norm_bwd,
    layer_norm_fwd,
    layer_norm_ref,
    layernorm_fn,
    rms_norm_gated,
    rms_norm_ref,
    rmsnorm_fn,
)
from .modules import LayerNorm, LayerNormGated, RMSNorm, RMSNormGated
from .swap import SwappedGatedNorm, swap_norms_
from .add_rms_norm import (
    FusedAddRMSNorm,
    add_rms_norm,
    add_rms_norm_ref,
    fused_add_rms_norm,
    gemma_fused_add_rms_norm,
    gemma_rms_norm,
    rms_norm,
)


def has_cuda_kernels() -> bool:
    """True when this build carries the CUDA kernels (nvcc and a CUDA torch at build time)."""
    return bool(_C.built_with_cuda)


__all__ = [
    "ACTIVATIONS", "LayerNormFn", "gated_norm_ref", "layer_norm_bwd", "layer_norm_fwd", "layer_norm_ref",
    "layernorm_fn", "rms_norm_gated", "rms_norm_ref", "rmsnorm_fn",
    "LayerNorm", "LayerNormGated", "RMSNorm", "RMSNormGated", "has_cuda_kernels",
    "FusedAddRMSNorm", "add_rms_norm", "add_rms_norm_ref", "fused_add_rms_norm", "gemma_fused_add_rms_norm",
    "gemma_rms_norm", "rms_norm", "SwappedGatedNorm", "swap_norms_",
]
__version__ = "0.1.0"
