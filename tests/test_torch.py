"""nhood.torch: autograd through nhood's backward kernels, custom ops under
torch.compile, autocast, and the NeighborhoodAttention modules.

Gradients are compared with a dense float64 autograd reference: softmax
attention in torch over the boolean mask from dense_reference (written from
the window rule, independently of nhood)."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nhood  # noqa: E402
import nhood.torch as nt  # noqa: E402
from dense_reference import neighborhood_mask  # noqa: E402


def _per_axis(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


def dense_na(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False, scale=None, add_k=None, add_v=None):
    """Masked dense attention in torch (differentiable); returns (out, lse)."""
    rank = q.dim() - 3
    spatial = tuple(q.shape[1:1 + rank])
    mask = torch.from_numpy(neighborhood_mask(spatial, _per_axis(kernel_size, rank), _per_axis(stride, rank),
                                              _per_axis(dilation, rank), _per_axis(is_causal, rank)))
    b, h, hk = q.shape[0], q.shape[-2], k.shape[-2]
    flat = lambda x: x.reshape(b, -1, x.shape[-2], x.shape[-1]).transpose(1, 2)  # [B, H, N, D]
    Q, K, V = flat(q), flat(k), flat(v)
    if add_k is not None:
        K = torch.cat([K, add_k.transpose(1, 2)], dim=2)
        V = torch.cat([V, add_v.transpose(1, 2)], dim=2)
        mask = torch.cat([mask, torch.ones(mask.shape[0], add_k.shape[1], dtype=torch.bool)], dim=1)
    K, V = K.repeat_interleave(h // hk, dim=1), V.repeat_interleave(h // hk, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (scale * Q @ K.transpose(-1, -2)).masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.softmax(logits, dim=-1) @ V
    return out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1]), lse.transpose(1, 2).reshape(q.shape[:-1])


def _inputs(spatial, heads=2, heads_kv=2, dim=4, dim_v=None, n_add=0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()
    b = 2
    q = mk(b, *spatial, heads, dim)
    k = mk(b, *spatial, heads_kv, dim)
    v = mk(b, *spatial, heads_kv, dim_v or dim)
    extra = (mk(b, n_add, heads_kv, dim), mk(b, n_add, heads_kv, dim_v or dim)) if n_add else (None, None)
    return q, k, v, *extra


_NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}

CASES = [  # spatial, window kwargs, tensor kwargs
    ((9,), dict(kernel_size=4), {}),
    ((10,), dict(kernel_size=3, stride=2, dilation=2, is_causal=True), dict(heads=4, heads_kv=1)),
    ((6, 5), dict(kernel_size=(3, 2), stride=(1, 2), dilation=(2, 1)), dict(dim_v=3)),
    ((5, 6), dict(kernel_size=3, is_causal=(True, False)), dict(heads=4, heads_kv=2, n_add=3)),
    ((3, 4, 6), dict(kernel_size=(2, 3, 3), dilation=(1, 1, 2)), dict(n_add=2)),
]


@pytest.mark.parametrize("spatial,window,tensors", CASES)
def test_gradients_match_dense_autograd(spatial, window, tensors):
    args = _inputs(spatial, **tensors)
    q, k, v, ak, av = args
    out, lse = _NA[len(spatial)](q, k, v, **window, additional_keys=ak, additional_values=av, return_lse=True)
    ref_out, ref_lse = dense_na(q, k, v, **window, add_k=ak, add_v=av)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, ref_lse.float(), rtol=1e-5, atol=1e-5)
    d_out = torch.randn_like(out)
    leaves = [t for t in args if t is not None]
    got = torch.autograd.grad(out, leaves, d_out)
    want = torch.autograd.grad(ref_out, leaves, d_out)
    for name, g, w in zip("q k v add_k add_v".split(), got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=f"d_{name}")


def test_gradcheck_float64_with_additional_kv_and_gqa():
    q, k, v, ak, av = _inputs((5, 4), heads=2, heads_kv=1, dim=3, n_add=2)
    fn = lambda q, k, v, ak, av: nhood.na2d(q, k, v, (3, 2), stride=(2, 1), additional_keys=ak,
                                            additional_values=av)
    assert torch.autograd.gradcheck(fn, (q, k, v, ak, av))


def test_gradcheck_attention_causal():
    q, k, v, _, _ = _inputs((7,), dim=3)
    assert torch.autograd.gradcheck(lambda q, k, v: nhood.attention(q, k, v, is_causal=True), (q, k, v))


def test_gradcheck_custom_op_autograd():
    # Eager calls use an autograd.Function; this checks the op's own autograd
    # formula (the one torch.compile graphs use) directly.
    q, k, v, ak, av = _inputs((6,), heads=2, heads_kv=1, dim=3, n_add=2)
    window = (1, [3, 1, 1], [2, 1, 1], [1, 1, 1], [True, False, False], None, "auto")
    fn = lambda *t: torch.ops.nhood.na_forward(*t, *window)[0]
    assert torch.autograd.gradcheck(fn, (q, k, v, ak, av))


def test_lse_is_returned_and_not_differentiable():
    q, k, v, _, _ = _inputs((8,))
    out, lse = nt.na1d(q, k, v, 3, return_lse=True)
    assert out.requires_grad and not lse.requires_grad and lse.dtype == torch.float32


def test_no_grad_and_grad_paths_agree():
    q, k, v, _, _ = _inputs((6, 6), dtype=torch.float32)
    with torch.no_grad():
        plain = nhood.na2d(q, k, v, 3)
    assert plain.grad_fn is None
    torch.testing.assert_close(nhood.na2d(q, k, v, 3), plain)


def test_out_argument_rejected_when_autograd_applies():
    q, k, v, _, _ = _inputs((8,))
    with pytest.raises(ValueError, match="out="):
        nhood.na1d(q, k, v, 3, out=torch.empty_like(q))


def test_import_nhood_does_not_import_torch():
    code = "import sys, nhood; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nhood_works_without_torch():
    # sys.modules["torch"] = None makes `import torch` fail, as if torch were not installed.
    code = ("import sys; sys.modules['torch'] = None; import numpy as np, nhood; "
            "q = np.ones((1, 8, 1, 4)); assert nhood.na1d(q, q, q, 3).shape == q.shape")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("rank,spatial", [(1, (12,)), (2, (7, 6)), (3, (3, 5, 4))])
def test_modules_shape_and_strided_qkv_views(rank, spatial):
    cls = [nt.NeighborhoodAttention1D, nt.NeighborhoodAttention2D, nt.NeighborhoodAttention3D][rank - 1]
    m = cls(embed_dim=16, num_heads=4, kernel_size=3, dilation=1, num_kv_heads=2).double()
    x = torch.randn(2, *spatial, 16, dtype=torch.float64, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    # Same layer built from dense attention on the same projection: checks the q/k/v views.
    h, hk, hd = 4, 2, 4
    qkv = m.qkv(x).view(*x.shape[:-1], h + 2 * hk, hd)
    ref, _ = dense_na(qkv[..., :h, :], qkv[..., h:h + hk, :], qkv[..., h + hk:, :], 3)
    torch.testing.assert_close(y, m.proj(ref.reshape(x.shape)))
    y.sum().backward()
    assert x.grad.shape == x.shape and m.qkv.weight.grad is not None


def test_module_takes_nattens_constructor_arguments():
    import inspect

    names = list(inspect.signature(nt.NeighborhoodAttention2D).parameters)
    assert names[:9] == ["embed_dim", "num_heads", "kernel_size", "stride", "dilation", "is_causal", "qkv_bias",
                         "qk_scale", "proj_drop"]
    torch.manual_seed(3)
    m = nt.NeighborhoodAttention2D(embed_dim=12, num_heads=3, kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2),
                                   is_causal=(False, True), qkv_bias=False, qk_scale=0.3, proj_drop=0.5).double()
    assert m.qkv.bias is None and m.proj_drop.p == 0.5
    x = torch.randn(2, 7, 6, 12, dtype=torch.float64)
    m.eval()  # dropout off: the layer is exactly proj(attention) with the given window and scale
    qkv = m.qkv(x).view(2, 7, 6, 9, 4)
    ref, _ = dense_na(qkv[..., :3, :], qkv[..., 3:6, :], qkv[..., 6:, :], (3, 2), stride=(2, 1), dilation=(1, 2),
                      is_causal=(False, True), scale=0.3)
    torch.testing.assert_close(m(x), m.proj(ref.reshape(x.shape)))
    m.train()  # proj_drop applies after the output projection
    torch.manual_seed(4)
    y = m(x)
    torch.manual_seed(4)
    torch.testing.assert_close(y, torch.nn.functional.dropout(m.proj(ref.reshape(x.shape)), 0.5, training=True))


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        nt.NeighborhoodAttention2D(10, 3, 3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        nt.NeighborhoodAttention2D(12, 4, 3, num_kv_heads=3)
    with pytest.raises(ValueError, match="expects input"):
        nt.NeighborhoodAttention2D(8, 2, 3)(torch.randn(1, 5, 8))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.na = nt.NeighborhoodAttention2D(16, 2, kernel_size=3, stride=(1, 2), num_kv_heads=1)
        self.na1 = nt.NeighborhoodAttention1D(16, 2, kernel_size=5, is_causal=True)

    def forward(self, x):
        x = x + self.na(x)
        b, hh, ww, c = x.shape
        return (x.reshape(b, hh * ww, c) + self.na1(x.reshape(b, hh * ww, c))).mean()


def _compiled_matches_eager(backend):
    torch.manual_seed(0)
    model = _Model()
    x = torch.randn(2, 6, 6, 16)
    eager = model(x)
    eager.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    got = compiled(x)
    got.backward()
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    for g, w in zip([p.grad for p in model.parameters()], want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    _compiled_matches_eager(backend)


def test_torch_compile_fullgraph_through_nhood_functions():
    # nhood.na2d / nhood.attention (the framework-free entry points) route to the custom ops when traced.
    torch._dynamo.reset()
    q = torch.randn(1, 6, 6, 2, 4, requires_grad=True)
    ak = torch.randn(1, 2, 2, 4, requires_grad=True)

    def f(q, ak):
        o, lse = nhood.na2d(q, q, q, 3, additional_keys=ak, additional_values=ak, return_lse=True)
        flat = q.reshape(1, 36, 2, 4)
        return o.sum() + lse.sum() + nhood.attention(flat, flat, flat, is_causal=True).sum()

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, ak)
    want_grads = torch.autograd.grad(f(q, ak), (q, ak))
    torch.testing.assert_close(got, f(q, ak))
    for g, w in zip(torch.autograd.grad(got, (q, ak)), want_grads):
        torch.testing.assert_close(g, w)


def test_torch_compile_fullgraph_inductor():
    torch._dynamo.reset()
    start = time.perf_counter()
    _compiled_matches_eager("inductor")
    assert time.perf_counter() - start < 120, "inductor compile of a two-layer model took too long"


def test_fake_tensor_shapes_and_opcheck():
    q, k, v, ak, av = _inputs((5, 4), heads=2, heads_kv=1, dim=3, dim_v=2, n_add=2)
    window = (2, [3, 2, 1], [1, 1, 1], [1, 1, 1], [False, False, False], None, "auto")
    torch.library.opcheck(torch.ops.nhood.na_forward.default, (q, k, v, ak, av, *window))


def test_autocast_cpu_bfloat16():
    torch.manual_seed(0)
    m = nt.NeighborhoodAttention2D(16, 2, kernel_size=3)
    x = torch.randn(2, 6, 6, 16)
    want = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x)
        q = torch.randn(1, 8, 2, 4, requires_grad=True)
        out = nhood.na1d(q, q, q, 3)
    assert got.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
    got.float().sum().backward()
    assert m.qkv.weight.grad.dtype == torch.float32  # gradients reach the float32 parameters
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32


def test_numpy_path_unchanged_by_torch():
    q = np.random.default_rng(0).standard_normal((1, 8, 1, 4))
    out = nhood.na1d(q, q, q, 3)
    assert isinstance(out, np.ndarray)
