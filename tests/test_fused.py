"""The `fused` CUDA backend (flash-style, tensor cores) against the dense
float64 reference (tests/dense_reference.py), forward and backward, float16
and bfloat16, over the feature set: ranks 1-3, odd/even kernels, stride,
dilation, per-axis causal, additional KV tokens, GQA, head_dim != head_dim_v,
head dims off the 32/64/128/256 buckets, strided (packed qkv) views, and the
deterministic flag. Skips without CUDA.
"""
from __future__ import annotations

import numpy as np
import pytest

import nhood
import dense_reference as ref

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    not (nhood.cuda_available() and "fused" in nhood.backends("cuda") and torch.cuda.is_available()),
    reason="no CUDA GPU, or nhood built without the fused backend")

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BWD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}
TOL = 1e-2

# (spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, dim_v, n_add)
CASES = {
    "1d": ((67,), (7,), (1,), (1,), (False,), 2, 2, 64, 64, 0),
    "1d-even-causal": ((90,), (8,), (1,), (1,), (True,), 2, 1, 32, 32, 0),
    "1d-long-kernel": ((300,), (129,), (1,), (1,), (False,), 1, 1, 128, 128, 0),
    "1d-stride-dil": ((97,), (9,), (3,), (2,), (False,), 2, 2, 64, 64, 3),
    "2d": ((13, 17), (5, 7), (1, 1), (1, 1), (False, False), 2, 2, 64, 64, 0),
    "2d-even-stride": ((16, 20), (4, 6), (2, 3), (1, 1), (False, False), 2, 1, 32, 32, 0),
    "2d-dilation": ((19, 23), (3, 5), (1, 1), (3, 2), (False, False), 1, 1, 64, 64, 0),
    "2d-causal-mixed": ((15, 18), (5, 4), (1, 2), (1, 2), (True, False), 4, 2, 64, 64, 5),
    "2d-add-gqa": ((12, 12), (3, 3), (1, 1), (1, 1), (False, False), 4, 1, 128, 128, 70),
    "2d-dim-v": ((11, 14), (3, 5), (1, 1), (1, 1), (False, False), 2, 2, 48, 24, 2),
    "2d-d256-fwd": ((9, 10), (3, 3), (1, 1), (1, 1), (False, False), 1, 1, 256, 200, 0),
    "3d": ((6, 7, 9), (3, 3, 5), (1, 1, 1), (1, 1, 1), (False, False, False), 2, 2, 64, 64, 0),
    "3d-all": ((8, 9, 10), (3, 4, 5), (2, 1, 3), (2, 2, 1), (True, False, True), 2, 1, 40, 40, 4),
    # Head dim 32, 2-D/3-D, no additional tokens: the small-window forward
    # (small.cuh) when a block's KV box is small (geometry.hpp,
    # small_window_geo); these cover its features and limits, and large
    # kernels at head dim 32 that take the general forward.
    "2d-small-dim-v-gqa": ((11, 14), (3, 5), (1, 1), (1, 1), (False, False), 4, 2, 32, 24, 0),
    "2d-small-causal-stride-dil": ((21, 26), (4, 5), (2, 3), (2, 1), (True, False), 2, 1, 24, 24, 0),
    "2d-small-limit": ((40, 9), (8, 8), (1, 1), (1, 1), (False, False), 2, 2, 32, 32, 0),
    "3d-small-warp-tile-3-axes": ((2, 8, 16), (2, 3, 5), (1, 1, 2), (1, 1, 1), (False, False, True), 2, 2, 32, 32, 0),
    "3d-small-dilation": ((3, 6, 18), (2, 3, 3), (1, 1, 2), (1, 2, 1), (False, False, True), 2, 1, 32, 32, 0),
    "1d-general-k65": ((200,), (65,), (1,), (1,), (True,), 2, 2, 32, 32, 0),
    "2d-general-k13": ((24, 30), (11, 13), (1, 1), (1, 1), (False, False), 2, 2, 32, 32, 0),
    "3d-general": ((10, 12, 14), (5, 7, 9), (1, 1, 1), (1, 1, 1), (False, False, False), 2, 2, 64, 64, 0),
}


def rel_err(x, r):
    x = np.asarray(x, np.float64)
    return float(np.abs(x - r).max() / max(np.abs(r).max(), 1e-30))


def make(case, seed, batch=2):
    spatial, kernel, stride, dil, causal, h, hkv, d, dv, n_add = CASES[case]
    rng = np.random.default_rng(seed)
    arr = lambda *s: rng.standard_normal(s)
    q = arr(batch, *spatial, h, d)
    k = arr(batch, *spatial, hkv, d)
    v = arr(batch, *spatial, hkv, dv)
    ak = arr(batch, n_add, hkv, d) if n_add else None
    av = arr(batch, n_add, hkv, dv) if n_add else None
    do = arr(batch, *spatial, h, dv)
    return dict(q=q, k=k, v=v, ak=ak, av=av, do=do, kernel=kernel, stride=stride, dil=dil, causal=causal)


def dev(a, dtype):
    return None if a is None else torch.from_numpy(a).to(getattr(torch, dtype)).cuda()


def host(x):
    return x.float().cpu().numpy().astype(np.float64)


def rounded(a, dtype):  # the reference sees the same rounded inputs
    return None if a is None else host(dev(a, dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_matches_reference(case, dtype):
    c = make(case, seed=hash(case) % 1000)
    rank = len(c["kernel"])
    win = dict(kernel_size=c["kernel"], stride=c["stride"], dilation=c["dil"], is_causal=c["causal"])
    q, k, v, ak, av, do = (dev(c[n], dtype) for n in ("q", "k", "v", "ak", "av", "do"))
    rq, rk, rv, rak, rav, rdo = (rounded(c[n], dtype) for n in ("q", "k", "v", "ak", "av", "do"))
    out, lse = NA[rank](q, k, v, **win, additional_keys=ak, additional_values=av, return_lse=True, backend="fused")
    ref_out, ref_lse = ref.forward(rq, rk, rv, **win, additional_keys=rak, additional_values=rav)
    assert rel_err(host(out), ref_out) <= TOL
    assert rel_err(host(lse), ref_lse) <= TOL
    if max(q.shape[-1], v.shape[-1]) > 128:
        return  # backward: head dims <= 128
    for deterministic in (False, True):
        grads = NA_BWD[rank](q, k, v, out, lse, do, **win, additional_keys=ak, additional_values=av,
                             backend="fused", deterministic=deterministic)
        refs = ref.backward(rq, rk, rv, rdo, **win, additional_keys=rak, additional_values=rav)
        for name, g, r in zip(("dq", "dk", "dv", "d_add_k", "d_add_v"), grads, refs):
            err = rel_err(host(g), r)
            assert err <= 2 * TOL, f"{name}: rel err {err:.2e}"
        if deterministic:
            again = NA_BWD[rank](q, k, v, out, lse, do, **win, additional_keys=ak, additional_values=av,
                                 backend="fused", deterministic=True)
            for g, h in zip(grads, again):
                assert torch.equal(g, h)


def test_fused_strided_packed_qkv():
    rng = np.random.default_rng(0)
    qkv = torch.from_numpy(rng.standard_normal((2, 10, 11, 3, 2, 64))).half().cuda()
    q, k, v = qkv.unbind(3)
    out = nhood.na2d(q, k, v, kernel_size=(3, 5), backend="fused")
    ref_out, _ = ref.forward(host(q), host(k), host(v), kernel_size=(3, 5))
    assert rel_err(host(out), ref_out) <= TOL
    # a non-unit head-dim stride takes the scalar (non-cp.async) load path
    qt = torch.from_numpy(rng.standard_normal((2, 10, 11, 2, 64))).half().cuda().transpose(-1, -2).contiguous()
    qt = qt.transpose(-1, -2)
    out = nhood.na2d(qt, k, v, kernel_size=(3, 5), backend="fused")
    ref_out, _ = ref.forward(host(qt), host(k), host(v), kernel_size=(3, 5))
    assert rel_err(host(out), ref_out) <= TOL


def test_fused_reports_float32_unsupported():
    q = torch.randn(1, 16, 1, 32, device="cuda")
    with pytest.raises(Exception, match="float16 and bfloat16"):
        nhood.na1d(q, q, q, kernel_size=3, backend="fused")
    out = nhood.na1d(q, q, q, kernel_size=3)  # dispatch falls back
    assert out.shape == q.shape
