"""The fused `cpu` backend against the `reference` backend (float64 inside):
forward, lse and backward over random problems that cover ranks 1-3, odd/even
kernels, stride, dilation, per-axis causal, additional KV, GQA, head_dim_v !=
head_dim and strided views, in float32/float16/bfloat16. float64 is not the
cpu backend's (it refuses, and automatic dispatch falls back to reference)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nhood

pytestmark = pytest.mark.skipif("cpu" not in nhood.backends("cpu"), reason="build has no cpu backend")

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BACKWARD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
MAX_LEN = {1: 40, 2: 14, 3: 7}


def random_problem(rng):
    rank = int(rng.integers(1, 4))
    kernel, stride, dilation, causal, spatial = [], [], [], [], []
    for _ in range(rank):
        d = int(rng.choice([1, 1, 2, 3]))
        k = int(rng.integers(1, 6 if rank < 3 else 4))
        spatial.append(int(rng.integers(k * d, max(k * d, MAX_LEN[rank]) + 1)))
        kernel.append(k)
        stride.append(int(rng.integers(1, k + 1)))
        dilation.append(d)
        causal.append(bool(rng.random() < 0.3))
    heads_kv = int(rng.choice([1, 2]))
    return dict(rank=rank, spatial=tuple(spatial), kernel=tuple(kernel), stride=tuple(stride),
                dilation=tuple(dilation), causal=tuple(causal), batch=int(rng.integers(1, 3)), heads_kv=heads_kv,
                heads=heads_kv * int(rng.choice([1, 2, 3])), dim=int(rng.integers(1, 40)),
                dim_v=int(rng.integers(1, 40)), n_add=int(rng.choice([0, 0, 4])), packed=bool(rng.random() < 0.3))


def make_arrays(pb, dtype, rng):
    """q, k, v (views into one packed array when pb['packed']), additional KV, d_out."""
    b, sp, h, hk, d, dv = pb["batch"], pb["spatial"], pb["heads"], pb["heads_kv"], pb["dim"], pb["dim_v"]

    def put(a):
        if dtype == "bfloat16":
            torch = pytest.importorskip("torch")
            return torch.from_numpy(a).to(torch.bfloat16)
        return a.astype(dtype)

    if pb["packed"] and h == hk and d == dv:  # q/k/v as strided views of one qkv projection
        qkv = put(rng.standard_normal((b, *sp, 3, h, d)))
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    else:
        q = put(rng.standard_normal((b, *sp, h, d)))
        k = put(rng.standard_normal((b, *sp, hk, d)))
        v = put(rng.standard_normal((b, *sp, hk, dv)))
    extra = {}
    if pb["n_add"]:
        extra = dict(additional_keys=put(rng.standard_normal((b, pb["n_add"], hk, d))),
                     additional_values=put(rng.standard_normal((b, pb["n_add"], hk, dv))))
    d_out = put(rng.standard_normal((b, *sp, h, dv)))
    return q, k, v, extra, d_out


def to64(x):
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return x.float().numpy().astype(np.float64)


def rel(x, ref):
    x, ref = to64(x), to64(ref)
    assert x.shape == ref.shape
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / denom) if denom > 0 else float(np.linalg.norm(x))


def check(pb, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k, v, extra, d_out = make_arrays(pb, dtype, rng)
    args = dict(kernel_size=pb["kernel"], stride=pb["stride"], dilation=pb["dilation"], is_causal=pb["causal"],
                **extra)
    na, na_bwd = NA[pb["rank"]], NA_BACKWARD[pb["rank"]]
    out, lse = na(q, k, v, return_lse=True, backend="cpu", **args)
    ref_out, ref_lse = na(q, k, v, return_lse=True, backend="reference", **args)
    tol = TOL[dtype]
    assert rel(out, ref_out) <= tol, ("out", pb)
    assert rel(lse, ref_lse) <= max(tol, 1e-5), ("lse", pb)
    grads = na_bwd(q, k, v, ref_out, ref_lse, d_out, backend="cpu", **args)
    ref_grads = na_bwd(q, k, v, ref_out, ref_lse, d_out, backend="reference", **args)
    names = ["dq", "dk", "dv", "d_add_k", "d_add_v"]
    assert len(grads) == len(ref_grads)
    for name, g, r in zip(names, grads, ref_grads):
        assert rel(g, r) <= tol * (3 if dtype != "float32" else 1), (name, pb)


@pytest.mark.parametrize("seed", range(40))
def test_random_float32(seed):
    check(random_problem(np.random.default_rng(seed)), "float32", seed)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("seed", range(8))
def test_random_half(dtype, seed):
    check(random_problem(np.random.default_rng(1000 + seed)), dtype, seed)


FEATURES = {
    "1d_even_causal_dilated": dict(rank=1, spatial=(37,), kernel=(6,), stride=(1,), dilation=(3,), causal=(True,)),
    "2d_vision_7x7": dict(rank=2, spatial=(20, 21), kernel=(7, 7), stride=(1, 1), dilation=(1, 1),
                          causal=(False, False)),
    "2d_stride_mixed_causal": dict(rank=2, spatial=(13, 17), kernel=(4, 5), stride=(2, 5), dilation=(2, 1),
                                   causal=(False, True)),
    "3d_all": dict(rank=3, spatial=(6, 8, 9), kernel=(3, 2, 4), stride=(1, 2, 3), dilation=(2, 1, 2),
                   causal=(True, False, False)),
    "1d_large_kernel": dict(rank=1, spatial=(70,), kernel=(33,), stride=(1,), dilation=(1,), causal=(False,)),
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", list(FEATURES))
def test_features(name, dtype):
    pb = dict(FEATURES[name], batch=2, heads=4, heads_kv=2, dim=24, dim_v=20, n_add=3, packed=False)
    check(pb, dtype, sum(name.encode()))
    check(dict(pb, heads_kv=4, dim_v=24, n_add=0, packed=True), dtype, 7)


@pytest.mark.parametrize("kernel,dim,n_add", [((7, 7), 32, 0), ((13, 13), 64, 0), ((5, 13), 64, 3), ((3, 9), 20, 5),
                                               ((1, 17), 16, 0), ((2, 2), 8, 0), ((7, 7), 32, 4), ((6, 5), 24, 0),
                                               ((7, 3), 40, 2), ((1, 8), 16, 0)])
def test_band_groups(kernel, dim, n_add):
    """Forward band groups of 1-8 queries (segments of 16 along the last axis, window widths
    from 2 to 17, borders where windows clamp) with the best kernels of this CPU; bands of at
    most half a vector take the paired-query kernels (odd segment lengths: a lone last query, additional
    tokens)."""
    pb = dict(rank=2, spatial=(19, 37), kernel=kernel, stride=(1, 1), dilation=(1, 1), causal=(False, False),
              batch=1, heads=2, heads_kv=1, dim=dim, dim_v=dim, n_add=n_add, packed=False)
    check(pb, "float32", dim)


def test_float64_goes_to_reference():
    q = np.random.default_rng(0).standard_normal((1, 9, 2, 8))
    with pytest.raises(ValueError, match="float64"):
        nhood.na1d(q, q, q, 3, backend="cpu")
    out = nhood.na1d(q, q, q, 3)  # automatic dispatch falls back to reference
    np.testing.assert_allclose(out, nhood.na1d(q, q, q, 3, backend="reference"))


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_capped_isa_kernels(isa):
    """The portable (4-float) and AVX2 kernels, chosen through NHOOD_CPU_ISA (read once per
    process) so they are covered on CPUs whose best table is wider (AVX-512); the AVX2 cap
    falls back to generic on CPUs without AVX2. Includes band groups of every size (narrow
    and wide windows, additional tokens, odd segment lengths)."""
    code = (
        "import numpy as np, sys; sys.path.insert(0, %r); import test_cpu_backend as t\n"
        "for s in range(6): t.check(t.random_problem(np.random.default_rng(s)), 'float32', s)\n"
        "t.check(dict(t.FEATURES['2d_vision_7x7'], batch=1, heads=2, heads_kv=1, dim=19, dim_v=33, n_add=5,"
        " packed=False), 'float32', 1)\n"
        "t.check(dict(t.FEATURES['1d_large_kernel'], batch=1, heads=2, heads_kv=2, dim=64, dim_v=64, n_add=0,"
        " packed=False), 'float32', 2)\n"
        "t.check(dict(t.FEATURES['2d_vision_7x7'], spatial=(9, 37), kernel=(3, 13), batch=1, heads=1, heads_kv=1,"
        " dim=32, dim_v=48, n_add=2, packed=False), 'float32', 3)\n"
        "t.check(dict(t.FEATURES['2d_vision_7x7'], spatial=(9, 21), kernel=(4, 3), batch=1, heads=2, heads_kv=1,"
        " dim=24, dim_v=16, n_add=3, packed=False), 'float32', 4)\n" % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NHOOD_CPU_ISA=isa)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_non_finite_value_reaches_only_the_queries_attending_it():
    """Band groups run P.V over the union of several queries' windows (P = 0
    outside each); an inf value must still reach only the queries whose
    window holds its key (0 * inf would be NaN for the others)."""
    import dense_reference as ref
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 20, 24, 1, 32)).astype(np.float32) for _ in range(3))
    v[0, 9, 11, 0, 5] = np.inf
    out = nhood.na2d(q, k, v, kernel_size=(7, 7), backend="cpu")
    rows, cols = ref.axis_mask(20, 7)[:, 9], ref.axis_mask(24, 7)[:, 11]
    hit = np.zeros(out.shape, bool)
    hit[0, rows[:, None] & cols[None, :], 0, 5] = True
    assert np.isposinf(out[hit]).all()
    assert np.isfinite(out[~hit]).all()


def test_backward_buffers_reused_across_calls():
    """The backward keeps its buffers (packed KV, dK/dV accumulators, part buffers) per thread
    across calls and zeroes accumulator rows as it reads them: problems of different sizes in
    a row, with units split into parts (one kv head) and not (many heads), must give the same
    bits as their first call and match the reference."""
    base = dict(rank=2, kernel=(5, 5), stride=(1, 1), dilation=(1, 1), causal=(False, False), batch=1,
                dim=24, dim_v=16, packed=False)
    problems = [dict(base, spatial=(20, 23), heads=2, heads_kv=1, n_add=3),   # parts > 1
                dict(base, spatial=(9, 11), heads=8, heads_kv=8, n_add=0),    # one part per unit
                dict(base, spatial=(31, 17), heads=16, heads_kv=8, n_add=2),  # larger, GQA
                dict(base, spatial=(7, 6), heads=1, heads_kv=1, n_add=0)]     # smaller, parts > 1
    runs = []
    for seed, pb in enumerate(problems):
        rng = np.random.default_rng(seed)
        q, k, v, extra, d_out = make_arrays(pb, "float32", rng)
        args = dict(kernel_size=pb["kernel"], **extra)
        out, lse = nhood.na2d(q, k, v, return_lse=True, backend="reference", **args)
        runs.append((q, k, v, out, lse, d_out, args))
    first = [nhood.na2d_backward(*r[:6], backend="cpu", **r[6]) for r in runs]
    for r, g0 in zip(runs, first):
        ref = nhood.na2d_backward(*r[:6], backend="reference", **r[6])
        for a, b in zip(g0, ref):
            assert rel(a, b) <= 1e-5
    for _ in range(2):
        for r, g0 in zip(reversed(runs), reversed(first)):
            for a, b in zip(nhood.na2d_backward(*r[:6], backend="cpu", **r[6]), g0):
                np.testing.assert_array_equal(a, b)
