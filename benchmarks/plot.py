"""Plots of a bench.py CSV: fraction of the copy ceiling vs N for the N-sweep rows, and for
the fused add + RMSNorm (and plain RMSNorm) rows.

    python -m benchmarks.plot bench.csv                  # -> docs/bench_fwd.png, docs/bench_fwdbwd.png,
                                                         #    docs/bench_addnorm.png, docs/bench_rmsnorm.png
    python -m benchmarks.plot bench.csv --out-dir /tmp   # elsewhere

Sweep: one line per provider (one panel per dtype when the CSV has several), log2 N on the x
axis, a line at 1.0 (the measured copy ceiling: speed of light) and at the 0.9 / 0.8
targets (forward / forward+backward bars). Add-norm: one panel per M, N on the x axis, one line
per provider; small M (CUDA-graph replay rows) has its own scale (far from the ceiling: launch
bound). Each PNG is written only when the CSV has its rows. Points whose correctness guard
failed are left out.
"""
from __future__ import annotations

import argparse
import os
import sys

try:
    from .cases import ADDNORM_PROVIDERS, PROVIDERS, family_of
    from .table import load_csv
except ImportError:  # run as a script: python benchmarks/plot.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.cases import ADDNORM_PROVIDERS, PROVIDERS, family_of
    from benchmarks.table import load_csv

TITLES = {"fwd": "forward", "fwdbwd": "forward + backward"}
STYLE = {  # provider -> (color, marker, label)
    "ours": ("tab:red", "o", "ours (gatednorm)"),
    "triton": ("tab:blue", "s", "FLA layernorm_gated (Triton, Tri Dao)"),
    "fng": ("tab:green", "^", "FLA fused_norm_gate (Triton)"),
    "eager": ("tab:gray", "v", "eager PyTorch"),
    "compile": ("tab:purple", "D", "torch.compile"),
    "flashinfer": ("tab:orange", "P", "FlashInfer"),
    "samecopy": ("black", "x", "a copy of the same bytes"),
}
NORM_TITLES = {"addnorm": "fused add + RMSNorm (in place)", "rmsnorm": "RMSNorm, no add"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        sys.exit("benchmarks.plot needs matplotlib: `pip install matplotlib` (the GPU machine's image has it)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sweep_rows(rows, prefix="sweep_n"):
    return [r for r in rows if r["name"].startswith(prefix) and r["pass"] in TITLES]


def plot(rows, out_dir="docs", prefix="sweep_n", names=("bench_fwd.png", "bench_fwdbwd.png")):
    """Write one PNG per pass (fwd, fwdbwd); returns the paths written."""
    plt = _pyplot()
    rows = sweep_rows(rows, prefix)
    if not rows:
        raise SystemExit(f"no rows named {prefix}* with pass fwd/fwdbwd in the CSV")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for ps, fname in zip(("fwd", "fwdbwd"), names):
        sel = [r for r in rows if r["pass"] == ps]
        if not sel:
            continue
        dtypes = sorted({r["dtype"] for r in sel}, key=lambda d: ["bf16", "fp16", "fp32", "fp64"].index(d)
                        if d in ("bf16", "fp16", "fp32", "fp64") else 9)
        fig, axes = plt.subplots(1, len(dtypes), figsize=(7.5 * len(dtypes), 5), squeeze=False)
        for ax, dt in zip(axes[0], dtypes):
            cur = [r for r in sel if r["dtype"] == dt]
            ymax = 1.05
            for p in PROVIDERS + ("samecopy",):
                pts = sorted((r["N"], r["frac"]) for r in cur
                             if r["provider"] == p and r["frac"] is not None and r["ok"] is not False)
                if not pts:
                    continue
                color, marker, label = STYLE.get(p, (None, "o", p))
                ax.plot([n for n, _ in pts], [f for _, f in pts], marker=marker, color=color, label=label,
                        linewidth=2.2 if p == "ours" else 1.4, markersize=5)
                ymax = max(ymax, max(f for _, f in pts) * 1.05)
            ax.axhline(1.0, color="black", linewidth=1.2, label="copy ceiling (speed of light)")
            ax.axhline(0.9, color="black", linewidth=0.9, linestyle="--",
                       label="0.9 target" + (" (bar)" if ps == "fwd" else ""))
            ax.axhline(0.8, color="black", linewidth=0.9, linestyle=":",
                       label="0.8 target" + (" (bar)" if ps == "fwdbwd" else ""))
            ax.set_xscale("log", base=2)
            ns = sorted({r["N"] for r in cur})
            ax.set_xticks(ns)
            ax.set_xticklabels([str(n) if n < 1024 else f"{n // 1024}K" for n in ns], rotation=45)
            ax.set_ylim(0, ymax)
            ax.set_xlabel("N (hidden size; M*N constant)")
            ax.set_ylabel("fraction of copy ceiling (bytes / time / copy GB/s)")
            r0 = cur[0]
            mn = r0["M"] * r0["N"]
            ceil = r0.get("ceiling_gbps")
            ax.set_title(f"{TITLES[ps]}, {dt}, M*N = 2^{mn.bit_length() - 1}, "
                         f"{'rms' if r0['rms'] else 'ln'}{' z ' + r0['order'] if r0['z'] else ''}"
                         + (f"\nceiling {ceil:.0f} GB/s" if ceil else ""), fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
        r0 = sel[0]
        fig.suptitle(f"gated norm N sweep — {r0['device']}, torch {r0['torch']}"
                     + (f", triton {r0['triton']}" if r0.get("triton") else "")
                     + (f", fla {r0['fla']}" if r0.get("fla") else "") + f", {r0['date'][:10]}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def plot_norm(rows, out_dir="docs", family="addnorm", name=None):
    """One PNG for an add-norm family: a panel per M, fraction of the ceiling vs N, a line per
    provider (fwd pass; graph pass for the small-M rows). Returns the path, or None without rows."""
    sel = [r for r in rows if family_of(r["name"]) == family and r["pass"] in ("fwd", "graph")]
    if not sel:
        return None
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    ms = sorted({r["M"] for r in sel})
    dtypes = sorted({r["dtype"] for r in sel}, key=lambda d: ["bf16", "fp16", "fp32", "fp64"].index(d)
                    if d in ("bf16", "fp16", "fp32", "fp64") else 9)
    fig, axes = plt.subplots(len(dtypes), len(ms), figsize=(4.2 * len(ms), 4.4 * len(dtypes)), squeeze=False)
    for (dt, m), ax in zip([(d, m) for d in dtypes for m in ms], axes.flat):
        cur = [r for r in sel if r["M"] == m and r["dtype"] == dt]
        graph = all(r["pass"] == "graph" for r in cur)
        for p in ADDNORM_PROVIDERS + ("samecopy",):
            pts = sorted((r["N"], r["frac"]) for r in cur
                         if r["provider"] == p and r["frac"] is not None and r["ok"] is not False)
            if pts:
                color, marker, label = STYLE.get(p, (None, "o", p))
                ax.plot([n for n, _ in pts], [f for _, f in pts], marker=marker, color=color, label=label,
                        linewidth=2.2 if p == "ours" else 1.4, markersize=5)
        if not graph:  # large M: the ceiling and the 0.9 target are in reach
            ax.axhline(1.0, color="black", linewidth=1.2, label="copy ceiling")
            ax.axhline(0.9, color="black", linewidth=0.9, linestyle="--", label="0.9 target")
            ax.set_ylim(0, max([1.05] + [r["frac"] * 1.05 for r in cur if r["frac"] is not None]))
        else:
            ax.set_ylim(bottom=0)
        ns = sorted({r["N"] for r in cur})
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("N (hidden size)")
        ax.set_title(f"M = {m}, {dt}" + (" (CUDA graph, GPU time)" if graph else ""), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for row_axes in axes:
        row_axes[0].set_ylabel("fraction of copy ceiling (bytes / time / copy GB/s)")
    r0 = sel[0]
    ceil = r0.get("ceiling_gbps")
    fig.suptitle(f"{NORM_TITLES[family]} — {r0['device']}, torch {r0['torch']}, {r0['date'][:10]}"
                 + (f", ceiling {ceil:.0f} GB/s" if ceil else ""), fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir, name or f"bench_{family}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.split("\n\n")[0])
    default_csv = os.path.join(os.environ.get("OUT") or ".", "bench.csv")
    ap.add_argument("csv", nargs="*", default=[default_csv],
                    help=f"CSV(s) from benchmarks.bench, e.g. the parts of a split run (default {default_csv})")
    ap.add_argument("--out-dir", default="docs", help="where the PNGs go (default docs)")
    ap.add_argument("--prefix", default="sweep_n", help="row-name prefix of the sweep (default sweep_n)")
    ap.add_argument("--names", default="bench_fwd.png,bench_fwdbwd.png", help="file names, fwd,fwdbwd")
    a = ap.parse_args(argv)
    rows = [r for path in a.csv for r in load_csv(path)]
    written = plot(rows, a.out_dir, a.prefix, tuple(a.names.split(","))) if sweep_rows(rows, a.prefix) else []
    written += [p for p in (plot_norm(rows, a.out_dir, fam) for fam in NORM_TITLES) if p]
    if not written:
        raise SystemExit(f"no rows to plot: none named {a.prefix}*, addrms_* or plainrms_* in the CSV")
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
