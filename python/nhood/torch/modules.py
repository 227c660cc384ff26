"""NeighborhoodAttention{1,2,3}D: drop-in nn.Modules with NATTEN's
constructor arguments. Input and output are [batch, *spatial, embed_dim]."""
from __future__ import annotations

import torch
from torch import nn

from .functional import na

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


class _NeighborhoodAttention(nn.Module):
    rank = 0

    def __init__(self, embed_dim: int, num_heads: int, kernel_size, stride=1, dilation=1, is_causal=False,
                 qkv_bias: bool = True, qk_scale: float | None = None, proj_drop: float = 0.0,
                 num_kv_heads: int | None = None):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kernel_size, self.stride, self.dilation, self.is_causal = kernel_size, stride, dilation, is_causal
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        # One projection for q, k and v: its output is viewed (not copied) into
        # three strided tensors that the kernels read in place.
        self.qkv = nn.Linear(embed_dim, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.rank + 2:
            raise ValueError(f"{type(self).__name__} expects input [batch, *spatial({self.rank}), embed_dim], "
                             f"got shape {tuple(x.shape)}")
        prefix = x.shape[:-1]
        qkv = self.qkv(x).view(*prefix, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        h, hk = self.num_heads, self.num_kv_heads
        q, k, v = qkv[..., :h, :], qkv[..., h:h + hk, :], qkv[..., h + hk:, :]
        out = na(self.rank, q, k, v, self.kernel_size, self.stride, self.dilation, self.is_causal, self.scale)
        return self.proj_drop(self.proj(out.reshape(*prefix, self.embed_dim)))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}, "
                f"is_causal={self.is_causal}")


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """1-D neighborhood attention layer: [batch, length, embed_dim] -> same."""
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """2-D neighborhood attention layer: [batch, height, width, embed_dim] -> same."""
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """3-D neighborhood attention layer: [batch, depth, height, width, embed_dim] -> same."""
    rank = 3
