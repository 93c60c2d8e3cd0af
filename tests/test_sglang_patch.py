"""`torch_ops.integrations.sglang`: the monkey-patch of sglang's norms, on REAL sglang
releases of both module layouts, installed with pip (no dependencies resolved: the release plus
the few pure-python packages that `import sglang` and the patched modules need):

- v0.5.16+ layout (`sglang.kernels.ops.attention.fla.*`): sglang 0.5.23
- v0.5.15- layout (`sglang.srt.layers.attention.fla.*`): sglang 0.5.15.post1 (with the
  transformers 5.12.1 it pins: its `qwen3_asr` config clashes with newer transformers)

into `~/.cache/gatednorm-test/sglang-<version>` (GATEDNORM_TEST_CACHE overrides the folder;
~340 MB each on disk). A cold install of both takes ~65 s: while the cache is cold these tests
are marked `slow` (deselected by `run.sh test`; `pytest -m slow tests/test_sglang_patch.py`
fills the cache), once it is warm they run by default (~55 s for the whole file). No network:
they are skipped with pip's reason.

Each release is imported in its own subprocess, which runs this file as a script
(`python tests/test_sglang_patch.py --check <layout>`): it builds sglang's modules (live
instances, before the patch), patches, runs sglang's own functions and modules on the CPU and
compares them with `torch_ops.gated_norm_ref` (sglang's unpatched functions are Triton kernels:
they do not run on a CPU; on CUDA the unpatched outputs are compared too), records every
dispatched op with a TorchDispatchMode (each call must reach `torch.ops.gatednorm`), checks the
importers' bindings, idempotency and that unpatch() restores every original object (`is`). The
RMSNorm family's patched `forward_cuda` (sglang.srt.layers.layernorm) is checked against
sglang's own `forward_native` by `sglang_addnorm_checks.py`, in the same subprocess. It prints
one JSON line; the tests below assert on it. The patch's guards (unknown layout, drifted
signatures, NPU, a build without CUDA kernels) run on small fake `sglang` packages; the launcher
runs for real.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GATEDNORM_TEST_CACHE", Path.home() / ".cache" / "gatednorm-test"))

# What `import sglang` and the patched modules import beyond torch / triton / numpy / pydantic /
# transformers (found by importing them one missing module at a time; all pure Python or small
# wheels). Pinned: a new release of one of them could need more. torchvision is added below,
# matched to the installed torch, unless it is importable already.
COMMON_DEPS = (
    "aiohappyeyeballs==2.7.1", "aiohttp==3.14.5", "aiosignal==1.4.0", "anyio==4.12.1",
    "apache-tvm-ffi==0.1.15.post2", "attrs==26.1.0", "certifi==2026.10.18", "charset-normalizer==3.5.2",
    "compressed-tensors==0.20.0", "dill==0.4.1", "einops==0.8.2", "fastapi==0.165.0", "frozenlist==1.8.0",
    "gguf==0.19.0", "h11==0.16.0", "httpcore==1.0.9", "httpx==0.28.1", "idna==3.20", "ipython==9.18.1",
    "loguru==0.7.3", "msgspec==0.22.0", "multidict==7.2.1", "openai==3.54.0", "opentelemetry-api==1.45.2",
    "orjson==3.13.0", "partial-json-parser==0.2.1.1.post7", "propcache==0.5.4", "psutil==7.2.2",
    "pybase64==1.5.1", "pyzmq==27.3.0", "requests==2.34.2", "sentencepiece==0.2.3", "sniffio==1.3.1",
    "starlette==1.10.0", "traitlets==5.16.1", "urllib3==2.8.0", "uvicorn==0.54.0", "yarl==1.25.1",
)
RELEASES = {
    # layout: (sglang release, extra pins)
    "kernels": ("0.5.23", ()),
    "srt": ("0.5.15.post1", ("transformers==5.12.1", "tokenizers==0.22.2", "huggingface-hub==1.33.0")),
}
LAYOUT_PACKAGE = {"kernels": "sglang.kernels.ops.attention.fla", "srt": "sglang.srt.layers.attention.fla"}


# =============================================================================================
# The check script: runs in a subprocess with one sglang release first on sys.path
# =============================================================================================

def _check_main(layout: str) -> dict:  # noqa: C901  (one linear script)
    import importlib

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import sglang_addnorm_checks as addnorm_checks  # tests/ is sys.path[0] of this script
    import torch_ops
    from torch_ops.integrations import sglang as gn

    addnorm_checks.install_sgl_kernel_stub()  # a GPU without sgl_kernel: see that module
    if not torch_ops.has_cuda_kernels():
        # patch() replaces forward_cuda only with a build that has CUDA kernels (the skip is
        # checked by test_forward_cuda_needs_cuda_kernels); here forward_cuda is called directly
        # with CPU tensors, so pretend
        gn.checks.has_cuda_kernels = lambda: True
    results: dict = {}
    pkg = LAYOUT_PACKAGE[layout]
    U = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24}

    def check(name):
        def run(fn):
            try:
                detail = fn()
                results[name] = {"ok": True, "detail": detail or ""}
            except Skip as s:
                results[name] = {"ok": None, "detail": str(s)}
            except Exception:  # noqa: BLE001
                results[name] = {"ok": False, "detail": traceback.format_exc()[-3000:]}
            return fn
        return run

    class Skip(Exception):
        pass

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    def via_gatednorm(fn, *args, **kwargs):
        """Run fn under the recorder; it must dispatch at least one torch.ops.gatednorm op."""
        with Recorder() as rec:
            out = fn(*args, **kwargs)
        ours = [o for o in rec.ops if o.startswith("gatednorm::")]
        assert ours, f"no torch.ops.gatednorm op dispatched; ops: {rec.ops}"
        return out, ours

    def f64(t):
        return None if t is None else t.detach().double()

    def ref(x, w, b, z, eps, group_size=None, nbg=True, rms=False, act="swish"):
        return torch_ops.gated_norm_ref(f64(x), f64(w), f64(b), f64(z), eps, group_size, nbg, rms, act)

    def close(a, e, dtype, n, what):
        tol = 2 * U[dtype] + 2.0 ** -24 * (32 + 8 * math.sqrt(n))
        e = e.double()
        assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        assert a.dtype == dtype, f"{what}: dtype {a.dtype} != {dtype}"
        if e.numel() == 0:
            return
        atol = tol * max(e.square().mean().sqrt().item(), 1e-30)
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")

    def inputs(m, n, dtype, bias=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(m, n, generator=g, dtype=torch.float64).to(dtype)
        z = (torch.rand(m, n, generator=g, dtype=torch.float64) * 6 - 3).to(dtype)
        w = (1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)).to(dtype)
        b = (0.5 * torch.randn(n, generator=g, dtype=torch.float64)).to(dtype) if bias else None
        return x, z, w, b

    # ---- the modules, and every patch target's original object, before patch() ----------------
    lg = importlib.import_module(f"{pkg}.layernorm_gated")
    fg = importlib.import_module(f"{pkg}.fused_norm_gate")
    modules, originals, where = {}, {}, {}
    for t in gn.targets.TARGETS:
        name = t.module.format(fla=pkg)
        if name not in modules:
            try:
                modules[name] = importlib.import_module(name)
            except Exception:  # noqa: BLE001  (patch() reports it)
                modules[name] = None
        holder, attr = modules[name], t.name
        if holder is not None and "." in attr:  # "Class.method"
            holder, attr = getattr(holder, attr.split(".")[0], None), attr.split(".")[1]
        if holder is not None and hasattr(holder, attr):
            where[f"{name}.{t.name}"] = (holder, attr)
            originals[f"{name}.{t.name}"] = getattr(holder, attr)

    def bound(key):
        return getattr(*where[key])
    from sglang.srt.runtime_context import get_parallel
    mixer2 = modules["sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated"]
    real_use_cpu = (lg._use_cpu, fg._use_cpu)
    cuda = torch.cuda.is_available() and torch_ops.has_cuda_kernels()

    # live instances, built before the patch (as sglang builds them)
    torch.manual_seed(0)
    hv, v = 4, 128
    qwen_norm = lg.RMSNorm(v, eps=1e-6, group_size=None, norm_before_gate=True, dtype=torch.bfloat16)
    ln_norm = lg.LayerNorm(96, eps=1e-5, group_size=32, norm_before_gate=False)
    fused_norm = fg.FusedRMSNormGated(64, eps=1e-5, activation="sigmoid")
    for mod in (qwen_norm, ln_norm, fused_norm):
        with torch.no_grad():
            for p in mod.parameters():
                p.copy_(1 + 0.5 * torch.randn_like(p) if p.dim() and p is mod.weight else 0.3 * torch.randn_like(p))
    with get_parallel().override(tp_size=1, tp_rank=0, attn_tp_size=1, attn_tp_rank=0):
        mixer = mixer2.Mixer2RMSNormGated(64, 2, use_rms_norm=True, eps=1e-6)
    with torch.no_grad():
        mixer.weight.copy_(1 + 0.5 * torch.randn(64))
    # sglang resolves _forward_method to forward_cuda on CUDA (at construction or first call);
    # pin it here as sglang does there, before the patch
    mixer._forward_method = mixer.forward_cuda
    cached_forward = mixer._forward_method
    # sglang's RMSNorm family (sglang_addnorm_checks.py): live instances, before the patch
    ln = modules.get("sglang.srt.layers.layernorm")
    addnorm = None if ln is None else addnorm_checks.AddNormChecks(ln, gn, ["cpu", "cuda"] if cuda else ["cpu"], Skip)

    # CUDA: sglang's own (Triton) outputs before the patch, for the unpatched-vs-patched comparison
    cuda_cases = {}
    if cuda:
        xc, zc, wc, bc = (t.cuda() for t in inputs(33, 128, torch.bfloat16, bias=True))
        for key, (rms, nbg, gs, act) in {"rms_after": (True, True, None, "swish"),
                                         "ln_groups_before": (False, False, 32, "sigmoid")}.items():
            cuda_cases[key] = ((rms, nbg, gs, act), lg.rms_norm_gated(
                x=xc, weight=wc, bias=None if rms else bc, z=zc, eps=1e-6, group_size=gs,
                norm_before_gate=nbg, is_rms_norm=rms, activation=act).clone())
        xg = xc.clone()
        cuda_cases["fused"] = fg.rms_norm_gated(xg, zc, wc, None, "sigmoid", None, False, False, 1e-6).clone()

    # simulate an AMX CPU (sglang's CPU path): patch() must turn the flag off, unpatch() back on
    lg._use_cpu = fg._use_cpu = True
    originals[f"{pkg}.layernorm_gated._use_cpu"] = originals[f"{pkg}.fused_norm_gate._use_cpu"] = True
    where[f"{pkg}.layernorm_gated._use_cpu"], where[f"{pkg}.fused_norm_gate._use_cpu"] = (lg, "_use_cpu"), (fg, "_use_cpu")

    report = gn.patch()
    results["report"] = report.as_dict()
    after_first = {k: bound(k) for k in originals}

    # ---- bindings ---------------------------------------------------------------------------------
    @check("bindings")
    def _():
        assert gn.is_patched()
        assert lg._layer_norm_fwd is gn.layer_norm_fwd and lg.rms_norm_gated is gn.rms_norm_gated
        assert lg.LayerNormFn is gn.LayerNormFn and lg.layernorm_fn is gn.layernorm_fn
        assert fg.rms_norm_gated is gn.fused_rms_norm_gated and fg.layer_norm_gated_fwd is gn.layer_norm_gated_fwd
        assert fg.LayerNormGatedFunction is gn.LayerNormGatedFunction
        assert lg._use_cpu is False and fg._use_cpu is False
        assert mixer2.rms_norm_gated is lg.rms_norm_gated
        seen = ["mixer2"]
        kda = modules.get(f"{pkg}.kda")
        if kda is not None:
            assert kda.layer_norm_gated_fwd is fg.layer_norm_gated_fwd
            seen.append("kda")
        for name, attrs in {"bailing_moe_linear": {"layernorm_fn": lg.layernorm_fn},
                            "qwen3_5": {"_layer_norm_fwd": lg._layer_norm_fwd}}.items():
            mod = modules.get(f"sglang.srt.models.{name}")
            for attr, obj in attrs.items():
                if mod is not None and hasattr(mod, attr):
                    assert getattr(mod, attr) is obj, f"{name}.{attr} is not the patched object"
                    seen.append(f"{name}.{attr}")
        for name in ("qwen3_next", "qwen3_5", "jet_nemotron", "bailing_moe_linear"):
            mod = modules.get(f"sglang.srt.models.{name}")
            if mod is not None:
                assert mod.RMSNormGated is lg.RMSNorm
                seen.append(f"{name}.RMSNormGated")
        for name in ("qwen3_next", "kimi_linear", "kimi_k3", "glm5_next"):
            mod = modules.get(f"sglang.srt.models.{name}")
            if mod is not None:
                assert mod.FusedRMSNormGated is fg.FusedRMSNormGated
                seen.append(f"{name}.FusedRMSNormGated")
        return ", ".join(seen)

    # ---- the layernorm_gated family -------------------------------------------------------------
    @check("layer_norm_fwd")
    def _():
        ops = set()
        for m, n, dtype, gs, nbg, rms, act, has_z, bias in [
                (7, 64, torch.float32, None, True, True, "swish", True, False),
                (5, 96, torch.bfloat16, 32, False, False, "sigmoid", True, True),
                (6, 48, torch.float16, 16, True, False, "silu", False, True),
                (0, 64, torch.bfloat16, None, True, True, "swish", True, False)]:
            x, z, w, b = inputs(m, n, dtype, bias)
            z = z if has_z else None
            (out, mean, rstd), o = via_gatednorm(lg._layer_norm_fwd, x, w, b, 1e-6, z=z, group_size=gs,
                                                 norm_before_gate=nbg, is_rms_norm=rms, activation=act)
            ops.update(o)
            close(out, ref(x, w, b, z, 1e-6, gs, nbg, rms, act), dtype, gs or n, f"out {dtype} m={m}")
            ngroups = n // (gs or n)
            assert (mean is None) == rms and rstd.dtype == torch.float32 and rstd.shape == (ngroups * m,)
            # statistics: element g * M + r (the Triton layout)
            v = f64(x) * (torch.nn.functional.silu(f64(z)) if act != "sigmoid" else torch.sigmoid(f64(z))) \
                if (z is not None and not nbg) else f64(x)
            vg = v.reshape(m, ngroups, gs or n)
            mu = torch.zeros(m, ngroups, dtype=torch.float64) if rms else vg.mean(-1)
            rs = ((vg - mu[..., None]).square().mean(-1) + 1e-6).rsqrt()
            torch.testing.assert_close(rstd.double(), rs.t().reshape(-1), rtol=1e-5, atol=0)
            if not rms:
                torch.testing.assert_close(mean.double(), mu.t().reshape(-1), rtol=1e-5, atol=1e-6)
        # out= (row-strided view of a NaN-filled buffer): written in place, the rest untouched
        x, z, w, _ = inputs(9, 64, torch.bfloat16)
        buf = torch.full((9, 128), float("nan"), dtype=torch.bfloat16)
        (out, mean, rstd), o = via_gatednorm(lg._layer_norm_fwd, x, w, None, 1e-6, z=z, out=buf[:, :64],
                                             is_rms_norm=True)
        ops.update(o)
        assert out.data_ptr() == buf.data_ptr() and torch.isnan(buf[:, 64:]).all() and mean is None
        close(buf[:, :64], ref(x, w, None, z, 1e-6, rms=True), torch.bfloat16, 64, "out=")
        return sorted(ops)

    @check("rms_norm_gated")
    def _():
        x, z, w, b = inputs(6, 64, torch.bfloat16, bias=True)
        x3, z3 = x.view(2, 3, 64), z.view(2, 3, 64)
        y, ops = via_gatednorm(lg.rms_norm_gated, x=x3, weight=w, bias=b, z=z3, eps=1e-5, group_size=32,
                               norm_before_gate=False)  # default: LayerNorm
        close(y, ref(x3, w, b, z3, 1e-5, 32, False, False), torch.bfloat16, 32, "rms_norm_gated")
        try:
            lg.rms_norm_gated(x, w, b)
        except TypeError:
            pass
        else:
            raise AssertionError("rms_norm_gated accepted positional arguments (sglang's is keyword-only)")
        return sorted(set(ops))

    @check("z_3d")  # sglang >= 0.5.16: [T*H, N] rows with a [T, H, N] gate (a fused projection's slice)
    def _():
        if layout != "kernels":
            raise Skip("3-D gates are a v0.5.16+ feature")
        t, h, n = 5, 3, 64
        x, _, w, _ = inputs(t * h, n, torch.bfloat16)
        proj = torch.randn(t, h, 2 * n, dtype=torch.bfloat16)
        z3 = proj[..., n:]  # rows strided
        y, ops = via_gatednorm(lg.rms_norm_gated, x=x, weight=w, bias=None, z=z3, eps=1e-6, is_rms_norm=True)
        close(y, ref(x, w, None, z3.reshape(t * h, n), 1e-6, rms=True), torch.bfloat16, n, "3-D z")
        (y2, _, _), _ = via_gatednorm(lg._layer_norm_fwd, x, w, None, 1e-6, z=z3, is_rms_norm=True)
        assert torch.equal(y, y2)
        return sorted(set(ops))

    @check("quant_heads")  # newer sglang (0.5.23): qwen3_5's FP8 out_proj path through _layer_norm_fwd
    def _():
        qwen35 = modules.get("sglang.srt.models.qwen3_5")
        if qwen35 is None or not hasattr(qwen35, "_layer_norm_fwd"):
            raise Skip("this release has no quant_heads path")
        t, h, n = 4, 3, 128
        x, z, w, _ = inputs(t * h, n, torch.bfloat16)
        ((q, s), mean, rstd), ops = via_gatednorm(qwen35._layer_norm_fwd, x, w, None, 1e-6, z=z,
                                                  is_rms_norm=True, activation="swish", quant_heads=h)
        assert q.dtype == torch.float8_e4m3fn and q.shape == (t, h * n) and s.shape == (t, 1) and mean is None
        y, _, _ = qwen35._layer_norm_fwd(x, w, None, 1e-6, z=z, is_rms_norm=True)
        yt = y.float().reshape(t, h * n)  # the kernel's formula, applied to the unquantised output
        s_ref = torch.maximum(yt.abs().amax(1, keepdim=True), torch.tensor(1e-10)) / 448.0
        q_ref = torch.clamp(yt * (1.0 / s_ref), -448.0, 448.0).to(torch.float8_e4m3fn)
        assert torch.equal(s, s_ref) and torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
        close(y, ref(x, w, None, z, 1e-6, rms=True), torch.bfloat16, n, "quant_heads' norm")
        return sorted(set(ops))

    @check("layernorm_fn")
    def _():
        x, z, w, b = inputs(8, 96, torch.float32, bias=True)
        y, ops = via_gatednorm(lg.LayerNormFn.apply, x, w, b, z, 1e-6, 48, True, False, "sigmoid")
        close(y, ref(x, w, b, z, 1e-6, 48, True, False, "sigmoid"), torch.float32, 48, "LayerNormFn.apply")
        y2, o2 = via_gatednorm(lg.layernorm_fn, x.view(2, 4, 96), w, None, eps=1e-6, is_rms_norm=True)
        close(y2, ref(x.view(2, 4, 96), w, None, None, 1e-6, rms=True), torch.float32, 96, "layernorm_fn")
        # bailing_moe_linear's per-head q/k RMS (no gate) through its own binding
        bailing = modules.get("sglang.srt.models.bailing_moe_linear")
        if bailing is not None:
            y3, _ = via_gatednorm(bailing.layernorm_fn, x, w, None, eps=1e-6, is_rms_norm=True)
            close(y3, ref(x, w, None, None, 1e-6, rms=True), torch.float32, 96, "bailing layernorm_fn")
        return sorted(set(ops) | set(o2))

    @check("modules")  # built before the patch
    def _():
        x, z, _, _ = inputs(3 * hv, v, torch.bfloat16)  # qwen3_next: [T*HV, V] with z of the same shape
        y, ops = via_gatednorm(qwen_norm, x, z)
        close(y.detach(), ref(x, qwen_norm.weight, None, z, 1e-6, None, True, True), torch.bfloat16, v, "RMSNorm")
        x, z, _, _ = inputs(5, 96, torch.float32)
        y, o2 = via_gatednorm(ln_norm, x, z)
        close(y.detach(), ref(x, ln_norm.weight, ln_norm.bias, z, 1e-5, 32, False, False), torch.float32, 32,
              "LayerNorm")
        out = [sorted(set(ops) | set(o2))]
        bailing = modules.get("sglang.srt.models.bailing_moe_linear")
        if bailing is not None and hasattr(bailing, "BailingGroupRMSNormGate"):
            with get_parallel().override(tp_size=1, tp_rank=0, attn_tp_size=1, attn_tp_rank=0):
                bn = bailing.BailingGroupRMSNormGate(96, eps=1e-6, group_size=32, norm_before_gate=True)
            with torch.no_grad():
                bn.weight.copy_(1 + 0.5 * torch.randn(96))
            y, _ = via_gatednorm(bn, x, z)
            close(y.detach(), ref(x, bn.weight, None, z, 1e-6, 32, True, True, "sigmoid"), torch.float32, 32,
                  "BailingGroupRMSNormGate")
            out.append("BailingGroupRMSNormGate")
        return out

    @check("mixer2")  # Mixer2RMSNormGated with sglang's cached forward_cuda, gate as a torch.split view
    def _():
        assert mixer._forward_method is cached_forward
        t = 6
        proj = torch.randn(t, 64 + 64 + 16, dtype=torch.bfloat16)
        gate, x, _ = torch.split(proj, [64, 64, 16], dim=-1)
        assert gate.stride(0) == 144
        y, ops = via_gatednorm(mixer, x, gate)
        close(y.detach(), ref(x, mixer.weight, None, gate, 1e-6, 32, False, True), torch.bfloat16, 32, "Mixer2")
        return sorted(set(ops))

    # ---- the fused_norm_gate family (in place into x) -------------------------------------------
    @check("fused_rms_norm_gated")
    def _():
        ops = set()
        x, g, w, _ = inputs(10, 64, torch.bfloat16)
        x0 = x.clone()
        y, o = via_gatednorm(fg.rms_norm_gated, x, g, w, None, "sigmoid", None, False, False, 1e-6)
        ops.update(o)
        assert y.data_ptr() == x.data_ptr(), "not written into x"
        close(y, ref(x0, w, None, g, 1e-6, None, True, True, "sigmoid"), torch.bfloat16, 64, "in place")
        # residual + prenorm: the fp32 sum is normalised; residual_out in residual's dtype
        x, g, w, _ = inputs(10, 64, torch.bfloat16, seed=1)
        res = torch.randn(10, 64, dtype=torch.bfloat16)
        h = x.float() + res.float()
        (y, r), o = via_gatednorm(fg.rms_norm_gated, x, g, w, None, "swish", res, True, False, 1e-6)
        ops.update(o)
        assert y.data_ptr() == x.data_ptr() and r.dtype == torch.bfloat16 and torch.equal(r, h.to(torch.bfloat16))
        close(y, ref(h, w, None, g, 1e-6, None, True, True), torch.bfloat16, 64, "residual")
        # residual_in_fp32 without residual: residual_out = x (before the write) in fp32
        x, g, w, _ = inputs(4, 64, torch.bfloat16, seed=2)
        x0 = x.clone()
        (y, r), _ = via_gatednorm(fg.rms_norm_gated, x, g, w, None, "swish", None, True, True, 1e-6)
        assert r.dtype == torch.float32 and torch.equal(r, x0.float())
        # prenorm without residual: sglang returns (y, x), x holding y
        x, g, w, _ = inputs(4, 64, torch.bfloat16, seed=3)
        (y, r), _ = via_gatednorm(fg.rms_norm_gated, x, g, w, None, "swish", None, True, False, 1e-6)
        assert r.data_ptr() == y.data_ptr() == x.data_ptr()
        # LayerNorm with bias through LayerNormGatedFunction
        x, g, w, b = inputs(7, 64, torch.float32, bias=True, seed=4)
        x0 = x.clone()
        y, o = via_gatednorm(fg.LayerNormGatedFunction.apply, x, g, w, b, "swish", None, 1e-6, False, False, False)
        ops.update(o)
        close(y, ref(x0, w, b, g, 1e-6, None, True, False), torch.float32, 64, "LayerNormGatedFunction")
        # layer_norm_gated_fwd with out_dtype: a new tensor, x untouched, one rounding
        x, g, w, _ = inputs(7, 64, torch.bfloat16, seed=5)
        x0 = x.clone()
        (y, mean, rstd, r), o = via_gatednorm(fg.layer_norm_gated_fwd, x, g, w, None, "sigmoid", 1e-5,
                                              out_dtype=torch.float32, is_rms_norm=True)
        assert torch.equal(x, x0) and r is x and mean is None and rstd.shape == (7,)
        close(y, ref(x0, w, None, g, 1e-5, None, True, True, "sigmoid"), torch.float32, 64, "out_dtype")
        kda = modules.get(f"{pkg}.kda")
        if kda is not None:
            x, g, w, _ = inputs(5, 64, torch.bfloat16, seed=6)
            x0 = x.clone()
            y, o = via_gatednorm(kda.rms_norm_gated, x, g, w, None, "sigmoid")
            close(y, ref(x0, w, None, g, 1e-6, None, True, True, "sigmoid"), torch.bfloat16, 64, "kda.rms_norm_gated")
        return sorted(ops)

    @check("fused_module")  # FusedRMSNormGated as kimi_linear builds it, built before the patch
    def _():
        t, h, d = 5, 3, 64
        x = torch.randn(1, t, h, d, dtype=torch.float32)
        g_proj = torch.randn(1, t, h * d + 32)
        gate = g_proj[..., : h * d].unflatten(-1, (-1, d))  # ... (h d) -> ... h d, rows strided
        x0 = x.clone()
        y, ops = via_gatednorm(fused_norm, x, gate)
        assert y.data_ptr() == x.data_ptr()
        close(y.detach(), ref(x0, fused_norm.weight, None, gate, 1e-5, None, True, True, "sigmoid"), torch.float32,
              d, "FusedRMSNormGated")
        return sorted(set(ops))

    @check("mamba_ops")  # the vLLM copy of v0.5.15 and older (positional, RMS, silu)
    def _():
        mod = modules.get("sglang.srt.layers.attention.mamba.ops.layernorm_gated")
        if mod is None:
            raise Skip("not in this release")
        x, z, w, _ = inputs(6, 64, torch.bfloat16)
        y, ops = via_gatednorm(mod.rms_norm_gated, x, w, None, z, 1e-6, 32, False)
        close(y, ref(x, w, None, z, 1e-6, 32, False, True, "silu"), torch.bfloat16, 32, "mamba ops")
        return sorted(set(ops))

    @check("cuda_unpatched_vs_patched")
    def _():
        if not cuda:
            raise Skip("needs a GPU and a CUDA build of gatednorm")
        xc, zc, wc, bc = (t.cuda() for t in inputs(33, 128, torch.bfloat16, bias=True))
        for key, ((rms, nbg, gs, act), before) in ((k, c) for k, c in cuda_cases.items() if k != "fused"):
            after = lg.rms_norm_gated(x=xc, weight=wc, bias=None if rms else bc, z=zc, eps=1e-6, group_size=gs,
                                      norm_before_gate=nbg, is_rms_norm=rms, activation=act)
            close(after.cpu(), before.cpu().double(), torch.bfloat16, gs or 128, f"cuda {key}")
        xg = xc.clone()
        after = fg.rms_norm_gated(xg, zc, wc, None, "sigmoid", None, False, False, 1e-6)
        close(after.cpu(), cuda_cases["fused"].cpu().double(), torch.bfloat16, 128, "cuda fused")

    # ---- sglang's RMSNorm family: the patched forward_cuda (sglang_addnorm_checks.py) -------------
    if addnorm is None:
        why = report.skipped.get("sglang.srt.layers.layernorm", "not importable")
        for name in addnorm_checks.CHECKS:
            results[name] = {"ok": False, "detail": f"sglang.srt.layers.layernorm: {why}"}
    else:
        for name, fn in addnorm.checks().items():
            check(name)(fn)

    # ---- idempotency, unpatch, re-patch ---------------------------------------------------------
    @check("idempotent")
    def _():
        again = gn.patch()
        assert again.patched == [], again.patched
        assert sorted(again.already_patched) == sorted(report.patched)
        for k, obj in after_first.items():
            assert bound(k) is obj, f"{k} changed"

    @check("unpatch")
    def _():
        restored = gn.unpatch()
        assert sorted(restored) == sorted(report.patched), (restored, report.patched)
        assert not gn.is_patched()
        for k, obj in originals.items():
            assert bound(k) is obj, f"{k} not restored"
        assert mixer._forward_method is cached_forward
        if addnorm is not None:
            addnorm.check_restored()
        assert gn.unpatch() == []  # nothing left
        # a second cycle
        r2 = gn.patch()
        assert sorted(r2.patched) == sorted(report.patched)
        assert sorted(gn.unpatch()) == sorted(report.patched)
        for k, obj in originals.items():
            assert bound(k) is obj, f"{k} not restored (2nd)"
        if addnorm is not None:
            addnorm.check_restored()

    lg._use_cpu, fg._use_cpu = real_use_cpu
    return results


# =============================================================================================
# pytest side
# =============================================================================================

if __name__ != "__main__":
    import pytest
    from sglang_addnorm_checks import CHECKS as ADDNORM_CHECKS

    def _torchvision_pin():
        import importlib.util
        if importlib.util.find_spec("torchvision") is not None:
            return ()
        import torch
        major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
        # pillow: torchvision's own dependency (installed --no-deps here).
        return (f"torchvision==0.{minor + 15}.*", "pillow==13.0.0") if major == 2 else ()

    def _requirements(layout: str) -> list:
        version, extra = RELEASES[layout]
        return [f"sglang=={version}", *COMMON_DEPS, *extra, *_torchvision_pin()]

    def _cached(layout: str) -> bool:
        marker = CACHE / f"sglang-{RELEASES[layout][0]}" / ".gatednorm-complete"
        return marker.exists() and marker.read_text() == "\n".join(_requirements(layout))

    # A cold install (both releases) takes ~65 s here: those tests are `slow` until the cache is
    # warm (`pytest -m slow tests/test_sglang_patch.py` fills it), then ~55 s in all, in the default run.
    SLOW_IF_COLD = pytest.mark.slow if not all(_cached(layout) for layout in RELEASES) else (lambda test: test)

    def _install(layout: str) -> tuple[Path | None, str, float]:
        """(folder or None, reason if None, seconds spent installing: 0 when cached)."""
        version, _ = RELEASES[layout]
        reqs = _requirements(layout)
        target = CACHE / f"sglang-{version}"
        if _cached(layout):
            return target, "", 0.0
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = CACHE / f".sglang-{version}.tmp-{os.getpid()}"
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                               "--retries", "1", "--timeout", "20", "--target", str(tmp), *reqs], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            subprocess.run(["rm", "-rf", str(tmp)])
            tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            return None, f"pip could not install sglang {version} (offline?): {tail}", time.time() - t0
        (tmp / ".gatednorm-complete").write_text("\n".join(reqs))
        if target.exists():
            subprocess.run(["rm", "-rf", str(target)])
        try:
            os.rename(tmp, target)
        except OSError:  # a concurrent run won the race
            subprocess.run(["rm", "-rf", str(tmp)])
        return target, "", time.time() - t0

    def _env(*paths) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO)])
        env.pop("GATEDNORM_SGLANG_PATCH", None)  # the launcher sets it itself
        env["PYTHONWARNINGS"] = "ignore"
        return env

    class _Job:
        def __init__(self, args, env):
            self.proc = subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            self.result = None

        def wait(self, timeout=600):
            if self.result is None:
                out, err = self.proc.communicate(timeout=timeout)
                self.result = (self.proc.returncode, out, err)
            return self.result

    @pytest.fixture(scope="module")
    def sglang_runs():
        """Installs both releases (cached), then starts every subprocess at once (they are
        independent: the two releases' checks and the launcher runs)."""
        installs = {layout: _install(layout) for layout in RELEASES}
        jobs = {}
        for layout, (path, _, _) in installs.items():
            if path is not None:
                jobs[layout] = _Job([sys.executable, __file__, "--check", layout], _env(path))
        if installs["kernels"][0] is not None:
            jobs["launch_spawn"] = _Job([sys.executable, "-m", "torch_ops.integrations.sglang_launch",
                                         "--gatednorm-dry-run", "--gatednorm-check-spawn"], _env(installs["kernels"][0]))
        if installs["srt"][0] is not None:
            jobs["launch_help"] = _Job([sys.executable, "-m", "torch_ops.integrations.sglang_launch", "--help"],
                                       _env(installs["srt"][0]))
        yield installs, jobs
        for job in jobs.values():
            if job.proc.poll() is None:
                job.proc.kill()

    def _results(sglang_runs, layout) -> dict:
        installs, jobs = sglang_runs
        path, reason, _ = installs[layout]
        if path is None:
            pytest.skip(reason)
        rc, out, err = jobs[layout].wait()
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        assert rc == 0 and lines, f"check subprocess failed (rc {rc}):\n{err[-4000:]}\n{out[-2000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    LAYOUTS = pytest.mark.parametrize("layout", list(RELEASES), ids=[f"sglang-{v}" for v, _ in RELEASES.values()])
    CHECKS = ["bindings", "layer_norm_fwd", "rms_norm_gated", "z_3d", "quant_heads", "layernorm_fn", "modules",
              "mixer2", "fused_rms_norm_gated", "fused_module", "mamba_ops", "cuda_unpatched_vs_patched",
              *ADDNORM_CHECKS, "idempotent", "unpatch"]

    @SLOW_IF_COLD
    @LAYOUTS
    @pytest.mark.parametrize("check", CHECKS)
    def test_sglang_release(sglang_runs, layout, check):
        """One check of the subprocess run on a real sglang release (see _check_main)."""
        res = _results(sglang_runs, layout)[check]
        if res["ok"] is None:
            pytest.skip(res["detail"])
        assert res["ok"], res["detail"]
        if check not in ("bindings", "idempotent", "unpatch", "rmsnorm_bindings", "rmsnorm_fallbacks"):
            ops = json.dumps(res["detail"])
            assert "gatednorm::" in ops, f"no torch.ops.gatednorm op recorded: {ops}"

    @SLOW_IF_COLD
    @LAYOUTS
    def test_report(sglang_runs, layout):
        rep = _results(sglang_runs, layout)["report"]
        version, _ = RELEASES[layout]
        pkg = LAYOUT_PACKAGE[layout]
        assert rep["sglang_version"] == version and rep["layout"] == layout and rep["layout_package"] == pkg
        must = [f"{pkg}.layernorm_gated.{n}" for n in ("_layer_norm_fwd", "rms_norm_gated", "LayerNormFn",
                                                       "layernorm_fn", "_use_cpu")]
        must += [f"{pkg}.fused_norm_gate.{n}" for n in ("layer_norm_gated_fwd", "LayerNormGatedFunction",
                                                        "rms_norm_gated", "_use_cpu")]
        must += ["sglang.srt.layers.attention.mamba.mixer2_rms_norm_gated.rms_norm_gated",
                 f"{pkg}.kda.layer_norm_gated_fwd"]
        if layout == "kernels":
            must += ["sglang.srt.models.bailing_moe_linear.layernorm_fn", "sglang.srt.models.qwen3_5._layer_norm_fwd"]
        else:
            must += [f"sglang.srt.layers.attention.mamba.ops.layernorm_gated.{n}" for n in ("_layer_norm_fwd",
                                                                                        "rms_norm_gated")]
        assert not set(must) - set(rep["patched"]), set(must) - set(rep["patched"])
        # the RMSNorm family (this build may lack CUDA kernels: the check script pretends it has them)
        must += [f"sglang.srt.layers.layernorm.{c}.forward_cuda" for c in ("RMSNorm", "GemmaRMSNorm")]
        assert not set(must) - set(rep["patched"]), set(must) - set(rep["patched"])
        assert rep["rebound"] >= 3, rep["rebound"]  # the live instances' cached bound methods
        assert "sglang.srt.models.qwen3_next.RMSNormGated" in rep["checked"]
        assert "sglang.srt.models.qwen3_next.FusedRMSNormGated" in rep["checked"]
        # anything else skipped must say why (e.g. v0.5.15's bailing_moe_linear imports vllm on a CPU)
        assert all(isinstance(v, str) and v for v in rep["skipped"].values())

    @SLOW_IF_COLD
    def test_launcher_spawned_children_are_patched(sglang_runs):
        """`sglang_launch` patches, and a child started as sglang starts its schedulers
        (multiprocessing spawn) is patched too (it re-imports the launcher as __mp_main__)."""
        installs, jobs = sglang_runs
        if installs["kernels"][0] is None:
            pytest.skip(installs["kernels"][1])
        rc, out, err = jobs["launch_spawn"].wait()
        assert rc == 0, err[-4000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["patched"] and report["spawned_child"]["patched"] is True, report

    @SLOW_IF_COLD
    def test_launcher_forwards_to_sglang(sglang_runs):
        """Arguments other than --gatednorm-* go to `python -m sglang.launch_server` (here --help)."""
        installs, jobs = sglang_runs
        if installs["srt"][0] is None:
            pytest.skip(installs["srt"][1])
        rc, out, err = jobs["launch_help"].wait()
        assert rc == 0, err[-4000:]
        assert "--model-path" in out and "gatednorm: sglang 0.5.15.post1" in err

    def test_launcher_own_options():
        env = _env()
        cmd = [sys.executable, "-m", "torch_ops.integrations.sglang_launch"]
        p = subprocess.run([*cmd, "--gatednorm-help"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "--gatednorm-dry-run" in p.stdout
        p = subprocess.run([*cmd, "--gatednorm-nope"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "unknown option" in p.stderr

    # ---- the guards, on fake sglang packages (no install needed) --------------------------------

    def _fake_sglang(root: Path, files: dict) -> Path:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    def _run_fake(root: Path, code: str) -> dict:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(root), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-4000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    _FAKE_LG = '''
        import torch
        _is_npu = {npu}
        _use_cpu = False
        def _layer_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,
                            is_rms_norm=False, activation="swish", fp4_heads=0):  # drifted: unknown parameter
            raise NotImplementedError
        def rms_norm_gated(*, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                           is_rms_norm=False, activation="swish"):
            raise NotImplementedError
        class LayerNormFn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True,
                        is_rms_norm=False, activation="swish"):
                raise NotImplementedError
        def layernorm_fn(x, weight, bias, z=None, eps=1e-5, group_size=None, norm_before_gate=True,
                         is_rms_norm=False, activation="swish"):  # drifted: another default
            raise NotImplementedError
    '''

    def test_unknown_layout_raises(tmp_path):
        root = _fake_sglang(tmp_path, {"sglang/__init__.py": "__version__ = '0.4.0'\n"})
        res = _run_fake(root, """
            import json
            from torch_ops.integrations import sglang as gn
            try:
                gn.patch()
                print(json.dumps({"raised": None}))
            except RuntimeError as e:
                print(json.dumps({"raised": str(e), "patched": gn.is_patched()}))
        """)
        assert res["raised"] and "unknown sglang layout" in res["raised"] and not res["patched"]
        assert "v0.5.16" in res["raised"] and "v0.5.15" in res["raised"]

    def test_drifted_signatures_are_skipped(tmp_path):
        root = _fake_sglang(tmp_path, {
            "sglang/__init__.py": "__version__ = '0.9.0'\n",
            "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
        })
        res = _run_fake(root, """
            import json
            from torch_ops.integrations import sglang as gn
            import sglang.kernels.ops.attention.fla.layernorm_gated as lg
            before = (lg._layer_norm_fwd, lg.rms_norm_gated, lg.LayerNormFn, lg.layernorm_fn)
            r = gn.patch()
            ok = lg.rms_norm_gated is gn.rms_norm_gated and lg.LayerNormFn is gn.LayerNormFn
            kept = lg._layer_norm_fwd is before[0] and lg.layernorm_fn is before[3]
            restored = gn.unpatch()
            back = (lg._layer_norm_fwd, lg.rms_norm_gated, lg.LayerNormFn, lg.layernorm_fn) == before
            print(json.dumps({"report": r.as_dict(), "ok": ok, "kept": kept, "restored": restored, "back": back}))
        """)
        rep = res["report"]
        p = "sglang.kernels.ops.attention.fla.layernorm_gated"
        assert res["ok"] and res["kept"] and res["back"]
        assert sorted(rep["patched"]) == sorted([f"{p}.rms_norm_gated", f"{p}.LayerNormFn"])
        assert "fp4_heads" in rep["skipped"][f"{p}._layer_norm_fwd"]
        assert "default" in rep["skipped"][f"{p}.layernorm_fn"]
        assert "sglang.kernels.ops.attention.fla.fused_norm_gate" in rep["absent"]
        assert any("not among the tested releases" in n for n in rep["notes"])

    _FAKE_LAYERNORM = '''
        import torch
        {batch_invariant}
        class RMSNorm(torch.nn.Module):
            def forward_cuda(self, x, residual=None, post_residual_addition=None):
                raise NotImplementedError
        class GemmaRMSNorm(torch.nn.Module):
            def forward_cuda(self, x, residual=None, post_residual_addition=None, scale=1.0):  # drifted
                raise NotImplementedError
    '''

    _FAKE_LAYERNORM_RUN = """
        import os
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU process (a CUDA one with a CPU-only build refuses all)
        import json
        from torch_ops.integrations import sglang as gn
        gn.checks.has_cuda_kernels = lambda: {kernels}
        import sglang.srt.layers.layernorm as ln
        before = (ln.RMSNorm.forward_cuda, ln.GemmaRMSNorm.forward_cuda)
        r = gn.patch()
        rms_patched = ln.RMSNorm.forward_cuda is not before[0]
        gemma_kept = ln.GemmaRMSNorm.forward_cuda is before[1]
        restored = gn.unpatch()
        back = (ln.RMSNorm.forward_cuda, ln.GemmaRMSNorm.forward_cuda) == before
        print(json.dumps({{"report": r.as_dict(), "rms_patched": rms_patched, "gemma_kept": gemma_kept,
                          "restored": restored, "back": back}}))
    """

    @pytest.mark.parametrize("kernels", [False, True], ids=["cpu-only-build", "cuda-build"])
    def test_forward_cuda_needs_cuda_kernels(tmp_path, kernels):
        """The RMSNorm family is replaced only by a build with CUDA kernels (else skipped, with the
        reason); with one, a drifted method signature is left alone and reported."""
        root = _fake_sglang(tmp_path, {
            "sglang/__init__.py": "__version__ = '0.5.23'\n",
            "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
            "sglang/srt/layers/layernorm.py": _FAKE_LAYERNORM.format(
                batch_invariant="def is_batch_invariant_mode_enabled(): return False"),
        })
        res = _run_fake(root, _FAKE_LAYERNORM_RUN.format(kernels=kernels))
        rep, p = res["report"], "sglang.srt.layers.layernorm"
        assert res["back"] and res["gemma_kept"]
        if not kernels:
            assert not res["rms_patched"] and f"{p}.RMSNorm.forward_cuda" not in rep["patched"]
            for c in ("RMSNorm", "GemmaRMSNorm"):
                assert "no CUDA kernels" in rep["skipped"][f"{p}.{c}.forward_cuda"]
        else:
            assert res["rms_patched"] and f"{p}.RMSNorm.forward_cuda" in res["restored"]
            assert "'scale'" in rep["skipped"][f"{p}.GemmaRMSNorm.forward_cuda"]

    def test_forward_cuda_needs_its_module_globals(tmp_path):
        """A layernorm module without the global the replacement reads at call time is not the
        sglang it was written for: left alone, reported."""
        root = _fake_sglang(tmp_path, {
            "sglang/__init__.py": "__version__ = '0.5.23'\n",
            "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=False),
            "sglang/srt/layers/layernorm.py": _FAKE_LAYERNORM.format(batch_invariant=""),
        })
        res = _run_fake(root, _FAKE_LAYERNORM_RUN.format(kernels=True))
        assert not res["rms_patched"] and res["back"]
        assert "is_batch_invariant_mode_enabled" in res["report"]["skipped"][
            "sglang.srt.layers.layernorm.RMSNorm.forward_cuda"]

    def test_npu_refused(tmp_path):
        root = _fake_sglang(tmp_path, {
            "sglang/__init__.py": "__version__ = '0.5.23'\n",
            "sglang/kernels/ops/attention/fla/layernorm_gated.py": _FAKE_LG.format(npu=True),
        })
        res = _run_fake(root, """
            import json
            from torch_ops.integrations import sglang as gn
            import sglang.kernels.ops.attention.fla.layernorm_gated as lg
            f = lg.rms_norm_gated
            try:
                gn.patch()
                print(json.dumps({"raised": None}))
            except RuntimeError as e:
                print(json.dumps({"raised": str(e), "patched": gn.is_patched(), "same": lg.rms_norm_gated is f}))
        """)
        assert res["raised"] and "NPU" in res["raised"] and not res["patched"] and res["same"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        print("RESULT " + json.dumps(_check_main(sys.argv[2])), flush=True)
    else:
        sys.exit(f"usage: {sys.argv[0]} --check <layout>   (run by pytest; see the module docstring)")
