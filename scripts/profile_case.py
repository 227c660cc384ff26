"""Runs one bench case with one nhood backend a few times, for a profiler to
attach to, or prints the time of each CUDA kernel of one call (--table):

    ncu --set full -k regex:forward_kernel -s 2 -c 1 python3 scripts/profile_case.py 2d hopper
    python3 scripts/profile_case.py 2d hopper --backward --table   # statistics, dQ, dK/dV kernels
"""
from __future__ import annotations

import argparse

import torch

import nhood
from nhood.bench import CASES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("backend", nargs="?", default="hopper")
    ap.add_argument("--backward", action="store_true", help="also run the backward")
    ap.add_argument("--table", action="store_true", help="print per-kernel CUDA times (torch.profiler)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    B, spatial, H, D, kernel, stride, dil = CASES[args.case]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, *spatial, H, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(4))
    rank = len(spatial)
    na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[rank]
    na_bwd = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}[rank]
    win = dict(kernel_size=kernel, stride=stride, dilation=dil, backend=args.backend)

    def call():
        out, lse = na(q, k, v, return_lse=True, **win)
        if args.backward:
            na_bwd(q, k, v, out, lse, do, **win)

    for _ in range(args.reps):
        call()
    torch.cuda.synchronize()
    if args.table:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        print(f"{args.case} {args.backend}: CUDA kernels of one call")
        for e in prof.key_averages():
            t = getattr(e, "self_device_time_total", 0)
            if t > 0:
                name = e.key if len(e.key) < 90 else e.key[:87] + "..."
                print(f"  {t / 1000:9.3f} ms  {name}")


if __name__ == "__main__":
    main()
