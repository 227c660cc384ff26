"""Framework-free neighborhood attention: na1d/na2d/na3d, attention, their
backward functions and merge_attentions. Arguments and semantics follow
NATTEN; the layout is heads-last: [batch, *spatial, heads, head_dim]."""
from __future__ import annotations

from . import _arrays, _args
from . import _core

__all__ = ["na1d", "na2d", "na3d", "na1d_backward", "na2d_backward", "na3d_backward", "attention",
           "attention_backward", "merge_attentions"]


def _window(rank, kernel_size, stride, dilation, is_causal):
    return (_args.per_axis_ints(kernel_size, rank, "kernel_size"), _args.per_axis_ints(stride, rank, "stride"),
            _args.per_axis_ints(dilation, rank, "dilation"), _args.per_axis_bools(is_causal, rank, "is_causal"))


def _check_output(lib, out, name):
    if not lib.writable(out):
        raise ValueError(f"{name} must be a writable array, got a read-only {type(out).__name__}")


def _same_library(lib, arrays):
    for name, a in arrays:
        if a is not None and _arrays.adapter(a) is not lib:
            raise TypeError(f"{name} must be a {lib.name} array like query, got {type(a).__name__}")


def _na_forward(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys,
                additional_values, return_lse, backend, out):
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(query)
    inputs = [("key", key), ("value", value), ("additional_keys", additional_keys),
              ("additional_values", additional_values)]
    if out is None:
        _same_library(lib, inputs)
        out = lib.empty(query, tuple(query.shape[:-1]) + tuple(value.shape[-1:]))
    else:
        _same_library(lib, inputs + [("out", out)])
        _check_output(lib, out, "out")
    lse = lib.empty(query, tuple(query.shape[:-1]), "float32") if return_lse else None
    try:
        _core.forward(lib.as_input(query), lib.as_input(key), lib.as_input(value), out, lse,
                      None if additional_keys is None else lib.as_input(additional_keys),
                      None if additional_values is None else lib.as_input(additional_values),
                      rank, kernel, strides, dilations, causal, _args.scale_arg(scale), _args.backend_arg(backend),
                      lib.stream(query))
    except TypeError:
        _arrays.explain_refusal(lib, [("query", query)] + inputs + [("out", out)])
        raise
    out = lib.finish(out)
    return (out, lib.finish(lse)) if return_lse else out


def _na_backward(rank, query, key, value, out, lse, d_out, kernel_size, stride, dilation, is_causal, scale,
                 additional_keys, additional_values, backend, deterministic):
    kernel, strides, dilations, causal = _window(rank, kernel_size, stride, dilation, is_causal)
    lib = _arrays.adapter(query)
    _same_library(lib, [("key", key), ("value", value), ("out", out), ("lse", lse), ("d_out", d_out),
                        ("additional_keys", additional_keys), ("additional_values", additional_values)])
    dq = lib.empty(query, tuple(query.shape))
    dk = lib.empty(key, tuple(key.shape))
    dv = lib.empty(value, tuple(value.shape))
    has_add = additional_keys is not None
    dak = lib.empty(additional_keys, tuple(additional_keys.shape)) if has_add else None
    dav = lib.empty(additional_values, tuple(additional_values.shape)) if additional_values is not None else None
    a = lib.as_input
    try:
        _core.backward(a(query), a(key), a(value), a(out), a(lse), a(d_out), dq, dk, dv,
                       None if additional_keys is None else a(additional_keys),
                       None if additional_values is None else a(additional_values), dak, dav,
                       rank, kernel, strides, dilations, causal, _args.scale_arg(scale), _args.backend_arg(backend),
                       lib.stream(query), bool(deterministic))
    except TypeError:
        _arrays.explain_refusal(lib, [("query", query), ("key", key), ("value", value), ("out", out), ("lse", lse),
                                      ("d_out", d_out), ("additional_keys", additional_keys),
                                      ("additional_values", additional_values)])
        raise
    grads = (dq, dk, dv, dak, dav) if has_add else (dq, dk, dv)
    return tuple(lib.finish(g) for g in grads)


_wants_graph = None  # nhood.torch.functional.wants_graph, bound on the first torch call


def _torch_graph(query, key, value, additional_keys, additional_values, out) -> bool:
    """Whether a torch call needs nhood's registered custom ops (autograd,
    torch.compile, autocast) instead of the direct path. Imported lazily so
    that `import nhood` never imports torch."""
    global _wants_graph
    if _wants_graph is None:
        from .torch.functional import wants_graph as _wants_graph
    if not _wants_graph(query, key, value, additional_keys, additional_values):
        return False
    if out is not None:
        raise ValueError("out= cannot be used when autograd, torch.compile or autocast applies; "
                         "call without out= (nhood allocates the output)")
    return True


def _make_forward(rank):
    def na(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False, backend=None, out=None):
        if _arrays.adapter(query).name == "torch" and _torch_graph(query, key, value, additional_keys,
                                                                   additional_values, out):
            from .torch import functional as torch_na
            return torch_na.na(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                               additional_keys, additional_values, return_lse, backend)
        return _na_forward(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                           additional_keys, additional_values, return_lse, backend, out)

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = f"""{rank}-D neighborhood attention.

    query: [batch, *spatial({rank}), heads, head_dim]; key: [..., heads_kv, head_dim];
    value: [..., heads_kv, head_dim_v]. kernel_size, stride, dilation: int or {rank}-tuple;
    is_causal: bool or {rank}-tuple. additional_keys/values: [batch, n_add, heads_kv, dim]
    tokens every query attends to in the same softmax. Returns out [..., heads, head_dim_v]
    (and lse float32 [batch, *spatial, heads] if return_lse), arrays of query's library.
    backend: None (fastest that supports the problem) or a name from nhood.backends(device).
    """
    return na


def _make_backward(rank):
    def na_backward(query, key, value, out, lse, d_out, kernel_size, stride=1, dilation=1, is_causal=False,
                    scale=None, additional_keys=None, additional_values=None, backend=None, deterministic=False):
        return _na_backward(rank, query, key, value, out, lse, d_out, kernel_size, stride, dilation, is_causal,
                            scale, additional_keys, additional_values, backend, deterministic)

    na_backward.__name__ = na_backward.__qualname__ = f"na{rank}d_backward"
    na_backward.__doc__ = f"""Gradients of na{rank}d: returns (d_query, d_key, d_value), plus
    (d_additional_keys, d_additional_values) when additional tokens are given. `out` and `lse`
    are what na{rank}d returned with return_lse=True; d_out is the gradient of out."""
    return na_backward


na1d, na2d, na3d = (_make_forward(r) for r in (1, 2, 3))
na1d_backward, na2d_backward, na3d_backward = (_make_backward(r) for r in (1, 2, 3))


def _full_window(query, key, is_causal):
    if len(query.shape) != 4:
        raise ValueError(f"query must have 4 dimensions [batch, tokens, heads, head_dim], got shape {tuple(query.shape)}")
    if len(key.shape) != 4 or key.shape[1] != query.shape[1]:
        raise ValueError(f"key must have as many tokens as query ({query.shape[1]}), got shape {tuple(key.shape)};"
                         " for cross-attention pass the other sequence as additional_keys/values of na1d")
    return int(query.shape[1]), bool(is_causal)


def attention(query, key, value, is_causal=False, scale=None, return_lse=False, backend=None, out=None):
    """Dense (self) attention [batch, tokens, heads, dim]: a 1-D neighborhood
    as large as the sequence, so every nhood backend and feature applies."""
    kernel, causal = _full_window(query, key, is_causal)
    return na1d(query, key, value, kernel, is_causal=causal, scale=scale, return_lse=return_lse,
                backend=backend, out=out)


def attention_backward(query, key, value, out, lse, d_out, is_causal=False, scale=None, backend=None,
                       deterministic=False):
    kernel, causal = _full_window(query, key, is_causal)
    return na1d_backward(query, key, value, out, lse, d_out, kernel, is_causal=causal, scale=scale,
                         backend=backend, deterministic=deterministic)


def merge_attentions(outputs, lses):
    """Combines attention over disjoint key sets through their log-sum-exps.

    outputs: sequence of [batch, *spatial, heads, dim_v]; lses: matching float32
    [batch, *spatial, heads]. Returns (out, lse) as if one softmax had covered
    all keys. Uses the arrays' own library ops (differentiable in torch/JAX)."""
    outputs, lses = list(outputs), list(lses)
    if len(outputs) != len(lses) or not outputs:
        raise ValueError(f"outputs and lses must be non-empty sequences of equal length, got {len(outputs)} and {len(lses)}")
    lib = _arrays.adapter(outputs[0])
    for i, (o, l) in enumerate(zip(outputs, lses)):
        if tuple(o.shape) != tuple(outputs[0].shape):
            raise ValueError(f"outputs[{i}] shape {tuple(o.shape)} differs from outputs[0] {tuple(outputs[0].shape)}")
        if tuple(l.shape) != tuple(o.shape[:-1]):
            raise ValueError(f"lses[{i}] must have shape {tuple(o.shape[:-1])}, got {tuple(l.shape)}")
    xp = lib.xp
    top = lses[0]
    for l in lses[1:]:
        top = xp.maximum(top, l)
    weights = [xp.exp(l - top) for l in lses]
    total = weights[0]
    for w in weights[1:]:
        total = total + w
    merged = weights[0][..., None] * outputs[0]
    for w, o in zip(weights[1:], outputs[1:]):
        merged = merged + w[..., None] * o
    merged = merged / total[..., None]
    return lib.astype_like(merged, outputs[0]), top + xp.log(total)
