"""What can run: `Env` (importable packages, versions, device facts that go into every CSV
line) and the providers, each a callable built per row or a reason it does not apply.

Gated norm (`provider_fn`), f(x, z, w, b) -> out:
  ours     torch_ops.layernorm_fn: torch.ops.gatednorm.gated_norm_infer for the forward,
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

Fused add + RMSNorm and plain RMSNorm (`norm_provider_fn`), f(x, residual, w) -> (out,
residual_out); the plain family has residual None and returns (out, None):
  ours        torch_ops.fused_add_rms_norm (in place: residual <- x + residual, x <- the
              normalised residual * w; torch.ops.gatednorm.fused_add_rms_norm) / torch_ops.rms_norm
  flashinfer  flashinfer.norm.fused_add_rmsnorm(input, residual, weight, eps) (in place) /
              flashinfer.norm.rmsnorm(input, weight, eps); CUDA only, imported on first use
  eager       torch_ops.add_rms_norm_ref (out of place: h = x + residual rounded to the
              residual's dtype, RMSNorm of h in fp32) / torch_ops.add_rms_norm.rms_norm_ref
  compile     torch.compile of eager, dynamic=False, compiled afresh per row
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
        # the add-norm references; the package's `add_rms_norm` is the function, the module
        # of the same name is reached through the import system
        self.add_ref = self.rms_ref = None
        self.add_ref_err = self.ours_err
        if self.ours is not None:
            try:
                m = importlib.import_module("torch_ops.add_rms_norm")
                self.add_ref, self.rms_ref = m.add_rms_norm_ref, m.rms_norm_ref
            except Exception as e:  # a build older than the add-norm ops
                self.add_ref_err = "torch_ops.add_rms_norm: " + err(e)
        self._fi = None
        self.fi_err = None if device.type == "cuda" else "FlashInfer runs on CUDA only"
        self.fi_version = ""
        self.fi_worked = False  # set by the first call that succeeds (addnorm.py)
        self.lg = self.fng = None
        self.lg_err = self.fng_err = "fla not imported (its Triton peers run on CUDA, for the gated rows)"
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

    def flashinfer(self):
        """-> (flashinfer.norm, None) or (None, why); imported on first use only: the package
        is large, absent on most machines, and JIT-compiles its norm kernels on first call."""
        if self._fi is None and self.fi_err is None:
            try:
                import flashinfer
                import flashinfer.norm
                self._fi = flashinfer.norm
                self.fi_version = getattr(flashinfer, "__version__", "")
            except Exception as e:
                self.fi_err = "flashinfer: " + err(e)
        return self._fi, self.fi_err

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
        fn = env.ours.layernorm_fn  # gated_norm_infer, or gated_norm when grads are needed

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



def norm_provider_fn(name: str, c: Case, env: Env):
    """-> (f(x, residual, w) -> (out, residual_out), None) or (None, reason it does not apply)."""
    eps, add = c.eps, c.family == "addnorm"
    if name == "ours":
        if env.ours is None:
            return None, env.ours_err
        if env.device.type == "cuda" and not env.has_cuda_kernels():
            return None, "torch_ops built without CUDA kernels"
        fused, plain = env.ours.fused_add_rms_norm, env.ours.rms_norm
    elif name == "flashinfer":
        fi, why = env.flashinfer()
        if fi is None:
            return None, why
        fused, plain = fi.fused_add_rmsnorm, fi.rmsnorm
    elif name in ("eager", "compile"):
        if env.add_ref is None:
            return None, env.add_ref_err
        ref_add, ref_rms = env.add_ref, env.rms_ref

        def eager(x, r, w):
            return ref_add(x, r, w, eps) if add else (ref_rms(x, w, eps), None)
        return (eager if name == "eager" else torch.compile(eager, dynamic=False)), None
    else:
        raise ValueError(name)

    if add:
        def f(x, r, w):  # in place: the results are the inputs
            fused(x, r, w, eps)
            return x, r
    else:
        def f(x, r, w):
            return plain(x, w, eps), None
    return f, None
