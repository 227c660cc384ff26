"""Unfused QK/AV ops (nhood.na*d_qk / na*d_av and their backward functions)
on every backend against dense float64 references (tests/unfused_reference.py,
built from dense_reference.neighborhood_mask's axis masks)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import nhood
import unfused_reference as uref

QK = {1: nhood.na1d_qk, 2: nhood.na2d_qk, 3: nhood.na3d_qk}
AV = {1: nhood.na1d_av, 2: nhood.na2d_av, 3: nhood.na3d_av}
QK_BWD = {1: nhood.na1d_qk_backward, 2: nhood.na2d_qk_backward, 3: nhood.na3d_qk_backward}
AV_BWD = {1: nhood.na1d_av_backward, 2: nhood.na2d_av_backward, 3: nhood.na3d_av_backward}
TOL = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}

# (spatial, kernel, stride, dilation, causal)
CASES = [
    ((9,), 3, 1, 1, False),
    ((10,), 4, 2, 2, False),
    ((8,), 5, 3, 1, True),
    ((7, 6), (3, 4), 1, 1, False),
    ((9, 8), 3, (2, 1), (2, 2), (True, False)),
    ((6, 7), (4, 3), (4, 3), 1, (False, True)),
    ((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 2, 2), (False, True, False)),
    ((5, 4, 4), 2, 1, 1, True),
]


def _backends():
    """(device, backend) pairs that run the unfused ops in this build."""
    out = [("cpu", "reference")]
    if nhood.cuda_available():
        out += [("cuda", b) for b in ("naive", "gemm")]
    return out


BACKENDS = _backends()


class Arrays:
    """NumPy for float64/32 on the CPU, torch otherwise (float16/bfloat16, CUDA)."""

    def __init__(self, device, dtype):
        self.device, self.dtype = device, dtype
        self.torch = None
        if device != "cpu" or dtype in ("float16", "bfloat16"):
            self.torch = pytest.importorskip("torch")
            if device == "cuda" and not self.torch.cuda.is_available():
                pytest.skip("torch sees no GPU")

    def put(self, a):
        if self.torch is None:
            return np.asarray(a, self.dtype)
        t = self.torch
        return t.from_numpy(np.asarray(a, np.float64)).to(getattr(t, self.dtype)).to(self.device)

    def get(self, x):
        if self.torch is None:
            return np.asarray(x, np.float64)
        return x.detach().double().cpu().numpy()

    def rounded(self, a):
        """a as the device dtype sees it, back in float64 (reference inputs)."""
        return self.get(self.put(a))


def _close(got, want, dtype, what):
    want = np.asarray(want, np.float64)
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite), f"{what}: -inf pattern differs"
    assert np.array_equal(got[~finite], want[~finite]), f"{what}: non-finite values differ"
    scale = max(1.0, float(np.abs(want[finite]).max(initial=0.0)))
    err = float(np.abs(got[finite] - want[finite]).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} > {TOL[dtype]} * {scale:.3g}"


def _problem(case, heads=(4, 2), dim=5, batch=2, n_add=0, rpb=False, seed=0):
    spatial, kernel, stride, dilation, causal = case
    rank = len(spatial)
    rng = np.random.default_rng(seed)
    h, hkv = heads
    lay = uref.Layout(spatial, kernel, stride, dilation, causal)
    q = rng.standard_normal((batch, *spatial, h, dim))
    k = rng.standard_normal((batch, *spatial, hkv, dim))
    v = rng.standard_normal((batch, *spatial, hkv, dim))
    add_k = rng.standard_normal((batch, n_add, hkv, dim)) if n_add else None
    add_v = rng.standard_normal((batch, n_add, hkv, dim)) if n_add else None
    bias = rng.standard_normal((h, *[2 * kk - 1 for kk in lay.kernel])) if rpb else None
    kw = dict(kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal)
    return rank, lay, q, k, v, add_k, add_v, bias, kw


def _dtypes(device):
    return ["float64", "float32", "float16", "bfloat16"] if device == "cpu" else ["float32", "float16", "bfloat16"]


PARAMS = [(d, b, dt) for d, b in BACKENDS for dt in _dtypes(d)]


@pytest.mark.parametrize("device,backend,dtype", PARAMS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("extras", [(0, False), (3, True)], ids=["plain", "add+rpb"])
def test_qk_av_forward(device, backend, dtype, case, extras):
    n_add, use_rpb = extras
    rank, lay, q, k, v, add_k, add_v, bias, kw = _problem(case, n_add=n_add, rpb=use_rpb)
    A = Arrays(device, dtype)
    q, k, v = A.rounded(q), A.rounded(k), A.rounded(v)
    add_k = None if add_k is None else A.rounded(add_k)
    add_v = None if add_v is None else A.rounded(add_v)
    bias = None if bias is None else A.rounded(bias)
    put = lambda x: None if x is None else A.put(x)
    w = QK[rank](put(q), put(k), rpb=put(bias), additional_keys=put(add_k), backend=backend, **kw)
    _close(A.get(w), uref.qk(q, k, lay, bias, add_k), dtype, "qk weights")
    # AV on softmax-like weights (finite, unused columns arbitrary: must be ignored)
    rng = np.random.default_rng(1)
    weights = A.rounded(rng.random((q.shape[0], *lay.spatial, q.shape[-2], lay.m + n_add)))
    out = AV[rank](A.put(weights), put(v), additional_values=put(add_v), backend=backend, **kw)
    _close(A.get(out), uref.av(weights, v, lay, add_v), dtype, "av out")


@pytest.mark.parametrize("device,backend,dtype", [p for p in PARAMS if p[2] in ("float64", "float32", "float16")])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("extras", [(0, False), (2, True)], ids=["plain", "add+rpb"])
def test_qk_av_backward(device, backend, dtype, case, extras):
    n_add, use_rpb = extras
    rank, lay, q, k, v, add_k, add_v, bias, kw = _problem(case, n_add=n_add, rpb=use_rpb, seed=3)
    A = Arrays(device, dtype)
    q, k, v = A.rounded(q), A.rounded(k), A.rounded(v)
    add_k = None if add_k is None else A.rounded(add_k)
    add_v = None if add_v is None else A.rounded(add_v)
    rng = np.random.default_rng(4)
    shape_w = (q.shape[0], *lay.spatial, q.shape[-2], lay.m + n_add)
    dw = A.rounded(rng.standard_normal(shape_w))
    weights = A.rounded(rng.random(shape_w))
    d_out = A.rounded(rng.standard_normal(q.shape))
    put = lambda x: None if x is None else A.put(x)

    dq, dk, d_rpb, d_addk = QK_BWD[rank](put(q), put(k), A.put(dw), rpb=put(bias), additional_keys=put(add_k),
                                        backend=backend, **kw)
    want = uref.qk_backward(q, k, dw, lay, None if bias is None else bias.shape, add_k)
    _close(A.get(dq), want["d_query"], dtype, "d_query")
    _close(A.get(dk), want["d_key"], dtype, "d_key")
    assert (d_rpb is None) == (bias is None) and (d_addk is None) == (add_k is None)
    if bias is not None:
        _close(A.get(d_rpb), want["d_rpb"], dtype, "d_rpb")
    if add_k is not None:
        _close(A.get(d_addk), want["d_additional_keys"], dtype, "d_additional_keys")

    d_w, d_v, d_addv = AV_BWD[rank](A.put(weights), put(v), A.put(d_out), additional_values=put(add_v),
                                    backend=backend, **kw)
    want = uref.av_backward(weights, v, d_out, lay, add_v)
    _close(A.get(d_w), want["d_weights"], dtype, "d_weights")
    _close(A.get(d_v), want["d_value"], dtype, "d_value")
    if add_v is not None:
        _close(A.get(d_addv), want["d_additional_values"], dtype, "d_additional_values")


def _softmax(x):
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) == 2])
def test_qk_softmax_av_equals_na2d(device, backend, case):
    _, lay, q, k, v, add_k, add_v, _, kw = _problem(case, n_add=2, seed=7)
    A = Arrays(device, "float64" if device == "cpu" else "float32")
    scale = q.shape[-1] ** -0.5
    w = A.get(nhood.na2d_qk(A.put(q * scale), A.put(k), additional_keys=A.put(add_k), backend=backend, **kw))
    out = A.get(nhood.na2d_av(A.put(_softmax(w)), A.put(v), additional_values=A.put(add_v), backend=backend, **kw))
    fused = A.get(nhood.na2d(A.put(q), A.put(k), A.put(v), additional_keys=A.put(add_k),
                             additional_values=A.put(add_v), **kw))
    _close(out, fused, A.dtype, "qk -> softmax -> av vs na2d")


def natten_pb_start(index, length, kernel, dilation):
    """NATTEN <= 0.17's get_pb_start (odd kernels): the rpb index of a query's
    first window key; window key ki reads rpb[pb_start + ki]."""
    ns = kernel // 2
    if dilation <= 1:
        return ns + (ns - index if index < ns else 0) + (length - index - 1 - ns if index + ns >= length else 0)
    if index - ns * dilation < 0:
        return kernel - 1 - index // dilation
    if index + ns * dilation >= length:
        return (length - index - 1) // dilation
    return ns


@pytest.mark.parametrize("spatial,kernel,dilation", [((11,), 5, 1), ((13,), 3, 3), ((9, 10), (3, 5), (2, 1)),
                                                     ((7, 8, 9), (3, 3, 5), (1, 2, 1))])
def test_rpb_matches_natten_pb_start(spatial, kernel, dilation):
    rank = len(spatial)
    kernel, dilation = uref._per_axis(kernel, rank), uref._per_axis(dilation, rank)
    rng = np.random.default_rng(5)
    q = np.zeros((1, *spatial, 2, 1))
    k = np.zeros_like(q)
    rpb = rng.standard_normal((2, *[2 * kk - 1 for kk in kernel]))
    w = QK[rank](q, k, kernel, dilation=dilation, rpb=rpb)  # zero q/k: weights are pure bias
    m = math.prod(kernel)
    for pos in np.ndindex(*spatial):
        starts = [natten_pb_start(pos[a], spatial[a], kernel[a], dilation[a]) for a in range(rank)]
        for c in range(m):
            slots = np.unravel_index(c, kernel)
            idx = tuple(starts[a] + slots[a] for a in range(rank))
            assert w[(0, *pos, 1, c)] == rpb[(1, *idx)]


def test_heads_first_views_and_strides():
    case = ((6, 7), 3, 1, 2, False)
    _, lay, q, k, v, _, _, bias, kw = _problem(case, rpb=True)
    # heads-first storage, heads-last views (what nhood.compat.natten passes)
    qf = np.ascontiguousarray(np.moveaxis(q, -2, 1))
    kf = np.ascontiguousarray(np.moveaxis(k, -2, 1))
    w = nhood.na2d_qk(np.moveaxis(qf, 1, -2), np.moveaxis(kf, 1, -2), rpb=bias, **kw)
    np.testing.assert_allclose(w, uref.qk(q, k, lay, bias), rtol=1e-12, atol=1e-12)
    out = np.empty(w.shape[:-1] + (3,))  # a non-contiguous weights view
    wv = np.concatenate([w, out], axis=-1)[..., :w.shape[-1]]
    wv = np.where(np.isfinite(wv), wv, 0.0)
    got = nhood.na2d_av(wv, v, **kw)
    np.testing.assert_allclose(got, uref.av(wv, v, lay), rtol=1e-12, atol=1e-12)


def test_empty_batch_zeroes_d_rpb():
    q = np.zeros((0, 6, 2, 3))
    rpb = np.ones((2, 5))
    _, _, d_rpb, _ = nhood.na1d_qk_backward(q, q, np.zeros((0, 6, 2, 3)), 3, rpb=rpb)
    assert d_rpb.shape == (2, 5) and not d_rpb.any()


@pytest.mark.parametrize("call,match", [
    (lambda q, k, w: nhood.na2d_qk(q, k, 3, rpb=np.zeros((2, 4, 5))), r"rpb must have shape \(2, 5, 5\)"),
    (lambda q, k, w: nhood.na2d_qk(q, k.astype(np.float32), 3), "dtype"),
    (lambda q, k, w: nhood.na2d_qk(q, k, 9), "kernel_size"),
    (lambda q, k, w: nhood.na2d_qk(q[..., :2], k, 3), "head_dim"),
    (lambda q, k, w: nhood.na2d_av(w[..., :8], k, 3), "9 columns"),
    (lambda q, k, w: nhood.na2d_av(w, k, 3, additional_values=np.zeros((1, 2, 2, 4))), "11 columns"),
    (lambda q, k, w: nhood.na2d_av(w, k, 3, backend="naive"), "naive"),
    (lambda q, k, w: nhood.na2d_qk(q, np.zeros((1, 6, 6, 3, 4)), 3), "multiple"),
])
def test_errors(call, match):
    q = np.zeros((1, 6, 6, 2, 4))
    k = np.zeros((1, 6, 6, 2, 4))
    w = np.zeros((1, 6, 6, 2, 9))
    with pytest.raises((ValueError, TypeError), match=match):
        call(q, k, w)


def test_torch_autograd_matches_reference():
    torch = pytest.importorskip("torch")
    case = ((6, 5), 3, 1, 1, (True, False))
    _, lay, q, k, v, add_k, add_v, bias, kw = _problem(case, n_add=2, rpb=True, seed=11)
    t = lambda a: torch.tensor(a, requires_grad=True)
    tq, tk, tv, tak, tav, tb = map(t, (q, k, v, add_k, add_v, bias))
    w = nhood.na2d_qk(tq, tk, rpb=tb, additional_keys=tak, **kw)
    p = torch.softmax(w, dim=-1)
    out = nhood.na2d_av(p, tv, additional_values=tav, **kw)
    g = torch.tensor(np.random.default_rng(2).standard_normal(out.shape))
    (out * g).sum().backward()
    # float64 torch autograd of the dense reference path
    wr = torch.tensor(uref.qk(q, k, lay, bias, add_k))
    np.testing.assert_allclose(w.detach().numpy(), wr.numpy(), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b, c: nhood.na2d_av(torch.softmax(nhood.na2d_qk(a, b, rpb=c, **kw), -1), tv.detach(), **kw),
        (tq.detach().clone().requires_grad_(), tk.detach().clone().requires_grad_(),
         tb.detach().clone().requires_grad_()))
    for x in (tq, tk, tv, tak, tav, tb):
        assert x.grad is not None and torch.isfinite(x.grad).all()


TENSOR_CORE_CASES = CASES + [((20, 19), 7, 1, 1, False), ((67,), 13, 1, 1, False), ((9, 10, 11), (3, 5, 3), 1, 1, False)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", TENSOR_CORE_CASES)
@pytest.mark.parametrize("dim", [16, 64, 128])
@pytest.mark.skipif(not nhood.cuda_available(), reason="no CUDA GPU")
def test_gemm_tensor_core_forward(dtype, case, dim):
    """head_dim % 16 == 0 in half precision: the gemm backend's WMMA kernels."""
    rank, lay, q, k, v, add_k, add_v, bias, kw = _problem(case, heads=(4, 2), dim=dim, n_add=3, rpb=True, seed=9)
    A = Arrays("cuda", dtype)
    q, k, v, add_k, add_v, bias = (A.rounded(x) for x in (q, k, v, add_k, add_v, bias))
    w = QK[rank](A.put(q), A.put(k), rpb=A.put(bias), additional_keys=A.put(add_k), backend="gemm", **kw)
    _close(A.get(w), uref.qk(q, k, lay, bias, add_k), dtype, "gemm qk weights")
    weights = A.rounded(np.random.default_rng(1).random((q.shape[0], *lay.spatial, q.shape[-2], lay.m + 3)))
    out = AV[rank](A.put(weights), A.put(v), additional_values=A.put(add_v), backend="gemm", **kw)
    _close(A.get(out), uref.av(weights, v, lay, add_v), dtype, "gemm av out")
