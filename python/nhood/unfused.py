"""Unfused neighborhood attention: QK (attention weights) and AV ops, with
relative positional bias (RPB), and their backward functions.

Semantics follow NATTEN <= 0.17's ``na*d_qk`` / ``na*d_av`` (and the legacy
``natten*dqkrpb`` / ``natten*dav``); the layout is heads-last like nhood.na*d:

    query   [B, *spatial, H, D]            key    [B, *spatial, H_kv, D]
    weights [B, *spatial, H, prod(K) + N]  value  [B, *spatial, H_kv, D]
    additional_keys/values [B, N, H_kv, D] rpb    [H, 2*K0-1, ..., 2*K{r-1}-1]

* ``na*d_qk`` returns raw dot products ``<q, k>`` plus the bias: no scale, no
  softmax (scale the query first, as NATTEN's callers do).
* Column order: the key at window offsets (i0, i1, i2) is column
  ``(i0*K1 + i1)*K2 + i2`` (row-major over the window box); additional tokens
  follow. Columns with no key (causal windows near the start) hold ``-inf``
  so softmax gives them 0; ``na*d_av`` ignores them and its backward writes 0
  to their ``d_weights``.
* RPB: the key at group offset r_a = (key_a - query_a) / dilation_a adds
  ``rpb[h, r_0 + K0-1, ...]`` (NATTEN's ``pb_start + ki`` wherever NATTEN
  defined it: odd kernels, non-causal, stride 1; here also even kernels, stride
  and causal axes). Additional tokens get no bias.
* ``softmax(na2d_qk(q * scale, k, K)) -> na2d_av(., v, K)`` equals
  ``na2d(q, k, v, K, scale=scale)``.

Torch tensors that need a graph go through torch.autograd.Function wrappers
(nhood.compat._autograd), so ``.backward()`` works; other libraries call the
backward functions directly.
"""
from __future__ import annotations

import math

from . import _arrays, _args, _core

__all__ = [f"na{r}d_{op}" for r in (1, 2, 3) for op in ("qk", "av", "qk_backward", "av_backward")]


def _window(rank, kernel_size, stride, dilation, is_causal):
    return (_args.per_axis_ints(kernel_size, rank, "kernel_size"), _args.per_axis_ints(stride, rank, "stride"),
            _args.per_axis_ints(dilation, rank, "dilation"), _args.per_axis_bools(is_causal, rank, "is_causal"))


def _same_library(lib, arrays):
    for name, a in arrays:
        if a is not None and _arrays.adapter(a).name != lib.name:
            raise TypeError(f"{name} must be a {lib.name} array like the first argument, got {type(a).__name__}")


def _opt(lib, x):
    return None if x is None else lib.as_input(x)


def _needs_graph(*arrays):
    """True for torch tensors that autograd must see (grad mode on, requires_grad)."""
    first = arrays[0]
    if type(first).__module__.split(".", 1)[0] != "torch":
        return False
    import torch

    return torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in arrays)


def _native(lib, named_arrays, fn, *args):
    """Calls the native op; if nanobind refuses an array, says which and why."""
    try:
        fn(*args)
    except TypeError:
        _arrays.explain_refusal(lib, named_arrays)
        raise


def _columns(rank, kernel, n_add):
    return math.prod(kernel[:rank]) + n_add


def qk(rank, query, key, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None, additional_keys=None,
       backend=None):
    if _needs_graph(query, key, rpb, additional_keys):
        from .compat import _autograd

        return _autograd.QK.apply(rank, query, key, rpb, additional_keys, kernel_size, dilation, stride, is_causal,
                                  backend)
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(query)
    _same_library(lib, [("key", key), ("rpb", rpb), ("additional_keys", additional_keys)])
    n_add = 0 if additional_keys is None else int(additional_keys.shape[1])
    weights = lib.empty(query, tuple(query.shape[:-1]) + (_columns(rank, kernel, n_add),))
    _native(lib, [("query", query), ("key", key), ("rpb", rpb), ("additional_keys", additional_keys)],
            _core.qk_forward, lib.as_input(query), lib.as_input(key), weights, _opt(lib, rpb),
            _opt(lib, additional_keys), rank, kernel, strides, dilations, causal, _args.backend_arg(backend),
            lib.stream(query))
    return lib.finish(weights)


def qk_backward(rank, query, key, d_weights, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None,
                additional_keys=None, backend=None, deterministic=False):
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(query)
    _same_library(lib, [("key", key), ("d_weights", d_weights), ("rpb", rpb), ("additional_keys", additional_keys)])
    dq = lib.empty(query, tuple(query.shape))
    dk = lib.empty(key, tuple(key.shape))
    d_rpb = None if rpb is None else lib.empty(query, tuple(rpb.shape))
    d_add = None if additional_keys is None else lib.empty(query, tuple(additional_keys.shape))
    a = lib.as_input
    _native(lib, [("query", query), ("key", key), ("d_weights", d_weights), ("additional_keys", additional_keys)],
            _core.qk_backward, a(query), a(key), a(d_weights), dq, dk, _opt(lib, additional_keys), d_add, d_rpb,
            rank, kernel, strides, dilations, causal, _args.backend_arg(backend), lib.stream(query),
            bool(deterministic))
    fin = lib.finish
    return fin(dq), fin(dk), None if d_rpb is None else fin(d_rpb), None if d_add is None else fin(d_add)


def av(rank, weights, value, kernel_size, dilation=1, stride=1, is_causal=False, additional_values=None,
       backend=None):
    if _needs_graph(weights, value, additional_values):
        from .compat import _autograd

        return _autograd.AV.apply(rank, weights, value, additional_values, kernel_size, dilation, stride, is_causal,
                                  backend)
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(weights)
    _same_library(lib, [("value", value), ("additional_values", additional_values)])
    out = lib.empty(value, tuple(weights.shape[:-1]) + tuple(value.shape[-1:]))
    _native(lib, [("weights", weights), ("value", value), ("additional_values", additional_values)],
            _core.av_forward, lib.as_input(weights), lib.as_input(value), out, _opt(lib, additional_values), rank,
            kernel, strides, dilations, causal, _args.backend_arg(backend), lib.stream(value))
    return lib.finish(out)


def av_backward(rank, weights, value, d_out, kernel_size, dilation=1, stride=1, is_causal=False,
                additional_values=None, backend=None, deterministic=False):
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(weights)
    _same_library(lib, [("value", value), ("d_out", d_out), ("additional_values", additional_values)])
    dw = lib.empty(weights, tuple(weights.shape))
    dv = lib.empty(value, tuple(value.shape))
    d_add = None if additional_values is None else lib.empty(value, tuple(additional_values.shape))
    a = lib.as_input
    _native(lib, [("weights", weights), ("value", value), ("d_out", d_out), ("additional_values", additional_values)],
            _core.av_backward, a(weights), a(value), a(d_out), dw, dv, _opt(lib, additional_values), d_add, rank,
            kernel, strides, dilations, causal, _args.backend_arg(backend), lib.stream(value), bool(deterministic))
    fin = lib.finish
    return fin(dw), fin(dv), None if d_add is None else fin(d_add)


def _bind(rank):
    def na_qk(query, key, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None, additional_keys=None,
              backend=None):
        return qk(rank, query, key, kernel_size, dilation, stride, is_causal, rpb, additional_keys, backend)

    def na_av(weights, value, kernel_size, dilation=1, stride=1, is_causal=False, additional_values=None,
              backend=None):
        return av(rank, weights, value, kernel_size, dilation, stride, is_causal, additional_values, backend)

    def na_qk_backward(query, key, d_weights, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None,
                       additional_keys=None, backend=None, deterministic=False):
        return qk_backward(rank, query, key, d_weights, kernel_size, dilation, stride, is_causal, rpb,
                           additional_keys, backend, deterministic)

    def na_av_backward(weights, value, d_out, kernel_size, dilation=1, stride=1, is_causal=False,
                       additional_values=None, backend=None, deterministic=False):
        return av_backward(rank, weights, value, d_out, kernel_size, dilation, stride, is_causal, additional_values,
                           backend, deterministic)

    na_qk.__doc__ = f"""{rank}-D QK: attention weights [B, *spatial, H, prod(kernel_size) + n_add] =
    <query, key> (+ rpb [H{', 2K-1' * rank}]) over each query's window, then additional_keys.
    No scale, no softmax; unused (causal) columns are -inf. See nhood.unfused."""
    na_av.__doc__ = f"""{rank}-D AV: out [B, *spatial, H, D] = weights . value over each query's
    window (+ additional_values); unused columns of weights are ignored. See nhood.unfused."""
    na_qk_backward.__doc__ = f"""Gradients of na{rank}d_qk: (d_query, d_key, d_rpb, d_additional_keys);
    d_rpb is None unless rpb is given (only its shape is read), d_additional_keys None without them."""
    na_av_backward.__doc__ = f"""Gradients of na{rank}d_av: (d_weights, d_value, d_additional_values);
    d_weights is 0 in unused columns, d_additional_values None without additional_values."""
    for f, op in ((na_qk, "qk"), (na_av, "av"), (na_qk_backward, "qk_backward"), (na_av_backward, "av_backward")):
        f.__name__ = f.__qualname__ = f"na{rank}d_{op}"
    return na_qk, na_av, na_qk_backward, na_av_backward


na1d_qk, na1d_av, na1d_qk_backward, na1d_av_backward = _bind(1)
na2d_qk, na2d_av, na2d_qk_backward, na2d_av_backward = _bind(2)
na3d_qk, na3d_av, na3d_qk_backward, na3d_av_backward = _bind(3)
