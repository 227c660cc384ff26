"""Backward pass of every CPU backend against the dense float64 reference's
closed-form gradients (tests/dense_reference.backward), over random problems,
plus finite-difference checks in float64 that do not rely on the reference's
gradient formulas at all. Gradient buffers start as NaN (poisoned)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import dense_reference as ref
import nhood
from nhood_cases import (BACKEND_DTYPES, CPU_BACKENDS, EXACT, FLOAT64_BACKENDS, NA, NA_BACKWARD, TOL, Arrays, make_inputs,
                         poisoned_outputs, problems, rel_err, to64, unsupported, window)

NAMES = ["d_query", "d_key", "d_value", "d_additional_keys", "d_additional_values"]


def _check_backward(p, dtype, backend, deterministic=False):
    arrays = Arrays(dtype)
    rng = np.random.default_rng(p["seed"])
    q, k, v, add = make_inputs(p, arrays, rng)
    d_out = arrays.random(rng, (p["batch"], *p["spatial"], p["heads"], p["head_dim_v"]))
    w = window(p)
    try:
        out, lse = NA[p["rank"]](q, k, v, **w, scale=p["scale"], return_lse=True, backend=backend, **add)
        with poisoned_outputs():
            grads = NA_BACKWARD[p["rank"]](q, k, v, out, lse, d_out, **w, scale=p["scale"], backend=backend,
                                           deterministic=deterministic, **add)
    except ValueError as e:
        if backend != "reference" and unsupported(e):
            reject()
        raise
    inputs = [q, k, v] + ([add["additional_keys"], add["additional_values"]] if add else [])
    assert len(grads) == len(inputs)
    want = ref.backward(to64(q), to64(k), to64(v), to64(d_out), w["kernel_size"], w["stride"], w["dilation"],
                        w["is_causal"], p["scale"], *(to64(x) for x in inputs[3:]))
    # Key/value gradients are sums over every query that attends a key, so in
    # float32/16 their rounding error scales with the sum of the terms' sizes,
    # not with the (possibly cancelling) sum. The gradients for |d_out| bound
    # those sizes exactly for d_value (P >= 0), and set the scale for the rest.
    # float64 is held to the plain relative error.
    magnitude = [np.inf] * len(want) if dtype == "float64" else [np.linalg.norm(w) for w in ref.backward(
        to64(q), to64(k), to64(v), np.abs(to64(d_out)), w["kernel_size"], w["stride"], w["dilation"], w["is_causal"],
        p["scale"], *(to64(x) for x in inputs[3:]))]
    for name, g, x, wg, mag in zip(NAMES, grads, inputs, want, magnitude):
        assert type(g) is type(x) and tuple(g.shape) == tuple(x.shape) and g.dtype == x.dtype, name
        got = to64(g)
        assert np.isfinite(got).all(), f"{name}: some elements were not written (still NaN)"
        if not np.any(wg):
            # e.g. a key no query attends (possible with stride): its gradient must be exactly zero
            assert not np.any(got), f"{name}: expected exact zeros"
            continue
        err = rel_err(got, wg)
        if dtype != "float64":
            err = min(err, float(np.linalg.norm(got - wg)) / mag)
        assert err <= TOL[dtype], f"{name}: relative error {err:.3g} > {TOL[dtype]} ({backend}, {dtype}, {p})"


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@given(p=problems())
def test_backward_matches_dense_reference(backend, dtype, p):
    _check_backward(p, dtype, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rank", [1, 2, 3])
@given(data=st.data(), deterministic=st.booleans())
def test_backward_each_rank(backend, rank, data, deterministic):
    _check_backward(data.draw(problems(rank=rank)), EXACT[backend], backend, deterministic)


def _loss(p, backend, q, k, v, add, cot):
    out = NA[p["rank"]](q, k, v, **window(p), scale=p["scale"], backend=backend, **add)
    return float(np.sum(out * cot))


# Fixed problems for finite differences: each covers a different feature mix.
FD_CASES = [
    dict(rank=1, spatial=(9,), kernel_size=4, stride=2, dilation=2, is_causal=False, heads=2, heads_kv=1, n_add=2),
    dict(rank=2, spatial=(5, 6), kernel_size=(3, 2), stride=(1, 2), dilation=1, is_causal=(True, False), heads=3,
         heads_kv=3, n_add=0),
    dict(rank=3, spatial=(3, 4, 4), kernel_size=(2, 3, 2), stride=1, dilation=(1, 1, 2), is_causal=(False, True, False),
         heads=2, heads_kv=2, n_add=1),
]


@pytest.mark.parametrize("backend", FLOAT64_BACKENDS)
@pytest.mark.parametrize("case", range(len(FD_CASES)))
def test_backward_finite_differences(backend, case):
    """Directional derivatives of sum(out * cot) along random directions, by
    central differences, against <gradient, direction> from na*d_backward."""
    p = dict(FD_CASES[case], batch=2, head_dim=4, head_dim_v=3, scale=0.7, seed=100 + case)
    rng = np.random.default_rng(p["seed"])
    arrays = Arrays("float64")
    q, k, v, add = make_inputs(p, arrays, rng)
    cot = rng.standard_normal((p["batch"], *p["spatial"], p["heads"], p["head_dim_v"]))
    try:
        out, lse = NA[p["rank"]](q, k, v, **window(p), scale=p["scale"], return_lse=True, backend=backend, **add)
    except ValueError as e:
        if backend != "reference" and unsupported(e):
            pytest.skip(str(e))
        raise
    grads = NA_BACKWARD[p["rank"]](q, k, v, out, lse, cot, **window(p), scale=p["scale"], backend=backend, **add)
    inputs = dict(q=q, k=k, v=v, **add)
    eps = 1e-6
    for (name, x), g in zip(inputs.items(), grads):
        direction = rng.standard_normal(x.shape)
        shifted = {}
        for sign in (1, -1):
            moved = dict(inputs, **{name: x + sign * eps * direction})
            shifted[sign] = _loss(p, backend, moved["q"], moved["k"], moved["v"],
                                  {n: moved[n] for n in add}, cot)
        numeric = (shifted[1] - shifted[-1]) / (2 * eps)
        analytic = float(np.sum(g * direction))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (name, numeric, analytic)


@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_backward_matches_dense(is_causal):
    rng = np.random.default_rng(11)
    q, k = rng.standard_normal((2, 12, 4, 6)), rng.standard_normal((2, 12, 2, 6))
    v, d_out = rng.standard_normal((2, 12, 2, 5)), rng.standard_normal((2, 12, 4, 5))
    out, lse = nhood.attention(q, k, v, is_causal=is_causal, return_lse=True)
    got = nhood.attention_backward(q, k, v, out, lse, d_out, is_causal=is_causal)
    want = ref.backward(q, k, v, d_out, 12, is_causal=is_causal)
    for name, g, w in zip(NAMES, got, want):
        assert rel_err(g, w) <= 1e-10, name
