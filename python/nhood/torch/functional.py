"""Differentiable, compile- and autocast-aware neighborhood attention for torch.

nhood.na1d/2d/3d route torch tensors here when autograd, torch.compile or
autocast are involved (see `wants_graph`); everything else takes the
framework-free path directly. Here, the registered custom ops are used only
while torch.compile traces: in eager mode their dispatcher cost is avoided
(see _eager.py), with the same kernels and the same gradients.
"""
from __future__ import annotations

import torch

from .. import _args
from .. import functional as _functional
from . import _eager, _ops

__all__ = ["na1d", "na2d", "na3d", "attention"]

# Autocast lowers these to the autocast dtype; float64 is left alone, as torch's own autocast does.
_CASTABLE = (torch.float32, torch.float16, torch.bfloat16)


def _needs_grad(tensors) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


def wants_graph(query, key, value, additional_keys, additional_values) -> bool:
    """True when the call must go through this module rather than the plain
    framework-free path: under torch.compile tracing, when a gradient is
    needed, or under autocast."""
    return (torch.compiler.is_compiling() or _needs_grad((query, key, value, additional_keys, additional_values))
            or torch.is_autocast_enabled(query.device.type))


def _autocast(tensors, device_type):
    # Explicit autocast handling (rather than torch.library.register_autocast, which
    # casts to one fixed dtype): follow the dtype of the active autocast region.
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return [t.to(dtype) if t is not None and t.dtype in _CASTABLE else t for t in tensors]


def na(rank, query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
       additional_keys=None, additional_values=None, return_lse=False, backend=None):
    """Neighborhood attention of rank 1..3: the custom ops under torch.compile,
    an autograd.Function in eager mode when gradients are needed, else the plain path.
    lse, when returned, does not propagate gradients (it is marked non-differentiable)."""
    if not wants_graph(query, key, value, additional_keys, additional_values):  # e.g. modules in inference
        return _functional._na_forward(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                                       additional_keys, additional_values, return_lse, backend, None)
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    query, key, value, additional_keys, additional_values = _autocast(
        [query, key, value, additional_keys, additional_values], query.device.type)
    tensors = (query, key, value, additional_keys, additional_values)
    if torch.compiler.is_compiling():
        # Traced: the registered custom op (fake impl for shapes, its own autograd formula).
        kernel, strides, dilations, causal = _functional._window(rank, kernel_size, stride, dilation, is_causal)
        out, lse = _ops.na_forward(*tensors, rank, list(kernel), list(strides), list(dilations), list(causal),
                                   _args.scale_arg(scale), _args.backend_arg(backend))
    else:
        # Eager: window arguments go through as given; the framework-free path normalizes them.
        window = (rank, kernel_size, stride, dilation, is_causal, scale, backend)
        if _needs_grad(tensors):
            out, lse = _eager.NeighborhoodAttentionFunction.apply(*tensors, *window)
        else:  # autocast without gradients
            return _eager.forward(*tensors, *window, return_lse=return_lse)
    return (out, lse) if return_lse else out


def _make(rank):
    def na_rank(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
                additional_keys=None, additional_values=None, return_lse=False, backend=None):
        return na(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys,
                  additional_values, return_lse, backend)

    na_rank.__name__ = na_rank.__qualname__ = f"na{rank}d"
    na_rank.__doc__ = f"Differentiable nhood.na{rank}d for torch tensors (custom op; torch.compile friendly)."
    return na_rank


na1d, na2d, na3d = (_make(r) for r in (1, 2, 3))


def attention(query, key, value, is_causal=False, scale=None, return_lse=False, backend=None):
    """Differentiable dense self-attention [batch, tokens, heads, dim] (one window over all tokens)."""
    kernel, causal = _functional._full_window(query, key, is_causal)
    return na(1, query, key, value, kernel, is_causal=causal, scale=scale, return_lse=return_lse, backend=backend)
