"""Fused add + RMSNorm: rms_norm(_out), fused_add_rms_norm (in place), add_rms_norm
(differentiable) against fp64 references; the sum that is normalised is the one
stored in residual (rounded to its dtype), so residual_out is checked bitwise."""
import pytest
import torch

import torch_ops
from conftest import (assert_close, assert_normwise, capture_cuda_graph, f64, grad_tol, kernel_names, poison,
                      reduce_tol, requires_cuda, tol)
from torch_ops.add_rms_norm import add_rms_norm_ref, rms_norm_ref

ops = torch.ops.gatednorm
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
IDS = ["fp32", "fp16", "bf16", "fp64"]

def inputs(shape, dtype, res_dtype=None, w_dtype=None, device="cpu"):
    x = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    r = (2 * torch.randn(shape, dtype=torch.float64) + 0.5).to(res_dtype or dtype).to(device)
    w = (1 + 0.3 * torch.randn(shape[-1], dtype=torch.float64)).to(w_dtype or dtype).to(device)
    return x, r, w


def expected(x, r, w, eps, residual_in_fp32=False, gemma=False):
    """(out in fp64, residual_out exactly as it must be stored)."""
    _, h = add_rms_norm_ref(x.cpu(), r.cpu(), None, eps, residual_in_fp32)
    out = rms_norm_ref(f64(h), None if w is None else f64(w).cpu(), eps, gemma)
    return out, h


# CUDA paths: the decode kernel (aligned rows, every row's block resident at once:
# 64 x 128, 33 x 1000, 4 x 5120 ...), the streaming register path with 1 and 2
# vectors per thread (more rows than one wave: 20000 x 256, 600 x 5120), unaligned
# rows (33, 1), the loop path staged in shared memory (12288 in half types, 65537)
# and many rows per persistent team (20000 x 256). test_kernel_paths checks
# which kernel a shape takes.
SHAPES = [(64, 128), (33, 1000), (5, 3, 96), (7, 1), (3, 33), (2, 65537), (4, 5120), (3, 12288), (4099, 256),
          (20000, 256), (600, 5120)]


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gemma", [False, True], ids=["w", "gemma"])
def test_add_rms_norm_forward(shape, dtype, gemma, device):
    x, r, w = inputs(shape, dtype, device=device)
    out, res, rstd = ops.add_rms_norm(x, r, w, 1e-6, False, gemma)
    e_out, e_res = expected(x, r, w, 1e-6, gemma=gemma)
    assert torch.equal(res.cpu(), e_res), "residual_out must be x + residual rounded to residual's dtype"
    assert out.dtype == dtype and res.dtype == r.dtype
    assert_close(out.cpu(), e_out, tol(dtype, shape[-1]), "out")
    h = f64(e_res)
    assert_close(rstd.cpu(), torch.rsqrt(h.square().mean(-1) + 1e-6).flatten(), tol(torch.float32, shape[-1]), "rstd")


# (bf16, fp32) and (fp16, fp32) have register-path CUDA kernels; other pairs take
# the generic loop kernel there.
MIXED = [(torch.bfloat16, torch.float32, torch.bfloat16), (torch.float16, torch.float16, torch.float32),
         (torch.bfloat16, torch.bfloat16, torch.float32), (torch.float16, torch.float32, torch.float16),
         (torch.float32, torch.bfloat16, torch.float32), (torch.float16, torch.bfloat16, torch.bfloat16)]
MIXED_IDS = ["res32", "w32-fp16", "w32-bf16", "fp16-res32", "fp32-resbf16", "fp16-resbf16"]


@pytest.mark.parametrize("x_dtype,r_dtype,w_dtype", MIXED, ids=MIXED_IDS)
# 16 x 256, 5 x 4096 and 3 x 1000 take the CUDA decode kernel (a block a row); 5000 x 128 is
# more one-warp rows than one wave holds (32 blocks an SM x 132 SMs): the streaming kernel.
@pytest.mark.parametrize("shape", [(16, 256), (5, 4096), (3, 1000), (5000, 128)],
                         ids=["256", "4096", "1000", "5000x128"])
def test_mixed_dtypes(x_dtype, r_dtype, w_dtype, shape, device):
    x, r, w = inputs(shape, x_dtype, r_dtype, w_dtype, device)
    out, res, _ = ops.add_rms_norm(x, r, w, 1e-5, False, False)
    e_out, e_res = expected(x, r, w, 1e-5)
    assert torch.equal(res.cpu(), e_res) and res.dtype == r_dtype
    assert_close(out.cpu(), e_out, tol(x_dtype, shape[-1]), "out")


def test_residual_in_fp32(device):
    x, r, w = inputs((16, 256), torch.bfloat16, device=device)
    out, res = torch_ops.add_rms_norm(x, r, w, 1e-6, residual_in_fp32=True)
    e_out, e_res = expected(x, r, w, 1e-6, residual_in_fp32=True)
    assert res.dtype == torch.float32 and torch.equal(res.cpu(), e_res)
    assert_close(out.cpu(), e_out, tol(torch.bfloat16, 256), "out")


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("gemma", [False, True], ids=["w", "gemma"])
@pytest.mark.parametrize("shape", [(40, 300), (2053, 512)], ids=["40x300", "2053x512"])
def test_fused_add_rms_norm_in_place(dtype, gemma, shape, device):
    """sgl-kernel contract: residual <- input + residual, input <- norm(residual) * w'."""
    x, r, w = inputs(shape, dtype, device=device)
    e_out, e_res = expected(x, r, w, 1e-6, gemma=gemma)
    xi, ri = x.clone(), r.clone()
    torch_ops.fused_add_rms_norm(xi, ri, w, 1e-6, gemma=gemma)
    assert torch.equal(ri.cpu(), e_res)
    assert_close(xi.cpu(), e_out, tol(dtype, shape[-1]), "input")
    out, res, _ = ops.add_rms_norm(x, r, w, 1e-6, False, gemma)
    assert torch.equal(xi, out) and torch.equal(ri, res), "in-place and out-of-place forms must agree bitwise"


# 24 rows: the CUDA decode kernel; 5000 rows of 128 bf16: the streaming kernel, whose row
# cursors advance by the strides (test_mixed_dtypes says why 5000).
@pytest.mark.parametrize("m,dtype", [(24, torch.float32), (5000, torch.bfloat16)], ids=["24-fp32", "5000-bf16"])
def test_fused_add_rms_norm_strided_rows(m, dtype, device):
    """Both tensors as column slices of wider buffers: the other columns stay untouched."""
    bx = torch.randn(m, 3 * 128, device=device, dtype=dtype)
    br = torch.randn(m, 2 * 128, device=device, dtype=dtype)
    x, r = bx[:, 128:256], br[:, :128]
    w = (torch.rand(128, device=device) + 0.5).to(dtype)
    e_out, e_res = expected(x, r, w, 1e-6)
    keep_x, keep_r = bx.clone(), br.clone()
    torch_ops.fused_add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(r.cpu(), e_res)
    assert_close(x.cpu(), e_out, tol(dtype, 128), "input")
    assert torch.equal(bx[:, :128], keep_x[:, :128]) and torch.equal(bx[:, 256:], keep_x[:, 256:])
    assert torch.equal(br[:, 128:], keep_r[:, 128:])


@pytest.mark.parametrize("m", [24, 5000], ids=["24", "5000"])
def test_add_rms_norm_strided_inputs(m, device):
    """Out of place, x and residual slices of wider buffers (strides 384 and 264) while out and
    residual_out are new (stride 128): each row cursor steps by its own tensor's stride. 5000 rows
    take the streaming CUDA kernel (test_mixed_dtypes), 24 the decode one."""
    bx = torch.randn(m, 3 * 128, device=device).to(torch.bfloat16)
    br = torch.randn(m, 2 * 128 + 8, device=device).to(torch.bfloat16)
    x, r = bx[:, 128:256], br[:, 8:136]
    w = (torch.rand(128, device=device) + 0.5).to(torch.bfloat16)
    out, res, _ = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    e_out, e_res = expected(x, r, w, 1e-6)
    assert res.is_contiguous() and torch.equal(res.cpu(), e_res)
    assert_close(out.cpu(), e_out, tol(torch.bfloat16, 128), "out")


@pytest.mark.parametrize("m", [24, 5000], ids=["24", "5000"])
def test_add_rms_norm_bwd_strided_grads(m, device):
    """add_rms_norm_bwd with dout, dresidual_out and the saved sum h slices of wider buffers,
    each with a stride of its own (rows 16-byte aligned, as in the contiguous call): the same
    bits as the contiguous call, whose results test_grads_vs_reference checks."""
    x, r, w = inputs((m, 128), torch.bfloat16, device=device)
    _, h, rstd = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    bd = torch.randn(m, 3 * 128, device=device).to(torch.bfloat16)
    bdr = torch.randn(m, 2 * 128 + 8, device=device).to(torch.bfloat16)
    bh = torch.randn(m, 2 * 128 + 24, device=device).to(torch.bfloat16)
    dout, dres, hs = bd[:, 128:256], bdr[:, 8:136], bh[:, 16:144]
    hs.copy_(h)
    got = ops.add_rms_norm_bwd(dout, dres, hs, w, rstd, False)
    want = ops.add_rms_norm_bwd(dout.contiguous(), dres.contiguous(), h, w, rstd, False)
    for name, a, b in zip(("dx", "dresidual", "dw"), got, want):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("weight", [True, False], ids=["w", "no-w"])
def test_rms_norm(dtype, weight, device):
    x, _, w = inputs((33, 1000), dtype, device=device)
    w = w if weight else None
    e = rms_norm_ref(f64(x), None if w is None else f64(w), 1e-6)
    assert_close(torch_ops.rms_norm(x, w, 1e-6).cpu(), e, tol(dtype, 1000), "rms_norm")
    buf = poison(torch.empty(33, 1200, dtype=dtype, device=device))
    out = torch_ops.rms_norm(x, w, 1e-6, out=buf[:, 100:1100])
    assert_close(out.cpu(), e, tol(dtype, 1000), "rms_norm out=")
    assert buf[:, :100].isnan().all() and buf[:, 1100:].isnan().all()
    g = torch_ops.gemma_rms_norm(x, w, 1e-6)
    eg = rms_norm_ref(f64(x), None if w is None else f64(w), 1e-6, gemma=True)
    assert_close(g.cpu(), eg, tol(dtype, 1000), "gemma_rms_norm")


def test_empty_batch(device):
    x, r, w = inputs((0, 64), torch.float32, device=device)
    out, res, rstd = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    assert out.shape == (0, 64) and res.shape == (0, 64) and rstd.shape == (0,)
    torch_ops.fused_add_rms_norm(x, r, w, 1e-6)
    w.requires_grad_()
    out, res = torch_ops.add_rms_norm(x, r, w, 1e-6)
    (out.sum() + res.sum()).backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("gemma", [False, True], ids=["w", "gemma"])
@pytest.mark.parametrize("weight", [True, False], ids=["w", "no-w"])
def test_gradcheck(gemma, weight, device):
    x, r, w = inputs((3, 8), torch.float64, device=device)
    leaves = [x.requires_grad_(), r.requires_grad_()] + ([w.requires_grad_()] if weight else [])

    def f(x, r, *w):
        out, res = torch_ops.add_rms_norm(x, r, w[0] if w else None, 1e-5, gemma=gemma)
        return out, res  # both outputs: the residual stream's own gradient flows back too

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


# Backward paths on CUDA: register path (512; 4096 fp32 with two vectors), loop
# path (6000; 4096 in half types is the register path's limit), unaligned (1000).
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=IDS[:3])
@pytest.mark.parametrize("shape", [(48, 512), (9, 4096), (5, 6000), (33, 1000)], ids=lambda s: str(s[-1]))
def test_grads_vs_reference(dtype, shape, device):
    x, r, w = inputs(shape, dtype, device=device)
    leaves = [t.clone().requires_grad_() for t in (x, r, w)]
    leaves64 = [f64(t).requires_grad_() for t in (x, r, w)]
    dout = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    dres = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    out, res = torch_ops.add_rms_norm(*leaves, 1e-6)
    torch.autograd.backward([out, res], [dout, dres])
    h64 = leaves64[0] + leaves64[1]
    out64 = rms_norm_ref(h64, leaves64[2], 1e-6)
    torch.autograd.backward([out64, h64], [f64(dout), f64(dres)])
    for name, t, t64 in zip(("dx", "dresidual"), leaves[:2], leaves64[:2]):
        assert t.grad.dtype == dtype
        assert_close(t.grad.cpu(), t64.grad, grad_tol(dtype, shape[-1]), name, scale=float(f64(dout).abs().max()))
    assert_normwise(leaves[2].grad.cpu(), leaves64[2].grad, reduce_tol(dtype, shape[0], shape[-1], dtype), "dw")


@pytest.mark.parametrize("x_dtype,r_dtype,w_dtype", MIXED[:1] + MIXED[3:5], ids=[MIXED_IDS[0]] + MIXED_IDS[3:5])
def test_grads_mixed_dtypes(x_dtype, r_dtype, w_dtype, device):
    """Each gradient in its own tensor's dtype; the residual stream's in the residual's."""
    x, r, w = inputs((24, 1024), x_dtype, r_dtype, w_dtype, device)
    leaves = [t.clone().requires_grad_() for t in (x, r, w)]
    leaves64 = [f64(t).requires_grad_() for t in (x, r, w)]
    dout = torch.randn(24, 1024, dtype=torch.float64).to(x_dtype).to(device)
    out, res = torch_ops.add_rms_norm(*leaves, 1e-6)
    out.backward(dout)
    h64 = f64(res.detach()).requires_grad_()  # the stored residual is what was normalised
    rms_norm_ref(h64, leaves64[2], 1e-6).backward(f64(dout))
    coarse = x_dtype if torch.finfo(x_dtype).eps > torch.finfo(r_dtype).eps else r_dtype
    for name, t in zip(("dx", "dresidual"), leaves[:2]):
        assert t.grad.dtype == t.dtype
        assert_close(t.grad.cpu(), h64.grad, grad_tol(coarse, 1024), name, scale=float(f64(dout).abs().max()))
    assert leaves[2].grad.dtype == w_dtype
    assert_normwise(leaves[2].grad.cpu(), leaves64[2].grad, reduce_tol(x_dtype, 24, 1024, w_dtype), "dw")


def test_dw_deterministic(device):
    x, r, w = inputs((3000, 256), torch.float32, device=device)
    grads = []
    for _ in range(3):
        wl = w.clone().requires_grad_()
        out, _ = torch_ops.add_rms_norm(x, r, wl, 1e-6)
        out.backward(torch.ones_like(out))
        grads.append(wl.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


def test_module_trains(device):
    torch.manual_seed(0)
    m = torch_ops.FusedAddRMSNorm(64, eps=1e-6).to(device)
    x = torch.randn(8, 64, device=device, requires_grad=True)
    r = torch.randn(8, 64, device=device)
    out, res = m(x, r)
    (out.square().sum() + res.sum()).backward()
    assert m.weight.grad is not None and x.grad is not None and m.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert_close(m(x).cpu(), rms_norm_ref(f64(x), f64(m.weight), 1e-6), tol(torch.float32, 64), "no residual")
    g = torch_ops.FusedAddRMSNorm(64, gemma=True).to(device)
    assert torch.equal(g.weight, torch.zeros(64, device=device)), "gemma weights start at 0 (applied as 1 + w)"


SAMPLES = [
    lambda d: inputs((6, 32), torch.float32, device=d),
    lambda d: inputs((2, 3, 64), torch.bfloat16, torch.float32, torch.float32, d),
]


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_opcheck(i, device):
    x, r, w = SAMPLES[i](device)
    torch.library.opcheck(ops.rms_norm.default, (x, w, 1e-6, True))
    torch.library.opcheck(ops.rms_norm_out.default, (x, w, 1e-6, torch.empty_like(x), False))
    torch.library.opcheck(ops.fused_add_rms_norm.default, (x.clone(), r.clone(), w, 1e-6, False))
    torch.library.opcheck(ops.add_rms_norm.default,
                          (x.requires_grad_(), r.requires_grad_(), w.requires_grad_(), 1e-6, False, False))
    out, res, rstd = ops.add_rms_norm(x.detach(), r.detach(), w.detach(), 1e-6, False, False)
    torch.library.opcheck(ops.add_rms_norm_bwd.default, (torch.randn_like(out), torch.randn_like(res), res, w.detach(),
                                                        rstd, False))


def test_compile_fullgraph(device):
    m = torch_ops.FusedAddRMSNorm(64).to(device)
    x = torch.randn(8, 64, device=device, requires_grad=True)
    r = torch.randn(8, 64, device=device)
    eager = m(x, r)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x, r)
    for a, e in zip(compiled, eager):
        assert torch.equal(a, e)
    compiled[0].sum().backward()


def raises(arg, fn, *args):
    with pytest.raises(RuntimeError, match=rf"gatednorm: .*\b{arg}\b"):
        fn(*args)


def test_bad_input(device):
    x, r, w = inputs((8, 64), torch.float32, device=device)
    raises("residual", torch_ops.fused_add_rms_norm, x, x, w, 1e-6)  # aliasing
    buf = torch.randn(8, 96, device=device)
    raises("residual", torch_ops.fused_add_rms_norm, buf[:, :64], buf[:, 32:], w, 1e-6)  # overlapping
    raises("residual", torch_ops.add_rms_norm, x, r[:, :32], w, 1e-6)
    raises("weight", torch_ops.add_rms_norm, x, r, w[:32], 1e-6)
    raises("x", torch_ops.add_rms_norm, x.to(torch.int32), r, w, 1e-6)
    raises("residual", torch_ops.add_rms_norm, x, r.to(torch.complex64), w, 1e-6)
    raises("eps", torch_ops.add_rms_norm, x, r, w, -1.0)
    raises("eps", torch_ops.rms_norm, x, w, float("nan"))
    raises("out", torch_ops.rms_norm, x, w, 1e-6, torch.empty(64, 8, device=device).t())
    raises("input", torch_ops.fused_add_rms_norm, torch.randn(64, 8, device=device).t(), r, w, 1e-6)
    _, res, rstd = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    raises("rstd", ops.add_rms_norm_bwd, x, None, res, w, rstd[:4], False)


needs_cuda = requires_cuda


@needs_cuda
def test_cuda_devices_mismatch():
    x, r, w = inputs((8, 64), torch.float32, device="cuda")
    raises("residual", torch_ops.fused_add_rms_norm, x, r.cpu(), w, 1e-6)
    raises("weight", torch_ops.fused_add_rms_norm, x, r, w.cpu(), 1e-6)


@needs_cuda
def test_cuda_current_stream():
    """The kernels run on the caller's current stream (no hidden default-stream work)."""
    x, r, w = inputs((4096, 2048), torch.bfloat16, device="cuda")
    e_out, e_res = expected(x, r, w, 1e-6)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)  # the kernel must queue behind this, not overtake it
        torch_ops.fused_add_rms_norm(x, r, w, 1e-6)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(r.cpu(), e_res)
    assert_close(x.cpu(), e_out, tol(torch.bfloat16, 2048), "input")


@pytest.mark.parametrize("shape,dtype,w_dtype,kernel", [
    ((1, 2048), torch.bfloat16, torch.bfloat16, "an_fwd_decode"),
    ((64, 8192), torch.bfloat16, torch.float32, "an_fwd_decode"),  # fp32 weight: two words a vector
    ((2000, 2048), torch.bfloat16, torch.bfloat16, "an_fwd_decode"),  # with the add: any number of rows
    ((20000, 256), torch.bfloat16, torch.bfloat16, "an_fwd_regs"),  # a short row, more rows than one wave
    ((1, 2048), torch.bfloat16, torch.float16, "an_fwd_regs"),  # a weight dtype the decode kernel lacks
    ((4, 16384), torch.bfloat16, torch.bfloat16, "an_fwd_loop"),  # longer than one vector a thread
    ((4, 4096), torch.float32, torch.float16, "an_fwd_regs"),  # fp16 weight: 8 bytes a vector
], ids=["m1", "w32", "many-rows", "many-short-rows", "w16-bf16", "long-row", "w16-fp32"])
def test_kernel_paths(shape, dtype, w_dtype, kernel, device):
    """The decode kernel serves exactly the shapes it is meant for (and is correct there).
    On CUDA and the emulator."""
    x, r, w = inputs(shape, dtype, w_dtype=w_dtype, device=device)
    names = kernel_names(lambda: ops.add_rms_norm(x, r, w, 1e-6, False, False), device)
    assert any(kernel in n for n in names), names
    out, res, _ = ops.add_rms_norm(x, r, w, 1e-6, False, False)
    e_out, e_res = expected(x, r, w, 1e-6)
    assert torch.equal(res.cpu(), e_res)
    assert_close(out.cpu(), e_out, tol(dtype, shape[-1]), "out")


@needs_cuda
@pytest.mark.parametrize("m", [1, 64])
def test_cuda_graph_decode(m):
    """Serving path: fused_add_rms_norm captured in a CUDA graph, replayed on new data."""
    x, r, w = inputs((m, 4096), torch.bfloat16, device="cuda")
    sx, sr = x.clone(), r.clone()
    g, _ = capture_cuda_graph(lambda: torch_ops.fused_add_rms_norm(sx, sr, w, 1e-6))
    for _ in range(2):
        x, r, _ = inputs((m, 4096), torch.bfloat16, device="cuda")
        e_out, e_res = expected(x, r, w, 1e-6)
        sx.copy_(x)
        sr.copy_(r)
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(sr.cpu(), e_res)
        assert_close(sx.cpu(), e_out, tol(torch.bfloat16, 4096), "input")


@needs_cuda
def test_cuda_graph_training_step():
    x, r, w = inputs((64, 1024), torch.float32, device="cuda")
    w.requires_grad_()
    sx = x.clone().requires_grad_()

    def step():
        out, res = torch_ops.add_rms_norm(sx, r, w, 1e-6)
        (out.square().sum() + res.sum()).backward()

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    w.grad = sx.grad = None
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    g.replay()
    torch.cuda.synchronize()
    wg, xg = w.grad.clone(), sx.grad.clone()
    w.grad = sx.grad = None
    step()
    assert torch.equal(w.grad, wg) and torch.equal(sx.grad, xg), "graph replay must match eager bitwise"


@needs_cuda
@pytest.mark.slow
def test_cuda_more_than_2_31_elements():
    """64-bit indexing: a [2^17 + 3, 16384] bf16 problem (> 2^31 elements)."""
    m, n = (1 << 17) + 3, 16384
    x = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    r = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(n, device="cuda", dtype=torch.bfloat16) + 0.5
    tail = slice(m - 5, m)
    e_out, e_res = expected(x[tail], r[tail], w, 1e-6)
    torch_ops.fused_add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(r[tail].cpu(), e_res)
    assert_close(x[tail].cpu(), e_out, tol(torch.bfloat16, n), "input")


@pytest.mark.parametrize("use", ["out", "residual"])
def test_one_output_used(use, device):
    """Autograd passes None for an unused output's gradient (no zeros materialised)."""
    x, r, w = inputs((6, 128), torch.float64, device=device)
    leaves = [t.requires_grad_() for t in (x, r, w)]
    out, res = torch_ops.add_rms_norm(*leaves, 1e-6)
    (out if use == "out" else res).square().sum().backward()
    x64, r64, w64 = [f64(t).detach().requires_grad_() for t in (x, r, w)]
    h = x64 + r64
    (rms_norm_ref(h, w64, 1e-6) if use == "out" else h).square().sum().backward()
    for t, e in zip(leaves, (x64, r64, w64)):
        expected_grad = e.grad if e.grad is not None else torch.zeros_like(e)  # w: not in the residual's graph
        assert_close(t.grad.cpu(), expected_grad, 1e-10, "grad")
