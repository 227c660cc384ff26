"""CUDA backends on torch, CuPy and JAX arrays, against the dense float64
reference (tests/dense_reference.py). Skips cleanly without a GPU.

Each kernel family (naive now; fused, gemm, hopper later) joins by adding its
name to CUDA_BACKENDS; every case below then runs on it.
"""
from __future__ import annotations

import os
import sys

# JAX preallocates 75% of GPU memory by default, which starves the torch and
# CuPy cases (and the > 2^31-element one) in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
import pytest

import nhood
import dense_reference as ref

pytestmark = pytest.mark.skipif(not nhood.cuda_available(), reason="no CUDA GPU (or nhood built without CUDA)")

CUDA_BACKENDS = [b for b in ("naive",) if nhood.cuda_available() and b in nhood.backends("cuda")]
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BWD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}


# ---- array libraries: NumPy float64 <-> device arrays -------------------------------------------

class Torch:
    name = "torch"

    def __init__(self):
        self.t = pytest.importorskip("torch")
        if not self.t.cuda.is_available():
            pytest.skip("torch sees no GPU")

    def put(self, a, dtype):
        return self.t.from_numpy(np.ascontiguousarray(a, np.float32)).to(getattr(self.t, dtype)).cuda()

    def get(self, x):
        return x.float().cpu().numpy().astype(np.float64)

    def is_native(self, x):
        return isinstance(x, self.t.Tensor) and x.is_cuda


class Cupy:
    name = "cupy"

    def __init__(self):
        self.cp = pytest.importorskip("cupy")

    def put(self, a, dtype):
        if dtype == "bfloat16":
            pytest.skip("CuPy has no bfloat16")
        return self.cp.asarray(np.asarray(a, dtype))

    def get(self, x):
        return self.cp.asnumpy(x).astype(np.float64)

    def is_native(self, x):
        return isinstance(x, self.cp.ndarray)


class Jax:
    name = "jax"

    def __init__(self):
        self.jax = pytest.importorskip("jax")
        self.jnp = self.jax.numpy
        gpus = [d for d in self.jax.devices() if d.platform == "gpu"] if self._has_gpu() else []
        if not gpus:
            pytest.skip("JAX sees no GPU")
        self.dev = gpus[0]

    def _has_gpu(self):
        try:
            return bool(self.jax.devices("gpu"))
        except RuntimeError:
            return False

    def put(self, a, dtype):
        return self.jax.device_put(self.jnp.asarray(np.asarray(a, np.float32), dtype=dtype), self.dev)

    def get(self, x):
        return np.asarray(x.astype(self.jnp.float32), np.float64)

    def is_native(self, x):
        return isinstance(x, self.jax.Array) and next(iter(x.devices())).platform == "gpu"


LIBS = {"torch": Torch, "cupy": Cupy, "jax": Jax}


@pytest.fixture(params=list(LIBS))
def lib(request):
    return LIBS[request.param]()


# ---- problems ------------------------------------------------------------------------------------

# (spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, dim_v, n_add)
CASES = [
    ((17,), 5, 1, 1, False, 2, 2, 8, 8, 0),
    ((16,), 4, 2, 2, False, 4, 2, 8, 12, 3),          # even kernel, stride, dilation, GQA, dim_v, additional KV
    ((19,), 6, 3, 1, True, 2, 1, 16, 8, 0),           # causal, stride, MQA
    ((9, 10), (3, 4), (1, 2), (2, 1), False, 2, 2, 8, 8, 2),
    ((8, 9), 3, 1, 1, (True, False), 3, 3, 4, 6, 0),  # per-axis causal
    ((5, 6, 7), (3, 2, 5), (1, 2, 3), (1, 2, 1), (False, True, False), 2, 1, 8, 8, 1),
]


def make_case(case, seed, batch=2):
    spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, dim_v, n_add = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, *spatial, heads, dim))
    k = rng.standard_normal((batch, *spatial, heads_kv, dim))
    v = rng.standard_normal((batch, *spatial, heads_kv, dim_v))
    do = rng.standard_normal((batch, *spatial, heads, dim_v))
    ak = rng.standard_normal((batch, n_add, heads_kv, dim)) if n_add else None
    av = rng.standard_normal((batch, n_add, heads_kv, dim_v)) if n_add else None
    window = dict(kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal)
    return len(spatial), q, k, v, do, ak, av, window


def rel_err(x, r):
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    assert x.shape == r.shape, (x.shape, r.shape)
    assert np.isfinite(x).all(), "non-finite values in the result"
    return float(np.linalg.norm(x - r) / max(np.linalg.norm(r), 1e-30))


def run_and_check(lib, backend, dtype, case, seed):
    rank, q, k, v, do, ak, av, window = make_case(case, seed)
    dev = [lib.put(a, dtype) if a is not None else None for a in (q, k, v, do, ak, av)]
    # The reference sees exactly the rounded inputs the GPU sees.
    q, k, v, do, ak, av = [lib.get(a) if a is not None else None for a in dev]
    dq_, dk_, dv_, ddo, dak, dav = dev
    out, lse = NA[rank](dq_, dk_, dv_, **window, additional_keys=dak, additional_values=dav, return_lse=True,
                        backend=backend)
    assert lib.is_native(out) and lib.is_native(lse)
    ref_out, ref_lse = ref.forward(q, k, v, **window, additional_keys=ak, additional_values=av)
    tol = TOL[dtype]
    assert rel_err(lib.get(out), ref_out) <= tol
    assert rel_err(lib.get(lse), ref_lse) <= (1e-5 if dtype == "float32" else tol)
    grads = NA_BWD[rank](dq_, dk_, dv_, out, lse, ddo, **window, additional_keys=dak, additional_values=dav,
                         backend=backend)
    ref_grads = ref.backward(q, k, v, do, **window, additional_keys=ak, additional_values=av)
    assert len(grads) == len(ref_grads)
    for name, g, r in zip(("dq", "dk", "dv", "d_add_k", "d_add_v"), grads, ref_grads):
        assert lib.is_native(g), name
        err = rel_err(lib.get(g), r)
        assert err <= tol * (2 if dtype != "float32" else 1), f"{name}: rel err {err:.2e}"


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_dense_reference(lib, backend, dtype, case):
    run_and_check(lib, backend, dtype, CASES[case], seed=case)


def test_backends_listed():
    assert "naive" in nhood.backends("cuda")


# ---- torch specifics: strided views, streams, devices, size ------------------------------------

@pytest.fixture
def torch():
    return Torch().t


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_strided_views_of_packed_qkv(torch, backend):
    b, n, h, d = 2, 23, 2, 8
    qkv = torch.randn(b, n, 3, h, d, device="cuda")
    q, k, v = qkv.unbind(2)  # non-contiguous views into one projection
    out = nhood.na1d(q, k, v, 7, dilation=2, backend=backend)
    ref_out, _ = ref.forward(*(x.cpu().double().numpy() for x in (q, k, v)), 7, dilation=2)
    assert rel_err(out.cpu().numpy(), ref_out) <= 1e-5


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_runs_on_callers_stream(torch, backend):
    """Inputs become valid only late on a side stream (after a long sleep);
    nhood must enqueue on that stream, or it reads them too early."""
    shape = (1, 64, 64, 2, 16)
    src = [torch.randn(shape, device="cuda") for _ in range(3)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # src was made on the default stream
    with torch.cuda.stream(side):
        q, k, v = (torch.zeros(shape, device="cuda") for _ in range(3))
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the side stream
        for dst, s in zip((q, k, v), src):
            dst.copy_(s)
        out = nhood.na2d(q, k, v, 5, backend=backend)
        result = out.clone()
    side.synchronize()
    ref_out, _ = ref.forward(*(x.cpu().double().numpy() for x in src), 5)
    assert rel_err(result.cpu().numpy(), ref_out) <= 1e-5


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_runs_on_cupy_current_stream(backend):
    cp = Cupy().cp
    a = np.random.default_rng(0).standard_normal((3, 1, 40, 2, 8)).astype(np.float32)
    with cp.cuda.Stream(non_blocking=True) as s:
        q = cp.zeros(a.shape[1:], cp.float32)
        for _ in range(20):  # queue work ahead of the copy on this stream
            cp.matmul(cp.ones((1024, 1024), cp.float32), cp.ones((1024, 1024), cp.float32))
        q[...] = cp.asarray(a[0])
        out = nhood.na1d(q, q, q, 9, backend=backend)
        s.synchronize()
    ref_out, _ = ref.forward(a[0], a[0], a[0], 9)
    assert rel_err(cp.asnumpy(out), ref_out) <= 1e-5


def test_device_mismatch_is_a_value_error(torch):
    q = torch.randn(1, 8, 1, 4, device="cuda")
    with pytest.raises(ValueError, match="device"):
        nhood.na1d(q, q.cpu(), q, 3)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="device"):
            nhood.na1d(q, q.to("cuda:1"), q, 3)


def test_cuda_output_on_input_device(torch):
    q = torch.randn(1, 8, 1, 4, device="cuda")
    out = nhood.na1d(q, q, q, 3)
    assert out.device == q.device and out.dtype == q.dtype


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_more_than_2_31_elements(torch, backend):
    """64-bit indexing: q, k, v hold 2^31 + 16384 float16 elements (~4.3 GB
    each); the last batch entries, beyond element 2^31, are checked."""
    if "cupy" in sys.modules:  # return CuPy's cached blocks from earlier cases
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip(f"needs 40 GB of free GPU memory, {free / 2**30:.1f} GB free")
    b, n, h, d, kernel = 2**17 + 1, 1024, 1, 16, 3
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.float16, generator=gen) for _ in range(3))
    assert q.numel() > 2**31
    out, lse = nhood.na1d(q, k, v, kernel, return_lse=True, backend=backend)
    grads = nhood.na1d_backward(q, k, v, out, lse, out, kernel, backend=backend)  # d_out = out saves 4 GB
    tail = slice(b - 2, b)
    host = [x[tail].double().cpu().numpy() for x in (q, k, v, out)]
    ref_out, _ = ref.forward(host[0], host[1], host[2], kernel)
    assert rel_err(host[3], ref_out) <= 1e-2
    ref_grads = ref.backward(host[0], host[1], host[2], host[3], kernel)
    for g, r in zip(grads, ref_grads):
        assert rel_err(g[tail].double().cpu().numpy(), r) <= 2e-2
    del q, k, v, out, lse, grads
    torch.cuda.empty_cache()


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_does_not_block_the_host(torch, backend):
    """Forward and backward only enqueue work: with the stream busy for
    ~0.5 s, the calls return long before it drains (no device/stream sync,
    workspace from cudaMallocAsync)."""
    q = torch.randn(2, 32, 32, 2, 16, device="cuda")
    out, lse = nhood.na2d(q, q, q, 5, return_lse=True, backend=backend)  # warm up: module load, memory pool
    nhood.na2d_backward(q, q, q, out, lse, out, 5, backend=backend)
    torch.cuda.synchronize()
    import time
    torch.cuda._sleep(1_000_000_000)
    t0 = time.perf_counter()
    out, lse = nhood.na2d(q, q, q, 5, return_lse=True, backend=backend)
    nhood.na2d_backward(q, q, q, out, lse, out, 5, backend=backend)
    host = time.perf_counter() - t0
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    assert host < 0.1 and time.perf_counter() - t1 > 0.1, f"host {host:.3f}s: the calls waited for the GPU"


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def problems(draw):
    rank = draw(st.integers(1, 3))
    axes = []
    for _ in range(rank):
        kernel = draw(st.integers(1, 5))
        dilation = draw(st.integers(1, 3))
        length = draw(st.integers(kernel * dilation, kernel * dilation + 6))
        axes.append((length, kernel, draw(st.integers(1, kernel)), dilation, draw(st.booleans())))
    heads_kv = draw(st.integers(1, 2))
    spatial, kernel, stride, dilation, causal = (tuple(a[i] for a in axes) for i in range(5))
    return (spatial, kernel, stride, dilation, causal, heads_kv * draw(st.integers(1, 2)), heads_kv,
            draw(st.sampled_from([4, 8, 16])), draw(st.sampled_from([4, 8])), draw(st.integers(0, 3)))


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(case=problems(), seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(["float32", "float16"]))
def test_random_problems(backend, case, seed, dtype):
    run_and_check(Torch(), backend, dtype, case, seed)
