"""Interop: zero-copy strided inputs (packed qkv views, transposed, reversed,
broadcast), strided outputs, results as arrays of the caller's library
(NumPy or torch, its dtype and device, autograd when a graph is wanted),
merge_attentions over split key sets, and attention() vs dense softmax."""
from __future__ import annotations

import numpy as np
import pytest

import dense_reference as ref
import nhood
from nhood_cases import BACKEND_DTYPES, CPU_BACKENDS, EXACT, TOL, rel_err, to64
from nhood_cases import NA

RNG = np.random.default_rng(2024)


def _dense_attention(q, k, v, causal, scale=None):
    """Plain softmax attention [B, N, H, D] in float64 (GQA by repetition), written here directly."""
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("bihd,bjhd->bhij", q, k) * scale
    if causal:
        n = q.shape[1]
        logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - top)
    lse = (top[..., 0] + np.log(e.sum(-1))).transpose(0, 2, 1)
    return np.einsum("bhij,bjhd->bihd", e / e.sum(-1, keepdims=True), v), lse


# ---- strided NumPy inputs and outputs ---------------------------------------------------

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_packed_qkv_views(rank, backend):
    spatial = (11, 6, 5)[:rank]
    dt = EXACT[backend]
    qkv = RNG.standard_normal((2, *spatial, 3, 4, 8)).astype(dt)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    assert not q.flags.c_contiguous and np.shares_memory(q, qkv)  # the views, not copies
    kernel = (3, 4, 2)[:rank]
    out, lse = NA[rank](q, k, v, kernel, is_causal=(True, False, True)[:rank], return_lse=True, backend=backend)
    want, want_lse = ref.forward(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), kernel,
                                 is_causal=(True, False, True)[:rank])
    assert rel_err(out, want) <= TOL[dt] and rel_err(lse, want_lse) <= max(TOL[dt], 1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_and_negative_stride_views(backend):
    b, n, h, d = 2, 13, 2, 6
    dt = EXACT[backend]
    q = RNG.standard_normal((b, n, h, d)).astype(dt)[:, ::-1]                     # negative stride
    k = RNG.standard_normal((b, h, n, 2 * d)).astype(dt).transpose(0, 2, 1, 3)[..., ::2]  # heads-first, every 2nd channel
    v = np.broadcast_to(RNG.standard_normal((1, n, h, 5)).astype(dt), (b, n, h, 5))     # stride 0 along batch, read-only
    ak = RNG.standard_normal((b, 3, h, d)).astype(dt)[:, ::-1]
    av = np.asfortranarray(RNG.standard_normal((b, 3, h, 5)).astype(dt))
    assert q.strides[1] < 0 and v.strides[0] == 0 and not v.flags.writeable
    kw = dict(kernel_size=5, stride=2, dilation=2, additional_keys=ak, additional_values=av)
    out, lse = nhood.na1d(q, k, v, **kw, return_lse=True, backend=backend)
    c = np.ascontiguousarray
    want, _ = ref.forward(c(q), c(k), c(v), 5, 2, 2, False, None, c(ak), c(av))
    assert rel_err(out, want) <= TOL[dt]
    d_out = RNG.standard_normal(out.shape).astype(dt)[..., ::-1]
    grads = nhood.na1d_backward(q, k, v, out, lse, d_out, **kw, backend=backend)
    want_grads = ref.backward(c(q), c(k), c(v), c(d_out), 5, 2, 2, False, None, c(ak), c(av))
    for g, w in zip(grads, want_grads):
        assert rel_err(g, w) <= TOL[dt]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_strided_out_writes_only_its_elements(backend):
    dt = EXACT[backend]
    q, k, v = (RNG.standard_normal((1, 6, 5, 2, 4)).astype(dt) for _ in range(3))
    big = np.full((1, 6, 5, 2, 8), 7.25, dt)
    out = big[..., ::2]           # every other channel; the others must stay untouched
    result = nhood.na2d(q, k, v, (3, 2), out=out, backend=backend)
    assert result is out
    assert (big[..., 1::2] == 7.25).all()
    assert rel_err(out, ref.forward(q, k, v, (3, 2))[0]) <= TOL[dt]


# ---- torch ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
def test_torch_in_torch_out(backend, dtype):
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype)
    q, k = torch.randn(2, 7, 6, 4, 8, dtype=tdt), torch.randn(2, 7, 6, 2, 8, dtype=tdt)
    v = torch.randn(2, 7, 6, 2, 5, dtype=tdt)
    out, lse = nhood.na2d(q, k, v, (3, 5), dilation=(2, 1), is_causal=(False, True), return_lse=True, backend=backend)
    assert isinstance(out, torch.Tensor) and out.dtype == tdt and out.device == q.device
    assert out.shape == (2, 7, 6, 4, 5) and lse.dtype == torch.float32 and lse.shape == (2, 7, 6, 4)
    want, want_lse = ref.forward(to64(q), to64(k), to64(v), (3, 5), 1, (2, 1), (False, True))
    assert rel_err(out, want) <= TOL[dtype] and rel_err(lse, want_lse) <= max(TOL[dtype], 1e-6)
    # out= with a torch tensor (no graph needed): written in place and returned
    buf = torch.full_like(out, float("nan"))
    assert nhood.na2d(q, k, v, (3, 5), dilation=(2, 1), is_causal=(False, True), out=buf, backend=backend) is buf
    assert rel_err(buf, want) <= TOL[dtype]


def test_torch_packed_qkv_views():
    torch = pytest.importorskip("torch")
    qkv = torch.randn(2, 9, 3, 2, 6, dtype=torch.float64)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    out = nhood.na1d(q, k, v, 4, stride=2)
    assert rel_err(out, ref.forward(to64(q), to64(k), to64(v), 4, 2)[0]) <= 1e-10


def test_torch_requires_grad_through_framework_free_functions():
    torch = pytest.importorskip("torch")
    q = torch.randn(2, 9, 4, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 9, 2, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 9, 2, 3, dtype=torch.float64, requires_grad=True)
    ak = torch.randn(2, 2, 2, 6, dtype=torch.float64, requires_grad=True)
    av = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    out = nhood.na1d(q, k, v, 5, dilation=1, is_causal=True, additional_keys=ak, additional_values=av)
    assert isinstance(out, torch.Tensor) and out.requires_grad and out.dtype == torch.float64
    d_out = torch.randn_like(out)
    out.backward(d_out)
    want = ref.backward(*(to64(x) for x in (q, k, v, d_out)), 5, 1, 1, True, None, to64(ak), to64(av))
    for x, w in zip((q, k, v, ak, av), want):
        assert rel_err(x.grad, w) <= 1e-10
    # the framework-free backward accepts tensors that require grad and returns plain tensors
    out2, lse = nhood.na1d(q.detach(), k.detach(), v.detach(), 5, is_causal=True, additional_keys=ak.detach(),
                           additional_values=av.detach(), return_lse=True)
    grads = nhood.na1d_backward(q, k, v, out2, lse, d_out, 5, is_causal=True, additional_keys=ak,
                                additional_values=av)
    assert all(isinstance(g, torch.Tensor) and not g.requires_grad for g in grads)
    for g, w in zip(grads, want):
        assert rel_err(g, w) <= 1e-10


# ---- merge_attentions ----------------------------------------------------------------

def _softmax_part(q, ak, av, scale=None):
    """Attention of every query over the additional tokens only: (out, lse), float64."""
    b = q.shape[0]
    flat = q.reshape(b, -1, *q.shape[-2:])
    group = q.shape[-2] // ak.shape[-2]
    ak, av = np.repeat(ak, group, axis=2), np.repeat(av, group, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("bihd,bjhd->bihj", flat, ak) * scale
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - top)
    lse = top[..., 0] + np.log(e.sum(-1))
    out = np.einsum("bihj,bjhd->bihd", e / e.sum(-1, keepdims=True), av)
    return out.reshape(*q.shape[:-1], av.shape[-1]), lse.reshape(q.shape[:-1])


def test_merge_window_and_additional_parts_numpy():
    q = RNG.standard_normal((2, 6, 7, 4, 8))
    k, v = RNG.standard_normal((2, 6, 7, 2, 8)), RNG.standard_normal((2, 6, 7, 2, 5))
    ak, av = RNG.standard_normal((2, 4, 2, 8)), RNG.standard_normal((2, 4, 2, 5))
    window = dict(kernel_size=(3, 4), stride=(1, 2), is_causal=(True, False))
    part1 = nhood.na2d(q, k, v, **window, return_lse=True)
    part2 = _softmax_part(q, ak, av)
    merged, merged_lse = nhood.merge_attentions([part1[0], part2[0]], [part1[1], part2[1]])
    joint, joint_lse = nhood.na2d(q, k, v, **window, additional_keys=ak, additional_values=av, return_lse=True)
    assert isinstance(merged, np.ndarray) and merged.dtype == np.float64
    # lse is float32, which bounds the merge's accuracy
    assert rel_err(merged, joint) <= 1e-6 and rel_err(merged_lse, joint_lse) <= 1e-6
    want, want_lse = ref.forward(q, k, v, (3, 4), (1, 2), 1, (True, False), None, ak, av)
    assert rel_err(merged, want) <= 1e-6 and rel_err(merged_lse, want_lse) <= 1e-6


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_merge_two_halves_of_the_keys(lib):
    """Keys split in two halves, each attended in full (kernel = length),
    merged == softmax over all keys (the second half as additional tokens)."""
    n = 10
    q, k, v = RNG.standard_normal((2, n, 3, 4)), RNG.standard_normal((2, 2 * n, 3, 4)), RNG.standard_normal((2, 2 * n, 3, 6))
    arrays = [q, k[:, :n], v[:, :n], k[:, n:], v[:, n:]]
    if lib == "torch":
        torch = pytest.importorskip("torch")
        arrays = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    tq, k1, v1, k2, v2 = arrays
    o1, l1 = nhood.na1d(tq, k1, v1, n, return_lse=True)
    o2, l2 = nhood.na1d(tq, k2, v2, n, return_lse=True)
    merged, lse = nhood.merge_attentions([o1, o2], [l1, l2])
    assert type(merged) is type(tq) and type(lse) is type(tq)
    want, want_lse = ref.forward(q, k[:, :n], v[:, :n], n, additional_keys=k[:, n:], additional_values=v[:, n:])
    assert rel_err(merged, want) <= 1e-6 and rel_err(lse, want_lse) <= 1e-6
    dense, dense_lse = _dense_attention_cross(q, k, v)
    assert rel_err(merged, dense) <= 1e-6 and rel_err(lse, dense_lse) <= 1e-6


def _dense_attention_cross(q, k, v):
    logits = np.einsum("bihd,bjhd->bhij", q, k) * q.shape[-1] ** -0.5
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - top)
    return (np.einsum("bhij,bjhd->bihd", e / e.sum(-1, keepdims=True), v),
            (top[..., 0] + np.log(e.sum(-1))).transpose(0, 2, 1))


def test_merge_attentions_torch_is_differentiable():
    torch = pytest.importorskip("torch")
    o1 = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    o2 = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    l1, l2 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    merged, lse = nhood.merge_attentions([o1, o2], [l1, l2])
    merged.sum().backward()
    w1 = torch.exp(l1.double() - torch.logaddexp(l1.double(), l2.double()))
    assert torch.allclose(o1.grad, w1[..., None].expand_as(o1), rtol=1e-6, atol=1e-7)


# ---- attention() -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("heads_kv", [3, 1])
def test_attention_equals_dense_softmax(is_causal, heads_kv, backend):
    dt = EXACT[backend]
    q = RNG.standard_normal((2, 17, 3, 8)).astype(dt)
    k, v = RNG.standard_normal((2, 17, heads_kv, 8)).astype(dt), RNG.standard_normal((2, 17, heads_kv, 4)).astype(dt)
    out, lse = nhood.attention(q, k, v, is_causal=is_causal, scale=0.2, return_lse=True, backend=backend)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    want, want_lse = _dense_attention(q64, k64, v64, is_causal, scale=0.2)
    assert rel_err(out, want) <= TOL[dt] and rel_err(lse, want_lse) <= max(TOL[dt], 1e-6)
    d_out = RNG.standard_normal(out.shape).astype(dt)
    dq, dk, dv = nhood.attention_backward(q, k, v, out, lse, d_out, is_causal=is_causal, scale=0.2, backend=backend)
    # d_value of dense attention is P^T dO, summed over the heads sharing a kv head
    group = 3 // heads_kv
    p = np.exp(np.einsum("bihd,bjhd->bhij", q64, np.repeat(k64, group, 2)) * 0.2 - want_lse.transpose(0, 2, 1)[..., None])
    if is_causal:
        p = np.tril(p)
    want_dv = np.einsum("bhij,bihd->bjhd", p, d_out.astype(np.float64)).reshape(2, 17, heads_kv, group, 4).sum(3)
    assert rel_err(dv, want_dv) <= TOL[dt]


def test_attention_torch():
    torch = pytest.importorskip("torch")
    q, k, v = (torch.randn(1, 12, 2, 8) for _ in range(3))
    out = nhood.attention(q, k, v, is_causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    want = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                             is_causal=True).transpose(1, 2)
    assert rel_err(out, to64(want)) <= 1e-5


# ---- NumPy scalars as window arguments -------------------------------------------------

def test_numpy_scalar_window_arguments():
    """Window arguments computed with NumPy (np.int64, np.bool_, np.float32)
    mean the same as the Python values."""
    q, k, v = (RNG.standard_normal((1, 9, 8, 2, 4)) for _ in range(3))
    want = nhood.na2d(q, k, v, (3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(True, False), scale=0.5)
    got = nhood.na2d(q, k, v, (np.int64(3), np.int32(4)), stride=(np.int8(1), np.int64(2)), dilation=(np.int64(2), 1),
                     is_causal=(np.bool_(True), np.bool_(False)), scale=np.float32(0.5))
    assert np.array_equal(got, want)
    assert np.array_equal(nhood.na2d(q, k, v, np.int64(3), is_causal=np.bool_(True)),
                          nhood.na2d(q, k, v, 3, is_causal=True))
    assert rel_err(want, ref.forward(q, k, v, (3, 4), (1, 2), (2, 1), (True, False), 0.5)[0]) <= 1e-10
