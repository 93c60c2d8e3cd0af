"""The gated-norm family's rows: inputs (L2-cold rotating sets), the correctness guard
against the fp32 eager reference (fp64 for fp64), and the timing of each provider x pass.

Bytes: forward = (x + z + out), backward = (x + z + dy + dx + dz) elements x element size
(weight/bias left out; no z: the z terms dropped); forward+backward = both.
"""
from __future__ import annotations

import time

import torch

from .cases import Case
from .common import (DTYPES, err, free, host_baselines, resolve_provider, rotating_sets, rel, same_size_copy,
                     sync_quietly, tol_check)
from .providers import Env, provider_fn
from .results import row


def _bytes(c: Case, es: int):
    mn = c.M * c.N * es
    fwd = mn * (3 if c.z else 2)
    bwd = mn * (5 if c.z else 3)
    return {"fwd": fwd, "fwdbwd": fwd + bwd, "graph": fwd, "host": None}


def _make_sets(c: Case, device, nsets: int, grad: bool):
    dt = DTYPES[c.dtype]
    shape = (c.M, c.N)
    pdt = DTYPES[c.pdtype] if c.pdtype else dt
    w = (1.0 + 0.1 * torch.randn(c.N, device=device)).to(pdt)
    b = (0.1 * torch.randn(c.N, device=device)).to(pdt) if c.bias else None
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


def _check(c: Case, out, grads, ref_out, ref_grads):
    """-> (ok, note) with loose tolerances on the relative L2 error."""
    errs = [("out", rel(out, ref_out))] if out is not None else []
    if grads is not None:
        errs += [(n, rel(gr, r)) for n, gr, r in zip(_grad_names(c), grads, ref_grads)]
    return tol_check(DTYPES[c.dtype], errs)


def bench_case(c: Case, env: Env, timer, providers, ceiling, sink, reps, budget_s, check, graph_reps):
    cuda = env.device.type == "cuda"
    dt = DTYPES[c.dtype]
    es = torch.empty((), dtype=dt).element_size()
    passes = c.passes()
    grad = "fwdbwd" in passes
    nbytes = _bytes(c, es)
    # L2-cold rotation: input sets totalling > 3x L2 (CPU and --l2 flush: one set)
    nsets = rotating_sets(env, timer, c.M * c.N * es * ((2 if c.z else 1) + (1 if grad else 0)))
    torch.manual_seed(0)
    shared, sets = _make_sets(c, env.device, nsets, grad)
    w, b = shared["w"], shared["b"]
    ref_out = ref_grads = None
    if check:
        ref_out, ref_grads = _reference(c, env, shared, sets[0], grad)
    if "compile" in providers:
        torch._dynamo.reset()  # fresh compile per row: no recompile limit, no dynamic shapes

    for p in providers:
        f = resolve_provider(provider_fn, p, c, env, sink, row, passes, nbytes, ceiling)
        if f is None:
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
                status[kind] = (None, None, err(e))
                sync_quietly(env.device)
        for ps in passes:
            ok, note, failure = status["fwdbwd" if ps == "fwdbwd" else "fwd"]
            if failure:
                sink.add(row(c, env, p, ps, None, nbytes[ps], ceiling, note=failure))
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
                sink.add(row(c, env, p, ps, t, nbytes[ps], ceiling, ok=ok, note=note, reps=n))
            except Exception as e:
                sink.add(row(c, env, p, ps, None, nbytes[ps], ceiling, note=err(e)))
                sync_quietly(env.device)
            free(env.device)

    if "host" in passes:
        host_baselines(timer, sets[0]["x"], sink, row, c, env, ceiling)
    del sets, shared, ref_out, ref_grads
    free(env.device)
    same_size_copy(c, env, timer, sink, row, nbytes, ceiling, passes, reps, budget_s)
