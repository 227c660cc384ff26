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
        if x.requires_grad:
            x = x.detach()
        if x.is_neg():
            # A lazily negated view (e.g. c.conj().imag): DLPack carries no negative bit, so
            # the exported memory holds the values before negation. Materialize them.
            x = x.resolve_neg()
        return x

    def writable(self, x):
        if x.is_neg():
            raise ValueError("out must not be a lazily negated torch view (is_neg() is True): nhood would write "
                             "through DLPack, which ignores the negative bit; pass a tensor without it")
        return True

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
    """JAX arrays are immutable and JAX cannot hand out a writable buffer, so
    nhood allocates outputs with another library and hands them back as JAX
    arrays: NumPy buffers for CPU arrays, CuPy (else torch) buffers on the
    input's GPU for GPU arrays, imported with jax.dlpack.from_dlpack, which
    orders JAX's stream after nhood's through the DLPack stream protocol (no
    synchronization). GPU work runs on that library's current stream; inputs
    are exported with __dlpack__(stream=...) so JAX orders its pending writes
    before it, without blocking the host. Under jit, use nhood.jax (XLA FFI)."""

    name = "jax"

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.jnp = jnp
        self.xp = jnp
        self._gpu = {}  # adapters of the libraries that may allocate GPU outputs

    def _gpu_library(self, dtype=None):
        """CuPy, else torch; torch first for bfloat16, which CuPy lacks."""
        order = (TorchAdapter, CupyAdapter) if str(dtype) == "bfloat16" else (CupyAdapter, TorchAdapter)
        for cls in order:
            if cls not in self._gpu:
                try:
                    self._gpu[cls] = cls()
                except ImportError:
                    self._gpu[cls] = None
            if self._gpu[cls] is not None:
                return self._gpu[cls]
        raise RuntimeError(f"nhood needs {'PyTorch' if str(dtype) == 'bfloat16' else 'CuPy or PyTorch'} to allocate "
                           "outputs for JAX GPU arrays outside jit; install it, or use nhood.jax (XLA FFI)")

    def _gpu_like(self, like):
        """An empty array of the allocating library on like's device and dtype."""
        lib = self._gpu_library(like.dtype)
        index = self.device(like)[1]
        if lib.name == "cupy":
            with lib.cupy.cuda.Device(index):
                return lib.cupy.empty((0,), dtype=_np.dtype(like.dtype))
        t = lib.torch
        return t.empty((0,), dtype=getattr(t, _np.dtype(like.dtype).name), device=f"cuda:{index}")

    def _on_gpu(self, x):
        return self.device(x)[0] == "cuda"

    def as_input(self, x):
        if not self._on_gpu(x):
            return x
        s = self.stream(x)
        return x.__dlpack__(stream=s if s != 0 else 1)  # DLPack: 1 names the legacy default stream

    def empty(self, like, shape, dtype=None):
        if self._on_gpu(like):
            like = self._gpu_like(like)
            return adapter(like).empty(like, shape, dtype)
        return _np.empty(shape, dtype=_np.float32 if dtype == _FLOAT32 else _np.dtype(like.dtype))

    def device(self, x):
        dev = next(iter(x.devices()))
        if dev.platform == "cpu":
            return ("cpu", 0)
        index = getattr(dev, "local_hardware_id", None)  # CUDA ordinal; dev.id is global across processes
        return ("cuda", dev.id if index is None else index)

    def stream(self, x):
        if not self._on_gpu(x):
            return 0
        lib = self._gpu_library(x.dtype)
        index = self.device(x)[1]
        if lib.name == "cupy":
            with lib.cupy.cuda.Device(index):
                return lib.cupy.cuda.get_current_stream().ptr
        return lib.torch.cuda.current_stream(index).cuda_stream

    def writable(self, x):
        return False

    def astype_like(self, x, like):
        return x.astype(like.dtype)

    def finish(self, x):
        if isinstance(x, _np.ndarray):
            return self.jnp.asarray(x)
        return self.jax.dlpack.from_dlpack(x)


_BY_MODULE = {"numpy": NumpyAdapter, "torch": TorchAdapter, "cupy": CupyAdapter, "jax": JaxAdapter,
              "jaxlib": JaxAdapter}
_cache: dict[type, Adapter] = {}
_instances: dict[type, Adapter] = {}  # one adapter per library: np.ndarray and np.float64 share NumpyAdapter


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
        found = _instances.get(cls)
        if found is None:
            found = _instances[cls] = cls()
        _cache[tp] = found
    return found


def explain_refusal(lib, named_arrays) -> None:
    """Called when the native module refused its arguments (nanobind's generic
    "incompatible function arguments"): raises a TypeError naming the first
    array that DLPack cannot export and why (NumPy's object, longdouble or
    byte-swapped arrays, torch's meta tensors...). Returns if none is found.
    Only runs on the error path, so the calls that succeed pay nothing."""
    for name, x in named_arrays:
        if x is None:
            continue
        try:
            exported = lib.as_input(x)
            if hasattr(exported, "__dlpack__"):
                exported.__dlpack__()
        except Exception as e:  # the library's own reason: BufferError, RuntimeError, ...
            dtype = getattr(x, "dtype", "?")
            raise TypeError(f"{name} (dtype {dtype}) cannot be passed to nhood through DLPack: {e} "
                            "(nhood takes float64, float32, float16 or bfloat16 arrays in native byte order, "
                            "on cpu or cuda)") from None
