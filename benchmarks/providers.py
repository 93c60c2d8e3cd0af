"""What can run: `Env` (importable packages, versions, device facts that go into every CSV
line) and the providers, each a callable built per row or a reason it does not apply.

Gated norm (`provider_fn`), f(x, z, w, b) -> out:
  ours     torch_ops.layernorm_fn: torch.ops.gatednorm.gated_norm_fwd for the forward,
           gated_norm (autograd -> gated_norm_bwd) for forward+backward
  triton   FLA fla.modules.layernorm_gated.layernorm_fn (Tri Dao's kernel, as mamba_ssm):
           layernorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None,
                        norm_before_gate=True, is_rms_norm=False)   silu only, group <= 64 KB
  fng      FLA fla.modules.fused_norm_gate.rms_norm_gated / layer_norm_gated:
           rms_norm_gated(x, g, weight, bias, activation='swish', residual=None,
                          prenorm=False, residual_in_fp32=False, eps=1e-6)
           norm then gate only, gate required, no groups, row <= 64 KB
  eager    torch_ops.gated_norm_ref (eager PyTorch, fp32 math)
  compile  torch.compile(gated_norm_ref, dynamic=False), compiled afresh per row
           (eager and compile are n/a when torch_ops does not import)
"""
from __future__ import annotations

import datetime
import importlib
import platform

import torch

from .cases import Case
from .common import err


class Env:
    """What is importable, and the versions that go into every CSV line."""

    def __init__(self, device: torch.device, want_fla: bool):
        self.device = device
        self.ours = self.ours_err = None
        try:
            import torch_ops
            self.ours = torch_ops
        except Exception as e:  # not built yet, or broken
            self.ours_err = "torch_ops: " + err(e)
        self.ref = self.ours.gated_norm_ref if self.ours is not None else None
        self.lg = self.fng = None
        self.lg_err = self.fng_err = "fla not imported on CPU (Triton peers run on CUDA only)"
        self.fla_version = ""
        if want_fla:
            self.lg, self.lg_err = self._mod(["fla.modules.layernorm_gated", "fla.modules.norm.layernorm_gated"])
            self.fng, self.fng_err = self._mod(["fla.modules.fused_norm_gate", "fla.modules.norm.fused_norm_gate"])
            try:
                import fla
                self.fla_version = getattr(fla, "__version__", "")
            except Exception:
                pass
        try:
            import triton
            self.triton_version = triton.__version__
        except Exception:
            self.triton_version = ""
        self.torch_version = torch.__version__
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if device.type == "cuda":
            p = torch.cuda.get_device_properties(device)
            self.device_name = p.name
            self.l2_bytes = int(getattr(p, "L2_cache_size", 0) or 50 * 2 ** 20)
        else:
            self.device_name = f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"
            self.l2_bytes = 0

    @staticmethod
    def _mod(names):
        why = None
        for n in names:
            try:
                return importlib.import_module(n), None
            except Exception as e:
                why = why or err(e)
        return None, why

    def has_cuda_kernels(self) -> bool:
        try:
            return bool(self.ours.has_cuda_kernels())
        except Exception:
            return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- providers

def _act_name_fng(act):
    return "swish" if act in ("silu", "swish") else act


def provider_fn(name: str, c: Case, env: Env):
    """-> (f(x, z, w, b) -> out, None) or (None, reason it does not apply)."""
    eps, g, nbg, rms, act = c.eps, c.group, c.nbg, c.rms, c.act
    if name == "ours":
        if env.ours is None:
            return None, env.ours_err
        if env.device.type == "cuda" and not env.has_cuda_kernels():
            return None, "torch_ops built without CUDA kernels"
        fn = env.ours.layernorm_fn  # gated_norm_fwd, or gated_norm when grads are needed

        def f(x, z, w, b):
            return fn(x, w, b, z=z, eps=eps, group_size=g, norm_before_gate=nbg, is_rms_norm=rms, activation=act)
        return f, None
    if name == "triton":
        if env.lg is None:
            return None, env.lg_err
        if act not in ("silu", "swish"):
            return None, "no activation argument (silu only)"
        fn = env.lg.layernorm_fn

        def f(x, z, w, b):
            return fn(x, w, b, z=z, eps=eps, group_size=g, norm_before_gate=nbg, is_rms_norm=rms)
        return f, None
    if name == "fng":
        if env.fng is None:
            return None, env.fng_err
        if not c.z:
            return None, "needs a gate"
        if not nbg:
            return None, "norm before gate only"
        if g not in (None, c.N):
            return None, "no groups"
        fn = env.fng.rms_norm_gated if rms else env.fng.layer_norm_gated
        a = _act_name_fng(act)

        def f(x, z, w, b):
            return fn(x, z, w, b, activation=a, eps=eps)
        return f, None
    if name not in ("eager", "compile"):
        raise ValueError(name)
    if env.ref is None:  # eager and compile run torch_ops.gated_norm_ref
        return None, env.ours_err
    ref = env.ref

    def eager(x, z, w, b):
        return ref(x, w, b, z, eps, g, nbg, rms, act)
    if name == "eager":
        return eager, None
    return torch.compile(eager, dynamic=False), None

