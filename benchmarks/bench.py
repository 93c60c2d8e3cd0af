"""Benchmark of `torch.ops.gatednorm` (gated norm; fused add + RMSNorm) against its peers.

    python -m benchmarks.bench                 # CUDA: every row; CPU: the small CPU table
    python -m benchmarks.bench --quick         # a short subset
    python -m benchmarks.bench --only 'sweep|decode' --dtypes bf16,fp16 --csv $OUT/bench.csv
    python -m benchmarks.bench --family addnorm,rmsnorm    # only fused add + RMSNorm and plain RMSNorm

How it measures (DESIGN section 5), all in one process:

* CUDA: first the copy ceiling (a large device-to-device copy, bytes read + written, median of
  reps). Then, per row and provider: a correctness guard (gated norm: against the fp32 eager
  reference; add-norm: against fp64 math; a row that disagrees is marked `!` and `ok=0` in
  the CSV), then the time: CUDA events around
  each call, median of many reps, L2-cold by rotating among several input sets whose total
  exceeds 3x the L2 size (`--l2 flush` writes a 256 MB buffer between reps instead). The
  calls are queued behind a GPU sleep so that the host never starves the GPU: the events
  measure GPU time, not Python. Decode rows (small M) are timed as CUDA-graph replays (GPU
  time per forward) and as host wall time per eager call (N back-to-back calls, one
  synchronize, divided by N), next to `x.add_(1)` and `torch.empty_like(x)` on the same host.
* CPU: time.perf_counter, median of reps; ours vs eager (and torch.compile with --compile).

Bytes: gated forward = (x + z + out), backward = (x + z + dy + dx + dz) elements x element
size (weight/bias left out; no z: the z terms dropped); forward+backward = both. Fused add +
RMSNorm = (x + residual read, x + residual written) + the weight once; plain RMSNorm = x + out
+ the weight. GB/s = bytes / time (1 GB = 1e9 B); frac = GB/s / copy ceiling. Each fwd /
fwdbwd row also times `samecopy`, a copy of the same bytes (a reference column, not a peer).

After the tables a CUDA run prints the issues' targets (targets.py): each bar, how many rows
meet it, and every row below it.

Providers (any that is missing or fails on a row is "n/a" with the reason, never a crash):
gated norm: ours, triton (FLA layernorm_gated), fng (FLA fused_norm_gate), eager, compile;
add-norm: ours, flashinfer, eager, compile. providers.py says what each runs.

The rows are in cases.py, the providers (and what is importable) in providers.py, the gated
family's inputs, correctness guard and per-row timing in gated.py, the add-norm families' in
addnorm.py, the timers in timers.py, the CSV lines in results.py, the text tables in table.py;
this module holds the run loop and the CLI.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # a source checkout, used only when torch_ops is not installed

try:
    from . import addnorm, gated
    from .cases import (ADDNORM_PROVIDERS, ALL_PROVIDERS, CPU_REQUIRED, FAMILIES, PASSES,  # noqa: F401
                        PROVIDERS, Case, cpu_cases, cuda_cases, family_of)
    from .common import DTYPES, TOL, err, free  # noqa: F401
    from .providers import Env, norm_provider_fn, provider_fn  # noqa: F401
    from .results import FIELDS, Sink, row  # noqa: F401
    from .table import load_csv, print_table
    from .targets import print_targets
    from .timers import CpuTimer, CudaTimer
except ImportError:  # run as a script: python benchmarks/bench.py (ROOT is on sys.path above)
    from benchmarks import addnorm, gated
    from benchmarks.cases import (ADDNORM_PROVIDERS, ALL_PROVIDERS, CPU_REQUIRED, FAMILIES, PASSES,  # noqa: F401
                                  PROVIDERS, Case, cpu_cases, cuda_cases, family_of)
    from benchmarks.common import DTYPES, TOL, err, free  # noqa: F401
    from benchmarks.providers import Env, norm_provider_fn, provider_fn  # noqa: F401
    from benchmarks.results import FIELDS, Sink, row  # noqa: F401
    from benchmarks.table import load_csv, print_table
    from benchmarks.targets import print_targets
    from benchmarks.timers import CpuTimer, CudaTimer


# ---------------------------------------------------------------- the run

def run(device=None, quick=False, dtypes=None, only=None, reps=None, providers=None, compile=None,
        l2="rotate", csv_path=None, check=True, copy_gib=None, budget_s=None, log=sys.stderr, families=None,
        passes=None):
    """Run the benchmark; returns one dict per row x provider x pass (the CSV's lines).

    device: None = cuda if available, else cpu.  quick: a short subset.  dtypes: e.g.
    ["bf16", "fp16"] (CUDA default ["bf16"], CPU ["fp32"]).  only: regex on row names.
    providers: subset of ALL_PROVIDERS.  compile: include torch.compile (default: on CUDA only).
    l2: "rotate" (default) or "flush".  csv_path: also write the CSV, line by line.
    families: subset of FAMILIES (default all: gated, addnorm, rmsnorm).  passes: subset of
    PASSES (default: each row's own).
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    families = tuple(families or FAMILIES)
    dtypes = dtypes or (["bf16"] if cuda else ["fp32"])
    base = cuda_cases(quick, families) if cuda else cpu_cases(quick, families)
    cases = [replace(c, dtype=d, only_passes=tuple(passes) if passes else None) for d in dtypes for c in base]
    cases = [c for c in cases if c.passes()]
    if only:
        rx = re.compile(only)
        cases = [c for c in cases if rx.search(c.name)]
    env = Env(device, want_fla=cuda and any(c.family == "gated" for c in cases))
    # the gated guard's reference is torch_ops.gated_norm_ref; the add-norm guard needs no import
    no_ref = check and env.ref is None and any(c.family == "gated" for c in cases)
    if compile is None:
        compile = cuda
    provs = [p for p in (providers or ALL_PROVIDERS) if p in ALL_PROVIDERS]
    if not compile:
        provs = [p for p in provs if p != "compile"]
    if not cuda:  # the Triton and FlashInfer peers run on CUDA only
        provs = [p for p in provs if p not in ("triton", "fng", "flashinfer")]
    if cuda and "flashinfer" in provs and any(c.family != "gated" for c in cases):
        env.flashinfer()  # import it now (if it is there) so that the log's header says which
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

    sink = Sink(csv_path, log)
    if log is not None:
        print(f"device: {env.device_name}; torch {env.torch_version}; triton {env.triton_version or '-'}; "
              f"fla {env.fla_version or '-'}; ours: {'ok' if env.ours else env.ours_err}", file=log, flush=True)
        if cuda:
            print(f"fla layernorm_gated: {'ok' if env.lg else env.lg_err}; fused_norm_gate: "
                  f"{'ok' if env.fng else env.fng_err}; L2 {env.l2_bytes / 2 ** 20:.0f} MiB; l2 mode {l2}",
                  file=log, flush=True)
        if cuda and "flashinfer" in provs and any(c.family != "gated" for c in cases):
            print(f"flashinfer: {env.fi_version or env.fi_err}", file=log, flush=True)
        if no_ref:
            print("no correctness guard on the gated rows: its reference, torch_ops.gated_norm_ref, did not "
                  "import", file=log, flush=True)
    try:
        gib = copy_gib if copy_gib is not None else ((1.0 if quick else 2.0) if cuda else 0.25)
        ceiling, t = timer.copy_ceiling(gib)
        cc = Case("copy_ceiling", 1, int(gib * 2 ** 30) // 4, z=False, dtype="fp32")
        sink.add(row(cc, env, "copy", "copy", t, int(2 * gib * 2 ** 30), ceiling, note=f"{gib:g} GiB copy"))
        for c in cases:
            try:
                if c.family == "gated":
                    gated.bench_case(c, env, timer, [p for p in provs if p in PROVIDERS], ceiling, sink, reps,
                                     budget_s, check and not no_ref, graph_reps)
                else:
                    addnorm.bench_case(c, env, timer, [p for p in provs if p in ADDNORM_PROVIDERS], ceiling,
                                       sink, reps, budget_s, check, graph_reps)
            except Exception as e:  # setup (allocation, reference) failed: the row is n/a
                for ps in c.passes():
                    sink.add(row(c, env, "all", ps, None, None, ceiling, note=err(e)))
                free(device)
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
    ap.add_argument("--providers", default=None, help=f"comma list of {','.join(ALL_PROVIDERS)}")
    ap.add_argument("--family", default=None, metavar="LIST",
                    help=f"comma list of {','.join(FAMILIES)} (default all): gated norm, fused add + RMSNorm, "
                         "plain RMSNorm")
    ap.add_argument("--passes", default=None, metavar="LIST",
                    help=f"comma list of {','.join(PASSES)}: only these passes of each row")
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
        fams = set(a.family.split(",")) if a.family else None
        rows = [r for r in rows if r["provider"] == "copy" or (
            (rx is None or rx.search(r["name"])) and (fams is None or family_of(r["name"]) in fams))]
        print_table(rows)
        print_targets(rows)
        return 0
    dtypes = a.dtypes.split(",") if a.dtypes else None
    for d in dtypes or []:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    providers = a.providers.split(",") if a.providers else None
    for p in providers or []:
        if p not in ALL_PROVIDERS:
            ap.error(f"unknown provider {p!r}; choose from {', '.join(ALL_PROVIDERS)}")
    passes = a.passes.split(",") if a.passes else None
    for p in passes or []:
        if p not in PASSES:
            ap.error(f"unknown pass {p!r}; choose from {', '.join(PASSES)}")
    families = a.family.split(",") if a.family else None
    for f in families or []:
        if f not in FAMILIES:
            ap.error(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    if a.list:
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        fams = families or FAMILIES
        base = cuda_cases(a.quick, fams) if dev.startswith("cuda") else cpu_cases(a.quick, fams)
        for c in base:
            if not a.only or re.search(a.only, c.name):
                print(f"{c.name:26} M={c.M:<7} N={c.N:<8} {c.describe():22} passes={','.join(c.passes())}")
        return 0
    csv_path = a.csv if a.csv is not None else os.path.join(os.environ.get("OUT") or ".", "bench.csv")
    if csv_path == "-":
        csv_path = None
    rows = run(device=a.device, quick=a.quick, dtypes=dtypes, only=a.only, reps=a.reps, providers=providers,
               compile=a.compile, l2=a.l2, csv_path=csv_path, check=a.check, copy_gib=a.copy_gib,
               budget_s=a.budget, families=families, passes=passes)
    print_table(rows)
    print_targets(rows)
    if csv_path:
        print(f"\nCSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
