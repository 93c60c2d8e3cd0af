"""torch integration: torch.library.opcheck of every op, torch.compile(fullgraph=True) over
the modules, and (CUDA only) current-stream semantics, CUDA graph capture/replay and
more than 2^31 elements."""
import pytest
import torch
from torch import nn

import torch_ops
from conftest import assert_close, cuda_warmup, f64, grad_tol, make_inputs, ops, ref64, requires_cuda, tol


# ---------------------------------------------------------------- opcheck

def fwd_samples(device):
    """Argument samples for gated_norm / gated_norm_fwd; the last two require grad so
    gated_norm's autograd registration is exercised (test_autograd_registration,
    aot_dispatch); gated_norm_fwd (no autograd) takes only the first four."""
    out = []
    x, w, b, z = make_inputs((4, 32), torch.float32, device)
    out.append((x, w, b, z, 1e-6, 8, True, False, "swish"))
    xb, _, _, zb = make_inputs((2, 3, 64), torch.bfloat16, device)
    out.append((xb, None, None, zb, 1e-5, None, False, True, "sigmoid"))
    proj = torch.randn(5, 96, device=device)
    out.append((proj[:, :32], w, None, proj[:, 64:], 1e-6, 16, False, True, "silu"))  # row-strided views
    out.append((torch.randn(0, 32, device=device), w, b, None, 1e-6, None, True, False, "swish"))  # M = 0
    x, w, b, z = make_inputs((6, 32), torch.float32, device)
    out.append((x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), z.requires_grad_(), 1e-6, 8, False,
                False, "swish"))
    x, w, _, _ = make_inputs((3, 2, 16), torch.float64, device)
    out.append((x.requires_grad_(), w.requires_grad_(), None, None, 1e-6, None, True, True, "swish"))
    return out


@pytest.mark.parametrize("i", range(4))
def test_opcheck_gated_norm_fwd(i, device):
    torch.library.opcheck(ops.gated_norm_fwd.default, fwd_samples(device)[i])


@pytest.mark.parametrize("i", range(6))
def test_opcheck_gated_norm(i, device):
    """The differentiable op, including samples that require grad (autograd registration)."""
    torch.library.opcheck(ops.gated_norm.default, fwd_samples(device)[i])


@pytest.mark.parametrize("i", range(4))
def test_opcheck_gated_norm_fwd_out(i, device):
    args = fwd_samples(device)[i]
    x = args[0]
    n = x.shape[-1]
    # a contiguous out, and a row-strided one starting one element in (misaligned rows)
    strided = torch.empty(*x.shape[:-1], 2 * n, dtype=x.dtype, device=device)[..., 1:n + 1]
    # (opcheck cannot clone a zero-size strided view: torch's clone_input computes a negative size)
    for o in (torch.empty_like(x), strided) if x.numel() else (torch.empty_like(x),):
        torch.library.opcheck(ops.gated_norm_fwd_out.default, (*args, o))


def bwd_samples(device):
    out = []
    for i, (x, w, b, z, *cfg) in enumerate(fwd_samples(device)[:4]):
        _, mean, rstd = ops.gated_norm_fwd(x, w, b, z, *cfg)
        out.append((torch.randn_like(x), x, w, b, z, mean, rstd, *cfg, i % 2 == 0))
    return out


@pytest.mark.parametrize("i", range(4))
def test_opcheck_gated_norm_bwd(i, device):
    torch.library.opcheck(ops.gated_norm_bwd.default, bwd_samples(device)[i])


@pytest.mark.parametrize("i", range(4))
def test_opcheck_gated_norm_bwd_out(i, device):
    dy, x, w, b, z, mean, rstd, *cfg, recompute = bwd_samples(device)[i]
    dz = None if z is None else torch.empty_like(x)
    out = torch.empty_like(x) if recompute else None
    dw = None if w is None else torch.empty_like(w)
    db = None if b is None else torch.empty_like(b)
    torch.library.opcheck(ops.gated_norm_bwd_out.default,
                          (dy, x, w, b, z, mean, rstd, *cfg, torch.empty_like(x), dz, out, dw, db))


# ---------------------------------------------------------------- torch.compile

class Block(nn.Module):
    """A Mamba2-like tail: fused projection split into x and gate, grouped gated RMSNorm
    (gate before norm), then a LayerNormGated (gate after norm) and an output projection."""

    def __init__(self, d=32):
        super().__init__()
        self.d = d
        self.proj = nn.Linear(d, 2 * d)
        self.norm = torch_ops.RMSNormGated(d, group_size=d // 2)
        self.ln = torch_ops.LayerNormGated(d)
        self.out = nn.Linear(d, d)
        with torch.no_grad():  # non-trivial parameters
            for p in (self.norm.weight, self.ln.weight, self.ln.bias):
                p.add_(0.3 * torch.randn_like(p))

    def forward(self, h):
        x, z = self.proj(h).split(self.d, dim=-1)
        return self.out(self.ln(self.norm(x, z), z))


def compile_vs_eager(device, backend, shapes):
    torch.manual_seed(0)
    eager = Block().to(device)
    compiled = Block().to(device)
    compiled.load_state_dict(eager.state_dict())
    fn = torch.compile(compiled, fullgraph=True, backend=backend, dynamic=len(shapes) > 1)
    for shape in shapes:
        h = torch.randn(shape, device=device)
        ye = eager(h)
        yc = fn(h)
        assert_close(yc, ye, tol(torch.float32, 32), f"compiled forward {shape}")
        dy = torch.randn_like(ye)
        ye.backward(dy)
        yc.backward(dy)
        for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters()):
            assert pc.grad is not None, name
            assert_close(pc.grad, pe.grad, grad_tol(torch.float32, 32 * shape[0]), f"grad {name}")
        eager.zero_grad()
        compiled.zero_grad()


def test_compile_fullgraph_aot_eager(device):
    """Fake kernels + autograd registration traced by dynamo/AOTAutograd (fast, no codegen),
    with dynamic shapes across two batch sizes."""
    compile_vs_eager(device, "aot_eager", [(4, 7, 32), (3, 5, 32)])


@pytest.mark.slow
def test_compile_fullgraph_inductor(device):
    compile_vs_eager(device, "inductor", [(4, 7, 32)])


# ---------------------------------------------------------------- CUDA only

@requires_cuda
def test_runs_on_current_stream():
    """The op runs on the current stream: input produced on a side stream behind a long
    sleep is seen by the op enqueued on that stream (on the default stream it would race)."""
    x, w, b, z = make_inputs((64, 1024), torch.float32, "cuda")
    expected = ops.gated_norm_fwd(x, w, b, z, 1e-6, 256, False, True, "swish")[0]
    dy = torch.randn_like(x)
    expected_b = ops.gated_norm_bwd(dy, x, w, b, z, *ops.gated_norm_fwd(x, w, b, z, 1e-6, 256, False, True,
                                                                          "swish")[1:], 1e-6, 256, False, True,
                                    "swish", False)
    xs = torch.zeros_like(x)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)  # ~tens of ms of GPU time on this stream only
        xs.copy_(x)
        out, mean, rstd = ops.gated_norm_fwd(xs, w, b, z, 1e-6, 256, False, True, "swish")
        grads = ops.gated_norm_bwd(dy, xs, w, b, z, mean, rstd, 1e-6, 256, False, True, "swish", False)
    s.synchronize()
    assert torch.equal(out, expected)
    for a, e in zip(grads, expected_b):
        assert (a is None and e is None) or torch.equal(a, e)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_cuda_graph_forward(dtype):
    m, n, g = 2048, 128, None
    x, w, b, z = make_inputs((m, n), dtype, "cuda")
    sx, sz = x.clone(), z.clone()
    out_buf = torch.empty_like(x)
    cuda_warmup(lambda: ops.gated_norm_fwd(sx, w, None, sz, 1e-6, g, False, True, "swish"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sout, smean, srstd = ops.gated_norm_fwd(sx, w, None, sz, 1e-6, g, False, True, "swish")
        ops.gated_norm_fwd_out(sx, w, b, sz, 1e-6, 32, True, False, "sigmoid", out_buf)
    for _ in range(2):  # new data copied into the static inputs before each replay
        nx, _, _, nz = make_inputs((m, n), dtype, "cuda")
        sx.copy_(nx)
        sz.copy_(nz)
        graph.replay()
        e_out, _, e_rstd = ops.gated_norm_fwd(nx, w, None, nz, 1e-6, g, False, True, "swish")
        torch.cuda.synchronize()
        assert torch.equal(sout, e_out) and torch.equal(srstd, e_rstd)
        assert_close(out_buf, ref64(nx, w, b, nz, 1e-6, 32, True, False, "sigmoid"), tol(dtype, 32))


@requires_cuda
def test_cuda_graph_forward_backward():
    """Whole forward + backward through layernorm_fn captured in one graph (the PyTorch
    whole-network capture recipe); replay on new data matches eager."""
    m, n, g = 512, 256, 64
    x, w, b, z = make_inputs((m, n), torch.bfloat16, "cuda", param_dtype=torch.float32)
    sx, sz, sdy = x.clone().requires_grad_(), z.clone().requires_grad_(), torch.randn_like(x)
    w.requires_grad_()
    b.requires_grad_()

    def step():
        for t in (sx, sz, w, b):
            t.grad = None
        o = torch_ops.layernorm_fn(sx, w, b, z=sz, group_size=g, norm_before_gate=False)
        o.backward(sdy)
        return o

    cuda_warmup(step)
    for t in (sx, sz, w, b):
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sout = torch_ops.layernorm_fn(sx, w, b, z=sz, group_size=g, norm_before_gate=False)
        sout.backward(sdy)
    nx, _, _, nz = make_inputs((m, n), torch.bfloat16, "cuda")
    ndy = torch.randn_like(nx)
    with torch.no_grad():
        sx.copy_(nx)
        sz.copy_(nz)
        sdy.copy_(ndy)
    graph.replay()
    torch.cuda.synchronize()
    ex, ez = nx.clone().requires_grad_(), nz.clone().requires_grad_()
    ew, eb = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    eo = torch_ops.layernorm_fn(ex, ew, eb, z=ez, group_size=g, norm_before_gate=False)
    eo.backward(ndy)
    assert torch.equal(sout, eo)
    for got, want in ((sx.grad, ex.grad), (sz.grad, ez.grad), (w.grad, ew.grad), (b.grad, eb.grad)):
        assert torch.equal(got, want)


@requires_cuda
def test_multi_gpu_current_device():
    """Tensors on cuda:1 are computed on cuda:1 even when cuda:0 is the current device."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    x, w, b, z = make_inputs((16, 256), torch.float32, "cuda:1")
    with torch.cuda.device(0):
        out = ops.gated_norm_fwd(x, w, b, z, 1e-6, 64, True, False, "swish")[0]
    assert out.device == x.device
    assert_close(out, ref64(x, w, b, z, 1e-6, 64), tol(torch.float32, 64))


@requires_cuda
@pytest.mark.slow
def test_more_than_2_31_elements():
    """64-bit indexing: bf16 x with > 2^31 elements (rows past element 2^31 are checked)."""
    n = 4096
    m = 2 ** 31 // n + 8
    need = 2 * m * n * 2 + (1 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} available")
    x = torch.randn(m, n, dtype=torch.bfloat16, device="cuda")
    _, w, b, _ = make_inputs((1, n), torch.bfloat16, "cuda")
    out, mean, rstd = ops.gated_norm_fwd(x, w, b, None, 1e-6, 1024, True, False, "swish")
    rows = torch.tensor([0, 1, m // 2, 2 ** 31 // n - 1] + list(range(m - 8, m)), device="cuda")
    assert_close(out[rows], ref64(x[rows], w, b, None, 1e-6, 1024), tol(torch.bfloat16, 1024), "out rows")
    ngroups = n // 1024
    assert rstd.shape == (ngroups * m,)
    idx = (torch.arange(ngroups, device="cuda")[:, None] * m + rows[None, :]).flatten()
    xr = f64(x[rows]).reshape(len(rows), ngroups, 1024)
    e_rstd = (xr - xr.mean(-1, keepdim=True)).square().mean(-1).add(1e-6).rsqrt().t().flatten()
    assert_close(rstd[idx], e_rstd, tol(torch.float32, 1024), "rstd rows")
    del out
    if torch.cuda.mem_get_info()[0] >= 2 * m * n * 2 + (1 << 30):
        dy = torch.randn_like(x)
        dx, *_ = ops.gated_norm_bwd(dy, x, w, b, None, mean, rstd, 1e-6, 1024, True, False, "swish", False)
        xs = f64(x[rows]).cpu().requires_grad_()
        torch_ops.gated_norm_ref(xs, f64(w).cpu(), f64(b).cpu(), None, 1e-6, 1024).backward(f64(dy[rows]).cpu())
        assert_close(dx[rows], xs.grad, grad_tol(torch.bfloat16, 1024), "dx rows")


class _Block(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.gated = torch_ops.RMSNormGated(n, norm_before_gate=True)
        self.addnorm = torch_ops.FusedAddRMSNorm(n)

    def forward(self, x, z, r):
        return self.addnorm(self.gated(x, z), r)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_torch_export(grad, device, tmp_path):
    """torch.export: the graph holds our ops (the inference ones under no_grad, the
    differentiable ones otherwise), the exported module computes what the eager one does,
    and the program survives torch.export.save / load."""
    m = _Block(64).to(device)
    x, z, r = (torch.randn(4, 64, device=device) for _ in range(3))
    with torch.set_grad_enabled(grad):
        ep = torch.export.export(m, (x, z, r))
    ours = [str(n.target) for n in ep.graph.nodes if str(n.target).startswith("gatednorm.")]
    assert ours == (["gatednorm.gated_norm.default", "gatednorm.add_rms_norm.default"] if grad else
                    ["gatednorm.gated_norm_infer.default", "gatednorm.add_rms_norm_infer.default"])
    with torch.no_grad():
        expected = m(x, z, r)
        for prog in (ep, _save_load(ep, tmp_path)):
            got = prog.module()(x, z, r)
            assert all(torch.equal(a, b) for a, b in zip(got, expected))


def _save_load(ep, tmp_path):
    path = tmp_path / "block.pt2"
    torch.export.save(ep, path)
    return torch.export.load(path)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpointing(reentrant, device):
    """torch.utils.checkpoint recomputes our forwards in the backward: gradients bitwise
    those of the plain run (the kernels are deterministic)."""
    def leaves():
        g = torch.Generator(device="cpu").manual_seed(0)
        shapes = [(4, 64), (64,), (4, 64), (4, 64)]
        return [torch.randn(s, generator=g).to(device).requires_grad_() for s in shapes]

    def f(x, w, z, r):
        y = torch_ops.layernorm_fn(x, w, None, z, 1e-6, 16, False, True, "silu")
        out, h = torch_ops.add_rms_norm(y, r, w, 1e-6)
        return (1.5 * out + h).sum()

    plain, ckpt = leaves(), leaves()
    f(*plain).backward()
    torch.utils.checkpoint.checkpoint(f, *ckpt, use_reentrant=reentrant).backward()
    for a, b in zip(plain, ckpt):
        assert torch.equal(a.grad, b.grad)
