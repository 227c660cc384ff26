"""Per-library adapters: how to allocate, inspect and hand back arrays.

nhood never copies inputs: native code reads them through DLPack. Outputs
are allocated by the caller's own library (its allocator, device and
stream), so NumPy in gives NumPy out and torch in gives torch out.
"""
from __future__ import annotations

import numpy as _np

_FLOAT32 = "float32"


class Adapter:
    """Operations nhood needs from one array library."""

    name = "generic"
    xp = _np  # namespace with maximum/exp/log, used by merge_attentions

    def as_input(self, x):
        """What native code imports through DLPack (e.g. torch detaches)."""
        return x

    def empty(self, like, shape, dtype=None):
        return _np.empty(shape, dtype=_np.float32 if dtype == _FLOAT32 else like.dtype)

    def device(self, x):
        return ("cpu", 0)

    def stream(self, x):
        return 0

    def writable(self, x):
        return True

    def astype_like(self, x, like):
        return x.astype(like.dtype)

    def finish(self, x):
        """Turns a freshly written output into the caller's array type."""
        return x


class NumpyAdapter(Adapter):
    name = "numpy"

    def writable(self, x):
        return bool(x.flags.writeable)


class TorchAdapter(Adapter):
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.xp = torch

    def as_input(self, x):
        return x.detach() if x.requires_grad else x

    def empty(self, like, shape, dtype=None):
        t = self.torch
        return t.empty(shape, dtype=t.float32 if dtype == _FLOAT32 else like.dtype, device=like.device)

    def device(self, x):
        d = x.device
        if d.type == "cpu":
            return ("cpu", 0)
        return (d.type, d.index if d.index is not None else 0)

    def stream(self, x):
        if x.device.type != "cuda":
            return 0
        return self.torch.cuda.current_stream(x.device).cuda_stream

    def astype_like(self, x, like):
        return x.to(like.dtype)


class CupyAdapter(Adapter):
    name = "cupy"

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.xp = cupy

    def empty(self, like, shape, dtype=None):
        cp = self.cupy
        with cp.cuda.Device(like.device.id):
            return cp.empty(shape, dtype=cp.float32 if dtype == _FLOAT32 else like.dtype)

    def device(self, x):
        return ("cuda", x.device.id)

    def stream(self, x):
        return self.cupy.cuda.get_current_stream().ptr


class JaxAdapter(Adapter):
    """JAX arrays are immutable: outputs are written into NumPy buffers and
    handed back as JAX arrays (CPU). Under jit, use nhood.jax (XLA FFI)."""

    name = "jax"

    def __init__(self):
        import jax.numpy as jnp

        self.jnp = jnp
        self.xp = jnp

    def empty(self, like, shape, dtype=None):
        return _np.empty(shape, dtype=_np.float32 if dtype == _FLOAT32 else _np.dtype(like.dtype))

    def device(self, x):
        dev = next(iter(x.devices()))
        return ("cpu", 0) if dev.platform == "cpu" else ("cuda", dev.id)

    def writable(self, x):
        return False

    def astype_like(self, x, like):
        return x.astype(like.dtype)

    def finish(self, x):
        return self.jnp.asarray(x)


_BY_MODULE = {"numpy": NumpyAdapter, "torch": TorchAdapter, "cupy": CupyAdapter, "jax": JaxAdapter,
              "jaxlib": JaxAdapter}
_cache: dict[type, Adapter] = {}


def adapter(x) -> Adapter:
    """The adapter of x's library (cached per type: this is on the hot path)."""
    tp = type(x)
    found = _cache.get(tp)
    if found is None:
        root = tp.__module__.split(".", 1)[0]
        cls = _BY_MODULE.get(root)
        if cls is None:
            if not hasattr(x, "__dlpack__"):
                raise TypeError(f"expected an array with __dlpack__ (NumPy, PyTorch, CuPy, JAX), got {tp.__name__}")
            cls = Adapter
        found = _cache[tp] = cls()
    return found
