"""torch.autograd.Function wrappers of the unfused QK/AV ops (heads-last).

Forward calls nhood.unfused with grad mode off (so it runs the plain path);
backward calls the framework-free backward functions. Used by nhood.unfused
for torch tensors that need a graph, and by nhood.compat.natten.
"""
from __future__ import annotations

import torch

from .. import unfused


class QK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rank, query, key, rpb, additional_keys, kernel_size, dilation, stride, is_causal, backend):
        ctx.window = (rank, kernel_size, dilation, stride, is_causal, backend)
        ctx.save_for_backward(query, key, rpb, additional_keys)
        return unfused.qk(rank, query, key, kernel_size, dilation, stride, is_causal, rpb, additional_keys, backend)

    @staticmethod
    def backward(ctx, d_weights):
        rank, kernel_size, dilation, stride, is_causal, backend = ctx.window
        query, key, rpb, additional_keys = ctx.saved_tensors
        dq, dk, d_rpb, d_add = unfused.qk_backward(
            rank, query, key, d_weights, kernel_size, dilation, stride, is_causal,
            rpb if ctx.needs_input_grad[3] else None, additional_keys, backend,
            torch.are_deterministic_algorithms_enabled())
        return None, dq, dk, d_rpb, d_add, None, None, None, None, None


class AV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rank, weights, value, additional_values, kernel_size, dilation, stride, is_causal, backend):
        ctx.window = (rank, kernel_size, dilation, stride, is_causal, backend)
        ctx.save_for_backward(weights, value, additional_values)
        return unfused.av(rank, weights, value, kernel_size, dilation, stride, is_causal, additional_values, backend)

    @staticmethod
    def backward(ctx, d_out):
        rank, kernel_size, dilation, stride, is_causal, backend = ctx.window
        weights, value, additional_values = ctx.saved_tensors
        dw, dv, d_add = unfused.av_backward(rank, weights, value, d_out, kernel_size, dilation, stride, is_causal,
                                            additional_values, backend, torch.are_deterministic_algorithms_enabled())
        return None, dw, dv, d_add, None, None, None, None, None
