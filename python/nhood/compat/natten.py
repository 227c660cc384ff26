"""NATTEN <= 0.17 legacy functional ops on nhood, for torch tensors.

    from nhood.compat.natten import natten2dqkrpb, natten2dav   # instead of natten.functional

Same names, argument order and layout as NATTEN's legacy ops: heads-first
tensors ``[batch, heads, *spatial, dim]``, attention weights
``[batch, heads, *spatial, prod(kernel)]``. They are turned into nhood's
heads-last layout with zero-copy permuted views (no copies), run through
nhood's unfused ops, and handed back as permuted views of the results.
Autograd works (query, key, rpb, attn, value). As in NATTEN: ``*qkrpb``
returns raw ``<q, k> + rpb`` (the caller scales the query), rpb is cast to
the key's dtype and attn to the value's dtype; windows are non-causal with
stride 1; 3-D ops take (kernel_size_d, kernel_size, dilation_d, dilation).
See nhood.unfused for column order and bias indexing.

``install()`` registers this module as ``natten.functional`` (and a bare
``natten`` package) in sys.modules when NATTEN is not installed, so
unmodified code doing ``from natten.functional import natten2dqkrpb``
(e.g. Hugging Face transformers' NAT/DiNAT) runs on nhood.
"""
from __future__ import annotations

import sys
import types

from .. import unfused

__all__ = ["natten1dqkrpb", "natten1dqk", "natten1dav", "natten2dqkrpb", "natten2dqk", "natten2dav",
           "natten3dqkrpb", "natten3dqk", "natten3dav", "install"]


def _heads_last(x, rank):
    """[B, H, *spatial, D] -> [B, *spatial, H, D], a view."""
    return x.movedim(1, rank + 1)


def _heads_first(x, rank):
    return x.movedim(rank + 1, 1)


def _qk(rank, query, key, rpb, kernel_size, dilation):
    if rpb is not None:
        rpb = rpb.to(key.dtype)
    w = unfused.qk(rank, _heads_last(query, rank), _heads_last(key, rank), kernel_size, dilation, rpb=rpb)
    return _heads_first(w, rank)


def _av(rank, attn, value, kernel_size, dilation):
    out = unfused.av(rank, _heads_last(attn.to(value.dtype), rank), _heads_last(value, rank), kernel_size, dilation)
    return _heads_first(out, rank)


def natten1dqkrpb(query, key, rpb, kernel_size, dilation):
    return _qk(1, query, key, rpb, kernel_size, dilation)


def natten1dqk(query, key, kernel_size, dilation):
    return _qk(1, query, key, None, kernel_size, dilation)


def natten1dav(attn, value, kernel_size, dilation):
    return _av(1, attn, value, kernel_size, dilation)


def natten2dqkrpb(query, key, rpb, kernel_size, dilation):
    return _qk(2, query, key, rpb, kernel_size, dilation)


def natten2dqk(query, key, kernel_size, dilation):
    return _qk(2, query, key, None, kernel_size, dilation)


def natten2dav(attn, value, kernel_size, dilation):
    return _av(2, attn, value, kernel_size, dilation)


def natten3dqkrpb(query, key, rpb, kernel_size_d, kernel_size, dilation_d, dilation):
    return _qk(3, query, key, rpb, (kernel_size_d, kernel_size, kernel_size), (dilation_d, dilation, dilation))


def natten3dqk(query, key, kernel_size_d, kernel_size, dilation_d, dilation):
    return _qk(3, query, key, None, (kernel_size_d, kernel_size, kernel_size), (dilation_d, dilation, dilation))


def natten3dav(attn, value, kernel_size_d, kernel_size, dilation_d, dilation):
    return _av(3, attn, value, (kernel_size_d, kernel_size, kernel_size), (dilation_d, dilation, dilation))


def install(force: bool = False):
    """Make ``import natten.functional`` resolve to this module (only when
    NATTEN itself is not importable, unless force=True). Returns the module."""
    if not force:
        try:
            import natten.functional  # noqa: F401

            return sys.modules["natten.functional"]
        except ImportError:
            pass
    package = sys.modules.get("natten")
    if package is None or force:
        package = types.ModuleType("natten")
        package.__path__ = []  # a package, so `natten.functional` imports
        sys.modules["natten"] = package
    module = sys.modules[__name__]
    package.functional = module
    sys.modules["natten.functional"] = module
    return module
