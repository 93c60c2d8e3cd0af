"""`gated_norm_fwd_out` with `out` being x itself (in place), as the sglang patch's
fused_norm_gate path calls it (torch_ops/integrations/sglang/gated.py): the kernels read every
element of a row before the same thread writes it, so the result must equal the out-of-place
one bitwise, statistics included. Every CUDA kernel path: the register path with aligned rows,
with unaligned rows (odd N, a view starting one element in), the loop path with the group staged
in shared memory (N 20000) and re-read from global memory (fp32 groups of 32768: 256 KB of x and
z per group)."""
import pytest
import torch

from conftest import make_inputs, ops


def _x(layout, dtype, device):
    """(x, the tensor x is a view of: nothing else of it may be written)."""
    shapes = {"aligned": (33, 1024), "odd-n": (17, 1001), "loop": (3, 20000), "loop-unstaged": (2, 65536)}
    if layout in shapes:
        x = make_inputs(shapes[layout], dtype, device, z=False, weight=False, bias=False)[0]
        return x, x
    base = torch.full((9, 1100), float("nan"), dtype=dtype, device=device)  # "offset-view"
    x = base[:, 1:1025]
    x.copy_(make_inputs((9, 1024), dtype, device, z=False, weight=False, bias=False)[0])
    return x, base


@pytest.mark.parametrize("layout", ["aligned", "odd-n", "offset-view", "loop", "loop-unstaged"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rms", [True, False], ids=["rms", "ln"])
@pytest.mark.parametrize("nbg", [True, False], ids=["norm-then-gate", "gate-then-norm"])
def test_fwd_out_in_place(layout, dtype, rms, nbg, device):
    x, base = _x(layout, dtype, device)
    n = x.shape[-1]
    _, w, b, z = make_inputs(x.shape, dtype, device, bias=not rms)
    group = n // 2 if n % 2 == 0 else None
    args = (w, b, z, 1e-6, group, nbg, rms, "swish")
    expected, mean_e, rstd_e = ops.gated_norm_fwd(x, *args)
    mean, rstd = ops.gated_norm_fwd_out(x, *args, x)
    assert torch.equal(x, expected), f"in place differs from out of place: max |diff| " \
                                     f"{(x.double() - expected.double()).abs().max().item()}"
    assert torch.equal(rstd, rstd_e) and torch.equal(mean, mean_e)
    if base is not x:  # the NaN columns around the view are untouched
        around = torch.ones_like(base, dtype=torch.bool)
        around[:, 1:1 + n] = False
        assert base[around].isnan().all()
