"""Shared fixtures and helpers of the gatednorm test suite.

- `device`: every test that takes it runs on "cpu" and, when a GPU and a CUDA build
  of the kernels are present, on "cuda" (skipped otherwise, so the skip is visible).
- seeding: every test starts from the same RNG state (reproducible failures).
- `poison`: outputs preallocated for the `*_out` ops are filled with NaN, so any
  element the kernel forgets to write fails the comparison.
- `tol(dtype, n)`: tolerances derived from the precision of the computation (below).
"""
from __future__ import annotations

import functools
import math
import random

import pytest
import torch

import torch_ops

HAS_CUDA = torch.cuda.is_available() and torch_ops.has_cuda_kernels()
_CUDA_SKIP = pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of gatednorm")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=_CUDA_SKIP)]
requires_cuda = _CUDA_SKIP

ops = torch.ops.gatednorm


def cuda_kernels(fn):
    """Names of the CUDA kernels fn() launches (after one warm-up call); empty when
    torch.profiler sees none (CUPTI missing, as under compute-sanitizer)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


# The CPU-emulator test build (scripts/emu_check.sh): its CUDA kernels serve "cpu".
EMU = bool(getattr(torch_ops._C, "built_for_emulator", 0))


@functools.lru_cache(maxsize=None)
def _emu_trace():
    """scripts/emu_trace.py (not a package: loaded from its path)."""
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("emu_trace", os.path.join(root, "scripts", "emu_trace.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def emu_kernels(fn):
    """Names of the kernels fn() launches on the CPU emulator: its launch trace
    (GN_EMU_TRACE, read at each launch: csrc/emu) named from the library's symbols
    (scripts/emu_trace.py)."""
    import os
    import tempfile
    fd, path = tempfile.mkstemp(suffix=".trace")
    os.close(fd)
    os.environ["GN_EMU_TRACE"] = path
    try:
        fn()
    finally:
        del os.environ["GN_EMU_TRACE"]
    try:
        return [name for name, _ in _emu_trace().launches(path, torch_ops._C.__file__)]
    finally:
        os.remove(path)


def device_sms(device):
    """SMs of the device whose kernels serve `device`: the GPU's, or the emulated one's
    (GN_EMU_SMS, default 4: csrc/emu)."""
    import os
    if device == "cuda":
        return torch.cuda.get_device_properties(0).multi_processor_count
    return int(os.environ.get("GN_EMU_SMS", "4"))


def kernel_names(fn, device):
    """Names of the CUDA kernels fn() launches: torch.profiler on "cuda", the emulator's
    trace on "cpu" under the emulator build; skips where neither can name them (a CPU build,
    or CUPTI missing, as under compute-sanitizer: not a wrong kernel)."""
    if device == "cuda":
        names = cuda_kernels(fn)
        if not names:
            pytest.skip("torch.profiler sees no CUDA kernels in this process")
        return names
    if not EMU:
        pytest.skip("a CPU build has no CUDA kernels to name (the emulator build has: scripts/emu_check.sh)")
    return emu_kernels(fn)


def regs_vecs(names, kernel):
    """The vectors a thread (the second template argument) of each launch of the register
    kernel `kernel` ("bwd_regs", "fwd_regs") among the kernel names, as a set of ints."""
    return {int(template_args(n, kernel)[1].replace("(int)", "")) for n in names if kernel + "<" in n}


def template_args(name, kernel):
    """The template arguments of `kernel` in a demangled CUDA kernel name (defaulted ones
    included, as the demangler prints them; spaces removed), or None when the name is
    another kernel's. Names carry parentheses before the kernel ("gn::(anonymous
    namespace)::bwd_regs<...>(...)"), so the arguments are matched by bracket depth."""
    i = name.find(kernel + "<")
    if i < 0:
        return None
    args, cur, depth = [], "", 0
    for ch in name[i + len(kernel) + 1:]:
        if ch == ">" and depth == 0:
            return [a.replace(" ", "") for a in args + [cur]]
        if ch == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        depth += {"<": 1, ">": -1}.get(ch, 0)
        cur += ch
    return None


def bandwidth_rich():
    """csrc/cuda/plan.h's bandwidth_rich for GPU 0: more than 30 GB/s of DRAM an SM (the
    H200; the H100 is not). Launchers tuned on the H100 keep their older choice there.
    None when this torch does not report the memory bus."""
    props = torch.cuda.get_device_properties(0)
    if not hasattr(props, "memory_bus_width"):
        return None
    return props.memory_clock_rate * props.memory_bus_width * 2 / 8 / 1e6 > 30 * props.multi_processor_count


def cuda_warmup(fn, n=3):
    """fn() n times on a side stream before a capture (plan caches, shared-memory opt-ins:
    no first-call work inside the graph)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(n):
            fn()
    torch.cuda.current_stream().wait_stream(s)


def capture_cuda_graph(step, warmup=1):
    """(graph, what step() returned while captured), after cuda_warmup(step, warmup)."""
    cuda_warmup(step, warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    return graph, static


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(0)


# ---------------------------------------------------------------- tolerances
#
# The reference runs in fp64 on the *same* rounded inputs as the kernel (inputs are
# upcast exactly), so input rounding cancels out and the error of the kernel output
# has only two sources:
#  1. the final rounding of the output to its dtype: relative error <= u, the unit
#     roundoff of the output dtype: bf16 u = 2^-8, fp16 u = 2^-11, fp32 u = 2^-24,
#     fp64 u = 2^-53. We allow 2u (a mixed-dtype product or the gate multiply may add
#     one more rounding to the fp32 value before the last cast: still <= 1 unit).
#  2. the fp32 computation (fp64 for fp64 inputs): every element goes through a handful
#     of ops (sigmoid/exp ~ a few ulp, products, rsqrt), bounded by C0 = 32 ulp of the
#     accumulation type, plus the error of the statistics mean/rstd, which are sums over
#     the group of G elements: rounding errors of a sum grow like a random walk,
#     ~sqrt(G) * u_acc (the worst case G * u_acc never shows with random data; 8 is the
#     safety factor). This error is relative to the typical element magnitude, hence
#     it also sets the absolute floor (atol = rtol * rms(reference)) that covers
#     elements whose exact value is ~0 (where a relative bound is meaningless).
# fp64 inputs: u_acc = 2^-53 (gradcheck needs ~1e-10 exactness: we are far below it).
U = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}


def acc_u(dtype: torch.dtype) -> float:
    """Unit roundoff of the accumulation type: fp64 for fp64 inputs, else fp32."""
    return U[torch.float64] if dtype == torch.float64 else U[torch.float32]


def tol(dtype: torch.dtype, n: int) -> float:
    """Relative tolerance of an element computed from groups of n values, rounded to dtype."""
    return 2 * U[dtype] + acc_u(dtype) * (32 + 8 * math.sqrt(n))


def grad_tol(dtype: torch.dtype, n: int, out_dtype: torch.dtype | None = None) -> float:
    """Backward: dx = (w*dy0 - vhat*c1 - c2)*rstd combines three O(1) terms with the
    group sums c1, c2 (same sqrt(n) growth as the forward); the result is rounded to
    out_dtype (the gradient's dtype). Cancellation between the terms makes the error
    relative to the *typical* gradient magnitude: the check uses atol = rtol*rms."""
    return 4 * U[out_dtype or dtype] + acc_u(dtype) * (64 + 16 * math.sqrt(n))


def reduce_tol(x_dtype: torch.dtype, m: int, n: int, param_dtype: torch.dtype) -> float:
    """Norm-wise tolerance of dw/db = sum over m rows (fp32 accumulation: sqrt(m) growth
    of the rounding errors on top of the per-element error of the summands, which
    carry the fp32 error of the group statistics over n), rounded to the parameter dtype.
    The per-element rounding of the summands (dy0 or vhat in the input dtype) does not
    enter: the reference sees the same rounded dy and x."""
    return 2 * U[param_dtype] + acc_u(x_dtype) * (64 + 16 * math.sqrt(m) + 16 * math.sqrt(n))


def rms(t: torch.Tensor) -> float:
    t = t.double()
    return t.square().mean().sqrt().item() if t.numel() else 0.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = "", scale: float = 0.0):
    """Elementwise |a - e| <= rtol*|e| + rtol*max(rms(e), scale), in fp64; NaN anywhere fails.
    `scale`: the typical magnitude of the terms the result was computed from, when it can be
    much larger than the result itself (cancellation, see bwd_scales)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double().cpu(), expected.double().cpu()
    assert not torch.isnan(a).any(), f"{what}: NaN in the result (unwritten output element?)"
    atol = rtol * max(rms(e), scale, 1e-30)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def assert_normwise(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = ""):
    """||a - e|| / ||e|| <= rtol, for reduced quantities (dw, db)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double().cpu(), expected.double().cpu()
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    err = (a - e).norm().item() / max(e.norm().item(), 1e-300)
    assert err <= rtol, f"{what}: norm-wise relative error {err:.3e} > {rtol:.3e}"


# ---------------------------------------------------------------- data helpers

def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill a preallocated output with NaN in place (unwritten elements then fail)."""
    return t.fill_(float("nan"))


def make_inputs(shape, dtype, device, *, z=True, weight=True, bias=True, param_dtype=None):
    """x ~ randn; z spread over [-3, 3] plus noise (sigmoid neither saturated nor ~0.5
    everywhere); weight ~ 1 + 0.5*randn and bias ~ 0.5*randn (never all ones / zeros,
    so a kernel that ignores them fails)."""
    n = shape[-1]
    pdt = param_dtype or dtype
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    zt = (torch.empty(shape, dtype=torch.float64).uniform_(-3, 3) + 0.3 * torch.randn(shape, dtype=torch.float64)
          ).to(dtype) if z else None
    w = (1 + 0.5 * torch.randn(n, dtype=torch.float64)).to(pdt) if weight else None
    b = (0.5 * torch.randn(n, dtype=torch.float64)).to(pdt) if bias else None
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return mv(x), mv(w), mv(b), mv(zt)


def f64(t):
    return None if t is None else t.detach().to(torch.float64)


def ref64(x, w, b, z, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False, activation="swish"):
    """gated_norm_ref on the inputs upcast (exactly) to fp64; result in fp64 on the CPU."""
    return torch_ops.gated_norm_ref(f64(x).cpu(), *(None if t is None else f64(t).cpu() for t in (w, b, z)),
                                    eps=eps, group_size=group_size, norm_before_gate=norm_before_gate,
                                    is_rms_norm=is_rms_norm, activation=activation)


def stats64(x, z, group_size=None, norm_before_gate=True, is_rms_norm=False, activation="swish", eps=1e-6):
    """fp64 statistics in the documented layout: shape (ngroups*M,), element g*M + r."""
    x = f64(x).cpu()
    n = x.shape[-1]
    g = n if group_size is None else group_size
    v = x.reshape(-1, n)
    if z is not None and not norm_before_gate:
        zz = f64(z).cpu().reshape(-1, n)
        s = torch.sigmoid(zz)
        v = v * (zz * s if activation in ("silu", "swish") else s)
    vg = v.reshape(v.shape[0], n // g, g)
    mean = torch.zeros_like(vg[..., 0]) if is_rms_norm else vg.mean(-1)
    var = (vg - mean[..., None]).square().mean(-1)
    rstd = (var + eps).rsqrt()
    return mean.t().reshape(-1), rstd.t().reshape(-1), vg


def free_nan_block(device, nbytes: int = 1 << 20):
    """Allocate and free a NaN-filled block: the allocator tends to hand the memory back
    to the next allocation, so a 'zero' result that is never written shows up as NaN."""
    t = torch.full((nbytes // 4,), float("nan"), dtype=torch.float32, device=device)
    del t


def bwd_scales(x, w, z, dy, group_size=None, norm_before_gate=True, is_rms_norm=False, activation="swish",
               eps=1e-6):
    """Magnitudes of the terms of the backward, for the absolute floor of the dx/dz checks.
    dx = rstd*(w*dy0 - vhat*c1 - c2) [* act(z)] is a difference of terms of size
    rstd*|w*dy*act(z)|; it can be far smaller than them (e.g. N = 1 RMS: dx ~ eps), and then
    the fp32 rounding of the terms, not |dx|, sets the error. dz before the norm is dv*x*act'(z)
    (same terms times |x*act'(z)|); dz after the norm (dy*y0*act'(z)) has no cancellation (0)."""
    n = x.shape[-1]
    g = group_size or n
    _, rstd, _ = stats64(x, z, group_size, norm_before_gate, is_rms_norm, activation, eps)
    m = x.numel() // n
    rstd_e = rstd.reshape(n // g, m).t().repeat_interleave(g, dim=1).reshape(x.shape)
    x64, dy64 = f64(x).cpu(), f64(dy).cpu()
    w64 = torch.ones(n, dtype=torch.float64) if w is None else f64(w).cpu()
    if z is None:
        a = d = torch.ones_like(x64)
    else:
        z64 = f64(z).cpu()
        s = torch.sigmoid(z64)
        a, d = (z64 * s, s * (1 + z64 * (1 - s))) if activation in ("silu", "swish") else (s, s * (1 - s))
    base = rstd_e * (w64 * dy64).abs()
    dx = rms(base * a.abs())
    dz = rms(base * (x64 * d).abs()) if (z is not None and not norm_before_gate) else 0.0
    return dx, dz
