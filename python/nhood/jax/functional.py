"""nhood.jax.na1d / na2d / na3d: the arguments of nhood.na1d..., for jax
arrays, differentiable (jax.grad), batchable (jax.vmap), jittable."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _args, _core
from . import _autodiff, _ffi

__all__ = ["na1d", "na2d", "na3d"]


_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _check(rank, query, key, value, additional_keys, additional_values):
    # libnhood checks everything again when the call runs, but an error there
    # is an XLA runtime error raised where the result is used; these checks
    # (with _validate) raise at trace time, as ValueError/TypeError with a
    # Python traceback, like nhood.na*d.
    want = rank + 3
    if str(query.dtype) not in _DTYPES:
        raise TypeError(f"query must have dtype float64, float32, float16 or bfloat16, got {query.dtype}")
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim != want:
            raise ValueError(f"{name} must have {want} dimensions [batch, *spatial({rank}), heads, dim], "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != query.dtype:
            raise TypeError(f"{name} must have query's dtype {query.dtype}, got {x.dtype}")
        if x.shape[0] != query.shape[0]:
            raise ValueError(f"{name} batch ({x.shape[0]}) must match query batch ({query.shape[0]})")
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is None:
        return None
    for name, x in (("additional_keys", additional_keys), ("additional_values", additional_values)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [batch, n_additional, heads_kv, dim], "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != query.dtype:
            raise TypeError(f"{name} must have query's dtype {query.dtype}, got {x.dtype}")
        if x.shape[0] != query.shape[0]:
            raise ValueError(f"{name} batch ({x.shape[0]}) must match query batch ({query.shape[0]})")
    return (additional_keys, additional_values)


def _validate(cfg, query, key, value, additional):
    """libnhood's own validation of the window and shapes (kernel_size *
    dilation <= axis length, stride <= kernel_size, heads % heads_kv, matching
    spatial shapes and head dims...), run at trace time on empty NumPy
    stand-ins with batch 0 (batches were compared in _check): nothing is
    computed. The backend is checked when the call runs (its device is XLA's)."""
    def empty(x, shape=None):
        return np.empty((0,) + tuple(x.shape[1:] if shape is None else shape), np.float32)

    extra = (None, None) if additional is None else tuple(empty(a) for a in additional)
    try:
        _core.forward(empty(query), empty(key), empty(value), empty(query, query.shape[1:-1] + value.shape[-1:]),
                      None, *extra, cfg.rank, cfg.kernel_size, cfg.stride, cfg.dilation, cfg.is_causal, cfg.scale,
                      "auto", 0)
    except (ValueError, TypeError) as e:
        # Shapes in the message are the stand-ins': give them the caller's batch back.
        raise type(e)(str(e).replace("(0, ", f"({query.shape[0]}, ")) from None


def _make(rank):
    def na(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False, backend=None, deterministic=False):
        query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
        if additional_keys is not None:
            additional_keys = jnp.asarray(additional_keys)
        if additional_values is not None:
            additional_values = jnp.asarray(additional_values)
        additional = _check(rank, query, key, value, additional_keys, additional_values)
        cfg = _ffi.Config(rank, _args.per_axis_ints(kernel_size, rank, "kernel_size"),
                          _args.per_axis_ints(stride, rank, "stride"),
                          _args.per_axis_ints(dilation, rank, "dilation"),
                          _args.per_axis_bools(is_causal, rank, "is_causal"), _args.scale_arg(scale),
                          _args.backend_arg(backend), bool(deterministic))
        _validate(cfg, query, key, value, additional)
        return _autodiff.attend(cfg, bool(return_lse), query, key, value, additional)

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = f"""{rank}-D neighborhood attention on jax arrays (see nhood.na{rank}d).

    query: [batch, *spatial({rank}), heads, head_dim]; key: [..., heads_kv, head_dim];
    value: [..., heads_kv, head_dim_v]; additional_keys/values: [batch, n_add, heads_kv, dim].
    Window arguments, scale, backend and deterministic (backward without run-to-run
    varying atomics) must be static Python values. Returns out
    [..., heads, head_dim_v], or (out, lse float32 [batch, *spatial, heads]) if return_lse.
    Differentiable in every array argument (lse included), and usable under jit and vmap.
    """
    return na


na1d, na2d, na3d = (_make(r) for r in (1, 2, 3))
