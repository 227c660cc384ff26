"""nhood: neighborhood attention for any array library.

    import nhood
    out = nhood.na2d(q, k, v, kernel_size=7)     # q, k, v: [B, H, W, heads, dim]
"""
from __future__ import annotations

from . import _core
from ._cmake import cmake_dir
from .functional import (attention, attention_backward, merge_attentions, na1d, na1d_backward, na2d,
                         na2d_backward, na3d, na3d_backward)
from .unfused import (na1d_av, na1d_av_backward, na1d_qk, na1d_qk_backward, na2d_av, na2d_av_backward, na2d_qk,
                      na2d_qk_backward, na3d_av, na3d_av_backward, na3d_qk, na3d_qk_backward)

__version__ = "0.1.0"
__all__ = ["na1d", "na2d", "na3d", "na1d_backward", "na2d_backward", "na3d_backward", "attention",
           "attention_backward", "merge_attentions", "backends", "cuda_available", "cmake_dir",
           "na1d_qk", "na2d_qk", "na3d_qk", "na1d_av", "na2d_av", "na3d_av", "na1d_qk_backward",
           "na2d_qk_backward", "na3d_qk_backward", "na1d_av_backward", "na2d_av_backward", "na3d_av_backward"]


def cuda_available() -> bool:
    """True if nhood was built with CUDA kernels and a GPU is visible."""
    return _core.cuda_available()


def backends(device: str = "cpu") -> list[str]:
    """Backends that can run on `device` ('cpu' or 'cuda'), fastest first."""
    return _core.backends(device)
