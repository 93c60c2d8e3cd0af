"""Checks before anything is replaced: which sglang layout and release is installed, whether a
replacement binds every call the live original accepts, importing optional modules, platforms
gatednorm cannot serve."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from typing import Optional

import torch

from ... import has_cuda_kernels
from .report import PatchReport
from .targets import LAYOUTS, SUPPORTED


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


def sglang_version() -> str:
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


def signature_mismatch(original, replacement) -> Optional[str]:
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


def import_module(name: str, report: PatchReport, cache: dict):
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


def platform_guard(modules):
    """Raise (before anything is replaced) where gatednorm cannot run sglang's norms."""
    for mod in modules:
        if mod is not None and getattr(mod, "_is_npu", False):
            raise RuntimeError(f"gatednorm: sglang runs on an Ascend NPU ({mod.__name__}._is_npu): gatednorm has "
                               "no NPU kernels; nothing patched")
    if torch.cuda.is_available() and not cuda_kernels_built():
        raise RuntimeError("gatednorm: this process has CUDA but torch_ops was built without its CUDA kernels, so "
                           "every patched sglang norm would fail on GPU tensors; rebuild gatednorm with nvcc. "
                           "Nothing patched")


def cuda_kernels_built() -> bool:
    """torch_ops.has_cuda_kernels(), looked up here at call time (the CPU tests replace this
    module's `has_cuda_kernels` to patch the forward_cuda targets with a CPU-only build)."""
    return has_cuda_kernels()
