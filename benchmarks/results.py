"""Result lines: one dict per row x provider x pass (the CSV's columns), the CSV sink that
writes them as they come, and the progress line logged for each."""
from __future__ import annotations

import csv
import os
import time

FIELDS = ["name", "M", "N", "group", "dtype", "z", "order", "rms", "provider", "pass", "time_us", "gbps",
          "frac", "device", "torch", "triton", "fla", "date", "act", "bias", "ok", "reps", "ceiling_gbps",
          "note"]


def row(c, env, provider, pass_, t_us, nbytes, ceiling, ok=None, note="", reps=None):
    """The result of one measurement (t_us None: n/a, the reason in note)."""
    gbps = nbytes / (t_us * 1e-6) / 1e9 if (t_us and nbytes) else None
    return {
        "name": c.name, "M": c.M, "N": c.N, "group": c.group or c.N, "dtype": c.dtype, "z": int(c.z),
        "order": c.order, "rms": int(c.rms), "provider": provider, "pass": pass_, "time_us": t_us,
        "gbps": gbps, "frac": (gbps / ceiling if (gbps and ceiling) else None), "device": env.device_name,
        "torch": env.torch_version, "triton": env.triton_version, "fla": env.fla_version, "date": env.date,
        "act": c.act, "bias": int(c.bias), "ok": ok, "reps": reps, "ceiling_gbps": ceiling, "note": note,
    }


class Sink:
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
            self.w.writerow({k: csv_val(r.get(k)) for k in FIELDS})
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


def csv_val(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e5 else f"{v:.1f}"
    return v
