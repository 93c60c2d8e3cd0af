"""Ours across several runs, side by side: one line per (row, pass), one column per run
(fwd, fwdbwd: fraction of the copy ceiling; graph: GPU us). The tuning scripts' summary
(scripts/sweep_row_iters.sh: a column per setting; scripts/device_ab.sh: per source tree).

    python -m benchmarks.columns LABEL=CSV[:PROVIDER] [...]

A column is ours unless PROVIDER names a peer of that run (flashinfer, fng, ...).

A CSV that is missing (its run failed) leaves its column empty. Rows measured in several
dtypes (`--dtypes bf16,fp32`) get a line each, the dtype after the name.
"""
from __future__ import annotations

import csv
import os
import sys


def columns(runs):
    """runs: [(label, csv path[:provider])] -> printed table."""
    table, keys = {}, []
    for label, spec in runs:
        path, _, provider = spec.partition(":")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for r in csv.DictReader(f):
                if r["provider"] != (provider or "ours") or not r["time_us"]:
                    continue
                key = (r["name"], r.get("dtype", ""), r["pass"])
                if key not in keys:
                    keys.append(key)
                v = float(r["frac"]) if r["pass"] in ("fwd", "fwdbwd") else float(r["time_us"])
                table.setdefault(key, {})[label] = v
    w = max([7] + [len(label) for label, _ in runs])
    print(f"{'row':28} {'pass':6} " + " ".join(f"{label:>{w}}" for label, _ in runs)
          + "   (fwd, fwdbwd: fraction of the copy ceiling; graph: us)")
    several = len({k[1] for k in keys}) > 1
    for key in keys:
        vals = table[key]
        name = f"{key[0]} {key[1]}" if several else key[0]
        print(f"{name:28} {key[2]:6} "
              + " ".join(f"{vals[label]:{w}.3f}" if label in vals else f"{'-':>{w}}" for label, _ in runs))


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args or any("=" not in a for a in args):
        sys.exit("usage: python -m benchmarks.columns LABEL=CSV[:PROVIDER] [...]")
    columns([tuple(a.split("=", 1)) for a in args])


if __name__ == "__main__":
    main()
