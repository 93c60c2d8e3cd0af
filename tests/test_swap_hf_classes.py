"""`torch_ops.swap.swap_norms_` on the Hugging Face gated-norm classes, one by one: the
swapped module computes what the original did, within the roundings each class does
(derived below), in fp32, bf16 and mixed dtypes, with and without a gate; and the swap's
bookkeeping: shared modules, hooks, the root, unknown and lookalike classes,
instance-level forward, the training flag and repr.

Whole models: test_swap_models.py; FLA and mamba_ssm: test_swap_fla_mamba.py.
"""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from conftest import U, grad_tol, reduce_tol, tol  # noqa: E402
from swap_helpers import BF16, EPS, G, N, _assert_close, _assert_normwise, _fwd_bwd, _Holder  # noqa: E402
from torch_ops.swap import SUPPORTED_CLASSES, SwappedGatedNorm, swap_norms_  # noqa: E402


# =================================================================== HF classes, one by one
#
# family: "group"  = gate (fp32) then group RMSNorm, out = weight * v.to(x.dtype)
#         "qwen"   = RMSNorm in fp32, .to(x.dtype), * weight, * act(gate fp32), .to(x.dtype)
#         "fp32"   = RMSNorm, weight, act(gate) all in fp32, one cast
#         "falcon" = FalconH1 (n_groups, norm_before_gate, all fp32, one cast)
HF_CLASSES = [
    ("mamba2", "MambaRMSNormGated", "group"),
    ("mamba2", "Mamba2RMSNormGated", "group"),  # transformers 5.25's name for it
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
    ("lara_mini", "LaraMiniRMSNormGated", "fp32"),  # silu
    ("falcon_h1", "FalconH1RMSNormGated", "falcon"),
]


# Mamba2's gated norm under either of its names (the bookkeeping tests need one such class)
MAMBA2 = ("Mamba2RMSNormGated", "MambaRMSNormGated")


def _hf_class(model, name):
    """The class `name` (or the first of a tuple of names) of `model`; skips when absent."""
    path = f"transformers.models.{model}.modeling_{model}"
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        pytest.skip(f"{path} not importable with transformers {transformers.__version__}: {e}")
    names = name if isinstance(name, tuple) else (name,)
    name = next((n for n in names if hasattr(module, n)), names[0])
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


def _roundings(family, x_half, out_half, w_half):
    """How many times the original rounds to a half dtype (ours: once if out_half)."""
    if family == "group":  # v.to(x.dtype); weight * (.) in promote(w, x)
        return int(x_half) + int(out_half)
    if family == "qwen":  # normalised .to(x.dtype); weight * (.) in promote(w, x); final .to(x.dtype)
        return int(x_half) + int(x_half and w_half) + int(x_half)
    return int(out_half)  # one final cast


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
    cls = _hf_class("mamba2", MAMBA2)
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
    cls = _hf_class("mamba2", MAMBA2)
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
    cls = _hf_class("mamba2", MAMBA2)

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
    cls = _hf_class("mamba2", MAMBA2)
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


def test_swapped_module_copies_and_pickles():
    """copy.deepcopy and torch.save / torch.load of a swapped model: the same class, its
    own parameters, the same outputs."""
    import copy
    import io

    holder = _Holder(_make_hf(_hf_class("mamba2", MAMBA2), "group"))
    swap_norms_(holder)
    x, z = torch.randn(3, N), torch.randn(3, N)
    buf = io.BytesIO()
    torch.save(holder, buf)
    buf.seek(0)
    for other in (copy.deepcopy(holder), torch.load(buf, weights_only=False)):
        assert type(other.norm) is type(holder.norm) and other.norm.weight is not holder.norm.weight
        assert torch.equal(other(x, z), holder(x, z))
