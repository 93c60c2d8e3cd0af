"""The `cuda_profiler` check of tests/sglang_gated_checks.py (GPU only): under torch.profiler,
sglang's own gated-norm call (its Triton kernel, profiled before patch()) shows no
`gatednorm::` op, and after patch() the same call and an `RMSNorm.forward_cuda` call (fused
add) on CUDA tensors each show at least one: the ops' dispatcher events (their CUDA kernels
are listed in the detail). Independent of the TorchDispatchMode recorder of the other checks."""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


def gated_call(lg, x, z, w):
    """sglang's rms_norm_gated (module `lg`: its layernorm_gated) as the model code calls it."""
    return lambda: lg.rms_norm_gated(x=x, weight=w, bias=None, z=z, eps=1e-6, is_rms_norm=True)


def profile_ops(fn) -> tuple[list, list]:
    """Run fn once under torch.profiler -> (its gatednorm:: op names, its CUDA kernel names)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.events()
    ops = sorted({e.name for e in events if e.name.startswith("gatednorm::")})
    kernels = sorted({e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA})
    return ops, kernels


def check(unpatched: tuple, lg, ln, x, z, w) -> list:
    """After patch(). unpatched: profile_ops() of gated_call() before it; ln: sglang's
    layernorm module (RMSNorm); x, z, w: CUDA tensors [M, N], [M, N], [N]."""
    ops, kernels = unpatched
    assert not ops, f"sglang's own (unpatched) call shows gatednorm ops: {ops}"
    detail = [f"unpatched: no gatednorm op; kernels {[k[:60] for k in kernels[:3]]}"]
    norm = ln.RMSNorm(x.shape[-1], eps=1e-6).to(x.device, x.dtype)
    for what, fn in {"rms_norm_gated": gated_call(lg, x, z, w),
                     "RMSNorm.forward_cuda": lambda: norm.forward_cuda(x.clone(), z.clone())}.items():
        ops, kernels = profile_ops(fn)
        assert ops, f"{what}: no gatednorm:: op in the profile (is the patch in effect?); kernels {kernels[:5]}"
        detail.append(f"{what}: {', '.join(ops)}; kernels {[k[:60] for k in kernels[:3]]}")
    return detail
