"""Small helpers shared by the benchmark's families: dtypes, tolerances, error strings,
the relative error, and cleanup after a row or a failed call."""
from __future__ import annotations

import gc
import math

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}
# Loose tolerances on the relative L2 error against the reference (output and gradients).
TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-4, torch.float64: 1e-8}


def err(e: BaseException) -> str:
    """One line for the CSV's note: exception type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:200]


def rel(a, ref) -> float:
    """Relative L2 error of a against ref (a is cast to ref's dtype)."""
    a = a.to(ref.dtype)
    num = torch.linalg.vector_norm(a - ref).item()
    den = torch.linalg.vector_norm(ref).item()
    return num / den if den > 0 else num


def tol_check(dtype, errs):
    """errs: [(what, relative error)] -> (ok, note); NaN counts as bad."""
    tol = TOL[dtype]
    bad = [(n, e) for n, e in errs if not (e <= tol)]
    if bad:
        return False, "MISMATCH " + ", ".join(f"{n} rel err {e:.2g}" for n, e in bad) + f" (tol {tol:g})"
    return True, ""


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync_quietly(device):
    """After a failed call: wait for the GPU's queued work, ignoring an error it reports."""
    if device.type == "cuda":
        try:
            torch.cuda.synchronize()
        except Exception:
            pass


def rotating_sets(env, timer, set_bytes: int) -> int:
    """How many input sets an L2-cold timing rotates through: > 3x L2 in total on CUDA
    with --l2 rotate (at least 2, at most 128); one set on the CPU or with a flush."""
    if env.device.type == "cuda" and timer.l2_mode == "rotate":
        return max(2, min(128, math.ceil(3 * env.l2_bytes / set_bytes)))
    return 1


def resolve_provider(make, p, c, env, sink, row, passes, nbytes, ceiling):
    """The timed callable of provider p for case c, or None after writing its n/a rows
    (with the reason) for every pass."""
    try:
        f, why = make(p, c, env)
    except Exception as e:
        f, why = None, err(e)
    if f is None:
        for ps in passes:
            sink.add(row(c, env, p, ps, None, nbytes[ps], ceiling, note=why))
    return f


def host_baselines(timer, x, sink, row, c, env, ceiling):
    """Host wall per call of native ops on the same machine (`x.add_(1)`, `empty_like`):
    the yardstick the host rows are divided by."""
    for name, fn in (("add_", lambda: x.add_(1)), ("empty_like", lambda: torch.empty_like(x))):
        try:
            t, n = timer.host(fn)
            sink.add(row(c, env, name, "host", t, None, ceiling, reps=n))
        except Exception as e:
            sink.add(row(c, env, name, "host", None, None, ceiling, note=err(e)))


def same_size_copy(c, env, timer, sink, row, nbytes, ceiling, passes, reps, budget_s):
    """Rows of provider `samecopy`: a device-to-device copy that moves as many bytes as the
    row's pass must (half read, half written), timed like the providers (L2-cold rotation).
    The copy ceiling is a 1-2 GiB copy; a pass that moves ~100 MB pays the same fixed costs
    as a copy of its size (launch, the ramp to full bandwidth, the last wave's tail), so
    ours / samecopy is how close a kernel is to what its size allows."""
    for ps in passes:
        if ps not in ("fwd", "fwdbwd"):
            continue
        n = max(1, nbytes[ps] // 8)  # fp32 elements a side
        nsets = rotating_sets(env, timer, 2 * n * 4)
        try:
            bufs = [(torch.ones(n, device=env.device), torch.empty(n, device=env.device)) for _ in range(nsets)]
            t, k = timer.events(lambda i: bufs[i % nsets][1].copy_(bufs[i % nsets][0]), reps, budget_s)
            sink.add(row(c, env, "samecopy", ps, t, nbytes[ps], ceiling, reps=k, note="a copy of the same bytes"))
        except Exception as e:
            sink.add(row(c, env, "samecopy", ps, None, nbytes[ps], ceiling, note=err(e)))
            sync_quietly(env.device)
        bufs = None
        free(env.device)
