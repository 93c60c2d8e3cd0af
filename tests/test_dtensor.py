"""DTensor (tensor / sequence parallel) and FSDP2 through the public functions, on 2 ranks of one
machine (gloo on the CPU; NCCL on two GPUs when the device has them): results and
gradients of sharded inputs equal those of the whole tensors on one rank (the same
kernels on the same rows: bitwise for the forwards, fp32 reassociation of the dw/db
sums over ranks for the parameter gradients). torch_ops/dtensor.py has the rules."""
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cases(device):
    import torch_ops
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh(device, (WORLD,))
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731  (same on every rank)
    dt = lambda t, *pl: distribute_tensor(t, mesh, list(pl))  # noqa: E731
    full = lambda t: t.full_tensor() if isinstance(t, DTensor) else t  # noqa: E731

    x, z, r = rnd(4, 6, 64), rnd(4, 6, 64), rnd(4, 6, 64)
    w, b = 1 + 0.1 * rnd(64), 0.1 * rnd(64)

    # inference: rows sharded on dim 0 and 1 (sequence parallel), heads (groups) on the last dim
    for pl, wpl in [(Shard(0), Replicate()), (Shard(1), Replicate()), (Shard(2), Shard(0)), (Replicate(), Replicate())]:
        with torch.no_grad():
            out = torch_ops.layernorm_fn(dt(x, pl), dt(w, wpl), dt(b, wpl), dt(z, pl), 1e-6, 16, False, False, "silu")
            assert out.placements == (pl,), (pl, out.placements)
            expected = torch_ops.layernorm_fn(x, w, b, z, 1e-6, 16, False, False, "silu")
            assert torch.equal(full(out), expected), pl
    for pl in [Shard(0), Shard(1)]:
        with torch.no_grad():
            y = torch_ops.rms_norm(dt(x, pl), dt(w, Replicate()), 1e-6)
            assert torch.equal(full(y), torch_ops.rms_norm(x, w, 1e-6))
            o, h = torch_ops.add_rms_norm(dt(x, pl), dt(r, pl), dt(w, Replicate()), 1e-6)
            eo, eh = torch_ops.add_rms_norm(x, r, w, 1e-6)
            assert torch.equal(full(o), eo) and torch.equal(full(h), eh)

    # in place (no sharding rule: the public functions run the op on the local rows)
    for pl in [Shard(0), Shard(1), Replicate()]:
        with torch.no_grad():
            a, res = dt(x.clone(), pl), dt(r.clone(), pl)
            local_a, local_res = a.to_local(), res.to_local()
            torch_ops.fused_add_rms_norm(a, res, dt(w, Replicate()), 1e-6)
            ea, eres = x.clone(), r.clone()
            torch_ops.fused_add_rms_norm(ea, eres, w, 1e-6)
            assert a.placements == (pl,)
            assert torch.equal(full(a), ea) and torch.equal(full(res), eres), pl
            assert torch.equal(local_a, a.to_local()) and torch.equal(local_res, res.to_local())  # in place
            out = dt(torch.full_like(x, float("nan")), pl)
            assert torch_ops.rms_norm(dt(x, pl), w, 1e-6, out=out) is out
            assert torch.equal(full(out), torch_ops.rms_norm(x, w, 1e-6)), pl
    bad = [  # (input, residual, weight) -> the argument the error names
        ((dt(x, Shard(2)), dt(r, Shard(2)), w), "input"),  # rows split across ranks
        ((dt(x, Shard(0)), dt(r, Shard(1)), w), "residual"),  # different placements
        ((dt(x, Shard(0)), r, w), "residual"),  # a plain tensor with a DTensor
        ((x, r, dt(w, Replicate())), "input"),
        ((dt(x, Shard(0)), dt(r, Shard(0)), dt(w, Shard(0))), "weight"),  # a sharded weight
    ]
    for args, name in bad:
        try:
            with torch.no_grad():
                torch_ops.fused_add_rms_norm(*args, 1e-6)
        except ValueError as e:
            assert f"`{name}`" in str(e) and "fused_add_rms_norm" in str(e), e
        else:
            raise AssertionError(f"no error for {name}")

    # training: rows on dim 0 (2-D, one group) and groups on the last dim
    x2, z2, r2, dy = rnd(8, 64), rnd(8, 64), rnd(8, 64), rnd(8, 64)
    for pl, wpl, group in [(Shard(0), Replicate(), None), (Shard(1), Shard(0), 16)]:
        leaves = [dt(t, p).requires_grad_() for t, p in ((x2, pl), (w, wpl), (b, wpl), (z2, pl))]
        out = torch_ops.layernorm_fn(*leaves, 1e-6, group, True, False, "silu")
        grads = torch.autograd.grad(out, leaves, dt(dy, pl))
        plain = [t.clone().requires_grad_() for t in (x2, w, b, z2)]
        e_out = torch_ops.layernorm_fn(*plain, 1e-6, group, True, False, "silu")
        e_grads = torch.autograd.grad(e_out, plain, dy)
        assert torch.equal(full(out), e_out), pl
        # dw / db: a sum over the ranks' rows (Partial), or each rank's own columns
        want = [(pl,), (wpl if group else Partial(),), (wpl if group else Partial(),), (pl,)]
        assert out.placements == (pl,) and [t.placements for t in grads] == want, [t.placements for t in grads]
        for name, a, e in zip(("dx", "dw", "db", "dz"), grads, e_grads):
            torch.testing.assert_close(full(a), e, rtol=1e-5, atol=1e-5, msg=f"{pl} {name}")
    leaves = [dt(x2, Shard(0)).requires_grad_(), dt(r2, Shard(0)).requires_grad_(), dt(w, Replicate()).requires_grad_()]
    o, h = torch_ops.add_rms_norm(*leaves, 1e-6)
    grads = torch.autograd.grad((o, h), leaves, (dt(dy, Shard(0)), dt(dy, Shard(0))))
    plain = [t.clone().requires_grad_() for t in (x2, r2, w)]
    eo, eh = torch_ops.add_rms_norm(*plain, 1e-6)
    e_grads = torch.autograd.grad((eo, eh), plain, (dy, dy))
    assert torch.equal(full(o), eo) and torch.equal(full(h), eh)
    for a, e in zip(grads, e_grads):
        torch.testing.assert_close(full(a), e, rtol=1e-5, atol=1e-5)


def _fsdp2(device):
    """FSDP2 (fully_shard) over a block of our modules: parameters are DTensors sharded on
    dim 0 between steps and unsharded (gathered) around each forward / backward; the
    gradients equal those of the unsharded block (each rank feeds its own batch: the
    gradients are averaged over ranks, as the reference computes on both batches)."""
    import torch_ops
    from torch.distributed.fsdp import fully_shard

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(64, 128)
            self.gated = torch_ops.RMSNormGated(64, group_size=16)
            self.norm = torch_ops.FusedAddRMSNorm(64)

        def forward(self, x):
            xz = self.proj(x)
            out, res = self.norm(self.gated(xz[..., :64], xz[..., 64:]), x)
            return (out.square() + res).mean()

    def block():
        torch.manual_seed(0)
        return Block().to(device)

    run = lambda m, x: m(x)  # noqa: E731

    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(3, 5, 64, generator=g).to(device) for _ in range(WORLD)]
    ref = block()
    sum(run(ref, b) for b in batches).div(WORLD).backward()
    sharded = block()
    for name in ("proj", "gated", "norm"):
        fully_shard(getattr(sharded, name))
    fully_shard(sharded)
    run(sharded, batches[dist.get_rank()]).backward()
    for (name, p), (_, q) in zip(sharded.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-6, msg=name)


def _worker(rank, port, device):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=WORLD)
    try:
        _cases(device)
        _fsdp2(device)
        dist.barrier()  # (else one rank's teardown can race the other's last collective)
    finally:
        dist.destroy_process_group()
    # A clean exit, skipping the interpreter's teardown: there, 1 run in ~15 on this machine,
    # a static destructor of the distributed stack aborts ("terminate called without an
    # active exception", after destroy_process_group returned; also without our ops).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_dtensor_two_ranks(device):
    if device == "cuda" and torch.cuda.device_count() < WORLD:
        pytest.skip(f"needs {WORLD} GPUs")
    mp.spawn(_worker, args=(_free_port(), device), nprocs=WORLD, join=True)
