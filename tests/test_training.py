"""Training through autograd: the example of torch_ops/training_example.py (a tiny hybrid
LM with a fused add + RMSNorm and a gated RMSNorm in every block, x and z row-strided
views of one projection) trained with our ops and with the pure-PyTorch reference from
the same weights and data. The loss curves must agree within the example's stated
tolerance (CURVE_RTOL, derived there) and the loss must fall. Deliberately wrong
references show that the tolerance is tight enough to catch real mistakes."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torch_ops import training_example as te

STEPS = 30  # ~2 s on a 2-core CPU for both runs


class _RecordOps(TorchDispatchMode):
    """Names of the ops that reach the dispatcher below autograd."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


def _ops_used(model, device):
    cfg = te.Config()
    ids = te.make_data(cfg, 1, 0)[0].to(device)
    with _RecordOps() as rec:
        model(ids[:, :-1]).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return {n for n in rec.names if n.startswith("gatednorm::")}


def test_models_use_the_intended_implementation(device):
    """The comparison is meaningful only if 'ops' runs our kernels (forward and backward of
    both ops) and 'ref' runs none of them."""
    torch.manual_seed(0)
    cfg = te.Config()
    ours = te.TinyHybridLM(cfg, "ops").to(device)
    ref = te.TinyHybridLM(cfg, "ref").to(device)
    assert _ops_used(ours, device) >= {"gatednorm::gated_norm", "gatednorm::gated_norm_bwd",
                                       "gatednorm::add_rms_norm", "gatednorm::add_rms_norm_bwd"}
    assert _ops_used(ref, device) == set()
    assert list(dict(ours.named_parameters())) == list(dict(ref.named_parameters()))


def test_training_curves_match_reference(device):
    res = te.run(device, steps=STEPS, seed=0)
    assert len(res.ours) == len(res.ref) == STEPS
    assert all(torch.isfinite(torch.tensor(res.ours + res.ref)))
    assert res.gap <= te.CURVE_RTOL, (f"curves differ by {res.gap:.2e} > {te.CURVE_RTOL:.0e}\n"
                                      f"{te.report(res, 5, te.Config())}")
    assert res.decreased, f"loss did not fall: {res.ours[0]:.4f} -> {res.ours[-1]:.4f}"
    assert res.ours[-1] < 0.8 * res.ours[0]
    assert res.passed


def _wrong_group_size(model):
    for block in model.blocks:
        if block.kind == "mamba2":
            block.norm.group_size = 16


def _frozen_gated_norm_weights(model):  # as if dw of the gated norm were dropped
    for block in model.blocks:
        block.norm.weight.requires_grad_(False)


def _eps_times_10(model):
    for block in model.blocks:
        block.norm.eps *= 10


def _gate_order_flipped(model):
    model.blocks[0].norm.norm_before_gate = not model.blocks[0].norm.norm_before_gate


@pytest.mark.parametrize("mutate", [_wrong_group_size, _frozen_gated_norm_weights, _eps_times_10,
                                    _gate_order_flipped], ids=lambda f: f.__name__.strip("_"))
def test_tolerance_catches_wrong_reference(mutate, device):
    """Measured on the CPU after 30 steps: 8.9e-3, 5.7e-4, 1.8e-4, 1.4e-2; the tolerance is 1e-5."""
    res = te.run(device, steps=STEPS, seed=0, mutate_ref=mutate)
    assert res.gap > 10 * te.CURVE_RTOL, f"a wrong reference went unnoticed: gap {res.gap:.2e}"
    assert not res.passed


def test_cli_prints_pass(device, capsys):
    assert te.main(["--device", device, "--steps", "12", "--every", "4"]) == 0
    out = capsys.readouterr().out
    assert "max relative difference of the curves" in out and "ms/step" in out
    assert out.rstrip().endswith("PASS")
