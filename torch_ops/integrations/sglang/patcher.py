"""patch() / unpatch() / is_patched(): replace the objects listed in `targets.TARGETS` after the
checks of `checks.py`, keep every original, put them back."""
from __future__ import annotations

import gc
import inspect
import logging
import re
import sys
import threading
import types

from . import checks
from .report import PatchReport
from .targets import NO_CUDA_KERNELS, TARGETS, TESTED_VERSIONS, Target

logger = logging.getLogger(__name__)

_MISSING = object()


class _Entry:
    """One replaced binding: `holder` (a module, or a class for methods) `.name`."""
    __slots__ = ("holder", "name", "original", "new", "label")

    def __init__(self, holder, name, original, new, label):
        self.holder, self.name, self.original, self.new, self.label = holder, name, original, new, label


_registry: list[_Entry] = []
_state: dict = {"package": None}
_lock = threading.RLock()


def is_patched() -> bool:
    """True while at least one sglang object is replaced by gatednorm's."""
    return bool(_registry)


def _entry(holder, name):
    return next((e for e in _registry if e.holder is holder and e.name == name), None)


def _holder(mod, name: str):
    """(object holding the binding, attribute name): the module, or the class of "Class.method"."""
    if "." not in name:
        return mod, name
    cls_name, attr = name.split(".", 1)
    return getattr(mod, cls_name, None), attr


def _current(holder, attr):
    """The bound object, or _MISSING. A class's own attribute only: an inherited method is its
    base class's to replace."""
    if holder is None:
        return _MISSING
    if isinstance(holder, type):
        return holder.__dict__.get(attr, _MISSING)
    return getattr(holder, attr, _MISSING)


# =============================================================================================
# Live instances
# =============================================================================================

_CACHED_FORWARDS = ("_forward_method", "_original_forward_method")


def rebind_instances(classes: tuple, swaps: dict) -> int:
    """Re-point the bound methods sglang's ops cache on themselves: `_forward_method` (bound at
    construction by MultiPlatformOp, <= 0.5.15; at the first call by BaseFusedOp, 0.5.16+) and
    `_original_forward_method` (kept while torch.compile runs forward_native). A bound method
    holds the function it was made from, so replacing the class attribute does not reach them:
    those made from a key of `swaps` are re-made from its value. Instances of `classes` are found
    through the garbage collector (a one-off scan per patch / unpatch that replaces a method).
    Returns how many were re-pointed."""
    if not swaps:
        return 0
    count = 0
    for obj in gc.get_objects():
        if not issubclass(type(obj), classes):  # type(), not isinstance(): no proxy __class__ lookups
            continue
        attrs = vars(obj)
        for name in _CACHED_FORWARDS:
            m = attrs.get(name)
            if isinstance(m, types.MethodType) and m.__self__ is obj and m.__func__ in swaps:
                attrs[name] = types.MethodType(swaps[m.__func__], obj)
                count += 1
    return count


# =============================================================================================
# patch / unpatch
# =============================================================================================

def _version_notes(report: PatchReport, version: str, layout: str) -> None:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if m:
        expect = "kernels" if tuple(map(int, m.groups())) >= (0, 5, 16) else "srt"
        if expect != layout:
            report.notes.append(f"sglang {version} has the {layout!r} layout, {expect!r} expected for this "
                                "release (a development build?): patching by layout")
    if version not in TESTED_VERSIONS:
        report.notes.append(f"sglang {version} is not among the tested releases {', '.join(TESTED_VERSIONS)}; "
                            "each function is still checked against its live signature")


def _original(cache: dict, module_name: str, name: str):
    """A defining module's original object (before any patch of ours), or None."""
    mod = cache.get(module_name) or sys.modules.get(module_name)
    if mod is None or not hasattr(mod, name):
        return None
    e = _entry(mod, name)
    return e.original if e is not None else getattr(mod, name)


def _plan(t: Target, package: str, report: PatchReport, cache: dict):
    """(holder, attribute, original, replacement, label) to apply, or None with the reason
    recorded in the report."""
    fmt = lambda s: s.format(fla=package)  # noqa: E731
    modname = fmt(t.module)
    label = f"{modname}.{t.name}"
    if t.needs_cuda_kernels and not checks.cuda_kernels_built():
        report.skipped[label] = NO_CUDA_KERNELS
        return None
    mod = checks.import_module(modname, report, cache)
    if mod is None:
        return None
    holder, attr = _holder(mod, t.name)
    current = _current(holder, attr)
    if current is _MISSING:
        if t.optional or t.kind == "class":
            report.absent.append(label)
        else:
            report.skipped[label] = "not defined in this release"
        return None
    e = _entry(holder, attr)
    if e is not None:
        if current is e.new:
            report.already_patched.append(label)
        else:
            report.skipped[label] = "replaced by someone else after gatednorm patched it: left alone"
        return None
    if t.kind in ("class", "importer"):
        src = f"{fmt(t.source)}.{t.source_name or t.name}"
        want = _original(cache, fmt(t.source), t.source_name or t.name)
        if t.kind == "class":
            if want is None:
                report.skipped[label] = f"cannot check: {src} is not available"
            elif current is want:
                report.checked.append(label)
            else:
                report.skipped[label] = (f"is {getattr(current, '__module__', '?')}."
                                         f"{getattr(current, '__qualname__', current)}, not {src}: its forward "
                                         "does not read the patched globals")
            return None
        if want is None:
            report.skipped[label] = f"its source {src} is not available"
            return None
        if current is not want:
            report.skipped[label] = f"is not sglang's {src} (replaced by someone else?): left alone"
            return None
    if t.kind == "flag":
        return (holder, attr, current, t.new, label) if current is True else None
    new = t.new
    if t.kind == "method":
        if not inspect.isfunction(current):
            report.skipped[label] = f"is {type(current).__name__}, not a plain method"
            return None
        try:
            new = t.new(current, mod)  # the replacement falls back to `current` (see addnorm.py)
        except LookupError as err:
            report.skipped[label] = f"not the sglang this replacement was written for: {err}"
            return None
    why = checks.signature_mismatch(current, new)
    if why is not None:
        report.skipped[label] = f"signature differs from the one gatednorm implements: {why}"
        return None
    return holder, attr, current, new, label


def patch() -> PatchReport:
    """Replace sglang's norm entry points with gatednorm's (see the package docstring) and return
    a PatchReport. Idempotent: a second call replaces nothing (`report.patched` is empty,
    `report.already_patched` lists the earlier replacements). Raises RuntimeError, patching
    nothing, for an unknown sglang layout, an NPU platform, or a CUDA process with a CPU-only
    build of gatednorm."""
    with _lock:
        layout, package = checks.detect_layout()
        version = checks.sglang_version()
        report = PatchReport(sglang_version=version, layout=layout, layout_package=package)
        _version_notes(report, version, layout)
        if _state["package"] not in (None, package):
            raise RuntimeError(f"gatednorm: already patched for {_state['package']}, now {package}?")

        cache: dict = {}
        checks.platform_guard([checks.import_module(t.module.format(fla=package), report, cache)
                               for t in TARGETS if t.kind in ("defining", "flag")])
        pending = [p for p in (_plan(t, package, report, cache) for t in TARGETS) if p is not None]

        swaps, classes = {}, []
        for holder, name, orig, new, label in pending:
            setattr(holder, name, new)
            _registry.append(_Entry(holder, name, orig, new, label))
            report.patched.append(label)
            if isinstance(holder, type):
                swaps[orig] = new
                classes.append(holder)
        report.rebound = rebind_instances(tuple(classes), swaps)
        if _registry:
            _state["package"] = package
        if report.patched:
            logger.info("%s", report.summary())
        return report


def unpatch() -> list:
    """Restore every original object replaced by patch(): afterwards `getattr(module, name) is
    original` for each, and live instances' cached bound methods are re-made from the original
    methods. A name replaced by someone else after patch() is left alone (logged). Importers
    imported after patch() (which copied a patched function) are restored too. Returns the
    restored labels."""
    with _lock:
        restored = []
        package = _state["package"]
        by_source = {(e.holder.__name__, e.name): e for e in _registry if isinstance(e.holder, types.ModuleType)}
        swaps, classes = {}, []
        for e in reversed(_registry):
            if _current(e.holder, e.name) is e.new:
                setattr(e.holder, e.name, e.original)
                restored.append(e.label)
                if isinstance(e.holder, type):
                    swaps[e.new] = e.original
                    classes.append(e.holder)
            else:
                logger.warning("gatednorm: %s changed after patch(); not restored", e.label)
        rebind_instances(tuple(classes), swaps)
        if package is not None:
            for t in TARGETS:
                if t.kind != "importer":
                    continue
                mod = sys.modules.get(t.module.format(fla=package))
                src = by_source.get((t.source.format(fla=package), t.source_name or t.name))
                if mod is not None and src is not None and getattr(mod, t.name, None) is src.new:
                    setattr(mod, t.name, src.original)
                    restored.append(f"{mod.__name__}.{t.name}")
        _registry.clear()
        _state["package"] = None
        return restored
