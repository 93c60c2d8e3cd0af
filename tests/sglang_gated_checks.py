"""The gated-norm part of the check script of tests/test_sglang_patch.py, run in a subprocess
with one real sglang release first on sys.path:

    python tests/sglang_gated_checks.py --check <layout>     (layout: kernels | srt)

It builds sglang's modules (live instances, before the patch), patches, runs sglang's own
functions and modules and compares them with `torch_ops.gated_norm_ref`, records every
dispatched op (each call must reach `torch.ops.gatednorm`; on a GPU torch.profiler must see it
too: sglang_profiler_check.py), checks the importers' bindings, idempotency and that unpatch()
restores every original object, runs the RMSNorm-family checks of sglang_addnorm_checks.py,
and prints one `RESULT <json>` line that the tests assert on.
"""
from __future__ import annotations

import json
import math
import sys
import traceback

LAYOUT_PACKAGE = {"kernels": "sglang.kernels.ops.attention.fla", "srt": "sglang.srt.layers.attention.fla"}


def _check_main(layout: str) -> dict:  # noqa: C901  (one linear script)
    import importlib

    import torch

    import sglang_addnorm_checks as addnorm_checks  # tests/ is sys.path[0] of this script
    import sglang_profiler_check as profiler_check
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

    Recorder = addnorm_checks.Recorder

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
        unpatched_prof = profiler_check.profile_ops(profiler_check.gated_call(lg, xc, zc, wc))

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
        seen = set()
        for key, ((rms, nbg, gs, act), before) in ((k, c) for k, c in cuda_cases.items() if k != "fused"):
            after, ours = via_gatednorm(lg.rms_norm_gated, x=xc, weight=wc, bias=None if rms else bc, z=zc,
                                        eps=1e-6, group_size=gs, norm_before_gate=nbg, is_rms_norm=rms,
                                        activation=act)
            seen.update(ours)
            close(after.cpu(), before.cpu().double(), torch.bfloat16, gs or 128, f"cuda {key}")
        xg = xc.clone()
        after, ours = via_gatednorm(fg.rms_norm_gated, xg, zc, wc, None, "sigmoid", None, False, False, 1e-6)
        seen.update(ours)
        close(after.cpu(), cuda_cases["fused"].cpu().double(), torch.bfloat16, 128, "cuda fused")
        return sorted(seen)

    @check("cuda_profiler")  # torch.profiler: the patched calls go through torch.ops.gatednorm
    def _():
        if not cuda:
            raise Skip("needs a GPU and a CUDA build of gatednorm")
        return profiler_check.check(unpatched_prof, lg, ln, xc, zc, wc)

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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        print("RESULT " + json.dumps(_check_main(sys.argv[2])), flush=True)
    else:
        sys.exit(f"usage: {sys.argv[0]} --check <layout>   (run by tests/test_sglang_patch.py)")
