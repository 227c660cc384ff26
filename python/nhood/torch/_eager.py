"""The eager autograd path: the same forward and backward as the custom ops
in _ops.py, as a torch.autograd.Function that calls the framework-free
functions directly. A custom op call costs about 60 us (no grad) to 150 us
(with autograd) of dispatcher work in torch 2.13 on the CPU, more than the
kernels of small problems; outside torch.compile that cost buys nothing.
"""
from __future__ import annotations

import torch

from .. import functional as _functional


def forward(query, key, value, add_k, add_v, rank, kernel, stride, dilation, causal, scale, backend,
            return_lse=True):
    """Framework-free forward (window arguments as nhood.na*d takes them)."""
    return _functional._na_forward(rank, query, key, value, kernel, stride, dilation, causal, scale, add_k, add_v,
                                   return_lse, backend, None)


class NeighborhoodAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, add_k, add_v, rank, kernel, stride, dilation, causal, scale, backend):
        out, lse = forward(query, key, value, add_k, add_v, rank, kernel, stride, dilation, causal, scale, backend)
        ctx.save_for_backward(query, key, value, add_k, add_v, out, lse)
        ctx.window = (rank, kernel, stride, dilation, causal, scale, backend)
        ctx.mark_non_differentiable(lse)  # as in the custom op: lse carries no gradient
        return out, lse

    @staticmethod
    def backward(ctx, d_out, _d_lse):
        query, key, value, add_k, add_v, out, lse = ctx.saved_tensors
        rank, kernel, stride, dilation, causal, scale, backend = ctx.window
        grads = _functional._na_backward(rank, query, key, value, out, lse, d_out, kernel, stride, dilation, causal,
                                         scale, add_k, add_v, backend, torch.are_deterministic_algorithms_enabled())
        if add_k is None:
            grads = (*grads, None, None)
        return (*grads, None, None, None, None, None, None, None)
