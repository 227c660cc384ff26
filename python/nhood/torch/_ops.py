"""nhood's kernels as torch.library custom ops ("nhood::na_forward",
"nhood::na_backward"), with fake implementations for torch.compile and an
autograd formula that runs nhood's backward kernels.

The ops take normalized window arguments (3-tuples padded with 1s, as the
core wants them), so the Python wrappers do argument checking once, outside
any graph. lse is always computed by the forward op: backward needs it, and
it is small (float32 [batch, *spatial, heads]).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import functional as _functional


def _window(rank, *per_axis):
    # The ops carry window arguments padded to 3 axes; the core path wants `rank` entries.
    return tuple(tuple(v[:rank]) for v in per_axis)


@torch.library.custom_op("nhood::na_forward", mutates_args=())
def na_forward(query: Tensor, key: Tensor, value: Tensor, additional_keys: Optional[Tensor],
               additional_values: Optional[Tensor], rank: int, kernel_size: list[int], stride: list[int],
               dilation: list[int], is_causal: list[bool], scale: Optional[float],
               backend: str) -> tuple[Tensor, Tensor]:
    # The framework-free path: torch tensors in, torch tensors out (DLPack, no copies).
    return _functional._na_forward(rank, query, key, value, *_window(rank, kernel_size, stride, dilation, is_causal),
                                   scale, additional_keys, additional_values, True, backend, None)


@na_forward.register_fake
def _(query, key, value, additional_keys, additional_values, rank, kernel_size, stride, dilation, is_causal, scale,
      backend):
    out = query.new_empty((*query.shape[:-1], value.shape[-1]))
    lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
    return out, lse


@torch.library.custom_op("nhood::na_backward", mutates_args=())
def na_backward(query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, d_out: Tensor,
                additional_keys: Optional[Tensor], additional_values: Optional[Tensor], rank: int,
                kernel_size: list[int], stride: list[int], dilation: list[int], is_causal: list[bool],
                scale: Optional[float], backend: str, deterministic: bool) -> list[Tensor]:
    grads = _functional._na_backward(rank, query, key, value, out, lse, d_out,
                                     *_window(rank, kernel_size, stride, dilation, is_causal), scale,
                                     additional_keys, additional_values, backend, deterministic)
    return list(grads)


@na_backward.register_fake
def _(query, key, value, out, lse, d_out, additional_keys, additional_values, rank, kernel_size, stride, dilation,
      is_causal, scale, backend, deterministic):
    grads = [torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)]
    if additional_keys is not None:
        grads += [torch.empty_like(additional_keys), torch.empty_like(additional_values)]
    return grads


_WINDOW_ARGS = ("rank", "kernel_size", "stride", "dilation", "is_causal", "scale", "backend")


def _setup_context(ctx, inputs, output):
    query, key, value, add_k, add_v = inputs[:5]
    out, lse = output
    ctx.save_for_backward(query, key, value, add_k, add_v, out, lse)
    ctx.window = inputs[5:]
    # lse is an auxiliary output: its gradient is not propagated (see README, "PyTorch").
    ctx.mark_non_differentiable(lse)


def _backward(ctx, d_out, _d_lse):
    query, key, value, add_k, add_v, out, lse = ctx.saved_tensors
    rank, kernel, stride, dilation, causal, scale, backend = ctx.window
    grads = na_backward(query, key, value, out, lse, d_out, add_k, add_v, rank, kernel, stride, dilation, causal,
                        scale, backend, torch.are_deterministic_algorithms_enabled())
    if add_k is None:
        grads = list(grads) + [None, None]
    return (*grads, None, None, None, None, None, None, None)


na_forward.register_autograd(_backward, setup_context=_setup_context)

