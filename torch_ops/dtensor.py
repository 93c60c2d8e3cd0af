"""DTensor sharding rules for the gatednorm ops (tensor / sequence parallel training,
torchtitan-style): without them DTensor refuses an op it has no strategy for.

    import torch_ops.dtensor
    torch_ops.dtensor.register()      # idempotent; the public functions call it on their
                                      # first DTensor argument in eager mode (under
                                      # torch.compile, call it before compiling)

Per row (and group) the norm needs the whole group, so a placement is acceptable when
every group stays on one rank:
- all Replicate;
- rows sharded (any dim but the last; x, z, residual alike; parameters replicated): the
  parameter gradients of the backwards are then Partial (a sum over ranks' rows). The
  ops that return statistics ([ngroups * M], group-major) take only dim 0 with one group,
  where the statistics are that same row shard;
- the last dim sharded with groups (`group_size` given, each rank holding whole groups:
  head-parallel Mamba2 / Qwen3-Next layouts): x, z, weight, bias, out and the
  statistics (group-major: a rank's groups are one block) all Shard on their last dim.
The in-place forms (`fused_add_rms_norm`, `rms_norm(out=)`) have no rule: the public
functions run them on the local shards after checking the placements (`local_rows`).
Importing torch.distributed.tensor costs ~0.6 s, so nothing here runs at import."""
from __future__ import annotations

import sys

import torch

_ops = torch.ops.gatednorm
_registered = False


def _given(t, placement):
    """`placement` for an optional tensor argument that is given, else None."""
    return placement if t is not None else None


def register() -> None:
    """Registers the sharding rules with DTensor (once)."""
    global _registered
    if _registered:
        return
    from torch.distributed.tensor import Partial, Replicate, Shard
    from torch.distributed.tensor.experimental import register_sharding

    R = Replicate()

    def row_dims(ndim):
        return range(ndim - 1)

    def last_ok(n, group_size):
        return group_size is not None and group_size != n

    # ---- gated
    def gated_forward(with_stats):
        def rule(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation):
            nd, n = x.ndim, x.shape[-1]
            ngroups = 1 if group_size is None else n // group_size
            out = []

            def add(xp, wp, stat):
                ins = [xp, _given(weight, wp), _given(bias, wp), _given(z, xp), None, None, None, None, None]
                mean = R if is_rms_norm else stat  # RMS: an empty mean on every rank
                out.append(([xp, mean, stat] if with_stats else [xp], ins))

            add(R, R, R)
            for d in row_dims(nd):
                if not with_stats or (d == 0 and ngroups == 1):
                    add(Shard(d), R, Shard(0))
            if last_ok(n, group_size):
                add(Shard(nd - 1), Shard(0), Shard(0))
            return out
        return rule

    register_sharding(_ops.gated_norm_infer.default)(gated_forward(False))
    register_sharding([_ops.gated_norm.default, _ops.gated_norm_fwd.default])(gated_forward(True))

    @register_sharding(_ops.gated_norm_bwd.default)
    def _(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation,
          recompute_output):
        nd, n = x.ndim, x.shape[-1]
        ngroups = 1 if group_size is None else n // group_size
        has_mean = mean.shape[0] > 0
        out = []

        def add(xp, wp, gradp, stat):
            outs = [xp, _given(weight, gradp), _given(bias, gradp), _given(z, xp), xp if recompute_output else None]
            ins = [xp, xp, _given(weight, wp), _given(bias, wp), _given(z, xp), stat if has_mean else R, stat]
            out.append((outs, ins + [None] * 6))

        add(R, R, R, R)
        if ngroups == 1 and nd >= 2:  # rows on dim 0 (a 1-D x is one row: its dim 0 is the group)
            add(Shard(0), R, Partial(), Shard(0))
        if last_ok(n, group_size):
            add(Shard(nd - 1), Shard(0), Shard(0), Shard(0))
        return out

    # ---- add + RMSNorm (no groups: rows only; the ops with rstd on dim 0 of a >= 2-D x)
    @register_sharding(_ops.rms_norm.default)
    def _(input, weight, eps, gemma=False):
        return [([pl], [pl, _given(weight, R), None, None]) for pl in [R, *map(Shard, row_dims(input.ndim))]]

    @register_sharding(_ops.add_rms_norm_infer.default)
    def _(x, residual, weight, eps, residual_in_fp32=False, gemma=False):
        return [([pl, pl], [pl, pl, _given(weight, R), None, None, None])
                for pl in [R, *map(Shard, row_dims(x.ndim))]]

    @register_sharding(_ops.add_rms_norm.default)
    def _(x, residual, weight, eps, residual_in_fp32=False, gemma=False):
        return [([pl, pl, pl], [pl, pl, _given(weight, R), None, None, None])
                for pl in [R] + ([Shard(0)] if x.ndim >= 2 else [])]

    @register_sharding(_ops.add_rms_norm_bwd.default)
    def _(dout, dresidual_out, h, weight, rstd, gemma):
        rules = [([R, R, _given(weight, R)], [R, _given(dresidual_out, R), R, _given(weight, R), R, None])]
        if h.ndim >= 2:
            s0 = Shard(0)
            rules.append(([s0, s0, _given(weight, Partial())],
                          [s0, _given(dresidual_out, s0), s0, _given(weight, R), s0, None]))
        return rules

    _registered = True


def any_dtensor(*tensors) -> bool:
    """Is one of `tensors` a DTensor? (False at no cost while DTensor is not imported.)"""
    if "torch.distributed.tensor" not in sys.modules:
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(t, DTensor) for t in tensors)


def local_rows(op: str, written: dict, weight):
    """The local tensors on which to run an in-place op over DTensors (`written`: name ->
    the tensors it writes, and reads, by rows; `weight`: replicated or a plain tensor).

    No sharding rule can serve an op that writes into its arguments: DTensor could
    redistribute a written argument first, and the write would land in a temporary. So
    the placements are checked here and the op runs on the local shards in place, which
    is exact when every row stays on one rank: the written tensors on one mesh with the
    same placements, each Replicate or Shard of a dim other than the last (not Partial:
    the norm of a partial sum is not the sum of norms), the weight replicated. Else a
    ValueError naming the argument. -> (local tensors in `written`'s order, local weight)."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    names = list(written)
    dts = [n for n in names if isinstance(written[n], DTensor)]
    if len(dts) < len(names):
        plain = next(n for n in names if n not in dts)
        other = dts[0] if dts else "weight"
        raise ValueError(f"gatednorm ({op}): `{other}` is a DTensor but `{plain}` is a plain tensor; pass "
                         f"{', '.join(names)} as DTensors with the same placements (or all as plain tensors)")
    first = written[names[0]]
    for name in names:
        t = written[name]
        if t.device_mesh != first.device_mesh or t.placements != first.placements:
            raise ValueError(f"gatednorm ({op}): `{name}` has placements {t.placements} on {t.device_mesh}, "
                             f"`{names[0]}` {first.placements} on {first.device_mesh}: they must be the same")
        for pl in t.placements:
            if not (isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim < t.ndim - 1)):
                raise ValueError(f"gatednorm ({op}): `{name}` has placement {pl}: in place, every row must stay on "
                                 f"one rank (Replicate, or Shard of a dim other than the last, {t.ndim - 1})")
    if isinstance(weight, DTensor):
        if weight.device_mesh != first.device_mesh or any(not isinstance(pl, Replicate) for pl in weight.placements):
            raise ValueError(f"gatednorm ({op}): `weight` must be replicated on the mesh of `{names[0]}`, "
                             f"got {weight.placements}")
        weight = weight.to_local()
    return [written[n].to_local() for n in names], weight


def maybe_register(*tensors) -> None:
    """register() when one of `tensors` is a DTensor (the public functions' slow path)."""
    if _registered or "torch.distributed.tensor" not in sys.modules:
        return
    from torch.distributed.tensor import DTensor

    if any(isinstance(t, DTensor) for t in tensors):
        register()
