"""Forward pass of every CPU backend against the dense float64 reference
(tests/dense_reference.py), over random problems drawn by hypothesis:
rank 1-3, odd/even kernels, stride, dilation, per-axis causal, additional KV
tokens, GQA/MQA, head_dim_v != head_dim, scale, return_lse, all dtypes.
Outputs start as NaN (poisoned), so finite results prove every element was
written."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import dense_reference as ref
import nhood
from nhood_cases import (BACKEND_DTYPES, CPU_BACKENDS, DTYPES, EXACT, LSE_TOL, NA, SUPPORTED, TOL, Arrays, make_inputs,
                         poisoned_outputs, problems, rel_err, to64, unsupported, window)


def _check_forward(p, dtype, backend, return_lse, use_out):
    arrays = Arrays(dtype)
    rng = np.random.default_rng(p["seed"])
    q, k, v, add = make_inputs(p, arrays, rng)
    out_shape = (p["batch"], *p["spatial"], p["heads"], p["head_dim_v"])
    kwargs = dict(window(p), scale=p["scale"], return_lse=return_lse, backend=backend, **add)
    out_arg = arrays.full(out_shape, np.nan) if use_out else None
    try:
        with poisoned_outputs():
            result = NA[p["rank"]](q, k, v, **kwargs, out=out_arg)
    except ValueError as e:
        if backend != "reference" and unsupported(e):
            reject()  # e.g. a fast backend without float64; the reference must support everything
        raise
    out, lse = result if return_lse else (result, None)
    if use_out:
        assert out is out_arg or (arrays.lib == "torch" and out.data_ptr() == out_arg.data_ptr())
    assert type(out) is type(q)
    assert tuple(out.shape) == out_shape and str(out.dtype).endswith(dtype)

    # The reference sees exactly the (rounded) inputs the backend saw.
    want_out, want_lse = ref.forward(to64(q), to64(k), to64(v), window(p)["kernel_size"], window(p)["stride"],
                                     window(p)["dilation"], window(p)["is_causal"], p["scale"],
                                     *(to64(add[n]) for n in ("additional_keys", "additional_values") if add))
    got = to64(out)
    assert np.isfinite(got).all(), "some output elements were not written (still NaN)"
    err = rel_err(got, want_out)
    assert err <= TOL[dtype], f"out: relative error {err:.3g} > {TOL[dtype]} ({backend}, {dtype}, {p})"
    if return_lse:
        assert tuple(lse.shape) == out_shape[:-1] and str(lse.dtype).endswith("float32")
        got_lse = to64(lse)
        assert np.isfinite(got_lse).all(), "some lse elements were not written (still NaN)"
        err = rel_err(got_lse, want_lse)
        assert err <= LSE_TOL[dtype], f"lse: relative error {err:.3g} > {LSE_TOL[dtype]} ({backend}, {dtype}, {p})"


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@given(p=problems(), return_lse=st.booleans(), use_out=st.booleans())
def test_forward_matches_dense_reference(backend, dtype, p, return_lse, use_out):
    _check_forward(p, dtype, backend, return_lse, use_out)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rank", [1, 2, 3])
@given(data=st.data())
def test_forward_each_rank(backend, rank, data):
    """Every rank gets its own examples (the mixed sweep may draw few of one),
    in the backend's most precise dtype."""
    p = data.draw(problems(rank=rank))
    _check_forward(p, EXACT[backend], backend, True, True)


# Hand-picked corners a small random sweep may miss: kernel == length, K=1,
# even kernels at borders, stride == kernel, maximal dilation, causal with
# stride, mixed causal axes, many additional tokens, MQA.
CORNERS = [
    dict(spatial=(16,), kernel_size=16, stride=1, dilation=1, is_causal=False),
    dict(spatial=(16,), kernel_size=16, stride=16, dilation=1, is_causal=True),
    dict(spatial=(11,), kernel_size=1, stride=1, dilation=1, is_causal=False),
    dict(spatial=(12,), kernel_size=4, stride=4, dilation=3, is_causal=False),
    dict(spatial=(13,), kernel_size=6, stride=4, dilation=2, is_causal=True),
    dict(spatial=(7, 9), kernel_size=(2, 4), stride=(2, 3), dilation=(3, 2), is_causal=(True, False)),
    dict(spatial=(8, 8), kernel_size=(8, 1), stride=(3, 1), dilation=1, is_causal=(False, True)),
    dict(spatial=(4, 5, 6), kernel_size=(2, 5, 3), stride=(2, 5, 1), dilation=(2, 1, 2), is_causal=(True, False, True)),
    dict(spatial=(3, 3, 3), kernel_size=3, stride=3, dilation=1, is_causal=True),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", range(len(CORNERS)))
def test_forward_corner_cases(backend, case):
    c = CORNERS[case]
    p = dict(c, rank=len(c["spatial"]), batch=2, heads=4, heads_kv=1, head_dim=5, head_dim_v=3, n_add=case % 3 * 2,
             scale=None, seed=case)
    _check_forward(p, EXACT[backend], backend, True, True)


@pytest.mark.parametrize("backend, dtype", [k for k, ok in SUPPORTED.items() if not ok] or [(None, None)])
def test_refused_dtypes_are_clear_and_auto_falls_back(backend, dtype):
    """A backend that leaves a dtype to another refuses it with a message
    naming itself and the dtype, and automatic dispatch still runs it."""
    if backend is None:
        assert all(SUPPORTED.values())  # nothing refused: every pair is in the sweeps
        return
    x = Arrays(dtype).put(np.random.default_rng(0).standard_normal((1, 6, 2, 4)))
    with pytest.raises(ValueError, match=f"backend '{backend}' does not support") as info:
        nhood.na1d(x, x, x, 3, backend=backend)
    assert dtype in str(info.value)
    assert rel_err(nhood.na1d(x, x, x, 3), ref.forward(to64(x), to64(x), to64(x), 3)[0]) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_backend_matches_reference(dtype):
    p = dict(rank=2, spatial=(6, 7), kernel_size=(3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(False, True),
             batch=2, heads=4, heads_kv=2, head_dim=8, head_dim_v=6, n_add=2, scale=0.3, seed=7)
    _check_forward(p, dtype, None, True, False)


def test_lse_is_log_sum_exp_of_the_window():
    """lse checked against its definition directly (not only via the oracle):
    with kernel == length and no causality, every query sees every key."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 10, 2, 4)) for _ in range(3))
    _, lse = nhood.na1d(q, k, v, 10, return_lse=True)
    logits = np.einsum("bihd,bjhd->bihj", q, k) * 4 ** -0.5
    want = np.log(np.exp(logits).sum(-1))
    assert np.max(np.abs(lse - want)) < 1e-5
