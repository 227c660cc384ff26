"""Helpers shared by test_forward.py, test_backward.py, test_errors.py and
test_interop.py: random problems (a hypothesis strategy), arrays of a given
dtype in NumPy or torch, relative errors, and poisoned output allocation.
The oracle is tests/dense_reference.py; nothing here computes attention."""
from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
from hypothesis import strategies as st

import nhood
from nhood import _arrays

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BACKWARD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}
# Relative (Frobenius) error bounds by dtype; lse is always float32.
TOL = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
LSE_TOL = {"float64": 1e-6, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
DTYPES = ["float64", "float32", "float16", "bfloat16"]
HAS_TORCH = importlib.util.find_spec("torch") is not None
CPU_BACKENDS = nhood.backends("cpu")
# Largest spatial extent per axis by rank, so dense [N, N] references stay small.
MAX_LENGTH = {1: 24, 2: 9, 3: 5}


def rel_err(x, ref) -> float:
    x, ref = to64(x), np.asarray(ref, np.float64)
    assert x.shape == ref.shape, f"shape {x.shape} != reference {ref.shape}"
    denom = np.linalg.norm(ref)
    assert denom > 0, "reference is all zeros: the test input is degenerate"
    return float(np.linalg.norm(x - ref) / denom)


def to64(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return x.detach().to("cpu").double().numpy()  # torch


class Arrays:
    """Creates arrays of one dtype: NumPy, or torch for bfloat16 (NumPy has
    none) or when torch is asked for. Skips cleanly if torch is missing."""

    def __init__(self, dtype, lib=None):
        self.dtype = dtype
        self.lib = lib or ("torch" if dtype == "bfloat16" else "numpy")
        if self.lib == "torch":
            self.torch = pytest.importorskip("torch")

    def put(self, a):
        a = np.asarray(a, np.float64)
        if self.lib == "numpy":
            return a.astype(self.dtype)
        t = self.torch
        return t.from_numpy(a).to(getattr(t, self.dtype))

    def random(self, rng, shape):
        # standard normal, never all zeros
        return self.put(rng.standard_normal(shape))

    def full(self, shape, value, dtype=None):
        dtype = dtype or self.dtype
        if self.lib == "numpy":
            return np.full(shape, value, dtype=dtype)
        t = self.torch
        return t.full(shape, value, dtype=getattr(t, dtype))


@contextlib.contextmanager
def poisoned_outputs():
    """Every output nhood allocates (out, lse, gradients) starts as NaN, so a
    result that is finite proves each element was written."""
    patch = pytest.MonkeyPatch()

    def numpy_empty(self, like, shape, dtype=None):
        return np.full(shape, np.nan, dtype=np.float32 if dtype == "float32" else like.dtype)

    def torch_empty(self, like, shape, dtype=None):
        t = self.torch
        return t.full(shape, float("nan"), dtype=t.float32 if dtype == "float32" else like.dtype, device=like.device)

    patch.setattr(_arrays.NumpyAdapter, "empty", numpy_empty)
    patch.setattr(_arrays.TorchAdapter, "empty", torch_empty)
    try:
        yield
    finally:
        patch.undo()


@st.composite
def axes(draw, rank):
    """Per-axis (length, kernel, stride, dilation, causal) obeying the DESIGN rules."""
    out = []
    for _ in range(rank):
        length = draw(st.integers(1, MAX_LENGTH[rank]))
        kernel = draw(st.integers(1, length))
        dilation = draw(st.integers(1, length // kernel))
        stride = draw(st.integers(1, kernel))
        causal = draw(st.booleans())
        out.append((length, kernel, stride, dilation, causal))
    return out


@st.composite
def problems(draw, rank=None, additional=True):
    """A random valid problem: window arguments (sometimes as plain ints),
    batch, heads (GQA/MQA), head dims (D != D_v), additional tokens, scale."""
    rank = rank or draw(st.integers(1, 3))
    ax = draw(axes(rank))
    heads_kv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    head_dim = draw(st.integers(1, 9))
    head_dim_v = draw(st.one_of(st.just(head_dim), st.integers(1, 9)))
    p = dict(
        rank=rank,
        spatial=tuple(a[0] for a in ax),
        kernel_size=tuple(a[1] for a in ax),
        stride=tuple(a[2] for a in ax),
        dilation=tuple(a[3] for a in ax),
        is_causal=tuple(a[4] for a in ax),
        batch=draw(st.integers(1, 2)),
        heads=heads_kv * group,
        heads_kv=heads_kv,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_add=draw(st.integers(0, 3)) if additional else 0,
        scale=draw(st.one_of(st.none(), st.floats(0.05, 1.5))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    # Uniform axes may also be passed as plain ints/bools, as users do.
    for name in ("kernel_size", "stride", "dilation", "is_causal"):
        if len(set(p[name])) == 1 and draw(st.booleans()):
            p[name] = p[name][0]
    return p


def window(p):
    return {k: p[k] for k in ("kernel_size", "stride", "dilation", "is_causal")}


def make_inputs(p, arrays, rng):
    """q, k, v and (optional) additional keys/values, as `arrays` dtype and library."""
    b, sp = p["batch"], p["spatial"]
    q = arrays.random(rng, (b, *sp, p["heads"], p["head_dim"]))
    k = arrays.random(rng, (b, *sp, p["heads_kv"], p["head_dim"]))
    v = arrays.random(rng, (b, *sp, p["heads_kv"], p["head_dim_v"]))
    add = {}
    if p["n_add"]:
        add = dict(additional_keys=arrays.random(rng, (b, p["n_add"], p["heads_kv"], p["head_dim"])),
                   additional_values=arrays.random(rng, (b, p["n_add"], p["heads_kv"], p["head_dim_v"])))
    return q, k, v, add


def unsupported(err: Exception) -> bool:
    """A backend's documented refusal of a problem (not a wrong answer)."""
    return isinstance(err, ValueError) and "does not support this" in str(err)


def _supports(backend, dtype) -> bool:
    """Whether `backend` accepts `dtype` at all (e.g. `cpu` leaves float64 to
    `reference`), asked of the library with a tiny problem."""
    if dtype == "bfloat16" and not HAS_TORCH:
        return True  # the bfloat16 tests skip without torch
    x = Arrays(dtype).put(np.ones((1, 2, 1, 2)))
    try:
        NA[1](x, x, x, 1, backend=backend)
    except ValueError as e:
        if unsupported(e):
            return False
        raise
    return True


SUPPORTED = {(b, d): _supports(b, d) for b in CPU_BACKENDS for d in DTYPES}
# Every (backend, dtype) pair a backend accepts; refusals are tested in test_forward.py.
BACKEND_DTYPES = [pytest.param(b, d, id=f"{b}-{d}") for b in CPU_BACKENDS for d in DTYPES if SUPPORTED[b, d]]
# The most precise dtype of each backend, for fixed-case tests.
EXACT = {b: "float64" if SUPPORTED[b, "float64"] else "float32" for b in CPU_BACKENDS}
FLOAT64_BACKENDS = [b for b in CPU_BACKENDS if SUPPORTED[b, "float64"]]
