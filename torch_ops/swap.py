"""Module swap: replace the gated-norm modules of Hugging Face transformers, FLA and
mamba_ssm models, in place, with modules that run `torch.ops.gatednorm`.

    import torch_ops
    model = AutoModelForCausalLM.from_config(config)      # or from_pretrained(...)
    swapped = torch_ops.swap_norms_(model)                 # ['model.layers.0.linear_attn.norm', ...]

`swap_norms_(model, *, filter_fn=None)` (torchao style) walks the module tree and
replaces every module whose class it knows (matched by the class's defining module
and name, so this file imports none of transformers / fla / mamba_ssm) with a
`SwappedGatedNorm` subclass that has that class's forward semantics, shares its
Parameter objects (`new.weight is old.weight`), its hooks and its configuration
attributes under their original names (`variance_epsilon` or `eps`, `group_size`,
`n_groups`, `norm_before_gate`, `activation`, ...), so state_dict keys, dtype, device
and code that reads those attributes (e.g. the fused mamba_ssm training path of HF's
Mamba2 mixer, which reads `norm.weight` and `norm.variance_epsilon`) are unchanged.
Returns the qualified names of the modules replaced. Calling it again returns [] (the
swapped modules are ours, not known classes). Unknown classes and subclasses of known
classes (their forward may differ) are left alone.

Numerics: the op computes in fp32 (fp64 for fp64 inputs) and rounds once, to the
output dtype. Classes that round in the middle (HF Mamba2 family: the normalised
value is cast to the input dtype before the weight product; HF Qwen3-Next family: the
normalised value is cast to the input dtype, multiplied by the weight, then by the
fp32 gate) give results that differ from ours by those intermediate roundings: at
most a few units of the input dtype's roundoff (bf16: 2^-8 relative each), none for
fp32 inputs beyond fp32 reordering. The per-class docstrings say which.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .gated_norm import layernorm_fn

__all__ = [
    "swap_norms_", "SwappedGatedNorm", "SUPPORTED_CLASSES",
    "SwappedHFGroupGatedRMSNorm", "SwappedHFNormThenGate", "SwappedFalconH1RMSNormGated",
    "SwappedTriDaoGatedNorm", "SwappedFLAFusedNormGate",
]

# ACT2FN / FLA names -> ours
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "sigmoid": "sigmoid"}

# nn.Module hook dictionaries shared with the swapped module (the same dict objects:
# handles returned by register_*_hook on the old module still remove them).
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)
_SCALARS = (bool, int, float, str, type(None))


def _input_dtype(x: Tensor, z: Optional[Tensor], out_dtype: torch.dtype) -> torch.dtype:
    """The dtype x and z are handed to the op in: the widest of x, z and the output (every
    conversion to it is exact; the op computes in fp32 either way, fp64 for fp64)."""
    dtype = x.dtype if z is None else torch.promote_types(x.dtype, z.dtype)
    return torch.promote_types(dtype, out_dtype)


class SwappedGatedNorm(nn.Module):
    """Base class of every module `swap_norms_` installs. `source_class` is the
    "module.ClassName" of the module it replaced. Subclasses hold the replaced
    module's Parameters (the same objects) and configuration attributes."""

    source_class: str = ""
    _is_rms_norm: bool = True
    _required: tuple = ()  # attributes of the source module the forward reads

    def __init__(self, source: nn.Module, source_class: str, is_rms_norm: bool):
        super().__init__()
        self.source_class = source_class
        self._is_rms_norm = is_rms_norm
        # The same Parameter objects, in the same order (None entries included), and buffers.
        for name, p in source._parameters.items():
            self.register_parameter(name, p)
        for name, b in source._buffers.items():
            self.register_buffer(name, b, persistent=name not in source._non_persistent_buffers_set)
        if "weight" not in self._parameters:
            self.register_parameter("weight", None)
        if "bias" not in self._parameters:
            self.register_parameter("bias", None)
        # Configuration attributes under their original names (variance_epsilon / eps,
        # group_size, n_groups, norm_before_gate, activation, hidden_size, ...).
        for name, value in vars(source).items():
            if name != "training" and isinstance(value, _SCALARS) and name not in self._parameters:
                object.__setattr__(self, name, value)
        for name in _HOOK_DICTS:
            if hasattr(source, name):
                object.__setattr__(self, name, getattr(source, name))
        self.train(source.training)

    def _norm(self, x: Tensor, z: Optional[Tensor], *, eps: float, group_size, norm_before_gate: bool,
              activation: str, out_dtype: torch.dtype, bias: Optional[Tensor] = None) -> Tensor:
        """The op on x and z brought to one dtype (exact upcasts), result cast to out_dtype."""
        if z is not None and z.shape != x.shape and z.numel() == x.numel():
            z = z.reshape(x.shape)
        dtype = _input_dtype(x, z, out_dtype)
        if x.dtype != dtype:
            x = x.to(dtype)
        if z is not None and z.dtype != dtype:
            z = z.to(dtype)
        out = layernorm_fn(x, self.weight, bias, z=z, eps=eps, group_size=group_size,
                           norm_before_gate=norm_before_gate, is_rms_norm=self._is_rms_norm, activation=activation)
        return out if out.dtype == out_dtype else out.to(out_dtype)

    def extra_repr(self) -> str:
        n = None if self.weight is None else self.weight.shape[-1]
        return f"{n}, swapped from {self.source_class}"


class SwappedHFGroupGatedRMSNorm(SwappedGatedNorm):
    """HF `MambaRMSNormGated` / `Mamba2RMSNormGated` (mamba2), `BambaRMSNormGated`, `GraniteMoeHybridRMSNormGated`,
    `Zamba2RMSNormGated`, `NemotronHRMSNormGated`:

        v = x * silu(gate) (in fp32, gate optional); per group of `group_size` columns
        (the whole row in versions without `group_size`): v * rsqrt(mean(v^2) + variance_epsilon);
        out = weight * v.to(x.dtype)         -> dtype promote(weight.dtype, x.dtype)

    Ours computes in fp32 and rounds once, to that same output dtype (a gate of another
    dtype than x, as HF's Mamba2 torch path passes — fp32 scan output, bf16 gate — is
    fine: both are upcast exactly, as the original does). The original rounds the
    normalised value to x.dtype before the weight product and, for a half output, the
    product again: with bf16 x and weight the results are up to 3 bf16 roundings apart
    (3 * 2^-8 relative); with fp32 inputs they differ by fp32 reordering only.
    (fp64 inputs: the original normalises in fp32, ours in fp64.)"""

    _required = ("variance_epsilon",)

    def forward(self, hidden_states: Tensor, gate: Optional[Tensor] = None) -> Tensor:
        w = self.weight
        out_dtype = hidden_states.dtype if w is None else torch.promote_types(w.dtype, hidden_states.dtype)
        return self._norm(hidden_states, gate, eps=self.variance_epsilon, group_size=getattr(self, "group_size", None),
                          norm_before_gate=False, activation="silu", out_dtype=out_dtype)


class SwappedHFNormThenGate(SwappedGatedNorm):
    """HF norm-then-gate classes, no groups, `activation` attribute (silu or sigmoid):

    - `Qwen3NextRMSNormGated`, `Qwen3_5RMSNormGated`, `Qwen3_5MoeRMSNormGated`,
      `OlmoHybridRMSNormGated`, `Qwen4ExpTextRMSNormGated`: y = x * rsqrt(mean(x^2) + eps) in fp32,
      cast to x.dtype, times weight, times act(gate in fp32), cast to x.dtype. With bf16
      inputs the original rounds three times (normalised value, weight product when the
      weight is bf16, final), ours once: they differ by up to ~4 bf16 roundings (4 * 2^-8
      relative); fp32 inputs: fp32 reordering only.
    - `KimiLinearRMSNormGated`, `BailingHybridRMSNormGated`, `Glm5NextTextRMSNormGated`
      (sigmoid), `LaraMiniRMSNormGated` (silu): everything in fp32, one final cast: the same
      as ours up to fp32 reordering.

    Output dtype: x.dtype."""

    _required = ("variance_epsilon",)

    def forward(self, hidden_states: Tensor, gate: Optional[Tensor] = None) -> Tensor:
        return self._norm(hidden_states, gate, eps=self.variance_epsilon, group_size=None, norm_before_gate=True,
                          activation=_ACTIVATIONS[self.activation], out_dtype=hidden_states.dtype)


class SwappedFalconH1RMSNormGated(SwappedGatedNorm):
    """HF `FalconH1RMSNormGated(hidden_size, eps, n_groups, norm_before_gate)`: RMSNorm over
    `n_groups` groups of `hidden // n_groups` columns, silu gate before or after the norm
    (`norm_before_gate`), everything (weight product included) in fp32, one final cast to
    x.dtype: the same as ours up to fp32 reordering. (The original takes 2-D or 3-D inputs
    only; ours any shape.)"""

    _required = ("variance_epsilon", "n_groups", "norm_before_gate")

    def forward(self, hidden_states: Tensor, gate: Optional[Tensor] = None) -> Tensor:
        n = hidden_states.shape[-1]
        return self._norm(hidden_states, gate, eps=self.variance_epsilon, group_size=n // self.n_groups,
                          norm_before_gate=self.norm_before_gate, activation="silu", out_dtype=hidden_states.dtype)


class SwappedTriDaoGatedNorm(SwappedGatedNorm):
    """Tri Dao's Triton modules, `forward(x, z=None)`: FLA `RMSNormGated` / `LayerNormGated`
    (`fla.modules[.norm].layernorm_gated[.module]`) and mamba_ssm `RMSNorm` / `LayerNorm`
    (`mamba_ssm.ops.triton.layernorm_gated`): silu gate, `group_size`, `norm_before_gate`,
    `eps`, bias for the LayerNorm ones; fp32 compute, output in x.dtype. Same math as ours."""

    _required = ("eps", "group_size", "norm_before_gate")

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        return self._norm(x, z, eps=self.eps, group_size=self.group_size, norm_before_gate=self.norm_before_gate,
                          activation="silu", out_dtype=x.dtype, bias=self.bias)


class SwappedFLAFusedNormGate(SwappedGatedNorm):
    """FLA `FusedRMSNormGated` / `FusedLayerNormGated` (and the `...SwishGate` aliases),
    `forward(x, g, residual=None, prenorm=False, residual_in_fp32=False)`: norm, then
    act(g) (`activation` swish/silu/sigmoid), no groups, optional weight (`elementwise_affine`)
    and bias; output in x.dtype. With `residual`: h = x + residual summed in fp32, the fp32
    sum is normalised (as FLA's kernel does) and `residual_out` = h in residual.dtype (fp32
    with residual_in_fp32 and no residual); `prenorm` returns (out, residual_out)."""

    _required = ("eps",)

    def forward(self, x: Tensor, g: Tensor, residual: Optional[Tensor] = None, prenorm: bool = False,
                residual_in_fp32: bool = False):
        act = _ACTIVATIONS[self.activation]
        if residual is None:
            out = self._norm(x, g, eps=self.eps, group_size=None, norm_before_gate=True, activation=act,
                             out_dtype=x.dtype, bias=self.bias)
            if not prenorm:
                return out
            return out, (x.float() if residual_in_fp32 and x.dtype != torch.float32 else x)
        h = x.to(torch.promote_types(torch.promote_types(x.dtype, residual.dtype), torch.float32))
        h = h + residual.to(h.dtype)
        out = self._norm(h, g, eps=self.eps, group_size=None, norm_before_gate=True, activation=act,
                         out_dtype=x.dtype, bias=self.bias)
        return (out, h.to(residual.dtype)) if prenorm else out


_HF = "transformers.models."
# FLA's layouts: fla/modules/X.py (up to 0.4), fla/modules/norm/X.py (0.6.0), fla/modules/norm/X/module.py (later)
_FLA_LN = ("fla.modules.layernorm_gated", "fla.modules.norm.layernorm_gated", "fla.modules.norm.layernorm_gated.module")
_FLA_FUSED = ("fla.modules.fused_norm_gate", "fla.modules.norm.fused_norm_gate",
              "fla.modules.norm.fused_norm_gate.module")

# "module.ClassName" -> (swapped class, is_rms_norm, default activation for classes without the attribute)
SUPPORTED_CLASSES: dict[str, tuple[type, bool, Optional[str]]] = {}


def _register(cls, is_rms_norm, modules, names, activation=None):
    for m in modules:
        for n in names:
            SUPPORTED_CLASSES[f"{m}.{n}"] = (cls, is_rms_norm, activation)


# mamba2: transformers 5.25 renamed MambaRMSNormGated to Mamba2RMSNormGated (same forward, with group_size)
for _model, _name in [("mamba2", "MambaRMSNormGated"), ("mamba2", "Mamba2RMSNormGated"), ("bamba", "BambaRMSNormGated"),
                      ("granitemoehybrid", "GraniteMoeHybridRMSNormGated"), ("zamba2", "Zamba2RMSNormGated"),
                      ("nemotron_h", "NemotronHRMSNormGated")]:
    _register(SwappedHFGroupGatedRMSNorm, True, [f"{_HF}{_model}.modeling_{_model}"], [_name])
for _model, _name, _act in [("qwen3_next", "Qwen3NextRMSNormGated", "silu"), ("qwen3_5", "Qwen3_5RMSNormGated", "silu"),
                            ("qwen3_5_moe", "Qwen3_5MoeRMSNormGated", "silu"),
                            ("olmo_hybrid", "OlmoHybridRMSNormGated", "silu"),
                            ("qwen4_exp", "Qwen4ExpTextRMSNormGated", "silu"),
                            ("lara_mini", "LaraMiniRMSNormGated", "silu"),  # transformers 5.25
                            ("kimi_linear", "KimiLinearRMSNormGated", "sigmoid"),
                            ("bailing_hybrid", "BailingHybridRMSNormGated", "sigmoid"),
                            ("glm5_next", "Glm5NextTextRMSNormGated", "sigmoid")]:
    _register(SwappedHFNormThenGate, True, [f"{_HF}{_model}.modeling_{_model}"], [_name], _act)
_register(SwappedFalconH1RMSNormGated, True, [f"{_HF}falcon_h1.modeling_falcon_h1"], ["FalconH1RMSNormGated"])
_register(SwappedTriDaoGatedNorm, True, _FLA_LN, ["RMSNormGated"])
_register(SwappedTriDaoGatedNorm, False, _FLA_LN, ["LayerNormGated"])
_register(SwappedTriDaoGatedNorm, True, ["mamba_ssm.ops.triton.layernorm_gated"], ["RMSNorm"])
_register(SwappedTriDaoGatedNorm, False, ["mamba_ssm.ops.triton.layernorm_gated"], ["LayerNorm"])
_register(SwappedFLAFusedNormGate, True, _FLA_FUSED, ["FusedRMSNormGated", "FusedRMSNormSwishGate"], "swish")
_register(SwappedFLAFusedNormGate, False, _FLA_FUSED, ["FusedLayerNormGated", "FusedLayerNormSwishGate"], "swish")


def _class_key(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _swapped(module: nn.Module) -> Optional[nn.Module]:
    """The replacement of a module of a supported class, or None (unknown class, or a
    state we cannot carry over: child modules, an instance-level forward such as
    accelerate's hooks, an activation we do not have)."""
    entry = SUPPORTED_CLASSES.get(_class_key(module))
    if entry is None:
        return None
    cls, is_rms_norm, default_act = entry
    key = _class_key(module)
    why = None
    if len(module._modules):
        why = "it has child modules"
    elif "forward" in vars(module):
        why = "its forward is patched on the instance (e.g. accelerate hooks)"
    elif "weight" not in module._parameters:
        why = "it has no weight parameter"
    elif any(not hasattr(module, a) for a in cls._required):
        why = f"it lacks one of the attributes {cls._required} (another version of the class?)"
    elif default_act is not None and _ACTIVATIONS.get(getattr(module, "activation", default_act)) is None:
        why = f"activation {getattr(module, 'activation')!r} is not supported"
    if why is not None:
        warnings.warn(f"swap_norms_: leaving a {key} alone: {why}", stacklevel=3)
        return None
    new = cls(module, key, is_rms_norm)
    if default_act is not None and "activation" not in vars(new):
        object.__setattr__(new, "activation", default_act)
    return new


def swap_norms_(model: nn.Module, *, filter_fn: Optional[Callable[[nn.Module, str], bool]] = None) -> list[str]:
    """Replace, in place, every gated-norm module of a known class under `model` (see
    `SUPPORTED_CLASSES`) by a `SwappedGatedNorm` with the same forward semantics that
    shares its Parameters, buffers, hooks and configuration attributes.

    filter_fn(module, fqn) -> bool: swap only where it returns True (asked once per module
    instance, with its first qualified name; a module reachable under several names is
    replaced under all of them by one new module). Idempotent: already swapped modules
    are skipped. `model` itself is never replaced (there is no parent to rebind). Modules
    in a state that cannot be carried over (child modules, a forward patched on the
    instance such as accelerate's hooks, missing attributes, an unknown activation) are
    left alone with a warning. Swap before wrapping the model (DDP/FSDP, torch.compile).
    Returns every qualified name under which a module was replaced, in `named_modules`
    order (all the names of a shared module)."""
    swapped: list[str] = []
    decided: dict[int, tuple[nn.Module, Optional[nn.Module]]] = {}  # id(old) -> (old kept alive, new)
    visited: set[int] = {id(model)}

    def walk(parent: nn.Module, prefix: str):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            fqn = f"{prefix}.{name}" if prefix else name
            if id(child) not in decided:
                new = None
                if not isinstance(child, SwappedGatedNorm) and _class_key(child) in SUPPORTED_CLASSES:
                    if filter_fn is None or filter_fn(child, fqn):
                        new = _swapped(child)
                decided[id(child)] = (child, new)
            new = decided[id(child)][1]
            if new is not None:
                setattr(parent, name, new)
                swapped.append(fqn)
            elif id(child) not in visited:
                visited.add(id(child))
                walk(child, fqn)

    walk(model, "")
    return swapped
