"""Runs one bench case's forward a few times with one nhood backend, for a
profiler to attach to (ncu -k regex:forward_kernel ...):

    ncu --set full -k regex:forward_kernel -s 2 -c 1 python3 scripts/profile_case.py 2d hopper
"""
from __future__ import annotations

import sys

import torch

import nhood
from nhood.bench import CASES


def main(case: str, backend: str, reps: int = 3) -> None:
    B, spatial, H, D, kernel, stride, dil = CASES[case]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, *spatial, H, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))
    na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[len(spatial)]
    for _ in range(reps):
        na(q, k, v, kernel_size=kernel, stride=stride, dilation=dil, backend=backend)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "hopper")
