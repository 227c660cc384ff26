"""nhood for JAX: neighborhood attention usable under jax.jit, jax.grad and
jax.vmap, running as XLA FFI custom calls on CPU and CUDA (XLA's stream, no
host round trips, no copies).

    import nhood.jax as njax
    out = njax.na2d(q, k, v, kernel_size=7)     # q, k, v: [B, H, W, heads, dim]
"""
from __future__ import annotations

try:
    import jax  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("nhood.jax needs JAX: `pip install jax`, then rebuild nhood so its XLA FFI handlers "
                      "are compiled (see below)") from e

try:
    from .. import _jax_ffi  # noqa: F401
except ImportError as e:
    raise ImportError(
        "nhood was built without its JAX FFI handlers (nhood._jax_ffi): JAX was not importable when nhood "
        "was built, so XLA's FFI headers (shipped in jaxlib) were not found. Install jax first, then "
        "rebuild nhood: `pip install jax && pip install --force-reinstall --no-deps <nhood source>`, "
        "or point the build at the headers with NHOOD_XLA_FFI_INCLUDE_DIR=$(python -c "
        "'import jax.ffi; print(jax.ffi.include_dir())')") from e

from .functional import na1d, na2d, na3d  # noqa: E402

__all__ = ["na1d", "na2d", "na3d"]
