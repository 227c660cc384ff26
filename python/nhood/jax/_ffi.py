"""The two XLA FFI targets of nhood (bindings/jax/) and calls to them.

Targets are registered once, at import, for every platform nhood._jax_ffi
was compiled for. The calls use vmap_method="broadcast_all": under vmap XLA
passes every operand with the mapped axes in front, and the handlers fold
all leading axes into batch (a dense [V, B, ...] buffer is [V*B, ...]).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jax_ffi

FORWARD = "nhood_na_forward"
BACKWARD = "nhood_na_backward"


def _register():
    for platform, targets in _jax_ffi.targets.items():
        for name, capsule in targets.items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)


_register()


class Config(NamedTuple):
    """Static (hashable) arguments of one neighborhood attention call."""
    rank: int
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    is_causal: tuple[bool, bool, bool]
    scale: float | None
    backend: str
    deterministic: bool = False  # backward only: no run-to-run varying atomics

    def attributes(self) -> dict:
        # Explicit NumPy types: they fix the attribute types the handlers
        # decode (i32 arrays, f64 scale) whatever jax_enable_x64 says.
        return dict(rank=np.int32(self.rank), kernel_size=np.array(self.kernel_size, np.int32),
                    stride=np.array(self.stride, np.int32), dilation=np.array(self.dilation, np.int32),
                    is_causal=np.array(self.is_causal, np.int32), has_scale=np.bool_(self.scale is not None),
                    scale=np.float64(0.0 if self.scale is None else self.scale), backend=self.backend)


def _like(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def forward(cfg: Config, q, k, v, additional, with_lse: bool):
    """-> [out] or [out, lse]; additional: None or (keys, values)."""
    results = [jax.ShapeDtypeStruct(q.shape[:-1] + v.shape[-1:], q.dtype)]
    if with_lse:
        results.append(jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32))
    args = (q, k, v) + (tuple(additional) if additional is not None else ())
    call = jax.ffi.ffi_call(FORWARD, results, vmap_method="broadcast_all")
    return call(*args, **cfg.attributes())


def backward(cfg: Config, q, k, v, out, lse, d_out, additional):
    """-> [d_query, d_key, d_value] (+ [d_additional_keys, d_additional_values])."""
    extra = tuple(additional) if additional is not None else ()
    results = [_like(q), _like(k), _like(v)] + [_like(a) for a in extra]
    call = jax.ffi.ffi_call(BACKWARD, results, vmap_method="broadcast_all")
    return call(q, k, v, out, lse, d_out, *extra, **cfg.attributes(), deterministic=np.bool_(cfg.deterministic))
