"""The backward register kernels' lean row copy (RMSNorm without db, kernels of 16 elements
a thread: csrc/cuda/gated_norm_bwd.cu) against their general copy, GATEDNORM_BWD_LEAN=0
(read once a process: a child process). The lean copy drops terms that are exact zeros for
RMSNorm (the mean, the LayerNorm group term) and the sums it does not need, so the two
must agree bitwise. On a CPU build the knob has nothing to switch; the test bites on CUDA
and under the CPU emulator (scripts/emu_check.sh), where these kernels serve "cpu"."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import make_inputs, ops

# (shape, dtype, group, norm_before_gate, z, weight, bias, activation). RMSNorm groups of
# 16-bit 4104-8192 columns and fp32 4100-8192 unsplit take 16 elements a thread (the lean
# kernels; so do 2056-4096 without a gate, and fp32: gated 16-bit ones there keep 8 in teams
# of up to 512 threads, csrc/cuda/plan.cu, bwd_rms_teams); a bias (db) and 128 columns (one
# vector a thread) keep the general copy and must agree too.
CASES = [
    ((64, 8192), "bfloat16", None, True, True, True, False, "silu"),
    ((37, 4104), "bfloat16", None, True, True, True, False, "sigmoid"),
    ((3, 2, 5000), "float16", None, False, True, True, False, "silu"),
    ((48, 6144), "float16", None, True, False, True, False, "silu"),
    ((24, 8192), "bfloat16", None, True, True, False, False, "silu"),
    ((16, 12288), "float32", 6144, True, False, True, False, "sigmoid"),
    ((40, 5000), "bfloat16", None, True, True, True, True, "silu"),
    ((40, 128), "bfloat16", None, True, True, True, False, "silu"),
]
LEAN = 6  # the first six take the lean copy


_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_bwd_lean
torch.save(test_bwd_lean.run_all({device!r}), {path!r})
"""


def run_all(device):
    """dx, dw, db, dz of every case (seeded inputs), in this process's setting of the knob."""
    out = []
    for i, (shape, dt, g, nbg, has_z, has_w, has_b, act) in enumerate(CASES):
        torch.manual_seed(i)
        x, w, b, z = make_inputs(shape, getattr(torch, dt), device, z=has_z, weight=has_w, bias=has_b)
        y, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, g, nbg, True, act)
        dy = torch.randn_like(y)
        out.append(ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, g, nbg, True, act, False))
    return [[t.cpu() if t is not None else None for t in grads] for grads in out]


def test_lean_copy_matches_general_bitwise(device, tmp_path):
    path = str(tmp_path / "general.pt")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GATEDNORM_BWD_LEAN="0")
    r = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=tests, device=device, path=path)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    general = torch.load(path)
    lean = run_all(device)
    for case, g_grads, l_grads in zip(CASES, general, lean):
        for name, g_t, l_t in zip(("dx", "dw", "db", "dz", "out"), g_grads, l_grads):
            assert (g_t is None) == (l_t is None), (case, name)
            if g_t is not None:
                assert not torch.isnan(l_t).any(), (case, name)
                assert torch.equal(g_t, l_t), (case, name, (g_t.float() - l_t.float()).abs().max().item())


def test_lean_cases_take_16_elements(device):
    """The cases meant for the lean copy run a register kernel of 16 elements a thread (its
    vectors, the second template argument: 2 at 16-bit, 4 at fp32), else the test above
    compares the general copy with itself. On CUDA and the emulator."""
    from conftest import kernel_names, regs_vecs
    for shape, dt, g, nbg, has_z, has_w, has_b, act in CASES[:LEAN]:
        x, w, b, z = make_inputs(shape, getattr(torch, dt), device, z=has_z, weight=has_w, bias=has_b)
        y, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, g, nbg, True, act)
        dy = torch.randn_like(y)
        names = kernel_names(lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, g, nbg, True, act, False),
                             device)
        assert regs_vecs(names, "bwd_regs") == {4 if dt == "float32" else 2}, (shape, dt, names)
