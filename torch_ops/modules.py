"""nn.Modules with the names and defaults of FLA (`LayerNormGated`, `RMSNormGated`) and
mamba_ssm (`LayerNorm`, `RMSNorm`); `forward(x, z=None)`."""
from __future__ import annotations

import torch
from torch import nn

from .gated_norm import layernorm_fn


class _GatedNorm(nn.Module):
    is_rms_norm = False
    default_norm_before_gate = True

    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=None, device=None, dtype=None,
                 activation="swish"):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.hidden_size = hidden_size
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = self.default_norm_before_gate if norm_before_gate is None else norm_before_gate
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(hidden_size, **factory))
        if self.is_rms_norm:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.empty(hidden_size, **factory))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x, z=None):
        return layernorm_fn(x, self.weight, self.bias, z, self.eps, self.group_size, self.norm_before_gate,
                            self.is_rms_norm, self.activation)

    def extra_repr(self):
        return (f"{self.hidden_size}, eps={self.eps}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}, activation={self.activation!r}")


class LayerNorm(_GatedNorm):
    """mamba_ssm `LayerNorm(hidden_size, eps=1e-5, group_size=None, norm_before_gate=True)`."""


class RMSNorm(_GatedNorm):
    """mamba_ssm `RMSNorm(hidden_size, eps=1e-5, group_size=None, norm_before_gate=True)`."""
    is_rms_norm = True


class LayerNormGated(_GatedNorm):
    """FLA `LayerNormGated(hidden_size, eps=1e-5, group_size=None, norm_before_gate=True)`."""


class RMSNormGated(_GatedNorm):
    """FLA `RMSNormGated(hidden_size, eps=1e-5, group_size=None, norm_before_gate=False)`."""
    is_rms_norm = True
    default_norm_before_gate = False
