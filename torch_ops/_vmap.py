"""vmap rules for the forward ops (`torch.library.register_vmap`). The ops take any
leading dims, so when only the row tensors (x, z, residual) are batched the batch is one
call with the vmapped dim moved to the front. Batched parameters (an ensemble through
`torch.func.stack_module_state`) differ per sample: one call per sample, stacked.
Without a rule, vmap ran the ops per sample through its fallback, with a warning.
The differentiable forwards (gated_norm, add_rms_norm) have rules too: vmap runs them
below autograd, so the graph is built on the batch's call (and its backward is one call).
Their statistics are group-major over all rows ([ngroups * rows], element g * rows + r):
`stats` says which outputs are, and the rule hands each sample its own block layout."""
from __future__ import annotations

import torch
from torch import Tensor


def _front(t, dim, size):
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def _per_sample_stats(t: Tensor, n: int, ngroups: int) -> Tensor:
    """[ngroups * n * m] (element g * n*m + b * m + r) -> [n, ngroups * m] (g * m + r)."""
    if t.numel() == 0:  # RMSNorm's empty mean
        return t.new_empty((n, 0))
    return t.view(ngroups, n, -1).transpose(0, 1).reshape(n, -1)


def rows_rule(op, rows, params, stats=(), ngroups=lambda args: 1):
    """The vmap rule of `op`, whose arguments at positions `rows` are [..., N] tensors of
    rows and at `params` [N] parameters (other arguments are not tensors); the outputs at
    positions `stats` are statistics of `ngroups(args)` groups a row."""

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
        if stats:
            out = tuple(_per_sample_stats(o, n, ngroups(args)) if i in stats else o for i, o in enumerate(out))
        return out, (0 if isinstance(out, Tensor) else (0,) * len(out))

    return rule
