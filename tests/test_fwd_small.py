"""The forward's small-block kernel (csrc/cuda/gated_norm_fwd_row.cu, launch_small: fwd_block_row
in blocks of <= 256 threads, four vectors a thread), which takes 16-bit RMSNorm groups of
128-1024 vectors (a gate after or none, parameters of the rows' dtype) at two waves of blocks
or more. On a CPU build these are more cases of the CPU kernels; the kernel itself runs on
CUDA and under the CPU emulator (scripts/emu_check.sh), where the CUDA kernels serve "cpu"."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import (assert_close, kernel_names, make_inputs, ops, ref64, stats64, template_args,
                      tol)

# (shape, dtype, group, activation, z, weight, bias). Rows for two waves of (row, group) blocks
# on an H100 (264) and the emulator (8): 128 vectors (1024 bf16), 1024 (8192 bf16), a last
# warp holding 113 of its 128 vector slots (5000 bf16: 625 vectors, 160 threads), groups, no
# gate, a bias, fp16, a 3-D input.
SMALL = [
    ((300, 1024), torch.bfloat16, None, "silu", True, True, False),
    ((300, 5000), torch.bfloat16, None, "sigmoid", True, True, False),
    ((280, 1920), torch.float16, None, "silu", False, True, True),
    ((270, 8192), torch.bfloat16, 8192, "swish", True, False, False),
    ((300, 4096), torch.bfloat16, 1024, "silu", True, True, True),
    ((3, 100, 2048), torch.float16, None, "sigmoid", True, True, False),
    ((300, 2048), torch.float32, None, "silu", True, True, False),
    ((300, 1200), torch.float32, None, "silu", True, True, True),
]
# Groups the kernel leaves to other paths: 150 vectors in 256 slots (1200 fp16), fp32 with more
# than a quarter of its slots empty (516: 129 vectors in 256), a gate before the norm,
# LayerNorm, fp32 parameters beside bf16 rows, too few rows.
OTHER = [
    ((280, 1200), torch.float16, None, "silu", True, True, True),
    ((300, 516), torch.float32, None, "silu", True, True, False),
]


def _run(x, w, b, z, g, act, rms=True, nbg=True):
    return ops.gated_norm_fwd(x, w, b, z, 1e-6, g, nbg, rms, act)


def _check(x, w, b, z, g, act):
    out, _, rstd = _run(x, w, b, z, g, act)
    n = g or x.shape[-1]
    assert_close(out, ref64(x, w, b, z, 1e-6, g, True, True, act), tol(x.dtype, n), "out")
    assert_close(rstd, stats64(x, z, g, True, True, act)[1], tol(torch.float32, n), "rstd")


@pytest.mark.parametrize("case", SMALL + OTHER, ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-g{c[2]}-{c[3]}")
def test_small_blocks_match_reference(case, device):
    shape, dt, g, act, has_z, has_w, has_b = case
    x, w, b, z = make_inputs(shape, dt, device, z=has_z, weight=has_w, bias=has_b)
    _check(x, w, b, z, g, act)


def test_small_blocks_strided_rows(device):
    """Rows 16-byte aligned but not packed (a view of every row's first 5000 of 5064 columns),
    the output dense: the kernel reads with x's and z's row strides."""
    xb, _, _, zb = make_inputs((300, 5064), torch.bfloat16, device, bias=False)
    _, w, _, _ = make_inputs((1, 5000), torch.bfloat16, device, z=False, bias=False)
    x, z = xb[:, :5000], zb[:, 8:5008]
    assert x.stride(0) == 5064 and not x.is_contiguous()
    _check(x, w, None, z, None, "silu")


_FORCED = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_fwd_small as t
from conftest import make_inputs
for shape, dt, g, act, has_z, has_w, has_b in t.OTHER + t.FP32:
    x, w, b, z = make_inputs(shape, dt, {device!r}, z=has_z, weight=has_w, bias=has_b)
    t._check(x, w, b, z, g, act)
print("ok")
"""
# More fp32 groups (the kernel takes them by default too): 128 vectors (512), 1024 (4096, groups
# of it), 1000 with a bias.
FP32 = [
    ((300, 512), torch.float32, None, "silu", True, True, False),
    ((300, 8192), torch.float32, 4096, "sigmoid", True, True, False),
    ((290, 4000), torch.float32, None, "swish", False, True, True),
]


def test_small_blocks_forced_match_reference(device):
    """GATEDNORM_FWD_SMALL=2 (read once a process: a child process), for measurements, sends the
    groups the rule leaves out (150 vectors in 256 slots, fp32) to the kernel: still right."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GATEDNORM_FWD_SMALL="2")
    r = subprocess.run([sys.executable, "-c", _FORCED.format(tests=tests, device=device)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]


def _small_kernel_ran(names):
    return any((template_args(n, "fwd_block_row") or [None] * 5)[4] == "256" for n in names)


@pytest.mark.parametrize("case,small", [(c, True) for c in SMALL] + [(c, False) for c in OTHER] + [
    (((300, 4096), torch.bfloat16, None, "silu", True, True, False, "nbg=False"), False),
    (((300, 4096), torch.bfloat16, None, "silu", True, True, False, "layernorm"), False),
    (((300, 4096), torch.bfloat16, None, "silu", True, True, False, "fp32 params"), False),
    (((100, 4096), torch.bfloat16, None, "silu", True, True, False), False),
], ids=lambda v: str(v) if isinstance(v, bool) else f"{v[0]}-{str(v[1])[6:]}" + (f"-{v[7]}" if len(v) > 7 else ""))
def test_small_block_rule(case, small, device):
    """Which groups launch_small takes (its TB, fwd_block_row's fifth template argument, 256):
    every SMALL case, none of the others (a gate before the norm, LayerNorm, fp32 parameters and
    100 rows, under two waves on an H100, among them). On CUDA and the emulator."""
    shape, dt, g, act, has_z, has_w, has_b = case[:7]
    if device == "cpu" and shape[0] == 100:
        pytest.skip("100 rows are two waves of blocks on the emulated device's 4 SMs")
    what = case[7] if len(case) > 7 else ""
    x, w, b, z = make_inputs(shape, dt, device, z=has_z, weight=has_w, bias=has_b,
                             param_dtype=torch.float32 if what == "fp32 params" else None)
    names = kernel_names(lambda: _run(x, w, b, z, g, act, rms=what != "layernorm", nbg=what != "nbg=False"), device)
    assert _small_kernel_ran(names) == small, names
