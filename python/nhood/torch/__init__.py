"""PyTorch integration of nhood: autograd, torch.library custom ops
(torch.compile with fullgraph=True, fake tensors), autocast, and
NeighborhoodAttention{1,2,3}D modules. Importing this package imports torch;
`import nhood` alone does not."""
from __future__ import annotations

from . import _ops  # registers nhood::na_forward / nhood::na_backward
from .functional import attention, na1d, na2d, na3d
from .modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__all__ = ["na1d", "na2d", "na3d", "attention", "NeighborhoodAttention1D", "NeighborhoodAttention2D",
           "NeighborhoodAttention3D"]
