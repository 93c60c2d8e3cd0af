"""Text tables of the results of bench.run() (or of its CSVs read back with load_csv)."""
from __future__ import annotations

import csv
import sys

from .cases import CPU_REQUIRED, FAMILIES, PASSES, family_of, providers_of


_PASS_TITLE = {
    "fwd": "forward: us and fraction of the copy ceiling",
    "fwdbwd": "forward+backward: us and fraction of the copy ceiling",
    "graph": "decode, CUDA-graph replay: GPU us per forward and fraction of the copy ceiling",
    "host": "decode, host wall per eager call (us)",
}
_FAMILY_TITLE = {"addnorm": "fused add + RMSNorm (in place)", "rmsnorm": "RMSNorm, no add"}
_NORM_PASS_TITLE = {
    "fwd": "us and fraction of the copy ceiling",
    "graph": "small M, CUDA-graph replay: GPU us per call and fraction of the copy ceiling",
    "host": "small M, host wall per eager call (us)",
}


def _title(fam, ps):
    return _PASS_TITLE[ps] if fam == "gated" else f"{_FAMILY_TITLE[fam]}, {_NORM_PASS_TITLE[ps]}"


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


def good(r):
    """A measured cell whose output passed the correctness guard."""
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
    for fam, ps in [(f, p) for f in FAMILIES for p in PASSES]:
        sel = [r for r in rows if r["pass"] == ps and family_of(r["name"]) == fam]
        if not sel:
            continue
        provs = [p for p in providers_of(fam) if any(r["provider"] == p for r in sel)]
        if any(r["provider"] == "samecopy" for r in sel):
            provs.append("samecopy")  # a reference column, not a peer (vs best leaves it out)
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
        print(f"\n== {_title(fam, ps)}", file=file)
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
                ratio = f"{ours['time_us'] / add['time_us']:.2f}x" if good(ours) and good(add) else "-"
                line += f" {ratio:>10}"
            peers = [by.get(k + (p,)) for p in provs if p not in ("ours", "samecopy")]
            peers = [r for r in peers if good(r)]
            vs_best = vs_eager = "-"
            if good(ours) and peers:
                vs_best = f"{min(r['time_us'] for r in peers) / ours['time_us']:.2f}x"
            eager = by.get(k + ("eager",))
            if good(ours) and good(eager):
                vs_eager = f"{eager['time_us'] / ours['time_us']:.2f}x"
                if k[0] == CPU_REQUIRED and ps == "fwdbwd":
                    vs_eager += " PASS" if eager["time_us"] >= 2 * ours["time_us"] else " FAIL"
            line += f" {vs_best:>8} {vs_eager:>11}"
            print(line, file=file)
    if any(r["ok"] is False for r in rows):
        print("\n! = output or gradient disagrees with the reference (gated: fp32 eager; add-norm: fp64; see the CSV's "
              "note column)", file=file)
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
