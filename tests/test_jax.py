"""nhood.jax against independent references, under jit, grad and vmap.

Forward: tests/dense_reference.py (NumPy float64). Gradients: jax.grad of a
dense masked-softmax attention written below in jax.numpy, in float64, over
dense_reference.neighborhood_mask. Skipped when jax or nhood's JAX FFI
module (built only if jax was installed before nhood) is missing.
"""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nj = pytest.importorskip("nhood.jax", reason="nhood built without JAX FFI handlers (install jax before nhood)")
import jax.numpy as jnp  # noqa: E402

import dense_reference as ref  # noqa: E402

NA = {1: nj.na1d, 2: nj.na2d, 3: nj.na3d}
TOL = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 1e-2}  # relative to the reference's largest magnitude


@pytest.fixture(scope="module", autouse=True)
def x64():
    # float64 inputs and references need x64; restore the setting for other modules.
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def per_axis(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


def dense_attention(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
                    additional_keys=None, additional_values=None):
    """(out, lse) of masked dense softmax attention in jax.numpy: the gradient oracle."""
    rank = q.ndim - 3
    spatial = q.shape[1:1 + rank]
    mask = ref.neighborhood_mask(spatial, per_axis(kernel_size, rank), per_axis(stride, rank),
                                 per_axis(dilation, rank), per_axis(is_causal, rank))
    b, h, d = q.shape[0], q.shape[-2], q.shape[-1]
    h_kv = k.shape[-2]
    Q = q.reshape(b, -1, h, d)
    K = jnp.repeat(k.reshape(b, -1, h_kv, d), h // h_kv, axis=2)
    V = jnp.repeat(v.reshape(b, -1, h_kv, v.shape[-1]), h // h_kv, axis=2)
    if additional_keys is not None:
        K = jnp.concatenate([K, jnp.repeat(additional_keys, h // h_kv, axis=2)], axis=1)
        V = jnp.concatenate([V, jnp.repeat(additional_values, h // h_kv, axis=2)], axis=1)
        mask = np.concatenate([mask, np.ones((mask.shape[0], additional_keys.shape[1]), bool)], axis=1)
    scale = d ** -0.5 if scale is None else scale
    s = jnp.where(mask[None, None], scale * jnp.einsum("bnhd,bmhd->bhnm", Q, K), -jnp.inf)
    lse = jax.nn.logsumexp(s, axis=-1)
    out = jnp.einsum("bhnm,bmhd->bnhd", jnp.exp(s - lse[..., None]), V)
    return out.reshape(q.shape[:-1] + v.shape[-1:]), lse.transpose(0, 2, 1).reshape(q.shape[:-1])


# (spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, dim_v, n_additional)
CASES = [
    ((13,), 5, 1, 1, False, 2, 2, 8, 8, 0),
    ((16,), 4, 3, 2, False, 4, 2, 8, 16, 0),
    ((12,), 5, 2, 1, True, 2, 1, 16, 8, 3),
    ((7, 9), (3, 5), 1, 1, False, 2, 2, 8, 8, 0),
    ((8, 10), (4, 3), (2, 3), (2, 1), (True, False), 4, 2, 16, 8, 2),
    ((4, 5, 6), (3, 2, 3), 1, (1, 2, 1), (False, True, False), 2, 1, 8, 8, 1),
]


def make_inputs(case, dtype="float64", seed=0, batch=2):
    spatial, kernel, stride, dilation, causal, h, h_kv, d, dv, n_add = case
    rng = np.random.default_rng(seed)
    shape = (batch, *spatial)
    arrays = [rng.standard_normal(shape + (h, d)), rng.standard_normal(shape + (h_kv, d)),
              rng.standard_normal(shape + (h_kv, dv))]
    if n_add:
        arrays += [rng.standard_normal((batch, n_add, h_kv, d)), rng.standard_normal((batch, n_add, h_kv, dv))]
    arrays = [jnp.asarray(a, dtype=dtype) for a in arrays]
    window = dict(kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal)
    return len(spatial), arrays, window


def call(rank, arrays, window, **kw):
    extra = dict(additional_keys=arrays[3], additional_values=arrays[4]) if len(arrays) == 5 else {}
    return NA[rank](*arrays[:3], **window, **extra, **kw)


def dense(arrays, window):
    extra = dict(additional_keys=arrays[3], additional_values=arrays[4]) if len(arrays) == 5 else {}
    return dense_attention(*arrays[:3], **window, **extra)


def assert_close(actual, expected, tol):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert err <= tol, f"relative error {err:.3g} > {tol}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_forward_matches_numpy_reference(case, dtype):
    rank, arrays, window = make_inputs(case, dtype)
    out, lse = jax.jit(lambda *a: call(rank, a, window, return_lse=True))(*arrays)
    inputs = [np.asarray(a, np.float64) for a in arrays]
    extra = dict(additional_keys=inputs[3], additional_values=inputs[4]) if len(inputs) == 5 else {}
    ref_out, ref_lse = ref.forward(*inputs[:3], **window, **extra)
    assert out.dtype == arrays[0].dtype and lse.dtype == jnp.float32
    assert_close(out, ref_out, TOL[dtype])
    assert_close(lse, ref_lse, max(TOL[dtype], 1e-6))  # lse is float32 for every input dtype


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_grad_matches_dense_jax(case, dtype):
    rank, arrays, window = make_inputs(case, dtype, seed=1)
    weight = jnp.asarray(np.random.default_rng(2).standard_normal(arrays[0].shape[:-1] + arrays[2].shape[-1:]))
    argnums = tuple(range(len(arrays)))

    def loss_nhood(*a):
        return jnp.sum(call(rank, a, window).astype(jnp.float64) * weight)

    def loss_dense(*a):
        return jnp.sum(dense(a, window)[0] * weight)

    grads = jax.jit(jax.grad(loss_nhood, argnums))(*arrays)
    expected = jax.jit(jax.grad(loss_dense, argnums))(*[a.astype(jnp.float64) for a in arrays])
    for g, e, a in zip(grads, expected, arrays):
        assert g.dtype == a.dtype
        assert_close(g, e, TOL[dtype])


@pytest.mark.parametrize("case", [CASES[2], CASES[4]])
def test_grad_through_lse(case):
    # merge_attentions-style use: the loss depends on lse too.
    rank, arrays, window = make_inputs(case, seed=3)
    argnums = tuple(range(len(arrays)))

    def loss(fn):
        def f(*a):
            out, lse = fn(*a)
            return jnp.sum(out ** 2) + jnp.sum(jnp.sin(lse.astype(jnp.float64)))
        return f

    grads = jax.jit(jax.grad(loss(lambda *a: call(rank, a, window, return_lse=True)), argnums))(*arrays)
    expected = jax.jit(jax.grad(loss(lambda *a: dense(a, window)), argnums))(*arrays)
    for g, e in zip(grads, expected):
        assert_close(g, e, 1e-6)  # lse is float32


@pytest.mark.parametrize("case", [CASES[1], CASES[4]])
def test_vmap_forward_and_grad(case):
    rank, arrays, window = make_inputs(case, seed=4)
    n = len(arrays)
    stacked = [jnp.stack([a, a * 0.5 + 1.0, -a]) for a in arrays]
    # Map query over its new axis and keep key/value/additional shared (in_axes None).
    in_axes = (0,) + (None,) * (n - 1)
    shared = [a[1] for a in stacked[1:]]
    batched = jax.jit(jax.vmap(lambda *a: call(rank, a, window), in_axes=in_axes))(stacked[0], *shared)
    oracle_out = jax.jit(lambda *a: dense(a, window)[0])
    for i in range(3):
        assert_close(batched[i], oracle_out(stacked[0][i], *shared), 1e-10)

    def loss(fn):
        return lambda *a: jnp.sum(jnp.cos(fn(a)))

    per_example = jax.jit(jax.vmap(jax.grad(loss(lambda a: call(rank, a, window)), tuple(range(n)))))(*stacked)
    oracle = jax.jit(jax.grad(loss(lambda a: dense(a, window)[0]), tuple(range(n))))
    for i in range(3):
        expected = oracle(*[s[i] for s in stacked])
        for g, e in zip(per_example, expected):
            assert_close(g[i], e, 1e-10)


def test_nested_vmap_and_batch_axis_not_leading():
    rank, arrays, window = make_inputs(CASES[3], seed=5, batch=1)
    q, k, v = arrays
    # [2, 3, B, ...] mapped twice; the inner map takes axis 1 of what it sees.
    qs = jnp.stack([jnp.stack([q + i + j for j in range(3)]) for i in range(2)])
    f = jax.vmap(jax.vmap(lambda q: nj.na2d(q, k, v, **window)), in_axes=0)
    out = jax.jit(f)(qs)
    g = jax.vmap(lambda q: nj.na2d(q, k, v, **window), in_axes=1, out_axes=1)(jnp.moveaxis(qs[1], 0, 1))
    assert_close(out[1, 2], jax.jit(lambda *a: dense(a, window)[0])(qs[1, 2], k, v), 1e-10)
    assert_close(jnp.moveaxis(g, 1, 0)[2], out[1, 2], 1e-12)


def test_invalid_problem_raises_with_message():
    # The FFI handler's own error path (the public functions catch a bad window
    # at trace time, see below, so this calls the custom_vjp directly). It once
    # segfaulted on the GPU build (a private static libstdc++ in the modules:
    # tests/test_cxx_runtime.py), so it ran in a subprocess; now it runs here.
    from nhood.jax import _autodiff, _ffi
    q = jnp.ones((1, 6, 2, 8), jnp.float32)
    cfg = _ffi.Config(1, (9, 1, 1), (1, 1, 1), (1, 1, 1), (False, False, False), None, "auto")
    with pytest.raises(Exception, match=r"kernel_size\[0\] \* dilation\[0\] \(9 \* 1 = 9\)") as info:
        jax.block_until_ready(jax.jit(lambda q: _autodiff.attend(cfg, False, q, q, q, None))(q))
    assert "nhood" in str(info.value), str(info.value)


Q1 = (1, 6, 2, 8)  # [batch, tokens, heads, dim]
TRACE_TIME_ERRORS = [  # (id, call, exception, message parts): every rule of issue #2, before XLA runs anything
    ("kernel_times_dilation", lambda q: nj.na1d(q, q, q, kernel_size=3, dilation=3), ValueError,
     ["kernel_size[0] * dilation[0]", "(6)"]),
    ("kernel_too_large", lambda q: nj.na1d(q, q, q, kernel_size=7), ValueError, ["kernel_size[0]", "(6)"]),
    ("stride_gt_kernel", lambda q: nj.na1d(q, q, q, kernel_size=3, stride=4), ValueError,
     ["stride[0] (4)", "kernel_size[0] (3)"]),
    ("kernel_lt_1", lambda q: nj.na1d(q, q, q, kernel_size=0), ValueError, ["kernel_size[0]", ">= 1"]),
    ("dilation_lt_1", lambda q: nj.na1d(q, q, q, kernel_size=3, dilation=0), ValueError, ["dilation[0]", ">= 1"]),
    ("heads_not_multiple", lambda q: nj.na1d(jnp.ones((1, 6, 3, 8), jnp.float32), q, q, kernel_size=3), ValueError,
     ["query heads (3)", "multiple of key/value heads (2)"]),
    ("key_tokens", lambda q: nj.na1d(q, q[:, :5], q[:, :5], kernel_size=3), ValueError,
     ["key shape (1, 5, 2, 8)", "query shape (1, 6, 2, 8)"]),
    ("value_batch", lambda q: nj.na1d(q, q, jnp.ones((2, 6, 2, 8), jnp.float32), kernel_size=3), ValueError,
     ["value batch (2)", "query batch (1)"]),
    ("key_head_dim", lambda q: nj.na1d(q, q[..., :4], q, kernel_size=3), ValueError, ["key head_dim (4)"]),
    ("key_dtype", lambda q: nj.na1d(q, q.astype(jnp.float16), q, kernel_size=3), TypeError, ["key", "dtype"]),
    ("int_dtype", lambda q: nj.na1d(*(q.astype(jnp.int32),) * 3, kernel_size=3), TypeError,
     ["query", "float64, float32, float16 or bfloat16", "int32"]),
    ("additional_alone", lambda q: nj.na1d(q, q, q, 3, additional_keys=jnp.ones((1, 2, 2, 8), jnp.float32)), ValueError,
     ["together"]),
    ("additional_heads", lambda q: nj.na1d(q, q, q, 3, additional_keys=jnp.ones((1, 2, 1, 8), jnp.float32),
                                           additional_values=jnp.ones((1, 2, 1, 8), jnp.float32)), ValueError,
     ["additional_keys", "(1, 2, 2, 8)", "(1, 2, 1, 8)"]),
    ("scale_nan", lambda q: nj.na1d(q, q, q, 3, scale=float("nan")), ValueError, ["scale", "finite"]),
    ("kernel_float", lambda q: nj.na1d(q, q, q, 3.0), TypeError, ["kernel_size", "int"]),
]


@pytest.mark.parametrize("call, exc, parts", [c[1:] for c in TRACE_TIME_ERRORS], ids=[c[0] for c in TRACE_TIME_ERRORS])
def test_bad_inputs_raise_at_trace_time(call, exc, parts):
    # Under jit the error is raised while tracing: a ValueError/TypeError with the
    # rule in its message, not an XLA runtime error when the result is used.
    q = jnp.ones(Q1, jnp.float32)
    for fn in (call, jax.jit(call)):
        with pytest.raises(exc) as info:
            fn(q)
        for part in parts:
            assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_shape_errors_at_trace_time():
    q = jnp.ones((1, 6, 2, 8), jnp.float32)
    with pytest.raises(ValueError, match="dimensions"):
        nj.na2d(q, q, q, kernel_size=3)
    with pytest.raises(ValueError, match="together"):
        nj.na1d(q, q, q, kernel_size=3, additional_keys=jnp.ones((1, 2, 2, 8)))


def test_scale_backend_and_deterministic_arguments():
    rank, arrays, window = make_inputs(CASES[4], "float32", seed=6)
    import nhood
    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    kw = dict(scale=0.3, backend=nhood.backends(device)[-1], deterministic=True)
    argnums = tuple(range(len(arrays)))
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(call(rank, a, window, **kw))), argnums))
    first, second = grad(*arrays), grad(*arrays)
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    wide = [a.astype(jnp.float64) for a in arrays]
    expected = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(dense_attention(
        *a[:3], **window, scale=0.3, additional_keys=a[3], additional_values=a[4])[0])), argnums))(*wide)
    for g, e in zip(first, expected):
        assert_close(g, e, TOL["float32"])  # CASES[4] has additional tokens: their gradients too


def test_missing_ffi_module_gives_clear_import_error():
    import subprocess
    import sys
    code = ("import sys; sys.modules['nhood._jax_ffi'] = None\n"
            "try:\n    import nhood.jax\nexcept ImportError as e:\n    print(e)\n")
    message = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "built without its JAX FFI handlers" in message and "install jax" in message.lower()
