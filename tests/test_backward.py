"""Backward: gradcheck in fp64, autograd through the ops vs autograd through the fp64
reference, recompute_output, the *_out variant on row-strided views, determinism of
dw/db and empty batches."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torch_ops
from conftest import (assert_close, assert_normwise, bandwidth_rich, bwd_scales, cuda_kernels, device_sms, f64,
                      free_nan_block, grad_tol, kernel_names, make_inputs, ops, poison, reduce_tol, regs_vecs,
                      requires_cuda, template_args, tol)

# (group_size, norm_before_gate, is_rms_norm, activation, z, weight, bias) on M=3, N=8
GRADCHECK_CASES = [
    (None, True, False, "silu", True, True, True),
    (None, False, False, "silu", True, True, True),
    (4, True, True, "sigmoid", True, True, False),
    (4, False, True, "silu", True, True, False),
    (2, False, False, "sigmoid", True, False, True),
    (4, True, False, "swish", True, False, False),
    (None, True, True, "silu", False, True, False),
    (2, True, False, "silu", False, True, True),
    (None, False, True, "sigmoid", True, False, False),
]


def gc_id(c):
    g, nbg, rms, act, z, w, b = c
    return f"g{g}-{'nbg' if nbg else 'gbn'}-{'rms' if rms else 'ln'}-{act}{'-z' if z else ''}{'-w' if w else ''}" \
           f"{'-b' if b else ''}"


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=gc_id)
def test_gradcheck_fp64(case, device):
    g, nbg, rms, act, z, w, b = case
    x, wt, bt, zt = make_inputs((3, 8), torch.float64, device, z=z, weight=w, bias=b)
    inputs = tuple(None if t is None else t.requires_grad_() for t in (x, wt, bt, zt))

    def f(x, w, b, z):
        return ops.gated_norm(x, w, b, z, 1e-5, g, nbg, rms, act)[0]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_fp64_3d_strided(device):
    """gradcheck of layernorm_fn on a 3-D row-strided x (slice of a fused projection)."""
    proj = torch.randn(2, 3, 16, dtype=torch.float64, device=device, requires_grad=True)
    _, w, b, _ = make_inputs((1, 8), torch.float64, device, z=False)
    w.requires_grad_()

    def f(proj, w):
        x, z = proj.split(8, dim=-1)
        return torch_ops.layernorm_fn(x, w, None, z=z, eps=1e-5, group_size=4, norm_before_gate=False)

    assert torch.autograd.gradcheck(f, (proj, w), eps=1e-6, atol=1e-8, rtol=1e-6)


def grads_vs_reference(shape, dtype, device, g, nbg, rms, act, z=True, w=True, b=True, param_dtype=None,
                       fn="op"):
    """Autograd through the op (or layernorm_fn) vs autograd through the fp64 reference on the
    same rounded inputs and the same rounded dy."""
    x, wt, bt, zt = make_inputs(shape, dtype, device, z=z, weight=w, bias=b, param_dtype=param_dtype)
    leaves = [None if t is None else t.clone().requires_grad_() for t in (x, wt, bt, zt)]
    leaves64 = [None if t is None else f64(t).cpu().requires_grad_() for t in (x, wt, bt, zt)]
    if fn == "op":
        out = ops.gated_norm(*leaves, 1e-6, g, nbg, rms, act)[0]
    else:
        out = torch_ops.layernorm_fn(*leaves[:3], z=leaves[3], eps=1e-6, group_size=g, norm_before_gate=nbg,
                                     is_rms_norm=rms, activation=act)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    out.backward(dy)
    ref = torch_ops.gated_norm_ref(*leaves64[:3], z=leaves64[3], eps=1e-6, group_size=g, norm_before_gate=nbg,
                                   is_rms_norm=rms, activation=act)
    ref.backward(f64(dy).cpu())
    n = g or shape[-1]
    m = x.numel() // shape[-1]
    scales = dict(zip(("dx", "dz"), bwd_scales(x, wt, zt, dy, g, nbg, rms, act)))
    for name, t, t64 in zip(("dx", "dw", "db", "dz"), leaves, leaves64):
        if t is None:
            continue
        assert t.grad is not None and t.grad.dtype == t.dtype and t.grad.shape == t.shape, name
        if name in ("dx", "dz"):
            assert_close(t.grad, t64.grad, grad_tol(dtype, n), name, scale=scales[name])
        else:
            assert_normwise(t.grad, t64.grad, reduce_tol(dtype, m, n, t.dtype), name)


BWD_CASES = [
    ((64, 256), None, True, False, "swish", True, True, True),
    ((64, 256), 64, False, False, "silu", True, True, True),
    ((64, 256), 64, False, True, "sigmoid", True, True, False),
    ((33, 1000), None, True, True, "silu", True, True, False),
    ((33, 1000), 250, True, False, "sigmoid", True, False, True),
    ((33, 1000), None, False, True, "swish", False, True, False),
    ((4, 3, 160), 32, False, False, "swish", True, True, True),
    ((5, 1), None, True, True, "silu", True, True, False),
    ((3, 5120), 1024, False, True, "silu", True, True, False),
    # Gated RMSNorm of 2049-4096 columns: 16-bit takes 8 elements a thread in teams of up to
    # 512 threads (csrc/cuda/plan.cu, bwd_rms_teams); 3000 with a bias: 384 threads and db.
    ((7, 4096), None, True, True, "silu", True, True, False),
    ((5, 2, 3000), None, False, True, "sigmoid", True, True, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", BWD_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-" + gc_id(c[1:]))
def test_grads_match_reference(case, dtype, device):
    shape, g, nbg, rms, act, z, w, b = case
    grads_vs_reference(shape, dtype, device, g, nbg, rms, act, z, w, b)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 9),
       n_g=st.sampled_from([(8, None), (12, 3), (64, 16), (96, 1), (130, 65), (257, None), (1000, 250), (2056, None)]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), nbg=st.booleans(), rms=st.booleans(),
       act=st.sampled_from(["silu", "swish", "sigmoid"]), z=st.booleans(), w=st.booleans(), b=st.booleans(),
       p32=st.booleans())
def test_grads_flag_combinations(device, m, n_g, dtype, nbg, rms, act, z, w, b, p32):
    """Random combinations of every flag, the parameters' dtype too, against the fp64
    reference (complements the curated lists): groups of 1 (LayerNorm's dx is then 0),
    unaligned rows (12, 130, 257), one row, widths whose CUDA teams leave lanes idle."""
    n, g = n_g
    grads_vs_reference((m, n), dtype, device, g, nbg, rms, act, z, w, b,
                       param_dtype=torch.float32 if p32 else None)


# Widths at the edges of the CUDA launch plans: 2048 bf16 (8 elements a thread, 256
# threads), 2056 (16 a thread, past 256 threads at 8), 4096 and 8192 (16 a thread),
# 3000 unaligned (one vector a thread, 375 threads), 16384, 32768 and 65536 (split across
# 2, 8 and 8 CTAs of a cluster: slices of 1024, 512 and 1024 vectors, csrc/cuda/plan.cu
# slice_vecs),
# 16383 (unaligned: the loop path, staged in shared memory), 2^18 with few rows (the
# loop path split across 16 CTAs, blocks walking two rows).
PLAN_EDGE_CASES = [((4, 2048), None), ((4, 2056), None), ((5, 3000), None), ((4, 4096), None), ((4, 8192), None),
                   ((3, 16384), None), ((2, 32768), None), ((2, 65536), None), ((3, 8192), 1024), ((3, 16383), None),
                   ((20, 1 << 18), None)]


@pytest.mark.parametrize("case", PLAN_EDGE_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-g{c[1]}")
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
def test_grads_plan_edges(case, nbg, device):
    shape, g = case
    grads_vs_reference(shape, torch.bfloat16, device, g, nbg, True, "silu")


# fp32 takes 4 elements a vector, so its plan edges sit elsewhere: 8192 holds 16 elements
# a thread (4 vectors), 16384 is split 8 ways (slices of 512 vectors), LayerNorm too.
@pytest.mark.parametrize("shape", [(4, 8192), (3, 16384)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_grads_plan_edges_fp32(shape, rms, device):
    grads_vs_reference(shape, torch.float32, device, None, False, rms, "silu", b=False)


# fp32 plans whose unsplit layout overflows shared memory (csrc/cuda/plan.cu, make_plan):
# 8192 with a gate (gate after, RMS; LayerNorm with a bias: 64 KB more), where a 512-thread
# team's backward ring takes 300 KB, splits the register path over two CTAs; 131072, where
# the loop path would stage 512 KB of x (forward) / 2 MB of x, dy, z and dw sums
# (backward) a row, splits it over 4 / 16. 40 rows: more than twice the SMs of the CPU
# emulator at GN_EMU_SMS=16 (at its default 4 a cluster of 16 does not fit: the unsplit
# fallback), so there the stage alone splits them, as 300 rows do on an H100 (CUDA only:
# 157 MB a tensor).
@pytest.mark.parametrize("shape,rms", [((16, 8192), True), ((16, 8192), False), ((40, 131072), True),
                                       ((300, 131072), True)],
                         ids=["16x8192-rms", "16x8192-ln-bias", "40x131072", "300x131072"])
def test_grads_fp32_smem_split(shape, rms, device):
    if device == "cpu" and shape[0] > 40:
        pytest.skip("a CUDA launch-plan case at an H100's SM count; 40x131072 is the same plan on the emulator")
    grads_vs_reference(shape, torch.float32, device, None, True, rms, "silu", b=not rms)


# 16-bit LayerNorm + bias with a gate: the backward register path's slice (ring of x, dy
# and z, fp32 weight and bias, the dw/db fold) overflows shared memory at the cluster size
# its width asks for (16384: 272 KB over 2 CTAs; 32768: over 4), so it takes twice the
# CTAs (CUDA: test_cuda_ln_bias_smem_split_paths), not the loop path. Rows for two waves
# of blocks on an H100 (fewer take the wide path).
@pytest.mark.parametrize("shape,dtype", [((300, 16384), torch.bfloat16), ((150, 32768), torch.float16)],
                         ids=["300x16384-bf16", "150x32768-fp16"])
def test_grads_ln_bias_smem_split(shape, dtype, device):
    grads_vs_reference(shape, dtype, device, None, True, False, "silu")


# CUDA plans with more rows than blocks, so blocks carry dw/db across rows. Register
# path (4096: 16 elements a thread, blocks of 256 walking rows in registers). Loop path
# (unaligned widths): in shared memory (N = 8191 with z: 48 KB staged + 64 KB of dw/db
# sums) and, when the sums do not fit (N = 32767: 256 KB), in the block's workspace
# row. Split register path (32768: 8 CTAs a group): the cluster's partial-sum slots
# are reused row after row.
@pytest.mark.parametrize("shape", [(600, 4096), (300, 8191), (270, 32767), (270, 32768)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_grads_rows_per_block(shape, rms, device):
    if device == "cpu":
        pytest.skip("a CUDA launch-plan case (blocks walking several rows); the CPU kernels have no such plan")
    grads_vs_reference(shape, torch.bfloat16, device, None, True, rms, "silu")


# LayerNorm + bias + gate after the norm, 16-bit rows, 4096 columns a block or a split
# slice (CUDA: fp32 weight and bias staging leaves one 256-thread block an SM; split slices
# then stage parameters of the rows' dtype as they are: bwd_regs<..., T>,
# test_cuda_bwd_params_staged); unsplit blocks, fp32 parameters beside the rows and no bias
# stage fp32. 600 x 4096: unsplit blocks walking 2-3 rows (264 resident on an H100); 300 x
# 16384: slices over four CTAs. (8192 fits one 512-thread block since the dw/db fold reuses
# the ring, csrc/cuda/plan.h bwd_stream_bytes: unsplit, fp32 staging.)
BWD_STAGED_SHAPES = [((600, 4096), torch.bfloat16), ((300, 16384), torch.float16)]


@pytest.mark.parametrize("shape,dtype", BWD_STAGED_SHAPES, ids=["600x4096-bf16", "300x16384-fp16"])
@pytest.mark.parametrize("pdt,b", [(None, True), (torch.float32, True), (None, False)],
                         ids=["p_rows", "p_fp32", "nobias"])
def test_grads_params_staged_16bit(shape, dtype, pdt, b, device):
    grads_vs_reference(shape, dtype, device, None, True, False, "silu", b=b, param_dtype=pdt)


@requires_cuda
@pytest.mark.parametrize("shape,dtype", BWD_STAGED_SHAPES + [((300, 8192), torch.float16), ((300, 16384), torch.bfloat16)],
                         ids=["600x4096-bf16", "300x16384-fp16", "300x8192-fp16", "300x16384-bf16"])
def test_cuda_bwd_params_staged(shape, dtype):
    """test_grads_params_staged_16bit's kernel with parameters of the rows' dtype: bwd_regs
    split at 16384 with 16-bit staging (its last template argument the rows' dtype; float on
    a bandwidth-rich device), unsplit at 4096 and 8192 with fp32 staging."""
    rich = bandwidth_rich()
    if rich is None:
        pytest.skip("this torch does not report the memory bus width")
    names = bwd_kernel_names(*make_inputs(shape, dtype, "cuda"), False)
    split = shape[1] > 8192
    staged = "float" if rich or not split else {torch.bfloat16: "__nv_bfloat16", torch.float16: "__half"}[dtype]
    assert any((template_args(n, "bwd_regs") or [None])[-1] == staged and split_kernel(n) == split
               for n in names), names


# Rows of a "many"-row case: (row, group) segments for twice the SMs, which the wide path
# leaves to the loop path (csrc/cuda/plan.cu, wide_chunks).
MANY = "many"


def bwd_kernel_names(x, w, b, z, rms):
    """The CUDA kernels of one backward (gate after the norm, SiLU) of the forward of x, on
    x's device (conftest.kernel_names: "cpu" under the emulator build; skips elsewhere)."""
    out, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, rms, "silu")
    dy = torch.randn_like(out)
    return kernel_names(lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, True, rms, "silu",
                                                   False), x.device.type)


@pytest.mark.parametrize("shape,kernel", [((64, 4096), "bwd_regs"), ((64, 5120), "bwd_regs"), ((64, 8192), "bwd_regs"),
                                          ((64, 32768), "bwd_regs"), ((MANY, 32767), "bwd_loop"),
                                          ((MANY, 1 << 18), "bwd_loop"), ((64, 32767), "bwd_wide")],
                         ids=["4096", "5120", "8192", "32768-split", "32767-loop", "2^18-split-loop", "32767-wide"])
def test_kernel_paths(shape, kernel, device):
    """Groups up to 8192 bf16 take the register path (16 elements a thread past 4096),
    aligned wider ones a register path split across a cluster (up to 16 x 8192), unaligned
    or wider ones the loop path, or the wide path when they are few. On CUDA and the
    emulator."""
    if device == "cpu" and kernel == "bwd_wide":
        pytest.skip("64 rows are many on the emulated device's 4 SMs: the loop path there")
    if shape[0] == MANY:
        shape = (2 * device_sms(device), shape[1])
    x, w, b, z = make_inputs(shape, torch.bfloat16, device, bias=False)  # (a bias: 8192 needs 64 KB more)
    names = bwd_kernel_names(x, w, b, z, True)
    assert any(kernel in n for n in names), names


@pytest.mark.parametrize("dtype,rms,gate,vecs", [(torch.bfloat16, True, True, 1), (torch.float16, True, True, 1),
                                                 (torch.bfloat16, True, False, 2), (torch.bfloat16, False, True, 2),
                                                 (torch.float32, True, True, 4)],
                         ids=["bf16-rms", "fp16-rms", "bf16-rms-nogate", "bf16-ln", "fp32-rms"])
def test_bwd_rms_teams(dtype, rms, gate, vecs, device):
    """Groups of 4096: 16-bit gated RMSNorm keeps 8 elements a thread in a 512-thread team,
    the rest take 16 in a 256-thread one (csrc/cuda/plan.cu, bwd_rms_teams): the register
    kernel's vectors, its second template argument. On CUDA and the emulator."""
    x, w, b, z = make_inputs((64, 4096), dtype, device, bias=False, z=gate)
    names = bwd_kernel_names(x, w, b, z, rms)
    assert regs_vecs(names, "bwd_regs") == {vecs}, names


def split_kernel(name):
    """Is this a backward kernel split over a cluster (its SPLIT template argument)?"""
    for kernel, i in (("bwd_regs", 4), ("bwd_loop_async", 1)):
        args = template_args(name, kernel)
        if args:
            return args[i] == "true"
    return False


@requires_cuda
@pytest.mark.parametrize("shape,fwd,bwd", [((300, 8192), "fwd_block_row<float", "bwd_regs<float"),
                                           ((300, 131072), "fwd_block_row_l2<float", "bwd_loop_async<float")],
                         ids=["8192-split-regs", "131072-split-loop"])
def test_cuda_fp32_smem_split_paths(shape, fwd, bwd):
    """test_grads_fp32_smem_split's plans on the GPU: the backward of fp32 8192 with a gate
    (and of 131072) on a kernel split over a cluster (its SPLIT template argument true),
    not the loop path (8192) or one CTA a row (131072). The forward of 131072 takes
    the L2 block-row kernel over a cluster of sixteen (its CL, the sixth, true as well)."""
    x, w, b, z = make_inputs(shape, torch.float32, "cuda", bias=False)
    fn = lambda: ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, True, "silu")  # noqa: E731
    out, mean, rstd = fn()
    dy = torch.randn_like(out)
    names = cuda_kernels(fn) + cuda_kernels(lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, True,
                                                                       True, "silu", False))
    if not names:  # not a wrong kernel: none at all is CUPTI missing (as under compute-sanitizer)
        pytest.skip("torch.profiler sees no CUDA kernels in this process")
    assert any(fwd in n for n in names), names
    assert any(bwd in n and split_kernel(n) for n in names), names
    if shape[1] == 131072:
        assert any(fwd in n and template_args(n, "fwd_block_row_l2")[5] == "true" for n in names), names


@requires_cuda
@pytest.mark.parametrize("shape", [(300, 16384), (150, 32768)], ids=lambda s: "x".join(map(str, s)))
def test_cuda_ln_bias_smem_split_paths(shape):
    """test_grads_ln_bias_smem_split's plans on the GPU: the register path split over a
    cluster (its SPLIT template argument true), not the loop path."""
    x, w, b, z = make_inputs(shape, torch.bfloat16, "cuda")
    names = bwd_kernel_names(x, w, b, z, False)
    assert any("bwd_regs<" in n and split_kernel(n) for n in names), names


# GATEDNORM_FWD_VECS / GATEDNORM_BWD_VECS (read once a process: csrc/cuda/plan.cu, tuning
# knobs) in a child process: the kernels must take the asked vectors a thread and stay
# correct, including teams of a few threads sharing a block (64 x 256 at 2 vectors: teams
# of 16) and groups.
_VECS_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import cuda_kernels, make_inputs, ops, regs_vecs
from test_backward import grads_vs_reference
from test_forward import check_fwd
for shape, dt, g, nbg, rms, act in {cases!r}:
    check_fwd(shape, getattr(torch, dt), "cuda", g, nbg, rms, act)
    grads_vs_reference(shape, getattr(torch, dt), "cuda", g, nbg, rms, act)
x, w, b, z = make_inputs((64, 512), torch.bfloat16, "cuda")
out, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, True, "silu")
dy = torch.randn_like(out)
for kernel, fn in [("fwd", lambda: ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, True, "silu")),
                   ("bwd", lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, True, True, "silu",
                                                      False))]:
    names = cuda_kernels(fn)
    print(kernel, sorted(regs_vecs(names, kernel + "_regs")))
"""


@requires_cuda
@pytest.mark.parametrize("vecs", [1, 2], ids=["vecs1", "vecs2"])
def test_cuda_vecs_knobs(vecs):
    import os
    import subprocess
    import sys
    cases = [((64, 256), "bfloat16", None, True, False, "swish"), ((33, 1000), "bfloat16", 250, True, False, "sigmoid"),
             ((600, 512), "bfloat16", None, False, True, "silu"), ((4, 3, 160), "float16", 32, False, False, "swish"),
             ((64, 256), "float32", 64, False, True, "sigmoid"), ((4, 4096), "bfloat16", None, True, True, "silu"),
             ((40, 128), "bfloat16", None, False, True, "silu")]
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GATEDNORM_FWD_VECS=str(vecs), GATEDNORM_BWD_VECS=str(vecs))
    r = subprocess.run([sys.executable, "-c", _VECS_SCRIPT.format(tests=tests, cases=cases)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for kernel in ("fwd", "bwd"):
        line = [ln for ln in r.stdout.splitlines() if ln.startswith(kernel + " ")][-1]
        if line != kernel + " []":  # [] is CUPTI missing (as under compute-sanitizer), not a wrong kernel
            assert line == f"{kernel} [{vecs}]", line


@pytest.mark.parametrize("x_dtype,p_dtype", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                             (torch.float32, torch.bfloat16)],
                         ids=["bf16-w32", "fp16-w32", "fp32-wbf16"])
# 48 x 128 in groups of 32: the CUDA register path; 3 x 16383 (unaligned, too wide for a
# block): the loop path, which reads the parameters in its own code.
@pytest.mark.parametrize("shape,g", [((48, 128), 32), ((3, 16383), None)], ids=["regs", "loop"])
def test_grads_mixed_param_dtype(x_dtype, p_dtype, shape, g, device):
    """dw/db come back in the parameter dtype, dx/dz in x's dtype."""
    grads_vs_reference(shape, x_dtype, device, g, False, False, "swish", param_dtype=p_dtype, fn="layernorm_fn")


@pytest.mark.slow
def test_grads_huge_row(device):
    grads_vs_reference((2, 1 << 20), torch.float32, device, None, False, True, "swish", b=False)


def _fwd(shape, dtype, device, g, nbg, rms, act="swish", x=None, z=None):
    _, w, b, zz = make_inputs(shape, dtype, device)
    if x is None:
        x = make_inputs(shape, dtype, device, z=False)[0]
        z = zz
    out, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, g, nbg, rms, act)
    return x, w, b, z, out, mean, rstd


@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_recompute_output(rms, nbg, dtype, device):
    """gated_norm_bwd(recompute_output=True) returns the forward output (from the saved stats);
    with recompute_output=False the fifth result is None."""
    x, w, b, z, out, mean, rstd = _fwd((20, 192), dtype, device, 64, nbg, rms)
    dy = torch.randn_like(out)
    cfg = (1e-6, 64, nbg, rms, "swish")
    dx, dw, db, dz, out2 = ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, *cfg, True)
    assert_close(out2, out, tol(dtype, 64), "recomputed out vs forward out")
    dx1, dw1, db1, dz1, none = ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, *cfg, False)
    assert none is None
    for a, c, name in ((dx, dx1, "dx"), (dz, dz1, "dz")):
        assert_close(a, c, grad_tol(dtype, 64), f"{name}: recompute_output changed the gradients")
    for a, c, name in ((dw, dw1, "dw"), (db, db1, "db")):
        assert_normwise(a, c, reduce_tol(dtype, 20, 64, a.dtype), f"{name}: recompute_output changed it")


def test_bwd_optional_results_are_none(device):
    """dw/db None when weight/bias are None, dz None when z is None."""
    x, _, _, _ = make_inputs((6, 32), torch.float32, device)
    out, mean, rstd = ops.gated_norm_fwd(x, None, None, None, 1e-6, None, True, True, "swish")
    dx, dw, db, dz, o = ops.gated_norm_bwd(torch.randn_like(x), x, None, None, None, mean, rstd, 1e-6, None, True,
                                          True, "swish", False)
    assert dw is None and db is None and dz is None and o is None and dx.shape == x.shape


@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_backward_runs_only_the_backward_op(rms, device):
    """The autograd backward runs gated_norm_bwd and allocations, nothing else: no zeros
    materialized for the unused mean / rstd gradients (an extra fill kernel a step), and
    the gradients are still those of the op."""
    from torch.profiler import ProfilerActivity, profile
    x, w, b, z = (t.requires_grad_() for t in make_inputs((64, 128), torch.float32, device))
    out = torch_ops.layernorm_fn(x, w, b, z=z, group_size=64, is_rms_norm=rms)
    dy = torch.randn_like(out)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        grads = torch.autograd.grad(out, (x, w, b, z), dy)
    aten = {e.name for e in prof.events() if e.name.startswith("aten::")}
    assert aten <= {"aten::empty", "aten::empty_strided"}, f"backward ran {sorted(aten)}"
    with torch.no_grad():
        stats = ops.gated_norm_fwd(x, w, b, z, 1e-6, 64, True, rms, "swish")[1:]
        want = ops.gated_norm_bwd(dy, x, w, b, z, *stats, 1e-6, 64, True, rms, "swish", False)
    for g, r in zip(grads, want[:4]):
        torch.testing.assert_close(g, r, rtol=0, atol=0)  # same op, same inputs: bitwise


@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_bwd_out_strided_views(nbg, dtype, device):
    """gated_norm_bwd_out reading x, z, dy and writing dx, dz, out as column slices of fused
    [M, kN] buffers (row stride != N); the other columns of the poisoned buffers stay NaN.
    Results equal those of gated_norm_bwd on contiguous copies. x and z, and dx and dz, have
    different strides too (a kernel that steps one tensor by another's stride fails)."""
    m, n, g = 29, 128, 32
    proj = torch.randn(m, 3 * n, dtype=torch.float64).to(dtype).to(device)
    x = proj[:, :n]
    z = (3 * torch.randn(m, n + 16, dtype=torch.float64)).to(dtype).to(device)[:, 8:8 + n]
    _, w, b, _ = make_inputs((m, n), dtype, device, z=False)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, g, nbg, False, "swish")
    dy = torch.randn(m, 2 * n, dtype=torch.float64).to(dtype).to(device)[:, n:]
    cfg = (1e-6, g, nbg, False, "swish")
    ex, edw, edb, edz, eout = ops.gated_norm_bwd(dy.contiguous(), x.contiguous(), w, b, z.contiguous(),
                                                 mean, rstd, *cfg, True)
    grads_buf = poison(torch.empty(m, 4 * n, dtype=dtype, device=device))
    dz_buf = poison(torch.empty(m, n + 8, dtype=dtype, device=device))
    dx, dz, out = grads_buf[:, :n], dz_buf[:, 8:], grads_buf[:, 3 * n:]
    dw, db = poison(torch.empty_like(w)), poison(torch.empty_like(b))
    assert ops.gated_norm_bwd_out(dy, x, w, b, z, mean, rstd, *cfg, dx, dz, out, dw, db) is None
    t = grad_tol(dtype, g)
    assert_close(dx, ex, t, "dx")
    assert_close(dz, edz, t, "dz")
    assert_close(out, eout, tol(dtype, g), "out")
    assert_normwise(dw, edw, reduce_tol(dtype, m, g, w.dtype), "dw")
    assert_normwise(db, edb, reduce_tol(dtype, m, g, b.dtype), "db")
    assert torch.isnan(grads_buf[:, n:3 * n]).all() and torch.isnan(dz_buf[:, :8]).all(), \
        "wrote outside the dx/dz/out views"
    # without out, dw, db: only dx and dz are written; dw alone (no db)
    grads_buf = poison(torch.empty(m, 2 * n, dtype=dtype, device=device))
    ops.gated_norm_bwd_out(dy, x, w, b, z, mean, rstd, *cfg, grads_buf[:, :n], grads_buf[:, n:], None)
    assert_close(grads_buf[:, :n], ex, t, "dx (no out)")
    assert_close(grads_buf[:, n:], edz, t, "dz (no out)")
    dw2 = poison(torch.empty_like(w))
    ops.gated_norm_bwd_out(dy, x, w, b, z, mean, rstd, *cfg, grads_buf[:, :n], grads_buf[:, n:], None, dw=dw2)
    assert_normwise(dw2, edw, reduce_tol(dtype, m, g, w.dtype), "dw (without db)")


@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_layer_norm_bwd_writes_given_views(rms, device):
    """layer_norm_bwd(dz=..., out=...) writes into the given row-strided views and returns them."""
    m, n = 17, 64
    x, w, b, z, out, mean, rstd = _fwd((m, n), torch.float32, device, None, False, rms)
    dy = torch.randn(m, n, device=device)
    buf = poison(torch.empty(m, 3 * n, device=device))
    dz_view, out_view = buf[:, :n], buf[:, 2 * n:]
    dx, dw, db, dz, o = torch_ops.layer_norm_bwd(dy, x, w, b, 1e-6, None if rms else mean, rstd, z=z,
                                                 norm_before_gate=False, is_rms_norm=rms, recompute_output=True,
                                                 dz=dz_view, out=out_view)
    assert dz.data_ptr() == dz_view.data_ptr() and o.data_ptr() == out_view.data_ptr()
    e = ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, False, rms, "swish", True)
    assert_close(dx, e[0], grad_tol(torch.float32, n), "dx")
    assert_close(dz_view, e[3], grad_tol(torch.float32, n), "dz")
    assert_close(out_view, out, tol(torch.float32, n), "out")
    assert torch.isnan(buf[:, n:2 * n]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
@pytest.mark.parametrize("m,n", [(3000, 256), (300, 16384), (40, 1 << 18)], ids=["3000x256", "300x16384", "40x2^18"])
def test_dw_db_deterministic(dtype, rms, m, n, device):
    """Same inputs -> bitwise the same dw/db on every run (fixed reduction order, no atomics);
    3000 rows span several row chunks / blocks; 16384 is split across a cluster on CUDA;
    40 rows of 2^18 take the wide path (row sums handed between two kernels, dw/db partials
    per set of rows); test_cuda_loop_* run such rows through the loop path."""
    x, w, b, z = make_inputs((m, n), dtype, device, param_dtype=torch.float32)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, False, rms, "swish")
    dy = torch.randn(m, n, dtype=torch.float64).to(dtype).to(device)
    runs = [ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, False, rms, "swish", False) for _ in range(3)]
    for r in runs[1:]:
        assert torch.equal(r[1], runs[0][1]), "dw differs between runs"
        assert torch.equal(r[2], runs[0][2]), "db differs between runs"
        assert torch.equal(r[0], runs[0][0]) and torch.equal(r[3], runs[0][3]), "dx/dz differ between runs"
    # and they are right (not deterministic garbage)
    w64 = f64(w).cpu().requires_grad_()
    ref = torch_ops.gated_norm_ref(f64(x).cpu(), w64, f64(b).cpu(), f64(z).cpu(), 1e-6, None, False, rms)
    ref.backward(f64(dy).cpu())
    assert_normwise(runs[0][1], w64.grad, reduce_tol(dtype, m, n, torch.float32), "dw")


@pytest.mark.parametrize("shape", [(0, 64), (2, 0, 64)], ids=["0x64", "2x0x64"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_empty_batch_backward(shape, rms, device):
    """M = 0: empty dx/dz and zero (not uninitialised) dw/db, directly and through autograd."""
    x, w, b, z = make_inputs(shape, torch.float32, device)
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, 16, True, rms, "swish")
    free_nan_block(device)
    dx, dw, db, dz, out = ops.gated_norm_bwd(torch.empty(shape, device=device), x, w, b, z, mean, rstd, 1e-6, 16,
                                             True, rms, "swish", True)
    assert dx.shape == shape and dz.shape == shape and out.shape == shape
    assert torch.equal(dw, torch.zeros_like(w)) and torch.equal(db, torch.zeros_like(b))
    dx = torch.empty(shape, device=device)
    dw, db = poison(torch.empty_like(w)), poison(torch.empty_like(b))
    ops.gated_norm_bwd_out(torch.empty(shape, device=device), x, w, b, z, mean, rstd, 1e-6, 16, True, rms,
                           "swish", dx, torch.empty(shape, device=device), None, dw, db)
    assert torch.equal(dw, torch.zeros_like(w)) and torch.equal(db, torch.zeros_like(b))
    w.requires_grad_()
    b.requires_grad_()
    x.requires_grad_()
    free_nan_block(device)
    torch_ops.layernorm_fn(x, w, b, z=z, group_size=16, is_rms_norm=rms).sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert x.grad.shape == shape


# (shape, group, dtype, norm_before_gate, rms, act, z, weight, bias): the CUDA wide path's
# backward (few rows of groups the register path cannot hold: gated_norm_bwd_wide.cu) --
# row sums and gradients over chunks of 2048 bf16 / 1024 fp32 / 512 fp64 columns (one
# vector a thread: plan.h), the last one cut short (aligned 24584 = 12 x 2048 + 8,
# unaligned 65537, 10001), several groups a row, the gate before and after the norm,
# optional parameters.
# On the CPU the same shapes check the CPU kernels.
WIDE_BWD_CASES = [
    ((3, 24584), None, torch.bfloat16, True, False, "silu", True, True, True),
    ((2, 2 * 24584), 24584, torch.bfloat16, False, False, "sigmoid", True, True, False),
    ((2, 49168), None, torch.float16, True, True, "swish", True, True, False),
    ((1, 65537), None, torch.float32, False, False, "swish", True, False, True),
    ((2, 2 * 8200), 8200, torch.float32, True, True, "sigmoid", False, True, False),
    ((2, 10001), None, torch.float64, False, False, "silu", True, True, True),
]


@pytest.mark.parametrize("case", WIDE_BWD_CASES,
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-g{c[1]}-{str(c[2])[6:]}-{'rms' if c[4] else 'ln'}")
def test_backward_wide_groups(case, device):
    """Gradients of few rows of very wide groups against fp64 autograd; the recomputed output
    against the forward's; two runs bitwise equal."""
    shape, g, dtype, nbg, rms, act, z, w, b = case
    grads_vs_reference(shape, dtype, device, g, nbg, rms, act, z, w, b)
    x, wt, bt, zt = make_inputs(shape, dtype, device, z=z, weight=w, bias=b)
    out, mean, rstd = ops.gated_norm_fwd(x, wt, bt, zt, 1e-6, g, nbg, rms, act)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    runs = [ops.gated_norm_bwd(dy, x, wt, bt, zt, mean, rstd, 1e-6, g, nbg, rms, act, True) for _ in range(2)]
    assert_close(runs[0][4], out, tol(dtype, g or shape[-1]), "recomputed out")
    for a, e in zip(runs[0], runs[1]):
        assert (a is None and e is None) or torch.equal(a, e), "two runs differ"


@requires_cuda
def test_cuda_wide_backward_kernels():
    """Few rows of 2^20 take the backward's wide path (its two kernels, then the dw/db
    reduction), and its gradients are right there."""
    shape = (4, 1 << 20)
    x, w, b, z = make_inputs(shape, torch.bfloat16, "cuda")
    _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, False, "silu")
    dy = torch.randn(shape, dtype=torch.float64).to(torch.bfloat16).to("cuda")
    names = cuda_kernels(lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, True, False, "silu", False))
    if not names:  # CUPTI missing (as under compute-sanitizer)
        pytest.skip("torch.profiler sees no CUDA kernels in this process")
    assert any("bwd_wide_sums" in n for n in names) and any("bwd_wide_grads" in n for n in names), names
    grads_vs_reference(shape, torch.bfloat16, "cuda", None, True, False, "silu")
