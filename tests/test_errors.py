"""Invalid inputs raise ValueError/TypeError whose message names the argument
and the violated rule; nothing is written to a caller's `out` on error.
Also: NaN/Inf inputs propagate to exactly the affected rows, and batch 0
gives empty results of the right shape."""
from __future__ import annotations

import numpy as np
import pytest

import dense_reference as ref
import nhood
from nhood_cases import EXACT, HAS_TORCH

RNG = np.random.default_rng(1234)
B, L, H, D = 2, 8, 2, 4
Q = RNG.standard_normal((B, L, H, D))
K = RNG.standard_normal((B, L, H, D))
V = RNG.standard_normal((B, L, H, D))
AK = RNG.standard_normal((B, 3, H, D))
AV = RNG.standard_normal((B, 3, H, D))
Q2 = RNG.standard_normal((B, L, L, H, D))
SENTINEL = 7.25


def _na1d(out, q=Q, k=K, v=V, kernel_size=3, **kw):
    return nhood.na1d(q, k, v, kernel_size, out=out, **kw)


def _na2d(out, kernel_size=3, **kw):
    return nhood.na2d(Q2, Q2, Q2, kernel_size, out=out, **kw)


def _read_only(shape):
    a = np.full(shape, SENTINEL)
    a.flags.writeable = False
    return a


# (id, call(out) -> raises, expected exception, message substrings)
FORWARD_ERRORS = [
    ("query_ndim", lambda o: _na1d(o, q=Q[0]), ValueError, ["query", "4 dimensions", "(8, 2, 4)"]),
    ("key_ndim", lambda o: _na1d(o, k=K[..., None]), ValueError, ["key", "4 dimensions"]),
    ("rank_mismatch", lambda o: nhood.na2d(Q, K, V, 3, out=o), ValueError, ["query", "5 dimensions"]),
    ("key_spatial", lambda o: _na1d(o, k=K[:, :7], v=V[:, :7]), ValueError, ["key shape", "must match query shape"]),
    ("value_batch", lambda o: _na1d(o, v=V[:1]), ValueError, ["value shape", "must match query shape"]),
    ("key_head_dim", lambda o: _na1d(o, k=K[..., :3]), ValueError, ["key head_dim (3)", "query head_dim (4)"]),
    ("value_heads", lambda o: _na1d(o, v=V[:, :, :1]), ValueError, ["value heads (1)", "key heads (2)"]),
    ("key_dtype", lambda o: _na1d(o, k=K.astype(np.float32)), TypeError, ["key", "dtype", "float64", "float32"]),
    ("value_dtype", lambda o: _na1d(o, v=V.astype(np.float16)), TypeError, ["value", "dtype", "float16"]),
    ("kernel_dilation_too_large", lambda o: _na1d(o, kernel_size=3, dilation=3), ValueError,
     ["kernel_size[0] * dilation[0]", "3 * 3 = 9", "must be <=", "(8)"]),
    ("kernel_too_large", lambda o: _na1d(o, kernel_size=9), ValueError, ["kernel_size[0]", "must be <=", "(8)"]),
    ("kernel_too_large_axis1", lambda o: _na2d(o, kernel_size=(3, 9)), ValueError,
     ["kernel_size[1]", "spatial axis 1"]),
    ("stride_gt_kernel", lambda o: _na1d(o, stride=4), ValueError, ["stride[0] (4)", "<= kernel_size[0] (3)"]),
    ("kernel_lt_1", lambda o: _na1d(o, kernel_size=0), ValueError, ["kernel_size[0]", ">= 1", "0"]),
    ("kernel_negative", lambda o: _na2d(o, kernel_size=(3, -1)), ValueError, ["kernel_size[1]", ">= 1", "-1"]),
    ("dilation_lt_1", lambda o: _na1d(o, dilation=0), ValueError, ["dilation[0]", ">= 1"]),
    ("stride_lt_1", lambda o: _na1d(o, stride=0), ValueError, ["stride[0]", ">= 1"]),
    ("heads_not_multiple", lambda o: _na1d(o, q=RNG.standard_normal((B, L, 3, D))), ValueError,
     ["query heads (3)", "multiple of key/value heads (2)"]),
    ("additional_keys_alone", lambda o: _na1d(o, additional_keys=AK), ValueError,
     ["additional_keys", "without additional_values"]),
    ("additional_values_alone", lambda o: _na1d(o, additional_values=AV), ValueError,
     ["additional_values", "without additional_keys"]),
    ("additional_shape", lambda o: _na1d(o, additional_keys=AK, additional_values=AV[:, :2]), ValueError,
     ["additional_values", "shape", "(2, 3, 2, 4)"]),
    ("additional_ndim", lambda o: _na1d(o, additional_keys=AK[0], additional_values=AV[0]), ValueError,
     ["additional_keys", "4 dimensions"]),
    ("additional_dtype", lambda o: _na1d(o, additional_keys=AK, additional_values=AV.astype(np.float32)), TypeError,
     ["additional_values", "dtype"]),
    ("int32", lambda o: _na1d(o, q=Q.astype(np.int32), k=K.astype(np.int32), v=V.astype(np.int32)), TypeError,
     ["query", "float64, float32, float16 or bfloat16"]),
    ("complex", lambda o: _na1d(o, q=Q.astype(np.complex128), k=K.astype(np.complex128), v=V.astype(np.complex128)),
     TypeError, ["query", "float64, float32, float16 or bfloat16"]),
    ("out_read_only", lambda o: _na1d(_read_only(Q.shape)), ValueError, ["out", "writable", "read-only"]),
    ("out_shape", lambda o: _na1d(np.full((B, L, H, D + 1), SENTINEL)), ValueError,
     ["out", "shape (2, 8, 2, 4)", "(2, 8, 2, 5)"]),
    ("out_dtype", lambda o: _na1d(np.full(Q.shape, SENTINEL, np.float32)), TypeError, ["out", "dtype float64", "float32"]),
    ("out_self_alias", lambda o: _na1d(np.lib.stride_tricks.as_strided(o, Q.shape, (0,) + o.strides[1:])),
     ValueError, ["out", "alias", "stride 0"]),
    ("kernel_tuple_too_long", lambda o: _na1d(o, kernel_size=(3, 3)), ValueError,
     ["kernel_size", "1 entries", "(3, 3)"]),
    ("kernel_tuple_too_short", lambda o: _na2d(o, kernel_size=(3,)), ValueError, ["kernel_size", "2 entries"]),
    ("stride_tuple_length", lambda o: _na2d(o, stride=(1, 1, 1)), ValueError, ["stride", "2 entries"]),
    ("dilation_tuple_length", lambda o: _na2d(o, dilation=[1]), ValueError, ["dilation", "2 entries"]),
    ("causal_tuple_length", lambda o: _na2d(o, is_causal=(True,)), ValueError, ["is_causal", "2 entries"]),
    ("kernel_bool", lambda o: _na1d(o, kernel_size=True), TypeError, ["kernel_size", "int", "True"]),
    ("kernel_bool_in_tuple", lambda o: _na2d(o, kernel_size=(3, False)), TypeError, ["kernel_size", "int"]),
    ("kernel_float", lambda o: _na1d(o, kernel_size=3.0), TypeError, ["kernel_size", "int", "3.0"]),
    ("kernel_huge", lambda o: _na1d(o, kernel_size=(2**40,)), ValueError, ["kernel_size", "32-bit"]),
    ("causal_int", lambda o: _na1d(o, is_causal=1), TypeError, ["is_causal", "bool"]),
    ("scale_str", lambda o: _na1d(o, scale="x"), TypeError, ["scale", "float"]),
    ("scale_nan", lambda o: _na1d(o, scale=float("nan")), ValueError, ["scale", "finite"]),
    ("backend_unknown", lambda o: _na1d(o, backend="nope"), ValueError, ["backend", "reference", "'nope'"]),
    ("backend_type", lambda o: _na1d(o, backend=3), TypeError, ["backend", "string"]),
    ("backend_cuda_on_cpu", lambda o: _na1d(o, backend="naive"), ValueError, ["backend 'naive'"]),
    ("not_an_array", lambda o: _na1d(o, q=Q.tolist()), TypeError, ["__dlpack__", "list"]),
    ("query_scalar", lambda o: _na1d(o, q=np.float64(1.0)), ValueError, ["query", "4 dimensions", "shape ()"]),
    ("kernel_array", lambda o: _na2d(o, kernel_size=np.array([3, 3])), TypeError, ["kernel_size", "tuple of 2 ints"]),
    # arrays DLPack cannot carry: named, with the exporter's reason (not nanobind's "incompatible arguments")
    ("object_dtype", lambda o: _na1d(o, q=Q.astype(object), k=K.astype(object), v=V.astype(object)), TypeError,
     ["query", "DLPack", "object"]),
    ("longdouble", lambda o: _na1d(o, q=Q.astype(np.longdouble), k=K.astype(np.longdouble),
                                   v=V.astype(np.longdouble)), TypeError, ["query", "DLPack"]),
    ("key_byte_swapped", lambda o: _na1d(o, k=K.astype(">f8")), TypeError, ["key", "DLPack", "byte order"]),
    ("out_byte_swapped", lambda o: _na1d(np.full(Q.shape, SENTINEL, ">f8")), TypeError, ["out", "DLPack"]),
]


@pytest.mark.parametrize("call, exc, parts", [c[1:] for c in FORWARD_ERRORS], ids=[c[0] for c in FORWARD_ERRORS])
def test_forward_errors_name_argument_and_rule(call, exc, parts):
    out = np.full(Q2.shape if "_na2d" in call.__code__.co_names else Q.shape, SENTINEL)
    with pytest.raises(exc) as info:
        call(out)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert (out == SENTINEL).all(), "out was written although the call failed"


def test_backend_of_another_device_names_the_device():
    """In a CUDA build the message says where the backend runs; in a CPU-only
    build that it is not built. Either way the backend is named."""
    with pytest.raises(ValueError, match="backend 'fused'") as info:
        nhood.na1d(Q, K, V, 3, backend="fused")
    message = str(info.value)
    if nhood._core.with_cuda:
        assert "runs on cuda" in message and "cpu" in message
    else:
        assert "not available in this build" in message


def test_backends_unknown_device():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        nhood.backends("tpu")
    assert "reference" in nhood.backends("cpu")
    assert nhood.backends("cuda") == [] or nhood.cuda_available()


def test_no_partial_write_on_lse_or_window_errors_2d():
    """The error is found before any kernel runs, whatever the argument."""
    out = np.full(Q2.shape, SENTINEL)
    for bad in (dict(kernel_size=(3, 3), stride=(1, 4)), dict(kernel_size=(3, 3), dilation=(1, 3)),
                dict(kernel_size=(3, 3), additional_keys=AK)):
        with pytest.raises(ValueError):
            nhood.na2d(Q2, Q2, Q2, out=out, return_lse=True, **bad)
        assert (out == SENTINEL).all()


LSE = np.zeros((B, L, H), np.float32)
BACKWARD_ERRORS = [
    ("lse_dtype", dict(lse=LSE.astype(np.float64)), TypeError, ["lse", "dtype float32", "float64"]),
    ("lse_shape", dict(lse=LSE[:, :4]), ValueError, ["lse", "shape (2, 8, 2)"]),
    ("d_out_shape", dict(d_out=Q[..., :3]), ValueError, ["d_out", "shape (2, 8, 2, 4)"]),
    ("out_dtype", dict(out=Q.astype(np.float32)), TypeError, ["out", "dtype float64"]),
    ("additional_keys_alone", dict(additional_keys=AK), ValueError, ["additional_keys", "without additional_values"]),
    ("additional_values_alone", dict(additional_values=AV), ValueError,
     ["additional_values", "without additional_keys"]),
    ("stride_gt_kernel", dict(stride=5), ValueError, ["stride[0] (5)", "kernel_size[0] (3)"]),
]


@pytest.mark.parametrize("change, exc, parts", [c[1:] for c in BACKWARD_ERRORS], ids=[c[0] for c in BACKWARD_ERRORS])
def test_backward_errors(change, exc, parts):
    args = dict(query=Q, key=K, value=V, out=Q, lse=LSE, d_out=Q, kernel_size=3)
    args.update(change)
    with pytest.raises(exc) as info:
        nhood.na1d_backward(**args)
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_merge_attentions_errors():
    lse = np.zeros((B, L, H), np.float32)
    with pytest.raises(ValueError, match="non-empty sequences of equal length"):
        nhood.merge_attentions([Q], [])
    with pytest.raises(ValueError, match="non-empty"):
        nhood.merge_attentions([], [])
    with pytest.raises(ValueError, match=r"outputs\[1\] shape"):
        nhood.merge_attentions([Q, Q[:, :4]], [lse, lse[:, :4]])
    with pytest.raises(ValueError, match=r"lses\[1\] must have shape \(2, 8, 2\)"):
        nhood.merge_attentions([Q, Q], [lse, lse[:, :4]])


def test_attention_errors():
    with pytest.raises(ValueError, match="query must have 4 dimensions"):
        nhood.attention(Q2, Q2, Q2)
    with pytest.raises(ValueError, match="key must have as many tokens as query"):
        nhood.attention(Q, K[:, :5], V[:, :5])


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_errors():
    import torch

    q = torch.from_numpy(Q)
    with pytest.raises(TypeError, match="key must be a numpy array like query, got Tensor"):
        nhood.na1d(Q, q, V, 3)
    with pytest.raises(TypeError, match="query must have dtype float64, float32, float16 or bfloat16"):
        nhood.na1d(q.int(), q.int(), q.int(), 3)
    with pytest.raises(TypeError, match="value must have the dtype of query"):
        nhood.na1d(q, q, q.float(), 3)
    out = torch.full(Q.shape, SENTINEL, dtype=torch.float64)
    with pytest.raises(ValueError, match="stride"):
        nhood.na1d(q, q, q, 3, stride=4, out=out)
    assert bool((out == SENTINEL).all())
    with pytest.raises(ValueError, match="out= cannot be used when autograd"):
        nhood.na1d(q.clone().requires_grad_(), q, q, 3, out=out)
    with pytest.raises(TypeError, match="out must be a numpy array like query, got Tensor"):
        nhood.na1d(Q, K, V, 3, out=out)
    with pytest.raises(TypeError, match="key .*cannot be passed to nhood through DLPack.*meta"):
        nhood.na1d(q, torch.empty(Q.shape, dtype=torch.float64, device="meta"), q, 3)
    with pytest.raises(ValueError, match="out must not be a lazily negated torch view"):
        nhood.na1d(q, q, q, 3, out=out._neg_view())
    assert bool((out == SENTINEL).all())


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_negated_views_are_read_as_negated():
    """c.conj().imag is a lazily negated view (is_neg()); DLPack has no negative
    bit, so nhood must materialize it rather than read the memory under it."""
    import torch

    c = torch.complex(torch.from_numpy(K), torch.from_numpy(V))
    k = c.conj().imag  # == -V, negative bit set
    assert k.is_neg()
    q = torch.from_numpy(Q)
    want = nhood.na1d(q, -torch.from_numpy(V), q, 3)
    torch.testing.assert_close(nhood.na1d(q, k, q, 3), want)
    qg = q.clone().requires_grad_()
    torch.testing.assert_close(nhood.na1d(qg, k, q, 3), want)  # the autograd path too
    w = nhood.na1d_qk(q, k, 3)
    torch.testing.assert_close(w, nhood.na1d_qk(q, -torch.from_numpy(V), 3))


# ---- non-finite inputs and empty batches ------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend", nhood.backends("cpu"))
def test_nonfinite_query_poisons_only_its_row(bad, backend):
    dt = EXACT[backend]
    q = Q.astype(dt)
    q[1, 5, 0, 2] = bad
    out, lse = nhood.na1d(q, K.astype(dt), V.astype(dt), 3, return_lse=True, backend=backend)
    bad_row = np.zeros(out.shape[:-1], bool)
    bad_row[1, 5, 0] = True
    assert np.isnan(out[bad_row]).all(), "the row with a non-finite query must be NaN"
    assert np.isfinite(out[~bad_row]).all() and np.isfinite(lse[~bad_row]).all()
    with np.errstate(invalid="ignore"):
        want, _ = ref.forward(q.astype(np.float64), K.astype(dt), V.astype(dt), 3)
    tol = 1e-10 if dt == "float64" else 1e-5
    assert np.allclose(out[~bad_row], want[~bad_row], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", nhood.backends("cpu"))
def test_nan_key_poisons_the_queries_that_attend_it(backend):
    dt = EXACT[backend]
    k = K.astype(dt)
    k[0, 0, 1, 0] = np.nan
    out = nhood.na1d(Q.astype(dt), k, V.astype(dt), 3, backend=backend)
    # key 0 is in the (border-shifted) window of queries 0 and 1 only, head 1, batch 0
    attends = ref.axis_mask(L, 3)[:, 0]
    expected_nan = np.zeros(out.shape[:-1], bool)
    expected_nan[0, attends, 1] = True
    assert np.array_equal(np.isnan(out).any(-1), expected_nan)
    assert np.isnan(out[expected_nan]).all()


@pytest.mark.parametrize("backend", nhood.backends("cpu"))
def test_inf_value_propagates(backend):
    dt = EXACT[backend]
    v = V.astype(dt)
    v[0, 4, 0, 1] = np.inf
    out = nhood.na1d(Q.astype(dt), K.astype(dt), v, 3, backend=backend)
    attends = ref.axis_mask(L, 3)[:, 4]
    hit = np.zeros(out.shape, bool)
    hit[0, attends, 0, 1] = True
    assert np.isposinf(out[hit]).all()  # positive weights times +inf
    assert np.isfinite(out[~hit]).all()


@pytest.mark.parametrize("backend", nhood.backends("cpu"))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_batch_zero_gives_empty_results(rank, backend):
    spatial = (5, 4, 3)[:rank]
    dt = EXACT[backend]
    q = np.empty((0, *spatial, 4, 3), dt)
    k = np.empty((0, *spatial, 2, 3), dt)
    v = np.empty((0, *spatial, 2, 6), dt)
    ak, av = np.empty((0, 2, 2, 3), dt), np.empty((0, 2, 2, 6), dt)
    na = (nhood.na1d, nhood.na2d, nhood.na3d)[rank - 1]
    na_bwd = (nhood.na1d_backward, nhood.na2d_backward, nhood.na3d_backward)[rank - 1]
    out, lse = na(q, k, v, 2, return_lse=True, additional_keys=ak, additional_values=av, backend=backend)
    assert isinstance(out, np.ndarray) and out.shape == (0, *spatial, 4, 6) and out.dtype == dt
    assert lse.shape == (0, *spatial, 4) and lse.dtype == np.float32
    grads = na_bwd(q, k, v, out, lse, out, 2, additional_keys=ak, additional_values=av, backend=backend)
    assert [g.shape for g in grads] == [x.shape for x in (q, k, v, ak, av)]
