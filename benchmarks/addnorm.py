"""The fused add + RMSNorm family's rows (and plain RMSNorm's): inputs, the correctness guard
against fp64 math, and the timing of each provider x pass.

In place: ours and FlashInfer overwrite x (with the normalised sum) and residual (with the
sum) on every call. The guard therefore runs on a copy of input set 0, and the timed calls run
on the L2-cold rotating sets as they drift: each call adds the (normalised, rms ~ |w|) x to
its set's residual, so the residual's rms grows by about 1 per call while x stays
normalised. Measured on one 64 x 4096 set (CPU kernels): bf16 levels off (residual rms ~420
after 1000 calls and still after 5000: the added x rounds away), fp32 keeps growing (rms
~5600 after 5000 calls), fp16 reached inf/NaN between 1000 and 5000 calls. A timed pass makes
at most ~1400 calls on one set (the host pass); the kernels do the same work whatever the
values, so the timing does not depend on the drift. The sets are re-drawn (same seed) before
each provider's pass, outside the timed region, so every provider and pass starts from the
same inputs, and after each pass a set that holds inf/NaN is reported in the note.

Bytes: read x + residual, write x + residual, read the weight once; plain RMSNorm: read x,
write out, read the weight once.
"""
from __future__ import annotations

import math
import time

import torch

from .cases import Case
from .common import (DTYPES, err, free, host_baselines, resolve_provider, rotating_sets, same_size_copy,
                     sync_quietly, tol_check)
from .providers import Env, norm_provider_fn
from .results import row

SEED = 1  # the inputs of every provider and pass (the weight is drawn once, seed 0)


def _bytes(c: Case, es: int):
    n = c.M * c.N * es * (4 if c.family == "addnorm" else 2) + c.N * es
    return {"fwd": n, "graph": n, "host": None}


def _make_sets(c: Case, device, nsets: int):
    dt = DTYPES[c.dtype]
    sets = [{"x": torch.empty(c.M, c.N, device=device, dtype=dt),
             "r": torch.empty(c.M, c.N, device=device, dtype=dt) if c.family == "addnorm" else None}
            for _ in range(nsets)]
    _redraw(sets)
    return sets


def _redraw(sets):
    """Fresh inputs in the same tensors (a captured CUDA graph keeps pointing at them)."""
    torch.manual_seed(SEED)
    for s in sets:
        s["x"].normal_()
        if s["r"] is not None:
            s["r"].normal_()


def _drift_note(sets) -> str:
    bad = sum(1 for s in sets for t in (s["x"], s["r"]) if t is not None and not torch.isfinite(t).all())
    return f"{bad} in-place input tensor(s) reached inf/NaN while timed" if bad else ""


def _errors(c: Case, x, r, w, out, res):
    """Relative L2 errors of out (and res) against fp64 math on the inputs x, r, summed over
    row chunks (the whole fp64 copy of a 65536 x 8192 row set would be 4 GiB a tensor).
    The reference normalises the sum rounded to the residual's dtype, as the kernels'
    contract says (csrc/gatednorm.h): that rounded sum is what the next layer sees."""
    acc = torch.float64
    w64 = w.to(acc)
    step = max(1, (1 << 24) // c.N)
    sums = {"out": [0.0, 0.0], "residual": [0.0, 0.0]}

    def accumulate(name, got, ref):
        sums[name][0] += torch.linalg.vector_norm(got.to(acc) - ref).item() ** 2
        sums[name][1] += torch.linalg.vector_norm(ref).item() ** 2

    for i in range(0, c.M, step):
        sl = slice(i, i + step)
        h = x[sl].to(acc)
        if r is not None:
            h = (h + r[sl].to(acc)).to(r.dtype).to(acc)
            accumulate("residual", res[sl], h)
        y = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + c.eps) * w64
        accumulate("out", out[sl], y)
    names = ("out", "residual") if r is not None else ("out",)
    return [(n, math.sqrt(sums[n][0] / sums[n][1]) if sums[n][1] > 0 else math.sqrt(sums[n][0])) for n in names]


def _guard(c: Case, f, s, w, check, cuda):
    """First call (compile / JIT happen here) on a copy of set 0, checked -> (ok, note)."""
    x, r = s["x"].clone(), (s["r"].clone() if s["r"] is not None else None)
    t0 = time.perf_counter()
    out, res = f(x, r, w)
    if cuda:
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    ok, note = True, ""
    if check:
        ok, note = tol_check(DTYPES[c.dtype], _errors(c, s["x"], s["r"], w, out, res))
    if first > 2.0:
        note = (note + "; " if note else "") + f"first call {first:.1f}s"
    return ok, note


def bench_case(c: Case, env: Env, timer, providers, ceiling, sink, reps, budget_s, check, graph_reps):
    cuda = env.device.type == "cuda"
    dt = DTYPES[c.dtype]
    es = torch.empty((), dtype=dt).element_size()
    passes = c.passes()
    nbytes = _bytes(c, es)
    # L2-cold rotation: input sets totalling > 3x L2 (CPU and --l2 flush: one set)
    nsets = rotating_sets(env, timer, c.M * c.N * es * (2 if c.family == "addnorm" else 1))
    torch.manual_seed(0)
    w = (1.0 + 0.1 * torch.randn(c.N, device=env.device)).to(dt)
    sets = _make_sets(c, env.device, nsets)
    if "compile" in providers:
        torch._dynamo.reset()  # fresh compile per row: no recompile limit, no dynamic shapes

    for p in providers:
        f = resolve_provider(norm_provider_fn, p, c, env, sink, row, passes, nbytes, ceiling)
        if f is None:
            continue

        def fwd(i, f=f):
            s = sets[i % nsets]
            return f(s["x"], s["r"], w)

        _redraw(sets)
        try:  # a provider that raises (e.g. a kernel not in this build) is a row note, not a crash
            ok, note = _guard(c, f, sets[0], w, check, cuda)
            if p == "flashinfer":
                env.fi_worked = True
                note = (note + "; " if note else "") + f"flashinfer {env.fi_version}"
        except Exception as e:
            sync_quietly(env.device)
            if sink.log is not None:  # the whole message (a failed JIT build's compiler output)
                print(f"{c.name} {p}: {type(e).__name__}: {str(e)[-3000:]}", file=sink.log, flush=True)
            if p == "flashinfer" and not env.fi_worked:
                # failing before any success (its JIT build, say) fails the same way on every
                # row, and the build is retried each time: skip FlashInfer from here on
                env._fi, env.fi_err = None, "flashinfer: first call failed: " + err(e)
            for ps in passes:
                sink.add(row(c, env, p, ps, None, nbytes[ps], ceiling, note=err(e)))
            free(env.device)
            continue
        for ps in passes:
            _redraw(sets)  # outside the timed region: every pass starts from the same inputs
            try:
                if ps == "fwd":
                    t, n = timer.events(fwd, reps, budget_s)
                elif ps == "graph":
                    t, n = timer.graph(fwd, min(nsets, 64), graph_reps)
                else:
                    t, n = timer.host(lambda: fwd(0))
                drift = _drift_note(sets)
                sink.add(row(c, env, p, ps, t, nbytes[ps], ceiling, ok=ok,
                             note="; ".join(x for x in (note, drift) if x), reps=n))
            except Exception as e:
                sink.add(row(c, env, p, ps, None, nbytes[ps], ceiling, note=err(e)))
                sync_quietly(env.device)
            free(env.device)

    if "host" in passes:
        host_baselines(timer, sets[0]["x"], sink, row, c, env, ceiling)
    del sets, w
    free(env.device)
    same_size_copy(c, env, timer, sink, row, nbytes, ceiling, passes, reps, budget_s)
