"""Forward of torch.ops.gatednorm.gated_norm_fwd / gated_norm_fwd_out vs the fp64 reference:
dtypes, sizes, groups, gate order, LN/RMS, activations, optional z/weight/bias, mixed
parameter dtypes, ranks, strided rows, copied layouts, M = 0 and the statistics."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (assert_close, bandwidth_rich, capture_cuda_graph, cuda_kernels, kernel_names, make_inputs, ops,
                      poison, ref64, requires_cuda, stats64, template_args, tol)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
DT_IDS = ["fp32", "fp16", "bf16", "fp64"]


def run_fwd(x, w, b, z, eps=1e-6, group_size=None, nbg=True, rms=False, act="swish"):
    return ops.gated_norm_fwd(x, w, b, z, eps, group_size, nbg, rms, act)


def check_fwd(shape, dtype, device, group_size=None, nbg=True, rms=False, act="swish", z=True, w=True, b=True,
              param_dtype=None, eps=1e-6):
    x, wt, bt, zt = make_inputs(shape, dtype, device, z=z, weight=w, bias=b, param_dtype=param_dtype)
    out, mean, rstd = run_fwd(x, wt, bt, zt, eps, group_size, nbg, rms, act)
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    assert out.is_contiguous()
    expected = ref64(x, wt, bt, zt, eps, group_size, nbg, rms, act)
    assert_close(out, expected, tol(dtype, group_size or shape[-1]), "out")
    return out, mean, rstd


# (shape, group_size, norm_before_gate, is_rms_norm, activation, z, weight, bias): every N of the
# contract, each flag both ways, every activation name, each optional argument absent somewhere.
CASES = [
    ((5, 1), None, True, False, "swish", True, True, True),
    ((5, 1), None, False, True, "sigmoid", True, True, False),
    ((17, 33), None, True, False, "silu", True, True, True),
    ((17, 33), 11, False, False, "swish", True, True, True),
    ((17, 33), 1, True, True, "sigmoid", True, False, False),
    ((17, 33), None, False, True, "swish", False, True, False),
    ((7, 1000), None, False, True, "silu", True, True, False),
    ((7, 1000), 250, True, False, "sigmoid", True, False, True),
    ((7, 1000), None, True, False, "swish", False, False, False),
    ((6, 1024), 128, False, True, "swish", True, True, False),
    ((6, 1024), 128, True, False, "silu", True, True, True),
    ((4, 5120), None, True, True, "swish", True, True, False),
    ((4, 5120), 1024, False, True, "swish", True, True, False),
    ((4, 5120), 1024, True, False, "sigmoid", False, True, True),
    ((2, 65537), None, False, False, "swish", True, True, True),
    ((2, 65537), None, True, True, "silu", True, False, False),
    # CUDA teams of whole warps (not powers of two): 1200 bf16 = 96 threads x 2 vectors,
    # 5000 = 320 x 2 with the last 15 slots idle
    ((9, 1200), None, True, True, "silu", True, True, False),
    ((3, 5000), None, False, False, "swish", True, True, True),
    # CUDA: LayerNorm + gate + bias at 4096 16-bit: the staged bias's shared memory sets
    # the blocks an SM and the cp.async ring's depth (gated_norm_fwd.cu, launch_regs);
    # 40 rows wrap the ring in every block
    ((40, 4096), None, True, False, "silu", True, True, True),
    # CUDA split register path (a group cut across the CTAs of a cluster): 4 slices of
    # 16384 bf16 / fp16, 8 of fp32's, LayerNorm's two cluster sums; 16 slices at 131072;
    # 16383 is unaligned: the loop path
    ((3, 16384), None, True, False, "swish", True, True, True),
    ((3, 16384), 8192, False, True, "sigmoid", True, True, False),
    ((2, 131072), None, False, True, "silu", True, True, False),
    ((2, 16383), None, True, False, "swish", True, True, True),
    # CUDA block-row paths (gated_norm_fwd_row.cu / _l2.cu, launch_fwd_block_row): RMSNorm of groups
    # of 1025-4096 vectors, two waves of rows on an H100 (132 SMs). 16-bit 12288 / 16384,
    # a gate after or none: fwd_block_row_l2 (each bias / weight combination), 12288 leaving
    # half the threads' second vector past the end; 24576 with a gate: fwd_block_row, four
    # vectors a thread. fp32 8192 / 12288 / 16384: fwd_block_row, two or four vectors a
    # thread, with and without a gate.
    ((270, 12288), None, True, True, "silu", True, True, False),
    ((270, 16384), None, True, True, "sigmoid", True, False, True),
    ((270, 24576), None, True, True, "swish", True, True, False),
    ((270, 8192), None, True, True, "silu", False, False, True),
    ((270, 12288), None, True, True, "silu", False, False, True),
    ((270, 16384), None, True, True, "swish", False, True, False),
]


def case_id(c):
    shape, g, nbg, rms, act, z, w, b = c
    return (f"{shape[0]}x{shape[1]}-g{g}-{'nbg' if nbg else 'gbn'}-{'rms' if rms else 'ln'}-{act}"
            f"{'-z' if z else ''}{'-w' if w else ''}{'-b' if b else ''}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_reference(case, dtype, device):
    shape, g, nbg, rms, act, z, w, b = case
    check_fwd(shape, dtype, device, g, nbg, rms, act, z, w, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 9), n_g=st.sampled_from([(8, None), (12, 3), (64, 16), (96, 1), (130, 65), (257, None)]),
       dtype=st.sampled_from(DTYPES[:3]), nbg=st.booleans(), rms=st.booleans(),
       act=st.sampled_from(["silu", "swish", "sigmoid"]), z=st.booleans(), w=st.booleans(), b=st.booleans())
def test_forward_flag_combinations(device, m, n_g, dtype, nbg, rms, act, z, w, b):
    """Random combinations of all flags on small shapes (complements the curated list)."""
    n, g = n_g
    check_fwd((m, n), dtype, device, g, nbg, rms, act, z, w, b)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_forward_huge_row(dtype, rms, device):
    """N = 2^20: beyond the 64 KB per group of the Triton kernels."""
    check_fwd((2, 1 << 20), dtype, device, None, False, rms, "swish")
    check_fwd((2, 1 << 20), dtype, device, 1 << 18, True, rms, "sigmoid")


@pytest.mark.parametrize("x_dtype,p_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                             (torch.float32, torch.bfloat16), (torch.float32, torch.float16),
                                             (torch.bfloat16, torch.float16)],
                         ids=["fp16-w32", "bf16-w32", "fp32-wbf16", "fp32-w16", "bf16-w16"])
@pytest.mark.parametrize("bias", [True, False], ids=["b", "nob"])
# 9 x 384 in groups of 128: the CUDA decode kernel; 40 x 2048 in groups of 1024: the
# register path; 3 x 16383 (unaligned, too wide for a block): the loop path. Each reads the
# parameters in its own code.
@pytest.mark.parametrize("shape,g", [((9, 384), 128), ((40, 2048), 1024), ((3, 16383), None)],
                         ids=["decode", "regs", "loop"])
def test_mixed_param_dtype(x_dtype, p_dtype, bias, shape, g, device):
    """weight/bias in another float dtype than x (fp16 x with fp32 weight is common)."""
    out, _, _ = check_fwd(shape, x_dtype, device, g, False, not bias, "swish", True, True, bias,
                          param_dtype=p_dtype)
    assert out.dtype == x_dtype


@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("bias", [True, False], ids=["b", "nob"])
def test_mixed_param_dtype_block_row(x_dtype, bias, device):
    """fp32 weight and bias beside 16-bit rows of RMSNorm + gate after at 12288 (CUDA:
    fwd_block_row's mixed kernel)."""
    check_fwd((270, 12288), x_dtype, device, None, True, True, "silu", True, True, bias, param_dtype=torch.float32)


# RMSNorm + gate after, a weight and no bias, groups of 4097-8192 vectors (CUDA:
# fwd_block_row_l2 over a cluster of four CTAs, a slice of at most 2048 vectors each), rows
# for two waves of CTAs on an H100 (rows x groups x 4 >= 264). 49152 fp16 and 40000 bf16
# leave the last threads of each slice a vector (or two) past its end; the 131072 row in
# two groups puts the cluster on blockIdx.y. Around the range: 32768 bf16 (fwd_block_row,
# four vectors a thread). 131072 bf16 and 65536 fp32: a cluster of eight CTAs (35 rows: 280
# CTAs). 131072 fp32: a cluster of sixteen CTAs (17 rows: 272 CTAs).
@pytest.mark.parametrize("shape,dtype,g", [((134, 32768), torch.bfloat16, None), ((68, 49152), torch.float16, None),
                                           ((68, 65536), torch.bfloat16, None), ((67, 40000), torch.bfloat16, None),
                                           ((34, 131072), torch.bfloat16, 65536), ((35, 131072), torch.bfloat16, None),
                                           ((68, 32768), torch.float32, None), ((68, 24576), torch.float32, None),
                                           ((35, 65536), torch.float32, None), ((17, 131072), torch.float32, None)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else
                         (DT_IDS[DTYPES.index(v)] if isinstance(v, torch.dtype) else f"g{v}"))
def test_block_row_cluster(shape, dtype, g, device):
    x, w, _, z = make_inputs(shape, dtype, device, bias=False)
    out, mean, rstd = run_fwd(x, w, None, z, 1e-6, g, True, True, "silu")
    assert_close(out, ref64(x, w, None, z, 1e-6, g, True, True, "silu"), tol(dtype, g or shape[-1]), "out")
    assert_close(rstd, stats64(x, z, g, True, True, "silu")[1], tol(torch.float32, g or shape[-1]), "rstd")


@requires_cuda
@pytest.mark.parametrize("shape,dtype", [((68, 65536), torch.bfloat16), ((35, 131072), torch.bfloat16),
                                         ((35, 131072), torch.float16), ((35, 65536), torch.float32),
                                         ((17, 131072), torch.float32)],
                         ids=["bf16-65536", "bf16-131072", "fp16-131072", "fp32-65536", "fp32-131072"])
def test_cuda_block_row_cluster_paths(shape, dtype):
    """test_block_row_cluster's groups of 4097-16384 vectors (and fp32's of 16385-32768) on
    fwd_block_row_l2 over a cluster (its CL, the sixth template argument, true): four CTAs
    at 4097-8192 vectors, eight at 8193-16384, sixteen for fp32 beyond."""
    x, w, _, z = make_inputs(shape, dtype, "cuda", bias=False)
    names = cuda_kernels(lambda: run_fwd(x, w, None, z, 1e-6, None, True, True, "silu"))
    if not names:  # not a wrong kernel: none at all is CUPTI missing (as under compute-sanitizer)
        pytest.skip("torch.profiler sees no CUDA kernels in this process")
    assert any((template_args(n, "fwd_block_row_l2") or [None] * 6)[5] == "true" for n in names), names


# LayerNorm statistics of the block-row paths in one reduction (CUDA: fwd_block_row and,
# 16-bit, fwd_block_row_l2, whose fallback re-reads x from L2; shifted
# by K, the mean of the group's first 16-byte vector), and the rows that must fall back to
# the variance about the mean: every fifth row's first vector is 32 standard deviations
# out, so (mean - K)^2 is ~700 variances, and E[(x - K)^2] - (mean - K)^2 would lose about
# ten bits (a relative error of 1e-4 or more in the variance). Those rows' rstd must match
# fp64 to 1e-5 (the two-pass variance: about 20 fp32 roundings, ~1e-6 relative; the mean's
# error enters squared). Rows with offsets 0 and 4, scales 0.5-2: an offset of many standard
# deviations costs every fp32 path (the CPU's too) the mean's rounding in each output.
@pytest.mark.parametrize("shape,dtype", [((270, 8192), torch.float32), ((270, 16384), torch.bfloat16)],
                         ids=["fp32-8192", "bf16-16384"])
def test_block_row_layer_norm_one_pass(shape, dtype, device):
    m, n = shape
    vec = 16 // torch.empty((), dtype=dtype).element_size()
    r = torch.arange(m, dtype=torch.float64)[:, None]
    scale, offset = 2.0 ** (r % 3 - 1), 4.0 * (r // 3 % 2)
    x64 = offset + scale * torch.randn(shape, dtype=torch.float64)
    out_rows = torch.arange(0, m, 5)
    x64[out_rows, :vec] = (offset + 32 * scale)[out_rows]
    x = x64.to(dtype).to(device)
    _, w, b, zt = make_inputs(shape, dtype, device)
    out, mean, rstd = run_fwd(x, w, b, zt, 1e-6, None, True, False, "silu")
    assert_close(out, ref64(x, w, b, zt, 1e-6, None, True, False, "silu"), tol(dtype, n), "out")
    m64, r64, _ = stats64(x, zt, None, True, False, "silu")
    assert_close(mean, m64, tol(torch.float32, n), "mean")
    assert_close(rstd, r64, tol(torch.float32, n), "rstd")
    rel = ((rstd.double().cpu() - r64) / r64).abs()
    assert rel[out_rows].max().item() <= 1e-5, f"rstd of the fallback rows: relative error {rel[out_rows].max():.2e}"


# LayerNorm on the block-row paths (CUDA: fwd_block_row, the row in registers for its
# statistics; 16-bit groups of 1025-2048 vectors with a gate after and a weight of their
# dtype: fwd_block_row_l2, x re-read from L2): fp32 groups of 1025-4096 vectors with a gate
# after or none (8192: two vectors a thread; 12000: four, the last threads' vectors past the
# group: they must not add (0 - mean)^2), 16-bit groups of 1025-4096 with a gate after
# (16384: the L2 kernel with a weight, with and without a bias, fwd_block_row without a
# weight; 12288: the L2 kernel with half the threads' second vector past the group; 32768:
# four vectors a thread), fp32 parameters beside fp16 rows (a bias too), no weight or bias.
# wb: weight and bias, "w": the weight alone. x is offset by 4: a kernel that drops the mean,
# or lets the padding into the variance, is off by far more than the tolerance. Rows for two
# waves of blocks on an H100. Elsewhere these are the split path's.
@pytest.mark.parametrize("shape,dtype,z,wb,pdt", [
    ((270, 8192), torch.float32, True, True, None), ((270, 12000), torch.float32, False, True, None),
    ((270, 16384), torch.bfloat16, True, True, None), ((270, 16384), torch.float16, True, "w", None),
    ((270, 16384), torch.bfloat16, True, False, None), ((270, 12288), torch.bfloat16, True, True, None),
    ((140, 32768), torch.float16, True, True, None),
    ((270, 12288), torch.float16, True, True, torch.float32), ((270, 8192), torch.float32, True, False, None)],
    ids=["fp32-8192", "fp32-12000-noz", "bf16-16384", "fp16-16384-w", "bf16-16384-now", "bf16-12288", "fp16-32768",
         "fp16-12288-w32", "fp32-8192-now"])
def test_block_row_layer_norm(shape, dtype, z, wb, pdt, device):
    x, w, b, zt = make_inputs(shape, dtype, device, z=z, weight=bool(wb), bias=wb is True, param_dtype=pdt)
    x = (x.double() + 4).to(dtype)
    out, mean, rstd = run_fwd(x, w, b, zt, 1e-6, None, True, False, "silu")
    assert_close(out, ref64(x, w, b, zt, 1e-6, None, True, False, "silu"), tol(dtype, shape[-1]), "out")
    m64, r64, _ = stats64(x, zt, None, True, False, "silu")
    assert_close(mean, m64, tol(torch.float32, shape[-1]), "mean")
    assert_close(rstd, r64, tol(torch.float32, shape[-1]), "rstd")


@pytest.mark.parametrize("shape,g", [((64,), None), ((64,), 16), ((2, 3, 96), 32), ((2, 2, 3, 40), None),
                                     ((1, 1, 5, 48), 24)], ids=["1d", "1d-g", "3d-g", "4d", "4d-unit-dims-g"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_any_rank(shape, g, dtype, device):
    """Leading dims are flattened; the statistics have ngroups * prod(leading) entries."""
    out, mean, rstd = check_fwd(shape, dtype, device, g, True, False, "swish")
    nstat = (out.numel() // shape[-1]) * (shape[-1] // (g or shape[-1]))
    assert rstd.shape == (nstat,) and mean.shape == (nstat,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
def test_strided_rows_from_fused_projection(dtype, nbg, device):
    """x and z are column slices of one [M, 3N] projection (row stride 3N != N), as after
    torch.split in Mamba2; out goes into a row-strided slice of a poisoned buffer through
    gated_norm_fwd_out. The columns outside the slice must stay untouched."""
    m, n, g = 37, 96, 32
    proj = torch.randn(m, 3 * n, dtype=torch.float64).to(dtype).to(device)
    x, z, _ = proj.split(n, dim=-1)
    assert x.stride() == (3 * n, 1) and z.stride() == (3 * n, 1)
    _, w, b, _ = make_inputs((m, n), dtype, device, z=False)
    expected = ref64(x, w, b, z, 1e-6, g, nbg, False, "swish")

    out, mean, rstd = run_fwd(x, w, b, z, 1e-6, g, nbg)
    assert_close(out, expected, tol(dtype, g), "out (strided x, z)")

    buf = poison(torch.empty(m, 2 * n, dtype=dtype, device=device))
    out_view = buf[:, n:]
    mean2, rstd2 = ops.gated_norm_fwd_out(x, w, b, z, 1e-6, g, nbg, False, "swish", out_view)
    assert_close(out_view, expected, tol(dtype, g), "out= strided view")
    assert torch.isnan(buf[:, :n]).all(), "gated_norm_fwd_out wrote outside the out view"
    # the statistics do not depend on where out goes (up to the fp32 summation order, which
    # a kernel may choose by the alignment of its pointers)
    assert_close(rstd2, rstd, tol(torch.float32, g), "rstd of fwd_out vs fwd")
    assert_close(mean2, mean, tol(torch.float32, g), "mean of fwd_out vs fwd")


@pytest.mark.parametrize("m,n,g,off", [(37, 96, 32, 0), (300, 1024, None, 0), (300, 1000, None, 1),
                                       (3, 16383, None, 1)],
                         ids=["37x96", "300x1024", "300x1000-unaligned", "3x16383-loop"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
def test_distinct_row_strides(m, n, g, off, nbg, device):
    """x, z and out each with its own row stride (slices of differently padded buffers): each
    tensor's row pointer must step by its own stride. Rows 16-byte aligned (off = 0): 300 rows
    of 1024 take the CUDA register path, whose blocks walk several row blocks with cursors (37
    x 96: decode). x one element off (off = 1): 300 x 1000 the unaligned register path, 3 x
    16383 the loop path, both of which address rows through fwd_row."""
    dtype = torch.bfloat16
    bx = torch.randn(m, n + 8, dtype=torch.float64).to(dtype).to(device)
    bz = (3 * torch.randn(m, n + 40, dtype=torch.float64)).to(dtype).to(device)
    x, z = bx[:, off:off + n], bz[:, 16:16 + n]
    _, w, b, _ = make_inputs((m, n), dtype, device, z=False)
    expected = ref64(x, w, b, z, 1e-6, g, nbg, False, "swish")
    out, _, _ = run_fwd(x, w, b, z, 1e-6, g, nbg)
    assert_close(out, expected, tol(dtype, g or n), "out (x, z with their own strides)")
    buf = poison(torch.empty(m, n + 24, dtype=dtype, device=device))
    out_view = buf[:, 8:8 + n]
    ops.gated_norm_fwd_out(x, w, b, z, 1e-6, g, nbg, False, "swish", out_view)
    assert_close(out_view, expected, tol(dtype, g or n), "out= a third stride")
    assert torch.isnan(buf[:, :8]).all() and torch.isnan(buf[:, 8 + n:]).all(), "wrote outside the out view"


def test_strided_3d_views(device):
    """3-D views whose leading dims collapse into one row stride: x = proj[..., :N] of a
    [B, T, 2N] tensor; out= a [B, T, N] slice of a bigger poisoned [B, T, 3N] buffer."""
    bsz, t, n = 3, 5, 64
    proj = torch.randn(bsz, t, 2 * n, device=device)
    x, z = proj.split(n, dim=-1)
    _, w, _, _ = make_inputs((1, n), torch.float32, device, z=False, bias=False)
    buf = poison(torch.empty(bsz, t, 3 * n, device=device))
    out = buf[..., n:2 * n]
    ops.gated_norm_fwd_out(x, w, None, z, 1e-6, 16, False, True, "silu", out)
    assert_close(out, ref64(x, w, None, z, 1e-6, 16, False, True, "silu"), tol(torch.float32, 16), "out")
    assert torch.isnan(buf[..., :n]).all() and torch.isnan(buf[..., 2 * n:]).all()


@pytest.mark.parametrize("layout", ["x_t", "z_t", "permuted_leading", "broadcast_rows"])
def test_non_unit_last_stride_is_copied(layout, device):
    """Layouts the kernel cannot address in place (last dim strided, leading dims that do
    not flatten to one stride, stride-0 rows) are copied by the op and give the right answer."""
    n = 48
    if layout == "x_t":
        x = torch.randn(n, 20, device=device).t()
        z = torch.randn(20, n, device=device)
    elif layout == "z_t":
        x = torch.randn(20, n, device=device)
        z = torch.randn(n, 20, device=device).t()
    elif layout == "permuted_leading":
        x = torch.randn(4, 5, n, device=device).transpose(0, 1)
        z = torch.randn(5, 4, n, device=device)
    else:
        x = torch.randn(1, n, device=device).expand(6, n)
        z = torch.randn(6, n, device=device)
    _, w, b, _ = make_inputs((1, n), torch.float32, device, z=False)
    out, _, _ = run_fwd(x, w, b, z, 1e-6, 16, False, False, "swish")
    assert_close(out, ref64(x, w, b, z, 1e-6, 16, False, False, "swish"), tol(torch.float32, 16), layout)
    o2 = poison(torch.empty(x.shape, device=device))
    ops.gated_norm_fwd_out(x, w, b, z, 1e-6, 16, False, False, "swish", o2)
    assert_close(o2, out, tol(torch.float32, 16), layout + " (out=)")


@pytest.mark.parametrize("shape", [(0, 64), (2, 0, 64)], ids=["0x64", "2x0x64"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
def test_empty_batch(shape, rms, device):
    x, w, b, z = make_inputs(shape, torch.float32, device)
    out, mean, rstd = run_fwd(x, w, b, z, 1e-6, 16, True, rms)
    assert out.shape == shape and out.dtype == x.dtype and out.device == x.device
    assert rstd.shape == (0,) and mean.shape == (0,)
    o = torch.empty(shape, device=device)
    mean, rstd = ops.gated_norm_fwd_out(x, w, b, z, 1e-6, None, False, rms, "silu", o)
    assert rstd.shape == (0,) and mean.shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
@pytest.mark.parametrize("act", ["silu", "sigmoid"])
def test_statistics(dtype, rms, nbg, act, device):
    """mean/rstd: shape (ngroups*M,), element g*M + r, fp32 (fp64 for fp64 x), mean empty for
    RMS; values vs fp64. With the gate before the norm they are statistics of x*act(z)."""
    m, n, g = 11, 96, 24
    x, w, b, z = make_inputs((m, n), dtype, device)
    x = x + 0.7  # a non-zero mean, so a LayerNorm that forgets to subtract it shows
    out, mean, rstd = run_fwd(x, w, b, z, 1e-6, g, nbg, rms, act)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    emean, erstd, vg = stats64(x, z, g, nbg, rms, act)
    assert rstd.dtype == sdt and rstd.shape == (m * n // g,) and rstd.is_contiguous()
    assert mean.dtype == sdt and mean.shape == ((0,) if rms else (m * n // g,))
    # the stats are stored in sdt: rounding to it plus the fp32/fp64 accumulation over g
    rt = tol(sdt, g)
    assert_close(rstd, erstd, rt, "rstd")
    if not rms:
        assert_close(mean, emean, rt, "mean")
    # spot-check the layout explicitly: group 2 of row 7 is at 2*M + 7
    r, gi = 7, 2
    v = vg[r, gi]
    mu = 0.0 if rms else v.mean().item()
    assert abs(rstd[gi * m + r].item() - ((v - mu).square().mean() + 1e-6).rsqrt().item()) <= rt * erstd.abs().max()


def test_eps_is_used(device):
    """Rows with variance ~ eps: a kernel that ignores or misplaces eps fails."""
    x = 1e-3 * torch.randn(4, 32, device=device)
    for eps in (0.0, 1e-6, 1e-4):
        out, _, rstd = run_fwd(x, None, None, None, eps, None, True, True, "swish")
        assert_close(out, ref64(x, None, None, None, eps, None, True, True), tol(torch.float32, 32), f"eps={eps}")
        assert_close(rstd, stats64(x, None, None, True, True, eps=eps)[1], tol(torch.float32, 32), "rstd")


def test_differentiable_and_inference_forward_agree(device):
    """gated_norm (autograd registered) and gated_norm_fwd (none) run the same kernel."""
    x, w, b, z = make_inputs((7, 96), torch.float32, device)
    args = (x, w, b, z, 1e-6, 32, False, False, "sigmoid")
    for a, e in zip(ops.gated_norm(*args), ops.gated_norm_fwd(*args)):
        assert torch.equal(a, e)


# LayerNorm + bias at 8192, 16-bit rows (CUDA: fp32 staging of weight and bias, 64 KB, leaves
# the register path one block an SM, so parameters of the rows' dtype are staged as they are:
# fwd_regs<..., T>, test_cuda_params_staged_16bit); without z (two blocks an SM with fp32
# staging) and with fp32 parameters beside the rows, fp32 staging as before. 300 rows:
# blocks walk several rows.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("z", [True, False], ids=["z", "noz"])
@pytest.mark.parametrize("pdt", [None, torch.float32], ids=["p_rows", "p_fp32"])
def test_params_staged_16bit(dtype, z, pdt, device):
    check_fwd((300, 8192), dtype, device, None, True, False, "silu", z, True, True, param_dtype=pdt)


@requires_cuda
def test_cuda_params_staged_16bit():
    """test_params_staged_16bit's kernel: the register path with bf16 staging (its last
    template argument the rows' dtype, not float; float on a bandwidth-rich device)."""
    rich = bandwidth_rich()
    if rich is None:
        pytest.skip("this torch does not report the memory bus width")
    x, w, b, z = make_inputs((300, 8192), torch.bfloat16, "cuda")
    names = cuda_kernels(lambda: run_fwd(x, w, b, z, 1e-6, None, True, False, "silu"))
    if not names:  # not a wrong kernel: none at all is CUPTI missing (as under compute-sanitizer)
        pytest.skip("torch.profiler sees no CUDA kernels in this process")
    staged = "float" if rich else "__nv_bfloat16"
    assert any((template_args(n, "fwd_regs") or [None])[-1] == staged for n in names), names


# (shape, group, dtype, the kernel that must run): which CUDA path serves which width.
KERNEL_PATHS = [  # (shape, group, dtype, kernel, RMSNorm); all with a gate after the norm
    ((64, 8192), None, torch.bfloat16, "fwd_regs", False),
    ((600, 65536), None, torch.bfloat16, "fwd_regs", False),  # split across a cluster, many rows a cluster
    ((600, 32768), None, torch.bfloat16, "fwd_block_row<", False),  # LayerNorm, four vectors a thread
    ((64, 65536), 32768, torch.float16, "fwd_regs", False),  # two groups, each split
    ((600, 32767), None, torch.bfloat16, "fwd_loop", False),  # unaligned: no 16-byte slices; rows for every SM
    ((4, 1 << 20), None, torch.bfloat16, "fwd_wide", False),  # beyond 16 register slices, few rows: wide path
    ((300, 16384), None, torch.bfloat16, "fwd_block_row_l2", True),  # two waves of rows (132 SMs): a block a row
    ((300, 16384), None, torch.bfloat16, "fwd_block_row_l2", False),  # LayerNorm (+ bias) too
    ((300, 32768), None, torch.bfloat16, "fwd_block_row<", True),  # four vectors a thread
    ((300, 16384), None, torch.float32, "fwd_block_row<", True),
    ((3, 16384), None, torch.bfloat16, "fwd_regs", True),  # the same groups, few rows: split
]


# (shape, group, dtype, norm_before_gate, rms, act, x's offset, row stride pad, bias): the
# CUDA wide path (few rows of groups the register path cannot hold: gated_norm_fwd_wide.cu),
# output chunks of 2048 bf16 / 1024 fp32 / 512 fp64 columns (one vector a thread), RMSNorm's
# partial sums over chunks 4 times that (plan.h, wide_stats_vecs). A chunk cut short at the
# group's end (aligned: 24584 = 12 x 2048 + 8 = 3 x 8192 + 8; unaligned: 65537), several
# groups a row, the gate in the statistics, rows with a stride. LayerNorm rows sit at an offset of 64 standard deviations plus a ramp
# of 4 across the row: its merge of the chunks' (sum, squared deviations) must be Chan's
# (E[v^2] - mean^2 would lose ~12 bits of the variance at that offset), and with its
# between-chunk term (the chunks' means differ by up to 4: without it the variance, 1 +
# 4/3, would come out ~1). On the CPU the same shapes check the CPU kernels.
WIDE_CASES = [
    ((3, 24584), None, torch.bfloat16, True, False, "silu", 64.0, 0, True),
    ((2, 2 * 24584), 24584, torch.bfloat16, False, False, "sigmoid", 64.0, 8, True),
    ((2, 49168), None, torch.float16, True, True, "swish", 0.0, 16, False),
    ((1, 65537), None, torch.float32, False, False, "swish", 64.0, 0, False),
    ((2, 2 * 8200), 8200, torch.float32, True, True, "sigmoid", 0.0, 4, True),
    ((2, 10001), None, torch.float64, False, False, "silu", 64.0, 0, True),
]


@pytest.mark.parametrize("case", WIDE_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-g{c[1]}-"
                         f"{DT_IDS[DTYPES.index(c[2])]}-{'rms' if c[4] else 'ln'}-pad{c[7]}"
                         f"{'' if c[8] else '-nobias'}")
def test_wide_groups(case, device):
    """Output and statistics of few rows of very wide groups against fp64."""
    shape, g, dtype, nbg, rms, act, offset, pad, bias = case
    x, w, b, z = make_inputs(shape, dtype, device, bias=bias)
    if offset:
        x = (x.double() + offset + torch.linspace(0, 4, shape[-1], dtype=torch.float64, device=device)).to(dtype)
    if pad:  # the same values in rows `pad` elements longer: a row stride != N
        wide = torch.full((shape[0], shape[1] + pad), float("nan"), dtype=dtype, device=device)
        wide[:, :shape[1]] = x
        x = wide[:, :shape[1]]
    out, mean, rstd = run_fwd(x, w, b, z, 1e-6, g, nbg, rms, act)
    assert_close(out, ref64(x, w, b, z, 1e-6, g, nbg, rms, act), tol(dtype, g or shape[-1]), "out")
    emean, erstd, _ = stats64(x, z, g, nbg, rms, act)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    assert_close(rstd, erstd, tol(sdt, g or shape[-1]), "rstd")
    if not rms:
        assert_close(mean, emean, tol(sdt, g or shape[-1]), "mean")


@pytest.mark.parametrize("case", KERNEL_PATHS,
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-g{c[1]}-{c[3]}{'-rms' if c[4] else ''}")
def test_kernel_paths(case, device):
    """The plan sends each width to the kernel meant for it, and that kernel is right there
    (with many rows: a cluster's CTAs reuse their partial-sum slots across rows). On CUDA and
    the emulator (there the shapes of up to 10 M elements: the others take minutes)."""
    shape, g, dtype, kernel, rms = case
    if device == "cpu" and math.prod(shape) > 10 * 2**20:
        pytest.skip("minutes on the emulator")
    if device == "cpu" and shape == (64, 65536):
        pytest.skip("its 128 (row, group) blocks are two waves on the emulated device's 4 SMs: the block-row path")
    x, w, b, z = make_inputs(shape, dtype, device)
    names = kernel_names(lambda: run_fwd(x, w, b, z, 1e-6, g, True, rms, "swish"), device)
    assert any(kernel in n for n in names), names
    out, mean, rstd = run_fwd(x, w, b, z, 1e-6, g, True, rms, "swish")
    assert_close(out, ref64(x, w, b, z, 1e-6, g, True, rms, "swish"), tol(dtype, g or shape[-1]), "out")
    emean, erstd, _ = stats64(x, z, g, True, rms, "swish")  # what the backward reads
    assert_close(rstd, erstd, tol(torch.float32, g or shape[-1]), "rstd")
    if not rms:
        assert_close(mean, emean, tol(torch.float32, g or shape[-1]), "mean")


# GATEDNORM_LOOP_SLOTS=k (read once a process; csrc/cuda/gated_norm_*_loop_async.cu): the
# aligned loop paths stage at most k vectors a thread, so shapes of a few MB exercise what
# only 2^20-wide rows reach by themselves: nothing staged (0), x partly staged (1), x whole
# and the next tensor in part (5: 4 vectors a thread of each), forward and backward. 40
# rows of 2^18 split 4 ways leave some clusters a second row (the next row's copies issued
# under this row's output).
_SLOTS_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import cuda_kernels, make_inputs, ops
from test_backward import grads_vs_reference
from test_forward import check_fwd
for shape, dt, g, nbg, rms, act in {cases!r}:
    check_fwd(shape, getattr(torch, dt), "cuda", g, nbg, rms, act)
    grads_vs_reference(shape, getattr(torch, dt), "cuda", g, nbg, rms, act)
x, w, b, z = make_inputs((3, 1 << 18), torch.bfloat16, "cuda")
out, mean, rstd = ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, True, "silu")
dy = torch.randn_like(out)
names = cuda_kernels(lambda: ops.gated_norm_fwd(x, w, b, z, 1e-6, None, True, True, "silu"))
names += cuda_kernels(lambda: ops.gated_norm_bwd(dy, x, w, b, z, mean, rstd, 1e-6, None, True, True, "silu", False))
print("kernels", sorted(set(names)))
"""


_LOOP_CASES = [((3, 1 << 18), "bfloat16", None, True, True, "silu"),
               ((3, 1 << 18), "bfloat16", None, False, False, "swish"),  # z in the statistics, LayerNorm
               ((40, 1 << 18), "float16", None, True, False, "sigmoid"),
               ((2, 1 << 17), "float32", None, False, True, "swish"),
               ((2, 1 << 18), "bfloat16", 1 << 17, True, False, "silu"),
               ((1, 1 << 17), "float64", None, False, False, "sigmoid")]


def _loop_path_child(**knobs):
    """The loop-path cases in a child process with read-once knobs set; checks they stayed
    on the aligned loop kernels."""
    import os
    import subprocess
    import sys
    tests = os.path.dirname(os.path.abspath(__file__))
    knobs.setdefault("GATEDNORM_FWD_WIDE", 0)  # few rows of these widths take the wide paths by default
    knobs.setdefault("GATEDNORM_BWD_WIDE", 0)
    env = dict(os.environ, **{k: str(v) for k, v in knobs.items()})
    r = subprocess.run([sys.executable, "-c", _SLOTS_SCRIPT.format(tests=tests, cases=_LOOP_CASES)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("kernels ")][-1]
    assert line == "kernels []" or ("fwd_loop_async" in line and "bwd_loop_async" in line), line  # []: no CUPTI


@requires_cuda
@pytest.mark.parametrize("slots", [0, 1, 5, -1], ids=["none", "x-part", "z-part", "all"])
def test_cuda_loop_slots(slots):
    _loop_path_child(GATEDNORM_LOOP_SLOTS=slots)


@requires_cuda
@pytest.mark.parametrize("cluster", [1, 2, 8], ids=["unsplit", "cluster2", "cluster8"])
def test_cuda_loop_cluster(cluster):
    """GATEDNORM_LOOP_CLUSTER (the loop path's largest cluster, a tuning knob): other
    slicings of the same rows, also with part of a slice staged."""
    _loop_path_child(GATEDNORM_LOOP_CLUSTER=cluster, GATEDNORM_LOOP_SLOTS=5)


@requires_cuda
def test_cuda_graph_wide_groups():
    """The wide path (two kernels and the workspace the op allocates between them) captures
    in a CUDA graph and replays on new inputs with eager's bits."""
    x, w, b, z = make_inputs((4, 1 << 20), torch.bfloat16, "cuda")
    sx, sz = x.clone(), z.clone()
    graph, static = capture_cuda_graph(lambda: ops.gated_norm_fwd(sx, w, b, sz, 1e-6, None, True, False, "silu"), 2)
    for _ in range(2):
        nx, _, _, nz = make_inputs((4, 1 << 20), torch.bfloat16, "cuda")
        sx.copy_(nx)
        sz.copy_(nz)
        graph.replay()
        expected = ops.gated_norm_fwd(nx, w, b, nz, 1e-6, None, True, False, "silu")
        torch.cuda.synchronize()
        for a, e in zip(static, expected):
            assert torch.equal(a, e)
