"""Small forward+backward problems for compute-sanitizer (memcheck).

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
        --error-exitcode 1 python scripts/memcheck_cases.py naive   # or fused, hopper

Run with torch's caching allocator off so every tensor is its own cudaMalloc
and an out-of-bounds access past a tensor's end is caught, not absorbed by a
neighbouring block of the cache. Covers every rank and feature, each dtype.
"""
from __future__ import annotations

import os
import sys

import torch

import nhood

CASES = [  # spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, dim_v, n_add
    ((13,), 4, 2, 2, False, 4, 2, 8, 12, 3),
    ((9, 7), (3, 4), (1, 2), (2, 1), (True, False), 2, 1, 8, 8, 2),
    ((4, 5, 6), (3, 2, 5), (1, 2, 3), (1, 2, 1), (False, True, False), 2, 2, 4, 6, 1),
]
# Tensor-core backends (fused, hopper): half types, head dims they take;
# shapes that leave partial tiles on every axis, >1 tile of additional tokens;
# without additional tokens hopper runs its own backward kernels.
TC_CASES = [
    ((300,), 33, 3, 2, True, 2, 1, 64, 64, 130),
    ((19, 23), (5, 8), (1, 2), (2, 1), (False, True), 2, 2, 128, 128, 3),
    ((5, 9, 11), (3, 4, 5), (1, 2, 1), (1, 1, 2), (False, False, True), 2, 1, 64, 64, 0),
    ((17, 21), (7, 6), (2, 1), (1, 2), (True, False), 4, 2, 128, 128, 0),  # hopper's own backward at 128
]
# fused only (hopper takes head dims 64 and 128): the small-window forward.
FUSED_CASES = [
    ((11, 13), (7, 7), (1, 1), (1, 1), (False, False), 2, 1, 32, 32, 0),
    ((2, 8, 16), (2, 3, 5), (1, 1, 2), (1, 1, 1), (False, False, True), 2, 2, 32, 32, 0),
]


def main(backend: str) -> None:
    # hopper's single backward pass even though these problems are below its size heuristic
    os.environ["NHOOD_HOPPER_SINGLE_PASS"] = "1"
    fwd = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
    bwd = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}
    tensor_core = backend in ("fused", "hopper")
    cases = TC_CASES + (FUSED_CASES if backend == "fused" else []) if tensor_core else CASES
    dtypes = (torch.float16, torch.bfloat16) if tensor_core else (torch.float32, torch.float16, torch.bfloat16)
    for dtype in dtypes:
        for spatial, kernel, stride, dilation, causal, h, hk, d, dv, n_add in cases:
            mk = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)
            q, k, v = mk(2, *spatial, h, d), mk(2, *spatial, hk, d), mk(2, *spatial, hk, dv)
            ak, av = (mk(2, n_add, hk, d), mk(2, n_add, hk, dv)) if n_add else (None, None)
            w = dict(kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal, backend=backend)
            rank = len(spatial)
            out, lse = fwd[rank](q, k, v, additional_keys=ak, additional_values=av, return_lse=True, **w)
            # Both backward modes: hopper's single pass (dQ by TMA reductions) and its deterministic passes.
            for deterministic in (False, True) if tensor_core else (False,):
                # hopper: work items claimed at run time (below their size rule too), static in the second mode
                os.environ["NHOOD_HOPPER_CLAIM_ITEMS"] = "0" if deterministic else "1"
                grads = bwd[rank](q, k, v, out, lse, torch.randn_like(out), additional_keys=ak, additional_values=av,
                                  deterministic=deterministic, **w)
                torch.cuda.synchronize()
                assert all(torch.isfinite(g).all() for g in (out, lse, *grads))
    print(f"memcheck cases ran: backend={backend}, {len(cases) * len(dtypes)} problems forward+backward")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "naive")
