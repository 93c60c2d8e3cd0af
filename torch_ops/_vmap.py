"""vmap rules for the inference ops (`torch.library.register_vmap`). The ops take any
leading dims, so when only the row tensors (x, z, residual) are batched the batch is one
call with the vmapped dim moved to the front. Batched parameters (an ensemble through
`torch.func.stack_module_state`) differ per sample: one call per sample, stacked.
Without a rule, vmap ran the ops per sample through its fallback, with a warning."""
from __future__ import annotations

import torch
from torch import Tensor


def _front(t, dim, size):
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def rows_rule(op, rows, params):
    """The vmap rule of `op`, whose arguments at positions `rows` are [..., N] tensors of
    rows and at `params` [N] parameters (other arguments are not tensors)."""

    def rule(info, in_dims, *args):
        n = info.batch_size
        if any(in_dims[i] is not None for i in params):
            per_sample = [op(*(a.select(d, b) if d is not None else a for a, d in zip(args, in_dims)))
                          for b in range(n)]
            if isinstance(per_sample[0], Tensor):
                return torch.stack(per_sample), 0
            outs = tuple(torch.stack(o) for o in zip(*per_sample))
            return outs, (0,) * len(outs)
        args = list(args)
        for i in rows:
            args[i] = _front(args[i], in_dims[i], n)
        out = op(*args)
        return out, (0 if isinstance(out, Tensor) else (0,) * len(out))

    return rule
