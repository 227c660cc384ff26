"""An independent dense float64 reference for neighborhood attention.

Written straight from the mask rule in DESIGN.md section 1 (not from nhood's
window code): materialize the boolean [tokens, tokens] mask, then run plain
softmax attention over it in NumPy float64. Backward uses the closed-form
softmax-attention gradients on the same dense mask.
"""
from __future__ import annotations

import math

import numpy as np


def axis_mask(length, kernel, stride=1, dilation=1, causal=False):
    """[length, length] bool: mask[i, j] = query i attends key j on one axis."""
    m = np.zeros((length, length), dtype=bool)
    k, s, d = kernel, stride, dilation
    for i in range(length):
        g, p = i % d, i // d
        lg = math.ceil((length - g) / d)
        if causal:
            leader = min((p // s) * s + s - 1, lg - 1)
            start = max(leader - k + 1, 0)
            end = min(p + 1, lg)
        else:
            left, right = k // 2, k - 1 - k // 2
            leader = min((p // s) * s + s // 2, lg - 1)
            start = max(leader - left, 0)
            if leader + right >= lg:
                start += lg - right - leader - 1
            end = start + k
        for j in range(start, end):
            m[i, g + d * j] = True
    return m


def neighborhood_mask(spatial, kernel, stride, dilation, causal):
    """[N, N] mask over row-major flattened tokens: the Cartesian product of axis masks."""
    mask = np.ones((1, 1), dtype=bool)
    for L, k, s, d, c in zip(spatial, kernel, stride, dilation, causal):
        mask = np.kron(mask, axis_mask(L, k, s, d, c)).astype(bool)
    return mask


def _per_axis(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


def _flatten(x, rank):
    """[B, *spatial, H, D] -> float64 [B, H, N, D]."""
    x = np.asarray(x, dtype=np.float64)
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h, d).transpose(0, 2, 1, 3)


def _setup(q, k, v, kernel_size, stride, dilation, is_causal, scale, add_k, add_v):
    rank = q.ndim - 3
    spatial = q.shape[1:1 + rank]
    mask = neighborhood_mask(spatial, _per_axis(kernel_size, rank), _per_axis(stride, rank),
                             _per_axis(dilation, rank), _per_axis(is_causal, rank))
    Q, K, V = _flatten(q, rank), _flatten(k, rank), _flatten(v, rank)
    group = Q.shape[1] // K.shape[1]
    K, V = np.repeat(K, group, axis=1), np.repeat(V, group, axis=1)
    n = mask.shape[0]
    if add_k is not None:
        AK = np.repeat(np.asarray(add_k, np.float64).transpose(0, 2, 1, 3), group, axis=1)
        AV = np.repeat(np.asarray(add_v, np.float64).transpose(0, 2, 1, 3), group, axis=1)
        K, V = np.concatenate([K, AK], axis=2), np.concatenate([V, AV], axis=2)
        mask = np.concatenate([mask, np.ones((n, AK.shape[2]), dtype=bool)], axis=1)
    if scale is None:
        scale = Q.shape[-1] ** -0.5
    return rank, spatial, mask, Q, K, V, group, scale


def _probs(Q, K, mask, scale):
    logits = np.where(mask, scale * Q @ K.transpose(0, 1, 3, 2), -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / total, (top + np.log(total))[..., 0]


def _unflatten(x, shape_prefix):
    """[B, H, N, D] -> [B, *spatial, H, D]."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(*shape_prefix, h, d)


def forward(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
            additional_keys=None, additional_values=None):
    """Returns (out [B, *spatial, H, Dv], lse [B, *spatial, H]) in float64."""
    rank, spatial, mask, Q, K, V, _, scale = _setup(q, k, v, kernel_size, stride, dilation, is_causal, scale,
                                                    additional_keys, additional_values)
    P, lse = _probs(Q, K, mask, scale)
    prefix = (q.shape[0], *spatial)
    return _unflatten(P @ V, prefix), lse.transpose(0, 2, 1).reshape(*prefix, -1)


def backward(q, k, v, d_out, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
             additional_keys=None, additional_values=None):
    """Returns (dq, dk, dv[, d_add_k, d_add_v]) in float64."""
    rank, spatial, mask, Q, K, V, group, scale = _setup(q, k, v, kernel_size, stride, dilation, is_causal, scale,
                                                        additional_keys, additional_values)
    P, _ = _probs(Q, K, mask, scale)
    dO = _flatten(d_out, rank)
    dP = dO @ V.transpose(0, 1, 3, 2)
    dS = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    dQ = scale * dS @ K
    dK = scale * dS.transpose(0, 1, 3, 2) @ Q
    dV = P.transpose(0, 1, 3, 2) @ dO

    def fold(x):  # sum query heads of one kv group: [B, H, M, D] -> [B, H_kv, M, D]
        b, h, m, d = x.shape
        return x.reshape(b, h // group, group, m, d).sum(axis=2)

    dK, dV = fold(dK), fold(dV)
    n = mask.shape[0]
    prefix = (q.shape[0], *spatial)
    grads = [_unflatten(dQ, prefix), _unflatten(dK[:, :, :n], prefix), _unflatten(dV[:, :, :n], prefix)]
    if additional_keys is not None:
        grads += [dK[:, :, n:].transpose(0, 2, 1, 3), dV[:, :, n:].transpose(0, 2, 1, 3)]
    return tuple(grads)
