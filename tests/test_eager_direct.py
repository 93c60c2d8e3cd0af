"""The direct eager entry points of `torch_ops._C` (csrc/eager.cpp): the ops' own C++
implementations called without the dispatcher. Pinned here: they run in the plain case
(and the public functions use them: the op entry points are replaced by ones that fail),
results bitwise those of the ops, the same errors, and NotImplemented -- never a result
-- wherever the op call could behave differently: tensor subclasses, meta / conj / neg
tensors, a gradient needed, TorchFunctionMode, TorchDispatchMode, FakeTensorMode, vmap,
the profiler, and arguments of other Python types than the schema's (the op converts or
rejects those). In each such case the public function still returns the op's result."""
import importlib
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import torch_ops
from conftest import make_inputs, ops
from test_fast_path import add_cases, gated_cases

C = torch_ops._C
# (torch_ops.add_rms_norm is the function: the modules by name)
add_mod = importlib.import_module("torch_ops.add_rms_norm")
gated_mod = importlib.import_module("torch_ops.gated_norm")
MODES = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}


def _fail(*args):
    raise AssertionError("the op was called: the direct path should have served this call")


@pytest.fixture
def no_op_fallback(monkeypatch):
    """The public functions' op entry points, replaced by ones that fail."""
    monkeypatch.setattr(gated_mod, "_INFER", _fail)
    for name in ("_RMS_NORM", "_FUSED_ADD_RMS_NORM", "_ADD_RMS_NORM_INFER"):
        monkeypatch.setattr(add_mod, name, _fail)


def _rms_args(device, dtype=torch.bfloat16):
    x, w, _, _ = make_inputs((5, 96), dtype, device, z=False, bias=False)
    return x, w


# ---------------------------------------------------------------- the plain case

@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("i", range(7))
def test_gated_direct_is_the_op_bitwise(i, mode, device, no_op_fallback):
    args = gated_cases(device)[i]
    with MODES[mode]():
        out = C.gated_norm_infer(*args)
        assert out is not NotImplemented
        ref = ops.gated_norm_infer(*args)
        assert out.dtype == ref.dtype and out.shape == ref.shape and out.is_contiguous() and torch.equal(out, ref)
        assert torch.equal(torch_ops.layernorm_fn(*args), ref)  # served directly (no_op_fallback)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("i", range(7))
def test_gated_infer_out_is_fwd_out_bitwise(i, mode, device):
    """gated_norm_infer_out (no op of its own: the sglang fused-gate path's in-place call)
    writes what gated_norm_fwd_out writes, into a new tensor and into x itself, and bumps
    out's version as that op does."""
    x, *rest = gated_cases(device)[i]
    with MODES[mode]():
        expected = torch.empty_like(x)
        ops.gated_norm_fwd_out(x, *rest, expected)
        out = torch.full_like(x, float("nan"))
        v = None if mode == "inference" else out._version  # (inference tensors have none)
        assert C.gated_norm_infer_out(x, *rest, out) is None
        assert torch.equal(out, expected) and (v is None or out._version == v + 1)
        xin = x.clone()
        assert C.gated_norm_infer_out(xin, *rest, xin) is None  # in place
        assert torch.equal(xin, expected)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("i", range(4))
def test_add_direct_is_the_op_bitwise(i, mode, device, no_op_fallback):
    args = add_cases(device)[i]
    with MODES[mode]():
        outs = C.add_rms_norm_infer(*args)
        assert isinstance(outs, tuple) and len(outs) == 2
        for a, e in zip(outs, ops.add_rms_norm_infer(*args)):
            assert a.dtype == e.dtype and torch.equal(a, e)
        for a, e in zip(torch_ops.add_rms_norm(*args), outs):
            assert torch.equal(a, e)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("gemma", [False, True])
def test_rms_norm_and_fused_add_direct_are_the_ops_bitwise(gemma, mode, device, no_op_fallback):
    with MODES[mode]():
        x, w = _rms_args(device)
        r = torch.randn_like(x)
        y = C.rms_norm(x, w, 1e-6, gemma)
        assert torch.equal(y, ops.rms_norm(x, w, 1e-6, gemma))
        assert torch.equal(torch_ops.rms_norm(x, w, 1e-6, gemma=gemma), y)
        x1, r1, x2, r2 = x.clone(), r.clone(), x.clone(), r.clone()
        assert C.fused_add_rms_norm(x1, r1, w, 1e-6, gemma) is None
        ops.fused_add_rms_norm(x2, r2, w, 1e-6, gemma)
        assert torch.equal(x1, x2) and torch.equal(r1, r2) and not torch.equal(x1, x)
        x3, r3 = x.clone(), r.clone()
        torch_ops.fused_add_rms_norm(x3, r3, w, 1e-6, gemma)
        assert torch.equal(x3, x2) and torch.equal(r3, r2)


def test_no_references_leak(device):
    x, w = _rms_args(device)
    r = torch.randn_like(x)
    before = [sys.getrefcount(t) for t in (x, w, r)]
    for _ in range(100):
        C.rms_norm(x, w, 1e-6, False)
        C.fused_add_rms_norm(x, r, w, 1e-6, False)
        C.add_rms_norm_infer(x, r, w, 1e-6, False, False)
        C.gated_norm_infer(x, w, None, r, 1e-6, None, True, True, "silu")
    assert [sys.getrefcount(t) for t in (x, w, r)] == before


# ---------------------------------------------------------------- errors

def _error(fn, *args):
    with pytest.raises(Exception) as e:
        fn(*args)
    return type(e.value), str(e.value).split("\nException raised from")[0]


def test_errors_are_the_ops(device):
    x, w, _, z = make_inputs((4, 64), torch.float32, device, bias=False)
    bad_gated = [
        (x, w, None, z, 1e-6, 3, True, True, "silu"),  # group_size not a divisor
        (x, w, None, z, 1e-6, None, True, True, "relu"),
        (x, w[:32], None, z, 1e-6, None, True, True, "silu"),
        (x, w, None, z[:, :32], 1e-6, None, True, True, "silu"),
        (x, w, None, z.double(), 1e-6, None, True, True, "silu"),
        (x, w, None, z, -1.0, None, True, True, "silu"),
        (x.int(), None, None, None, 1e-6, None, True, True, "silu"),
    ]
    for args in bad_gated:
        got = _error(C.gated_norm_infer, *args)
        assert got == _error(ops.gated_norm_infer, *args) and got[1].startswith("gatednorm: "), got
    r = torch.randn_like(x)
    for args in [(x, x, w, 1e-6, False), (x, r[:, :32], w, 1e-6, False), (x, r, w[:8], 1e-6, False)]:
        got = _error(C.fused_add_rms_norm, *args)
        assert got == _error(ops.fused_add_rms_norm, *args) and got[1].startswith("gatednorm: "), got
    args = (x, r[:2], w, 1e-6, False, False)
    assert _error(C.add_rms_norm_infer, *args) == _error(ops.add_rms_norm_infer, *args)
    for out in (x[:2], z, torch.empty(4, 64, device=device, dtype=torch.float64)):  # shape, overlap, dtype
        args = (x, w, None, z, 1e-6, None, True, True, "silu", out)
        got = _error(C.gated_norm_infer_out, *args)
        assert got == _error(ops.gated_norm_fwd_out, *args) and got[1].startswith("gatednorm: "), got
    args = (x, w[:8], 1e-6, False)
    assert _error(C.rms_norm, *args) == _error(ops.rms_norm, *args)


def test_wrong_arity_is_a_type_error():
    x = torch.randn(2, 8)
    with pytest.raises(TypeError, match="takes 9 positional arguments"):
        C.gated_norm_infer(x, None, None, None, 1e-6)
    with pytest.raises(TypeError, match="takes 4 positional arguments"):
        C.rms_norm(x, None, 1e-6)


# ---------------------------------------------------------------- where the op must run

class Sub(torch.Tensor):
    pass


def _gated_variants(x, w, z):
    """(why, args) whose direct call must return NotImplemented."""
    base = (x, w, None, z, 1e-6, None, True, True, "silu")

    def swap(i, v):
        a = list(base)
        a[i] = v
        return tuple(a)

    return [
        ("subclass x", swap(0, x.as_subclass(Sub))),
        ("subclass weight", swap(1, w.as_subclass(Sub))),
        ("subclass z", swap(3, z.as_subclass(Sub))),
        ("meta x", swap(0, x.to("meta"))),
        ("neg view x", swap(0, torch._neg_view(x))),
        ("x requires grad", swap(0, x.detach().requires_grad_())),
        ("weight requires grad", swap(1, torch.nn.Parameter(w.clone()))),
        ("z requires grad", swap(3, z.detach().requires_grad_())),
        ("int eps", swap(4, 0)),
        ("bool group_size", swap(5, True)),
        ("huge group_size", swap(5, 2 ** 70)),
        ("int flag", swap(6, 1)),
        ("non-str activation", swap(8, b"silu")),
    ]


def test_steps_aside_for_what_the_op_must_decide(device):
    x, w, _, z = make_inputs((4, 64), torch.float32, device, bias=False)
    for why, args in _gated_variants(x, w, z):
        assert C.gated_norm_infer(*args) is NotImplemented, why
    # the public function then takes the op (or the differentiable op) and gives its answer
    ref = ops.gated_norm_infer(x, w, None, z, 1e-6, None, True, True, "silu")
    for why, args in _gated_variants(x, w, z):
        if why.startswith("subclass") or why.endswith("requires grad"):
            out = torch_ops.layernorm_fn(*args)
            assert torch.equal(out.detach().as_subclass(torch.Tensor), ref), why
        elif why == "int eps":
            expected = ops.gated_norm_infer(x, w, None, z, 0.0, None, True, True, "silu")
            assert torch.equal(torch_ops.layernorm_fn(*args), expected)
        elif why == "neg view x":  # the dispatcher materialises the negation
            expected = ops.gated_norm_infer(-x, w, None, z, 1e-6, None, True, True, "silu")
            assert torch.equal(torch_ops.layernorm_fn(*args), expected)
    r = torch.randn_like(x)
    assert C.fused_add_rms_norm(x, r.detach().requires_grad_(), w, 1e-6, False) is NotImplemented
    assert C.add_rms_norm_infer(x.as_subclass(Sub), r, w, 1e-6, False, False) is NotImplemented
    assert C.rms_norm(x, w, 1e-6, 0) is NotImplemented
    with torch.no_grad():  # no gradient can be asked for: direct
        assert C.gated_norm_infer(x, torch.nn.Parameter(w.clone()), None, z, 1e-6, None, True, True,
                                  "silu") is not NotImplemented


class PassFunction(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class PassDispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("ctx", ["TorchFunctionMode", "TorchDispatchMode", "profiler"])
def test_steps_aside_under_modes_and_profiler(ctx, device):
    x, w, _, z = make_inputs((4, 64), torch.float32, device, bias=False)
    r = torch.randn_like(x)
    make = {"TorchFunctionMode": PassFunction, "TorchDispatchMode": PassDispatch,
            "profiler": lambda: torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])}[ctx]
    with make() as m:
        assert C.gated_norm_infer(x, w, None, z, 1e-6, None, True, True, "silu") is NotImplemented
        assert C.rms_norm(x, w, 1e-6, False) is NotImplemented
        assert C.fused_add_rms_norm(x, r, w, 1e-6, False) is NotImplemented
        assert C.add_rms_norm_infer(x, r, w, 1e-6, False, False) is NotImplemented
        assert C.gated_norm_infer_out(x, w, None, z, 1e-6, None, True, True, "silu", r) is NotImplemented
        torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "silu")
    if ctx == "profiler":  # the op shows up in the trace
        assert any(e.name == "gatednorm::gated_norm_infer" for e in m.events())
    # and back to direct afterwards
    assert C.rms_norm(x, w, 1e-6, False) is not NotImplemented


def test_steps_aside_under_fake_tensors_and_vmap(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        xf = torch.empty(4, 64, device=device)
        assert C.rms_norm(xf, None, 1e-6, False) is NotImplemented
        assert torch_ops.rms_norm(xf, None, 1e-6).shape == (4, 64)
    x = torch.randn(3, 4, 64, device=device)
    seen = []
    torch.func.vmap(lambda t: seen.append(C.rms_norm(t, None, 1e-6, False)) or t)(x)
    assert seen == [NotImplemented]
    out = torch.func.vmap(lambda t: torch_ops.rms_norm(t, None, 1e-6))(x)
    assert torch.equal(out, ops.rms_norm(x, None, 1e-6, False))


# ---------------------------------------------------------------- in place: version counters

def test_fused_add_direct_bumps_versions_as_the_op(device):
    x, w = _rms_args(device)
    r = torch.randn_like(x)
    for call in (C.fused_add_rms_norm, ops.fused_add_rms_norm):
        v = (x._version, r._version)
        call(x, r, w, 1e-6, False)
        assert (x._version, r._version) == (v[0] + 1, v[1] + 1), call
        with torch.no_grad():
            call(x, r, w, 1e-6, False)
        assert (x._version, r._version) == (v[0] + 2, v[1] + 2), call
    for call in (C.fused_add_rms_norm, ops.fused_add_rms_norm):  # normal tensors in inference mode: bumped
        v = (x._version, r._version)
        with torch.inference_mode():
            call(x, r, w, 1e-6, False)
        assert (x._version, r._version) == (v[0] + 1, v[1] + 1), call
    with torch.inference_mode():
        xi, ri = x.clone(), r.clone()
        C.fused_add_rms_norm(xi, ri, w, 1e-6, False)  # inference tensors: no version counter
    for call in (C.fused_add_rms_norm, ops.fused_add_rms_norm):
        before = xi.clone()
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            call(xi, ri, w, 1e-6, False)
        assert torch.equal(xi, before)  # refused before the write


# ---------------------------------------------------------------- random calls: direct == op

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _same(direct, op, args):
    """The direct call gives the op's result bitwise, or the op's error, or NotImplemented."""
    try:
        got = direct(*args)
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)) as expected:
            op(*args)
        assert str(expected.value).split("\nException")[0] == str(e).split("\nException")[0]
        return
    if got is NotImplemented:
        return
    want = op(*args)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # (eps = 0, N = 1: NaN both)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(0, 5), n=st.sampled_from([1, 7, 32, 96]), group=st.sampled_from([None, 1, 3, 16, 32]),
       dt=st.sampled_from(_DTYPES), wdt=st.sampled_from([None, *_DTYPES]), bias=st.booleans(), gate=st.booleans(),
       nbg=st.booleans(), rms=st.booleans(), act=st.sampled_from(["silu", "swish", "sigmoid", "relu"]),
       eps=st.sampled_from([1e-6, 0.0, -1.0, 1e-2]), strided=st.booleans(), gemma=st.booleans())
def test_random_calls_match_the_ops(m, n, group, dt, wdt, bias, gate, nbg, rms, act, eps, strided, gemma, device):
    g = torch.Generator().manual_seed(m * 1000 + n)
    rnd = lambda *s, dtype=dt: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    x = rnd(m, 2 * n)[:, :n] if strided else rnd(m, n)
    z = rnd(m, n) if gate else None
    w = rnd(n, dtype=wdt) if wdt is not None else None
    b = rnd(n, dtype=wdt) if (bias and wdt is not None) else None
    _same(C.gated_norm_infer, ops.gated_norm_infer, (x, w, b, z, eps, group, nbg, rms, act))
    out1, out2 = torch.full_like(x, 7.0), torch.full_like(x, 7.0)
    args = (x, w, b, z, eps, group, nbg, rms, act)
    try:
        done = C.gated_norm_infer_out(*args, out1)
    except RuntimeError as e:
        with pytest.raises(RuntimeError) as expected:
            ops.gated_norm_fwd_out(*args, out2)
        assert str(expected.value).split("\nException")[0] == str(e).split("\nException")[0]
    else:
        if done is not NotImplemented:
            ops.gated_norm_fwd_out(*args, out2)
            torch.testing.assert_close(out1, out2, rtol=0, atol=0, equal_nan=True)
    _same(C.rms_norm, ops.rms_norm, (x, w, eps, gemma))
    r = rnd(m, n)
    _same(C.add_rms_norm_infer, ops.add_rms_norm_infer, (x, r, w, eps, rms, gemma))
    x1, r1, x2, r2 = x.clone(), r.clone(), x.clone(), r.clone()
    try:
        C.fused_add_rms_norm(x1, r1, w, eps, gemma)
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match="gatednorm"):
            ops.fused_add_rms_norm(x2, r2, w, eps, gemma)
        assert "gatednorm" in str(e)
        return
    ops.fused_add_rms_norm(x2, r2, w, eps, gemma)
    for a, b in ((x1, x2), (r1, r2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still used
def test_jit_trace_records_the_ops(device):
    """Tracing sets a dispatch key in TLS: the direct entry points step aside, so the
    traced graph holds the op (else it would have baked in the result)."""
    x, w, _, z = make_inputs((4, 64), torch.float32, device, bias=False)
    r = torch.randn_like(x)

    def f(x, z, r):
        y = torch_ops.layernorm_fn(x, w, None, z, 1e-6, None, True, True, "silu")
        out, res = torch_ops.add_rms_norm(y, r, w, 1e-6)
        return torch_ops.rms_norm(out + res, w, 1e-6)

    with torch.no_grad():
        traced = torch.jit.trace(f, (x, z, r))
    graph = str(traced.graph)
    for op in ("gatednorm::gated_norm_infer", "gatednorm::add_rms_norm_infer", "gatednorm::rms_norm"):
        assert op in graph, op
    x2, z2, r2 = torch.randn_like(x), torch.randn_like(x), torch.randn_like(x)
    with torch.no_grad():
        assert torch.equal(traced(x2, z2, r2), f(x2, z2, r2))
