"""The issues' speed targets, checked against one run's rows (bench.run(), or its CSVs read
back with table.load_csv): for each target, how many of the rows it covers meet it, and every
row that does not, with its number and, where the run timed one, a copy of the same bytes
(`samecopy`: what a kernel of that size can reach at all under the same timer).

The bars are the issues' (set for the H100); they are printed for whatever CUDA device ran,
with its name. CPU runs have their own bar (table.py, CPU_REQUIRED) and print none of these.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from .cases import family_of
from .table import good


@dataclass(frozen=True)
class Target:
    title: str
    family: str
    pass_: str
    covers: Callable[[dict], bool]  # on the row's ours line
    met: Callable[[dict, dict], bool | None]  # (ours, peers by provider) -> None when not measured
    show: Callable[[dict, dict], str]


def _frac(bar):
    return (lambda o, peers: o["frac"] >= bar), (lambda o, peers: f"{o['frac']:.3f} of the ceiling")


def _us(bar):
    return (lambda o, peers: o["time_us"] <= bar), (lambda o, peers: f"{o['time_us']:.2f} us")


def _faster(names):
    """Ours no slower than the fastest of these peers (those measured in the same run)."""
    def best(peers):
        ts = [(peers[p]["time_us"], p) for p in names if p in peers]
        return min(ts) if ts else None

    def met(o, peers):
        b = best(peers)
        return None if b is None else o["time_us"] <= b[0]

    def show(o, peers):
        t, p = best(peers)
        return f"{o['time_us']:.2f} us vs {p} {t:.2f} us ({t / o['time_us']:.2f}x)"
    return met, show


def _bw(r):  # gated rows the bandwidth targets cover: 64 <= N <= 131072 at M*N >= 2^24
    return 64 <= r["N"] <= 131072 and r["M"] * r["N"] >= 1 << 24


_GATED_PEERS = ("triton", "fng", "eager", "compile")

TARGETS = [
    Target("gated forward >= 0.90 of the copy ceiling (64 <= N <= 131072, M*N >= 2^24)", "gated", "fwd", _bw,
           *_frac(0.90)),
    Target("gated forward+backward >= 0.80 (same rows)", "gated", "fwdbwd", _bw, *_frac(0.80)),
    Target("decode M=2048 N=128: <= 3 us GPU time a forward under CUDA-graph replay", "gated", "graph",
           lambda r: (r["M"], r["N"]) == (2048, 128), *_us(3.0)),
    Target("decode M=2048 N=128: <= 10 us host wall per eager forward", "gated", "host",
           lambda r: (r["M"], r["N"]) == (2048, 128), *_us(10.0)),
    Target("gated: no row slower than the fastest peer (forward)", "gated", "fwd", lambda r: True,
           *_faster(_GATED_PEERS)),
    Target("gated: no row slower than the fastest peer (forward+backward)", "gated", "fwdbwd", lambda r: True,
           *_faster(_GATED_PEERS)),
    Target("gated: no row slower than the fastest peer (graph replay)", "gated", "graph", lambda r: True,
           *_faster(_GATED_PEERS)),
    Target("gated: no row slower than the fastest peer (host wall per eager call)", "gated", "host", lambda r: True,
           *_faster(_GATED_PEERS)),
    Target("add + RMSNorm >= 0.90 of the copy ceiling at M >= 4096", "addnorm", "fwd", lambda r: r["M"] >= 4096,
           *_frac(0.90)),
    Target("add + RMSNorm <= 3 us under CUDA-graph replay at M <= 64", "addnorm", "graph", lambda r: r["M"] <= 64,
           *_us(3.0)),
    Target("add + RMSNorm never slower than FlashInfer (forward)", "addnorm", "fwd", lambda r: True,
           *_faster(("flashinfer",))),
    Target("add + RMSNorm never slower than FlashInfer (graph replay)", "addnorm", "graph", lambda r: True,
           *_faster(("flashinfer",))),
    Target("add + RMSNorm never slower than FlashInfer (host wall per eager call)", "addnorm", "host",
           lambda r: True, *_faster(("flashinfer",))),
]


def check_targets(rows):
    """[(target, [(row key, met, text)])]: the targets any row of this run covers."""
    by = {}
    for r in rows:
        by.setdefault((r["name"], r["dtype"], r["pass"]), {})[r["provider"]] = r
    out = []
    for t in TARGETS:
        res = []
        for (name, dtype, ps), provs in by.items():
            o = provs.get("ours")
            if ps != t.pass_ or family_of(name) != t.family or not good(o) or not t.covers(o):
                continue
            peers = {p: r for p, r in provs.items() if p not in ("ours", "samecopy") and good(r)}
            met = t.met(o, peers)
            if met is None:
                continue
            text = t.show(o, peers)
            same = provs.get("samecopy")
            if good(same) and o["frac"] is not None and same["frac"]:
                text += f"; a copy of the same bytes {same['frac']:.3f} (ours / copy {o['frac'] / same['frac']:.2f})"
            res.append(((name, dtype), met, text))
        if res:
            out.append((t, res))
    return out


def print_targets(rows, file=None):
    """The targets' summary after the tables (CUDA runs only)."""
    file = file or sys.stdout
    copy = [r for r in rows if r["provider"] == "copy"]
    if not copy or str(copy[0]["device"]).startswith("cpu"):
        return
    checked = check_targets(rows)
    if not checked:
        return
    print(f"\n== targets (the issues' bars, set for the H100; this run: {copy[0]['device']})", file=file)
    unmet = 0
    for t, res in checked:
        bad = [x for x in res if not x[1]]
        unmet += len(bad)
        print(f"{'PASS' if not bad else 'FAIL'}  {t.title}: {len(res) - len(bad)} of {len(res)} rows", file=file)
        for (name, dtype), _, text in bad:
            print(f"        {name} {dtype}: {text}", file=file)
    print(f"{'every target met' if not unmet else f'{unmet} row(s) below a target'} on the rows this run measured",
          file=file)
