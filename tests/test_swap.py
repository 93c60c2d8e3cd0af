"""`torch_ops.swap.swap_norms_`: the module swap of gated norms in real (tiny) Hugging Face
models built from configs (nothing is downloaded), the semantics of every supported
class module by module, and the swap's bookkeeping (names, shared Parameters, state_dict
keys, hooks, idempotency, filter_fn, unknown classes).

FLA and mamba_ssm run Triton kernels, which do not run on a CPU: their classes are tested
through stand-ins with the same module path, class name, __init__ attributes and forward
semantics as the real source (fla-core 0.6.0 `fla/modules/norm/{layernorm_gated,
fused_norm_gate}.py`, mamba_ssm `ops/triton/layernorm_gated.py`), under each module path
FLA has used, plus the real classes on CUDA when those packages are installed.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers")

from conftest import U, grad_tol, reduce_tol, tol  # noqa: E402
from torch_ops.swap import SUPPORTED_CLASSES, SwappedGatedNorm, _class_key, swap_norms_  # noqa: E402

BF16 = torch.bfloat16


def _assert_normwise(a, e, rtol, what, floor=0.0):
    """||a - e|| <= rtol * max(||e||, floor), in fp64, with the dtype and shape checked."""
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
    assert torch.isfinite(a64).all(), f"{what}: non-finite values"
    err = (a64 - e64).norm().item()
    bound = rtol * max(e64.norm().item(), floor)
    assert err <= bound, f"{what}: ||a - e|| = {err:.3e} > {bound:.3e} (rtol {rtol:.2e}, ||e|| {e64.norm().item():.3e})"


def _assert_close(a, e, rtol, what):
    """Elementwise |a - e| <= rtol * (|e| + rms(e)) (conftest's convention), dtype checked."""
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
    atol = rtol * e64.square().mean().sqrt().item()
    torch.testing.assert_close(a64, e64, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _skip_if_kernels_on_cpu(device, packages):
    """transformers routes these models to an optimised package's kernels when it is
    installed (`use_kernel_func_from_hub_with_fallback`, decided at import): Triton / CUDA
    kernels that do not run on a CPU."""
    for package in packages if device == "cpu" else ():
        if importlib.util.find_spec(package) is not None:
            pytest.skip(f"{package} is installed: transformers runs this model on its GPU kernels")


# =================================================================== real tiny HF models

V = 64  # vocabulary


def _cfg_qwen3_next():
    return transformers.Qwen3NextConfig(
        vocab_size=V, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, linear_key_head_dim=8, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"], mlp_only_layers=[0, 1],
        max_position_embeddings=64)


def _cfg_qwen3_5():
    return transformers.Qwen3_5TextConfig(
        vocab_size=V, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, linear_key_head_dim=8, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"], max_position_embeddings=64)


def _cfg_mamba2():  # intermediate 64 = 8 heads x 8, 2 groups of 32
    return transformers.Mamba2Config(vocab_size=V, hidden_size=32, num_heads=8, head_dim=8, expand=2, n_groups=2,
                                     state_size=8, num_hidden_layers=2, chunk_size=4)


def _cfg_nemotron_h():  # 4 groups of 16
    return transformers.NemotronHConfig(
        vocab_size=V, hidden_size=32, layers_block_type=["linear_attention", "full_attention", "mlp"],
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, intermediate_size=32, ssm_state_size=8,
        mamba_num_heads=8, mamba_head_dim=8, n_groups=4, expand=2, chunk_size=4)


def _cfg_zamba2():  # 2 groups of 32; layer 1 is a hybrid (shared transformer + mamba) layer
    return transformers.Zamba2Config(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, layers_block_type=["linear_attention", "hybrid"],
        mamba_d_state=8, mamba_expand=2, mamba_ngroups=2, n_mamba_heads=4, num_attention_heads=2, intermediate_size=32,
        chunk_size=4, adapter_rank=4, max_position_embeddings=64)


def _cfg_falcon_h1(norm_before_gate):
    def make():  # 2 groups of 32
        return transformers.FalconH1Config(
            vocab_size=V, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, mamba_d_ssm=64, mamba_n_heads=8, mamba_n_groups=2, mamba_d_state=8,
            mamba_chunk_size=4, mamba_rms_norm=True, mamba_norm_before_gate=norm_before_gate,
            max_position_embeddings=64)
    return make


def _cfg_bamba():
    return transformers.BambaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=8, mamba_n_groups=2,
        mamba_d_state=8, mamba_expand=2, mamba_chunk_size=4, max_position_embeddings=64)


# name -> (config factory, gated-norm class expected, how many, packages whose kernels HF prefers)
# (with fla installed, transformers 4.57's Qwen3-Next builds fla's FusedRMSNormGated instead:
# both are accepted)
MODELS = {
    "qwen3_next": (_cfg_qwen3_next, "Qwen3NextRMSNormGated", 1, ("fla", "causal_conv1d")),
    "qwen3_5": (_cfg_qwen3_5, "Qwen3_5RMSNormGated", 1, ("fla", "causal_conv1d")),
    "mamba2": (_cfg_mamba2, "MambaRMSNormGated", 2, ("mamba_ssm", "causal_conv1d")),
    "nemotron_h": (_cfg_nemotron_h, "NemotronHRMSNormGated", 1, ("mamba_ssm", "causal_conv1d")),
    "zamba2": (_cfg_zamba2, "Zamba2RMSNormGated", 2, ("mamba_ssm", "causal_conv1d")),
    "falcon_h1-norm_before_gate": (_cfg_falcon_h1(True), "FalconH1RMSNormGated", 2, ("mamba_ssm", "causal_conv1d")),
    "falcon_h1-gate_before_norm": (_cfg_falcon_h1(False), "FalconH1RMSNormGated", 2, ("mamba_ssm", "causal_conv1d")),
    "bamba": (_cfg_bamba, "BambaRMSNormGated", 1, ("mamba_ssm", "causal_conv1d")),
}


def _build(name, device, dtype=torch.float32):
    make, cls_name, count, packages = MODELS[name]
    _skip_if_kernels_on_cpu(device, packages)
    try:
        config = make()
    except (AttributeError, TypeError, ValueError) as e:  # config class missing / changed in this transformers
        pytest.skip(f"{name}: cannot build its config with transformers {transformers.__version__}: {e}")
    layers = getattr(config, "layers_block_type", None) or getattr(config, "layer_types", None)
    if config.hidden_size != 32 or config.vocab_size != V or (len(layers) if layers else config.num_hidden_layers) > 3:
        # an older config class that ignores some of the keywords above would build a full-size model
        pytest.skip(f"{name}: this transformers ({transformers.__version__}) did not take the tiny config")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    model.eval()  # no dropout: the two runs must see the same function
    norms = [n for n, m in model.named_modules() if _class_key(m) in SUPPORTED_CLASSES]
    found = {type(model.get_submodule(n)).__name__ for n in norms}
    assert len(norms) == count and found <= {cls_name, "FusedRMSNormGated"}, f"{name}: {cls_name} x {count}? {norms}"
    with torch.no_grad():  # weights away from ones, so a kernel that drops them fails
        for n in norms:
            w = model.get_submodule(n).weight
            w.copy_(1 + 0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(len(n))))
    return model, norms, cls_name


def _run(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach().clone(), out.loss.detach().clone(), grads


# fp32 models. Both the original eager norm and our op evaluate the same formula in fp32,
# each within tol(fp32, G) = 2u + 2^-24 (32 + 8 sqrt(G)) of the exact value elementwise
# (conftest.py; ~5e-6 for the groups of 16..64 here), and their backward passes within
# grad_tol(fp32, G) (~1e-5). So each swapped norm perturbs its output, and the gradient it
# hands back, by at most ~2 x 1e-5 relative. Everything else is the same fp32 code on both
# sides and carries that perturbation through the 2-3 remaining random-init layers with a
# gain of O(1)..O(10): RTOL = 5 x 2 x grad_tol(fp32, 64) ~ 1.2e-4, norm-wise per tensor
# (observed: <= 1.1e-6 on every model). A semantic mistake (gate order, groups, activation,
# a dropped weight) moves results by O(0.1..1); eps is checked at the module level below.
# A gradient whose norm is far below the typical one (e.g. a parameter that barely feeds
# the loss) is compared against the typical gradient size instead (the floor).
MODEL_RTOL = 5 * 2 * grad_tol(torch.float32, 64)


@pytest.mark.parametrize("name", list(MODELS))
def test_swap_real_model(name, device):
    model, norms, cls_name = _build(name, device)
    params_before = dict(model.named_parameters())
    modules_before = dict(model.named_modules())
    sd_before = model.state_dict()
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(1)).to(device)
    logits0, loss0, grads0 = _run(model, ids)

    names = swap_norms_(model)

    assert names == norms
    for n in norms:
        new, old = model.get_submodule(n), modules_before[n]
        assert isinstance(new, SwappedGatedNorm) and new.source_class == _class_key(old)
        assert new.weight is old.weight
        for attr in ("variance_epsilon", "group_size", "n_groups", "norm_before_gate", "activation"):
            if hasattr(old, attr):
                assert getattr(new, attr) == getattr(old, attr), attr
    # everything else is the very same module object
    for n, m in model.named_modules():
        if n not in norms:
            assert m is modules_before[n], n
    # the same Parameter objects under the same names, same state_dict keys, dtype, device
    params_after = dict(model.named_parameters())
    assert list(params_after) == list(params_before)
    assert all(params_after[k] is params_before[k] for k in params_before)
    sd_after = model.state_dict()
    assert list(sd_after) == list(sd_before)
    for k in sd_before:
        assert sd_after[k].dtype == sd_before[k].dtype and sd_after[k].device == sd_before[k].device, k
        assert sd_after[k].data_ptr() == sd_before[k].data_ptr(), k
    model.load_state_dict(sd_before, strict=True)

    logits1, loss1, grads1 = _run(model, ids)
    _assert_normwise(logits1, logits0, MODEL_RTOL, "logits")
    _assert_normwise(loss1.reshape(1), loss0.reshape(1), MODEL_RTOL, "loss")
    assert set(grads1) == set(grads0)
    typical = math.sqrt(sum(g.double().square().sum().item() for g in grads0.values())
                        / sum(g.numel() for g in grads0.values()))
    for k, g0 in grads0.items():
        _assert_normwise(grads1[k], g0, MODEL_RTOL, f"grad {k}", floor=typical * math.sqrt(g0.numel()))
    for n in norms:  # the norm weights themselves got gradients through our op
        assert grads1[n + ".weight"].abs().sum() > 0

    # idempotent: nothing more to swap, nothing changes
    modules_swapped = dict(model.named_modules())
    assert swap_norms_(model) == []
    assert all(m is modules_swapped[n] for n, m in model.named_modules())
    logits2, _, _ = _run(model, ids)
    assert torch.equal(logits2, logits1)


@pytest.mark.parametrize("name", ["mamba2", "qwen3_5"])
def test_swap_bf16_model_keeps_dtypes(name, device):
    """A bf16 model: the parameters stay bf16 (the same objects) and every norm returns the
    dtype the original returned (recorded by a forward hook, which moves with the module).
    Mamba2's torch path feeds the norm an fp32 scan output and a bf16 gate (fp32 result);
    Qwen3.5 feeds bf16 (bf16 result). Values: a swapped norm differs from the original by at
    most 4 bf16 roundings (Qwen3.5: 3 in the original, 1 in ours; 4u = 1.6e-2 relative), and
    the rest of the model carries that with the O(1..10) gain assumed above: 5 x 4u = 0.08
    norm-wise on the logits (observed: 0 for Mamba2, ~3e-3 for Qwen3.5)."""
    model, norms, _ = _build(name, device, dtype=BF16)
    seen = []
    for n in norms:
        model.get_submodule(n).register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        logits0 = model(input_ids=ids).logits
        dtypes0, seen[:] = list(seen), []
        assert swap_norms_(model) == norms
        logits1 = model(input_ids=ids).logits
    assert seen == dtypes0 and len(seen) == len(norms)
    assert all(p.dtype == BF16 for p in model.parameters())
    assert logits1.dtype == logits0.dtype
    _assert_normwise(logits1, logits0, 5 * 4 * U[BF16], "bf16 logits")


def test_filter_fn_and_unknown_modules(device):
    model, norms, _ = _build("mamba2", device)
    seen = []

    def only_layer0(module, fqn):
        seen.append((type(module).__name__, fqn))
        return fqn.startswith("backbone.layers.0.")

    assert swap_norms_(model, filter_fn=only_layer0) == ["backbone.layers.0.mixer.norm"]
    # asked only about modules of supported classes, once each, with their qualified names
    assert seen == [("MambaRMSNormGated", n) for n in norms]
    assert type(model.get_submodule(norms[1])).__name__ == "MambaRMSNormGated"
    # the ungated final norm (Mamba2RMSNorm) and everything else are left alone
    assert type(model.backbone.norm_f).__name__ == "Mamba2RMSNorm"
    # a later call without the filter swaps the rest only
    assert swap_norms_(model) == [norms[1]]
    assert swap_norms_(model) == []


# =================================================================== HF classes, one by one
#
# family: "group"  = gate (fp32) then group RMSNorm, out = weight * v.to(x.dtype)
#         "qwen"   = RMSNorm in fp32, .to(x.dtype), * weight, * act(gate fp32), .to(x.dtype)
#         "fp32"   = RMSNorm, weight, act(gate) all in fp32, one cast
#         "falcon" = FalconH1 (n_groups, norm_before_gate, all fp32, one cast)
HF_CLASSES = [
    ("mamba2", "MambaRMSNormGated", "group"),
    ("bamba", "BambaRMSNormGated", "group"),
    ("granitemoehybrid", "GraniteMoeHybridRMSNormGated", "group"),
    ("zamba2", "Zamba2RMSNormGated", "group"),
    ("nemotron_h", "NemotronHRMSNormGated", "group"),
    ("qwen3_next", "Qwen3NextRMSNormGated", "qwen"),
    ("qwen3_5", "Qwen3_5RMSNormGated", "qwen"),
    ("qwen3_5_moe", "Qwen3_5MoeRMSNormGated", "qwen"),
    ("olmo_hybrid", "OlmoHybridRMSNormGated", "qwen"),
    ("qwen4_exp", "Qwen4ExpTextRMSNormGated", "qwen"),
    ("kimi_linear", "KimiLinearRMSNormGated", "fp32"),
    ("bailing_hybrid", "BailingHybridRMSNormGated", "fp32"),
    ("glm5_next", "Glm5NextTextRMSNormGated", "fp32"),
    ("falcon_h1", "FalconH1RMSNormGated", "falcon"),
]
N, G, EPS = 64, 16, 1e-3


def _hf_class(model, name):
    path = f"transformers.models.{model}.modeling_{model}"
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        pytest.skip(f"{path} not importable with transformers {transformers.__version__}: {e}")
    cls = getattr(module, name, None)
    if cls is None:
        pytest.skip(f"{path} has no {name} in transformers {transformers.__version__}")
    assert f"{path}.{name}" in SUPPORTED_CLASSES
    return cls


def _make_hf(cls, family, norm_before_gate=True):
    params = inspect.signature(cls.__init__).parameters
    kw = {"eps": EPS}
    if "group_size" in params:
        kw["group_size"] = G
    if "n_groups" in params:
        kw.update(n_groups=N // G, norm_before_gate=norm_before_gate)
    m = cls(N, **kw)
    with torch.no_grad():
        m.weight.copy_(1 + 0.5 * torch.randn(N, dtype=torch.float64))
    return m


class _Holder(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, *args, **kwargs):
        return self.norm(*args, **kwargs)


def _roundings(family, x_half, out_half, w_half):
    """How many times the original rounds to a half dtype (ours: once if out_half)."""
    if family == "group":  # v.to(x.dtype); weight * (.) in promote(w, x)
        return int(x_half) + int(out_half)
    if family == "qwen":  # normalised .to(x.dtype); weight * (.) in promote(w, x); final .to(x.dtype)
        return int(x_half) + int(x_half and w_half) + int(x_half)
    return int(out_half)  # one final cast


def _fwd_bwd(module, x, z, gen_seed=2):
    x = x.detach().clone().requires_grad_()
    z = None if z is None else z.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x, z) if z is not None else module(x)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(gen_seed), dtype=torch.float64)
    (out.double() * dy.to(out.device)).sum().backward()
    params = [p.grad for p in module.parameters()]
    return out.detach(), x.grad, None if z is None else z.grad, params


# dtype cases: (x dtype, weight dtype)
DTYPES = {"fp32": (torch.float32, torch.float32), "bf16": (BF16, BF16), "bf16-x-fp32-w": (BF16, torch.float32)}


def _hf_cases():
    for model, name, family in HF_CLASSES:
        for dtypes in DTYPES:
            for gate in ([True, False] if family in ("group", "falcon") else [True]):  # the others require it
                for nbg in ([True, False] if family == "falcon" else [True]):
                    ident = f"{name}-{dtypes}-{'gate' if gate else 'nogate'}" + ("" if family != "falcon" else
                                                                               f"-nbg={nbg}")
                    yield pytest.param(model, name, family, nbg, gate, dtypes, id=ident)


@pytest.mark.parametrize("model,name,family,norm_before_gate,gate,dtypes", list(_hf_cases()))
def test_hf_class_semantics(model, name, family, norm_before_gate, gate, dtypes, device):
    x_dtype, w_dtype = DTYPES[dtypes]
    cls = _hf_class(model, name)
    orig = _make_hf(cls, family, norm_before_gate).to(device=device, dtype=w_dtype)
    # x ~ 0.03 randn: mean(x^2) ~ 1e-3 = EPS, so a wrong or ignored eps fails
    x = (0.03 * torch.randn(3, 5, N, dtype=torch.float64)).to(device=device, dtype=x_dtype)
    z = (torch.empty(3, 5, N, dtype=torch.float64).uniform_(-3, 3)).to(device=device, dtype=x_dtype) if gate else None

    holder = _Holder(orig)
    out0, dx0, dz0, dw0 = _fwd_bwd(holder, x, z)
    assert swap_norms_(holder) == ["norm"]
    new = holder.norm
    assert isinstance(new, SwappedGatedNorm) and new.weight is orig.weight
    assert new.variance_epsilon == EPS
    out1, dx1, dz1, dw1 = _fwd_bwd(holder, x, z)

    # forward: the original's intermediate roundings + our final one (u each, relative,
    # elementwise) on top of the fp32 error of both (2 x tol(fp32, G))
    out_half = out0.dtype in (BF16, torch.float16)
    k = _roundings(family, x_dtype != torch.float32, out_half, w_dtype != torch.float32)
    u = U[BF16]
    rtol = (k + int(out_half)) * u + 2 * tol(torch.float32, G)
    assert out1.dtype == out0.dtype
    _assert_close(out1, out0, rtol, "out")
    # backward: autograd rounds the original's gradient chain at the same casts (k), and
    # dx/dz are differences of terms of their own size (no cancellation with random data
    # and G = 16: norm-wise); plus the final rounding of dx/dz to x's dtype on both sides
    # and the fp32 error of both. dw: reduced over M = 15 rows in fp32 (reduce_tol).
    x_half = x_dtype != torch.float32
    grtol = 2 * (k + 2 * int(x_half)) * u + 2 * grad_tol(torch.float32, G)
    _assert_normwise(dx1, dx0, grtol, "dx")
    if gate:
        _assert_normwise(dz1, dz0, grtol, "dz")
    wrtol = 2 * (k + 2 * int(x_half)) * u + 2 * reduce_tol(torch.float32, 15, G, w_dtype)
    _assert_normwise(dw1[0], dw0[0], wrtol, "dw")


@pytest.mark.parametrize("model,name,family", [c for c in HF_CLASSES if c[2] == "group"],
                         ids=[c[1] for c in HF_CLASSES if c[2] == "group"])
def test_hf_group_eps_and_groups_are_used(model, name, family):
    """fp64 inputs through the swapped module vs the fp64 reference of the documented math:
    catches a wrong eps, group size or gate order at the 1e-12 level (the original itself
    normalises in fp32, hence not the yardstick here)."""
    import torch_ops
    cls = _hf_class(model, name)
    orig = _make_hf(cls, family).double()
    holder = _Holder(orig)
    swap_norms_(holder)
    x = 0.03 * torch.randn(4, N, dtype=torch.float64)
    z = torch.randn(4, N, dtype=torch.float64)
    group_size = getattr(orig, "group_size", None)  # (older transformers: no groups)
    ref = torch_ops.gated_norm_ref(x, orig.weight, None, z, eps=EPS, group_size=group_size, norm_before_gate=False,
                                   is_rms_norm=True, activation="silu")
    torch.testing.assert_close(holder(x, z), ref, rtol=1e-12, atol=1e-12)


def test_hf_mixed_gate_dtype():
    """A gate in another dtype than x (fp32 gate, bf16 x): the original upcasts both to
    fp32; ours too (exact upcasts), output in the original's dtype."""
    cls = _hf_class("mamba2", "MambaRMSNormGated")
    orig = _make_hf(cls, "group").to(BF16)
    x = (0.03 * torch.randn(4, N)).to(BF16)
    z = torch.randn(4, N)
    out0 = orig(x, z)
    holder = _Holder(orig)
    swap_norms_(holder)
    out1 = holder(x, z)
    assert out1.dtype == out0.dtype == BF16
    _assert_close(out1, out0, 3 * U[BF16] + 2 * tol(torch.float32, G), "out")


# =================================================================== bookkeeping


def test_shared_module_hooks_and_root():
    cls = _hf_class("mamba2", "MambaRMSNormGated")
    norm = _make_hf(cls, "group")
    calls = []
    handle = norm.register_forward_hook(lambda mod, args, out: calls.append(type(mod).__name__))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = norm
            self.blocks = nn.ModuleList([nn.Linear(N, N), norm])

    model = Twice()
    assert swap_norms_(model) == ["a", "blocks.1"]
    assert model.a is model.blocks[1] and isinstance(model.a, SwappedGatedNorm)  # still one shared module
    assert list(dict(model.named_parameters())) == ["a.weight", "blocks.0.weight", "blocks.0.bias"]
    model.a(torch.randn(2, N))
    assert calls == ["SwappedHFGroupGatedRMSNorm"]  # the hook moved with the module
    handle.remove()
    model.a(torch.randn(2, N))
    assert calls == ["SwappedHFGroupGatedRMSNorm"]
    # the root itself is never replaced (no parent to rebind)
    assert swap_norms_(_make_hf(cls, "group")) == []


def test_unknown_and_lookalike_classes_untouched():
    cls = _hf_class("mamba2", "MambaRMSNormGated")

    class MyNorm(cls):  # a subclass may change forward: not ours to swap
        pass

    class Qwen3NextRMSNormGated(nn.Module):  # same name, another module
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(N))
            self.variance_epsilon = 1e-6

    model = nn.ModuleDict({"sub": MyNorm(N, G), "look": Qwen3NextRMSNormGated(), "lin": nn.Linear(N, N)})
    before = dict(model.named_modules())
    assert swap_norms_(model) == []
    assert all(m is before[n] for n, m in model.named_modules())


def test_instance_level_forward_is_left_alone():
    """accelerate-style hooks replace `forward` on the instance: we cannot carry that over."""
    cls = _hf_class("mamba2", "MambaRMSNormGated")
    norm = _make_hf(cls, "group")
    norm.forward = norm.forward  # an instance attribute, as accelerate's add_hook_to_module sets
    model = _Holder(norm)
    with pytest.warns(UserWarning, match="forward is patched"):
        assert swap_norms_(model) == []
    assert model.norm is norm


def test_class_of_another_shape_is_left_alone():
    """A supported path and name whose instance lacks the attributes the forward reads
    (another version of the class): warned about and left alone, not half-swapped."""
    Odd = type("FalconH1RMSNormGated", (nn.Module,), {"__module__": "transformers.models.falcon_h1.modeling_falcon_h1"})
    odd = Odd()
    odd.weight = nn.Parameter(torch.ones(N))
    odd.variance_epsilon = 1e-6  # but no n_groups / norm_before_gate
    model = _Holder(odd)
    with pytest.warns(UserWarning, match="lacks one of the attributes"):
        assert swap_norms_(model) == []
    assert model.norm is odd


def test_training_flag_and_repr():
    cls = _hf_class("zamba2", "Zamba2RMSNormGated")
    norm = _make_hf(cls, "group").train()
    model = _Holder(norm)
    swap_norms_(model)
    assert model.norm.training
    assert "Zamba2RMSNormGated" in repr(model.norm)


# =================================================================== FLA / mamba_ssm stand-ins
#
# Same module path, class name, __init__ attributes and forward math as the real source;
# forward written in eager PyTorch (the real ones launch Triton kernels): fp32 compute,
# output in x.dtype.

def _ref_norm(x, w, b, z, eps, group_size, norm_before_gate, is_rms, act="silu"):
    dtype = x.dtype
    x, z = x.float(), None if z is None else z.float()
    a = (lambda t: F.silu(t)) if act in ("silu", "swish") else torch.sigmoid
    if z is not None and not norm_before_gate:
        x = x * a(z)
    n = x.shape[-1]
    xg = x.unflatten(-1, (n // (group_size or n), group_size or n))
    if not is_rms:
        xg = xg - xg.mean(-1, keepdim=True)
    y = (xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    if w is not None:
        y = y * w.float()
    if b is not None:
        y = y + b.float()
    if z is not None and norm_before_gate:
        y = y * a(z)
    return y.to(dtype)


def _tri_dao_class(module_path, name, is_rms, nbg_default):
    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=nbg_default, device=None,
                 dtype=None):
        nn.Module.__init__(self)
        f = {"device": device, "dtype": dtype}
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, **f))
        if is_rms:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.zeros(hidden_size, **f))
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate

    def forward(self, x, z=None):
        return _ref_norm(x, self.weight, self.bias, z, self.eps, self.group_size, self.norm_before_gate, is_rms)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward, "__module__": module_path,
                                     "__qualname__": name})


def _fla_fused_class(module_path, name, is_rms):
    def __init__(self, hidden_size, elementwise_affine=True, eps=1e-5, activation="swish", bias=False, device=None,
                 dtype=None):
        nn.Module.__init__(self)
        f = {"device": device, "dtype": dtype}
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        self.activation = activation
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, **f))
            if bias and not is_rms:
                self.bias = nn.Parameter(torch.zeros(hidden_size, **f))

    def forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        # FLA's kernel: h = x (+ residual) in fp32; residual_out = h in residual's dtype
        # (fp32 if residual_in_fp32 and no residual; x itself otherwise); the fp32 h is normalised
        h = x.float() + residual.float() if residual is not None else x.float()
        rdtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
        y = _ref_norm(h, self.weight, self.bias, g, self.eps, None, True, is_rms, self.activation).to(x.dtype)
        if not prenorm:
            return y
        return y, (h.to(rdtype) if residual is not None or rdtype != x.dtype else x)

    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward, "__module__": module_path,
                                     "__qualname__": name})


FLA_LN, FLA_FUSED = "fla.modules.norm.layernorm_gated", "fla.modules.norm.fused_norm_gate"
MAMBA_LN = "mamba_ssm.ops.triton.layernorm_gated"
TRI_DAO = [
    _tri_dao_class(FLA_LN, "RMSNormGated", True, False),
    _tri_dao_class(FLA_LN, "LayerNormGated", False, True),
    _tri_dao_class("fla.modules.layernorm_gated", "RMSNormGated", True, False),  # fla before the norm/ split
    _tri_dao_class("fla.modules.norm.layernorm_gated.module", "LayerNormGated", False, True),  # fla after 0.6.0
    _tri_dao_class(MAMBA_LN, "RMSNorm", True, True),
    _tri_dao_class(MAMBA_LN, "LayerNorm", False, True),
]


def _rand_params(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(1 + 0.5 * torch.randn(p.shape, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "nogate"])
@pytest.mark.parametrize("nbg", [True, False], ids=["nbg", "gbn"])
@pytest.mark.parametrize("group_size", [None, G], ids=["nogroups", "groups"])
@pytest.mark.parametrize("cls", TRI_DAO, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_tri_dao_stand_ins(cls, group_size, nbg, gate, dtype, device):
    orig = cls(N, eps=EPS, group_size=group_size, norm_before_gate=nbg, device=device, dtype=dtype)
    _rand_params(orig)
    holder = _Holder(orig)
    x = (0.03 * torch.randn(3, 5, N)).to(device=device, dtype=dtype)
    z = torch.empty(3, 5, N).uniform_(-3, 3).to(device=device, dtype=dtype) if gate else None
    out0, dx0, dz0, dp0 = _fwd_bwd(holder, x, z)
    assert swap_norms_(holder) == ["norm"]
    new = holder.norm
    assert new.weight is orig.weight and new.bias is orig.bias
    assert (new.eps, new.group_size, new.norm_before_gate) == (EPS, group_size, nbg)
    out1, dx1, dz1, dp1 = _fwd_bwd(holder, x, z)
    # same math, both fp32 with one final rounding: 2 roundings apart at most (bf16), and the
    # fp32 error of both
    half = dtype != torch.float32
    gs = group_size or N
    _assert_close(out1, out0, 2 * int(half) * U[BF16] + 2 * tol(torch.float32, gs), "out")
    grtol = 4 * int(half) * U[BF16] + 2 * grad_tol(torch.float32, gs)
    _assert_normwise(dx1, dx0, grtol, "dx")
    if gate:
        _assert_normwise(dz1, dz0, grtol, "dz")
    for a, b in zip(dp1, dp0):
        _assert_normwise(a, b, 4 * int(half) * U[BF16] + 2 * reduce_tol(torch.float32, 15, gs, dtype), "dparam")


FUSED = [
    _fla_fused_class(FLA_FUSED, "FusedRMSNormGated", True),
    _fla_fused_class(FLA_FUSED, "FusedLayerNormGated", False),
    _fla_fused_class("fla.modules.fused_norm_gate", "FusedRMSNormGated", True),
    _fla_fused_class("fla.modules.norm.fused_norm_gate.module", "FusedRMSNormSwishGate", True),
]


FUSED_VARIANTS = ["plain", "sigmoid", "no_affine", "bias", "residual", "prenorm", "prenorm_fp32_residual",
                  "prenorm_bf16_residual", "prenorm_residual_in_fp32"]


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cls,variant", [pytest.param(c, v, id=f"{c.__module__}.{c.__name__}-{v}")
                                         for c in FUSED for v in FUSED_VARIANTS
                                         if not (v == "bias" and "RMS" in c.__name__)])  # (RMS: no bias)
def test_fla_fused_stand_ins(cls, variant, dtype, device):
    """prenorm_bf16_residual with fp32 x: the fp32 sum x + residual is normalised, not the
    residual_out rounded to bf16 (that would be 2^-8 off: far outside the fp32 tolerance)."""
    kw = {"activation": "sigmoid"} if variant == "sigmoid" else {}
    if variant == "no_affine":
        kw["elementwise_affine"] = False
    if variant == "bias":
        kw["bias"] = True
    orig = cls(N, eps=EPS, device=device, dtype=dtype, **kw)
    _rand_params(orig)
    holder = _Holder(orig)
    x = (0.03 * torch.randn(4, N)).to(device=device, dtype=dtype)
    g = torch.empty(4, N).uniform_(-3, 3).to(device=device, dtype=dtype)
    res = (0.03 * torch.randn(4, N)).to(device=device, dtype=dtype)
    call = {
        "residual": dict(residual=res), "prenorm": dict(residual=res, prenorm=True),
        "prenorm_fp32_residual": dict(residual=res.float(), prenorm=True),
        "prenorm_bf16_residual": dict(residual=res.to(BF16), prenorm=True),
        "prenorm_residual_in_fp32": dict(prenorm=True, residual_in_fp32=True),
    }.get(variant, {})

    def run():
        xs = x.detach().clone().requires_grad_()
        gs = g.detach().clone().requires_grad_()
        extra = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in call.items()}
        holder.zero_grad(set_to_none=True)
        out = holder(xs, gs, **extra)
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o.double() * torch.randn(o.shape, generator=torch.Generator().manual_seed(i + 3),
                                             dtype=torch.float64).to(device)).sum() for i, o in enumerate(outs))
        loss.backward()
        grads = [xs.grad, gs.grad] + [v.grad for v in extra.values() if torch.is_tensor(v)]
        return [o.detach() for o in outs], grads, [p.grad for p in holder.parameters()]

    outs0, grads0, pg0 = run()
    assert swap_norms_(holder) == ["norm"]
    assert holder.norm.weight is orig.weight and holder.norm.activation == orig.activation
    outs1, grads1, pg1 = run()
    half = dtype != torch.float32
    assert len(outs1) == len(outs0)
    for i, (a, b) in enumerate(zip(outs1, outs0)):
        _assert_close(a, b, 2 * int(half) * U[BF16] + 2 * tol(torch.float32, N), f"out[{i}]")
    grtol = 4 * int(half) * U[BF16] + 2 * grad_tol(torch.float32, N)
    for i, (a, b) in enumerate(zip(grads1, grads0)):
        _assert_normwise(a, b, grtol, f"grad input {i}")
    for a, b in zip(pg1, pg0):
        _assert_normwise(a, b, 4 * int(half) * U[BF16] + 2 * reduce_tol(torch.float32, 4, N, dtype), "dparam")


# =================================================================== the real FLA / mamba_ssm (CUDA only)


@pytest.mark.parametrize("which", ["fla_rms", "fla_ln", "fla_fused", "mamba_rms"])
def test_real_triton_classes(which, device):
    if device != "cuda":
        pytest.skip("FLA / mamba_ssm modules run Triton kernels: CUDA only")
    if which.startswith("fla"):
        pytest.importorskip("fla")
        from fla.modules import FusedRMSNormGated
        try:
            from fla.modules.norm.layernorm_gated import LayerNormGated, RMSNormGated
        except ImportError:  # fla before the modules/norm/ split
            from fla.modules.layernorm_gated import LayerNormGated, RMSNormGated
        orig = {"fla_rms": lambda: RMSNormGated(N, eps=EPS, group_size=G),
                "fla_ln": lambda: LayerNormGated(N, eps=EPS, group_size=G, norm_before_gate=False),
                "fla_fused": lambda: FusedRMSNormGated(N, eps=EPS)}[which]()
    else:
        pytest.importorskip("mamba_ssm")
        from mamba_ssm.ops.triton.layernorm_gated import RMSNorm
        orig = RMSNorm(N, eps=EPS, group_size=G, norm_before_gate=False)
    orig = orig.to(device)
    _rand_params(orig)
    holder = _Holder(orig)
    x = 0.03 * torch.randn(3, 5, N, device=device)
    z = torch.empty(3, 5, N, device=device).uniform_(-3, 3)
    out0, dx0, dz0, dp0 = _fwd_bwd(holder, x, z)
    assert swap_norms_(holder) == ["norm"]
    out1, dx1, dz1, dp1 = _fwd_bwd(holder, x, z)
    _assert_close(out1, out0, 2 * tol(torch.float32, N), "out")
    _assert_normwise(dx1, dx0, 2 * grad_tol(torch.float32, N), "dx")
    _assert_normwise(dz1, dz0, 2 * grad_tol(torch.float32, N), "dz")
