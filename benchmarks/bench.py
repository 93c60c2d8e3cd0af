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
           (eager and compile are n/a when torch_ops does not import)

The rows are in cases.py, the timers in timers.py, the text tables in table.py; this module
holds the providers, inputs and correctness guard, the run loop, the CSV and the CLI.
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
import sys
import time
from dataclasses import replace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # a source checkout, used only when torch_ops is not installed

try:
    from .cases import CPU_REQUIRED, PASSES, PROVIDERS, Case, cpu_cases, cuda_cases  # noqa: F401 (re-exported)
    from .table import load_csv, print_table
    from .timers import CpuTimer, CudaTimer
except ImportError:  # run as a script: python benchmarks/bench.py (ROOT is on sys.path above)
    from benchmarks.cases import CPU_REQUIRED, PASSES, PROVIDERS, Case, cpu_cases, cuda_cases  # noqa: F401
    from benchmarks.table import load_csv, print_table
    from benchmarks.timers import CpuTimer, CudaTimer

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}
# Loose tolerances on the relative L2 error against the fp32 reference (output and gradients).
TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-4, torch.float64: 1e-8}
FIELDS = ["name", "M", "N", "group", "dtype", "z", "order", "rms", "provider", "pass", "time_us", "gbps",
          "frac", "device", "torch", "triton", "fla", "date", "act", "bias", "ok", "reps", "ceiling_gbps",
          "note"]


# ---------------------------------------------------------------- optional imports

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
        self.ref = self.ours.gated_norm_ref if self.ours is not None else None
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
    if name not in ("eager", "compile"):
        raise ValueError(name)
    if env.ref is None:  # eager and compile run torch_ops.gated_norm_ref
        return None, env.ours_err
    ref = env.ref

    def eager(x, z, w, b):
        return ref(x, w, b, z, eps, g, nbg, rms, act)
    if name == "eager":
        return eager, None
    return torch.compile(eager, dynamic=False), None


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


# ---------------------------------------------------------------- CSV sink

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


# ---------------------------------------------------------------- the run

def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _sync_quietly(device):
    """After a failed call: wait for the GPU's queued work, ignoring an error it reports."""
    if device.type == "cuda":
        try:
            torch.cuda.synchronize()
        except Exception:
            pass


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
                _sync_quietly(env.device)
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
                _sync_quietly(env.device)
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
    no_ref = check and env.ref is None
    if no_ref:  # the guard's reference is torch_ops.gated_norm_ref
        check = False
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
        if no_ref:
            print("no correctness guard: its reference, torch_ops.gated_norm_ref, did not import", file=log, flush=True)
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
