"""nhood.jax.na1d / na2d / na3d: the arguments of nhood.na1d..., for jax
arrays, differentiable (jax.grad), batchable (jax.vmap), jittable."""
from __future__ import annotations

import jax.numpy as jnp

from .. import _args
from . import _autodiff, _ffi

__all__ = ["na1d", "na2d", "na3d"]


def _check(rank, query, key, value, additional_keys, additional_values):
    # Shapes are checked again (fully) by libnhood when the call runs; these
    # checks move the common mistakes to trace time, with a Python traceback.
    want = rank + 3
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim != want:
            raise ValueError(f"{name} must have {want} dimensions [batch, *spatial({rank}), heads, dim], "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != query.dtype:
            raise TypeError(f"{name} must have query's dtype {query.dtype}, got {x.dtype}")
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
    return (additional_keys, additional_values)


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
