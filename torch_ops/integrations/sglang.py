"""Monkey-patch sglang's gated norms with `torch.ops.gatednorm` (Liger style).

    from torch_ops.integrations import sglang as gn_sglang
    report = gn_sglang.patch()     # before or after the model is built (see below)
    ...
    gn_sglang.unpatch()            # every original object back in place

What is replaced (module globals only; no class, no method is replaced):

- the defining modules, `sglang.kernels.ops.attention.fla.*` (sglang v0.5.16 and newer)
  or `sglang.srt.layers.attention.fla.*` (v0.5.15 and older):
  `layernorm_gated`: `_layer_norm_fwd`, `rms_norm_gated` (keyword-only), `LayerNormFn`,
  `layernorm_fn` (and `rmsnorm_fn` where it exists); `fused_norm_gate`:
  `layer_norm_gated_fwd`, `LayerNormGatedFunction`, `rms_norm_gated` (positional, in place);
  the vLLM copy `sglang.srt.layers.attention.mamba.ops.layernorm_gated` (v0.5.15 and older).
- every module that copied one of those functions with `from X import Y`:
  `sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated.rms_norm_gated`,
  `sglang.srt.models.bailing_moe_linear.layernorm_fn`,
  `sglang.srt.models.qwen3_5._layer_norm_fwd` (its FP8 out_proj path), `<fla>.kda.layer_norm_gated_fwd`.
- the modules' `_use_cpu` flag (AMX CPUs) is set to False, so `RMSNorm.forward` /
  `FusedRMSNormGated.forward` take the patched path instead of sgl_kernel's CPU op.

The classes (`RMSNorm` / `LayerNorm` of layernorm_gated, `FusedRMSNormGated`, sglang's
`RMSNormGated` aliases in qwen3_next, qwen3_5, jet_nemotron, bailing_moe_linear and the
`BailingGroupRMSNormGate` subclass, kimi_linear, kimi_k3, glm5_next) are left as they are:
their `forward` looks the functions up in the defining module's globals at call time. For the
same reason sglang's cached `_forward_method` (BaseFusedOp / MultiPlatformOp, e.g.
`Mixer2RMSNormGated.forward_cuda` bound at first call or at construction) needs no rebinding:
the bound method runs sglang's own code, which reads the patched global on every call. So
patch() works on live models as well as before construction; it imports the importers itself
(modules that fail to import, e.g. for a missing optional dependency, are reported as skipped).

Not patched: sglang's fused add + RMSNorm (`sglang.srt.layers.layernorm`: `fused_add_rmsnorm`,
`rmsnorm` from sgl_kernel): the CUDA kernels of gatednorm's fused add + RMSNorm do not exist yet
(and routing CUDA tensors back to sgl_kernel would be a silent fallback). The entry is in
`_TARGETS` already, disabled: enabling it is one line once the kernels land.

Every function keeps the signature of the function it replaces (checked against the live
original; a function whose signature has drifted is left alone and reported), and its
semantics, including the in-place write into `x` of the fused_norm_gate family.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from .. import has_cuda_kernels
from ..gated_norm import _forward_op

logger = logging.getLogger(__name__)

_ops = torch.ops.gatednorm

#: Environment variable: "1" makes `sglang_plugin()` (sglang's general-plugin entry point, run
#: in every sglang process) and spawned children of `torch_ops.integrations.sglang_launch` patch.
ENV_VAR = "GATEDNORM_SGLANG_PATCH"

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


# =============================================================================================
# Replacements: the layernorm_gated family (Tri Dao's file, forward-only in sglang)
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
    if quant_heads:
        if x.dim() != 2 or (group_size is not None and group_size != n) or m % quant_heads:
            raise ValueError(f"gatednorm (_layer_norm_fwd): quant_heads={quant_heads} needs a 2-D x with one group "
                             f"and rows divisible by quant_heads, got x {tuple(x.shape)}, group_size={group_size}")
        y, mean, rstd = _forward_op(x, weight, bias, z)(*args)
        result = _fp8_per_token(y, quant_heads)
    elif out is None:
        result, mean, rstd = _forward_op(x, weight, bias, z)(*args)
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
    op = _forward_op(x, weight, bias, z)
    return op(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation)[0]


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
# Replacements: the fused_norm_gate family (FLA's; norm, then act(g); writes into x)
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
        o, mean, rstd = _ops.gated_norm_fwd(src, weight, bias, gate, eps, None, True, is_rms_norm, activation)
        y.copy_(o)
        return y, (None if is_rms_norm else _stats32(mean)), _stats32(rstd), (
            residual_out if residual_out is not None else x)


def _fused_apply(x, g, weight, bias, activation, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                 is_rms_norm=False):
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


# =============================================================================================
# The table
# =============================================================================================

@dataclass(frozen=True)
class _Target:
    module: str                     # "{fla}" stands for the layout's package
    name: str
    new: Any                        # the replacement (kind "flag": the value to set)
    kind: str = "defining"          # "defining" | "importer" | "flag" | "class"
    source: Optional[str] = None    # importer / class: the defining module the binding must come from
    source_name: Optional[str] = None  # ... and the name there (default: `name`)
    optional: bool = False          # the name may be absent in some releases
    disabled: Optional[str] = None  # deliberately not patched: the reason


_LG = "{fla}.layernorm_gated"
_FG = "{fla}.fused_norm_gate"
_MAMBA_OPS = "sglang.srt.layers.attention.mamba.ops.layernorm_gated"
_NO_ADDNORM_CUDA = "skipped: CUDA kernels of fused add+RMSNorm not yet available"


def _cls(module, name, source, source_name=None):
    return _Target(module, name, None, kind="class", source=source, source_name=source_name)


_TARGETS: tuple[_Target, ...] = (
    # --- defining modules: the functions and the platform flag their classes read at call time ---
    _Target(_LG, "_layer_norm_fwd", layer_norm_fwd),
    _Target(_LG, "rms_norm_gated", rms_norm_gated),
    _Target(_LG, "LayerNormFn", LayerNormFn),
    _Target(_LG, "layernorm_fn", layernorm_fn),
    _Target(_LG, "rmsnorm_fn", rmsnorm_fn, optional=True),  # v0.5.3 only
    _Target(_LG, "_use_cpu", False, kind="flag"),
    _Target(_FG, "layer_norm_gated_fwd", layer_norm_gated_fwd),
    _Target(_FG, "LayerNormGatedFunction", LayerNormGatedFunction),
    _Target(_FG, "rms_norm_gated", fused_rms_norm_gated),
    _Target(_FG, "_use_cpu", False, kind="flag"),
    _Target(_MAMBA_OPS, "_layer_norm_fwd", layer_norm_fwd),  # vLLM's copy, v0.5.15 and older
    _Target(_MAMBA_OPS, "rms_norm_gated", mamba_rms_norm_gated),
    # --- importers of functions: `from X import f` copied the binding ---
    _Target("sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated", "rms_norm_gated", rms_norm_gated,
            kind="importer", source=_LG),
    _Target("sglang.srt.models.bailing_moe_linear", "layernorm_fn", layernorm_fn, kind="importer", source=_LG),
    _Target("sglang.srt.models.qwen3_5", "_layer_norm_fwd", layer_norm_fwd, kind="importer", source=_LG,
            optional=True),  # the FP8 out_proj path (newer releases, e.g. 0.5.23)
    _Target("{fla}.kda", "layer_norm_gated_fwd", layer_norm_gated_fwd, kind="importer", source=_FG),
    # --- importers of classes: nothing to replace; checked to be the defining module's class ---
    _cls("sglang.srt.models.qwen3_next", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.qwen3_next", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.qwen3_5", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.jet_nemotron", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.bailing_moe_linear", "RMSNormGated", _LG, "RMSNorm"),
    _cls("sglang.srt.models.kimi_linear", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.kimi_k3", "FusedRMSNormGated", _FG),
    _cls("sglang.srt.models.glm5_next", "FusedRMSNormGated", _FG),
    # --- fused add + RMSNorm (sgl_kernel's): disabled until gatednorm has its CUDA kernels. To enable:
    #     a replacement with sgl_kernel's signature (`fused_add_rmsnorm(input, residual, weight, eps,
    #     enable_pdl=None)` in place, `rmsnorm(input, weight, eps, out=None, enable_pdl=None)`) on top
    #     of torch_ops.fused_add_rms_norm / torch_ops.rms_norm, and `disabled=None` ---
    _Target("sglang.srt.layers.layernorm", "fused_add_rmsnorm", None, kind="importer", disabled=_NO_ADDNORM_CUDA),
    _Target("sglang.srt.layers.layernorm", "rmsnorm", None, kind="importer", disabled=_NO_ADDNORM_CUDA),
)


# =============================================================================================
# Report and registry
# =============================================================================================

@dataclass
class PatchReport:
    """What patch() did. `patched`: "module.name" replaced by this call; `already_patched`: by an
    earlier call; `checked`: class bindings verified to be the defining module's class (they read
    the patched globals); `skipped`: "module[.name]" -> why it was left alone; `absent`: modules
    or optional names this release does not have; `notes`: version remarks."""
    sglang_version: str
    layout: str
    layout_package: str
    patched: list = field(default_factory=list)
    already_patched: list = field(default_factory=list)
    checked: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    absent: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.patched)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sglang_version", "layout", "layout_package", "patched",
                                               "already_patched", "checked", "skipped", "absent", "notes")}

    def summary(self) -> str:
        lines = [f"gatednorm: sglang {self.sglang_version} ({self.layout_package}): "
                 f"{len(self.patched)} patched, {len(self.already_patched)} already patched, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  patched {x}" for x in self.patched]
        lines += [f"  skipped {k}: {v}" for k, v in self.skipped.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Entry:
    __slots__ = ("module", "name", "original", "new")

    def __init__(self, module, name, original, new):
        self.module, self.name, self.original, self.new = module, name, original, new


_registry: list[_Entry] = []
_state: dict = {"package": None}
_lock = threading.RLock()


def is_patched() -> bool:
    """True while at least one sglang object is replaced by gatednorm's."""
    return bool(_registry)


def _entry(module, name) -> Optional[_Entry]:
    return next((e for e in _registry if e.module is module and e.name == name), None)


# =============================================================================================
# Layout, version, checks
# =============================================================================================

def _sglang_root() -> str:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"gatednorm: sglang is not installed. Supported: {SUPPORTED}")
    return list(spec.submodule_search_locations)[0]


def detect_layout() -> tuple[str, str]:
    """(layout name, package holding layernorm_gated) from the installed sglang's files, without
    importing it. Raises RuntimeError for an unknown layout."""
    root = _sglang_root()
    for name, (package, _) in LAYOUTS.items():
        rel = package.split(".", 1)[1].replace(".", os.sep)
        if os.path.isfile(os.path.join(root, rel, "layernorm_gated.py")):
            return name, package
    raise RuntimeError(f"gatednorm: unknown sglang layout at {root}: neither "
                       f"{' nor '.join(p + '.layernorm_gated' for p, _ in LAYOUTS.values())} exists. "
                       f"Supported: {SUPPORTED}")


def _sglang_version() -> str:
    import sglang  # the defining modules import it anyway
    return str(getattr(sglang, "__version__", "unknown"))


def _params(obj) -> Optional[list]:
    """Parameters of a function, or of an autograd.Function's forward / our `.apply` (no ctx)."""
    try:
        if inspect.isclass(obj):
            if issubclass(obj, torch.autograd.Function):
                return list(inspect.signature(obj.forward).parameters.values())[1:]
            return list(inspect.signature(obj.apply).parameters.values())
        return list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return None


def _signature_mismatch(original, replacement) -> Optional[str]:
    """None when every call the original accepts binds identically to the replacement: same
    names, kinds, positions and defaults; the replacement may only add parameters with defaults."""
    po, pr = _params(original), _params(replacement)
    if po is None or pr is None:
        return "signature not inspectable"
    ours = {p.name: (i, p) for i, p in enumerate(pr)}
    for i, p in enumerate(po):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return f"the original takes {p}"
        if p.name not in ours:
            return f"parameter {p.name!r} is unknown to gatednorm's replacement"
        j, q = ours[p.name]
        if p.kind != q.kind or (p.kind == p.POSITIONAL_OR_KEYWORD and i != j):
            return f"parameter {p.name!r}: {p.kind.description} #{i}, ours {q.kind.description} #{j}"
        if not (p.default is q.default or p.default == q.default):
            return f"parameter {p.name!r}: default {p.default!r}, ours {q.default!r}"
    names = {p.name for p in po}
    required = [q.name for q in pr if q.name not in names and q.default is inspect.Parameter.empty]
    return f"gatednorm's replacement requires {required}" if required else None


def _import(name: str, report: PatchReport, cache: dict):
    """The module, or None: absent from this release (report.absent) or failing to import
    (report.skipped, with the reason: typically a missing optional dependency)."""
    if name not in cache:
        mod = None
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                report.absent.append(name)
            else:
                report.skipped[name] = f"import failed: {type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001  (import-time errors of optional model files)
            report.skipped[name] = f"import failed: {type(e).__name__}: {e}"
        cache[name] = mod
    return cache[name]


def _platform_guard(modules):
    for mod in modules:
        if mod is not None and getattr(mod, "_is_npu", False):
            raise RuntimeError(f"gatednorm: sglang runs on an Ascend NPU ({mod.__name__}._is_npu): gatednorm has "
                               "no NPU kernels; nothing patched")
    if torch.cuda.is_available() and not has_cuda_kernels():
        raise RuntimeError("gatednorm: this process has CUDA but torch_ops was built without its CUDA kernels, so "
                           "every patched sglang norm would fail on GPU tensors; rebuild gatednorm with nvcc. "
                           "Nothing patched")


# =============================================================================================
# patch / unpatch
# =============================================================================================

def patch() -> PatchReport:
    """Replace sglang's gated-norm entry points with gatednorm's (see the module docstring) and
    return a PatchReport. Idempotent: a second call replaces nothing (`report.patched` is empty,
    `report.already_patched` lists the earlier replacements). Raises RuntimeError, patching
    nothing, for an unknown sglang layout, an NPU platform, or a CUDA process with a CPU-only
    build of gatednorm."""
    with _lock:
        layout, package = detect_layout()
        version = _sglang_version()
        report = PatchReport(sglang_version=version, layout=layout, layout_package=package)
        m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
        if m:
            expect = "kernels" if tuple(map(int, m.groups())) >= (0, 5, 16) else "srt"
            if expect != layout:
                report.notes.append(f"sglang {version} has the {layout!r} layout, {expect!r} expected for this "
                                    "release (a development build?): patching by layout")
        if version not in TESTED_VERSIONS:
            report.notes.append(f"sglang {version} is not among the tested releases {', '.join(TESTED_VERSIONS)}; "
                                "each function is still checked against its live signature")
        if _state["package"] not in (None, package):
            raise RuntimeError(f"gatednorm: already patched for {_state['package']}, now {package}?")

        cache: dict = {}
        fmt = lambda s: s.format(fla=package)  # noqa: E731
        defining = [t for t in _TARGETS if t.kind in ("defining", "flag")]
        _platform_guard([_import(fmt(t.module), report, cache) for t in defining])

        def original(module_name: str, name: str):
            """The defining module's original object (before any patch of ours), or None."""
            mod = cache.get(module_name) or sys.modules.get(module_name)
            if mod is None or not hasattr(mod, name):
                return None
            e = _entry(mod, name)
            return e.original if e is not None else getattr(mod, name)

        pending = []
        for t in _TARGETS:
            modname = fmt(t.module)
            label = f"{modname}.{t.name}"
            if t.disabled:
                report.skipped[label] = t.disabled
                continue
            mod = _import(modname, report, cache)
            if mod is None:
                continue
            if not hasattr(mod, t.name):
                if t.optional or t.kind == "class":
                    report.absent.append(label)
                else:
                    report.skipped[label] = "not defined in this release"
                continue
            current = getattr(mod, t.name)
            e = _entry(mod, t.name)
            if e is not None:
                if current is e.new:
                    report.already_patched.append(label)
                else:
                    report.skipped[label] = "replaced by someone else after gatednorm patched it: left alone"
                continue
            if t.kind == "class":
                src = f"{fmt(t.source)}.{t.source_name or t.name}"
                want = original(fmt(t.source), t.source_name or t.name)
                if want is None:
                    report.skipped[label] = f"cannot check: {src} is not available"
                elif current is want:
                    report.checked.append(label)
                else:
                    report.skipped[label] = (f"is {getattr(current, '__module__', '?')}."
                                             f"{getattr(current, '__qualname__', current)}, not {src}: its forward "
                                             "does not read the patched globals")
                continue
            if t.kind == "flag":
                if current is True:
                    pending.append((mod, t.name, current, t.new, label))
                continue
            if t.kind == "importer":
                src = f"{fmt(t.source)}.{t.source_name or t.name}"
                want = original(fmt(t.source), t.source_name or t.name)
                if want is None:
                    report.skipped[label] = f"its source {src} is not available"
                    continue
                if current is not want:
                    report.skipped[label] = f"is not sglang's {src} (replaced by someone else?): left alone"
                    continue
            why = _signature_mismatch(current, t.new)
            if why is not None:
                report.skipped[label] = f"signature differs from the one gatednorm implements: {why}"
                continue
            pending.append((mod, t.name, current, t.new, label))

        for mod, name, orig, new, label in pending:
            setattr(mod, name, new)
            _registry.append(_Entry(mod, name, orig, new))
            report.patched.append(label)
        if _registry:
            _state["package"] = package
        if report.patched:
            logger.info("%s", report.summary())
        return report


def unpatch() -> list:
    """Restore every original object replaced by patch(): afterwards `getattr(module, name) is
    original` for each. A name replaced by someone else after patch() is left alone (logged).
    Importers imported after patch() (which copied a patched function) are restored too.
    Returns the restored "module.name" labels."""
    with _lock:
        restored = []
        package = _state["package"]
        by_source = {(e.module.__name__, e.name): e for e in _registry}
        for e in reversed(_registry):
            if getattr(e.module, e.name, None) is e.new:
                setattr(e.module, e.name, e.original)
                restored.append(f"{e.module.__name__}.{e.name}")
            else:
                logger.warning("gatednorm: %s.%s changed after patch(); not restored", e.module.__name__, e.name)
        if package is not None:
            for t in _TARGETS:
                if t.kind != "importer" or t.disabled:
                    continue
                mod = sys.modules.get(t.module.format(fla=package))
                src = by_source.get((t.source.format(fla=package), t.source_name or t.name))
                if mod is not None and src is not None and getattr(mod, t.name, None) is src.new:
                    setattr(mod, t.name, src.original)
                    restored.append(f"{mod.__name__}.{t.name}")
        _registry.clear()
        _state["package"] = None
        return restored


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
