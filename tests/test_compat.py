"""nhood.compat.natten: NATTEN <= 0.17 legacy ops (heads-first layout) in a
NAT-style attention block, forward and gradients against a dense float64
torch reference built from the mask (tests/unfused_reference.Layout)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import unfused_reference as uref  # noqa: E402
from nhood.compat import natten as nat  # noqa: E402


def dense_qkrpb(q, k, rpb, lay):
    """Heads-first [B, h, *spatial, d] -> weights [B, h, *spatial, prod(K)], torch, differentiable."""
    b, h = q.shape[:2]
    Q, K = q.reshape(b, h, lay.n, -1), k.reshape(b, h, lay.n, -1)
    S = Q @ K.transpose(-1, -2)
    qi, cols, kj = (torch.as_tensor(a) for a in (lay.qi, lay.cols, lay.kj))
    vals = S[:, :, qi, kj]
    if rpb is not None:
        vals = vals + rpb[(slice(None),) + tuple(torch.as_tensor(lay.bias[lay.qi, lay.cols, a]) for a in range(lay.rank))]
    W = torch.full((b, h, lay.n, lay.m), float("-inf"), dtype=q.dtype)
    W[:, :, qi, cols] = vals
    return W.reshape(b, h, *lay.spatial, lay.m)


def dense_av(attn, v, lay):
    b, h = attn.shape[:2]
    A = attn.reshape(b, h, lay.n, lay.m)
    M = torch.zeros((b, h, lay.n, lay.n), dtype=attn.dtype)
    M[:, :, torch.as_tensor(lay.qi), torch.as_tensor(lay.kj)] = A[:, :, lay.qi, lay.cols]
    return (M @ v.reshape(b, h, lay.n, -1)).reshape(*v.shape)


class NATBlock(torch.nn.Module):
    """The attention of Hugging Face's NAT/DiNAT layers, written the same way."""

    def __init__(self, dim, heads, kernel, dilation, qk, av):
        super().__init__()
        self.heads, self.kernel, self.dilation = heads, kernel, dilation
        self.scale = (dim // heads) ** -0.5
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.rpb = torch.nn.Parameter(torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1) * 0.5)
        self.proj = torch.nn.Linear(dim, dim)
        self.qk, self.av = qk, av

    def forward(self, x):
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.heads, C // self.heads).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = self.qk(q, k, self.rpb, self.kernel, self.dilation).softmax(dim=-1)
        x = self.av(attn, v, self.kernel, self.dilation)
        return self.proj(x.permute(0, 2, 3, 1, 4).reshape(B, H, W, C))


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 2), (7, 1)])
def test_nat_block_forward_and_gradients(kernel, dilation):
    torch.manual_seed(0)
    spatial = (9, 10) if kernel * dilation <= 9 else (14, 15)
    lay = uref.Layout(spatial, kernel, 1, dilation, False)
    ours = NATBlock(16, 2, kernel, dilation, nat.natten2dqkrpb, nat.natten2dav).double()
    dense = NATBlock(16, 2, kernel, dilation, lambda q, k, b, ks, d: dense_qkrpb(q, k, b, lay),
                     lambda a, v, ks, d: dense_av(a, v, lay)).double()
    dense.load_state_dict(ours.state_dict())
    x = torch.randn(2, *spatial, 16, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), dense(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
    for (name, pa), (_, pb) in zip(ours.named_parameters(), dense.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-10, msg=name)


def test_nat_block_float32():
    torch.manual_seed(1)
    lay = uref.Layout((8, 8), 3, 1, 1, False)
    ours = NATBlock(8, 2, 3, 1, nat.natten2dqkrpb, nat.natten2dav)
    dense = NATBlock(8, 2, 3, 1, lambda q, k, b, ks, d: dense_qkrpb(q, k, b, lay),
                     lambda a, v, ks, d: dense_av(a, v, lay)).double()
    dense.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(1, 8, 8, 8)
    ours(x).sum().backward()
    dense(x.double()).sum().backward()
    torch.testing.assert_close(ours(x).double(), dense(x.double()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.rpb.grad.double(), dense.rpb.grad, rtol=1e-5, atol=1e-5)


def test_legacy_1d_3d():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 9, 4, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(3, 5, dtype=torch.float64)
    lay = uref.Layout((9,), 3, 1, 2, False)
    w = nat.natten1dqkrpb(q, k, rpb, 3, 2)
    assert w.shape == (2, 3, 9, 3)
    torch.testing.assert_close(w, dense_qkrpb(q, k, rpb, lay))
    torch.testing.assert_close(nat.natten1dqk(q, k, 3, 2), dense_qkrpb(q, k, None, lay))
    torch.testing.assert_close(nat.natten1dav(w.softmax(-1), v, 3, 2), dense_av(w.softmax(-1), v, lay))
    q3, k3, v3 = (torch.randn(1, 2, 4, 6, 6, 3, dtype=torch.float64) for _ in range(3))
    lay3 = uref.Layout((4, 6, 6), (3, 3, 3), 1, (1, 2, 2), False)
    rpb3 = torch.randn(2, 5, 5, 5, dtype=torch.float64)
    w3 = nat.natten3dqkrpb(q3, k3, rpb3, 3, 3, 1, 2)  # (kernel_size_d, kernel_size, dilation_d, dilation)
    torch.testing.assert_close(w3, dense_qkrpb(q3, k3, rpb3, lay3))
    torch.testing.assert_close(nat.natten3dav(w3.softmax(-1), v3, 3, 3, 1, 2), dense_av(w3.softmax(-1), v3, lay3))


def test_install_aliases_natten_functional():
    saved = {m: sys.modules.pop(m) for m in ("natten", "natten.functional") if m in sys.modules}
    try:
        nat.install(force=True)
        from natten.functional import natten2dav, natten2dqkrpb

        assert natten2dqkrpb is nat.natten2dqkrpb and natten2dav is nat.natten2dav
    finally:
        for m in ("natten", "natten.functional"):
            sys.modules.pop(m, None)
        sys.modules.update(saved)


def test_half_rpb_cast_and_autocast_dtypes():
    q, k, v = (torch.randn(1, 2, 6, 6, 8).half() for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)  # float32 parameter, cast like NATTEN
    w = nat.natten2dqkrpb(q, k, rpb, 3, 1)
    assert w.dtype == torch.float16
    out = nat.natten2dav(w.float().softmax(-1), v, 3, 1)  # attn cast to value dtype
    out.float().sum().backward()
    assert rpb.grad is not None and rpb.grad.dtype == torch.float32
