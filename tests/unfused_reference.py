"""Dense float64 references of the unfused QK/AV ops, built from the mask in
dense_reference.py (not from nhood's window code).

A query's window along one axis is the sorted list of keys its axis mask
allows; the key at window slots (i0, i1, i2) is weight column
(i0*K1 + i1)*K2 + i2 (unused slots of short causal windows: column -1).
QK/AV are then gathers/scatters between that column layout and dense
[N, N] matrices, so every gradient follows from plain matrix products.
"""
from __future__ import annotations

import itertools

import numpy as np

import dense_reference as ref


def _per_axis(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


class Layout:
    """Columns of every query: key index (flattened) and bias index per column."""

    def __init__(self, spatial, kernel, stride=1, dilation=1, causal=False):
        rank = len(spatial)
        self.rank, self.spatial = rank, tuple(spatial)
        self.kernel = _per_axis(kernel, rank)
        stride, dilation, causal = _per_axis(stride, rank), _per_axis(dilation, rank), _per_axis(causal, rank)
        masks = [ref.axis_mask(L, k, s, d, c) for L, k, s, d, c in zip(spatial, self.kernel, stride, dilation, causal)]
        n = int(np.prod(spatial))
        m = int(np.prod(self.kernel))
        self.keys = np.full((n, m), -1, dtype=np.int64)
        self.bias = np.zeros((n, m, rank), dtype=np.int64)
        for qi, q in enumerate(itertools.product(*[range(L) for L in spatial])):
            windows = [np.nonzero(masks[a][q[a]])[0] for a in range(rank)]
            for slots in itertools.product(*[range(len(w)) for w in windows]):
                col = 0
                for a in range(rank):
                    col = col * self.kernel[a] + slots[a]
                key = tuple(int(windows[a][slots[a]]) for a in range(rank))
                self.keys[qi, col] = np.ravel_multi_index(key, spatial)
                self.bias[qi, col] = [(key[a] - q[a]) // dilation[a] + self.kernel[a] - 1 for a in range(rank)]
        self.qi, self.cols = np.nonzero(self.keys >= 0)
        self.kj = self.keys[self.qi, self.cols]
        self.n, self.m = n, m


def _flat(x, rank):
    """[B, *spatial, H, D] -> float64 [B, H, N, D]."""
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1]).transpose(0, 2, 1, 3)


def _unflat(x, lay, b):
    """[B, H, N, D] -> [B, *spatial, H, D]."""
    return x.transpose(0, 2, 1, 3).reshape(b, *lay.spatial, x.shape[1], x.shape[-1])


def _expand(x, heads):
    return np.repeat(x, heads // x.shape[1], axis=1)


def _fold(x, heads_kv):
    b, h, n, d = x.shape
    return x.reshape(b, heads_kv, h // heads_kv, n, d).sum(axis=2)


def _tokens(x):
    """[B, N_add, H_kv, D] -> float64 [B, H_kv, N_add, D]."""
    return np.asarray(x, np.float64).transpose(0, 2, 1, 3)


def _rpb_gather(rpb, lay):
    """rpb [H, *2K-1] -> [H, n_valid] bias of every valid (query, column)."""
    rpb = np.asarray(rpb, np.float64)
    idx = tuple(lay.bias[lay.qi, lay.cols, a] for a in range(lay.rank))
    return rpb[(slice(None),) + idx]


def qk(q, k, lay, rpb=None, add_k=None):
    Q, K = _flat(q, lay.rank), _flat(k, lay.rank)
    H = Q.shape[1]
    S = Q @ _expand(K, H).transpose(0, 1, 3, 2)
    W = np.full(S.shape[:2] + (lay.n, lay.m), -np.inf)
    W[:, :, lay.qi, lay.cols] = S[:, :, lay.qi, lay.kj]
    if rpb is not None:
        W[:, :, lay.qi, lay.cols] += _rpb_gather(rpb, lay)[None]
    if add_k is not None:
        W = np.concatenate([W, Q @ _expand(_tokens(add_k), H).transpose(0, 1, 3, 2)], axis=-1)
    return _unflat(W, lay, q.shape[0])


def _dense(W, lay):
    """Weights [B, H, N, m] (window part) -> dense [B, H, N, N]."""
    M = np.zeros(W.shape[:2] + (lay.n, lay.n))
    M[:, :, lay.qi, lay.kj] = W[:, :, lay.qi, lay.cols]
    return M


def qk_backward(q, k, dw, lay, rpb_shape=None, add_k=None):
    Q, K, dW = _flat(q, lay.rank), _flat(k, lay.rank), _flat(dw, lay.rank)
    H, Hkv = Q.shape[1], K.shape[1]
    dS = _dense(dW[..., :lay.m], lay)
    dQ = dS @ _expand(K, H)
    dK = _fold(dS.transpose(0, 1, 3, 2) @ Q, Hkv)
    out = {"d_query": _unflat(dQ, lay, q.shape[0]), "d_key": _unflat(dK, lay, q.shape[0])}
    if add_k is not None:
        dA = dW[..., lay.m:]
        out["d_query"] = out["d_query"] + _unflat(dA @ _expand(_tokens(add_k), H), lay, q.shape[0])
        out["d_additional_keys"] = _fold(dA.transpose(0, 1, 3, 2) @ Q, Hkv).transpose(0, 2, 1, 3)
    if rpb_shape is not None:
        d = np.zeros(rpb_shape)
        vals = dW[:, :, lay.qi, lay.cols].sum(axis=0)  # [H, n_valid]
        idx = tuple(lay.bias[lay.qi, lay.cols, a] for a in range(lay.rank))
        for h in range(rpb_shape[0]):
            np.add.at(d[h], idx, vals[h])
        out["d_rpb"] = d
    return out


def av(w, v, lay, add_v=None):
    W, V = _flat(w, lay.rank), _flat(v, lay.rank)
    H = W.shape[1]
    O = _dense(W[..., :lay.m], lay) @ _expand(V, H)
    if add_v is not None:
        O = O + W[..., lay.m:] @ _expand(_tokens(add_v), H)
    return _unflat(O, lay, w.shape[0])


def av_backward(w, v, d_out, lay, add_v=None):
    W, V, dO = _flat(w, lay.rank), _flat(v, lay.rank), _flat(d_out, lay.rank)
    H, Hkv = W.shape[1], V.shape[1]
    dM = dO @ _expand(V, H).transpose(0, 1, 3, 2)
    dW = np.zeros(W.shape)
    dW[:, :, lay.qi, lay.cols] = dM[:, :, lay.qi, lay.kj]
    dV = _fold(_dense(W[..., :lay.m], lay).transpose(0, 1, 3, 2) @ dO, Hkv)
    out = {"d_value": _unflat(dV, lay, w.shape[0])}
    if add_v is not None:
        dW[..., lay.m:] = dO @ _expand(_tokens(add_v), H).transpose(0, 1, 3, 2)
        out["d_additional_values"] = _fold(W[..., lay.m:].transpose(0, 1, 3, 2) @ dO, Hkv).transpose(0, 2, 1, 3)
    out["d_weights"] = _unflat(dW, lay, w.shape[0])
    return out
