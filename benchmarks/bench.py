"""Benchmark of gated RMSNorm / LayerNorm: ours (`torch.ops.gatednorm`) against the peers.

    python -m benchmarks.bench                 # CUDA: every row; CPU: the small CPU table
    python -m benchmarks.bench --quick         # a short subset
    python -m benchmarks.bench --only 'sweep|decode' --dtypes bf16,fp16 --csv $OUT/bench.csv

How it measures (DESIGN section 5), all in one process:

* CUDA: first the copy ceiling (a large device-to-device copy, bytes read + written, median of
  reps). Then, per row and provider: a correctness guard against the fp32 eager reference (a
  row that disagrees is marked `!` and `ok=0` in the CSV), then the time: CUDA events around
  each call, median of many reps, L2-cold by rotating among several input sets whose total
  exceeds 3x the L2 size (`--l2 flush` writes a 256 MB buffer between reps instead). The
  calls are queued behind a GPU sleep so that the host never starves the GPU: the events
  measure GPU time, not Python. Decode rows (small M) are timed as CUDA-graph replays (GPU
  time per forward) and as host wall time per eager call (N back-to-back calls, one
  synchronize, divided by N), next to `x.add_(1)` and `torch.empty_like(x)` on the same host.
* CPU: time.perf_counter, median of reps; ours vs eager (and torch.compile with --compile).

Bytes: forward = (x + z + out), backward = (x + z + dy + dx + dz) elements x element size
(weight/bias left out; no z: the z terms dropped); forward+backward = both.
GB/s = bytes / time (1 GB = 1e9 B); frac = GB/s / copy ceiling.

Providers (any that is missing or fails on a row is "n/a", never a crash):
  ours     torch_ops.layernorm_fn: torch.ops.gatednorm.gated_norm_fwd for the forward,
           gated_norm (autograd -> gated_norm_bwd) for forward+backward
  triton   FLA fla.modules.layernorm_gated.layernorm_fn (Tri Dao's kernel, as mamba_ssm):
           layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None,
                        norm_before_gate=True, is_rms_norm=False)   silu only, group <= 64 KB
  fng      FLA fla.modules.fused_norm_gate.rms_norm_gated / layer_norm_gated:
           rms_norm_gated(x, g, weight, bias, activation='swish', residual=None,
                          prenorm=False, residual_in_fp32=False, eps=1e-6)
           norm then gate only, gate required, no groups, row <= 64 KB
  eager    torch_ops.gated_norm_ref (eager PyTorch, fp32 math)
  compile  torch.compile(gated_norm_ref, dynamic=False), compiled afresh per row
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import importlib
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # a source checkout, used only when torch_ops is not installed

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}
PROVIDERS = ("ours", "triton", "fng", "eager", "compile")
HOST_REFS = ("add_", "empty_like")
PASSES = ("fwd", "fwdbwd", "graph", "host")
# Loose tolerances on the relative L2 error against the fp32 reference (output and gradients).
TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-4, torch.float64: 1e-8}
FIELDS = ["name", "M", "N", "group", "dtype", "z", "order", "rms", "provider", "pass", "time_us", "gbps",
          "frac", "device", "torch", "triton", "fla", "date", "act", "bias", "ok", "reps", "ceiling_gbps",
          "note"]


# ---------------------------------------------------------------- rows

@dataclass(frozen=True)
class Case:
    name: str
    M: int
    N: int
    group: int | None = None  # None = N
    z: bool = True
    nbg: bool = True  # norm_before_gate: True = norm, then gate ("after"); False = gate, then norm
    rms: bool = True
    bias: bool = False
    act: str = "silu"
    dtype: str = "bf16"
    kind: str = "bw"  # "bw": fwd + fwdbwd passes; "decode": graph + host passes
    eps: float = 1e-6

    @property
    def order(self) -> str:
        return "" if not self.z else ("after" if self.nbg else "before")

    def passes(self):
        return ("graph", "host") if self.kind == "decode" else ("fwd", "fwdbwd")

    def describe(self) -> str:
        s = ("rms" if self.rms else "ln") + ("+b" if self.bias else "")
        if self.z:
            s += f" z {self.order}" + ("" if self.act in ("silu", "swish") else f" {self.act}")
        if self.group not in (None, self.N):
            s += f" g{self.group}"
        return s


SWEEP_NS = [1 << k for k in range(6, 18)]  # 64 .. 131072, M*N = 2^26


def cuda_cases(quick=False):
    rows = [
        Case("qwen3next_prefill", 131072, 128),
        Case("decode_qwen3next", 2048, 128, kind="decode"),
        Case("decode_m32", 32, 128, kind="decode"),
        Case("mamba2_g1024", 16384, 8192, group=1024, nbg=False),
        Case("gate_before_5120", 16384, 5120, nbg=False),
        Case("rms_z_4096", 32768, 4096),
        Case("ln_bias_z_4096", 32768, 4096, rms=False, bias=True),
        Case("rms_noz_4096", 32768, 4096, z=False),
        Case("sigmoid_4096", 32768, 4096, act="sigmoid"),
    ]
    rows += [Case(f"sweep_n{n}", (1 << 26) // n, n) for n in SWEEP_NS]
    rows += [
        Case("bign_1m", 16, 1 << 20),
        Case("odd_n1200", round(2 ** 25 / 1200), 1200),
        Case("odd_n5000", round(2 ** 25 / 5000), 5000),
    ]
    if quick:
        keep = {"qwen3next_prefill", "decode_qwen3next", "mamba2_g1024", "rms_z_4096", "sweep_n1024",
                "sweep_n65536", "odd_n1200"}
        rows = [r for r in rows if r.name in keep]
    return rows


# The CPU project bar: ours >= 2x eager on forward+backward on this row.
CPU_REQUIRED = "cpu_4096_gate_before_gN"


def cpu_cases(quick=False):
    rows = [
        Case(CPU_REQUIRED, 4096, 4096, group=4096, nbg=False, dtype="fp32"),
        Case("cpu_n128_z_after", 16384, 128, dtype="fp32"),
        Case("cpu_1024_z_after", 4096, 1024, dtype="fp32"),
        Case("cpu_4096_g512_before", 1024, 4096, group=512, nbg=False, dtype="fp32"),
        Case("cpu_2048_ln_bias_z", 2048, 2048, rms=False, bias=True, dtype="fp32"),
        Case("cpu_2048_rms_noz", 4096, 2048, z=False, dtype="fp32"),
        Case("cpu_odd_1200", 2048, 1200, dtype="fp32"),
    ]
    if quick:
        rows = [r for r in rows if r.name in (CPU_REQUIRED, "cpu_n128_z_after", "cpu_2048_rms_noz")]
    return rows


# ---------------------------------------------------------------- optional imports

def _fallback_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False,
                  activation="swish", upcast=True):
    """Same math as torch_ops.gated_norm_ref; used only when torch_ops does not import."""
    dtype = x.dtype
    if upcast:
        acc = torch.promote_types(x.dtype, torch.float32)
        x = x.to(acc)
        z = z.to(acc) if z is not None else None
        weight = weight.to(acc) if weight is not None else None
        bias = bias.to(acc) if bias is not None else None
    n = x.shape[-1]
    g = n if group_size is None else group_size
    if z is not None and not norm_before_gate:
        x = x * (z * torch.sigmoid(z) if activation in ("silu", "swish") else torch.sigmoid(z))
    xg = x.unflatten(-1, (n // g, g))
    if not is_rms_norm:
        xg = xg - xg.mean(dim=-1, keepdim=True)
    y = (xg * torch.rsqrt(xg.square().mean(dim=-1, keepdim=True) + eps)).flatten(-2)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    if z is not None and norm_before_gate:
        y = y * (z * torch.sigmoid(z) if activation in ("silu", "swish") else torch.sigmoid(z))
    return y.to(dtype)


def _err(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:200]


class Env:
    """What is importable, and the versions that go into every CSV line."""

    def __init__(self, device: torch.device, want_fla: bool):
        self.device = device
        self.ours = self.ours_err = None
        try:
            import torch_ops
            self.ours = torch_ops
        except Exception as e:  # not built yet, or broken
            self.ours_err = "torch_ops: " + _err(e)
        self.ref = self.ours.gated_norm_ref if self.ours is not None else _fallback_ref
        self.lg = self.fng = None
        self.lg_err = self.fng_err = "fla not imported on CPU (Triton peers run on CUDA only)"
        self.fla_version = ""
        if want_fla:
            self.lg, self.lg_err = self._mod(["fla.modules.layernorm_gated", "fla.modules.norm.layernorm_gated"])
            self.fng, self.fng_err = self._mod(["fla.modules.fused_norm_gate", "fla.modules.norm.fused_norm_gate"])
            try:
                import fla
                self.fla_version = getattr(fla, "__version__", "")
            except Exception:
                pass
        try:
            import triton
            self.triton_version = triton.__version__
        except Exception:
            self.triton_version = ""
        self.torch_version = torch.__version__
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if device.type == "cuda":
            p = torch.cuda.get_device_properties(device)
            self.device_name = p.name
            self.l2_bytes = int(getattr(p, "L2_cache_size", 0) or 50 * 2 ** 20)
        else:
            self.device_name = f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"
            self.l2_bytes = 0

    @staticmethod
    def _mod(names):
        err = None
        for n in names:
            try:
                return importlib.import_module(n), None
            except Exception as e:
                err = err or _err(e)
        return None, err

    def has_cuda_kernels(self) -> bool:
        try:
            return bool(self.ours.has_cuda_kernels())
        except Exception:
            return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- providers

def _act_name_fng(act):
    return "swish" if act in ("silu", "swish") else act


def provider_fn(name: str, c: Case, env: Env):
    """-> (f(x, z, w, b) -> out, None) or (None, reason it does not apply)."""
    eps, g, nbg, rms, act = c.eps, c.group, c.nbg, c.rms, c.act
    if name == "ours":
        if env.ours is None:
            return None, env.ours_err
        if env.device.type == "cuda" and not env.has_cuda_kernels():
            return None, "torch_ops built without CUDA kernels"
        fn = env.ours.layernorm_fn  # gated_norm_fwd, or gated_norm when grads are needed

        def f(x, z, w, b):
            return fn(x, w, b, z=z, eps=eps, group_size=g, norm_before_gate=nbg, is_rms_norm=rms, activation=act)
        return f, None
    if name == "triton":
        if env.lg is None:
            return None, env.lg_err
        if act not in ("silu", "swish"):
            return None, "no activation argument (silu only)"
        fn = env.lg.layernorm_fn

        def f(x, z, w, b):
            return fn(x, w, b, z=z, eps=eps, group_size=g, norm_before_gate=nbg, is_rms_norm=rms)
        return f, None
    if name == "fng":
        if env.fng is None:
            return None, env.fng_err
        if not c.z:
            return None, "needs a gate"
        if not nbg:
            return None, "norm before gate only"
        if g not in (None, c.N):
            return None, "no groups"
        fn = env.fng.rms_norm_gated if rms else env.fng.layer_norm_gated
        a = _act_name_fng(act)

        def f(x, z, w, b):
            return fn(x, z, w, b, activation=a, eps=eps)
        return f, None
    ref = env.ref

    def eager(x, z, w, b):
        return ref(x, w, b, z, eps, g, nbg, rms, act)
    if name == "eager":
        return eager, None
    if name == "compile":
        return torch.compile(eager, dynamic=False), None
    raise ValueError(name)


# ---------------------------------------------------------------- inputs and checks

def _bytes(c: Case, es: int):
    mn = c.M * c.N * es
    fwd = mn * (3 if c.z else 2)
    bwd = mn * (5 if c.z else 3)
    return {"fwd": fwd, "fwdbwd": fwd + bwd, "graph": fwd, "host": None}


def _make_sets(c: Case, device, nsets: int, grad: bool):
    dt = DTYPES[c.dtype]
    shape = (c.M, c.N)
    w = (1.0 + 0.1 * torch.randn(c.N, device=device)).to(dt)
    b = (0.1 * torch.randn(c.N, device=device)).to(dt) if c.bias else None
    shared = {"w": w, "b": b}
    if grad:
        shared["wg"] = w.detach().requires_grad_()
        shared["bg"] = b.detach().requires_grad_() if b is not None else None
    sets = []
    for _ in range(nsets):
        s = {"x": torch.randn(shape, device=device, dtype=dt)}
        s["z"] = torch.randn(shape, device=device, dtype=dt) if c.z else None
        if grad:
            s["dy"] = torch.randn(shape, device=device, dtype=dt)
            s["xg"] = s["x"].detach().requires_grad_()
            s["zg"] = s["z"].detach().requires_grad_() if c.z else None
            s["leaves"] = [t for t in (s["xg"], s["zg"], shared["wg"], shared["bg"]) if t is not None]
        sets.append(s)
    return shared, sets


def _grad_names(c: Case):
    return [n for n, on in (("dx", True), ("dz", c.z), ("dw", True), ("db", c.bias)) if on]


def _reference(c: Case, env: Env, shared, s, grad: bool):
    """fp32 (fp64 for fp64) reference output and gradients on input set 0."""
    acc = torch.promote_types(DTYPES[c.dtype], torch.float32)
    # copies: requires_grad_ below must not touch the benchmark's own input tensors
    up = {k: (None if s[k] is None else s[k].detach().to(acc, copy=True)) for k in ("x", "z")}
    w = shared["w"].detach().to(acc, copy=True)
    b = shared["b"].detach().to(acc, copy=True) if shared["b"] is not None else None
    if not grad:
        with torch.no_grad():
            return env.ref(up["x"], w, b, up["z"], c.eps, c.group, c.nbg, c.rms, c.act), None
    leaves = [t.requires_grad_() for t in (up["x"], up["z"], w, b) if t is not None]
    out = env.ref(up["x"], w, b, up["z"], c.eps, c.group, c.nbg, c.rms, c.act)
    grads = torch.autograd.grad(out, leaves, s["dy"].to(acc))
    return out.detach(), [g.detach() for g in grads]


def _rel(a, ref) -> float:
    a = a.to(ref.dtype)
    num = torch.linalg.vector_norm(a - ref).item()
    den = torch.linalg.vector_norm(ref).item()
    return num / den if den > 0 else num


def _check(c: Case, out, grads, ref_out, ref_grads):
    """-> (ok, note) with loose tolerances on the relative L2 error."""
    tol = TOL[DTYPES[c.dtype]]
    errs = [("out", _rel(out, ref_out))] if out is not None else []
    if grads is not None:
        errs += [(n, _rel(gr, r)) for n, gr, r in zip(_grad_names(c), grads, ref_grads)]
    bad = [(n, e) for n, e in errs if not (e <= tol)]  # NaN counts as bad
    if bad:
        return False, "MISMATCH " + ", ".join(f"{n} rel err {e:.2g}" for n, e in bad) + f" (tol {tol:g})"
    return True, ""


# ---------------------------------------------------------------- timers

class CudaTimer:
    def __init__(self, device, l2_mode="rotate"):
        self.device = device
        self.l2_mode = l2_mode
        self.flush_buf = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device) if l2_mode == "flush" else None
        self.has_sleep = hasattr(torch.cuda, "_sleep")
        self.cycles_per_us = self._calibrate() if self.has_sleep else 0.0

    def _calibrate(self):
        try:
            torch.cuda._sleep(1000)
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.cuda._sleep(20_000_000)
            e.record()
            e.synchronize()
            return 20_000_000 / (s.elapsed_time(e) * 1e3)
        except Exception:
            self.has_sleep = False
            return 0.0

    def sleep_us(self, us):
        if self.has_sleep and us > 0:
            torch.cuda._sleep(int(us * self.cycles_per_us))

    def events(self, fn, reps, budget_s, min_reps=10):
        """Median GPU time (us) of fn(i), i = 0..reps-1, each bracketed by CUDA events; the calls
        are queued behind a GPU sleep long enough that Python never starves the GPU."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(3):
            fn(i)
        torch.cuda.synchronize()
        per_call = (time.perf_counter() - t0) / 3
        reps = max(min_reps, min(reps, int(budget_s / max(per_call, 1e-7))))
        # host enqueue cost per call, measured while the GPU is busy
        self.sleep_us(30_000)
        t0 = time.perf_counter()
        for i in range(3):
            fn(i)
        host = (time.perf_counter() - t0) / 3
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        self.sleep_us(min(2.0 * reps * host * 1e6 + 500, 2e6))
        for i in range(reps):
            if self.flush_buf is not None:
                self.flush_buf.zero_()
            starts[i].record()
            fn(i)
            ends[i].record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)), reps

    def graph(self, fn, ncalls, reps):
        """GPU time (us) per call: ncalls calls fn(0..ncalls-1) captured in one CUDA graph,
        median over reps replays, divided by ncalls."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(ncalls):
                fn(i)
        g.replay()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            starts[i].record()
            g.replay()
            ends[i].record()
        torch.cuda.synchronize()
        t = statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)) / ncalls
        del g
        return t, reps

    @staticmethod
    def host(fn, n=200, repeats=7):
        """Host wall time (us) per eager call: n back-to-back calls, one synchronize, / n."""
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
            ts.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(ts), n * repeats

    def copy_ceiling(self, gib=2.0, reps=20):
        n = int(gib * 2 ** 30) // 4
        src = torch.ones(n, dtype=torch.float32, device=self.device)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        t, _ = self.events(lambda i: dst.copy_(src), reps, budget_s=10.0, min_reps=reps)
        del src, dst
        torch.cuda.empty_cache()
        return 2 * n * 4 / (t * 1e-6) / 1e9, t


class CpuTimer:
    @staticmethod
    def events(fn, reps, budget_s, min_reps=3):
        for i in range(2):
            fn(i)
        ts = []
        deadline = time.perf_counter() + budget_s
        for i in range(reps):
            t0 = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t0) * 1e6)
            if len(ts) >= min_reps and time.perf_counter() > deadline:
                break
        return statistics.median(ts), len(ts)

    @staticmethod
    def copy_ceiling(gib=0.25, reps=10):
        n = int(gib * 2 ** 30) // 4
        src = torch.ones(n, dtype=torch.float32)
        dst = torch.empty_like(src)
        t, _ = CpuTimer.events(lambda i: dst.copy_(src), reps, budget_s=5.0, min_reps=reps)
        return 2 * n * 4 / (t * 1e-6) / 1e9, t


# ---------------------------------------------------------------- the run

class _Sink:
    """Collects rows; appends each to the CSV as it comes (a run cut short keeps what it has)."""

    def __init__(self, csv_path, log):
        self.rows = []
        self.log = log
        self.f = None
        self.t0 = time.perf_counter()
        if csv_path:
            d = os.path.dirname(os.path.abspath(csv_path))
            os.makedirs(d, exist_ok=True)
            self.f = open(csv_path, "w", newline="")
            self.w = csv.DictWriter(self.f, fieldnames=FIELDS, extrasaction="ignore")
            self.w.writeheader()
            self.f.flush()

    def add(self, r):
        self.rows.append(r)
        if self.f is not None:
            self.w.writerow({k: _csv_val(r.get(k)) for k in FIELDS})
            self.f.flush()
        if self.log is not None:
            t = "n/a" if r["time_us"] is None else f"{r['time_us']:.2f} us"
            fr = "" if r["frac"] is None else f" {r['frac']:.3f}"
            bad = "" if r["ok"] in (None, True) else " !"
            note = f"  [{r['note']}]" if r["note"] else ""
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {r['name']} {r['dtype']} {r['provider']} {r['pass']}: "
                  f"{t}{fr}{bad}{note}", file=self.log, flush=True)

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


def _csv_val(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e5 else f"{v:.1f}"
    return v


def _row(c: Case, env: Env, provider, pass_, t_us, nbytes, ceiling, ok=None, note="", reps=None):
    gbps = nbytes / (t_us * 1e-6) / 1e9 if (t_us and nbytes) else None
    return {
        "name": c.name, "M": c.M, "N": c.N, "group": c.group or c.N, "dtype": c.dtype, "z": int(c.z),
        "order": c.order, "rms": int(c.rms), "provider": provider, "pass": pass_, "time_us": t_us,
        "gbps": gbps, "frac": (gbps / ceiling if (gbps and ceiling) else None), "device": env.device_name,
        "torch": env.torch_version, "triton": env.triton_version, "fla": env.fla_version, "date": env.date,
        "act": c.act, "bias": int(c.bias), "ok": ok, "reps": reps, "ceiling_gbps": ceiling, "note": note,
    }


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _bench_case(c: Case, env: Env, timer, providers, ceiling, sink, reps, budget_s, check, graph_reps):
    cuda = env.device.type == "cuda"
    dt = DTYPES[c.dtype]
    es = torch.empty((), dtype=dt).element_size()
    passes = c.passes()
    grad = "fwdbwd" in passes
    nbytes = _bytes(c, es)
    # L2-cold rotation: input sets totalling > 3x L2 (CPU and --l2 flush: one set)
    set_bytes = c.M * c.N * es * ((2 if c.z else 1) + (1 if grad else 0))
    if cuda and timer.l2_mode == "rotate":
        nsets = max(2, min(128, math.ceil(3 * env.l2_bytes / set_bytes)))
    else:
        nsets = 1
    torch.manual_seed(0)
    shared, sets = _make_sets(c, env.device, nsets, grad)
    w, b = shared["w"], shared["b"]
    ref_out = ref_grads = None
    if check:
        ref_out, ref_grads = _reference(c, env, shared, sets[0], grad)
    if "compile" in providers:
        torch._dynamo.reset()  # fresh compile per row: no recompile limit, no dynamic shapes

    for p in providers:
        try:
            f, why = provider_fn(p, c, env)
        except Exception as e:
            f, why = None, _err(e)
        if f is None:
            for ps in passes:
                sink.add(_row(c, env, p, ps, None, nbytes[ps], ceiling, note=why))
            continue

        def fwd(i, f=f):
            s = sets[i % nsets]
            return f(s["x"], s["z"], w, b)

        def fwdbwd(i, f=f):
            s = sets[i % nsets]
            out = f(s["xg"], s["zg"], shared["wg"], shared["bg"])
            return torch.autograd.grad(out, s["leaves"], s["dy"])

        # correctness guard (also the first call: compile / JIT / autotune happen here)
        status = {}
        for kind in (("fwd", "fwdbwd") if grad else ("fwd",)):
            try:
                t0 = time.perf_counter()
                res = fwd(0) if kind == "fwd" else fwdbwd(0)
                if cuda:
                    torch.cuda.synchronize()
                first = time.perf_counter() - t0
                ok, note = True, ""
                if check:
                    ok, note = _check(c, res if kind == "fwd" else None, None if kind == "fwd" else res,
                                      ref_out, ref_grads)
                if first > 2.0:
                    note = (note + "; " if note else "") + f"first call {first:.1f}s"
                status[kind] = (ok, note, None)
                del res
            except Exception as e:
                status[kind] = (None, None, _err(e))
                if cuda:
                    try:
                        torch.cuda.synchronize()
                    except Exception:
                        pass
        for ps in passes:
            ok, note, err = status["fwdbwd" if ps == "fwdbwd" else "fwd"]
            if err:
                sink.add(_row(c, env, p, ps, None, nbytes[ps], ceiling, note=err))
                continue
            try:
                if ps == "fwd":
                    t, n = timer.events(fwd, reps, budget_s)
                elif ps == "fwdbwd":
                    t, n = timer.events(fwdbwd, reps, budget_s)
                elif ps == "graph":
                    t, n = timer.graph(fwd, min(nsets, 64), graph_reps)
                else:
                    t, n = timer.host(lambda: fwd(0))
                sink.add(_row(c, env, p, ps, t, nbytes[ps], ceiling, ok=ok, note=note, reps=n))
            except Exception as e:
                sink.add(_row(c, env, p, ps, None, nbytes[ps], ceiling, note=_err(e)))
                if cuda:
                    try:
                        torch.cuda.synchronize()
                    except Exception:
                        pass
            _free(env.device)

    if "host" in passes:  # the host cost of native ops on the same machine, for the ratio
        x = sets[0]["x"]
        for name, fn in (("add_", lambda: x.add_(1)), ("empty_like", lambda: torch.empty_like(x))):
            try:
                t, n = timer.host(fn)
                sink.add(_row(c, env, name, "host", t, None, ceiling, reps=n))
            except Exception as e:
                sink.add(_row(c, env, name, "host", None, None, ceiling, note=_err(e)))
    del sets, shared, ref_out, ref_grads
    _free(env.device)


def run(device=None, quick=False, dtypes=None, only=None, reps=None, providers=None, compile=None,
        l2="rotate", csv_path=None, check=True, copy_gib=None, budget_s=None, log=sys.stderr):
    """Run the benchmark; returns one dict per row x provider x pass (the CSV's lines).

    device: None = cuda if available, else cpu.  quick: a short subset.  dtypes: e.g.
    ["bf16", "fp16"] (CUDA default ["bf16"], CPU ["fp32"]).  only: regex on row names.
    providers: subset of PROVIDERS.  compile: include torch.compile (default: on CUDA only).
    l2: "rotate" (default) or "flush".  csv_path: also write the CSV, line by line.
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    env = Env(device, want_fla=cuda)
    if compile is None:
        compile = cuda
    provs = [p for p in (providers or PROVIDERS) if p in PROVIDERS]
    if not compile:
        provs = [p for p in provs if p != "compile"]
    if not cuda:
        provs = [p for p in provs if p not in ("triton", "fng")]
    dtypes = dtypes or (["bf16"] if cuda else ["fp32"])
    base = cuda_cases(quick) if cuda else cpu_cases(quick)
    cases = [replace(c, dtype=d) for d in dtypes for c in base]
    if only:
        rx = re.compile(only)
        cases = [c for c in cases if rx.search(c.name)]
    if reps is None:
        reps = (30 if quick else 100) if cuda else (7 if quick else 15)
    if budget_s is None:
        budget_s = 1.0 if cuda else (1.0 if quick else 2.0)
    graph_reps = max(10, reps // 5)
    if "compile" in provs:
        for knob in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
            try:
                setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 64))
            except Exception:
                pass
    timer = CudaTimer(device, l2) if cuda else CpuTimer()

    sink = _Sink(csv_path, log)
    if log is not None:
        print(f"device: {env.device_name}; torch {env.torch_version}; triton {env.triton_version or '-'}; "
              f"fla {env.fla_version or '-'}; ours: {'ok' if env.ours else env.ours_err}", file=log, flush=True)
        if cuda:
            print(f"fla layernorm_gated: {'ok' if env.lg else env.lg_err}; fused_norm_gate: "
                  f"{'ok' if env.fng else env.fng_err}; L2 {env.l2_bytes / 2 ** 20:.0f} MiB; l2 mode {l2}",
                  file=log, flush=True)
    try:
        gib = copy_gib if copy_gib is not None else ((1.0 if quick else 2.0) if cuda else 0.25)
        ceiling, t = timer.copy_ceiling(gib)
        cc = Case("copy_ceiling", 1, int(gib * 2 ** 30) // 4, z=False, dtype="fp32")
        sink.add(_row(cc, env, "copy", "copy", t, int(2 * gib * 2 ** 30), ceiling, note=f"{gib:g} GiB copy"))
        for c in cases:
            try:
                _bench_case(c, env, timer, provs, ceiling, sink, reps, budget_s, check, graph_reps)
            except Exception as e:  # setup (allocation, reference) failed: the row is n/a
                for ps in c.passes():
                    sink.add(_row(c, env, "all", ps, None, None, ceiling, note=_err(e)))
                _free(device)
    except KeyboardInterrupt:
        print("interrupted: partial results", file=log or sys.stderr)
    finally:
        sink.close()
    return sink.rows


# ---------------------------------------------------------------- table

_PASS_TITLE = {
    "fwd": "forward: us and fraction of the copy ceiling",
    "fwdbwd": "forward+backward: us and fraction of the copy ceiling",
    "graph": "decode, CUDA-graph replay: GPU us per forward and fraction of the copy ceiling",
    "host": "decode, host wall per eager call (us)",
}


def _cell(r, frac=True):
    if r is None:
        return "-"
    if r["time_us"] is None:
        return "n/a"
    s = f"{r['time_us']:.1f}" if r["time_us"] < 1e4 else f"{r['time_us']:.0f}"
    if frac and r["frac"] is not None:
        s += f" {r['frac']:.2f}"
    if r["ok"] is False:
        s += "!"
    return s


def _good(r):
    return r is not None and r["time_us"] is not None and r["ok"] is not False


def print_table(rows, file=None):
    """Print the results of run() (or of a CSV read back with load_csv) as text tables."""
    file = file or sys.stdout
    copy = [r for r in rows if r["provider"] == "copy"]
    if copy:
        r = copy[0]
        print(f"\ndevice: {r['device']}   torch {r['torch']}   triton {r['triton'] or '-'}   "
              f"fla {r['fla'] or '-'}   {r['date']}", file=file)
        print(f"copy ceiling: {r['gbps']:.1f} GB/s ({r['note']}, read + write)", file=file)
    notes = {}
    for ps in PASSES:
        sel = [r for r in rows if r["pass"] == ps]
        if not sel:
            continue
        provs = [p for p in PROVIDERS if any(r["provider"] == p for r in sel)]
        keys = []
        for r in sel:
            k = (r["name"], r["M"], r["N"], r["dtype"])
            if k not in keys:
                keys.append(k)
        by = {(r["name"], r["M"], r["N"], r["dtype"], r["provider"]): r for r in sel}
        frac = ps != "host"
        w = 13 if frac else 9
        extra = ["add_", "ours/add_"] if ps == "host" else []
        head = f"{'row':26} {'M':>7} {'N':>8} {'dtype':5} " + " ".join(f"{p:>{w}}" for p in provs)
        head += "".join(f" {e:>10}" for e in extra) + f" {'vs best':>8} {'vs eager':>11}"
        print(f"\n== {_PASS_TITLE[ps]}", file=file)
        print(head, file=file)
        print("-" * len(head), file=file)
        for k in keys:
            cells = []
            for p in provs:
                r = by.get(k + (p,))
                cells.append(_cell(r, frac))
                if r is not None and r["time_us"] is None and r["note"]:
                    notes.setdefault((p, r["note"]), []).append(k[0])
            line = f"{k[0]:26} {k[1]:>7} {k[2]:>8} {k[3]:5} " + " ".join(f"{c:>{w}}" for c in cells)
            ours = by.get(k + ("ours",))
            if ps == "host":
                add = by.get(k + ("add_",))
                line += f" {_cell(add, False):>10}"
                ratio = f"{ours['time_us'] / add['time_us']:.2f}x" if _good(ours) and _good(add) else "-"
                line += f" {ratio:>10}"
            peers = [by.get(k + (p,)) for p in provs if p != "ours"]
            peers = [r for r in peers if _good(r)]
            vs_best = vs_eager = "-"
            if _good(ours) and peers:
                vs_best = f"{min(r['time_us'] for r in peers) / ours['time_us']:.2f}x"
            eager = by.get(k + ("eager",))
            if _good(ours) and _good(eager):
                vs_eager = f"{eager['time_us'] / ours['time_us']:.2f}x"
                if k[0] == CPU_REQUIRED and ps == "fwdbwd":
                    vs_eager += " PASS" if eager["time_us"] >= 2 * ours["time_us"] else " FAIL"
            line += f" {vs_best:>8} {vs_eager:>11}"
            print(line, file=file)
    if any(r["ok"] is False for r in rows):
        print("\n! = output or gradient disagrees with the fp32 reference (see the CSV's note column)", file=file)
    if notes:
        print("\nn/a reasons:", file=file)
        for (p, note), names in notes.items():
            names = sorted(set(names))
            shown = ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
            print(f"  {p}: {note}  [{shown}]", file=file)
    if any(r["name"] == CPU_REQUIRED for r in rows):
        print(f"\nproject bar (CPU): ours >= 2x eager on forward+backward on {CPU_REQUIRED}", file=file)


def load_csv(path):
    """Read a CSV written by run() back into row dicts (numbers parsed) for print_table / plot."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("M", "N", "group", "z", "rms", "bias", "reps"):
                r[k] = int(r[k]) if r.get(k) not in (None, "") else None
            for k in ("time_us", "gbps", "frac", "ceiling_gbps"):
                r[k] = float(r[k]) if r.get(k) not in (None, "") else None
            r["ok"] = None if r.get("ok") in (None, "") else bool(int(r["ok"]))
            out.append(r)
    return out


# ---------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if available)")
    ap.add_argument("--quick", action="store_true", help="a short subset of the rows, fewer reps")
    ap.add_argument("--only", default=None, metavar="REGEX", help="only the rows whose name matches")
    ap.add_argument("--dtypes", default=None, help="comma list of bf16,fp16,fp32 (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--providers", default=None, help=f"comma list of {','.join(PROVIDERS)}")
    ap.add_argument("--reps", type=int, default=None, help="max timed reps per measurement")
    ap.add_argument("--budget", type=float, default=None, help="seconds per measurement that cap reps")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None,
                    help="include torch.compile (default on CUDA)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--l2", choices=("rotate", "flush"), default="rotate", help="how the L2 is kept cold")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the correctness guard")
    ap.add_argument("--copy-gib", type=float, default=None, help="size of the copy-ceiling buffer")
    ap.add_argument("--csv", default=None, metavar="PATH",
                    help="CSV output (default: $OUT/bench.csv if OUT is set, else bench.csv); '-' = none")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--from-csv", nargs="+", default=None, metavar="CSV",
                    help="print the table of earlier runs' CSVs (several parts of one run) and exit")
    a = ap.parse_args(argv)
    if a.from_csv:
        rows = [r for p in a.from_csv for r in load_csv(p)]
        rx = re.compile(a.only) if a.only else None
        print_table([r for r in rows if rx is None or r["provider"] == "copy" or rx.search(r["name"])])
        return 0
    dtypes = a.dtypes.split(",") if a.dtypes else None
    for d in dtypes or []:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    providers = a.providers.split(",") if a.providers else None
    for p in providers or []:
        if p not in PROVIDERS:
            ap.error(f"unknown provider {p!r}; choose from {', '.join(PROVIDERS)}")
    if a.list:
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cuda_cases(a.quick) if dev.startswith("cuda") else cpu_cases(a.quick)
        for c in base:
            if not a.only or re.search(a.only, c.name):
                print(f"{c.name:26} M={c.M:<7} N={c.N:<8} {c.describe():22} passes={','.join(c.passes())}")
        return 0
    csv_path = a.csv if a.csv is not None else os.path.join(os.environ.get("OUT") or ".", "bench.csv")
    if csv_path == "-":
        csv_path = None
    rows = run(device=a.device, quick=a.quick, dtypes=dtypes, only=a.only, reps=a.reps, providers=providers,
               compile=a.compile, l2=a.l2, csv_path=csv_path, check=a.check, copy_gib=a.copy_gib,
               budget_s=a.budget)
    print_table(rows)
    if csv_path:
        print(f"\nCSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
