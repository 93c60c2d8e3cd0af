"""The benchmark's rows: what is measured (family, shape, gate, order, norm, dtype) and in which passes.

Families: "gated" (gated RMSNorm / LayerNorm, the rows named below), "addnorm" (fused add +
RMSNorm, in place: rows `addrms_m{M}_n{N}`) and "rmsnorm" (plain RMSNorm, no add: rows
`plainrms_m{M}_n{N}`); the name prefix tells the family of a CSV line (family_of).
"""
from __future__ import annotations

from dataclasses import dataclass

PROVIDERS = ("ours", "triton", "fng", "eager", "compile")  # also the table's column order
ADDNORM_PROVIDERS = ("ours", "flashinfer", "eager", "compile")  # addnorm and rmsnorm families
ALL_PROVIDERS = PROVIDERS + ("flashinfer",)
PASSES = ("fwd", "fwdbwd", "graph", "host")
FAMILIES = ("gated", "addnorm", "rmsnorm")
_PREFIX = {"addnorm": "addrms_", "rmsnorm": "plainrms_"}


def family_of(name: str) -> str:
    """The family of a row name (CSV lines carry the name, not the family)."""
    for fam, pre in _PREFIX.items():
        if name.startswith(pre):
            return fam
    return "gated"


def providers_of(family: str):
    return PROVIDERS if family == "gated" else ADDNORM_PROVIDERS


@dataclass(frozen=True)
class Case:
    name: str
    M: int
    N: int
    group: int | None = None  # None = N
    z: bool = True
    nbg: bool = True  # norm_before_gate: True = norm, then gate ("after"); False = gate, then norm
    rms: bool = True
    bias: bool = False
    act: str = "silu"
    dtype: str = "bf16"
    pdtype: str = ""  # the weight's and bias's dtype ("": the rows' dtype)
    kind: str = "bw"  # "bw": fwd (+ fwdbwd for the gated family) passes; "decode": graph + host passes
    eps: float = 1e-6
    family: str = "gated"  # see the module docstring
    only_passes: tuple | None = None  # --passes: a subset of what this row measures

    @property
    def order(self) -> str:
        return "" if not self.z else ("after" if self.nbg else "before")

    def passes(self):
        if self.kind == "decode":
            ps = ("graph", "host")
        else:
            ps = ("fwd", "fwdbwd") if self.family == "gated" else ("fwd",)  # add-norm: inference only
        return ps if self.only_passes is None else tuple(p for p in ps if p in self.only_passes)

    def describe(self) -> str:
        if self.family != "gated":
            return "add + rms, in place" if self.family == "addnorm" else "rms, no add"
        s = ("rms" if self.rms else "ln") + ("+b" if self.bias else "")
        if self.z:
            s += f" z {self.order}" + ("" if self.act in ("silu", "swish") else f" {self.act}")
        if self.group not in (None, self.N):
            s += f" g{self.group}"
        if self.pdtype:
            s += f" w {self.pdtype}"
        return s


SWEEP_NS = [1 << k for k in range(6, 18)]  # 64 .. 131072, M*N = 2^26
# Fused add + RMSNorm shapes: decode (M = 1, 64) to prefill (65536) x LLM hidden sizes.
ADDNORM_MS = (1, 64, 4096, 65536)
ADDNORM_NS = (2048, 4096, 5120, 8192)
DECODE_MAX_M = 64  # add-norm rows up to this M are timed as graph replays + host wall


def norm_case(family, M, N, dtype="bf16", cuda=True):
    """An addnorm / rmsnorm row; on CUDA small M is timed like the decode rows."""
    kind = "decode" if cuda and M <= DECODE_MAX_M else "bw"
    return Case(f"{_PREFIX[family]}m{M}_n{N}", M, N, z=False, act="", dtype=dtype, kind=kind, family=family)


def _norm_rows(families, cuda, quick, dtype):
    if cuda:
        add = [(1, 4096), (4096, 4096), (65536, 8192)] if quick else [(m, n) for m in ADDNORM_MS for n in ADDNORM_NS]
    else:  # small: on the CPU these rows are a functional check, not a target
        add = [(4096, 4096)] if quick else [(64, 5120), (4096, 4096)]
    plain = [(4096, 4096)] if quick else add
    grids = {"addnorm": add, "rmsnorm": plain}
    return [norm_case(fam, m, n, dtype, cuda) for fam in ("addnorm", "rmsnorm") if fam in families
            for m, n in grids[fam]]


def cuda_cases(quick=False, families=FAMILIES):
    rows = [
        Case("qwen3next_prefill", 131072, 128),
        Case("decode_qwen3next", 2048, 128, kind="decode"),
        Case("decode_m32", 32, 128, kind="decode"),
        Case("mamba2_g1024", 16384, 8192, group=1024, nbg=False),
        Case("gate_before_5120", 16384, 5120, nbg=False),
        Case("rms_z_4096", 32768, 4096),
        Case("ln_bias_z_4096", 32768, 4096, rms=False, bias=True),
        Case("ln_z_4096", 32768, 4096, rms=False),  # LayerNorm without the bias: what the bias costs
        Case("ln_bias_z_8192", 8192, 8192, rms=False, bias=True),  # a backward ring past shared memory unsplit
        Case("ln_bias_z_16384", 4096, 16384, rms=False, bias=True),  # LayerNorm past a block's register path
        Case("ln_z_32768", 2048, 32768, rms=False),  # and 16-bit LayerNorm at four vectors a thread
        Case("rms_noz_4096", 32768, 4096, z=False),
        Case("rms_noz_16384", 4096, 16384, z=False),  # the block-row paths without a gate
        Case("mixed_16384", 4096, 16384, pdtype="fp32"),  # and with fp32 parameters beside 16-bit rows
        Case("sigmoid_4096", 32768, 4096, act="sigmoid"),
    ]
    rows += [Case(f"sweep_n{n}", (1 << 26) // n, n) for n in SWEEP_NS]
    rows += [
        Case("bign_1m", 16, 1 << 20),
        # the wide paths' other branches: z in the statistics, LayerNorm's merged variance and c2
        Case("bign_ln_before_1m", 16, 1 << 20, rms=False, nbg=False, bias=True),
        Case("odd_n1200", round(2 ** 25 / 1200), 1200),
        Case("odd_n5000", round(2 ** 25 / 5000), 5000),
    ]
    if quick:
        keep = {"qwen3next_prefill", "decode_qwen3next", "mamba2_g1024", "rms_z_4096", "sweep_n1024",
                "sweep_n65536", "odd_n1200"}
        rows = [r for r in rows if r.name in keep]
    rows = rows if "gated" in families else []
    return rows + _norm_rows(families, True, quick, "bf16")


# The CPU project bar: ours >= 2x eager on forward+backward on this row.
CPU_REQUIRED = "cpu_4096_gate_before_gN"


def cpu_cases(quick=False, families=FAMILIES):
    rows = [
        Case(CPU_REQUIRED, 4096, 4096, group=4096, nbg=False, dtype="fp32"),
        Case("cpu_n128_z_after", 16384, 128, dtype="fp32"),
        Case("cpu_1024_z_after", 4096, 1024, dtype="fp32"),
        Case("cpu_4096_g512_before", 1024, 4096, group=512, nbg=False, dtype="fp32"),
        Case("cpu_2048_ln_bias_z", 2048, 2048, rms=False, bias=True, dtype="fp32"),
        Case("cpu_2048_rms_noz", 4096, 2048, z=False, dtype="fp32"),
        Case("cpu_odd_1200", 2048, 1200, dtype="fp32"),
    ]
    if quick:
        rows = [r for r in rows if r.name in (CPU_REQUIRED, "cpu_n128_z_after", "cpu_2048_rms_noz")]
    rows = rows if "gated" in families else []
    return rows + _norm_rows(families, False, quick, "fp32")
