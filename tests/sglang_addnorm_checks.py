"""The RMSNorm-family part of the check script of tests/test_sglang_patch.py (it runs in that
subprocess, with one real sglang release first on sys.path): the patched `forward_cuda` of
sglang's `RMSNorm` and `GemmaRMSNorm` (`sglang.srt.layers.layernorm`).

forward_cuda is called directly with CPU tensors (our ops run on the CPU too; on a GPU with
CUDA tensors as well) and compared with sglang's own `forward_native` of the same module:
ungated, fused add (both returned tensors, and that the caller's x and residual were updated in
place), gemma, fp32 / bf16, N-D and row-strided inputs; sglang's cached bound methods on live
instances are re-pointed and restored. Fallbacks (cases handed to sglang's original method) run
on the CPU only: they are decided before any device work.

sgl_kernel (the functions the original forward_cuda calls) is a GPU-only wheel, not installed:
`standins()` are eager PyTorch versions with its signatures and in-place semantics, recording
their calls. On the CPU they become the layernorm module's globals (which sglang binds only on
CUDA); on a GPU without sgl_kernel, a stub `sgl_kernel` package holds them (and placeholders
for the rest of it) so that the layernorm module and the models can be imported at all.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import math
import sys
import types

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torch_ops.add_rms_norm import add_rms_norm_ref, rms_norm_ref

U = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24}
CHECKS = ("rmsnorm_bindings", "rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "rmsnorm_fallbacks")
CALLS: list = []  # names of the sgl_kernel stand-ins called, in order


# =============================================================================================
# sgl_kernel stand-ins
# =============================================================================================

def _standins() -> dict:
    def rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None):
        CALLS.append("rmsnorm")
        y = rms_norm_ref(input, weight, eps)
        return y if out is None else out.copy_(y)

    def fused_add_rmsnorm(input, residual, weight, eps=1e-6, enable_pdl=False):
        CALLS.append("fused_add_rmsnorm")
        out, h = add_rms_norm_ref(input, residual, weight, eps)
        residual.copy_(h)
        input.copy_(out)

    def gemma_rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None):
        CALLS.append("gemma_rmsnorm")
        y = rms_norm_ref(input, weight, eps, gemma=True)
        return y if out is None else out.copy_(y)

    def gemma_fused_add_rmsnorm(input, residual, weight, eps=1e-6, enable_pdl=False):
        CALLS.append("gemma_fused_add_rmsnorm")
        out, h = add_rms_norm_ref(input, residual, weight, eps, gemma=True)
        residual.copy_(h)
        input.copy_(out)

    return {f.__name__: f for f in (rmsnorm, fused_add_rmsnorm, gemma_rmsnorm, gemma_fused_add_rmsnorm)}


STANDINS = _standins()


class _Missing:
    """A name of sgl_kernel that the stub does not have: attributes are more of them (module
    level code reads e.g. `scalar_types.uint4b8`), calling one raises."""

    def __init__(self, qualname):
        self._qualname = qualname

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self._qualname}.{name}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self._qualname}: sgl_kernel is not installed (tests/sglang_addnorm_checks.py stub)")

    def __repr__(self):
        return f"<sgl_kernel stub: {self._qualname}>"


class _StubModule(types.ModuleType):
    """`sgl_kernel` (or one of its submodules) without the wheel: any other name imported from
    it is a _Missing. On CUDA, sglang's modules import sgl_kernel kernels at import time
    (activation, sampler, quantization, ...: in the import chains of the models and of mixer2);
    none of them runs in the checks."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("sgl_kernel."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def install_sgl_kernel_stub() -> bool:
    """Before sglang is imported: on a GPU without sgl_kernel, a stub package with the four
    stand-ins; any other name (or submodule) imported from it raises when called."""
    if not torch.cuda.is_available() or importlib.util.find_spec("sgl_kernel") is not None:
        return False
    stub = _StubModule("sgl_kernel")
    stub.__spec__ = importlib.machinery.ModuleSpec("sgl_kernel", _StubFinder(), is_package=True)
    stub.__path__ = []
    stub.__dict__.update(STANDINS)
    sys.modules["sgl_kernel"] = stub
    sys.meta_path.insert(0, _StubFinder())
    return True


# What sglang's layernorm binds only on CUDA, for the original forward_cuda on CPU tensors: the
# sgl_kernel functions, and no JIT kernels (its HF-rounding paths then take forward_native, as on
# a GPU without them).
_CPU_GLOBALS = {**STANDINS, "_jit_rmsnorm_hf_available": False,
                "is_supported_jit_fused_add_rmsnorm_hidden_size": lambda d: False}


def _install_cpu_globals(ln) -> None:
    for name, obj in _CPU_GLOBALS.items():
        if not hasattr(ln, name):
            setattr(ln, name, obj)


@contextlib.contextmanager
def _module_globals(ln, values: dict):
    """Set some of the module's globals for a while (sglang's methods read them at call time)."""
    saved = {k: getattr(ln, k) for k in values}
    for k, v in values.items():
        setattr(ln, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ln, k, v)


# =============================================================================================
# helpers
# =============================================================================================

class Recorder(TorchDispatchMode):
    """Records the name of every op dispatched under it (also used by sglang_gated_checks.py)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def _run(fn, *args, ours=True):
    """fn(*args) -> (result, gatednorm ops). ours: it must reach torch.ops.gatednorm and no
    sgl_kernel stand-in; else it must not reach torch.ops.gatednorm."""
    n = len(CALLS)
    with Recorder() as rec:
        out = fn(*args)
    mine = sorted({o for o in rec.ops if o.startswith("gatednorm::")})
    if ours:
        assert mine, f"no torch.ops.gatednorm op dispatched; ops: {rec.ops}"
        assert len(CALLS) == n, f"sgl_kernel stand-ins called: {CALLS[n:]}"
    else:
        assert not mine, f"gatednorm ops dispatched on a fallback: {mine}"
    return out, mine


def _close(a, e, dtype, n, what, units=2.0):
    """Elementwise, relative to the reference's rms: `units` roundings to dtype plus the fp32
    error of a sum over n (the same bound as the gated checks)."""
    tol = units * U[dtype] + 2.0 ** -24 * (32 + 8 * math.sqrt(n))
    a, e = a.detach().cpu(), e.detach().cpu().double()
    assert a.shape == e.shape and a.dtype == dtype, f"{what}: {a.dtype}{tuple(a.shape)} vs {dtype}{tuple(e.shape)}"
    atol = tol * max(e.square().mean().sqrt().item(), 1e-30)
    torch.testing.assert_close(a.double(), e, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")


def _randn(*shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)


# =============================================================================================
# the checks
# =============================================================================================

class AddNormChecks:
    """Built before patch() (live instances, as sglang builds them); `checks()` after it;
    `check_restored()` after each unpatch()."""

    N = 64

    def __init__(self, ln, gn, devices, skip):
        self.ln, self.gn, self.devices, self.Skip = ln, gn, devices, skip
        _install_cpu_globals(ln)
        self.orig = {"RMSNorm": ln.RMSNorm.forward_cuda, "GemmaRMSNorm": ln.GemmaRMSNorm.forward_cuda}
        # sglang binds _forward_method to forward_cuda on CUDA (0.5.15 at construction, 0.5.23 at
        # the first call): pinned here as sglang does there; one instance is "in torch.compile
        # mode" (forward_native now, forward_cuda kept in _original_forward_method)
        self.live = {"RMSNorm": self._weighted(ln.RMSNorm(self.N, eps=1e-6)),
                     "GemmaRMSNorm": self._weighted(ln.GemmaRMSNorm(self.N, eps=1e-6))}
        for m in self.live.values():
            m._forward_method = m.forward_cuda
        self.compiling = ln.RMSNorm(self.N)
        self.compiling._forward_method = self.compiling.forward_native
        self.compiling._original_forward_method = self.compiling.forward_cuda

    @staticmethod
    def _weighted(norm, seed=1):
        """Weights that are neither ones nor zeros (RMSNorm starts at 1, GemmaRMSNorm at 0)."""
        with torch.no_grad():
            w = norm.weight
            w.copy_((0 if w.abs().sum() == 0 else 1) + 0.5 * _randn(w.shape[0], dtype=w.dtype, device="cpu", seed=seed))
        return norm

    def _norm(self, cls, device, dtype, **kwargs):
        return self._weighted(getattr(self.ln, cls)(self.N, eps=1e-6, **kwargs)).to(device=device, dtype=dtype)

    def checks(self) -> dict:
        """name -> check (names: CHECKS)."""
        return dict(zip(CHECKS, (self.bindings, self.rmsnorm, self.fused_add, self.gemma, self.fallbacks)))

    # ---- bindings and live instances ------------------------------------------------------
    def bindings(self):
        ln = self.ln
        for cls, orig in self.orig.items():
            new = getattr(ln, cls).forward_cuda
            assert new is not orig and new.__module__.startswith("torch_ops."), f"{cls}.forward_cuda not patched"
            assert self.live[cls]._forward_method.__func__ is new, f"live {cls}: cached forward_cuda not re-pointed"
        assert self.compiling._original_forward_method.__func__ is ln.RMSNorm.forward_cuda
        assert self.compiling._forward_method.__func__ is ln.RMSNorm.forward_native
        return "RMSNorm, GemmaRMSNorm, 3 cached bound methods"

    def check_restored(self):
        ln = self.ln
        for cls, orig in self.orig.items():
            assert getattr(ln, cls).forward_cuda is orig, f"{cls}.forward_cuda not restored"
            assert self.live[cls]._forward_method.__func__ is orig, f"live {cls}: cached forward_cuda not restored"
        assert self.compiling._original_forward_method.__func__ is self.orig["RMSNorm"]

    # ---- ungated ---------------------------------------------------------------------------
    def rmsnorm(self):
        ops = set()
        for dev in self.devices:
            for dtype, wdtype in ((torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                  (torch.bfloat16, torch.float32)):
                norm = self._norm("RMSNorm", dev, dtype)
                norm.weight.data = norm.weight.data.to(wdtype)
                for shape in ((7, self.N), (2, 3, self.N)):
                    x = _randn(*shape, dtype=dtype, device=dev)
                    x0 = x.clone()
                    y, o = _run(norm.forward_cuda, x)
                    ops.update(o)
                    assert torch.equal(x, x0), "x changed"
                    _close(y, norm.forward_native(x0), dtype, self.N, f"RMSNorm {dev} {dtype} w {wdtype} {shape}")
                # rows of a wider tensor (q/k slices of a packed projection)
                big = _randn(5, 2 * self.N, dtype=dtype, device=dev)
                y, _ = _run(norm.forward_cuda, big[:, :self.N])
                _close(y, norm.forward_native(big[:, :self.N]), dtype, self.N, f"RMSNorm strided {dev} {dtype}")
            x = _randn(4, self.N, dtype=torch.float32, device=dev)
            live = self.live["RMSNorm"].to(dev)
            y, _ = _run(live, x)  # nn.Module call -> sglang's forward -> the cached _forward_method
            _close(y, live.forward_native(x), torch.float32, self.N, f"live RMSNorm {dev}")
        return sorted(ops)

    # ---- fused add --------------------------------------------------------------------------
    def _fused_case(self, norm, x, res, post=None, what=""):
        """In place: the caller's x holds the output, the residual (the caller's, or with post a
        new one) the sum; compared with forward_native on the inputs before the call."""
        dtype = x.dtype
        x0, r0 = x.clone(), res.clone()
        p0 = None if post is None else post.clone()
        (y, r), o = _run(norm.forward_cuda, x, res, post)
        # sglang's forward_cuda adds post into the residual first (its TODO: not (x + r) + post)
        ref_y, ref_r = norm.forward_native(x0, r0 if post is None else r0 + p0)
        assert y.data_ptr() == x.data_ptr() and torch.equal(y, x), f"{what}: output not written into x"
        if post is None:
            assert r.data_ptr() == res.data_ptr(), f"{what}: residual not updated in place"
        else:  # sglang adds post into a new residual: the caller's stays as it was
            assert torch.equal(res, r0), f"{what}: the caller's residual changed"
        assert r.dtype == ref_r.dtype and torch.equal(r, ref_r), f"{what}: residual differs from forward_native's"
        # our norm is of the stored residual (rounded to its dtype); forward_native's of the fp32
        # sum: equal up to that rounding (1 more unit), and within 2 of forward_native(residual)
        ref_plain = norm.forward_native(ref_r.to(dtype)) if r.dtype == dtype else ref_y
        _close(y, ref_plain, dtype, self.N, f"{what}: out vs rmsnorm(residual)")
        _close(y, ref_y, dtype, self.N, f"{what}: out vs forward_native", units=3.0)
        return o

    def fused_add(self):
        ops = set()
        for dev in self.devices:
            for dtype in (torch.float32, torch.bfloat16):
                norm = self._norm("RMSNorm", dev, dtype)
                for i, shape in enumerate(((9, self.N), (2, 3, self.N))):
                    x, res = (_randn(*shape, dtype=dtype, device=dev, seed=s) for s in (2 * i, 2 * i + 1))
                    ops.update(self._fused_case(norm, x, res, what=f"{dev} {dtype} {shape}"))
                post = _randn(9, self.N, dtype=dtype, device=dev, seed=7)
                x, res = _randn(9, self.N, dtype=dtype, device=dev, seed=5), _randn(9, self.N, dtype=dtype, device=dev)
                self._fused_case(norm, x, res, post, what=f"{dev} {dtype} post_residual_addition")
                # x: rows of a wider tensor, updated in place; the rest of the rows untouched
                big = torch.full((6, 2 * self.N), float("nan"), dtype=dtype, device=dev)
                big[:, :self.N] = _randn(6, self.N, dtype=dtype, device=dev, seed=8)
                self._fused_case(norm, big[:, :self.N], _randn(6, self.N, dtype=dtype, device=dev), what="strided x")
                assert torch.isnan(big[:, self.N:]).all(), "wrote outside x's rows"
            # fp32 residual stream with a bf16 x (RMSNorm(fp32_residual=True)): forward_native's semantics
            norm = self._norm("RMSNorm", dev, torch.bfloat16, fp32_residual=True)
            x, res = _randn(9, self.N, dtype=torch.bfloat16, device=dev), _randn(9, self.N, dtype=torch.float32, device=dev)
            ops.update(self._fused_case(norm, x, res, what=f"{dev} fp32 residual"))
            # empty (idle data-parallel ranks): sglang's early return, nothing launched
            x, res = torch.empty(0, self.N, device=dev), torch.empty(0, self.N, device=dev)
            y, r = norm.forward_cuda(x, res)
            assert y is x and r is res
            live = self.live["RMSNorm"].to(dev)
            x, res = _randn(3, self.N, dtype=torch.float32, device=dev), _randn(3, self.N, dtype=torch.float32, device=dev)
            (_, _), o = _run(live, x, res)
            assert "gatednorm::fused_add_rms_norm" in o
        return sorted(ops)

    # ---- gemma -------------------------------------------------------------------------------
    def gemma(self):
        ops = set()
        for dev in self.devices:
            for dtype in (torch.float32, torch.bfloat16):
                norm = self._norm("GemmaRMSNorm", dev, dtype)
                for shape in ((7, self.N), (2, 3, self.N)):
                    x = _randn(*shape, dtype=dtype, device=dev, seed=3)
                    y, o = _run(norm.forward_cuda, x)
                    ops.update(o)
                    _close(y, norm.forward_native(x), dtype, self.N, f"GemmaRMSNorm {dev} {dtype} {shape}")
                    res = _randn(*shape, dtype=dtype, device=dev, seed=4)
                    ops.update(self._fused_case(norm, x, res, what=f"Gemma {dev} {dtype} {shape}"))
            live = self.live["GemmaRMSNorm"].to(dev)
            x = _randn(4, self.N, dtype=torch.float32, device=dev)
            y, _ = _run(live, x)
            _close(y, live.forward_native(x), torch.float32, self.N, f"live GemmaRMSNorm {dev}")
        return sorted(ops)

    # ---- fallbacks to sglang's original method --------------------------------------------------
    def fallbacks(self):
        # CPU tensors: on a GPU too, the original must meet the stand-ins and no JIT kernels
        with _module_globals(self.ln, _CPU_GLOBALS):
            return self._fallbacks()

    def _fallbacks(self):
        ln, gn = self.ln, self.gn
        before = gn.fallback_counts()
        x, res = _randn(5, self.N, dtype=torch.bfloat16, device="cpu"), _randn(5, self.N, dtype=torch.bfloat16,
                                                                                   device="cpu", seed=1)
        expect = {}

        def fallback(key, norm, *args, standin=None, native=True):
            n = len(CALLS)
            got, _ = _run(norm.forward_cuda, *(a.clone() if torch.is_tensor(a) else a for a in args), ours=False)
            if native:  # the original's path for this case is forward_native
                want = norm.forward_native(*(a.clone() for a in args if torch.is_tensor(a)))
                same = all(map(torch.equal, got, want)) if isinstance(got, tuple) else torch.equal(got, want)
                assert same, f"{key}: not sglang's own result"
            if standin:
                assert CALLS[n:] == [standin], f"{key}: sgl_kernel stand-ins called {CALLS[n:]}, not [{standin}]"
            expect[key] = expect.get(key, 0) + 1

        rms = "RMSNorm.forward_cuda: "
        fallback(rms + "variance_size_override", self._norm("RMSNorm", "cpu", torch.bfloat16, var_hidden_size=32), x)
        cast = self._norm("RMSNorm", "cpu", torch.bfloat16, cast_x_before_out_mul=True)
        fallback(rms + "cast_x_before_out_mul", cast, x)
        fallback(rms + "cast_x_before_out_mul", cast, x, res)
        plain = self._norm("RMSNorm", "cpu", torch.bfloat16)
        fallback(rms + "residual torch.float16 with x torch.bfloat16", plain, x, res.half(),
                 standin="fused_add_rmsnorm", native=False)
        fallback(rms + "x or residual not updatable in place by rows", plain, x.t().contiguous().t(), res,
                 standin="fused_add_rmsnorm", native=False)
        fallback("GemmaRMSNorm.forward_cuda: residual torch.float16 with x torch.bfloat16",
                 self._norm("GemmaRMSNorm", "cpu", torch.bfloat16), x, res.half(),
                 standin="gemma_fused_add_rmsnorm", native=False)
        with _module_globals(ln, {"is_batch_invariant_mode_enabled": lambda: True}):  # read at call time
            fallback(rms + "batch-invariant mode", plain, x, res)
        if "quant_linear" in inspect.signature(self.orig["RMSNorm"]).parameters:  # 0.5.16+
            with _module_globals(ln, {"_flashinfer_rmsnorm_quant_available": True}):
                # a plain Linear has no static FP8 scale: the original goes on to its plain path
                fallback(rms + "FP8 input-quant fusion", plain, x, None, None, torch.nn.Linear(2, 2),
                         standin="rmsnorm", native=False)
        # not fallbacks: an empty input (sglang's early return) and fp32 (beyond sgl_kernel)
        empty = torch.empty(0, self.N, dtype=torch.bfloat16)
        assert plain.forward_cuda(empty) is empty
        self._norm("RMSNorm", "cpu", torch.bfloat16, var_hidden_size=32).forward_cuda(empty)  # returns before
        _run(self._norm("RMSNorm", "cpu", torch.float32).forward_cuda, x.float())
        after = gn.fallback_counts()
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        assert diff == expect, f"fallback counts {diff}, expected {expect}"
        return diff
