"""jax.custom_vjp over the FFI calls: gradients for query, key, value and the
additional keys/values, and for the lse output when it is returned.

Residuals are the inputs plus out and lse, as in every flash-style
backward; nothing [tokens x window]-sized is kept.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from . import _ffi


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def attend(cfg: _ffi.Config, return_lse: bool, q, k, v, additional):
    """out, or (out, lse) if return_lse. additional: None or (keys, values)."""
    results = _ffi.forward(cfg, q, k, v, additional, with_lse=return_lse)
    return (results[0], results[1]) if return_lse else results[0]


def _attend_fwd(cfg, return_lse, q, k, v, additional):
    # symbolic_zeros=True wraps each primal leaf; only the values matter here.
    q, k, v, additional = jax.tree.map(lambda p: p.value, (q, k, v, additional))
    out, lse = _ffi.forward(cfg, q, k, v, additional, with_lse=True)
    return ((out, lse) if return_lse else out), (q, k, v, additional, out, lse)


def _attend_bwd(cfg, return_lse, residuals, cotangent):
    q, k, v, additional, out, lse = residuals
    d_out, d_lse = cotangent if return_lse else (cotangent, None)
    if isinstance(d_out, SymbolicZero):
        d_out = jnp.zeros(out.shape, out.dtype)
    grads = _ffi.backward(cfg, q, k, v, out, lse, d_out, additional)
    if d_lse is not None and not isinstance(d_lse, SymbolicZero):
        grads = [g + e.astype(g.dtype) for g, e in zip(grads, _lse_grads(cfg, q, k, v, additional, lse, d_lse))]
    d_q, d_k, d_v = grads[:3]
    return d_q, d_k, d_v, (tuple(grads[3:]) if additional is not None else None)


def _lse_grads(cfg, q, k, v, additional, lse, d_lse):
    """Gradients of sum(d_lse * lse), from two more nhood calls.

    d lse_i / d s_ij = P_ij, so with logits s = scale * q.k:
      d_q_i = scale * d_lse_i * sum_j P_ij k_j   -> attention with keys as values
      d_k_j = scale * sum_i P_ij d_lse_i q_i     -> the d_value of a backward whose
                                                    values are the keys and d_out = scale * d_lse * q
    This never depends on how a backend uses `out`, so it is exact for all of them.
    """
    scale = cfg.scale if cfg.scale is not None else q.shape[-1] ** -0.5
    kk = None if additional is None else (additional[0], additional[0])
    (pk,) = _ffi.forward(cfg, q, k, k, kk, with_lse=False)
    weight = (scale * d_lse)[..., None]
    d_q = (weight * pk.astype(jnp.float32))
    pseudo_d_out = (weight * q.astype(jnp.float32)).astype(q.dtype)
    grads = _ffi.backward(cfg, q, k, k, pk, lse, pseudo_d_out, kk)
    d_k = grads[2]
    extra = [grads[4], jnp.zeros(additional[1].shape, additional[1].dtype)] if additional is not None else []
    return [d_q, d_k, jnp.zeros(v.shape, v.dtype)] + extra


attend.defvjp(_attend_fwd, _attend_bwd, symbolic_zeros=True)
