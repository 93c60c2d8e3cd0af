"""Bad input raises a RuntimeError starting with "gatednorm:" that names the argument;
nothing crashes the process."""
import math

import pytest
import torch

from conftest import make_inputs, ops, requires_cuda

M, N = 4, 32


def fwd_args(device, **over):
    """Valid gated_norm_fwd arguments (a dict in schema order), with overrides."""
    x, w, b, z = make_inputs((M, N), torch.float32, device)
    a = dict(x=x, weight=w, bias=b, z=z, eps=1e-6, group_size=8, norm_before_gate=True, is_rms_norm=False,
             activation="swish")
    a.update(over)
    return a


def fwd(a):
    return ops.gated_norm_fwd(*a.values())


def raises(arg, fn, *args, **kwargs):
    """The message starts with 'gatednorm:' and names `arg`."""
    with pytest.raises(RuntimeError, match=rf"gatednorm: .*\b{arg}\b"):
        fn(*args, **kwargs)


BAD_FWD = {
    "group_size_not_divisor": ("group_size", dict(group_size=5)),
    "group_size_zero": ("group_size", dict(group_size=0)),
    "group_size_negative": ("group_size", dict(group_size=-8)),
    "group_size_too_big": ("group_size", dict(group_size=2 * N)),
    "activation_gelu": ("activation", dict(activation="gelu")),
    "activation_empty": ("activation", dict(activation="")),
    "eps_negative": ("eps", dict(eps=-1e-6)),
    "eps_nan": ("eps", dict(eps=math.nan)),
    "eps_inf": ("eps", dict(eps=math.inf)),
}


@pytest.mark.parametrize("name", list(BAD_FWD))
def test_bad_scalar_args(name, device):
    arg, over = BAD_FWD[name]
    raises(arg, fwd, fwd_args(device, **over))


def bad_tensor_cases(device):
    f = dict(device=device)
    return {
        "z_shape": ("z", dict(z=torch.randn(M, N + 1, **f))),
        "z_rank": ("z", dict(z=torch.randn(1, M, N, **f))),
        "z_dtype": ("z", dict(z=torch.randn(M, N, dtype=torch.float16, **f))),
        "weight_shape": ("weight", dict(weight=torch.randn(N + 1, **f))),
        "weight_2d": ("weight", dict(weight=torch.randn(1, N, **f))),
        "weight_int": ("weight", dict(weight=torch.ones(N, dtype=torch.int32, **f), bias=None)),
        "bias_shape": ("bias", dict(bias=torch.randn(N - 1, **f))),
        "bias_dtype": ("bias", dict(bias=torch.randn(N, dtype=torch.bfloat16, **f))),
        "x_int": ("x", dict(x=torch.ones(M, N, dtype=torch.int64, **f), z=None)),
        "x_complex": ("x", dict(x=torch.randn(M, N, dtype=torch.complex64, **f), z=None)),
        "x_bool": ("x", dict(x=torch.ones(M, N, dtype=torch.bool, **f), z=None)),
    }


CASE_NAMES = list(bad_tensor_cases("cpu"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_tensor_args(name, device):
    arg, over = bad_tensor_cases(device)[name]
    raises(arg, fwd, fwd_args(device, **over))
    # the same check guards the _out forward and the backward
    a = fwd_args(device, **over)
    raises(arg, ops.gated_norm_fwd_out, *a.values(), torch.empty_like(a["x"]))


def test_x_zero_dim_and_empty_last_dim(device):
    raises("x", fwd, fwd_args(device, x=torch.tensor(1.0, device=device), z=None, weight=None, bias=None,
                               group_size=None))
    raises("x", fwd, fwd_args(device, x=torch.randn(4, 0, device=device), z=None, weight=None, bias=None,
                               group_size=None))


def test_bad_out(device):
    """out= must have x's shape and dtype and a unit-stride last dim (a copy would lose the write)."""
    a = fwd_args(device)
    for out, _why in ((torch.empty(N, M, device=device).t(), "last-dim stride"),
                      (torch.empty(M, N + 1, device=device), "shape"),
                      (torch.empty(M * N, device=device), "rank"),
                      (torch.empty(M, N, dtype=torch.float16, device=device), "dtype"),
                      (torch.empty(N, device=device).expand(M, N), "overlapping rows")):
        with pytest.raises(RuntimeError, match=r"gatednorm: .*\bout\b"):
            ops.gated_norm_fwd_out(*a.values(), out)


def bwd_setup(device, rms=False):
    a = fwd_args(device, is_rms_norm=rms)
    out, mean, rstd = fwd(a)
    return a, torch.randn_like(out), mean, rstd


def bwd(a, dy, mean, rstd, recompute=False, **over):
    args = dict(dy=dy, x=a["x"], weight=a["weight"], bias=a["bias"], z=a["z"], mean=mean, rstd=rstd, eps=a["eps"],
                group_size=a["group_size"], norm_before_gate=a["norm_before_gate"], is_rms_norm=a["is_rms_norm"],
                activation=a["activation"], recompute_output=recompute)
    args.update(over)
    return ops.gated_norm_bwd(*args.values())


def test_bad_backward_args(device):
    a, dy, mean, rstd = bwd_setup(device)
    f = dict(device=device)
    raises("dy", bwd, a, torch.randn(M, N + 1, **f), mean, rstd)
    raises("dy", bwd, a, torch.randn(M * N, **f), mean, rstd)
    raises("dy", bwd, a, dy.half(), mean, rstd)
    raises("mean", bwd, a, dy, mean[:-1], rstd)
    raises("mean", bwd, a, dy, mean.double(), rstd)
    raises("mean", bwd, a, dy, torch.empty(0, **f), rstd)
    raises("rstd", bwd, a, dy, mean, rstd[:-1])
    raises("rstd", bwd, a, dy, mean, rstd.half())
    raises("rstd", bwd, a, dy, mean, rstd.reshape(-1, 1))
    raises("rstd", bwd, a, dy, mean, torch.stack([rstd, rstd], 1)[:, 0])  # non-contiguous
    raises("group_size", bwd, a, dy, mean, rstd, group_size=3)
    raises("activation", bwd, a, dy, mean, rstd, activation="relu")
    raises("eps", bwd, a, dy, mean, rstd, eps=-1.0)
    raises("z", bwd, a, dy, mean, rstd, z=torch.randn(M, N, dtype=torch.float64, **f))
    raises("weight", bwd, a, dy, mean, rstd, weight=torch.randn(N * 2, **f))
    ar, dyr, _, rstdr = bwd_setup(device, rms=True)
    raises("rstd", bwd, ar, dyr, torch.empty(0, **f), rstdr[1:])


def test_bad_backward_out_args(device):
    a, dy, mean, rstd = bwd_setup(device)
    f = dict(device=device)
    x = a["x"]
    base = [dy, x, a["weight"], a["bias"], a["z"], mean, rstd, 1e-6, 8, True, False, "swish"]
    dx, dz = torch.empty_like(x), torch.empty_like(x)
    raises("dz", ops.gated_norm_bwd_out, *base[:4], None, *base[5:], dx, dz, None)  # dz without z
    raises("dz", ops.gated_norm_bwd_out, *base, dx, None, None)  # z without dz
    raises("dx", ops.gated_norm_bwd_out, *base, torch.empty(N, M, **f).t(), dz, None)
    raises("dx", ops.gated_norm_bwd_out, *base, torch.empty(M, N, dtype=torch.float16, **f), dz, None)
    raises("dz", ops.gated_norm_bwd_out, *base, dx, torch.empty(M, N + 2, **f), None)
    raises("out", ops.gated_norm_bwd_out, *base, dx, dz, torch.empty(N, M, **f).t())
    w = a["weight"]
    raises("dw", ops.gated_norm_bwd_out, *base, dx, dz, None, torch.empty(N + 1, **f))
    raises("dw", ops.gated_norm_bwd_out, *base, dx, dz, None, torch.empty(N, dtype=torch.float16, **f))
    raises("dw", ops.gated_norm_bwd_out, *base, dx, dz, None, torch.empty(2 * N, **f)[::2])  # non-contiguous
    raises("db", ops.gated_norm_bwd_out, *base, dx, dz, None, torch.empty_like(w), torch.empty(N, 1, **f))
    no_w = list(base)
    no_w[2] = None
    raises("dw", ops.gated_norm_bwd_out, *no_w, dx, dz, None, torch.empty_like(w))  # dw without weight


@requires_cuda
def test_mixed_devices():
    """Tensors on different devices are rejected (not read through a wrong pointer)."""
    for k in ("weight", "bias", "z"):
        a = fwd_args("cuda")
        a[k] = a[k].cpu()
        raises(k, fwd, a)
    a = fwd_args("cuda")
    raises("out", ops.gated_norm_fwd_out, *a.values(), torch.empty(M, N))
    a, dy, mean, rstd = bwd_setup("cuda")
    raises("dy", bwd, a, dy.cpu(), mean, rstd)
    raises("rstd", bwd, a, dy, mean, rstd.cpu())
    if torch.cuda.device_count() > 1:
        a = fwd_args("cuda:0")
        a["z"] = a["z"].to("cuda:1")
        raises("z", fwd, a)
